"""Who may see what: principals with API tokens, and their roles per use case (issue 16, part A).

A principal is a dashboard/API user, identified by a token the administrator
issues (:func:`create_token`; only its hash is stored). Each use case is shared
with principals in a role (:class:`Role`: OWNER, EDITOR, CONSUMER); a principal
sees the use cases it has a role on (:func:`visible_use_cases`) and nothing
else. The CLI, with direct store access, is the administrator (``"admin"``).
"""

from __future__ import annotations

from .roles import Member, Role, RoleAssignment, members, role_of, share, visible_use_cases
from .tokens import (
    ADMIN,
    Principal,
    PrincipalInfo,
    authenticate,
    create_token,
    list_principals,
    revoke_token,
)

__all__ = [
    "ADMIN",
    "Member",
    "Principal",
    "PrincipalInfo",
    "Role",
    "RoleAssignment",
    "authenticate",
    "create_token",
    "list_principals",
    "members",
    "revoke_token",
    "role_of",
    "share",
    "visible_use_cases",
]
