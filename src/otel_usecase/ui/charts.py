"""Charts as server-rendered SVG: no script, no library, styled by the dashboard's stylesheet only.

The SVG is part of the page (so the CSP needs no ``img-src`` for it and no inline
style: colours are classes of ``dashboard.css``). Every bar has a ``<title>`` (the
browser's tooltip) with its figures; labels that come from data (use case names)
are escaped like any other text (:mod:`.markup`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final, NamedTuple

from ..report.text import cost_decimals, money
from .markup import Markup, el, join, text

__all__ = ["MAX_BUCKETS", "SERIES_COLOURS", "Stack", "histogram", "stacked_bars", "stacks"]

SERIES_COLOURS: Final = 8
"""Series drawn in their own colour; the rest are summed as ``other``."""
MAX_BUCKETS: Final = 400
"""Most bars in one chart: a longer range shows its last buckets and says so."""
BUCKET_S: Final = {"hour": 3600, "day": 86400}

_W, _H = 960, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 10, 10, 40


class Stack(NamedTuple):
    """One bucket of the stacked chart: its start and each series' cost and calls (series order)."""

    start_ns: int
    costs: tuple[float, ...]
    calls: tuple[int, ...]
    unknown: tuple[bool, ...]
    """A series whose calls in this bucket have no cost at all (drawn as 0, said in the tooltip)."""


class Stacks(NamedTuple):
    keys: tuple[str | None, ...]
    """Series names, most expensive first; ``other`` (when there are more) is the last, named None
    only when the ledger's value is None; see :attr:`other`."""
    other: bool
    buckets: list[Stack]
    cut: int
    """Buckets left out at the start (more than :data:`MAX_BUCKETS`)."""


def stacks(points: Sequence[tuple[int, str | None, float | None, int]], bucket: str) -> Stacks:
    """Group ``(start_ns, key, cost, calls)`` points into contiguous buckets, one series per key."""
    step = BUCKET_S[bucket] * 1_000_000_000
    totals: dict[str | None, float] = {}
    for _, key, cost, _ in points:
        totals[key] = totals.get(key, 0.0) + (cost or 0.0)
    ranked = sorted(totals, key=lambda k: (-totals[k], "" if k is None else k))
    shown = ranked[:SERIES_COLOURS] if len(ranked) > SERIES_COLOURS + 1 else ranked
    other = len(shown) < len(ranked)
    index = {k: i for i, k in enumerate(shown)}
    width = len(shown) + (1 if other else 0)
    if not points:
        return Stacks(tuple(shown), other, [], 0)
    first = min(p[0] for p in points) // step * step
    last = max(p[0] for p in points) // step * step
    count = (last - first) // step + 1
    cut = max(0, count - MAX_BUCKETS)
    first += cut * step
    count -= cut
    costs = [[0.0] * width for _ in range(count)]
    calls = [[0] * width for _ in range(count)]
    known = [[False] * width for _ in range(count)]
    for start, key, cost, n in points:
        at = (start // step * step - first) // step
        if at < 0:
            continue
        series = index.get(key, width - 1)
        costs[at][series] += cost or 0.0
        calls[at][series] += n
        known[at][series] = known[at][series] or cost is not None
    buckets = [
        Stack(
            first + i * step,
            tuple(costs[i]),
            tuple(calls[i]),
            tuple(calls[i][s] > 0 and not known[i][s] for s in range(width)),
        )
        for i in range(count)
    ]
    return Stacks(tuple(shown), other, buckets, cut)


def _label(start_ns: int, bucket: str) -> str:
    moment = datetime.fromtimestamp(start_ns / 1e9, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:00") if bucket == "hour" else moment.strftime("%Y-%m-%d")


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        nice = factor * 10**exponent
        if nice >= value:
            return float(nice)
    return float(10 ** (exponent + 1))


def _y_axis(top: float, decimals: int) -> list[Markup]:
    parts = []
    for i in range(5):
        value = top * i / 4
        y = _H - _BOTTOM - (_H - _TOP - _BOTTOM) * i / 4
        parts.append(el("line", x1=_LEFT, x2=_W - _RIGHT, y1=f"{y:.1f}", y2=f"{y:.1f}", class_="grid"))
        parts.append(
            el(
                "text",
                money(value, decimals),
                x=_LEFT - 6,
                y=f"{y + 4:.1f}",
                class_="axis",
                text_anchor="end",
            )
        )
    return parts


def series_name(keys: Sequence[str | None], other: bool, i: int) -> str:
    if other and i == len(keys):
        return "other"
    return text(keys[i])


def stacked_bars(chart: Stacks, bucket: str, title: str) -> Markup:
    """Cost per bucket, one colour per series, stacked; an empty chart says so."""
    if not chart.buckets:
        return el("p", "No calls in this range.", class_="empty")
    totals = [sum(b.costs) for b in chart.buckets]
    top = _nice_max(max(totals))
    decimals = cost_decimals([top / 4])
    plot_w = _W - _LEFT - _RIGHT
    plot_h = _H - _TOP - _BOTTOM
    bar_w = plot_w / len(chart.buckets)
    parts = _y_axis(top, decimals)
    label_every = max(1, math.ceil(len(chart.buckets) / 8))
    for i, stack in enumerate(chart.buckets):
        x = _LEFT + i * bar_w
        y = float(_H - _BOTTOM)
        when = _label(stack.start_ns, bucket)
        for s, cost in enumerate(stack.costs):
            if not stack.calls[s]:
                continue
            height = plot_h * cost / top
            y -= height
            figure = "unpriced" if stack.unknown[s] else money(cost, cost_decimals([cost]))
            name = series_name(chart.keys, chart.other, s)
            parts.append(
                el(
                    "rect",
                    el("title", f"{when} UTC  {name}: {figure}, {stack.calls[s]:,} calls"),
                    x=f"{x + 0.5:.2f}",
                    y=f"{y:.2f}",
                    width=f"{max(bar_w - 1, 0.5):.2f}",
                    height=f"{max(height, 0.0):.2f}",
                    class_=f"c{min(s, SERIES_COLOURS)}",
                )
            )
        if i % label_every == 0:
            parts.append(
                el(
                    "text",
                    when,
                    x=f"{x + bar_w / 2:.1f}",
                    y=_H - _BOTTOM + 16,
                    class_="axis",
                    text_anchor="middle",
                )
            )
    svg = el(
        "svg",
        el("title", title),
        parts,
        viewBox=f"0 0 {_W} {_H}",
        class_="chart",
        role="img",
        aria_label=title,
        xmlns="http://www.w3.org/2000/svg",
    )
    legend = el(
        "ul",
        [
            el(
                "li",
                el("span", "", class_=f"swatch c{min(i, SERIES_COLOURS)}"),
                series_name(chart.keys, chart.other, i),
            )
            for i in range(len(chart.keys) + (1 if chart.other else 0))
        ],
        class_="legend",
    )
    note = (
        el(
            "p",
            f"Showing the last {len(chart.buckets):,} {bucket}s; {chart.cut:,} earlier ones are left out "
            "(narrow the time range or use day buckets).",
            class_="note",
        )
        if chart.cut
        else None
    )
    return join([svg, legend, note])


def histogram(
    edges: Sequence[float], counts: Sequence[int], p50: float | None, p95: float | None, title: str
) -> Markup:
    """Runs per cost bin, with the p50 and p95 run cost marked."""
    if not counts or not any(counts) or len(edges) != len(counts) + 1:
        return el("p", "No run with a known cost in this range.", class_="empty")
    low, high = edges[0], edges[-1]
    if high <= low:  # every run cost the same: one bar around that cost
        pad = abs(low) * 0.5 or 1.0
        edges, low, high = [low - pad * 0.2, high + pad * 0.2], low - pad, high + pad
    span = high - low
    plot_w = _W - _LEFT - _RIGHT
    plot_h = _H - _TOP - _BOTTOM
    top = max(4, math.ceil(max(counts) / 4) * 4)  # whole numbers of runs on the axis
    decimals = cost_decimals([v for v in edges if v] or [high])
    parts: list[Markup] = []
    for i in range(5):
        runs = top * i / 4
        y = _H - _BOTTOM - plot_h * i / 4
        parts.append(el("line", x1=_LEFT, x2=_W - _RIGHT, y1=f"{y:.1f}", y2=f"{y:.1f}", class_="grid"))
        parts.append(
            el(
                "text",
                f"{runs:,.0f}",
                x=_LEFT - 6,
                y=f"{y + 4:.1f}",
                class_="axis",
                text_anchor="end",
            )
        )

    def x_of(value: float) -> float:
        return _LEFT + plot_w * (value - low) / span

    for i, count in enumerate(counts):
        x0, x1 = x_of(edges[i]), x_of(edges[i + 1])
        height = plot_h * count / top
        parts.append(
            el(
                "rect",
                el(
                    "title", f"{money(edges[i], decimals)} to {money(edges[i + 1], decimals)}: {count:,} runs"
                ),
                x=f"{x0 + 0.5:.2f}",
                y=f"{_H - _BOTTOM - height:.2f}",
                width=f"{max(x1 - x0 - 1, 0.5):.2f}",
                height=f"{height:.2f}",
                class_="bar",
            )
        )
    label_every = max(1, math.ceil(len(edges) / 6))
    for i, edge in enumerate(edges):
        if (i % label_every == 0 and len(edges) - 1 - i >= label_every / 2) or i == len(edges) - 1:
            parts.append(
                el(
                    "text",
                    money(edge, decimals),
                    x=f"{x_of(edge):.1f}",
                    y=_H - _BOTTOM + 16,
                    class_="axis",
                    text_anchor="end" if i == len(edges) - 1 else "start" if i == 0 else "middle",
                )
            )
    for name, marked, dy in (("p50", p50, 0), ("p95", p95, 14)):
        if marked is None:
            continue
        mark = x_of(marked)
        parts.append(el("line", x1=f"{mark:.1f}", x2=f"{mark:.1f}", y1=_TOP, y2=_H - _BOTTOM, class_=name))
        parts.append(
            el(
                "text",
                f"{name} {money(marked, decimals)}",
                x=f"{mark + 4:.1f}" if mark < _W * 0.75 else f"{mark - 4:.1f}",
                y=_TOP + 12 + dy,
                class_=f"axis {name}-label",
                text_anchor="start" if mark < _W * 0.75 else "end",
            )
        )
    return el(
        "svg",
        el("title", title),
        parts,
        viewBox=f"0 0 {_W} {_H}",
        class_="chart",
        role="img",
        aria_label=title,
        xmlns="http://www.w3.org/2000/svg",
    )
