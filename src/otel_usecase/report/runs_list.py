"""``otel-usecase runs list``: a page of runs as a table, JSON or CSV (the dashboard's runs table).

The rows are :func:`otel_usecase.report.views.list_runs`'s, so the CLI and the
dashboard list the same runs in the same order. JSON and CSV records have the
fields of :data:`RUN_FIELDS` (times in ns since the epoch, tags as an object in
JSON and as their canonical JSON text in CSV).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from ..cost import token_classes
from ..store.base import tags_json
from .text import aligned, cost_decimals, csv_cell, money, safe_text
from .views import RunRow

__all__ = ["RUN_FIELDS", "format_runs"]

_TOKEN_FIELDS: Final = tuple((c.column, c.name) for c in token_classes.TOKEN_CLASSES)

RUN_FIELDS: Final = (
    "use_case",
    "run_id",
    "start_ns",
    "end_ns",
    "user_id",
    "experience_name",
    "experience_id",
    "use_case_version",
    "tags",
    "calls",
    *(column for column, _ in _TOKEN_FIELDS),
    "cost_usd",
    "cost_complete",
)
"""The fields of each ``runs list --format json|csv`` record, in order."""


def _record(run: RunRow) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name in RUN_FIELDS:
        if name.endswith("_tokens"):
            record[name] = run.tokens.get(dict(_TOKEN_FIELDS)[name], 0)
        elif name == "tags":
            record[name] = dict(run.tags)
        else:
            record[name] = getattr(run, name)
    return record


def _time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_runs(runs: Sequence[RunRow], fmt: str = "table") -> str:
    """Render a page of runs: ``table`` (for people), ``json`` or ``csv`` (for tools)."""
    if fmt == "json":
        return json.dumps([_record(r) for r in runs], separators=(",", ":"), default=str)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(RUN_FIELDS))
        writer.writeheader()
        for run in runs:
            record = _record(run)
            record["tags"] = tags_json(run.tags) if run.tags else ""
            writer.writerow({k: csv_cell(v) for k, v in record.items()})
        return out.getvalue()
    if not runs:
        return "no runs recorded"
    decimals = cost_decimals(r.cost_usd for r in runs)
    header = ["started (UTC)", "use case", "run", "user", "experience", "version", "calls", "input", "output",
              "cost", "tags"]  # fmt: skip
    body = [
        [
            _time(r.start_ns),
            safe_text(r.use_case),
            safe_text(r.run_id),
            safe_text(r.user_id),
            safe_text(r.experience_name),
            safe_text(r.use_case_version),
            f"{r.calls:,}",
            f"{r.tokens.get('input', 0):,}",
            f"{r.tokens.get('output', 0):,}",
            money(r.cost_usd, decimals, lower_bound=not r.cost_complete),
            safe_text(" ".join(f"{k}={v}" for k, v in sorted(r.tags.items()))),
        ]
        for r in runs
    ]
    return "\n".join(aligned(header, body, numeric_from=6, numeric_to=10))
