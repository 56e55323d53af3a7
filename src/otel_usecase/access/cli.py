"""``otel-usecase tokens create|list|revoke`` and ``otel-usecase usecases share``: the administrator's commands.

The CLI has direct store access, so it acts as the administrator (``"admin"``).
``tokens create`` prints the token on stdout and nothing else (stdout can go
straight into a file or a secret store); everything else it says goes to stderr.
No command ever prints a token's hash. ``tokens create`` creates the store if
missing (like ``budgets set``); the others never do: a store that does not exist
is an error naming it (exit 1). A bad name, role or roles file is a usage error
(exit 2) naming the value and the rule.

The ``share`` subcommand belongs to the ``usecases`` command group:
:func:`add_share_parser` adds it to whichever group holds it, and
``args.access_run`` is its handler (``otel-usecase``'s ``main`` calls it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from ..store import Store, StoreError, default_store_url, open_store, parse_store_url
from .roles import Member, Role, RoleAssignment, share
from .tokens import create_token, list_principals, revoke_token

__all__ = ["STORE_HELP", "add_arguments", "add_share_parser", "run"]

STORE_HELP: Final = "store URL (default: $OTEL_USECASE_STORE, else SQLite under ~/.local/share/otel-usecase)"
_ASSIGNMENT_KEYS: Final = frozenset(("principal", "role", "can_share", "notify"))


def add_arguments(commands: Any, store_help: str = STORE_HELP) -> None:
    """Add the ``tokens`` command (``usecases share`` is added to the ``usecases`` group by :func:`add_share_parser`)."""
    tokens = commands.add_parser("tokens", help="API tokens of the dashboard's principals (users)")
    sub = tokens.add_subparsers(dest="tokens_command", required=True, metavar="COMMAND")
    create = sub.add_parser(
        "create", help="issue a principal's token (printed once; only its hash is stored)"
    )
    create.add_argument("--name", required=True, metavar="NAME", help="the principal, e.g. alice")
    create.add_argument("--store", metavar="URL", help=store_help)
    listing = sub.add_parser("list", help="the principals and whether their token is active (never a token)")
    listing.add_argument("--format", default="table", choices=("table", "json"))
    listing.add_argument("--store", metavar="URL", help=store_help)
    revoke = sub.add_parser("revoke", help="revoke a principal's token at once")
    revoke.add_argument("--name", required=True, metavar="NAME", help="the principal")
    revoke.add_argument("--store", metavar="URL", help=store_help)
    for parser in (create, listing, revoke):
        parser.set_defaults(access_run=run)


def add_share_parser(subcommands: Any, store_help: str = STORE_HELP) -> None:
    """Add ``share NAME (--principal P --role R [--can-share] [--notify] | --from-file FILE)`` to a group."""
    put = subcommands.add_parser(
        "share",
        help="give principals a role on a use case (NO_ROLE removes it)",
        description="Give principals a role on a use case: OWNER (everything, can share), EDITOR "
        "(definition, budgets), CONSUMER (read); NO_ROLE removes the principal from the use case.",
    )
    put.add_argument("name", metavar="NAME", help="the use case")
    who = put.add_mutually_exclusive_group(required=True)
    who.add_argument("--principal", metavar="NAME", help="the principal (see tokens create)")
    who.add_argument(
        "--from-file",
        metavar="FILE",
        help='a JSON list of {"principal", "role", "can_share", "notify"} (all in one transaction)',
    )
    put.add_argument("--role", type=_role, metavar="ROLE", help="OWNER, EDITOR, CONSUMER or NO_ROLE")
    put.add_argument("--can-share", action="store_true", help="it may share the use case too")
    put.add_argument("--notify", action="store_true", help="tell it of changes (through the alert webhook)")
    put.add_argument("--store", metavar="URL", help=store_help)
    put.set_defaults(access_run=run_share)


def _role(text: str) -> Role:
    try:
        return Role.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _when(ns: int | None) -> str:
    return "-" if ns is None else datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds")


def _open(url: str, *, create: bool) -> Store | int:
    """The store at ``url``, or the exit status after saying why not (2 a malformed URL, 1 unusable)."""
    try:
        parse_store_url(url)
    except StoreError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 2
    try:
        return open_store(url, create=create)
    except StoreError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    """Run a ``tokens`` subcommand; the exit status (0 done, 1 store unusable or no such token, 2 usage)."""
    command = args.tokens_command
    store = _open(args.store or default_store_url(), create=command == "create")
    if isinstance(store, int):
        return store
    try:
        if command == "create":
            try:
                replaced = any(p.name == args.name for p in list_principals(store))
                token = create_token(store, args.name)
            except ValueError as exc:
                print(f"otel-usecase: {exc}", file=sys.stderr)
                return 2
            print(
                f"token issued for principal {args.name!r} in store {store.url}: it is shown once, "
                "only its hash is stored" + ("; its previous token no longer works" if replaced else ""),
                file=sys.stderr,
            )
            print(token)
            return 0
        if command == "revoke":
            try:
                revoked = revoke_token(store, args.name)
            except ValueError as exc:
                print(f"otel-usecase: {exc}", file=sys.stderr)
                return 2
            if not revoked:
                print(
                    f"otel-usecase: principal {args.name!r} has no active token in store {store.url}",
                    file=sys.stderr,
                )
                return 1
            print(f"token of principal {args.name!r} revoked in store {store.url}")
            return 0
        principals = list_principals(store)
        if args.format == "json":
            print(f"otel-usecase: read store {store.url}", file=sys.stderr)
            records = [
                {
                    "name": p.name,
                    "active": p.active,
                    "created": _when(p.created_ns),
                    "revoked": None if p.revoked_ns is None else _when(p.revoked_ns),
                }
                for p in principals
            ]
            print(json.dumps(records, indent=2))
            return 0
        print(f"store {store.url}")
        rows = [("PRINCIPAL", "STATUS", "TOKEN ISSUED", "REVOKED")] + [
            (p.name, "active" if p.active else "revoked", _when(p.created_ns), _when(p.revoked_ns))
            for p in principals
        ]
        print(_table(rows) if principals else "no principals")
        return 0
    except StoreError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def read_roles_file(path: str) -> list[RoleAssignment]:
    """The assignments of a ``--from-file`` JSON list; ``ValueError`` (``TypeError`` for a value of the wrong
    JSON type) naming the file, the item and the rule."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--from-file {path!r} cannot be read as JSON: {exc}") from None
    if not isinstance(data, list):
        raise TypeError(
            f"--from-file {path!r} must hold a JSON list of {{principal, role, can_share, notify}}"
        )
    assignments = []
    for at, item in enumerate(data):
        where = f"--from-file {path!r} item {at}"
        if not isinstance(item, dict):
            raise TypeError(f"{where} is not an object {{principal, role, can_share, notify}}")
        unknown = sorted(set(item) - _ASSIGNMENT_KEYS)
        if unknown:
            raise ValueError(
                f"{where} has unknown key {unknown[0]!r}: use principal, role, can_share, notify"
            )
        for key in ("principal", "role"):
            if key not in item:
                raise ValueError(f"{where} has no {key!r}")
        try:
            assignments.append(
                RoleAssignment(
                    item["principal"],
                    Role.parse(item["role"]),
                    item.get("can_share", False),
                    item.get("notify", False),
                )
            )
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    for at, assignment in enumerate(assignments):
        for flag in ("can_share", "notify"):
            if not isinstance(getattr(assignment, flag), bool):
                raise TypeError(f"--from-file {path!r} item {at}: {flag} must be true or false")
    return assignments


def run_share(args: argparse.Namespace) -> int:
    """``usecases share``: 0 done, 1 store unusable, 2 usage (bad name, role, file or unknown principal)."""
    try:
        if args.from_file is not None:
            if args.role is not None or args.can_share or args.notify:
                raise ValueError(
                    "--from-file gives each principal's role: --role, --can-share, --notify go in it"
                )
            roles = read_roles_file(args.from_file)
        else:
            if args.role is None:
                raise ValueError("--principal needs --role (OWNER, EDITOR, CONSUMER or NO_ROLE)")
            roles = [RoleAssignment(args.principal, args.role, args.can_share, args.notify)]
    except (TypeError, ValueError) as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 2
    store = _open(args.store or default_store_url(), create=False)
    if isinstance(store, int):
        return store
    try:
        after = share(store, args.name, roles)
    except (TypeError, ValueError) as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"use case {args.name!r} shared in store {store.url}; its members now:")
    print(_members_table(after))
    return 0


def _members_table(found: list[Member]) -> str:
    if not found:
        return "no members"
    rows = [("PRINCIPAL", "ROLE", "CAN SHARE", "NOTIFY")] + [
        (m.principal, m.role.value, "yes" if m.can_share else "no", "yes" if m.notify else "no")
        for m in found
    ]
    return _table(rows)
