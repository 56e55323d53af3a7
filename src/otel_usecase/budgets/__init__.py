"""Budgets, spend windows and alerts: watch and limit what a use case costs.

Public API re-exported here (see ``__all__``).
"""

from __future__ import annotations

from .model import Budget, BudgetExceeded, Crossing

__all__ = ["Budget", "BudgetExceeded", "Crossing"]
