"""Cost reports from the ledger: what to ask the store for, and how to show it.

Each store answers the report primitives of :class:`~otel_usecase.store.Store`
with its own SQL (one query per report groups the ledger by (report key, run) in
the database, so the work scales with the number of runs, not of calls); this
module turns those rows into :class:`ReportRow` and formats them. There is no
SQL here.

Every token class of :mod:`otel_usecase.cost.token_classes` has its total in
each row (JSON and CSV: ``<class>_tokens``); a table shows input, output, cached
(cache reads and writes), reasoning, and the other classes only where some row
has them, so tables stay narrow.

Unpriced is unknown, not free: a cost no call of a group has is None (JSON null,
``unpriced`` in a table), a cost that leaves out unpriced, usage-less or partly
read calls is a lower bound (``cost_complete`` false, ``>= $`` in a table), and
the per-run figures are over the runs whose cost is complete.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from ..cost import token_classes
from ..cost.call import Call
from ..scope.validation import NAME_RULE, is_name, normalised_id
from ..store import ReportFilter, Store
from ..store.base import GROUP_TOTALS, PRICE_COLUMNS, RUN_RECORD, RUN_TOTALS, tags_json
from .text import CELL_LIMIT, NONE_LABEL, aligned, cost_decimals, csv_cell, money, safe_text, sum_known

__all__ = [
    "CELL_LIMIT",
    "FORMATS",
    "GROUPINGS",
    "ReportError",
    "ReportRow",
    "build_report",
    "cost_decimals",
    "format_report",
    "format_run",
    "group_row",
    "grouping",
    "money",
    "parse_since",
    "parse_tag_filters",
    "render_report",
    "report_filter",
    "report_rows",
    "run_calls",
    "safe_text",
    "sort_rows",
]

GROUPINGS: Final[dict[str, tuple[str, ...]]] = {
    "use-case": ("use_case",),
    "run": ("use_case", "run_id"),
    "experience": ("experience_name", "experience_id"),
    "user": ("user_id",),
    "model": ("provider", "model"),
    "step": ("use_case", "step"),
    "version": ("use_case", "use_case_version"),
    "experience-version": ("experience_name", "experience_version"),
    "cost-source": ("cost_source",),
}
"""``--by`` values and the ledger columns each one groups by.

``experience-version`` is one row per version of each experience (``track_context(experience_version=...)``);
a run's attribute like the use case's version: the per-run table keeps it (schema 12), no rollup does.
``cost-source`` splits the cost by where it came from: ``provider`` (billed by the
provider or gateway), ``genai-prices <version>``, ``override <prices file hash>``.
Besides these, ``tag:<key>`` groups by the value of one tag (:func:`grouping`)."""

TAG_GROUPING: Final = "tag:"
"""``--by tag:<key>``: one row per value of tag ``<key>``; calls without it are one row with no value."""


def grouping(by: str) -> tuple[str, ...]:
    """The report keys of ``--by`` value ``by``: those of :data:`GROUPINGS`, or ``("tag:<key>",)``."""
    keys = GROUPINGS.get(by)
    if keys is not None:
        return keys
    if by.startswith(TAG_GROUPING):
        key = by[len(TAG_GROUPING) :]
        if is_name(key):
            return (by,)
        raise ReportError(f"--by {by!r}: the tag key {key!r} is not a valid name ({NAME_RULE})")
    raise ReportError(f"--by {by!r} is not one of {', '.join(GROUPINGS)} or tag:KEY")


def parse_tag_filters(pairs: Iterable[str] | None) -> tuple[tuple[str, str], ...]:
    """``--tag KEY=VALUE`` options as the filter's (key, value) pairs; a malformed one is a
    :class:`ReportError` naming it and the rule. The value is matched as stored (an id, as a scope
    stores it)."""
    parsed: list[tuple[str, str]] = []
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not is_name(key) or not value:
            raise ReportError(
                f"--tag {pair!r} is not KEY=VALUE with a key of {NAME_RULE} and a non-empty value"
            )
        parsed.append((key, normalised_id(value)))
    return tuple(parsed)


FORMATS: Final = ("table", "json", "csv")
"""``--format`` values."""

_CLASSES: Final = tuple(c.name for c in token_classes.TOKEN_CLASSES)
_CACHED: Final = ("cache_read", "cache_write")
"""The classes a table shows together as ``cached`` (a 1-hour cache write is part of ``cache_write``)."""
_ALWAYS_SHOWN: Final = ("input", "output", *_CACHED, "reasoning")
_KNOWN_OR_UNKNOWN: Final = ("input", "output")
"""Classes whose count may be unknown (a call's ``tokens`` lacks them): shown as ``?``, never 0."""
_OTHER_CLASSES: Final = tuple(c for c in _CLASSES if c not in _ALWAYS_SHOWN)
"""Classes a table shows only when some row has them (audio, image, video, 1-hour cache writes)."""


class ReportError(ValueError):
    """A report was asked for with options that do not make sense."""


@dataclass(slots=True)
class ReportRow:
    """One line of a report: one group's totals and per-run figures.

    ``tokens`` has every token class's total, by class name. Unpriced is unknown,
    not free: ``cost_usd`` is None when no call of the group has a price, and a
    lower bound when ``cost_complete`` is False (some calls are unpriced, have no
    usage, or have usage that could only partly be read). The per-run figures are
    over the runs whose cost is complete; ``runs_left_out`` says how many runs they
    leave out.
    """

    key: dict[str, Any]
    runs: int = 0
    calls: int = 0
    tokens: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None
    cost_complete: bool = True
    unpriced_calls: int = 0
    no_usage_calls: int = 0
    partial_calls: int = 0
    avg_run_cost_usd: float | None = None
    p50_run_cost_usd: float | None = None
    p95_run_cost_usd: float | None = None
    runs_left_out: int = 0

    @property
    def input_tokens(self) -> int:
        return self.tokens.get("input", 0)

    @property
    def output_tokens(self) -> int:
        return self.tokens.get("output", 0)

    @property
    def cached_tokens(self) -> int:
        """Cache reads and writes: what a table shows as ``cached``."""
        return sum(self.tokens.get(name, 0) for name in _CACHED)

    @property
    def reasoning_tokens(self) -> int:
        return self.tokens.get("reasoning", 0)


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


def _filters(
    use_case: str | None,
    since: str | None,
    user: str | None = None,
    experience: str | None = None,
    version: str | None = None,
    tags: Iterable[str] | None = None,
) -> ReportFilter:
    """The store's filter: ``user`` is the id as the app gives it, stored form found as a scope finds it;
    ``tags`` the ``KEY=VALUE`` of ``--tag`` (every one must match)."""
    user_id = None
    if user is not None:
        from ..scope.tracking import stored_user_id

        user_id = stored_user_id(user)
        if user_id is None:
            raise ReportError(
                "--user cannot select anything: user ids are dropped from all telemetry because "
                "OTEL_USECASE_USER_ID_HMAC_KEY is too short"
            )
    return ReportFilter(
        use_case=use_case,
        since_ns=parse_since(since),
        user_id=user_id,
        experience_name=experience,
        use_case_version=version,
        tags=parse_tag_filters(tags),
    )


def report_filter(
    use_case: str | None = None,
    since: str | None = None,
    user: str | None = None,
    experience: str | None = None,
    version: str | None = None,
    tags: Iterable[str] | None = None,
) -> ReportFilter:
    """The store filter of the report options (``runs list`` takes the same)."""
    return _filters(use_case, since, user, experience, version, tags)


def build_report(
    store: Store,
    by: str = "use-case",
    *,
    use_case: str | None = None,
    since: str | None = None,
    user: str | None = None,
    experience: str | None = None,
    version: str | None = None,
    tags: Iterable[str] | None = None,
    limit: int | None = None,
) -> list[ReportRow]:
    """Totals per group plus average, p50 and p95 cost per run, most expensive first.

    ``use_case``, ``user``, ``experience``, ``version``: only the calls with that value (``user`` as the
    app passes it to a scope: hashed the same way when hashing is on); ``since``: calls started then or later;
    ``tags``: ``KEY=VALUE`` strings, every one must match; ``limit``: only the ``limit`` most expensive groups.
    ``by`` is a :data:`GROUPINGS` name or ``tag:KEY``.

    The rows are :func:`~otel_usecase.report.views.top`'s, the dashboard's: read where the store keeps
    them (group totals, per-run and per-(run, group) rows, the hour rollup), else from the ledger
    (:func:`report_rows`). The same figures either way; the kept ones answer in milliseconds where the
    ledger's take seconds (a model report of 10M calls: 29 s from the ledger).
    """
    from . import views  # (views reads through this module)

    filters = _filters(use_case, since, user, experience, version, tags)
    return views.top(store, filters, by, limit)


def report_rows(store: Store, by: str, filters: ReportFilter, *, limit: int | None = None) -> list[ReportRow]:
    """The report of a store filter read from the ledger (and the per-run table for ``--by run``): what
    :func:`~otel_usecase.report.views.top` reads where nothing is kept, and what the kept figures are
    tested against."""
    keys = grouping(by)
    if limit is not None and limit < 1:
        raise ReportError(f"--limit {limit!r} must be at least 1")
    if "run_id" in keys:  # one report row per run: nothing to aggregate (200k+ rows is common)
        result = [_run_row(r, keys) for r in store.run_totals(keys, filters)]
    else:
        result = [group_row(r, keys) for r in store.group_totals(keys, filters)]
    result = sort_rows(result)
    return result if limit is None else result[:limit]


def sort_rows(rows: Iterable[ReportRow]) -> list[ReportRow]:
    """Most expensive first, unpriced last (as SQL's ``ORDER BY cost DESC``); ties in key order."""
    return sorted(rows, key=_sort_key)


_RUN_AT: Final = {name: i for i, name in enumerate(RUN_TOTALS)}
_GROUP_AT: Final = {name: i for i, name in enumerate(GROUP_TOTALS)}
_RUN_TOKENS: Final = tuple((c.name, _RUN_AT[c.column]) for c in token_classes.TOKEN_CLASSES)
_GROUP_TOKENS: Final = tuple((c.name, _GROUP_AT[c.column]) for c in token_classes.TOKEN_CLASSES)


def _number(value: Any) -> float | None:
    """A cost as a float; None when unknown, or not finite (a sum past 1e308: no real cost is)."""
    if value is None:
        return None
    number = float(value)
    return number if -1e308 <= number <= 1e308 else None


def _run_row(record: Sequence[Any], keys: tuple[str, ...]) -> ReportRow:
    n = len(keys)
    totals = record[n:]
    at = _RUN_AT
    unpriced, no_usage, partial = (
        int(totals[at["unpriced_calls"]]),
        int(totals[at["no_usage_calls"]]),
        int(totals[at["partial_calls"]]),
    )
    cost = _number(totals[at["cost_usd"]])
    complete = unpriced + no_usage + partial == 0
    known = cost if complete else None
    return ReportRow(
        dict(zip(keys, record[:n])),
        runs=1,
        calls=int(totals[at["calls"]]),
        tokens={name: int(totals[i]) for name, i in _RUN_TOKENS},
        cost_usd=cost,
        cost_complete=complete,
        unpriced_calls=unpriced,
        no_usage_calls=no_usage,
        partial_calls=partial,
        avg_run_cost_usd=known,
        p50_run_cost_usd=known,
        p95_run_cost_usd=known,
        runs_left_out=0 if known is not None else 1,
    )


def group_row(record: Sequence[Any], keys: tuple[str, ...]) -> ReportRow:
    """The :class:`ReportRow` of a store's group record (``keys`` values, then GROUP_TOTALS)."""
    n = len(keys)
    totals = record[n:]
    at = _GROUP_AT
    unpriced, no_usage, partial = (
        int(totals[at["unpriced_calls"]]),
        int(totals[at["no_usage_calls"]]),
        int(totals[at["partial_calls"]]),
    )
    return ReportRow(
        dict(zip(keys, record[:n])),
        runs=int(totals[at["runs"]]),
        calls=int(totals[at["calls"]]),
        tokens={name: int(totals[i]) for name, i in _GROUP_TOKENS},
        cost_usd=_number(totals[at["cost_usd"]]),
        cost_complete=unpriced + no_usage + partial == 0,
        unpriced_calls=unpriced,
        no_usage_calls=no_usage,
        partial_calls=partial,
        avg_run_cost_usd=_number(totals[at["avg_run_cost_usd"]]),
        p50_run_cost_usd=_number(totals[at["p50_run_cost_usd"]]),
        p95_run_cost_usd=_number(totals[at["p95_run_cost_usd"]]),
        runs_left_out=int(totals[at["runs_left_out"]]),
    )


def _sort_key(row: ReportRow) -> tuple[Any, ...]:
    """Most expensive first, unpriced last (as SQL's ``ORDER BY cost DESC``); ties in key order."""
    return order_key(row.cost_usd, row.key.values())


def order_key(cost: float | None, values: Iterable[Any]) -> tuple[Any, ...]:
    """The sort key of a report row of cost ``cost`` and key values ``values`` (:func:`sort_rows`)."""
    return (cost is None, -(cost or 0.0), *("" if v is None else str(v) for v in values))


# --- records (JSON, CSV) -----------------------------------------------------------------

_TOKEN_FIELDS: Final = tuple(c.column for c in token_classes.TOKEN_CLASSES)
_ONE_RUN_FIELDS: Final = RUN_RECORD[RUN_RECORD.index("runs") :]
"""The fields of a ``--by run`` record: one run's average, p50 and p95 are its cost, so they are left
out (they cost the biggest report, written by the database, a seventh of its time)."""
_RECORD_FIELDS: Final = (
    *_ONE_RUN_FIELDS,
    "avg_run_cost_usd",
    "p50_run_cost_usd",
    "p95_run_cost_usd",
    "runs_left_out",
)
assert RUN_RECORD == ("use_case", "run_id", *_ONE_RUN_FIELDS), "the store's --by run JSON is this report"
_TOKEN_FIELD_OF: Final = dict(zip(_TOKEN_FIELDS, _CLASSES))


def _fields(keys: Sequence[str]) -> tuple[str, ...]:
    return _ONE_RUN_FIELDS if "run_id" in keys else _RECORD_FIELDS


def _record(row: ReportRow, fields: Sequence[str]) -> dict[str, Any]:
    """One row as a flat dict (by hand: ``dataclasses.asdict`` deep-copies, and reports can have 100k+ rows)."""
    record: dict[str, Any] = dict(row.key)
    tokens = row.tokens
    for name in fields:
        token_class = _TOKEN_FIELD_OF.get(name)
        record[name] = getattr(row, name) if token_class is None else tokens.get(token_class, 0)
    return record


def format_report(rows: Sequence[ReportRow], by: str, fmt: str = "table") -> str:
    """Render ``rows`` as ``table`` (for people), ``json`` or ``csv`` (for tools).

    An unknown cost is JSON ``null`` / an empty CSV cell / ``unpriced`` in the
    table; ``cost_complete`` false marks a lower bound (``>= $...`` in the table).
    """
    keys = _keys(by)
    fields = _fields(keys)
    if fmt == "json":
        # Compact: one call into json's C encoder (indent= falls back to the Python one).
        # default=str: a value no writer of ours stores (a BLOB id) is shown, never fatal.
        return json.dumps([_record(r, fields) for r in rows], separators=(",", ":"), default=str)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[*keys, *fields])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: csv_cell(v) for k, v in _record(row, fields).items()})
        return out.getvalue()
    if fmt != "table":
        raise ReportError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    return _table(rows, keys)


def _keys(by: str) -> tuple[str, ...]:
    """The key columns of a report's rows: :func:`grouping`'s, or ``period`` (``--by day|week|month``)."""
    from .periods import KEYS, PERIODS

    if by in PERIODS:
        return KEYS
    return grouping(by)


def render_report(
    store: Store,
    by: str = "use-case",
    fmt: str = "table",
    *,
    use_case: str | None = None,
    since: str | None = None,
    user: str | None = None,
    experience: str | None = None,
    version: str | None = None,
    tags: Iterable[str] | None = None,
    limit: int | None = None,
    tz: str | None = None,
) -> str:
    """The report as ``otel-usecase report`` prints it (filters as :func:`build_report`; ``limit``: the
    most expensive groups only; ``by`` may also be ``day``, ``week``, ``month``, in time zone ``tz``).

    ``--by run --format json`` is one record per run, often 200k and more;
    building and encoding those in Python takes longer than the query itself, so
    the store's database writes that JSON (:meth:`~otel_usecase.store.Store.runs_json`)
    in the same order and with the same fields as :func:`format_report`. Other
    reports go through :func:`build_report` (the dashboard's rows,
    :func:`~otel_usecase.report.views.top`).
    """
    from .periods import PERIODS, period_rows

    if by not in PERIODS:
        grouping(by)  # a bad --by is an error naming it
    if fmt not in FORMATS:
        raise ReportError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if tz is not None and by not in PERIODS:
        raise ReportError(f"--tz {tz!r} applies to --by {', '.join(PERIODS)} only, not --by {by!r}")
    if limit is not None and limit < 1:
        raise ReportError(f"--limit {limit!r} must be at least 1")
    filters = _filters(use_case, since, user, experience, version, tags)
    if by in PERIODS:
        return format_report(period_rows(store, by, filters, tz, limit=limit), by, fmt)
    if fmt == "json" and by == "run" and limit is None:
        text = store.runs_json(filters)
        if text is not None:
            return text
    from . import views  # (views reads through this module)

    return format_report(views.top(store, filters, by, limit), by, fmt)


# --- tables ------------------------------------------------------------------------------

_HEADERS: Final = ("runs", "calls")
_COST_HEADERS: Final = ("cost", "avg/run", "p50/run", "p95/run", "unpriced")

TOKENS_NOTE: Final = (
    "tokens: input includes cached (cache reads and writes) and the input of any other class shown; "
    "output includes reasoning and the output of any other class shown; each part is billed at its own price"
)
"""Said above every table: the columns follow OpenAI's convention, pricing bills the parts apart."""


def _label(name: str) -> str:
    return name.replace("_", " ")


def _token_columns(totals: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[tuple[str, ...]]]:
    """The token headers of a table and, for each, the classes its cell adds up.

    Input, output, cached (cache reads and writes) and reasoning always; every
    other class only when some row has a count of it.
    """
    present: set[str] = set()
    for tokens in totals:
        present.update(name for name in _OTHER_CLASSES if tokens.get(name))
    columns: list[tuple[str, tuple[str, ...]]] = [
        ("input", ("input",)),
        ("output", ("output",)),
        ("cached", _CACHED),
        ("reasoning", ("reasoning",)),
        *((_label(name), (name,)) for name in _OTHER_CLASSES if name in present),
    ]
    return [header for header, _ in columns], [parts for _, parts in columns]


def _token_cells(tokens: Mapping[str, Any], parts: Sequence[tuple[str, ...]]) -> list[str]:
    cells = []
    for names in parts:
        values = [tokens.get(name, None if name in _KNOWN_OR_UNKNOWN else 0) for name in names]
        if len(values) == 1 and values[0] is None:
            cells.append("?")  # an unknown input or output count (an absent part is 0)
        elif all(isinstance(v, int) or v is None for v in values):
            cells.append(f"{sum(v or 0 for v in values):,}")
        else:  # not a number a store of ours writes: shown, never fatal
            cells.append(safe_text(" + ".join(str(v) for v in values)))
    return cells


def _table(rows: Sequence[ReportRow], keys: Sequence[str]) -> str:
    if not rows:
        return "no calls recorded"
    per_run = "run_id" not in keys  # one run's average, p50 and p95 are its cost: not shown
    token_headers, parts = _token_columns(r.tokens for r in rows)
    header = [
        *keys,
        *_HEADERS,
        *token_headers,
        *(h for h in _COST_HEADERS if per_run or not h.endswith("/run")),
    ]
    total_cost = sum_known(r.cost_usd for r in rows)
    decimals = cost_decimals(
        v for r in rows for v in (r.cost_usd, r.avg_run_cost_usd, r.p50_run_cost_usd, r.p95_run_cost_usd)
    )
    body = [
        [
            *(safe_text(r.key[k]) for k in keys),
            f"{r.runs:,}",
            f"{r.calls:,}",
            *_token_cells(r.tokens, parts),
            money(r.cost_usd, decimals, lower_bound=not r.cost_complete),
            *(
                NONE_LABEL if v is None else money(v, decimals)
                for v in ((r.avg_run_cost_usd, r.p50_run_cost_usd, r.p95_run_cost_usd) if per_run else ())
            ),
            f"{r.unpriced_calls:,}",
        ]
        for r in rows
    ]
    complete = all(r.cost_complete for r in rows)
    lines = [TOKENS_NOTE, "", *aligned(header, body, numeric_from=len(keys)), ""]
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


# --- one run -----------------------------------------------------------------------------

_CALL_FIELDS: Final = (
    "start_ns",
    "use_case",
    "use_case_version",
    "step",
    "user_id",
    "experience_name",
    "experience_id",
    "experience_version",
    "tags",
    "provider",
    "model",
    *_TOKEN_FIELDS,
    *PRICE_COLUMNS,
    "trace_id",
    "span_id",
)
"""The fields of each call of ``runs show --format json|csv``."""


def run_calls(store: Store, run_id: str, use_cases: Collection[str] | None = None) -> list[Call]:
    """The calls of one run in time order; with ``use_cases`` (a :attr:`ReportFilter.use_cases` allowed set)
    only theirs: a run id is data, so the same id may be a run of another use case the reader may not see."""
    calls = store.run_calls(run_id)
    return calls if use_cases is None else [c for c in calls if c.use_case in use_cases]


def _call_record(call: Call) -> dict[str, Any]:
    record: dict[str, Any] = {}
    tokens = call.tokens
    for name in _CALL_FIELDS:
        token_class = _TOKEN_FIELD_OF.get(name)
        if name == "tags":
            record[name] = dict(call.tags)  # JSON: an object ({} without tags)
        elif token_class is None:
            record[name] = getattr(call, name)
        else:
            record[name] = tokens.get(token_class, None if token_class in ("input", "output") else 0)
    return record


def format_run(
    run_id: str, calls: Sequence[Call], fmt: str = "table", *, outcomes: Sequence[Any] = ()
) -> str:
    """Render the calls of one run, each with where its cost came from (cost source, price context)
    and, for a call without a cost, why; the table's title says the run's use case, version, user and
    experience (and tags), and its last line the run's ``outcomes``
    (:class:`~otel_usecase.store.outcome_sql.Outcome`, summed per name)."""
    if fmt == "json":
        return json.dumps([_call_record(c) for c in calls], indent=2, default=str)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(_CALL_FIELDS))
        writer.writeheader()
        for call in calls:
            record = _call_record(call)
            record["tags"] = tags_json(call.tags) if call.tags else None  # the ledger's text of them
            writer.writerow({k: csv_cell(v) for k, v in record.items()})
        return out.getvalue()
    if not calls:
        return f"no calls recorded for run {safe_text(run_id)}"
    token_headers, parts = _token_columns(c.tokens for c in calls)
    header = ["time (UTC)", "step", "model", *token_headers, "cost", "cost source", "price context"]
    with_reason = any(c.unpriced_reason for c in calls)
    if with_reason:
        header.append("unpriced reason")
    header += ["trace_id", "span_id"]
    decimals = cost_decimals(c.cost_usd for c in calls)
    body = [
        [
            _time(c.start_ns),
            safe_text(c.step),
            safe_text(c.model),
            *_token_cells(c.tokens, parts),
            _call_cost(c, decimals),
            safe_text(c.cost_source),
            safe_text(c.price_context),
            *((safe_text(c.unpriced_reason),) if with_reason else ()),
            safe_text(c.trace_id),
            safe_text(c.span_id),
        ]
        for c in calls
    ]
    title = "  ".join(
        (
            f"run {safe_text(run_id)}",
            f"use case {_values(calls, 'use_case')}",
            f"version {_values(calls, 'use_case_version')}",
            f"user {_values(calls, 'user_id')}",
            f"experience {_values(calls, 'experience_name')} ({_values(calls, 'experience_id')})",
            f"experience version {_values(calls, 'experience_version')}",
        )
    )
    tags = dict.fromkeys(f"{k}={v}" for c in calls for k, v in sorted(c.tags.items()))
    if tags:
        title += "  tags " + ", ".join(safe_text(t) for t in tags)
    costs = [c.cost_usd if isinstance(c.cost_usd, int | float) else None for c in calls]
    complete = all(c.status == "priced" for c in calls)
    numeric = 3 + len(token_headers) + 1  # text again from the cost source on
    lines = [
        title,
        TOKENS_NOTE,
        "",
        *aligned(header, body, numeric_from=3, numeric_to=numeric),
        "",
        f"total {money(sum_known(costs), decimals, lower_bound=not complete)} over {len(calls):,} calls",
        *_unknown_cost_notes(
            *(sum(1 for c in calls if c.status == s) for s in ("unpriced", "no_usage", "partial"))
        ),
    ]
    if outcomes:
        achieved: dict[str, list[float]] = {}
        for outcome in outcomes:
            achieved.setdefault(outcome.name, []).append(outcome.value)
        lines.append(
            "outcomes "
            + ", ".join(
                f"{safe_text(name)} x{len(values)} (value {sum(values):g})"
                for name, values in sorted(achieved.items())
            )
        )
    return "\n".join(lines)


def _values(calls: Sequence[Call], field: str) -> str:
    """The run's value of ``field`` as its calls carry it: one value, or each in order (a version changed
    mid-run); ``-`` when none has one."""
    seen = dict.fromkeys(getattr(c, field) for c in calls if getattr(c, field) is not None)
    return ", ".join(safe_text(v) for v in seen) if seen else safe_text(None)


def _call_cost(call: Call, decimals: int) -> str:
    status = call.status
    if status == "no_usage":
        return "no usage"
    if status == "unpriced":
        return "unpriced"
    return money(call.cost_usd, decimals, lower_bound=status != "priced")


def _time(start_ns: object) -> str:
    """UTC time to the millisecond; a value no writer of ours stores is shown as it is."""
    try:
        moment = datetime.fromtimestamp(start_ns / 1e9, tz=UTC)  # type: ignore[operator]
    except (TypeError, ValueError, OverflowError, OSError):
        return safe_text(start_ns)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
