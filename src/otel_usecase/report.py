"""Cost reports from the ledger: queries, aggregation and formatting.

One query per report groups the ledger by (report key, run) in the database,
so the work scales with the number of runs, not of calls; the per-run figures
(average, p50, p95) are then computed from those run totals. The SQL uses ``?``
placeholders and only standard aggregates, so SQLite and PostgreSQL run it as is.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from ._log import logger
from .store import Store, StoreError, StoreUnavailable
from .store.base import TABLE

__all__ = [
    "GROUPINGS",
    "ReportError",
    "ReportRow",
    "build_report",
    "format_report",
    "format_run",
    "parse_since",
    "render_report",
    "run_calls",
]

GROUPINGS: Final[dict[str, tuple[str, ...]]] = {
    "use-case": ("use_case",),
    "run": ("use_case", "run_id"),
    "experience": ("experience_name", "experience_id"),
    "user": ("user_id",),
    "model": ("provider", "model"),
    "step": ("use_case", "step"),
    "version": ("use_case", "use_case_version"),
}
"""``--by`` values and the ledger columns each one groups by."""

_NONE_LABEL: Final = "-"


class ReportError(ValueError):
    """A report was asked for with options that do not make sense."""


@dataclass(slots=True)
class ReportRow:
    """One line of a report: one group's totals and per-run figures."""

    key: dict[str, str | None]
    runs: int = 0
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = 0
    no_usage_calls: int = 0
    avg_run_cost_usd: float = 0.0
    p50_run_cost_usd: float = 0.0
    p95_run_cost_usd: float = 0.0
    run_costs: list[float] = field(default_factory=list, repr=False)


def parse_since(value: str | None, now: float | None = None) -> int | None:
    """``24h``, ``7d``, ``30m``, ``90s``, ``2w`` or an ISO date/time -> a start time in ns."""
    if value is None:
        return None
    text = value.strip()
    match = re.fullmatch(r"(\d+)\s*([smhdw])", text)
    if match:
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
        return int(((now if now is not None else time.time()) - seconds) * 1e9)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ReportError(
            f"--since {value!r} is neither a duration (24h, 7d, 30m) nor a date (2026-01-01)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1e9)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return 0.0
    pos = (len(sorted_values) - 1) * q
    lower = math.floor(pos)
    upper = math.ceil(pos)
    if lower == upper:
        return sorted_values[lower]
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (pos - lower)


def build_report(
    store: Store, by: str = "use-case", *, use_case: str | None = None, since: str | None = None
) -> list[ReportRow]:
    """Totals per group plus average, p50 and p95 cost per run, most expensive first."""
    if by not in GROUPINGS:
        raise ReportError(f"--by {by!r} is not one of {', '.join(GROUPINGS)}")
    keys = tuple(GROUPINGS[by])
    where, params = _filters(use_case, since)
    # run_id first: the ledger's covering index is ordered by (run_id, use_case).
    order = tuple(dict.fromkeys(("run_id", *keys)))
    group_cols = ", ".join(order)
    per_run = f"SELECT {group_cols}, {_RUN_TOTALS} FROM {TABLE}{where} GROUP BY {group_cols}"
    n_keys = len(order)
    key_at = tuple(order.index(k) for k in keys)
    if "run_id" in keys:  # one report row per run: nothing to aggregate (200k+ rows is common)
        result = [_run_row(r, keys, key_at, n_keys) for r in store.query(per_run, params)]
    elif store.dialect == "postgresql":
        result = _aggregated_in_sql(store, per_run, params, keys)
    else:
        result = _aggregate(store.query(per_run, params), keys, key_at, n_keys)
    result.sort(key=_sort_key)
    return result


_RUN_TOTAL_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("calls", "COUNT(*)"),
    ("input_tokens", "COALESCE(SUM(input_tokens), 0)"),
    ("output_tokens", "COALESCE(SUM(output_tokens), 0)"),
    ("cached_tokens", "COALESCE(SUM(cache_read_tokens), 0)"),
    ("reasoning_tokens", "COALESCE(SUM(reasoning_tokens), 0)"),
    ("cost_usd", "COALESCE(SUM(cost_usd), 0)"),
    ("unpriced_calls", "SUM(CASE WHEN status = 'unpriced' THEN 1 ELSE 0 END)"),
    ("no_usage_calls", "SUM(CASE WHEN status = 'no_usage' THEN 1 ELSE 0 END)"),
)
_RUN_TOTALS: Final = ", ".join(f"{expression} AS {name}" for name, expression in _RUN_TOTAL_COLUMNS)
"""One run's totals, named as in the report (standard SQL: SQLite and PostgreSQL run it as is)."""


def _aggregated_in_sql(
    store: Store, per_run: str, params: Sequence[Any], keys: tuple[str, ...]
) -> list[ReportRow]:
    """Groups of runs with their p50 / p95 run cost computed by PostgreSQL (``percentile_cont``).

    Only the groups travel to Python (10 rows instead of 200k run totals for
    ``--by use-case``). ``percentile_cont`` interpolates linearly between closest
    ranks, like :func:`_percentile`.
    """
    key_cols = ", ".join(keys)
    sql = (
        f"SELECT {key_cols}, COUNT(*), SUM(calls), SUM(input_tokens), SUM(output_tokens), "
        "SUM(cached_tokens), SUM(reasoning_tokens), SUM(cost_usd), SUM(unpriced_calls), SUM(no_usage_calls), "
        "AVG(cost_usd), percentile_cont(0.5) WITHIN GROUP (ORDER BY cost_usd), "
        "percentile_cont(0.95) WITHIN GROUP (ORDER BY cost_usd) "
        f"FROM ({per_run}) AS runs GROUP BY {key_cols}"
    )
    n = len(keys)
    rows = []
    for record in store.query(sql, params):
        runs, calls, inp, out, cached, reasoning, cost, unpriced, no_usage, avg, p50, p95 = record[n:]
        rows.append(
            ReportRow(
                dict(zip(keys, record[:n])),
                int(runs),
                int(calls),
                int(inp),
                int(out),
                int(cached),
                int(reasoning),
                float(cost),
                int(unpriced),
                int(no_usage),
                float(avg),
                float(p50),
                float(p95),
            )
        )
    return rows


def _run_row(
    record: tuple[Any, ...], keys: tuple[str, ...], key_at: tuple[int, ...], n_keys: int
) -> ReportRow:
    calls, inp, out, cached, reasoning, cost, unpriced, no_usage = record[n_keys:]
    cost = float(cost)
    return ReportRow(
        {k: record[i] for k, i in zip(keys, key_at)},
        1,
        int(calls),
        int(inp),
        int(out),
        int(cached),
        int(reasoning),
        cost,
        int(unpriced),
        int(no_usage),
        cost,
        cost,
        cost,
    )


def _aggregate(
    records: list[tuple[Any, ...]], keys: tuple[str, ...], key_at: tuple[int, ...], n_keys: int
) -> list[ReportRow]:
    """Per-run totals -> per-group totals plus the distribution of run costs."""
    rows: dict[tuple[Any, ...], ReportRow] = {}
    for record in records:
        key_values = tuple(record[i] for i in key_at)
        row = rows.get(key_values)
        if row is None:
            row = rows[key_values] = ReportRow(key=dict(zip(keys, key_values)))
        calls, inp, out, cached, reasoning, cost, unpriced, no_usage = record[n_keys:]
        row.runs += 1
        row.calls += int(calls)
        row.input_tokens += int(inp)
        row.output_tokens += int(out)
        row.cached_tokens += int(cached)
        row.reasoning_tokens += int(reasoning)
        row.cost_usd += float(cost)
        row.unpriced_calls += int(unpriced)
        row.no_usage_calls += int(no_usage)
        row.run_costs.append(float(cost))
    result = list(rows.values())
    for row in result:
        costs = sorted(row.run_costs)
        row.avg_run_cost_usd = sum(costs) / len(costs) if costs else 0.0
        row.p50_run_cost_usd = _percentile(costs, 0.5)
        row.p95_run_cost_usd = _percentile(costs, 0.95)
    return result


def _sort_key(row: ReportRow) -> tuple[Any, ...]:
    """Most expensive first; ties in key order (missing values first)."""
    return (-row.cost_usd, *("" if v is None else str(v) for v in row.key.values()))


def _filters(use_case: str | None, since: str | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if use_case is not None:
        clauses.append("use_case = ?")
        params.append(use_case)
    start = parse_since(since)
    if start is not None:
        clauses.append("start_ns >= ?")
        params.append(start)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


# --- formatting --------------------------------------------------------------------------

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def safe_text(value: object) -> str:
    """Printable text: control characters (terminal escapes, newlines) shown as ``\\xNN``."""
    text = _NONE_LABEL if value is None else str(value)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def money(value: float | None) -> str:
    """USD with enough decimals that a cheap call never shows as 0.00."""
    if value is None:
        return "unpriced"
    if value == 0:
        return "$0"
    if abs(value) >= 100:
        return f"${value:,.2f}"
    if abs(value) >= 0.01:
        return f"${value:.4f}"
    return f"${value:.6f}" if abs(value) >= 0.000001 else f"${value:.2e}"


def _csv_cell(value: object) -> object:
    """Neutralise spreadsheet formulas (``=``, ``+``, ``-``, ``@`` at the start of a text cell)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


_HEADERS: Final = (
    "runs",
    "calls",
    "input",
    "output",
    "cached",
    "reasoning",
    "cost",
    "avg/run",
    "p50/run",
    "p95/run",
    "unpriced",
)


_RECORD_FIELDS: Final = (
    "runs",
    "calls",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "unpriced_calls",
    "no_usage_calls",
    "avg_run_cost_usd",
    "p50_run_cost_usd",
    "p95_run_cost_usd",
)


def _record(row: ReportRow) -> dict[str, Any]:
    """One row as a flat dict (by hand: ``dataclasses.asdict`` deep-copies, and reports can have 100k+ rows)."""
    record: dict[str, Any] = dict(row.key)
    for name in _RECORD_FIELDS:
        record[name] = getattr(row, name)
    return record


def format_report(rows: Sequence[ReportRow], by: str, fmt: str = "table") -> str:
    """Render ``rows`` as ``table`` (for people), ``json`` or ``csv`` (for tools)."""
    keys = GROUPINGS[by]
    if fmt == "json":
        # Compact: one call into json's C encoder (indent= falls back to the Python one).
        return json.dumps([_record(r) for r in rows], separators=(",", ":"))
    if fmt == "csv":
        out = io.StringIO()
        records = [_record(r) for r in rows]
        writer = csv.DictWriter(out, fieldnames=[*keys, *_RECORD_FIELDS])
        writer.writeheader()
        for record in records:
            writer.writerow({k: _csv_cell(v) for k, v in record.items()})
        return out.getvalue()
    if fmt != "table":
        raise ReportError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    return _table(rows, keys)


FORMATS: Final = ("table", "json", "csv")
"""``--format`` values."""


def render_report(
    store: Store,
    by: str = "use-case",
    fmt: str = "table",
    *,
    use_case: str | None = None,
    since: str | None = None,
) -> str:
    """The report as ``otel-usecase report`` prints it.

    ``--by run --format json`` is one record per run, often 200k and more;
    building and encoding those in Python takes longer than the query itself, so
    the database writes that JSON (SQLite ``json_object``, PostgreSQL
    ``row_to_json``) in the same order and with the same fields as
    :func:`format_report`. Other reports go through :func:`build_report`.
    """
    if by not in GROUPINGS:
        raise ReportError(f"--by {by!r} is not one of {', '.join(GROUPINGS)}")
    if fmt not in FORMATS:
        raise ReportError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "json" and by == "run":
        text = _runs_json(store, use_case, since)
        if text is not None:
            return text
    return format_report(build_report(store, by, use_case=use_case, since=since), by, fmt)


def _runs_json(store: Store, use_case: str | None, since: str | None) -> str | None:
    """``--by run`` as a JSON array written by the database, or None when it cannot."""
    where, params = _filters(use_case, since)
    if store.dialect == "sqlite":
        return _sqlite_runs_json(store, where, params)
    if store.dialect == "postgresql":
        return _postgres_runs_json(store, where, params)
    return None


_RUN_FIELDS: Final = ("use_case", "run_id", *_RECORD_FIELDS)
_COST: Final = dict(_RUN_TOTAL_COLUMNS)["cost_usd"]


def _sqlite_runs_json(store: Store, where: str, params: Sequence[Any]) -> str | None:
    """One ``json_object`` per run, in report order; Python only joins them."""
    expressions = {
        "use_case": "use_case",
        "run_id": "run_id",
        "runs": "1",
        **dict(_RUN_TOTAL_COLUMNS),
        "avg_run_cost_usd": _COST,
        "p50_run_cost_usd": _COST,
        "p95_run_cost_usd": _COST,
    }
    json_object = ", ".join(f"'{name}', {expressions[name]}" for name in _RUN_FIELDS)
    sql = (
        f"SELECT json_object({json_object}) FROM {TABLE}{where} GROUP BY run_id, use_case "
        f"ORDER BY {_COST} DESC, COALESCE(use_case, ''), run_id"
    )
    try:
        records = store.query(sql, params)
    except StoreError:  # an SQLite built without the JSON functions: let Python do it
        return None
    return "[" + ",".join(record[0] for record in records) + "]"


def _postgres_runs_json(store: Store, where: str, params: Sequence[Any]) -> str:
    """The run records concatenated by PostgreSQL, in two halves at once on a big ledger.

    PostgreSQL's JSON functions format every field of every record through a
    generic per-type path; 200k records take 0.6 s that way. The record is
    written by concatenation instead: names are constants, the two strings go
    through ``to_json`` (JSON escaping), counts are bigint text, and the cost is
    formatted once for the four cost fields of a one-run record (a fifth less
    time). A non-finite cost (impossible from the exporter) is written as null.
    """
    cost_text = "CASE WHEN t.cost_usd BETWEEN -1e308 AND 1e308 THEN t.cost_usd::text ELSE 'null' END"
    values = {
        "use_case": "COALESCE(to_json(r.use_case)::text, 'null')",
        "run_id": "to_json(r.run_id)::text",
        "runs": "'1'",
        "cost_usd": "r.c",
        "avg_run_cost_usd": "r.c",
        "p50_run_cost_usd": "r.c",
        "p95_run_cost_usd": "r.c",
    }
    pieces = []
    for i, name in enumerate(_RUN_FIELDS):
        pieces.append(("'{" if i == 0 else "',") + f'"{name}":\'')
        pieces.append(values.get(name, f"r.{name}::text"))
    record = "concat(" + ", ".join(pieces) + ", '}')"

    def runs_json(having: str) -> str:
        # COLLATE "C": ties in the order of Python's string comparison, whatever the database locale.
        return (
            f"SELECT string_agg({record}, ',' ORDER BY r.cost_usd DESC, "
            'COALESCE(r.use_case, \'\') COLLATE "C", r.run_id COLLATE "C") '
            f"FROM (SELECT t.*, {cost_text} AS c FROM (SELECT use_case, run_id, {_RUN_TOTALS} "
            f"FROM {TABLE}{where} GROUP BY run_id, use_case{having}) AS t) AS r"
        )

    together = getattr(store, "query_together", None)
    pivot = _median_run_cost(store, where, params) if together is not None else None
    parts: list[str | None] = []
    if together is not None and pivot is not None:
        # Two halves at an estimated median run cost, on two server cores; in the
        # report's order (cost first) the half above the pivot comes first whole.
        try:
            split = together(
                [
                    (runs_json(f" HAVING {_COST} >= ?"), [*params, pivot]),
                    (runs_json(f" HAVING NOT ({_COST} >= ?)"), [*params, pivot]),
                ]
            )
            parts = [rows[0][0] for rows in split if rows]
        except StoreUnavailable:
            raise
        except StoreError as exc:  # e.g. a PostgreSQL-compatible server without pg_export_snapshot
            logger.debug("otel-usecase: report in one query: %s", exc)
            pivot = None
    if pivot is None:
        parts = [row[0] for row in store.query(runs_json(""), params)]
    return "[" + ",".join(part for part in parts if part) + "]"


_SPLIT_FROM_PAGES: Final = 4096
"""A PostgreSQL ledger of at least this many 8 KiB pages (about 100k calls) gets its
``--by run`` JSON written in two halves at once (:func:`_median_run_cost`): 1.3 s -> 0.9 s
of query at a million calls. Smaller ones are done in one query before a split would pay."""
_SAMPLE_PAGES: Final = 100


def _median_run_cost(store: Store, where: str, params: Sequence[Any]) -> float | None:
    """An estimate of the median run cost, from the runs of a sample of the ledger's pages.

    It only balances the two halves of a split report: any value gives the same
    report. None for a ledger too small to split, or a sample without runs.
    """
    ((pages,),) = store.query(f"SELECT pg_relation_size('{TABLE}') / 8192")
    if int(pages) < _SPLIT_FROM_PAGES:
        return None
    percent = min(100.0, 100.0 * _SAMPLE_PAGES / max(int(pages), 1))
    sampled = store.query(
        f"SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY s.cost) FROM "
        f"(SELECT SUM(cost_usd) AS cost FROM {TABLE} WHERE run_id IN "
        f"(SELECT run_id FROM {TABLE} TABLESAMPLE SYSTEM ({percent:.6f}){where}) GROUP BY run_id) AS s",
        params,
    )
    value = sampled[0][0] if sampled else None
    return float(value) if isinstance(value, int | float) else None


def _table(rows: Sequence[ReportRow], keys: Sequence[str]) -> str:
    header = [*keys, *_HEADERS]
    body = [
        [
            *(safe_text(r.key[k]) for k in keys),
            str(r.runs),
            str(r.calls),
            f"{r.input_tokens:,}",
            f"{r.output_tokens:,}",
            f"{r.cached_tokens:,}",
            f"{r.reasoning_tokens:,}",
            money(r.cost_usd),
            money(r.avg_run_cost_usd),
            money(r.p50_run_cost_usd),
            money(r.p95_run_cost_usd),
            str(r.unpriced_calls),
        ]
        for r in rows
    ]
    total_cost = sum(r.cost_usd for r in rows)
    unpriced = sum(r.unpriced_calls for r in rows)
    no_usage = sum(r.no_usage_calls for r in rows)
    lines = _aligned(header, body, numeric_from=len(keys))
    lines.append("")
    lines.append(f"total {money(total_cost)} over {sum(r.calls for r in rows)} calls")
    if unpriced:
        lines.append(f"{unpriced} unpriced calls (model without a price; not in the cost above)")
    if no_usage:
        lines.append(f"{no_usage} calls with unknown usage (no token counts on the span; not priced)")
    if not rows:
        return "no calls recorded"
    return "\n".join(lines)


def _aligned(header: Sequence[str], body: Iterable[Sequence[str]], numeric_from: int) -> list[str]:
    table = [list(header), *(list(r) for r in body)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i >= numeric_from else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return [line(table[0]), "  ".join("-" * w for w in widths), *(line(r) for r in table[1:])]


# --- one run -----------------------------------------------------------------------------

_RUN_COLUMNS: Final = (
    "start_ns",
    "use_case",
    "step",
    "user_id",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "reasoning_tokens",
    "cost_usd",
    "status",
    "trace_id",
    "span_id",
)


def run_calls(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The calls of one run in time order."""
    sql = f"SELECT {', '.join(_RUN_COLUMNS)} FROM {TABLE} WHERE run_id = ? ORDER BY start_ns, span_id"
    return [dict(zip(_RUN_COLUMNS, r)) for r in store.query(sql, (run_id,))]


def format_run(run_id: str, calls: Sequence[dict[str, Any]], fmt: str = "table") -> str:
    """Render the calls of one run."""
    if fmt == "json":
        return json.dumps(list(calls), indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(_RUN_COLUMNS))
        writer.writeheader()
        for call in calls:
            writer.writerow({k: _csv_cell(v) for k, v in call.items()})
        return out.getvalue()
    if not calls:
        return f"no calls recorded for run {safe_text(run_id)}"
    header = [
        "time (UTC)",
        "step",
        "model",
        "input",
        "output",
        "cached",
        "reasoning",
        "cost",
        "trace_id",
        "span_id",
    ]
    body = [
        [
            datetime.fromtimestamp(c["start_ns"] / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            safe_text(c["step"]),
            safe_text(c["model"]),
            _count(c["input_tokens"]),
            _count(c["output_tokens"]),
            _count(c["cache_read_tokens"]),
            _count(c["reasoning_tokens"]),
            money(c["cost_usd"]) if c["status"] != "no_usage" else "no usage",
            c["trace_id"],
            c["span_id"],
        ]
        for c in calls
    ]
    first = calls[0]
    title = f"run {safe_text(run_id)}  use case {safe_text(first['use_case'])}  user {safe_text(first['user_id'])}"
    total = sum(c["cost_usd"] or 0.0 for c in calls)
    unpriced = sum(1 for c in calls if c["status"] == "unpriced")
    lines = [
        title,
        "",
        *_aligned(header, body, numeric_from=3),
        "",
        f"total {money(total)} over {len(calls)} calls",
    ]
    if unpriced:
        lines.append(f"{unpriced} unpriced calls")
    return "\n".join(lines)


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"
