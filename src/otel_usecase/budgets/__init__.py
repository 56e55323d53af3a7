"""Budgets, spend windows and alerts: watch and limit what a use case costs.

* :mod:`.model`: the records (:class:`Budget`, :class:`Crossing`, :class:`BudgetExceeded`) and their rules;
* :mod:`.windows`: which window instance a moment or run falls in (time zones, DST);
* :mod:`.tracker`: the in-memory spend per budget window, refreshed from the store, and the scope check;
* :mod:`.registry`: one tracker per store (exporter, ``serve``, :func:`enable`) and the scope hooks;
* :mod:`.api`: keep budgets in the store, their status, :func:`check_budget`;
* :mod:`.cli`: ``otel-usecase budgets set|list|delete|status``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .api import BudgetStatus, budget_status, check_budget, delete_budget, list_budgets, set_budget
    from .model import Budget, BudgetExceeded, Crossing
    from .registry import enable
    from .tracker import SpendTracker

__all__ = [
    "Budget",
    "BudgetExceeded",
    "BudgetStatus",
    "Crossing",
    "SpendTracker",
    "budget_status",
    "check_budget",
    "delete_budget",
    "enable",
    "list_budgets",
    "set_budget",
]

_HOMES: Final = {
    "Budget": ".model",
    "BudgetExceeded": ".model",
    "Crossing": ".model",
    "BudgetStatus": ".api",
    "budget_status": ".api",
    "check_budget": ".api",
    "delete_budget": ".api",
    "list_budgets": ".api",
    "set_budget": ".api",
    "enable": ".registry",
    "SpendTracker": ".tracker",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562): ``otel-usecase budgets`` loads no tracker."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
