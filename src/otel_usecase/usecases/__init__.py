"""Use cases and experience types as named, described containers (``otel-usecase usecases``).

A use case exists as soon as a call names it; a definition adds a description and
an owner (``create``, ``update``), and ``show`` gathers what the store knows of it:
runs, experiences, users, models, versions, budgets and members. Every change is
in the audit log (:mod:`otel_usecase.audit`). The same for experience types
(the ``experience_name`` of calls).
"""

from __future__ import annotations

from .api import members_of

__all__ = ["members_of"]
