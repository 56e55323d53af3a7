"""HTML built so that data can only ever be text: every string is escaped unless it is :class:`Markup`.

Ids arrive over OTLP from anyone (``<script>``, ``"onmouseover=``, a bidi override, a
megabyte of ``A``). Pages are built with :func:`el`, which escapes every child and
every attribute value that is not already :class:`Markup`; only :func:`el` and
:func:`raw` (for fixed strings of this package) make Markup. Text shown for an id
goes through :func:`text`: control and format characters (a bidi override U+202E,
zero-width spaces, line separators) are shown escaped (``\\u202e``) as the CLI's
tables show them (:func:`~otel_usecase.report.text.safe_text`), so a value can
neither run, nor reorder or hide the text around it, nor break the layout.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Final

from ..report.text import safe_text

__all__ = ["CELL_CHARS", "Markup", "el", "join", "raw", "text"]

CELL_CHARS: Final = 80
"""Longest id shown in a table cell (as in the CLI); the whole value is in the cell's tooltip."""
TITLE_CHARS: Final = 1000
"""Longest text in a tooltip (``title``): a value longer than this is cut there too."""


class Markup(str):
    """HTML that is safe to send as it is (made by :func:`el` or :func:`raw` only)."""

    __slots__ = ()


def raw(fixed: str) -> Markup:
    """A fixed HTML fragment written in this package's code (never data)."""
    return Markup(fixed)


def _escape(value: str) -> str:
    return html.escape(value, quote=True)


def text(value: object, limit: int = CELL_CHARS) -> str:
    """What a value shows as: None is ``-``; control/format characters escaped; cut at ``limit``."""
    return safe_text(value, limit=limit)


def _children(children: Iterable[object], out: list[str]) -> None:
    for child in children:
        if child is None:
            continue
        if isinstance(child, Markup):
            out.append(child)
        elif isinstance(child, str):
            out.append(_escape(child))
        elif isinstance(child, int | float):
            out.append(_escape(str(child)))
        else:
            _children(child, out)  # type: ignore[arg-type]


def el(tag: str, *children: object, **attrs: object) -> Markup:
    """``<tag attrs>children</tag>``: children and attribute values escaped unless Markup.

    Attribute names are code (``class_`` is ``class``, ``aria_label`` is ``aria-label``);
    an attribute whose value is None or False is left out, True writes it bare.
    """
    parts = [f"<{tag}"]
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        name = name.rstrip("_").replace("_", "-")
        if value is True:
            parts.append(f" {name}")
        else:
            parts.append(f' {name}="{_escape(str(value))}"')
    parts.append(">")
    if tag in _VOID:
        return Markup("".join(parts))
    _children(children, parts)
    parts.append(f"</{tag}>")
    return Markup("".join(parts))


def join(items: Iterable[object]) -> Markup:
    """Several children as one (each escaped unless Markup)."""
    out: list[str] = []
    _children(items, out)
    return Markup("".join(out))


_VOID: Final = frozenset({"br", "hr", "img", "input", "link", "meta", "col"})
