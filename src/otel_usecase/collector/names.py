"""The shipped collector configs rewritten with the component names current collector releases use.

Why: the files in ``collector-config/`` use the names every release since v0.110.0
reads (``otlp``, ``otlphttp``, ``loadbalancing`` exporters; the filter processor's
``traces: span:`` conditions). Newer releases renamed them and keep the old names as
deprecated aliases (with a warning at start-up): ``otlp_grpc`` and ``otlp_http``
since opentelemetry-collector v0.144.0, ``load_balancing`` since contrib PR #48533
(merged 2026-05-19), and the filter's ``trace_conditions`` (OTTL context inference)
since collector-contrib v0.146.0. One set of files plus this rewrite, instead of a
second set to keep in step: ``otel-usecase collector-config current-names FILE``.

The rewrite is line based, for the shapes the shipped files use (exporter ids at
the top of ``exporters:``, one-line ``exporters: [...]`` lists in pipelines, filter
conditions under ``traces: span:`` only), and raises ValueError on anything else
rather than guess. Receivers keep ``otlp``: only the exporters were renamed.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["RENAMED_EXPORTERS", "current_names"]

RENAMED_EXPORTERS: Final[dict[str, str]] = {
    "otlp": "otlp_grpc",
    "otlphttp": "otlp_http",
    "loadbalancing": "load_balancing",
}
"""Exporter type -> its current name (the old one is a deprecated alias in current releases)."""

_SECTION: Final = re.compile(r"^([a-z_]+):\s*(#.*)?$")
_EXPORTER_ID: Final = re.compile(r"^(  )([a-z_]+)(/[^:\s]*)?(:.*)$")
_EXPORTER_LIST: Final = re.compile(r"^(\s+exporters:\s*\[)([^\]]*)(\].*)$")
_BARE_ATTRIBUTES: Final = re.compile(r"(?<![\w.\]])attributes\[")

HEADER: Final = (
    "# Rewritten with the current component names by `otel-usecase collector-config current-names`:\n"
    "# otlp_grpc / otlp_http (collector v0.144.0+), load_balancing (contrib PR #48533, 2026),\n"
    "# filter trace_conditions (contrib v0.146.0+). Use the original file for older collectors.\n"
)


def _rename(component_id: str) -> str:
    kind, slash, name = component_id.strip().partition("/")
    return RENAMED_EXPORTERS.get(kind, kind) + slash + name


def current_names(text: str) -> str:
    """``text`` (a collector config) with the current exporter and filter-condition names."""
    lines = text.splitlines()
    out: list[str] = [HEADER.rstrip("\n")]
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        top = _SECTION.match(line)
        if top:
            section = top.group(1)
        elif section == "exporters" and (match := _EXPORTER_ID.match(line)):
            line = match.group(1) + _rename(match.group(2) + (match.group(3) or "")) + match.group(4)
        elif section == "service" and (match := _EXPORTER_LIST.match(line)):
            ids = ", ".join(_rename(x) for x in match.group(2).split(",") if x.strip())
            line = match.group(1) + ids + match.group(3)
        elif section == "processors" and line.strip() == "traces:":
            converted, i = _filter_conditions(lines, i)
            out += converted
            continue
        out.append(line)
        i += 1
    return "\n".join(out) + "\n"


def _filter_conditions(lines: list[str], start: int) -> tuple[list[str], int]:
    """``traces: span: [conditions]`` at ``start`` -> ``trace_conditions: [span.-prefixed conditions]``."""
    indent = len(lines[start]) - len(lines[start].lstrip())
    span = lines[start + 1] if start + 1 < len(lines) else ""
    if span.strip() != "span:" or len(span) - len(span.lstrip()) != indent + 2:
        raise ValueError(f"line {start + 2}: only a filter's `traces: span:` conditions can be rewritten")
    converted = [" " * indent + "trace_conditions:"]
    i = start + 2
    while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent + 2):
        item = lines[i]
        if item.strip():
            if not item.lstrip().startswith("- "):
                raise ValueError(f"line {i + 1}: expected one condition per `- ` item")
            item = " " * (indent + 2) + _BARE_ATTRIBUTES.sub("span.attributes[", item.lstrip())
        converted.append(item)
        i += 1
    if i < len(lines) and len(lines[i]) - len(lines[i].lstrip()) == indent + 2 and lines[i].strip():
        raise ValueError(f"line {i + 1}: the filter has other `traces:` blocks; rewrite it by hand")
    return converted, i
