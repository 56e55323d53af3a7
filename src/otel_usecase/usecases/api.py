"""The Python API of use case and experience type definitions (``otel_usecase.usecases``).

A use case exists as soon as a call names it (nothing has to be declared up
front); :func:`create` and :func:`update` give it a description and an owner.
:func:`list_use_cases` lists the defined ones and those only seen in calls (read
from the hour rollup, not the ledger: :mod:`otel_usecase.store.definition_sql`),
and :func:`show` gathers what the store knows of one. Experience types (the
``experience_name`` of calls) work the same way. Every create and update is
written to the audit log (:func:`otel_usecase.audit.record`) by ``actor``
(``"admin"``: direct store access).

Each function takes an open store (:func:`otel_usecase.store.open_store`).
Names follow the name rule (a bad one raises ``ValueError`` naming it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from ..audit import ADMIN, record
from ..scope.validation import check_name
from ..store import definition_sql as sql
from .model import (
    ExperienceTypeDetail,
    ExperienceTypeInfo,
    Facet,
    Facets,
    UseCaseDetail,
    UseCaseInfo,
    check_description,
)

if TYPE_CHECKING:
    from ..store import Store
    from ..store.base import ReportFilter, Transaction

__all__ = [
    "SHOWN",
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

SHOWN: Final = 10
"""Values of each column :func:`show` lists by default (the most expensive first)."""


def members_of(store: Store, use_case: str) -> list[Any]:
    """The members of ``use_case`` (part A's ``members()``).

    UNTIL PART A (access) IS MERGED: no members (an empty list), so ``show`` lists none and no one is
    notified."""
    return []


# --- the definitions table, for either kind -------------------------------------------------------


def _defined(store: Store, kind: sql.Kind, name: str | None = None) -> list[tuple[Any, ...]]:
    """The rows of ``kind``'s table (one name's, or all by name); none when the store predates it."""

    def read(tx: Transaction) -> list[tuple[Any, ...]]:
        if not tx.has_table(kind.table):
            return []
        return tx.execute(*kind.select_sql(name))

    return store.transact("read the definitions", read, write=False)


def _seen(store: Store, kind: sql.Kind) -> set[str]:
    """The names of ``kind`` seen in calls: the hour rollup (and SQLite's pending rows), else the ledger."""
    view = store.view_sql()
    source = "ledger" if not view.rollups else "rollup+pending" if view.pending else "rollup"
    return {str(row[0]) for row in store.query(sql.seen_sql(kind.column, source))}


def _write(
    store: Store, kind: sql.Kind, name: str, fields: Sequence[Any], *, insert: bool
) -> tuple[Any, ...] | None:
    """Insert a definition (None when it exists) or set its fields (None when there is none); its row."""
    now = time.time_ns()

    def write(tx: Transaction) -> tuple[Any, ...] | None:
        if not tx.has_table(kind.table):  # a store that predates schema 7
            for statement in sql.DEFINITIONS_DDL:
                tx.execute(statement)
        if insert:
            done = tx.execute(kind.insert_sql(), (name, *fields, now, now))
        else:
            done = tx.execute(kind.update_sql(), (*fields, now, name))
        return tx.execute(*kind.select_sql(name))[0] if done else None

    return store.transact("write a definition", write, write=True)


def _changes(old: Sequence[Any], new: Sequence[Any], fields: Sequence[str]) -> dict[str, object]:
    return {f: {"from": a, "to": b} for f, a, b in zip(fields, old, new) if a != b}


def _define(
    store: Store,
    kind: sql.Kind,
    noun: str,
    action: str,
    name: str,
    fields: tuple[Any, ...],
    actor: str,
) -> tuple[Any, ...]:
    check_name(noun.replace(" ", "_"), name)
    check_name("actor", actor)
    row = _write(store, kind, name, fields, insert=True)
    if row is None:
        raise ValueError(f"{noun} {name!r} is already defined: change it with update")
    record(
        store,
        actor=actor,
        action=action,
        use_case=name if kind is sql.USE_CASES else None,
        target=name,
        detail=dict(zip(kind.fields, fields)),
    )
    return row


def _redefine(
    store: Store,
    kind: sql.Kind,
    noun: str,
    action: str,
    name: str,
    given: tuple[Any, ...],
    actor: str,
) -> tuple[Any, ...]:
    """Set the given fields (None: unchanged) of a defined name, or define a name seen in calls."""
    check_name(noun.replace(" ", "_"), name)
    check_name("actor", actor)
    current = _defined(store, kind, name)
    n = len(kind.fields)
    old: tuple[Any, ...] = tuple(current[0][1 : 1 + n]) if current else (None,) * n
    new = tuple(o if g is None else (g or None) for o, g in zip(old, given))
    if current and new == old:
        return tuple(current[0])  # nothing changes: nothing written, nothing recorded
    if current:
        row = _write(store, kind, name, new, insert=False)
    elif name in _seen(store, kind):  # seen in calls, never defined: its first definition
        row = _write(store, kind, name, new, insert=True)
    else:
        raise LookupError(f"no {noun} {name!r} in the store (neither defined nor seen in calls): create it")
    if row is None:  # deleted or created meanwhile by another process
        raise LookupError(f"{noun} {name!r} changed while it was being updated: try again")
    record(
        store,
        actor=actor,
        action=action,
        use_case=name if kind is sql.USE_CASES else None,
        target=name,
        detail=_changes(old, new, kind.fields),
    )
    return row


def _facets(store: Store, keys: tuple[str, ...], filters: ReportFilter, limit: int) -> Facets:
    """The ``limit`` most expensive values of ``keys`` among the calls ``filters`` selects."""
    from ..report.queries import group_row, sort_rows

    rows = sort_rows(group_row(record, keys) for record in store.group_totals(keys, filters))
    shown = tuple(Facet(r.key, r.runs, r.calls, r.cost_usd, r.cost_complete) for r in rows[:limit])
    return Facets(shown, len(rows) > limit)


def _listing(
    store: Store, kind: sql.Kind, info: Callable[..., Any], seen_only: Callable[[str], Any]
) -> list[Any]:
    defined = {str(row[0]): info((*row, True)) for row in _defined(store, kind)}
    for name in _seen(store, kind) - defined.keys():
        defined[name] = seen_only(name)
    return [defined[name] for name in sorted(defined)]


# --- use cases --------------------------------------------------------------------------------------


def create(
    store: Store, name: str, description: str | None = None, owner: str | None = None, *, actor: str = ADMIN
) -> UseCaseInfo:
    """Define use case ``name`` (one seen in calls may be defined; one already defined raises
    ``ValueError``: use :func:`update`). ``owner``: a principal name. Recorded as ``usecase.create``."""
    if owner is not None:
        check_name("owner", owner)
    row = _define(
        store,
        sql.USE_CASES,
        "use case",
        "usecase.create",
        name,
        (check_description(description), owner),
        actor,
    )
    return UseCaseInfo._make((*row, True))


def update(
    store: Store, name: str, *, description: str | None = None, owner: str | None = None, actor: str = ADMIN
) -> UseCaseInfo:
    """Change use case ``name``'s description or owner (None: unchanged; ``""``: removed).

    A use case only seen in calls gets its first definition; one neither defined nor seen raises
    ``LookupError``. Recorded as ``usecase.update`` with each change (from, to); nothing when nothing
    changes."""
    if owner:
        check_name("owner", owner)
    described = None if description is None else (check_description(description) or "")
    row = _redefine(store, sql.USE_CASES, "use case", "usecase.update", name, (described, owner), actor)
    return UseCaseInfo._make((*row, True))


def get(store: Store, name: str) -> UseCaseInfo | None:
    """Use case ``name``'s definition; an implicit one (``defined=False``) when it is only seen in calls;
    None when neither."""
    check_name("use_case", name)
    rows = _defined(store, sql.USE_CASES, name)
    if rows:
        return UseCaseInfo._make((*rows[0], True))
    return UseCaseInfo(name) if name in _seen(store, sql.USE_CASES) else None


def list_use_cases(store: Store) -> list[UseCaseInfo]:
    """Every defined use case and every one seen in calls (``defined=False``), by name."""
    return _listing(store, sql.USE_CASES, UseCaseInfo._make, UseCaseInfo)


def show(store: Store, name: str, *, limit: int = SHOWN) -> UseCaseDetail:
    """What the store knows of use case ``name``: its definition, runs, calls and cost, its ``limit`` most
    expensive experiences, users, models and versions, its budgets and members. ``LookupError`` when it
    is neither defined nor seen in calls."""
    from ..budgets.model import stored_budgets
    from ..report.views import summary
    from ..store import ReportFilter

    info = get(store, name)
    if info is None:
        raise LookupError(f"no use case {name!r} in the store (neither defined nor seen in calls)")
    filters = ReportFilter(use_case=name)
    totals = summary(store, filters)
    return UseCaseDetail(
        info=info,
        runs=totals.runs,
        calls=totals.calls,
        cost_usd=totals.cost_usd,
        cost_complete=totals.cost_complete,
        experiences=_facets(store, ("experience_name",), filters, limit),
        users=_facets(store, ("user_id",), filters, limit),
        models=_facets(store, ("provider", "model"), filters, limit),
        versions=_facets(store, ("use_case_version",), filters, limit),
        budgets=tuple(b for b in stored_budgets(store.load_budgets()).values() if b.use_case == name),
        members=tuple(members_of(store, name)),
    )


# --- experience types ---------------------------------------------------------------------------------


def create_experience_type(
    store: Store, name: str, description: str | None = None, *, actor: str = ADMIN
) -> ExperienceTypeInfo:
    """Define experience type ``name`` (the ``experience_name`` of calls); ``ValueError`` when it is
    defined already. Recorded as ``experience_type.create``."""
    row = _define(
        store,
        sql.EXPERIENCE_TYPES,
        "experience type",
        "experience_type.create",
        name,
        (check_description(description),),
        actor,
    )
    return ExperienceTypeInfo._make((*row, True))


def update_experience_type(
    store: Store, name: str, *, description: str | None = None, actor: str = ADMIN
) -> ExperienceTypeInfo:
    """Change experience type ``name``'s description (None: unchanged; ``""``: removed), as :func:`update`."""
    described = None if description is None else (check_description(description) or "")
    row = _redefine(
        store, sql.EXPERIENCE_TYPES, "experience type", "experience_type.update", name, (described,), actor
    )
    return ExperienceTypeInfo._make((*row, True))


def get_experience_type(store: Store, name: str) -> ExperienceTypeInfo | None:
    """As :func:`get`, for experience types."""
    check_name("experience_type", name)
    rows = _defined(store, sql.EXPERIENCE_TYPES, name)
    if rows:
        return ExperienceTypeInfo._make((*rows[0], True))
    return ExperienceTypeInfo(name) if name in _seen(store, sql.EXPERIENCE_TYPES) else None


def list_experience_types(store: Store) -> list[ExperienceTypeInfo]:
    """Every defined experience type and every experience name seen in calls (``defined=False``)."""
    return _listing(store, sql.EXPERIENCE_TYPES, ExperienceTypeInfo._make, ExperienceTypeInfo)


def show_experience_type(store: Store, name: str, *, limit: int = SHOWN) -> ExperienceTypeDetail:
    """Experience type ``name``'s definition, runs, calls, cost, and the use cases and models of its calls."""
    from ..report.views import summary
    from ..store import ReportFilter

    info = get_experience_type(store, name)
    if info is None:
        raise LookupError(f"no experience type {name!r} in the store (neither defined nor seen in calls)")
    filters = ReportFilter(experience_name=name)
    totals = summary(store, filters)
    return ExperienceTypeDetail(
        info=info,
        runs=totals.runs,
        calls=totals.calls,
        cost_usd=totals.cost_usd,
        cost_complete=totals.cost_complete,
        use_cases=_facets(store, ("use_case",), filters, limit),
        models=_facets(store, ("provider", "model"), filters, limit),
    )
