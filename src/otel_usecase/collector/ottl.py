"""OTTL text: string literals, attribute and cache paths, ``set`` statements, regex and price literals."""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal

__all__ = ["alternation", "attr", "cache", "lit", "per_token", "re_literal", "set_where"]


def lit(text: str) -> str:
    """An OTTL string literal (OTTL unquotes strings as Go does; JSON escapes are valid Go)."""
    return json.dumps(text, ensure_ascii=True)


def attr(key: str) -> str:
    return f"attributes[{lit(key)}]"


def cache(name: str) -> str:
    return f"cache[{lit(name)}]"


def set_where(target: str, value: str, where: str) -> str:
    return f"set({target}, {value}) where {where}"


def re_literal(text: str) -> str:
    """``text`` as an RE2 (and Python) regex matching it literally, readable in YAML.

    Metacharacters go in brackets (``[.]``) rather than behind backslashes, so the
    common model names need no escaping at all.
    """
    out = []
    for char in text:
        if char in ".+*?()|{}$":
            out.append(f"[{char}]")
        elif char in "\\^[]":
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def alternation(items: Iterable[str]) -> str:
    """Regex alternatives in a non-capturing group (no group for a single one)."""
    unique = list(dict.fromkeys(items))
    return unique[0] if len(unique) == 1 else "(?:" + "|".join(unique) + ")"


def per_token(per_million: Decimal) -> str:
    """USD per token as a plain OTTL float literal, exact: 2.50 per 1M -> ``0.0000025``."""
    text = format(per_million.scaleb(-6).normalize(), "f")
    return text if "." in text else text + ".0"
