"""The process's spend trackers: one per store, started by the exporter, ``serve`` or :func:`enable`.

Also the scope hooks: :mod:`otel_usecase.scope.tracking` reads two module
globals, ``_budget_check`` and ``_budget_remaining``, which are None until a
tracker starts (so a process without budgets pays one global read per scope
entry), then point at :func:`_check_scope` and :func:`_remaining` here.

**Where the alerts attach**: :func:`_crossing_handler` builds the ``on_crossing``
of every tracker made here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._log import logger, warn_rate_limited
from ..cost.sink import CallSink
from .model import BudgetExceeded, Crossing
from .tracker import SpendTracker

if TYPE_CHECKING:
    from ..scope.tracking import Scope
    from ..store import Store
    from .alerts import AlertDispatcher

__all__ = ["attach_sink", "detach_sink", "dispatchers", "enable", "reset", "tracker_for", "trackers"]


def _crossing_handler(store_url: str) -> Callable[[Crossing], None]:
    """What the trackers this module creates (exporter, ``serve``, :func:`enable`) tell a crossing.

    The one place the alerts attach: the crossing goes to the process's
    :class:`~otel_usecase.budgets.alerts.AlertDispatcher` of ``store_url``,
    created on the first crossing (a process whose budgets never cross keeps no
    alert thread or store connection). ``notify`` only queues, so this never
    blocks the sink's or the refresh thread.
    """

    def notify(crossing: Crossing) -> None:
        dispatcher = _dispatchers.get(store_url)
        if dispatcher is None:
            from .alerts import AlertDispatcher

            with _registry_lock:
                dispatcher = _dispatchers.get(store_url)
                if dispatcher is None:
                    dispatcher = _dispatchers[store_url] = AlertDispatcher(store_url)
        dispatcher.notify(crossing)

    return notify


_dispatchers: dict[str, AlertDispatcher] = {}
"""The process's alert dispatcher per store URL (they survive a fork: each resets itself in the child)."""


def dispatchers() -> list[AlertDispatcher]:
    """The alert dispatchers running in this process (for :func:`otel_usecase.lifecycle.flush`)."""
    return list(_dispatchers.values())


# --- the process's trackers ---------------------------------------------------------------

_trackers: dict[str, SpendTracker] = {}
_active: tuple[SpendTracker, ...] = ()
"""The trackers as a tuple, for the scope check (no copy per scope entry); rebuilt when one starts or stops."""
_explicit: set[str] = set()
_registry_lock = threading.Lock()


def trackers() -> list[SpendTracker]:
    """The trackers running in this process."""
    return list(_trackers.values())


def tracker_for(store: Store | str) -> SpendTracker:
    """The process's tracker of ``store`` (a URL or a store), created and started on first use."""
    url = store if isinstance(store, str) else store.url
    with _registry_lock:
        tracker = _trackers.get(url)
        if tracker is None:
            tracker = _trackers[url] = SpendTracker(store, on_crossing=_crossing_handler(url))
            tracker.start()
            _install_scope_hooks()
        return tracker


def attach_sink(sink: CallSink[Any], store: Store | str) -> SpendTracker | None:
    """The exporter's and ``serve``'s hook: count ``sink``'s calls in ``store``'s tracker. Never raises."""
    try:
        tracker = tracker_for(store)
        tracker.attach(sink)
        return tracker
    except Exception:
        logger.exception("otel_usecase: budgets are off for this exporter: the spend tracker did not start")
        return None


def detach_sink(sink: CallSink[Any], tracker: SpendTracker | None) -> None:
    """The exporter's shutdown: stop counting ``sink``; the tracker stops when nothing uses it. Never raises."""
    if tracker is None:
        return
    try:
        if tracker.detach(sink) == 0:
            with _registry_lock:
                if tracker.store_url in _explicit or _trackers.get(tracker.store_url) is not tracker:
                    return
                del _trackers[tracker.store_url]
                if _trackers:
                    _install_scope_hooks()
                else:
                    _remove_scope_hooks()
            tracker.stop(0)
    except Exception:
        logger.exception("otel_usecase: stopping the budget spend tracker failed")


def enable(store: Store | str | None = None, *, wait_s: float = 0.0) -> SpendTracker:
    """Track (and enforce) the budgets of ``store`` in this process though its calls are stored elsewhere.

    For apps whose calls reach the store through ``otel-usecase serve`` or a
    collector: their spend is read from the store at each refresh (no local
    calls). ``store``: URL or store (None: ``OTEL_USECASE_STORE``, else the
    default). ``wait_s``: wait up to this long for the first refresh (at startup,
    so the first requests are checked against the stored spend). Idempotent.
    """
    from ..store.base import default_store_url, parse_store_url

    if store is None or isinstance(store, str):
        store = store if store is not None else default_store_url()
        parse_store_url(store)
    tracker = tracker_for(store)
    with _registry_lock:
        _explicit.add(tracker.store_url)
    if wait_s > 0:
        tracker.refreshed.wait(wait_s)
    return tracker


# --- the scope hooks (scope/tracking.py reads two module globals; None costs one check) ------


def _check_scope(scope: Scope) -> None:
    """``track_context.__enter__``: raise for an exhausted block budget; anything else never raises."""
    for tracker in _active:
        try:
            tracker.check(scope)
        except BudgetExceeded:
            raise
        except Exception as exc:
            warn_rate_limited(
                "budgets:check", "otel_usecase: budget check skipped (%s: %s)", type(exc).__name__, exc
            )


def _remaining(scope: Scope) -> tuple[float | None, BudgetExceeded | None]:
    best: float | None = None
    for tracker in _active:
        try:
            left, exceeded = tracker.remaining(scope)
        except Exception as exc:
            warn_rate_limited(
                "budgets:check", "otel_usecase: budget check skipped (%s: %s)", type(exc).__name__, exc
            )
            continue
        if exceeded is not None:
            return 0.0, exceeded
        if left is not None:
            best = left if best is None else min(best, left)
    return best, None


def _install_scope_hooks() -> None:
    global _active
    from ..scope import tracking

    _active = tuple(_trackers.values())
    tracking._budget_check = _check_scope
    tracking._budget_remaining = _remaining


def _remove_scope_hooks() -> None:
    global _active
    from ..scope import tracking

    _active = tuple(_trackers.values())
    tracking._budget_check = None
    tracking._budget_remaining = None


def reset() -> None:
    """Stop every tracker and alert dispatcher and remove the scope hooks (tests)."""
    with _registry_lock:
        stopped = list(_trackers.values())
        closing = list(_dispatchers.values())
        _trackers.clear()
        _dispatchers.clear()
        _explicit.clear()
        _remove_scope_hooks()
    for tracker in stopped:
        tracker.stop(1.0)
    for dispatcher in closing:
        dispatcher.close(1.0)


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = (
        threading.Lock()
    )  # another thread may have held it at fork(); the trackers restart themselves


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
