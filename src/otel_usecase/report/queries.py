"""Cost reports from the ledger: queries, aggregation and formatting.

One query per report groups the ledger by (report key, run) in the database,
so the work scales with the number of runs, not of calls; the per-run figures
(average, p50, p95) are then computed from those run totals. The SQL uses ``?``
placeholders and standard aggregates, except for the token sums, which each
database makes overflow-proof its own way (:func:`run_total_columns`).

Unpriced is unknown, not free: a cost no call of a group has is None (JSON null,
``unpriced`` in a table), a cost that leaves out unpriced, usage-less or partly
read calls is a lower bound (``cost_complete`` false, ``>= $`` in a table), and
the per-run figures are over the runs whose cost is complete.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from .._log import logger
from ..store import Store, StoreError, StoreUnavailable
from ..store.base import TABLE

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
    """One line of a report: one group's totals and per-run figures.

    Unpriced is unknown, not free: ``cost_usd`` is None when no call of the group
    has a price, and a lower bound when ``cost_complete`` is False (some calls are
    unpriced, have no usage, or have usage that could only partly be read). The
    per-run figures are over the runs whose cost is complete; ``runs_left_out``
    says how many runs they leave out (None when no run is left to compute them on).
    """

    key: dict[str, str | None]
    runs: int = 0
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    cost_complete: bool = True
    unpriced_calls: int = 0
    no_usage_calls: int = 0
    partial_calls: int = 0
    avg_run_cost_usd: float | None = None
    p50_run_cost_usd: float | None = None
    p95_run_cost_usd: float | None = None
    runs_left_out: int = 0
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


def _percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not sorted_values:
        return None
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
    per_run = f"SELECT {group_cols}, {run_totals(store.dialect)} FROM {TABLE}{where} GROUP BY {group_cols}"
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


_STATUS_COUNTS: Final = (
    ("unpriced_calls", "unpriced"),
    ("no_usage_calls", "no_usage"),
    ("partial_calls", "partial"),
)
"""Calls whose cost is unknown (``unpriced``, ``no_usage``) or a lower bound (``partial``), by status."""


_COST: Final = "SUM(cost_usd)"
"""A run's cost: NULL when no call of it has a cost (unknown, not $0)."""


def run_total_columns(dialect: str) -> tuple[tuple[str, str], ...]:
    """One run's totals as (name, SQL expression), named as in the report.

    No stored row may make a report fail: SQLite's ``SUM`` of integers raises
    "integer overflow" past 2**63 - 1 (one hostile or corrupt row is enough), so
    SQLite sums token counts with ``TOTAL`` (a double, exact for integers below
    2**53) cast back to an integer (``CAST`` saturates at 2**63 - 1 instead of
    failing). PostgreSQL sums ``bigint`` into ``numeric``, which cannot overflow.
    ``cost_usd`` is NULL when no call of the run has a cost. A run's cost is
    complete when it has no unpriced, usage-less or partly read call
    (:func:`_incomplete`): derived from these counts rather than counted again,
    since each aggregate more costs the biggest report (``--by run``) 5-8%.
    """
    if dialect == "sqlite":
        tokens = "CAST(TOTAL({}) AS INTEGER)"
    else:
        tokens = "COALESCE(SUM({}), 0)"
    return (
        ("calls", "COUNT(*)"),
        ("input_tokens", tokens.format("input_tokens")),
        ("output_tokens", tokens.format("output_tokens")),
        ("cached_tokens", tokens.format("cache_read_tokens")),
        ("reasoning_tokens", tokens.format("reasoning_tokens")),
        ("cost_usd", _COST),
        *((name, f"SUM(CASE WHEN status = '{status}' THEN 1 ELSE 0 END)") for name, status in _STATUS_COUNTS),
    )


def _incomplete(counts: Callable[[str], str]) -> str:
    """SQL that is 0 for a run (or group) whose cost is complete: ``counts(name)`` is how a count is read."""
    return " + ".join(counts(name) for name, _ in _STATUS_COUNTS)


def run_totals(dialect: str) -> str:
    """The select list of :func:`run_total_columns`."""
    return ", ".join(f"{expression} AS {name}" for name, expression in run_total_columns(dialect))


def _aggregated_in_sql(
    store: Store, per_run: str, params: Sequence[Any], keys: tuple[str, ...]
) -> list[ReportRow]:
    """Groups of runs with their p50 / p95 run cost computed by PostgreSQL (``percentile_cont``).

    Only the groups travel to Python (10 rows instead of 200k run totals for
    ``--by use-case``). ``percentile_cont`` interpolates linearly between closest
    ranks, like :func:`_percentile`, and skips NULLs: the runs whose cost is not
    complete are left out of the per-run figures as NULLs.
    """
    key_cols = ", ".join(keys)
    incomplete = _incomplete(str)
    complete_cost = f"CASE WHEN {incomplete} = 0 THEN cost_usd END"
    sql = (
        f"SELECT {key_cols}, COUNT(*), SUM(calls), SUM(input_tokens), SUM(output_tokens), "
        "SUM(cached_tokens), SUM(reasoning_tokens), SUM(cost_usd), "
        "SUM(unpriced_calls), SUM(no_usage_calls), SUM(partial_calls), "
        f"AVG({complete_cost}), percentile_cont(0.5) WITHIN GROUP (ORDER BY {complete_cost}), "
        f"percentile_cont(0.95) WITHIN GROUP (ORDER BY {complete_cost}), "
        f"SUM(CASE WHEN {incomplete} = 0 THEN 0 ELSE 1 END) "
        f"FROM ({per_run}) AS runs GROUP BY {key_cols}"
    )
    n = len(keys)
    rows = []
    for record in store.query(sql, params):
        (
            runs,
            calls,
            inp,
            out,
            cached,
            reasoning,
            cost,
            unpriced,
            no_usage,
            partial,
            avg,
            p50,
            p95,
            left,
        ) = record[n:]
        rows.append(
            ReportRow(
                dict(zip(keys, record[:n])),
                runs=int(runs),
                calls=int(calls),
                input_tokens=int(inp),
                output_tokens=int(out),
                cached_tokens=int(cached),
                reasoning_tokens=int(reasoning),
                cost_usd=_number(cost),
                cost_complete=int(unpriced) + int(no_usage) + int(partial) == 0,
                unpriced_calls=int(unpriced),
                no_usage_calls=int(no_usage),
                partial_calls=int(partial),
                avg_run_cost_usd=_number(avg),
                p50_run_cost_usd=_number(p50),
                p95_run_cost_usd=_number(p95),
                runs_left_out=int(left),
            )
        )
    return rows


def _number(value: Any) -> float | None:
    """A cost as a float; None when unknown, or not finite (a sum past 1e308: no real cost is)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _run_row(
    record: tuple[Any, ...], keys: tuple[str, ...], key_at: tuple[int, ...], n_keys: int
) -> ReportRow:
    calls, inp, out, cached, reasoning, cost, unpriced, no_usage, partial = record[n_keys:]
    cost = _number(cost)
    complete = int(unpriced) + int(no_usage) + int(partial) == 0
    known = cost if complete else None
    return ReportRow(
        {k: record[i] for k, i in zip(keys, key_at)},
        runs=1,
        calls=int(calls),
        input_tokens=int(inp),
        output_tokens=int(out),
        cached_tokens=int(cached),
        reasoning_tokens=int(reasoning),
        cost_usd=cost,
        cost_complete=complete,
        unpriced_calls=int(unpriced),
        no_usage_calls=int(no_usage),
        partial_calls=int(partial),
        avg_run_cost_usd=known,
        p50_run_cost_usd=known,
        p95_run_cost_usd=known,
        runs_left_out=0 if complete else 1,
    )


def _aggregate(
    records: list[tuple[Any, ...]], keys: tuple[str, ...], key_at: tuple[int, ...], n_keys: int
) -> list[ReportRow]:
    """Per-run totals -> per-group totals plus the distribution of the complete run costs."""
    rows: dict[tuple[Any, ...], ReportRow] = {}
    for record in records:
        key_values = tuple(record[i] for i in key_at)
        row = rows.get(key_values)
        if row is None:
            row = rows[key_values] = ReportRow(key=dict(zip(keys, key_values)))
        # SQLite's COUNT, CAST(... AS INTEGER) and SUM(CASE ...) are ints already (the only
        # store aggregated here: PostgreSQL aggregates in SQL); 200k runs per report.
        calls, inp, out, cached, reasoning, cost, unpriced, no_usage, partial = record[n_keys:]
        row.runs += 1
        row.calls += calls
        row.input_tokens += inp
        row.output_tokens += out
        row.cached_tokens += cached
        row.reasoning_tokens += reasoning
        if cost is not None and -1e308 <= cost <= 1e308:  # not NaN or infinite: as _number
            row.cost_usd = cost if row.cost_usd is None else row.cost_usd + cost
        else:
            cost = None
        row.unpriced_calls += unpriced
        row.no_usage_calls += no_usage
        row.partial_calls += partial
        if cost is not None and not (unpriced or no_usage or partial):
            row.run_costs.append(cost)
        else:
            row.cost_complete = False
            row.runs_left_out += 1
    result = list(rows.values())
    for row in result:
        costs = sorted(row.run_costs)
        row.avg_run_cost_usd = sum(costs) / len(costs) if costs else None
        row.p50_run_cost_usd = _percentile(costs, 0.5)
        row.p95_run_cost_usd = _percentile(costs, 0.95)
    return result


def _sort_key(row: ReportRow) -> tuple[Any, ...]:
    """Most expensive first, unpriced last (as SQL's ``ORDER BY cost DESC``); ties in key order."""
    cost = row.cost_usd
    return (cost is None, -(cost or 0.0), *("" if v is None else str(v) for v in row.key.values()))


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

CELL_LIMIT: Final = 80
"""Longest table cell, in characters after escaping; longer ones end in an ellipsis."""

_UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
"""Control, format (bidi overrides, zero-width), line/paragraph separators, and characters
with no glyph (surrogates, private use, unassigned): escaped in table output."""


def _escape(char: str) -> str:
    if unicodedata.category(char) not in _UNSAFE_CATEGORIES:
        return char  # a space other than U+0020 (isprintable() says no): harmless
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def safe_text(value: object, limit: int = CELL_LIMIT) -> str:
    """Printable text for a terminal: ids arrive over OTLP from anyone.

    Every control and format character (Unicode categories Cc, Cf, Zl, Zp, plus
    unassigned, private-use and surrogate code points) is shown escaped
    (``\\x1b``, ``\\u202e``): a terminal escape, a bidi override or a line
    separator in an id must not rewrite what the table says. Text longer than
    ``limit`` characters is cut, ending in an ellipsis.
    """
    text = _NONE_LABEL if value is None else str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escape(c) for c in text)
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return text


def cost_decimals(values: Iterable[object]) -> int:
    """Decimals for one column of costs: the smallest non-zero one still shows 3 significant digits.

    One precision per column, so that the decimal points line up and equal
    precision means equal certainty; at least 2 (cents), at most 10.
    """
    smallest = min(
        (abs(v) for v in values if isinstance(v, int | float) and v and math.isfinite(v)), default=None
    )
    if smallest is None:
        return 2
    return max(2, min(10, 2 - math.floor(math.log10(smallest))))


def money(value: object, decimals: int | None = None, *, lower_bound: bool = False) -> str:
    """USD with ``decimals`` decimals (default: enough for this value, see :func:`cost_decimals`).

    None is ``unpriced`` (unknown, never $0); ``lower_bound`` writes ``>= $...`` for a
    total that leaves out calls whose cost is unknown.
    """
    if value is None:
        return "unpriced"
    if not isinstance(value, int | float) or not math.isfinite(value):
        return safe_text(value)  # not a number a store of ours writes; shown, never fatal
    if decimals is None:
        decimals = cost_decimals([value])
    text = f"${value:,.{decimals}f}" if abs(value) < 1e12 else f"${value:.3e}"
    return ">= " + text if lower_bound else text


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

TOKENS_NOTE: Final = (
    "tokens: input includes cached (billed apart, at the cache-read price); output includes reasoning"
)
"""Said above every table: the columns follow OpenAI's convention, pricing bills the parts apart."""


_RECORD_FIELDS: Final = (
    "runs",
    "calls",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cost_complete",
    "unpriced_calls",
    "no_usage_calls",
    "partial_calls",
    "avg_run_cost_usd",
    "p50_run_cost_usd",
    "p95_run_cost_usd",
    "runs_left_out",
)


_PER_RUN_FIGURES: Final = ("avg_run_cost_usd", "p50_run_cost_usd", "p95_run_cost_usd", "runs_left_out")
_ONE_RUN_FIELDS: Final = tuple(name for name in _RECORD_FIELDS if name not in _PER_RUN_FIGURES)
"""The fields of a ``--by run`` record: one run's average, p50 and p95 are its cost, so they are left
out (they cost the biggest report, written by the database, a seventh of its time)."""


def _fields(keys: Sequence[str]) -> tuple[str, ...]:
    return _ONE_RUN_FIELDS if "run_id" in keys else _RECORD_FIELDS


def _record(row: ReportRow, fields: Sequence[str]) -> dict[str, Any]:
    """One row as a flat dict (by hand: ``dataclasses.asdict`` deep-copies, and reports can have 100k+ rows)."""
    record: dict[str, Any] = dict(row.key)
    for name in fields:
        record[name] = getattr(row, name)
    return record


def format_report(rows: Sequence[ReportRow], by: str, fmt: str = "table") -> str:
    """Render ``rows`` as ``table`` (for people), ``json`` or ``csv`` (for tools).

    An unknown cost is JSON ``null`` / an empty CSV cell / ``unpriced`` in the
    table; ``cost_complete`` false marks a lower bound (``>= $...`` in the table).
    """
    keys = GROUPINGS[by]
    fields = _fields(keys)
    if fmt == "json":
        # Compact: one call into json's C encoder (indent= falls back to the Python one).
        # default=str: a value no writer of ours stores (a BLOB id) is shown, never fatal.
        return json.dumps([_record(r, fields) for r in rows], separators=(",", ":"), default=str)
    if fmt == "csv":
        out = io.StringIO()
        records = [_record(r, fields) for r in rows]
        writer = csv.DictWriter(out, fieldnames=[*keys, *fields])
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


_RUN_FIELDS: Final = ("use_case", "run_id", *_ONE_RUN_FIELDS)


def _sqlite_runs_json(store: Store, where: str, params: Sequence[Any]) -> str | None:
    """One ``json_object`` per run, in report order; Python only joins them."""
    columns = dict(run_total_columns("sqlite"))
    # A non-finite sum (only from rows no exporter writes) is null, as in _number: SQLite would write Inf.
    finite_cost = f"CASE WHEN {_COST} BETWEEN -1e308 AND 1e308 THEN {_COST} END"
    expressions = {
        "use_case": "use_case",
        "run_id": "run_id",
        "runs": "1",
        **columns,
        "cost_usd": finite_cost,
        "cost_complete": f"json(CASE WHEN {_incomplete(columns.__getitem__)} = 0 THEN 'true' ELSE 'false' END)",
    }
    json_object = ", ".join(f"'{name}', {expressions[name]}" for name in _RUN_FIELDS)
    sql = (
        f"SELECT json_object({json_object}) FROM {TABLE}{where} GROUP BY run_id, use_case "
        f"ORDER BY {finite_cost} DESC, COALESCE(use_case, ''), run_id"
    )  # SQLite sorts NULL below every number: unpriced runs come last, as in _sort_key
    try:
        records = store.query(sql, params)
    except StoreError:  # an SQLite without the JSON functions, a BLOB in the ledger: let Python do it
        return None
    return "[" + ",".join(record[0] for record in records) + "]"


def _postgres_runs_json(store: Store, where: str, params: Sequence[Any]) -> str:
    """The run records concatenated by PostgreSQL, in two halves at once on a big ledger.

    PostgreSQL's JSON functions format every field of every record through a
    generic per-type path; 200k records take 0.6 s that way. The record is
    written by concatenation instead: names are constants, the two strings go
    through ``to_json`` (JSON escaping), counts are bigint text, and the cost is
    formatted once. An unknown cost (no priced call) and a non-finite one (impossible
    from the exporter) are written as null.
    """
    cost_text = "CASE WHEN t.cost_usd BETWEEN -1e308 AND 1e308 THEN t.cost_usd::text ELSE 'null' END"
    values = {
        "use_case": "COALESCE(to_json(r.use_case)::text, 'null')",
        "run_id": "to_json(r.run_id)::text",
        "runs": "'1'",
        "cost_usd": "r.c",
        "cost_complete": f"CASE WHEN {_incomplete(lambda name: 'r.' + name)} = 0 THEN 'true' ELSE 'false' END",
    }
    pieces = []
    for i, name in enumerate(_RUN_FIELDS):
        pieces.append(("'{" if i == 0 else "',") + f'"{name}":\'')
        pieces.append(values.get(name, f"r.{name}::text"))
    record = "concat(" + ", ".join(pieces) + ", '}')"

    def runs_json(having: str) -> str:
        # COLLATE "C": ties in the order of Python's string comparison, whatever the database locale.
        # NULLS LAST: unpriced runs after every priced one, as SQLite and _sort_key order them.
        return (
            f"SELECT string_agg({record}, ',' ORDER BY r.cost_usd DESC NULLS LAST, "
            'COALESCE(r.use_case, \'\') COLLATE "C", r.run_id COLLATE "C") '
            f"FROM (SELECT t.*, {cost_text} AS c FROM (SELECT use_case, run_id, {run_totals(store.dialect)} "
            f"FROM {TABLE}{where} GROUP BY run_id, use_case{having}) AS t) AS r"
        )

    together = getattr(store, "query_together", None)
    pivot = _median_run_cost(store, where, params) if together is not None else None
    parts: list[str | None] = []
    if together is not None and pivot is not None:
        # Two halves at an estimated median run cost, on two server cores; in the
        # report's order (cost first) the half above the pivot comes first whole
        # (the unpriced runs, NULL cost, are in the second half, at its end).
        try:
            split = together(
                [
                    (runs_json(f" HAVING {_COST} >= ?"), [*params, pivot]),
                    (runs_json(f" HAVING ({_COST} >= ?) IS NOT TRUE"), [*params, pivot]),
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
    if not rows:
        return "no calls recorded"
    per_run = "run_id" not in keys  # one run's average, p50 and p95 are its cost: not shown
    header = [*keys, *(h for h in _HEADERS if per_run or not h.endswith("/run"))]
    total_cost = _sum_known(r.cost_usd for r in rows)
    decimals = cost_decimals(
        v for r in rows for v in (r.cost_usd, r.avg_run_cost_usd, r.p50_run_cost_usd, r.p95_run_cost_usd)
    )
    body = [
        [
            *(safe_text(r.key[k]) for k in keys),
            f"{r.runs:,}",
            f"{r.calls:,}",
            f"{r.input_tokens:,}",
            f"{r.output_tokens:,}",
            f"{r.cached_tokens:,}",
            f"{r.reasoning_tokens:,}",
            money(r.cost_usd, decimals, lower_bound=not r.cost_complete),
            *(
                _NONE_LABEL if v is None else money(v, decimals)
                for v in ((r.avg_run_cost_usd, r.p50_run_cost_usd, r.p95_run_cost_usd) if per_run else ())
            ),
            f"{r.unpriced_calls:,}",
        ]
        for r in rows
    ]
    complete = all(r.cost_complete for r in rows)
    lines = [TOKENS_NOTE, "", *_aligned(header, body, numeric_from=len(keys)), ""]
    lines.append(
        f"total {money(total_cost, decimals, lower_bound=not complete)} over {sum(r.calls for r in rows):,} calls"
    )
    lines += _unknown_cost_notes(
        sum(r.unpriced_calls for r in rows),
        sum(r.no_usage_calls for r in rows),
        sum(r.partial_calls for r in rows),
    )
    left_out = sum(r.runs_left_out for r in rows)
    if left_out and per_run:
        lines.append(
            f"avg/p50/p95 per run leave out {left_out:,} runs whose cost is not fully known "
            "(a call unpriced, without usage or partly read)"
        )
    return "\n".join(lines)


def _sum_known(values: Iterable[float | None]) -> float | None:
    """The sum of the known values; None when none is known (unknown is not $0)."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _unknown_cost_notes(unpriced: int, no_usage: int, partial: int) -> list[str]:
    """The lines under a table that say which calls a cost leaves out, and why."""
    notes = []
    if unpriced:
        notes.append(f"{unpriced:,} unpriced calls (model without a price; not in the cost above)")
    if no_usage:
        notes.append(
            f"{no_usage:,} calls with unknown usage (no token counts on the span; not in the cost above)"
        )
    if partial:
        notes.append(
            f"{partial:,} calls with partly unreadable usage (priced on what could be read: a lower bound)"
        )
    return notes


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
        return json.dumps(list(calls), indent=2, default=str)
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
    decimals = cost_decimals(c["cost_usd"] for c in calls)
    body = [
        [
            _time(c["start_ns"]),
            safe_text(c["step"]),
            safe_text(c["model"]),
            _count(c["input_tokens"]),
            _count(c["output_tokens"]),
            _count(c["cache_read_tokens"]),
            _count(c["reasoning_tokens"]),
            _call_cost(c, decimals),
            safe_text(c["trace_id"]),
            safe_text(c["span_id"]),
        ]
        for c in calls
    ]
    first = calls[0]
    title = f"run {safe_text(run_id)}  use case {safe_text(first['use_case'])}  user {safe_text(first['user_id'])}"
    costs = [c["cost_usd"] if isinstance(c["cost_usd"], int | float) else None for c in calls]
    complete = all(c["status"] == "priced" for c in calls)
    lines = [
        title,
        TOKENS_NOTE,
        "",
        *_aligned(header, body, numeric_from=3),
        "",
        f"total {money(_sum_known(costs), decimals, lower_bound=not complete)} over {len(calls):,} calls",
        *_unknown_cost_notes(*(sum(1 for c in calls if c["status"] == s) for _, s in _STATUS_COUNTS)),
    ]
    return "\n".join(lines)


def _call_cost(call: dict[str, Any], decimals: int) -> str:
    status = call["status"]
    if status == "no_usage":
        return "no usage"
    if status == "unpriced":
        return "unpriced"
    return money(call["cost_usd"], decimals, lower_bound=status != "priced")


def _time(start_ns: object) -> str:
    """UTC time to the millisecond; a value no writer of ours stores is shown as it is."""
    try:
        moment = datetime.fromtimestamp(start_ns / 1e9, tz=UTC)  # type: ignore[operator]
    except (TypeError, ValueError, OverflowError, OSError):
        return safe_text(start_ns)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _count(value: object) -> str:
    if value is None:
        return "?"
    return f"{value:,}" if isinstance(value, int) else safe_text(value)
