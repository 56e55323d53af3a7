"""Use cases and experience types as named, described containers (``otel-usecase usecases``).

A use case exists as soon as a call names it; a definition adds a description and
an owner (:func:`create`, :func:`update`), and :func:`show` gathers what the store
knows of it: runs, experiences, users, models, versions, budgets and members.
Every change is in the audit log (:mod:`otel_usecase.audit`). The same for
experience types (the ``experience_name`` of calls).
"""

from __future__ import annotations

from .api import (
    create,
    create_experience_type,
    get,
    get_experience_type,
    list_experience_types,
    list_use_cases,
    members_of,
    show,
    show_experience_type,
    update,
    update_experience_type,
)
from .model import ExperienceTypeDetail, ExperienceTypeInfo, Facet, Facets, UseCaseDetail, UseCaseInfo

__all__ = [
    "ExperienceTypeDetail",
    "ExperienceTypeInfo",
    "Facet",
    "Facets",
    "UseCaseDetail",
    "UseCaseInfo",
    "create",
    "create_experience_type",
    "get",
    "get_experience_type",
    "list_experience_types",
    "list_use_cases",
    "members_of",
    "show",
    "show_experience_type",
    "update",
    "update_experience_type",
]
