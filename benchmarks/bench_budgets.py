"""Benchmark: what budgets add to a scope entry (``with track_context(...)``: enter and exit).

Three set-ups, timed side by side in shuffled order:

* ``no tracker``: no spend tracker runs in the process (no exporter, no
  ``budgets.enable``): the scope entry as before budgets, plus one global read;
* ``tracker, no matching budget``: a tracker with three budgets, all on other
  use cases (the common case in an app with an exporter: one dict lookup);
* ``3 matching budgets``: a ``day`` block budget, a ``week`` warn budget with a
  user selector and a ``run`` block budget, all on the entered use case
  (none exhausted, so every one is evaluated).

The trackers are real: budgets set in a real SQLite store, read by the
tracker's own refresh thread (stopped before timing, so it does not compete for
the CPU). Each entry resolves a new run id, as ``track_context`` does. Timing
is the thread's CPU time; each repetition times one block per set-up in a
shuffled order, and the figure is the median over repetitions of each
set-up's per-entry time.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from _common import log, median, row

from otel_usecase import track_context
from otel_usecase.budgets import Budget, enable, set_budget
from otel_usecase.budgets import registry as budget_registry
from otel_usecase.budgets import tracker as budget_tracker
from otel_usecase.scope import tracking

NAME = "budgets"


def _tracker(url: str, budgets: list[Budget]) -> budget_tracker.SpendTracker:
    for budget in budgets:
        set_budget(budget, store=url)
    tracker = enable(url, wait_s=30)
    deadline = time.monotonic() + 60
    while len(tracker._states) < len(budgets) and time.monotonic() < deadline:
        time.sleep(0.05)
    tracker.stop()  # its figures stay; no refresh thread competes for the CPU while timing
    return tracker


def run(quick: bool) -> list[dict]:
    entries = 2_000 if quick else 20_000
    repetitions = 3 if quick else 15
    tmp = Path(tempfile.mkdtemp(prefix="bench-budgets-"))
    unrelated = _tracker(
        "sqlite:///" + str(tmp / "other.db"),
        [Budget(f"other-{i}", f"other_{i}", 10.0, mode="block") for i in range(3)],
    )
    budget_registry.reset()
    matching = _tracker(
        "sqlite:///" + str(tmp / "matching.db"),
        [
            Budget("day-cap", "summarize", 1e6, mode="block"),
            Budget("week-user", "summarize", 1e6, window="week", user_id="u-1", timezone="Europe/Paris"),
            Budget("per-run", "summarize", 1e6, window="run", mode="block"),
        ],
    )
    budget_registry.reset()
    setups = {"no tracker": None, "tracker, no matching budget": unrelated, "3 matching budgets": matching}
    manager = track_context("summarize", user_id="u-1")

    def time_block(tracker: budget_tracker.SpendTracker | None) -> float:
        budget_registry._trackers.clear()
        if tracker is None:
            budget_registry._remove_scope_hooks()
        else:
            budget_registry._trackers[tracker.store_url] = tracker
            budget_registry._install_scope_hooks()
        start = time.thread_time_ns()
        for _ in range(entries):
            with manager:
                pass
        return (time.thread_time_ns() - start) / entries / 1000

    for tracker in setups.values():  # warm up
        time_block(tracker)
    per_entry: dict[str, list[float]] = {name: [] for name in setups}
    for repetition in range(repetitions):
        order = list(setups)
        random.shuffle(order)
        for name in order:
            per_entry[name].append(time_block(setups[name]))
        log(f"budgets: repetition {repetition + 1}/{repetitions}")
    budget_registry._trackers.clear()
    budget_registry._remove_scope_hooks()
    assert tracking._budget_check is None

    base = median(per_entry["no tracker"])
    unrelated_us = median(per_entry["tracker, no matching budget"])
    matching_us = median(per_entry["3 matching budgets"])
    return [
        row(NAME, "scope entry+exit, no tracker", f"{base:.2f} µs", "", None),
        row(
            NAME,
            "scope entry+exit, tracker with no matching budget",
            f"{unrelated_us:.2f} µs (+{unrelated_us - base:.2f} µs)",
            "≤ +2 µs",
            unrelated_us - base <= 2.0,
        ),
        row(
            NAME,
            "scope entry+exit, 3 matching budgets",
            f"{matching_us:.2f} µs (+{matching_us - base:.2f} µs)",
            "≤ +10 µs",
            matching_us - base <= 10.0,
        ),
    ]
