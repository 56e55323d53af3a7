"""The spend tracker: what each budget's current window has spent, in memory, for checks without I/O.

One :class:`SpendTracker` per store and process. Its spend per budget window is

    the store's total at the last refresh  +  this process's calls the store did not have then

* **Local calls** come from a :class:`~otel_usecase.cost.sink.CallSink` (the
  exporter's, ``serve``'s): each :class:`CallEvent` adds ``call`` minus
  ``replaced`` at once, on the sink's thread, so a process sees its own spend
  with no delay. Each is kept as *pending* by its (trace id, span id) until a
  refresh finds it in the store.
* **Refresh**, on a daemon thread every ``OTEL_USECASE_BUDGET_REFRESH_S`` (5 s):
  reads the budgets, and in **one read snapshot** the total of each budget's
  current window (every process's calls) and the stored cost of each pending
  call. A pending call found there is in the totals: it then adds only what it
  has beyond the stored copy (0, usually, and it stops being pending); one not
  found adds its whole cost. So a call is counted once, however its write and
  the refresh interleave; the one exception is a call stored between the list of
  pending keys being taken and the snapshot starting (milliseconds), which may
  count twice until the next refresh (too much, never too little).
* **Staleness across processes**: another process's call counts here at most
  ``refresh interval + that process's export delay`` after it ended (its
  ``BatchSpanProcessor`` delay, 5 s by default, plus its store write; for
  ``serve``, the sender's export delay). Calls of this process count at once.

Threshold crossings (spend from below to at or above ``threshold% * amount``, or
first seen at or above, as after a restart) are told once per process per
(budget, window, threshold) to ``on_crossing`` and, for ``warn`` budgets, logged
once. Nothing here raises into the app or does I/O on the thread that checks.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from .._log import logger, warn_rate_limited
from ..config import BUDGET_REFRESH
from ..cost.call import STATUS_PRICED, Call
from ..cost.sink import CallEvent, CallSink
from ..store.budget_sql import Spend, SpendQuery
from .model import Budget, BudgetExceeded, Crossing, has_tags, stored_budgets
from .windows import WindowInstance, window_at

if TYPE_CHECKING:
    from ..scope.tracking import Scope
    from ..store import Store

__all__ = ["BudgetView", "SpendTracker"]

_MAX_PENDING: Final = 100_000
"""Local calls kept until the store has them (a store down for long); the oldest go first, counted."""
_MAX_RUNS: Final = 1024
"""Run ids per ``run`` budget whose spend is refreshed: the most recently seen."""
_MAX_TOLD: Final = 10_000


def _no_crossing_handler(crossing: Crossing) -> None:
    """The default ``on_crossing``: nothing (the warn-mode log line is the tracker's own)."""


class BudgetView(NamedTuple):
    """One budget's window as the tracker sees it now (``budget_status`` of a running process, tests)."""

    budget: Budget
    window: WindowInstance
    spent_usd: float
    unpriced_calls: int


class _Pending:
    """A local call the store did not have at the last refresh, and what the store had of it then."""

    __slots__ = ("base_cost", "base_unpriced", "call", "found")

    def __init__(self, call: Call, base_cost: float, base_unpriced: int) -> None:
        self.call = call
        self.base_cost = base_cost
        self.base_unpriced = base_unpriced
        self.found = 0
        """Refreshes that found a copy of it in the store."""


def _cost(call: Call | None) -> float:
    return 0.0 if call is None or call.cost_usd is None else float(call.cost_usd)


def _unpriced(call: Call | None) -> int:
    return 0 if call is None or call.status == STATUS_PRICED and call.cost_usd is not None else 1


class _State:
    """One budget: its current window (cached), the store's spend per window key and the local additions.

    The selector and the current window are copied into plain slots and the spend
    kept summed per key (``totals``), so the scope check reads attributes and one dict.
    """

    __slots__ = (
        "amount",
        "block",
        "budget",
        "current",
        "end",
        "experience_name",
        "key",
        "local",
        "run",
        "runs_seen",
        "start",
        "stored",
        "tags",
        "totals",
        "user_id",
        "version",
    )

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.amount = budget.amount_usd
        self.block = budget.mode == "block"
        self.run = budget.window == "run"
        self.user_id, self.experience_name, self.version, self.tags = (
            budget.user_id,
            budget.experience_name,
            budget.version,
            budget.tags,
        )
        self.current: WindowInstance | None = None
        self.key = "total"
        self.start = self.end = 0
        self.stored: dict[str, tuple[float, int]] = {}
        self.local: dict[str, list[float]] = {}
        self.totals: dict[str, float] = {}
        """``stored`` + ``local`` cost per window key (what the check reads)."""
        self.runs_seen: OrderedDict[str, None] = OrderedDict()

    def window(self, at_ns: int, run_id: str | None) -> WindowInstance:
        """The window instance of a call or check at ``at_ns`` (the calendar ones cached until they end)."""
        budget = self.budget
        if budget.window == "run" or budget.window == "total":
            return window_at(budget.window, budget.timezone, at_ns, run_id)
        current = self.current
        if current is not None and current.contains(at_ns):
            return current
        instance = window_at(budget.window, budget.timezone, at_ns)
        if current is None or at_ns >= (current.start_ns or 0):
            self.set_current(instance)
        return instance

    def set_current(self, instance: WindowInstance) -> None:
        self.current = instance
        self.key = instance.key
        self.start = instance.start_ns if instance.start_ns is not None else 0
        self.end = instance.end_ns if instance.end_ns is not None else 0

    def spent(self, key: str) -> tuple[float, int]:
        stored = self.stored.get(key, (0.0, 0))
        local = self.local.get(key)
        if local is None:
            return stored
        return stored[0] + local[0], stored[1] + int(local[1])

    def sum_totals(self) -> None:
        totals = {key: cost for key, (cost, _) in self.stored.items()}
        for key, (cost, _) in self.local.items():
            totals[key] = totals.get(key, 0.0) + cost
        self.totals = totals

    def instance_key(self, now: int, run_id: str | None) -> str:
        """The key of the window a check at ``now`` falls in (the fast path of :meth:`window`)."""
        if self.run:
            return "run:" + (run_id or "")
        if self.end == 0 and self.budget.window == "total":
            return "total"
        if self.start <= now < self.end:
            return self.key
        return self.window(now, None).key


class SpendTracker:
    """Keeps each budget's spend in memory for one store; see the module docstring.

    ``store``: a store URL (opened read-only on the refresh thread, for each
    refresh while the store has no budgets) or a :class:`~otel_usecase.store.Store`
    (used as it is). ``refresh_s``: seconds between refreshes
    (``OTEL_USECASE_BUDGET_REFRESH_S``; a bad argument raises). ``on_crossing``:
    told each threshold crossing, on the thread that saw it (a sink's or the
    refresh thread): it must not block (``AlertDispatcher.notify`` enqueues).
    """

    def __init__(
        self,
        store: Store | str,
        *,
        refresh_s: float | None = None,
        on_crossing: Callable[[Crossing], None] | None = None,
    ) -> None:
        if refresh_s is not None and (
            isinstance(refresh_s, bool) or not isinstance(refresh_s, (int, float)) or not 0 < refresh_s < 1e9
        ):
            raise ValueError(f"refresh_s={refresh_s!r} is not a number of seconds > 0")
        self.refresh_s = float(refresh_s) if refresh_s is not None else BUDGET_REFRESH.read()
        self._given: Store | None = None if isinstance(store, str) else store
        self._url = store if isinstance(store, str) else store.url
        self._store: Store | None = self._given
        self.on_crossing = on_crossing or _no_crossing_handler
        self._lock = threading.RLock()
        self._states: dict[str, _State] = {}
        self._by_use_case: dict[str, tuple[_State, ...]] = {}
        self._block_by_use_case: dict[str, tuple[_State, ...]] = {}
        self._pending: OrderedDict[tuple[str, str], _Pending] = OrderedDict()
        self._told: set[tuple[str, str, int]] = set()
        self._sinks: list[CallSink[Any]] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refreshed = threading.Event()
        """Set after each refresh that read the store (tests and :func:`enable` wait on it)."""
        self.refreshes = 0
        self.refresh_errors = 0
        """Refreshes that could not read the store (each logged, rate-limited); the last spend stays."""
        self.pending_dropped = 0
        """Local calls forgotten before the store had them (more than 100,000 pending)."""
        _register_fork(self)

    # --- lifecycle ---

    @property
    def store_url(self) -> str:
        return self._url

    def start(self) -> None:
        """Start the refresh thread (idempotent); the first refresh runs at once."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="otel-usecase-budgets", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the refresh thread and let go of the store connection it opened."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        self._thread = None
        self._close_own_store()

    def wake(self) -> None:
        """Refresh soon (after ``set_budget`` in this process); never waits."""
        self._wake.set()

    def attach(self, sink: CallSink[Any]) -> None:
        """Count the calls ``sink`` accepts from now on."""
        with self._lock:
            if sink not in self._sinks:
                self._sinks.append(sink)
                sink.subscribe(self.on_events)

    def detach(self, sink: CallSink[Any]) -> int:
        """Stop counting ``sink``'s calls; the sinks left."""
        with self._lock:
            if sink in self._sinks:
                self._sinks.remove(sink)
                sink.unsubscribe(self.on_events)
            return len(self._sinks)

    def _after_fork_in_child(self) -> None:
        """A forked child: fresh lock and events, and the refresh thread started again if it ran."""
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.refreshed = threading.Event()
        running = self._thread is not None
        self._thread = None
        if self._given is None:
            self._store = None  # the store forgot its connection too; open afresh
        if running:
            self.start()

    # --- the refresh thread ---

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._wake.wait(self.refresh_s)
            self._wake.clear()

    def _open(self) -> Store | None:
        if self._store is not None:
            return self._store
        from ..store import StoreError, open_store

        try:
            self._store = open_store(self._url, create=False)
        except StoreError as exc:  # not created yet (no call written): no budgets, try again next time
            logger.debug("otel_usecase budgets: store %s not readable yet: %s", self._url, exc)
            return None
        return self._store

    def _close_own_store(self) -> None:
        store, self._store = self._store, self._given
        if store is not None and store is not self._given:
            try:
                store.close()
            except Exception:
                logger.debug("otel_usecase budgets: closing the tracker's store failed", exc_info=True)

    def refresh(self) -> bool:
        """Read the budgets and the spend from the store now (the refresh thread calls it); whether it could."""
        try:
            store = self._open()
            if store is None:
                return False
            budgets = stored_budgets(store.load_budgets())
            if not budgets:
                self._apply(budgets, [], [], None)
                self._close_own_store()  # a store without budgets keeps no connection of ours open
                return True
            now = time.time_ns()
            windows, runs = self._queries(budgets, now)
            keys = self._pending_keys()
            snapshot = store.budget_spend(
                [query for _, _, query in windows], [(query, ids) for _, query, ids in runs], keys
            )
            self._apply(
                budgets,
                [(name, instance, spend) for (name, instance, _), spend in zip(windows, snapshot.windows)],
                [(name, found) for (name, _, _), found in zip(runs, snapshot.runs)],
                (keys, snapshot.costs),
            )
            return True
        except Exception as exc:  # a store outage, bad rows: keep the last figures, try again
            if self._stop.is_set():  # stopped meanwhile (the exporter shut down, its store closed)
                return False
            self.refresh_errors += 1
            if not self._states:  # no budgets known: the exporter already reports its store's outage
                logger.debug("otel_usecase budgets: could not look for budgets in %s: %s", self._url, exc)
            else:
                warn_rate_limited(
                    f"budgets:refresh:{self._url}",
                    "otel_usecase: could not refresh the budgets from store %s (%s: %s); "
                    "checks use the last spend read plus this process's calls",
                    self._url,
                    type(exc).__name__,
                    exc,
                )
            if self._given is None:
                self._close_own_store()
            return False
        finally:
            self.refreshes += 1
            self.refreshed.set()

    def _queries(
        self, budgets: dict[str, Budget], now: int
    ) -> tuple[list[tuple[str, WindowInstance, SpendQuery]], list[tuple[str, SpendQuery, list[str]]]]:
        windows, runs = [], []
        with self._lock:
            for name, budget in budgets.items():
                selector = budget.spend_query()
                if budget.window == "run":
                    state = self._states.get(name)
                    seen = list(state.runs_seen) if state is not None and state.budget == budget else []
                    if seen:
                        runs.append((name, selector, seen))
                    continue
                instance = window_at(budget.window, budget.timezone, now)
                query = selector._replace(start_ns=instance.start_ns, end_ns=instance.end_ns)
                windows.append((name, instance, query))
        return windows, runs

    def _pending_keys(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._pending)

    def _apply(
        self,
        budgets: dict[str, Budget],
        windows: list[tuple[str, WindowInstance, Spend]],
        runs: list[tuple[str, dict[str, Spend]]],
        found: tuple[list[tuple[str, str]], dict[tuple[str, str], float | None]] | None,
    ) -> None:
        with self._lock:
            # New state objects, swapped in at the end: a check (which takes no lock) sees the
            # old figures or the new ones, never the new store totals with the old local calls.
            states: dict[str, _State] = {}
            for name, budget in budgets.items():
                state = states[name] = _State(budget)
                old = self._states.get(name)
                if old is not None and old.budget == budget:
                    state.runs_seen = old.runs_seen
                    if old.current is not None:
                        state.set_current(old.current)
            touched: dict[tuple[str, str], WindowInstance] = {}
            for name, instance, spend in windows:
                state = states[name]
                state.set_current(instance)
                state.stored = {instance.key: (spend.cost_usd, spend.unpriced_calls)}
                touched[(name, instance.key)] = instance
            for name, per_run in runs:
                state = states[name]
                state.stored = {f"run:{run}": (s.cost_usd, s.unpriced_calls) for run, s in per_run.items()}
                for run in per_run:
                    touched[(name, f"run:{run}")] = WindowInstance(f"run:{run}", None, None)
            if found is not None:
                keys, costs = found
                for key in keys:
                    pending = self._pending.get(key)
                    if pending is None or key not in costs:
                        continue
                    stored = costs[key]
                    pending.base_cost = 0.0 if stored is None else stored
                    pending.base_unpriced = 1 if stored is None else 0
                    pending.found += 1
                    if stored == pending.call.cost_usd or pending.found > 1:
                        # In the store's totals from now on. A copy that differs twice is not one still
                        # being written: the store kept another (its own ranking), and its figure counts.
                        del self._pending[key]
            by_use_case: dict[str, list[_State]] = {}
            for state in states.values():
                state.sum_totals()  # the stored figures; _add below adds the pending calls
                by_use_case.setdefault(state.budget.use_case, []).append(state)
            for pending in self._pending.values():
                self._add(
                    by_use_case,
                    pending.call,
                    _cost(pending.call) - pending.base_cost,
                    _unpriced(pending.call) - pending.base_unpriced,
                    touched,
                )
            self._states = states
            self._by_use_case = {use_case: tuple(group) for use_case, group in by_use_case.items()}
            self._block_by_use_case = {
                use_case: tuple(state for state in group if state.block)
                for use_case, group in by_use_case.items()
                if any(state.block for state in group)
            }
            crossings = self._crossings(touched)
            if len(self._told) > _MAX_TOLD:
                self._told.clear()  # at worst one more alert claim (the store keeps it once) and log line
        self._tell(crossings)

    @staticmethod
    def _add(
        by_use_case: dict[str, list[_State]] | dict[str, tuple[_State, ...]],
        call: Call,
        cost: float,
        unpriced: int,
        touched: dict[tuple[str, str], WindowInstance],
    ) -> None:
        for state in by_use_case.get(call.use_case, ()):
            if not state.budget.selects(
                call.use_case, call.user_id, call.experience_name, call.use_case_version, call.tags
            ):
                continue
            instance = state.window(call.start_ns, call.run_id)
            key = instance.key
            if state.budget.window == "run":
                state.runs_seen[call.run_id] = None
                state.runs_seen.move_to_end(call.run_id)
                if len(state.runs_seen) > _MAX_RUNS:
                    state.runs_seen.popitem(last=False)
            local = state.local.get(key)
            if local is None:
                state.local[key] = [cost, unpriced]
            else:
                local[0] += cost
                local[1] += unpriced
            state.totals[key] = state.totals.get(key, 0.0) + cost
            touched[(state.budget.name, key)] = instance

    # --- the sink's side ---

    def on_events(self, events: Sequence[CallEvent]) -> None:
        """A sink subscriber: count each accepted call (the better copy minus the one it replaces).

        Only calls of a use case that has a budget are kept: without budgets this
        costs the exporter one check per batch, and a dict lookup per call otherwise.
        """
        if not self._by_use_case:
            return  # no budgets: nothing to count (a budget set later reads these calls from the store)
        crossings: list[Crossing] = []
        with self._lock:
            pending = self._pending
            by_use_case = self._by_use_case
            touched: dict[tuple[str, str], WindowInstance] = {}
            for call, replaced in events:
                if call.use_case not in by_use_case:
                    continue  # no budget on its use case: the same
                key = (call.trace_id, call.span_id)
                before = pending.pop(key, None)
                if before is not None:
                    entry = _Pending(call, before.base_cost, before.base_unpriced)
                    told_cost, told_unpriced = _cost(before.call), _unpriced(before.call)
                else:
                    # A copy replacing one no longer pending: the store had that copy (in its totals).
                    entry = _Pending(
                        call, _cost(replaced), _unpriced(replaced) if replaced is not None else 0
                    )
                    told_cost, told_unpriced = entry.base_cost, entry.base_unpriced
                pending[key] = entry
                self._add(
                    self._by_use_case, call, _cost(call) - told_cost, _unpriced(call) - told_unpriced, touched
                )
            while len(pending) > _MAX_PENDING:
                pending.popitem(last=False)
                self.pending_dropped += 1
            if touched:
                crossings = self._crossings(touched)
        self._tell(crossings)

    # --- crossings ---

    def _crossings(self, touched: dict[tuple[str, str], WindowInstance]) -> list[Crossing]:
        found = []
        now = time.time_ns()
        for (name, key), instance in touched.items():
            state = self._states.get(name)
            if state is None:
                continue
            budget = state.budget
            spent = state.spent(key)[0]
            for threshold in budget.thresholds:
                if spent < budget.amount_usd * threshold / 100:
                    break
                mark = (name, key, threshold)
                if mark in self._told:
                    continue
                self._told.add(mark)
                found.append(
                    Crossing(
                        budget,
                        key,
                        instance.start_ns,
                        instance.end_ns,
                        threshold,
                        spent,
                        budget.amount_usd,
                        now,
                    )
                )
        return found

    def _tell(self, crossings: list[Crossing]) -> None:
        for crossing in crossings:
            budget = crossing.budget
            if budget.mode == "warn":
                logger.warning(
                    "otel_usecase: budget %r (%s, %s window %s) reached %d%%: spent $%.6f of $%.6f",
                    budget.name,
                    ", ".join(f"{k}={v}" for k, v in budget.selector().items()),
                    budget.window,
                    crossing.window_key,
                    crossing.threshold,
                    crossing.spent_usd,
                    crossing.limit_usd,
                )
            try:
                self.on_crossing(crossing)
            except Exception as exc:
                warn_rate_limited(
                    "budgets:on_crossing",
                    "otel_usecase: the budget crossing handler %r failed (%s: %s)",
                    self.on_crossing,
                    type(exc).__name__,
                    exc,
                )

    # --- the scope's side: no I/O, no lock ---

    def check(self, scope: Scope) -> None:
        """Raise :class:`BudgetExceeded` when an exhausted ``block`` budget selects ``scope``."""
        states = self._block_by_use_case.get(scope.use_case_name)  # type: ignore[arg-type]
        if states is None:
            return
        now = time.time_ns()
        for state in states:
            if (
                (state.user_id is not None and state.user_id != scope.user_id)
                or (state.experience_name is not None and state.experience_name != scope.experience_name)
                or (state.version is not None and state.version != scope.use_case_version)
                or (state.tags and not has_tags(scope.tags, state.tags))
            ):
                continue
            key = state.instance_key(now, scope.use_case_id)
            spent = state.totals.get(key, 0.0)
            if spent >= state.amount:
                raise BudgetExceeded(
                    state.budget,
                    key,
                    spent,
                    state.amount,
                    state.end if key == state.key and state.end else None,
                )

    def remaining(self, scope: Scope) -> tuple[float | None, BudgetExceeded | None]:
        """The remaining USD of the tightest budget selecting ``scope`` (None: none), and the exhausted
        ``block`` budget's exception if there is one.

        A ``run`` budget counts another process's calls of the scope's run from the
        next refresh on (its run id is refreshed from then on), this process's at once.
        """
        states = self._by_use_case.get(scope.use_case_name)  # type: ignore[arg-type]
        if states is None:
            return None, None
        now = time.time_ns()
        remaining: float | None = None
        for state in states:
            budget = state.budget
            if not budget.selects(
                scope.use_case_name, scope.user_id, scope.experience_name, scope.use_case_version, scope.tags
            ):
                continue
            run_id = scope.use_case_id
            if state.run and run_id is not None and run_id not in state.runs_seen:
                with self._lock:
                    state.runs_seen[run_id] = None
                    while len(state.runs_seen) > _MAX_RUNS:
                        state.runs_seen.popitem(last=False)
            key = state.instance_key(now, run_id)
            spent = state.totals.get(key, 0.0)
            if state.block and spent >= state.amount:
                end = state.end if key == state.key and state.end else None
                return 0.0, BudgetExceeded(budget, key, spent, state.amount, end)
            left = state.amount - spent
            remaining = left if remaining is None else min(remaining, left)
        return (None if remaining is None else max(remaining, 0.0)), None

    def view(self, at_ns: int | None = None) -> list[BudgetView]:
        """Each budget's current window and spend as this process sees it (``run`` budgets: each run seen)."""
        now = time.time_ns() if at_ns is None else at_ns
        views = []
        with self._lock:
            for state in self._states.values():
                budget = state.budget
                if budget.window == "run":
                    instances = [window_at("run", budget.timezone, now, run) for run in state.runs_seen]
                else:
                    instances = [state.window(now, None)]
                for instance in instances:
                    spent, unpriced = state.spent(instance.key)
                    views.append(BudgetView(budget, instance, spent, unpriced))
        return views


# --- fork ---------------------------------------------------------------------------------

_forkable: weakref.WeakSet[SpendTracker] = weakref.WeakSet()


def _register_fork(tracker: SpendTracker) -> None:
    _forkable.add(tracker)


def _after_fork_in_child() -> None:
    for tracker in list(_forkable):
        try:
            tracker._after_fork_in_child()
        except Exception:
            logger.exception("otel_usecase: restarting the budget spend tracker after fork() failed")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
