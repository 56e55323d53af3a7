"""The OTLP receiver behind ``otel-usecase serve`` (extra ``serve``)."""

from __future__ import annotations

from .server import ServeOptions, run

__all__ = ["ServeOptions", "run"]
