"""otel-usecase: what your LLM features cost, per use case, run, experience and user.

Mark work with :func:`track_context` or :func:`track`; the values travel as W3C
baggage and :class:`UseCaseSpanProcessor` stamps them onto LLM spans.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import attributes
from .processor import UseCaseSpanProcessor
from .scope import (
    Scope,
    UseCaseWarning,
    current_scope,
    set_default_use_case,
    track,
    track_context,
)
from .version import __version__

if TYPE_CHECKING:
    from .exporter import UseCaseCostExporter

__all__ = [
    "Scope",
    "UseCaseCostExporter",
    "UseCaseSpanProcessor",
    "UseCaseWarning",
    "__version__",
    "attributes",
    "current_scope",
    "set_default_use_case",
    "track",
    "track_context",
]


def __getattr__(name: str) -> Any:
    """Load the exporter (and with it the price data) on first use, not on ``import otel_usecase``.

    An application that only stamps spans, and the ``report`` command, never pay
    for importing genai-prices and its dependencies.
    """
    if name == "UseCaseCostExporter":
        from .exporter import UseCaseCostExporter

        return UseCaseCostExporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
