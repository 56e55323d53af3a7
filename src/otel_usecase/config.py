"""Every ``OTEL_USECASE_*`` setting, as one table: name, type, default, doc.

Resolution is OpenTelemetry's: constructor argument, then env var, then default.
A bad *argument* is a programming error and raises ``ValueError``; a bad *env
value* is warned about (naming the variable, the value and what is accepted) and
the default is used, because a typo in a deployment's environment must never
break the application or switch its telemetry off.

Each setting is one :class:`Setting` row below; :data:`SETTINGS` collects every
row of this module, and the README's environment table is checked against it
(``tests/test_settings.py``), as is every ``OTEL_USECASE_*`` string in ``src/``.
Adding a setting is one row (plus its tests and its README row, which
:func:`env_table_markdown` prints).

Parsers that need another module (store URLs, baggage keys, names) import it
when called, so this module imports nothing of the package but the logger and
every module can import it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar

from ._log import warn_rate_limited

_T = TypeVar("_T")
_S = TypeVar("_S", bound=str)

SpansMode = Literal["llm", "all"]

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


# --- parsers: raw env text -> value, or ValueError saying what is wrong -------------------------


def parse_bool(raw: str) -> bool:
    """``true/false``, ``1/0``, ``yes/no``, ``on/off`` (any case)."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("not a boolean")


def whole_number(minimum: int) -> Callable[[str], int]:
    """A parser for integers ``>= minimum``."""

    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError("not a whole number") from None
        if value < minimum:
            raise ValueError(f"less than {minimum}")
        return value

    return parse


def one_of(*choices: _S) -> Callable[[str], _S]:
    """A parser for a fixed set of words (any case)."""

    def parse(raw: str) -> _S:
        value = raw.strip().lower()
        for choice in choices:
            if value == choice:
                return choice
        raise ValueError(f"not one of {', '.join(choices)}")

    return parse


def text(raw: str) -> str:
    """Any non-blank text, stripped."""
    return raw.strip()


def _name(raw: str) -> str:
    from .scope.validation import NAME_RULE, is_name

    value = raw.strip()
    if not is_name(value):
        raise ValueError(f"breaks the name rule ({NAME_RULE})")
    return value


def _store_url(raw: str) -> str:
    from .store.base import StoreError, parse_store_url

    try:
        parse_store_url(raw)
    except StoreError as exc:
        raise ValueError(str(exc)) from None
    return raw.strip()


def _keys(raw: str) -> frozenset[str]:
    from .scope.propagation import parse_keys

    return parse_keys(raw)


# --- the row type -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting(Generic[_T]):
    """One setting: its env var, how its text is read, its default and what it is for.

    ``accepts`` and ``default_text`` are what the README table and the warning
    for a bad value show; ``doc`` is the README's "meaning" column.
    """

    env: str
    parse: Callable[[str], _T]
    default: _T
    accepts: str
    default_text: str
    doc: str

    def raw(self) -> str | None:
        """The env value as set, or ``None`` when unset or blank (blank means unset, as in OTel)."""
        value = os.environ.get(self.env)
        return value if value is not None and value.strip() else None

    def read(self) -> _T:
        """The env value, parsed; the default when unset, or (with a warning) when unreadable."""
        raw = self.raw()
        if raw is None:
            return self.default
        try:
            return self.parse(raw)
        except Exception as exc:  # ValueError from the parsers; anything else must not escape either
            self.warn_bad(raw, str(exc), f"using the default ({self.default_text.replace('`', '')})")
            return self.default

    def warn_bad(self, raw: str, reason: str, fallback: str) -> None:
        """Say, once a minute per setting, that ``raw`` was not used, why, what is accepted and what instead."""
        warn_rate_limited(
            f"env:{self.env}",
            "otel_usecase: %s=%r is not accepted (%s); accepted: %s. %s",
            self.env,
            _shorten(raw),
            reason,
            self.accepts,
            fallback[:1].upper() + fallback[1:],
        )


def _shorten(raw: str, limit: int = 200) -> str:
    return raw if len(raw) <= limit else raw[:limit] + f"...({len(raw)} characters)"


def _choice(
    env: str, choices: tuple[_S, ...], default: _S, doc: str
) -> Setting[_S]:  # a row with a fixed set of words
    return Setting(env, one_of(*choices), default, " or ".join(choices), f"`{default}`", doc)


def _flag(env: str, default: bool, doc: str) -> Setting[bool]:
    return Setting(env, parse_bool, default, "true or false", f"`{str(default).lower()}`", doc)


# --- the table: one row per setting --------------------------------------------------------------
# A row whose value is a secret (TOKEN, USER_ID_HMAC_KEY) uses a parser that never fails, so that
# Setting.warn_bad, which quotes the value, never sees it; privacy.py checks the key's length itself.

SPANS: Final[Setting[SpansMode]] = _choice(
    "OTEL_USECASE_SPANS",
    ("llm", "all"),
    "llm",
    "`llm`: stamp only LLM spans; `all`: every span inside a scope",
)
DEFAULT_NAME: Final[Setting[str | None]] = Setting(
    env="OTEL_USECASE_DEFAULT_NAME",
    parse=_name,
    default=None,
    accepts="a use case name",
    default_text="unset",
    doc="use case for LLM spans outside any scope",
)
STRICT: Final = _flag(
    "OTEL_USECASE_STRICT",
    False,
    "`true`: an id that would be normalised (over-long, control characters) raises `ValueError`",
)
ENABLED: Final = _flag(
    "OTEL_USECASE_ENABLED", True, "`false`: `opentelemetry-instrument` does not add the span processor"
)
THREAD_CONTEXT: Final = _flag(
    "OTEL_USECASE_THREAD_CONTEXT",
    True,
    "`false`: `opentelemetry-instrument` does not make threads and thread pools inherit the scope",
)
STORE: Final[Setting[str | None]] = Setting(
    env="OTEL_USECASE_STORE",
    parse=_store_url,
    default=None,  # store.base.default_store_url(): SQLite under $XDG_DATA_HOME
    accepts="sqlite:///relative.db, sqlite:////absolute.db or postgresql://user@host/db",
    default_text="`sqlite:///~/.local/share/otel-usecase/costs.db`",
    doc="where calls are stored (SQLite file or PostgreSQL database)",
)
PRICES: Final[Setting[str | None]] = Setting(
    env="OTEL_USECASE_PRICES",
    parse=text,  # the file is read and checked by PriceBook, which warns and ignores a bad one
    default=None,
    accepts="the path of a prices TOML file",
    default_text="unset",
    doc="TOML file with price overrides per model, token class and price condition (service tier, batch), and model aliases",
)
BUFFER: Final = Setting(
    env="OTEL_USECASE_BUFFER",
    parse=whole_number(0),
    default=100_000,
    accepts="a whole number >= 0",
    default_text="`100000`",
    doc="calls the exporter keeps in memory while the store is unavailable",
)
EXPORT_WAIT: Final = Setting(
    env="OTEL_USECASE_EXPORT_WAIT_MS",
    parse=whole_number(0),
    default=500,
    accepts="a whole number of milliseconds >= 0",
    default_text="`500`",
    doc="how long an export waits for a healthy store to take its calls (never for a failing one)",
)
SINK_MEMORY: Final = Setting(
    env="OTEL_USECASE_SINK_MEMORY",
    parse=whole_number(0),
    default=10_000,
    accepts="a whole number >= 0",
    default_text="`10000`",
    doc="recent calls remembered to tell a second copy of a request from a new one (about 1 KB each; "
    "see [One place where a priced call goes](#one-place-where-a-priced-call-goes))",
)
TOKEN: Final[Setting[str | None]] = Setting(
    env="OTEL_USECASE_TOKEN",
    parse=text,
    default=None,
    accepts="any text",
    default_text="unset",
    doc="bearer token `otel-usecase serve` and the dashboard (`otel-usecase ui`, `serve --ui`) require",
)
READ_TIMEOUT: Final = Setting(
    env="OTEL_USECASE_READ_TIMEOUT",
    parse=whole_number(1),
    default=30,
    accepts="a whole number of seconds >= 1",
    default_text="`30`",
    doc="seconds `otel-usecase serve` gives a client for a request's headers, and again for its body",
)
INBOUND_KEYS: Final[Setting[frozenset[str] | None]] = Setting(
    env="OTEL_USECASE_INBOUND_KEYS",
    parse=_keys,
    default=None,  # propagation.DEFAULT_INBOUND_KEYS
    accepts="all, none or a comma-separated list of our baggage keys (usecase.id, user.id, usecase.tag.* ...)",
    default_text="`none`",
    doc="with the `usecase_baggage` propagator: our keys accepted from inbound requests",
)
OUTBOUND_KEYS: Final[Setting[frozenset[str] | None]] = Setting(
    env="OTEL_USECASE_OUTBOUND_KEYS",
    parse=_keys,
    default=None,  # propagation.DEFAULT_OUTBOUND_KEYS
    accepts="all, none or a comma-separated list of our baggage keys (usecase.id, user.id, usecase.tag.* ...)",
    default_text="all but `user.id`",
    doc="with the `usecase_baggage` propagator: our keys sent on outbound requests",
)
USER_ID_HMAC_KEY: Final[Setting[str | None]] = Setting(
    env="OTEL_USECASE_USER_ID_HMAC_KEY",
    parse=text,
    default=None,
    accepts="a secret of at least 16 bytes",
    default_text="unset",
    doc="record user ids as `hmac-sha256:<hex>` keyed hashes (a shorter key drops user ids, see "
    "[Trust and privacy](#trust-and-privacy))",
)
DEMO_MODEL: Final = Setting(
    env="OTEL_USECASE_DEMO_MODEL",
    parse=text,
    default="gpt-4o-mini",
    accepts="a model name",
    default_text="`gpt-4o-mini`",
    doc="model `otel-usecase demo` calls",
)


# --- metrics (issue 14, part M) ---


def _metric_attributes(raw: str) -> tuple[str, ...]:
    from .metrics import parse_attributes

    if raw.strip().lower() == "none":
        return ()
    return parse_attributes(raw.split(","))


METRICS: Final = _flag(
    "OTEL_USECASE_METRICS",
    True,
    "`false`: the exporter and `serve` record no cost metrics (see [Metrics](#metrics)); with no "
    "`MeterProvider` configured they record none anyway",
)
METRIC_ATTRIBUTES: Final[Setting[tuple[str, ...]]] = Setting(
    env="OTEL_USECASE_METRIC_ATTRIBUTES",
    parse=_metric_attributes,
    default=(),
    accepts="none or a comma-separated list of user.id, experience.name, experience.id, usecase.id, tag.KEY",
    default_text="`none`",
    doc="high-cardinality attributes added to the cost metrics (one time series per value: see "
    "[Metrics](#metrics))",
)


# --- alerts (C): budget alert webhooks; read by budgets/alerts.py ---
# The webhook row is text: budgets/webhook.py checks the URL and warns without quoting it (it may hold
# a secret in its path or query); the secret row never fails, so it is never quoted either.
ALERT_WEBHOOK: Final[Setting[str | None]] = Setting(
    env="OTEL_USECASE_ALERT_WEBHOOK",
    parse=text,
    default=None,
    accepts="an http:// or https:// URL",
    default_text="unset",
    doc="where budget alerts are POSTed when the budget names no webhook of its own (see [Alerts](#alerts))",
)
ALERT_SECRET: Final[Setting[str | None]] = Setting(
    env="OTEL_USECASE_ALERT_SECRET",
    parse=text,
    default=None,
    accepts="any text (32 random bytes or more advised)",
    default_text="unset",
    doc="key of the `X-Otel-Usecase-Signature` HMAC-SHA256 of each alert body (unset: alerts go unsigned, "
    "with a warning)",
)
ALERT_LEASE: Final = Setting(
    env="OTEL_USECASE_ALERT_LEASE_S",
    parse=whole_number(30),
    default=60,
    accepts="a whole number of seconds >= 30",
    default_text="`60`",
    doc="how long an alert claimed by a process that stopped renewing its claim waits before another "
    "process delivers it",
)
ALERT_RETRY_FOR: Final = Setting(
    env="OTEL_USECASE_ALERT_RETRY_FOR_S",
    parse=whole_number(0),
    default=86_400,
    accepts="a whole number of seconds >= 0",
    default_text="`86400`",
    doc="how long after the crossing an alert is retried (no answer, 5xx, 408, 429) before it is given up",
)


# --- budgets (issue 14, part B) ---


def _seconds(raw: str) -> float:
    """A number of seconds > 0 (a fraction is fine)."""
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("not more than 0 and finite")
    return value


BUDGET_REFRESH: Final = Setting(
    env="OTEL_USECASE_BUDGET_REFRESH_S",
    parse=_seconds,
    default=5.0,
    accepts="a number of seconds > 0",
    default_text="`5`",
    doc="how often each process reads the budgets and every process's spend from the store; calls of "
    "other processes count here within this plus their export delay (see [Budgets](#budgets))",
)


# --- erasure and retention (issue 16, part E); read by retention.py ---

RETENTION_DAYS: Final[Setting[int | None]] = Setting(
    env="OTEL_USECASE_RETENTION_DAYS",
    parse=whole_number(1),
    default=None,
    accepts="a whole number of days >= 1",
    default_text="unset (keep every call)",
    doc="the exporter and `serve` delete per-call rows and outcomes older than this, at most once a day; "
    "the rollups keep the dashboard's totals (see [Erasure and retention](#erasure-and-retention))",
)

SETTINGS: Final[tuple[Setting[Any], ...]] = tuple(
    value for value in list(globals().values()) if isinstance(value, Setting)
)
"""Every row above, in the order written (rows are found, not listed, so adding one is one edit)."""


def env_table_markdown() -> str:
    """The README's environment table, generated from :data:`SETTINGS`."""
    lines = ["| variable | accepts | default | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{s.env}` | {s.accepts} | {s.default_text} | {s.doc} |" for s in SETTINGS]
    return "\n".join(lines)


# --- typed accessors ---------------------------------------------------------------------------


def spans_mode(given: str | None = None) -> SpansMode:
    """Which spans the processor stamps: argument (bad one raises), else ``OTEL_USECASE_SPANS``."""
    if given is not None:
        try:
            return SPANS.parse(given)
        except ValueError:
            raise ValueError(f"{given!r} is not one of llm, all") from None
    return SPANS.read()


def strict() -> bool:
    """Whether bad values that would be repaired with a warning raise instead."""
    return STRICT.read()


def enabled() -> bool:
    """Whether ``opentelemetry-instrument`` adds the span processor."""
    return ENABLED.read()


def store_url() -> str | None:
    """``OTEL_USECASE_STORE`` when set and a valid store URL, else ``None`` (use the default store)."""
    return STORE.read()


def prices_path() -> str | None:
    """``OTEL_USECASE_PRICES`` when set."""
    return PRICES.read()


def buffer_size() -> int:
    """``OTEL_USECASE_BUFFER``."""
    return BUFFER.read()


def export_wait_ms() -> int:
    """``OTEL_USECASE_EXPORT_WAIT_MS``."""
    return EXPORT_WAIT.read()


# --- the older helpers, kept for callers that read a variable by name ---------------------------

ENV_SPANS: Final = SPANS.env
ENV_STRICT: Final = STRICT.env
ENV_DEFAULT_NAME: Final = DEFAULT_NAME.env
ENV_ENABLED: Final = ENABLED.env
ENV_THREAD_CONTEXT: Final = THREAD_CONTEXT.env
ENV_STORE: Final = STORE.env
ENV_PRICES: Final = PRICES.env
ENV_BUFFER: Final = BUFFER.env
ENV_EXPORT_WAIT: Final = EXPORT_WAIT.env


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean env var; a bad value warns (naming it) and ``default`` is used."""
    return _flag(name, default, "").read()
