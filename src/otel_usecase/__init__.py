"""otel-usecase: what your LLM features cost, per use case, run, experience and user.

Mark work with :func:`track_context` or :func:`track`; the values travel as W3C
baggage and :class:`UseCaseSpanProcessor` stamps them onto LLM spans.

The public names load on first use (PEP 562), not on ``import otel_usecase``:
the ``otel-usecase`` commands, and apps that only use some of them, never pay
for the rest (the span processor imports the OpenTelemetry SDK, the exporter
the price data).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any, Final

from .version import __version__

if TYPE_CHECKING:
    from .budgets.api import check_budget
    from .budgets.model import BudgetExceeded
    from .erasure import forget_experience, forget_run, forget_user
    from .exporter import UseCaseCostExporter
    from .outcomes import record_outcome
    from .processor import UseCaseSpanProcessor
    from .scope import keys as attributes
    from .scope.threads import propagate_context_to_threads, stop_propagating_context_to_threads
    from .scope.tracking import (
        Scope,
        UseCaseWarning,
        current_scope,
        set_default_use_case,
        track,
        track_context,
    )

__all__ = [
    "BudgetExceeded",
    "Scope",
    "UseCaseCostExporter",
    "UseCaseSpanProcessor",
    "UseCaseWarning",
    "__version__",
    "attributes",
    "check_budget",
    "current_scope",
    "forget_experience",
    "forget_run",
    "forget_user",
    "propagate_context_to_threads",
    "record_outcome",
    "set_default_use_case",
    "stop_propagating_context_to_threads",
    "track",
    "track_context",
]

_HOMES: Final = {
    "BudgetExceeded": ".budgets.model",
    "check_budget": ".budgets.api",
    "Scope": ".scope.tracking",
    "UseCaseWarning": ".scope.tracking",
    "current_scope": ".scope.tracking",
    "set_default_use_case": ".scope.tracking",
    "track": ".scope.tracking",
    "track_context": ".scope.tracking",
    "UseCaseSpanProcessor": ".processor",
    "UseCaseCostExporter": ".exporter",
    "record_outcome": ".outcomes",
    "forget_user": ".erasure",
    "forget_experience": ".erasure",
    "forget_run": ".erasure",
    "propagate_context_to_threads": ".scope.threads",
    "stop_propagating_context_to_threads": ".scope.threads",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use, then keep the name here."""
    if name == "attributes":
        value: Any = import_module(".scope.keys", __name__)
    else:
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
