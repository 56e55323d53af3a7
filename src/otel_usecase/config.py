"""Settings, resolved the OpenTelemetry way: argument, then ``OTEL_USECASE_*`` env var, then default.

Every environment variable the package reads is named here, so the README's list
and the code cannot drift apart.
"""

from __future__ import annotations

import os
from typing import Final, Literal, TypeVar

from ._log import warn_rate_limited

ENV_SPANS: Final = "OTEL_USECASE_SPANS"
"""``llm`` (default) stamps only LLM spans; ``all`` stamps every span inside a scope."""
ENV_STRICT: Final = "OTEL_USECASE_STRICT"
"""``true`` turns an invalid explicit ``experience_id`` into a ``ValueError`` instead of a warning."""
ENV_DEFAULT_NAME: Final = "OTEL_USECASE_DEFAULT_NAME"
"""Use case name for LLM spans outside any scope."""
ENV_ENABLED: Final = "OTEL_USECASE_ENABLED"
"""``false`` keeps ``opentelemetry-instrument`` from adding the span processor."""

SpansMode = Literal["llm", "all"]
_T = TypeVar("_T", bound=str)

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean env var.

    An unreadable value is warned about (naming it) and the default is used:
    a typo in the environment must not break the application at run time.
    """
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    warn_rate_limited(
        f"env:{name}", "%s=%r is not a boolean (use true or false); using %s", name, raw, default
    )
    return default


def env_str(name: str) -> str | None:
    """Read a string env var; unset or blank means ``None``."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    return raw.strip()


def choose(name: str, given: str | None, choices: tuple[_T, ...], default: _T) -> _T:
    """Resolve a setting with a fixed set of values: argument, then env var, then default.

    A bad argument is a programming error and raises; a bad env value is warned
    about and the default is used.
    """
    value = given if given is not None else env_str(name)
    if value is None:
        return default
    for choice in choices:
        if value.lower() == choice:
            return choice
    if given is not None:
        raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
    warn_rate_limited(
        f"env:{name}", "%s=%r is not one of %s; using %s", name, value, ", ".join(choices), default
    )
    return default


def spans_mode(given: str | None = None) -> SpansMode:
    """Which spans the processor stamps."""
    return choose(ENV_SPANS, given, ("llm", "all"), "llm")


def strict() -> bool:
    """Whether bad values that would be repaired with a warning raise instead."""
    return env_bool(ENV_STRICT, False)


ENV_STORE: Final = "OTEL_USECASE_STORE"
"""Store URL: ``sqlite:///path/costs.db`` (default under ``~/.local/share/otel-usecase``) or ``postgresql://...``."""
ENV_PRICES: Final = "OTEL_USECASE_PRICES"
"""Path of a TOML file with price overrides and model aliases."""
ENV_BUFFER: Final = "OTEL_USECASE_BUFFER"
"""Calls the exporter keeps in memory while the store is unavailable (default 100000)."""
ENV_EXPORT_WAIT: Final = "OTEL_USECASE_EXPORT_WAIT_MS"
"""How long an export waits for a healthy store to take its calls (default 500); never while the store is down."""


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    """Read an integer env var; a bad value is warned about and the default used."""
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        warn_rate_limited(
            f"env:{name}", "%s=%r is not a whole number >= %d; using %d", name, raw, minimum, default
        )
        return default
    return value
