"""The prices overrides file: a TOML file of model prices and aliases, read and checked.

:class:`~otel_usecase.cost.prices.PriceBook` reads it when given one (argument, else
``OTEL_USECASE_PRICES``)::

    # USD per million tokens.
    [models."gpt-4o"]              # any provider
    input = 2.50                   # required
    output = 10.00                 # required
    cache_read = 1.25              # optional: any token class, by its name
    input_audio = 40.0             # (input, output, cache_read, cache_write,
    output_audio = 80.0            #  cache_write_1h, reasoning, input_audio, ...)

    [[models."gpt-4o".variants]]   # a price under a condition (genai-prices' PriceVariant)
    when = { service_tier = "priority" }
    input = 4.25                   # the rates it changes; the others stay
    output = 17.00

    [models."openai/gpt-4o-mini"]  # only when the provider is openai
    input = 0.15
    output = 0.60

    [models."llama-3.1-70b"]       # or name the provider with a key
    provider = "groq"
    input = 0.59
    output = 0.79

    [aliases]                      # names spans carry -> model names
    "my-gpt4o-prod" = "gpt-4o"     # e.g. an Azure deployment name

Rates are named by token class (:mod:`otel_usecase.cost.token_classes`); a class
without a rate is priced at the rate of the nearest class that includes it
(``cache_read`` as ``input``, ``reasoning`` as ``output``), except audio and
generated images/video, whose tokens leave a call unpriced (``unknown token class
audio``) when the model has no rate for them. A variant's ``when`` keys are the
price-context keys of :mod:`otel_usecase.cost.conditions` (``service_tier``,
``processing`` ...), matched exactly against the context a span calls for.

Model names match case-insensitively, exactly, or through genai-prices: an
override for ``gpt-4o`` also prices ``gpt-4o-2024-08-06``, which genai-prices
knows as ``gpt-4o``. A ``prefix/`` is read as a provider only when the prefix
is a provider name :func:`~otel_usecase.cost.providers.map_provider` knows;
otherwise the whole key is the model name. An alias is resolved once (no chains)
before any lookup, and its target is then priced by the overrides or by
genai-prices.

Every problem raises :class:`~otel_usecase.cost.rates.PricesFileError` naming the
file, the line and the key (unreadable file, TOML syntax error, unknown section
or field such as ``ouput``, missing ``input``/``output``, a price that is not a
finite non-negative number, a duplicate model, a bad variant or alias), so a typo
in a price never turns into silently wrong costs; finding the line of a key
needs the small TOML key scanner below (``tomllib`` does not report positions of
valid keys).
"""

from __future__ import annotations

import difflib
import hashlib
import re
import tomllib
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, NamedTuple, NoReturn

from genai_prices.types import ClauseEquals, ModelInfo, ModelPrice, PriceVariant

from .conditions import PASSTHROUGH_KEYS
from .providers import map_provider, provider_key
from .rates import PricesFileError
from .token_classes import BY_NAME, TOKEN_CLASSES

__all__ = ["OverrideModel", "PricesFile", "load_prices_file"]

# -- the overrides file -----------------------------------------------------

_RATE_FIELDS: Final = tuple(c.name for c in TOKEN_CLASSES)
_MODEL_FIELDS: Final = (*_RATE_FIELDS, "provider", "variants")
_VARIANT_FIELDS: Final = (*_RATE_FIELDS, "when")
_SECTIONS: Final = ("models", "aliases")


class OverrideModel(NamedTuple):
    """One model of the file: who it is for and its prices, as genai-prices model data."""

    provider: str | None
    model: str
    info: ModelInfo


class PricesFile(NamedTuple):
    """The file, read: models by (provider or None, lower-cased name), aliases, sha256 of its bytes."""

    models: dict[tuple[str | None, str], OverrideModel]
    aliases: dict[str, str]
    digest: str


def load_prices_file(path: str) -> PricesFile:
    """Read and check the overrides file; raise :class:`PricesFileError` on any problem."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PricesFileError(path, None, None, f"cannot read it: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PricesFileError(path, None, None, f"not UTF-8 text: {exc.reason}") from exc
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise PricesFileError(path, _toml_error_line(exc, text), None, f"TOML syntax error: {exc}") from exc

    lines = _key_lines(text)

    def fail(keys: tuple[str, ...], detail: str) -> NoReturn:
        raise PricesFileError(path, _locate(lines, keys), _dotted(keys), detail)

    for section in data:
        if section not in _SECTIONS:
            fail(
                (section,),
                f'unknown section{_suggest(section, _SECTIONS)}; expected [models."NAME"] or [aliases]',
            )

    models = data.get("models", {})
    if not isinstance(models, dict):
        fail(("models",), 'must be a table of models, e.g. [models."gpt-4o"]')
    overrides: dict[tuple[str | None, str], OverrideModel] = {}
    where_seen: dict[tuple[str | None, str], str] = {}
    for name, entry in models.items():
        keys = ("models", name)
        if not name.strip():
            fail(keys, "empty model name")
        if not isinstance(entry, dict):
            fail(keys, "must be a table with input and output prices (USD per million tokens)")
        _check_fields(entry, keys, _MODEL_FIELDS, fail)
        for field in ("input", "output"):
            if field not in entry:
                fail(keys, f"missing required field {field!r} (USD per million {field} tokens)")
        provider_name = entry.get("provider")
        if provider_name is not None and (not isinstance(provider_name, str) or not provider_name.strip()):
            fail((*keys, "provider"), f"must be a provider name (a non-empty string), got {provider_name!r}")
        model_name = name.strip()
        provider = provider_key(provider_name) if provider_name is not None else None
        if provider is None and "/" in model_name:
            prefix, rest = model_name.split("/", 1)
            if rest and map_provider(prefix) is not None:
                provider, model_name = map_provider(prefix), rest
        key = (provider, model_name.lower())
        if key in where_seen:
            fail(keys, f"duplicate price for the same model as {where_seen[key]}")
        where_seen[key] = f"[models.{_quote(name, always=True)}]"
        info = ModelInfo(
            id=model_name,
            match=ClauseEquals(equals=model_name.lower()),
            prices=_model_price(entry, keys, fail),
            price_variants=_variants(entry.get("variants"), (*keys, "variants"), fail),
        )
        overrides[key] = OverrideModel(provider, model_name, info)

    raw_aliases = data.get("aliases", {})
    if not isinstance(raw_aliases, dict):
        fail(("aliases",), 'must be a table of "name" = "model" pairs')
    aliases: dict[str, str] = {}
    for alias, target in raw_aliases.items():
        keys = ("aliases", alias)
        if not alias.strip():
            fail(keys, "empty alias name")
        if not isinstance(target, str) or not target.strip():
            fail(keys, f"must name a model (a non-empty string), got {target!r}")
        if alias.strip().lower() in aliases:
            fail(keys, "duplicate alias (names match case-insensitively)")
        aliases[alias.strip().lower()] = target.strip()
    return PricesFile(overrides, aliases, hashlib.sha256(raw).hexdigest())


_Fail = Callable[[tuple[str, ...], str], NoReturn]


def _check_fields(
    entry: dict[str, Any], keys: tuple[str, ...], allowed: tuple[str, ...], fail: _Fail
) -> None:
    for field in entry:
        if field not in allowed:
            fail(
                (*keys, field),
                f"unknown field{_suggest(field, allowed)}; allowed: {', '.join(allowed)}",
            )


def _model_price(entry: dict[str, Any], keys: tuple[str, ...], fail: _Fail) -> ModelPrice:
    """The rates of ``entry`` (USD per million tokens by class name) as a genai-prices ModelPrice."""
    return ModelPrice(
        **{
            BY_NAME[field].price_key: _price(entry[field], fail, (*keys, field))
            for field in _RATE_FIELDS
            if field in entry
        }
    )


def _variants(raw: object, keys: tuple[str, ...], fail: _Fail) -> list[PriceVariant] | None:
    """``[[models."NAME".variants]]``: prices that apply when the price context matches ``when``."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        fail(keys, 'must be an array of tables: [[models."NAME".variants]] with when = { ... } and rates')
    variants: list[PriceVariant] = []
    for item in raw:
        if not isinstance(item, dict):
            fail(keys, "each variant must be a table with when = { ... } and rates")
        _check_fields(item, keys, _VARIANT_FIELDS, fail)
        when = item.get("when")
        if not isinstance(when, dict) or not when:
            fail(
                (*keys, "when"),
                'missing or empty: say when the variant applies, e.g. when = { service_tier = "priority" }',
            )
        for condition, value in when.items():
            if condition not in PASSTHROUGH_KEYS:
                fail(
                    (*keys, "when", condition),
                    f"unknown condition{_suggest(condition, PASSTHROUGH_KEYS)}; allowed: {', '.join(PASSTHROUGH_KEYS)}",
                )
            if not isinstance(value, str) or not value.strip():
                fail((*keys, "when", condition), f"must be a non-empty string, got {value!r}")
        if not any(field in item for field in _RATE_FIELDS):
            fail(keys, "a variant must set at least one rate (e.g. input = 2.50)")
        variants.append(
            PriceVariant(
                when={k: v.strip().lower() for k, v in when.items()},
                prices=_model_price(item, keys, fail),
            )
        )
    return variants


def _price(value: object, fail: _Fail, keys: tuple[str, ...]) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        fail(keys, f"must be a number (USD per million tokens), got {value!r}")
    price = Decimal(value)
    if not price.is_finite():
        fail(keys, f"must be a finite number, got {value}")
    if price < 0:
        fail(keys, f"must not be negative, got {value}")
    return price


def _suggest(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" {word!r} (did you mean {close[0]!r}?)" if close else f" {word!r}"


def _quote(key: str, *, always: bool = False) -> str:
    if not always and key and all(c.isalnum() or c in "-_" for c in key):
        return key
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dotted(keys: tuple[str, ...]) -> str:
    """``models."gpt-4o".input``: names of models and aliases always quoted, as users write them."""
    return ".".join(_quote(key, always=index == 1) for index, key in enumerate(keys))


_TOML_LINE = re.compile(r"at line (\d+)")


def _toml_error_line(exc: tomllib.TOMLDecodeError, text: str) -> int | None:
    lineno = getattr(exc, "lineno", None)  # Python 3.14+
    if isinstance(lineno, int):
        return lineno
    match = _TOML_LINE.search(str(exc))
    if match:
        return int(match.group(1))
    if "end of document" in str(exc):
        return max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
    return None


def _locate(lines: dict[tuple[str, ...], int], keys: tuple[str, ...]) -> int | None:
    """The line of ``keys`` in the file, else of its closest enclosing table."""
    for end in range(len(keys), 0, -1):
        line = lines.get(keys[:end])
        if line is not None:
            return line
    return None


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map every key path in a TOML text to the line that first names it.

    tomllib returns values without positions, so error messages find their line
    here: table headers, ``key = value`` lines (dotted keys too) and one level of
    inline tables. Good enough for a prices file; a miss only loses the line.
    """
    found: dict[tuple[str, ...], int] = {}

    def add(path: tuple[str, ...], line: int) -> None:
        for end in range(1, len(path) + 1):
            found.setdefault(path[:end], line)

    table: tuple[str, ...] = ()
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            inner = stripped[2:] if stripped.startswith("[[") else stripped[1:]
            end = _find_unquoted(inner, "]")
            keys = _split_dotted(inner[:end]) if end is not None else None
            if keys is not None:
                table = keys
                add(table, number)
            continue
        equals = _find_unquoted(stripped, "=")
        if equals is None:
            continue
        keys = _split_dotted(stripped[:equals])
        if keys is None:
            continue
        path = table + keys
        add(path, number)
        rest = stripped[equals + 1 :].strip()
        if rest.startswith("{"):
            close = rest.rfind("}")
            for part in _split_unquoted(rest[1 : close if close > 0 else len(rest)], ","):
                inner_equals = _find_unquoted(part, "=")
                inner_keys = _split_dotted(part[:inner_equals]) if inner_equals is not None else None
                if inner_keys is not None:
                    add(path + inner_keys, number)
    return found


def _find_unquoted(text: str, char: str) -> int | None:
    quote: str | None = None
    escaped = False
    for index, c in enumerate(text):
        if quote is not None:
            if escaped:
                escaped = False
            elif c == "\\" and quote == '"':
                escaped = True
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == char:
            return index
    return None


def _split_unquoted(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    while True:
        index = _find_unquoted(text, sep)
        if index is None:
            parts.append(text)
            return parts
        parts.append(text[:index])
        text = text[index + 1 :]


def _split_dotted(text: str) -> tuple[str, ...] | None:
    """``a."b.c".'d'`` -> ("a", "b.c", "d"); None if it is not a TOML key."""
    keys: list[str] = []
    rest = text.strip()
    while rest:
        if rest[0] in "\"'":
            quote = rest[0]
            index = 1
            value: list[str] = []
            while index < len(rest) and rest[index] != quote:
                if quote == '"' and rest[index] == "\\" and index + 1 < len(rest):
                    index += 1
                value.append(rest[index])
                index += 1
            if index >= len(rest):
                return None
            keys.append("".join(value))
            rest = rest[index + 1 :].strip()
        else:
            index = 0
            while index < len(rest) and (rest[index].isalnum() or rest[index] in "-_"):
                index += 1
            if index == 0:
                return None
            keys.append(rest[:index])
            rest = rest[index:].strip()
        if not rest:
            break
        if rest[0] != ".":
            return None
        rest = rest[1:].strip()
    return tuple(keys) if keys else None
