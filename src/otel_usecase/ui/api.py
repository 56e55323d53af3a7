"""The dashboard's JSON (and CSV) API: the data of every page, in the CLI's formats.

``/api/report`` is ``otel-usecase report --format json|csv`` (the same function writes
both), ``/api/run`` is ``runs show --format json|csv``, ``/api/budgets`` is
``budgets status --format json``; the others have no CLI twin and give their
records' fields. Every route takes the filters of the pages (``since``, ``until``,
``use_case``, ``user``, ``experience``, ``version``, ``tag``) and ``format=json``
(default) or ``csv``. A download is the same route: the response names a file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from ..report import views
from ..report.queries import format_report, format_run, grouping, run_calls
from ..report.runs_list import format_runs
from ..report.text import csv_cell
from ..store import Store
from .app import CSV, JSON, Response
from .params import BadRequest, Params

__all__ = ["API"]

_FORMATS: Final = ("json", "csv")


def _file(name: str, fmt: str, body: str) -> Response:
    """A response that a browser saves as ``name.fmt`` (a link's download) and a script reads as data."""
    disposition = f'attachment; filename="{name}.{fmt}"'.encode()
    return Response(
        200, JSON if fmt == "json" else CSV, body.encode(), ((b"content-disposition", disposition),)
    )


def _records(fields: Sequence[str], records: Iterable[Mapping[str, Any]], fmt: str) -> str:
    rows = list(records)
    if fmt == "json":
        return json.dumps(rows, separators=(",", ":"), default=str)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_cell(v) for k, v in row.items()})
    return out.getvalue()


def _fmt(params: Params) -> str:
    return params.choice("format", _FORMATS, "json")


def summary(store: Store, params: Params, root: str) -> Response:
    fmt = _fmt(params)
    s = views.summary(store, params.filters.report_filter())
    record = {
        **{k: v for k, v in s._asdict().items() if k != "tokens"},
        **{f"{name}_tokens": count for name, count in s.tokens.items()},
    }
    body = json.dumps(record) if fmt == "json" else _records(list(record), [record], fmt)
    return _file("summary", fmt, body)


def series(store: Store, params: Params, root: str) -> Response:
    fmt = _fmt(params)
    bucket = params.choice("bucket", tuple(views.BUCKETS), "day")
    by = params.get("by") or "use-case"
    points = views.cost_series(store, params.filters.report_filter(), bucket, by)  # type: ignore[arg-type]
    fields = ("start_ns", "key", "cost_usd", "calls")
    return _file(f"cost-per-{bucket}", fmt, _records(fields, (p._asdict() for p in points), fmt))


def report(store: Store, params: Params, root: str) -> Response:
    """``report --by BY [--limit N] --format json|csv`` with the page's filters."""
    fmt = _fmt(params)
    by = params.get("by") or "use-case"
    grouping(by)  # a --by the report does not know: a 400 naming it
    limit = params.number("limit", 0, 1, 10**9) if params.get("limit") is not None else None
    filters = params.filters.report_filter()
    if fmt == "json" and by == "run" and limit is None:  # as render_report: the store writes this JSON
        text = store.runs_json(filters)
        if text is not None:
            return _file(f"report-by-{by}", fmt, text)
    # ``top`` is what ``otel-usecase report`` reads too: the file is byte for byte what it prints.
    return _file(f"report-by-{by}", fmt, format_report(views.top(store, filters, by, limit), by, fmt))


def runs(store: Store, params: Params, root: str) -> Response:
    """``runs list --order O --limit N --offset K --format json|csv`` with the page's filters."""
    fmt = _fmt(params)
    order = params.choice("order", ("newest", "cost"), "newest")
    limit = params.number("limit", 50, 1, 10_000)
    offset = params.number("offset", 0, 0, 10**12)
    rows = views.list_runs(store, params.filters.report_filter(), order, limit, offset)  # type: ignore[arg-type]
    return _file("runs", fmt, format_runs(rows, fmt))


def histogram(store: Store, params: Params, root: str) -> Response:
    fmt = _fmt(params)
    bins = params.number("bins", 20, 1, 200)
    h = views.run_histogram(store, params.filters.report_filter(), bins)
    if fmt == "json":
        return _file("run-cost-histogram", fmt, json.dumps(h._asdict()))
    records = [
        {"low_usd": low, "high_usd": high, "runs": count}
        for low, high, count in zip(h.edges, h.edges[1:], h.counts)
    ]
    return _file("run-cost-histogram", fmt, _records(("low_usd", "high_usd", "runs"), records, fmt))


def run(store: Store, params: Params, root: str) -> Response:
    """``runs show ID --format json|csv``."""
    fmt = _fmt(params)
    run_id = params.get("id")
    if run_id is None:
        raise BadRequest("id is missing: give the run id as id=RUN_ID")
    calls = run_calls(store, run_id, params.filters.use_cases)
    if not calls:
        return Response(404, JSON, json.dumps({"error": f"no run {run_id!r} in this store"}).encode())
    return _file("run", fmt, format_run(run_id, calls, fmt))


def budgets(store: Store, params: Params, root: str) -> Response:
    """``budgets status --format json`` (only the budgets of ``use_case`` when it is given)."""
    from ..budgets.cli import status_records
    from .budget_page import visible_budgets

    fmt = params.choice("format", ("json",), "json")
    statuses = visible_budgets(store, params.filters)
    return _file("budgets", fmt, json.dumps(status_records(statuses), indent=2))


def outcomes(store: Store, params: Params, root: str) -> Response:
    """``report --per-outcome NAME --by BY --format json|csv`` with the page's filters."""
    from ..report.outcomes import OUTCOME_GROUPINGS, format_outcomes, outcome_report

    fmt = _fmt(params)
    name = params.required("outcome")
    by = params.choice("by", OUTCOME_GROUPINGS, "use-case")
    report = outcome_report(store, params.filters.report_filter(), name, by)
    return _file(f"cost-per-{by}-outcome", fmt, format_outcomes(report, name, by, fmt))


Handler = Callable[[Store, Params, str], Response]

API: Final[dict[str, tuple[Handler, tuple[str, ...]]]] = {
    "/api/summary": (summary, ("format",)),
    "/api/series": (series, ("format", "bucket", "by")),
    "/api/report": (report, ("format", "by", "limit")),
    "/api/runs": (runs, ("format", "order", "limit", "offset")),
    "/api/histogram": (histogram, ("format", "bins")),
    "/api/run": (run, ("format", "id")),
    "/api/budgets": (budgets, ("format",)),
    "/api/outcomes": (outcomes, ("format", "outcome", "by")),
}
