"""The Python API of budgets: keep them in the store, read their status, check the current scope.

Budgets live in the store (table ``otel_usecase_budgets``), so every process and
every ``serve`` using it sees the same ones; :func:`set_budget` and
:func:`delete_budget` write there (and wake this process's trackers), and the
trackers of other processes pick the change up at their next refresh.
:func:`budget_status` reads the store now (for the CLI and dashboards);
:func:`check_budget` reads the tracker's memory (for the request path).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

from .model import Budget, stored_budgets
from .windows import window_at

if TYPE_CHECKING:
    from ..store import Store

__all__ = ["BudgetStatus", "budget_status", "check_budget", "delete_budget", "list_budgets", "set_budget"]


class BudgetStatus(NamedTuple):
    """One budget's current window as the store has it now.

    ``unpriced_calls``: calls in the window whose cost is unknown or a lower bound
    (then ``spent_usd`` is a lower bound too). A ``run`` budget shows its most
    recent run (``window_key`` ``run:<id>``, no start or end); ``total`` has none either.
    """

    budget: Budget
    window_key: str
    window_start_ns: int | None
    window_end_ns: int | None
    spent_usd: float
    limit_usd: float
    remaining_usd: float
    unpriced_calls: int


@contextmanager
def _opened(store: Store | str | None, *, create: bool) -> Iterator[Store]:
    """``store`` as a store: a given store is used (and left open); a URL (None: the default) is opened and closed."""
    from ..store import open_store

    if store is not None and not isinstance(store, str):
        yield store
        return
    opened = open_store(store, create=create)
    try:
        yield opened
    finally:
        opened.close()


def _wake(store: Store | str | None) -> None:
    """Tell this process's tracker of ``store`` to refresh soon (the change shows without waiting)."""
    from ..store.base import default_store_url
    from .registry import trackers

    url = store.url if store is not None and not isinstance(store, str) else store or default_store_url()
    for tracker in trackers():
        if tracker.store_url == url:
            tracker.wake()


def set_budget(
    budget: Budget | Mapping[str, Any] | None = None, store: Store | str | None = None, **fields: Any
) -> Budget:
    """Create or replace a budget in the store: ``set_budget(Budget(...))`` or ``set_budget(name=..., ...)``.

    ``store``: a store or URL (None: ``OTEL_USECASE_STORE``, else the default), created
    if missing. A bad budget raises ``ValueError`` (see :class:`Budget`). Returns the
    budget as stored (user id hashed when hashing is on).
    """
    if budget is None:
        budget = Budget(**fields)
    elif isinstance(budget, Mapping):
        budget = Budget(**{**budget, **fields})
    elif fields:
        raise TypeError("give a Budget or its fields, not both")
    with _opened(store, create=True) as opened:
        opened.save_budget(budget.name, budget.to_json(), time.time_ns())
        _wake(store)
        _audit(opened, "budget.set", budget.name, budget)
    return budget


def _audit(store: Store, action: str, name: str, budget: Budget | None) -> None:
    """Record a budget change in the audit log (``admin``: the API has direct store access); the
    webhook URL is left out (it may hold a secret), only whether there is one is kept. ``budget``
    None: a stored budget this version could not read was deleted (no use case known)."""
    from ..audit import ADMIN, record

    detail: dict[str, object] = {}
    if budget is not None:
        detail = {k: v for k, v in json.loads(budget.to_json()).items() if k != "webhook"}
        detail["webhook"] = budget.webhook is not None
    use_case = budget.use_case if budget is not None else None
    record(store, actor=ADMIN, action=action, use_case=use_case, target=name, detail=detail)


def list_budgets(store: Store | str | None = None) -> list[Budget]:
    """The budgets in the store, by name (a store written before budgets existed has none).

    A stored budget this version cannot read is left out with a logged warning.
    Raises ``StoreError`` when the store does not exist (never creates it).
    """

    with _opened(store, create=False) as opened:
        return list(stored_budgets(opened.load_budgets()).values())


def delete_budget(name: str, store: Store | str | None = None) -> bool:
    """Delete budget ``name``; whether there was one. Never creates the store."""
    with _opened(store, create=False) as opened:
        before = stored_budgets(opened.load_budgets()).get(name)
        deleted = opened.delete_budget(name)
        _wake(store)
        if deleted:
            _audit(opened, "budget.delete", name, before)
    return deleted


def budget_status(store: Store | str | None = None, *, at_ns: int | None = None) -> list[BudgetStatus]:
    """Each budget's spend, limit, remaining and window, read from the store now (at ``at_ns``: now)."""
    from ..store.budget_sql import Spend

    now = time.time_ns() if at_ns is None else at_ns
    statuses = []
    with _opened(store, create=False) as opened:
        for budget in stored_budgets(opened.load_budgets()).values():
            selector = budget.spend_query()
            if budget.window == "run":
                run = opened.latest_run(selector)
                instance = window_at("run", budget.timezone, now, run)
                found = opened.budget_spend([], [(selector, [run])], []).runs[0] if run else {}
                spend = found.get(run or "", Spend(0.0, 0))
            else:
                instance = window_at(budget.window, budget.timezone, now)
                query = selector._replace(start_ns=instance.start_ns, end_ns=instance.end_ns)
                spend = opened.budget_spend([query], [], []).windows[0]
            statuses.append(
                BudgetStatus(
                    budget,
                    instance.key,
                    instance.start_ns,
                    instance.end_ns,
                    spend.cost_usd,
                    budget.amount_usd,
                    max(budget.amount_usd - spend.cost_usd, 0.0),
                    spend.unpriced_calls,
                )
            )
    return statuses


def check_budget() -> float | None:
    """The remaining USD of the tightest budget selecting the current scope; None when none does.

    Raises :class:`~otel_usecase.budgets.model.BudgetExceeded` when a ``block``
    budget selecting it is exhausted, as entering the scope would. Reads the
    spend tracker's memory: no I/O, and nothing else ever raises (no tracker
    running, no scope: None).
    """
    from ..scope import tracking

    remaining: Callable[[Any], tuple[float | None, Exception | None]] | None = tracking._budget_remaining
    if remaining is None:
        return None
    try:
        scope = tracking.current_scope()
    except Exception:
        return None
    if scope is None:
        return None
    left, exceeded = remaining(scope)
    if exceeded is not None:
        raise exceeded
    return left
