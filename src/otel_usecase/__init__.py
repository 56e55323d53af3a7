"""otel-usecase: what your LLM features cost, per use case, run, experience and user.

Mark work with :func:`track_context` or :func:`track`; the values travel as W3C
baggage and :class:`UseCaseSpanProcessor` stamps them onto LLM spans.
"""

from __future__ import annotations

from . import attributes
from .exporter import UseCaseCostExporter
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
