"""A run's page (its calls in time order) and a call's page (every field of one ledger row)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from ..cost.call import Call
from ..report.queries import run_calls
from ..report.text import cost_decimals, money
from ..store import Store
from .app import HTML, Response
from .layout import Column, downloads, figures, id_cell, page, table, when
from .markup import el, join, text
from .panels import html_page, token_text
from .params import BadRequest, Filters, Params, query_string

__all__ = ["call", "call_cost", "run"]


def _token_cell(name: str) -> Callable[[Call], str]:
    def cell(call: Call) -> str:
        return f"{call.tokens.get(name, 0):,}"

    return cell


def _call_columns(
    run_id: str, root: str, filters: Filters, decimals: int, extra: Sequence[str]
) -> list[Column]:
    def call_href(c: Call) -> str:
        return root + "/call" + query_string(filters, run=run_id, span=c.span_id, trace=c.trace_id)

    columns = [
        Column("time (UTC)", lambda c: el("a", ms_time(c.start_ns), href=call_href(c))),
        Column("model", lambda c: id_cell(c.model)),
        Column("input", lambda c: token_text(c.tokens, "input"), True),
        Column("output", lambda c: token_text(c.tokens, "output"), True),
        Column("cached", lambda c: token_text(c.tokens, "cached"), True),
        Column("reasoning", lambda c: token_text(c.tokens, "reasoning"), True),
    ]
    columns += [Column(name.replace("_", " "), _token_cell(name), True) for name in extra]
    columns += [
        Column("cost", lambda c: call_cost(c, decimals), True),
        Column("cost source", lambda c: id_cell(c.cost_source)),
        Column("step", lambda c: id_cell(c.step)),
        Column("status", lambda c: text(c.status) + (" (error)" if c.error else "")),
        Column("trace id", lambda c: id_cell(c.trace_id)),
    ]
    return columns


def call_cost(call: Call, decimals: int) -> str:
    if call.status == "no_usage":
        return "no usage"
    if call.status == "unpriced" or not isinstance(call.cost_usd, int | float):
        return "unpriced"
    return money(call.cost_usd, decimals, lower_bound=call.status != "priced")


def ms_time(start_ns: object) -> str:
    shown = when(start_ns)
    if isinstance(start_ns, int) and len(shown) == 19:
        return f"{shown}.{start_ns // 1_000_000 % 1000:03d}"
    return shown


_ALWAYS: Final = frozenset({"input", "output", "cache_read", "cache_write", "reasoning"})


def run(store: Store, params: Params, root: str) -> Response:
    filters = params.filters
    run_id = params.required("id")
    calls = run_calls(store, run_id, filters.use_cases)  # another use case's run: "no such run"
    if not calls:
        return Response(
            404,
            HTML,
            page(
                "No such run",
                el("p", "No run ", el("span", text(run_id), class_="id"), " in this store.", class_="error"),
                root=root,
                path="/run",
                filters=filters,
                hidden=[("id", run_id)],
            ).encode(),
        )
    first = calls[0]
    decimals = cost_decimals(c.cost_usd for c in calls)
    costs = [c.cost_usd for c in calls if isinstance(c.cost_usd, int | float)]
    complete = all(c.status == "priced" for c in calls)
    extra = sorted({n for c in calls for n, v in c.tokens.items() if v and n not in _ALWAYS})
    tags = first.tags
    facts = el(
        "dl",
        [
            el("div", el("dt", label), el("dd", value))
            for label, value in (
                (
                    "use case",
                    id_cell(
                        first.use_case, root + "/use-case" + query_string(Filters(use_case=first.use_case))
                    ),
                ),
                ("user", id_cell(first.user_id)),
                ("experience", id_cell(first.experience_name)),
                ("experience id", id_cell(first.experience_id)),
                ("experience version", id_cell(first.experience_version)),
                ("version", id_cell(first.use_case_version)),
                ("tags", id_cell(" ".join(f"{k}={v}" for k, v in sorted(tags.items())) or None)),
                ("started (UTC)", ms_time(first.start_ns)),
            )
        ],
        class_="facts",
    )
    body = [
        figures(
            [
                (
                    "Run cost",
                    money(sum(costs) if costs else None, decimals, lower_bound=not complete),
                    None if complete else "a lower bound: some calls have no known cost",
                ),
                ("Calls", f"{len(calls):,}", None),
            ]
        ),
        facts,
        el(
            "section",
            el("h2", "Calls, in time order"),
            table(_call_columns(run_id, root, filters, decimals, extra), calls, caption="Calls", id_="calls"),
            downloads(root, "/api/run", Filters(), id=run_id),
            class_="panel",
        ),
    ]
    heading = join(["Run ", el("span", text(run_id), class_="id")])
    return html_page(
        f"Run {text(run_id)}", body, root, "/run", filters, hidden=[("id", run_id)], heading=heading
    )


def call(store: Store, params: Params, root: str) -> Response:
    filters = params.filters
    run_id = params.required("run")
    span_id = params.required("span")
    trace_id = params.get("trace")
    found = [
        c
        for c in run_calls(store, run_id, filters.use_cases)
        if c.span_id == span_id and trace_id in (None, c.trace_id)
    ]
    if not found:
        raise BadRequest(f"no call with span id {span_id!r} in run {run_id!r}")
    c = found[0]
    decimals = cost_decimals([c.cost_usd, c.computed_cost_usd])
    rows: list[tuple[str, object]] = [
        ("run", id_cell(run_id, root + "/run" + query_string(filters, id=run_id))),
        (
            "use case",
            id_cell(c.use_case, root + "/use-case" + query_string(filters._replace(use_case=c.use_case))),
        ),
        ("started (UTC)", ms_time(c.start_ns)),
        ("duration", f"{(c.end_ns - c.start_ns) / 1e6:,.1f} ms" if isinstance(c.end_ns, int) else "-"),
        ("service", id_cell(c.service)),
        ("step", id_cell(c.step)),
        ("user", id_cell(c.user_id)),
        ("experience", id_cell(c.experience_name)),
        ("experience id", id_cell(c.experience_id)),
        ("experience version", id_cell(c.experience_version)),
        ("version", id_cell(c.use_case_version)),
        ("provider", id_cell(c.provider)),
        ("model", id_cell(c.model)),
        ("operation", id_cell(c.operation)),
        *((f"{name.replace('_', ' ')} tokens", f"{value:,}") for name, value in sorted(c.tokens.items())),
        ("cost", call_cost(c, decimals)),
        ("status", text(c.status)),
        ("error", "yes" if c.error else "no"),
        ("cost source", id_cell(c.cost_source)),
        ("price source", id_cell(c.price_source)),
        ("price context", id_cell(c.price_context)),
        ("unpriced reason", id_cell(c.unpriced_reason)),
        ("our price", money(c.computed_cost_usd, decimals) if c.computed_cost_usd is not None else "-"),
        ("trace id", id_cell(c.trace_id)),
        ("span id", id_cell(c.span_id)),
    ]
    body = el("dl", [el("div", el("dt", k), el("dd", v)) for k, v in rows], class_="facts", id="call")
    return html_page(
        "Call",
        body,
        root,
        "/call",
        filters,
        hidden=[("run", run_id), ("span", span_id), *([("trace", trace_id)] if trace_id else [])],
    )
