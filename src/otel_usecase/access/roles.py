"""Roles per use case: who may see it, change it and share it; :func:`share` is the one way to change them.

The roles, from most to least: ``OWNER`` (everything, can share), ``EDITOR``
(the definition and budgets), ``CONSUMER`` (reads). ``NO_ROLE`` is the absence
of a role: sharing it removes the principal from the use case. A member may also
hold ``can_share`` (share the use case though not an owner) and ``notify``
(be told of changes to it, through the alert webhook).

Who may share (the DataRobot rules): the administrator (``actor="admin"``, the
CLI) anything; a principal only a use case it is an ``OWNER`` of, or holds
``can_share`` on, and a non-owner only up to its own role: it cannot grant a
role above its own (an ``EDITOR`` cannot grant ``OWNER``) nor change the role of
a member above it. A principal may not leave a use case that had an owner
without one. A share is one transaction: a refused assignment changes nothing.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from ..scope.validation import check_name
from ..store.access_sql import (
    DDL,
    DELETE_MEMBER_SQL,
    MEMBER_SQL,
    MEMBERS_OF_SQL,
    MEMBERS_TABLE,
    PRINCIPAL_SQL,
    PRINCIPALS_TABLE,
    UPSERT_MEMBER_SQL,
    VISIBLE_SQL,
)
from .tokens import ADMIN, check_principal

if TYPE_CHECKING:
    from ..store import Store
    from ..store.base import Transaction

__all__ = ["Member", "Role", "RoleAssignment", "members", "role_of", "share", "visible_use_cases"]


class Role(enum.StrEnum):
    """A principal's role on one use case (a ``str``: ``Role.OWNER == "OWNER"``, JSON as is)."""

    OWNER = "OWNER"
    EDITOR = "EDITOR"
    CONSUMER = "CONSUMER"
    NO_ROLE = "NO_ROLE"

    @property
    def rank(self) -> int:
        """3 for OWNER down to 0 for NO_ROLE: a role allows everything a lower one does."""
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        """Whether this role can do what ``needed`` can (``Role.EDITOR.allows(Role.CONSUMER)``)."""
        return self.rank >= needed.rank

    @classmethod
    def parse(cls, value: object) -> Role:
        """``value`` as a role (a :class:`Role`, or its name in any case), else ``ValueError`` naming it."""
        if isinstance(value, Role):
            return value
        if isinstance(value, str):
            found = cls.__members__.get(value.strip().upper())
            if found is not None:
                return found
        raise ValueError(f"role={value!r} is not a role: use one of {', '.join(cls.__members__)}")


_RANKS = {Role.OWNER: 3, Role.EDITOR: 2, Role.CONSUMER: 1, Role.NO_ROLE: 0}


class RoleAssignment(NamedTuple):
    """One principal's role in a :func:`share` (``Role.NO_ROLE`` removes it from the use case)."""

    principal: str
    role: Role
    can_share: bool = False
    """It may share the use case though it is not an owner (up to its own role)."""
    notify: bool = False
    """It is told of changes to the use case (through the alert webhook)."""


class Member(NamedTuple):
    """A principal's role on a use case as stored (:func:`members`)."""

    use_case: str
    principal: str
    role: Role
    can_share: bool
    notify: bool
    updated_ns: int


def _member(row: Sequence[object]) -> Member:
    use_case, principal, role, can_share, notify, updated_ns = row
    return Member(
        str(use_case),
        str(principal),
        Role.__members__.get(str(role), Role.NO_ROLE),
        bool(can_share),
        bool(notify),
        int(str(updated_ns)),
    )


def _checked(roles: Sequence[RoleAssignment]) -> list[RoleAssignment]:
    """The assignments with parsed roles, or ``ValueError`` naming the bad value (before any store access)."""
    if isinstance(roles, (str, bytes)) or not isinstance(roles, Sequence):
        raise TypeError(f"roles must be a sequence of RoleAssignment, not {type(roles).__name__}")
    checked: list[RoleAssignment] = []
    seen: set[str] = set()
    for given in roles:
        assignment = RoleAssignment(**given) if isinstance(given, Mapping) else RoleAssignment(*given)
        check_principal(assignment.principal)
        for flag in ("can_share", "notify"):
            if not isinstance(getattr(assignment, flag), bool):
                raise TypeError(
                    f"{flag}={getattr(assignment, flag)!r} for principal {assignment.principal!r} "
                    "is not True or False"
                )
        if assignment.principal in seen:
            raise ValueError(f"principal {assignment.principal!r} is given more than one role in one share")
        seen.add(assignment.principal)
        checked.append(assignment._replace(role=Role.parse(assignment.role)))
    return checked


def _refuse_unless_allowed(
    actor: str, mine: Member | None, use_case: str, assignment: RoleAssignment, theirs: Member | None
) -> None:
    """Raise ``PermissionError`` naming the rule when non-admin ``actor`` may not make ``assignment``."""
    role = mine.role if mine is not None else Role.NO_ROLE
    if role is not Role.OWNER and not (mine is not None and mine.can_share):
        raise PermissionError(
            f"principal {actor!r} may not share use case {use_case!r}: only an OWNER of it, or a member "
            f"given can_share, may share it (its role: {role.value})"
        )
    if role is Role.OWNER:
        return
    if not role.allows(assignment.role):
        raise PermissionError(
            f"principal {actor!r} may not grant {assignment.role.value} on use case {use_case!r}: "
            f"a member who is not an OWNER grants roles up to its own ({role.value})"
        )
    if theirs is not None and not role.allows(theirs.role):
        raise PermissionError(
            f"principal {actor!r} may not change the role of {assignment.principal!r} on use case "
            f"{use_case!r}: its role ({theirs.role.value}) is above {actor!r}'s own ({role.value})"
        )


def share(
    store: Store, use_case: str, roles: Sequence[RoleAssignment], *, actor: str = ADMIN
) -> list[Member]:
    """Give each principal of ``roles`` its role on ``use_case`` (``NO_ROLE``: remove it); the members after.

    ``actor``: who shares: ``"admin"`` (the CLI, direct store access) may do
    anything; a principal must be an OWNER of the use case, or hold
    ``can_share`` on it, and if not an OWNER may grant and change roles only up
    to its own (module doc), else ``PermissionError`` naming the rule. Names
    breaking the name rule, a principal not in the store (except to remove it),
    a principal given twice, or a value that is not a role: ``ValueError`` (a flag that is not a bool,
    ``TypeError``).
    All of ``roles`` apply in one transaction, or none. Each change is audited
    (``share``, or ``revoke`` for ``NO_ROLE``).
    """
    check_name("use_case", use_case)
    if actor != ADMIN:
        check_name("actor", actor)
    checked = _checked(roles)
    now = time.time_ns()

    def apply(tx: Transaction) -> tuple[list[tuple[RoleAssignment, Member | None]], list[Member]]:
        if not tx.has_table(MEMBERS_TABLE) or not tx.has_table(PRINCIPALS_TABLE):
            for statement in DDL:
                tx.execute(statement)
        before = [_member(row) for row in tx.execute(MEMBERS_OF_SQL, (use_case,))]
        current = {member.principal: member for member in before}
        changed: list[tuple[RoleAssignment, Member | None]] = []
        for assignment in checked:
            theirs = current.get(assignment.principal)
            if actor != ADMIN:
                _refuse_unless_allowed(actor, current.get(actor), use_case, assignment, theirs)
            if assignment.role is Role.NO_ROLE:
                if theirs is not None:
                    tx.execute(DELETE_MEMBER_SQL, (use_case, assignment.principal))
                    changed.append((assignment, theirs))
                continue
            if not tx.execute(PRINCIPAL_SQL, (assignment.principal,)):
                raise ValueError(
                    f"no principal {assignment.principal!r} in the store: create it first "
                    f"(otel-usecase tokens create --name {assignment.principal})"
                )
            if theirs is not None and (theirs.role, theirs.can_share, theirs.notify) == assignment[1:]:
                continue  # nothing changes
            tx.execute(
                UPSERT_MEMBER_SQL,
                (
                    use_case,
                    assignment.principal,
                    assignment.role.value,
                    int(assignment.can_share),
                    int(assignment.notify),
                    now,
                ),
            )
            changed.append((assignment, theirs))
        after = [_member(row) for row in tx.execute(MEMBERS_OF_SQL, (use_case,))]
        if (
            actor != ADMIN
            and any(m.role is Role.OWNER for m in before)
            and not any(m.role is Role.OWNER for m in after)
        ):
            raise PermissionError(
                f"principal {actor!r} may not leave use case {use_case!r} without an OWNER "
                "(share OWNER with someone else first)"
            )
        return changed, after

    changed, after = store.transact("share a use case", apply, write=True)
    from .. import audit  # at call time: the audit log reads the members (no import cycle)

    for assignment, previous in changed:
        audit.record(
            store,
            actor=actor,
            action="revoke" if assignment.role is Role.NO_ROLE else "share",
            use_case=use_case,
            target=assignment.principal,
            detail={
                "role": assignment.role.value,
                "can_share": assignment.can_share,
                "notify": assignment.notify,
                "previous_role": (previous.role if previous is not None else Role.NO_ROLE).value,
            },
        )
    return after


def members(store: Store, use_case: str) -> list[Member]:
    """The principals with a role on ``use_case``, by name (``[]`` for a store without the members table).

    ``use_case`` is data here (a name seen in calls may break the name rule: then it has no members)."""
    if not isinstance(use_case, str):
        return []

    def read(tx: Transaction) -> list[Member]:
        if not tx.has_table(MEMBERS_TABLE):
            return []
        return [_member(row) for row in tx.execute(MEMBERS_OF_SQL, (use_case,))]

    return store.transact("read the members", read, write=False)


def visible_use_cases(store: Store, principal: str) -> frozenset[str]:
    """The use cases ``principal`` has a role on (any role but ``NO_ROLE``): all it may see.

    Reads the store now. The administrator sees everything and has no entry here:
    callers treat it apart (``ReportFilter.use_cases=None``). Never raises on ``principal``: a value that
    is not a principal's name sees nothing.
    """
    if not isinstance(principal, str):
        return frozenset()

    def read(tx: Transaction) -> frozenset[str]:
        if not tx.has_table(MEMBERS_TABLE):
            return frozenset()
        return frozenset(str(row[0]) for row in tx.execute(VISIBLE_SQL, (principal,)))

    return store.transact("read the visible use cases", read, write=False)


def role_of(store: Store, principal: str, use_case: str) -> Role:
    """``principal``'s role on ``use_case`` (``Role.NO_ROLE`` when it has none, or either is not a name)."""
    if not isinstance(principal, str) or not isinstance(use_case, str):
        return Role.NO_ROLE

    def read(tx: Transaction) -> Role:
        if not tx.has_table(MEMBERS_TABLE):
            return Role.NO_ROLE
        rows = tx.execute(MEMBER_SQL, (use_case, principal))
        return _member(rows[0]).role if rows else Role.NO_ROLE

    return store.transact("read a role", read, write=False)
