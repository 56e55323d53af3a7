"""``otel-usecase usecases``, ``experience-types`` and ``audit``: definitions and the audit log from a shell.

The CLI has direct store access, so it acts as the administrator (actor
``admin`` in the audit log). ``create`` and ``update`` write (and create the
store if missing, like ``budgets set``); ``list``, ``show`` and ``audit`` never
create one: a store that does not exist is an error naming it. Exit status: 0
done, 1 the store cannot be used or the name is not in it, 2 a usage error (a bad
name, description or option) naming the value and the rule.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..store import StoreError, default_store_url, open_store, parse_store_url

if TYPE_CHECKING:
    from ..audit import AuditEvent
    from ..store import Store
    from .model import ExperienceTypeDetail, ExperienceTypeInfo, Facets, UseCaseDetail, UseCaseInfo

__all__ = ["add_arguments", "run_audit", "run_experience_types", "run_usecases"]


def add_arguments(commands: Any, store_help: str) -> None:
    """Add ``usecases``, ``experience-types`` and ``audit`` to the ``otel-usecase`` parser."""
    usecases = commands.add_parser(
        "usecases", help="use case definitions: description, owner, what they hold"
    )
    sub = usecases.add_subparsers(dest="usecases_command", required=True, metavar="COMMAND")
    create = sub.add_parser("create", help="define a use case (a description, an owner)")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--description", metavar="TEXT", help="what it is for")
    create.add_argument("--owner", metavar="PRINCIPAL", help="the principal who owns it")
    update = sub.add_parser("update", help="change a use case's description or owner ('' removes)")
    update.add_argument("name", metavar="NAME")
    update.add_argument("--description", metavar="TEXT")
    update.add_argument("--owner", metavar="PRINCIPAL")
    listing = sub.add_parser("list", help="defined use cases and those only seen in calls")
    show = sub.add_parser(
        "show", help="a use case's runs, experiences, users, models, versions, budgets and members"
    )
    show.add_argument("name", metavar="NAME")
    show.add_argument(
        "--limit", metavar="N", type=int, default=10, help="values listed per column (default 10)"
    )
    from ..access.cli import add_share_parser

    add_share_parser(sub, store_help)  # usecases share (roles: access/)
    for parser in (create, update, listing, show):
        if parser is listing or parser is show:
            parser.add_argument("--format", default="table", choices=("table", "json"))
        parser.add_argument("--store", metavar="URL", help=store_help)

    types = commands.add_parser("experience-types", help="experience type definitions (experience names)")
    sub = types.add_subparsers(dest="experience_types_command", required=True, metavar="COMMAND")
    create = sub.add_parser("create", help="define an experience type (a description)")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--description", metavar="TEXT")
    update = sub.add_parser("update", help="change an experience type's description ('' removes)")
    update.add_argument("name", metavar="NAME")
    update.add_argument("--description", metavar="TEXT")
    listing = sub.add_parser("list", help="defined experience types and experience names seen in calls")
    show = sub.add_parser("show", help="an experience type's runs, calls, cost, use cases and models")
    show.add_argument("name", metavar="NAME")
    show.add_argument(
        "--limit", metavar="N", type=int, default=10, help="values listed per column (default 10)"
    )
    from ..access.cli import add_share_parser

    add_share_parser(sub, store_help)  # usecases share (roles: access/)
    for parser in (create, update, listing, show):
        if parser is listing or parser is show:
            parser.add_argument("--format", default="table", choices=("table", "json"))
        parser.add_argument("--store", metavar="URL", help=store_help)

    log = commands.add_parser(
        "audit", help="who shared, revoked, forgot, pruned or changed what, newest first"
    )
    log.add_argument("--use-case", metavar="NAME", help="only this use case's events")
    log.add_argument("--since", metavar="WHEN", help="24h, 7d, 30m or a date such as 2026-01-01")
    log.add_argument("--limit", metavar="N", type=int, default=100, help="at most N events (default 100)")
    log.add_argument("--format", default="table", choices=("table", "json"))
    log.add_argument("--store", metavar="URL", help=store_help)


# --- running -------------------------------------------------------------------------------------


def _shown(url: str) -> str:
    from ..report.text import safe_text
    from ..store.base import redact_url

    return safe_text(redact_url(url), limit=1000)


def _with_store(args: argparse.Namespace, write: bool, work: Callable[[Store, str], int]) -> int:
    """Open the store (``write``: create it if missing), run ``work``; map errors to exit statuses."""
    url = args.store or default_store_url()
    try:
        parse_store_url(url)
    except StoreError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 2
    try:
        store = open_store(url, create=write)
    except StoreError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 1
    try:
        return work(store, url)
    except (ValueError, TypeError) as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 2
    except (LookupError, StoreError) as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


def run_usecases(args: argparse.Namespace) -> int:
    """Run a ``usecases`` subcommand; the exit status."""
    from . import api

    command = args.usecases_command

    def work(store: Store, url: str) -> int:
        if command == "create":
            info = api.create(store, args.name, args.description, args.owner)
            print(f"use case {info.name!r} defined in store {_shown(url)}")
            return 0
        if command == "update":
            if args.description is None and args.owner is None:
                raise ValueError("usecases update: give --description or --owner (or both)")
            info = api.update(store, args.name, description=args.description, owner=args.owner)
            print(f"use case {info.name!r} updated in store {_shown(url)}")
            return 0
        if command == "list":
            return _print_list(api.list_use_cases(store), url, args.format, with_owner=True)
        return _print_use_case(api.show(store, args.name, limit=_limit(args.limit)), url, args.format)

    return _with_store(args, command in ("create", "update"), work)


def run_experience_types(args: argparse.Namespace) -> int:
    """Run an ``experience-types`` subcommand; the exit status."""
    from . import api

    command = args.experience_types_command

    def work(store: Store, url: str) -> int:
        if command == "create":
            info = api.create_experience_type(store, args.name, args.description)
            print(f"experience type {info.name!r} defined in store {_shown(url)}")
            return 0
        if command == "update":
            if args.description is None:
                raise ValueError("experience-types update: give --description")
            info = api.update_experience_type(store, args.name, description=args.description)
            print(f"experience type {info.name!r} updated in store {_shown(url)}")
            return 0
        if command == "list":
            return _print_list(api.list_experience_types(store), url, args.format, with_owner=False)
        detail = api.show_experience_type(store, args.name, limit=_limit(args.limit))
        return _print_experience_type(detail, url, args.format)

    return _with_store(args, command in ("create", "update"), work)


def run_audit(args: argparse.Namespace) -> int:
    """Run ``audit``; the exit status."""
    from ..audit import audit_log
    from ..report.queries import parse_since
    from ..scope.validation import check_name

    def work(store: Store, url: str) -> int:
        if args.use_case is not None:
            check_name("--use-case", args.use_case)
        since = parse_since(args.since)
        events = audit_log(store, use_case=args.use_case, since_ns=since, limit=_limit(args.limit))
        if args.format == "json":
            print(f"otel-usecase: read store {_shown(url)}", file=sys.stderr)
            print(json.dumps([_event_record(e) for e in events], indent=2, ensure_ascii=False))
            return 0
        print(f"store {_shown(url)}")
        print(_audit_table(events))
        return 0

    return _with_store(args, False, work)


def _limit(value: int) -> int:
    if value < 0:
        raise ValueError(f"--limit {value} must be 0 or more")
    return value


# --- output ----------------------------------------------------------------------------------------


def _time(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds")


def _info_record(info: UseCaseInfo | ExperienceTypeInfo) -> dict[str, Any]:
    record: dict[str, Any] = info._asdict()
    record["created"] = _time(info.created_ns)
    record["updated"] = _time(info.updated_ns)
    return record


def _facets_record(facets: Facets) -> dict[str, Any]:
    return {"rows": [f._asdict() for f in facets.rows], "more": facets.more}


def _member_record(member: Any) -> dict[str, Any]:
    as_dict = getattr(member, "_asdict", None)
    record: dict[str, Any] = dict(as_dict()) if as_dict is not None else dict(vars(member))
    role = record.get("role")
    if role is not None and hasattr(role, "name"):
        record["role"] = role.name
    return record


def _event_record(event: AuditEvent) -> dict[str, Any]:
    return {**event._asdict(), "at": _time(event.at_ns)}


def _print_list(
    infos: Sequence[UseCaseInfo | ExperienceTypeInfo], url: str, fmt: str, *, with_owner: bool
) -> int:
    from ..report.text import aligned, safe_text

    if fmt == "json":
        print(f"otel-usecase: read store {_shown(url)}", file=sys.stderr)
        print(json.dumps([_info_record(i) for i in infos], indent=2, ensure_ascii=False))
        return 0
    print(f"store {_shown(url)}")
    if not infos:
        print("(none defined or seen in calls)")
        return 0
    header = ["name", "defined", *(["owner"] if with_owner else []), "description"]
    body = [
        [
            safe_text(i.name),
            "yes" if i.defined else "seen in calls",
            *([safe_text(getattr(i, "owner", None))] if with_owner else []),
            safe_text(i.description),
        ]
        for i in infos
    ]
    print("\n".join(aligned(header, body, numeric_from=len(header))))
    return 0


def _facet_lines(title: str, facets: Facets) -> list[str]:
    from ..report.text import aligned, cost_decimals, money, safe_text

    if not facets.rows:
        return [f"{title}: none"]
    columns = list(facets.rows[0].key)
    decimals = cost_decimals(f.cost_usd for f in facets.rows)
    body = [
        [
            *(safe_text(f.key[c]) for c in columns),
            f"{f.runs:,}",
            f"{f.calls:,}",
            money(f.cost_usd, decimals, lower_bound=not f.cost_complete),
        ]
        for f in facets.rows
    ]
    lines = [f"{title} (most expensive first):"]
    lines += ["  " + line for line in aligned([*columns, "runs", "calls", "cost"], body, len(columns))]
    if facets.more:
        lines.append(f"  ... more (--limit N shows more than {len(facets.rows)})")
    return lines


def _head_lines(
    info: UseCaseInfo | ExperienceTypeInfo, noun: str, runs: int, calls: int, cost: Any
) -> list[str]:
    from ..report.text import safe_text

    lines = [f"{noun} {safe_text(info.name)}" + ("" if info.defined else " (seen in calls, not defined)")]
    lines.append(f"description: {safe_text(info.description, limit=2000)}")
    owner = getattr(info, "owner", False)
    if owner is not False:
        lines.append(f"owner: {safe_text(owner)}")
    if info.defined:
        lines.append(f"defined: {_time(info.created_ns)}  updated: {_time(info.updated_ns)}")
    lines.append(f"runs: {runs:,}  calls: {calls:,}  cost: {cost if calls else '- (no calls)'}")
    return lines


def _print_use_case(detail: UseCaseDetail, url: str, fmt: str) -> int:
    from ..report.text import aligned, money, safe_text

    if fmt == "json":
        print(f"otel-usecase: read store {_shown(url)}", file=sys.stderr)
        record = {
            "use_case": _info_record(detail.info),
            "runs": detail.runs,
            "calls": detail.calls,
            "cost_usd": detail.cost_usd,
            "cost_complete": detail.cost_complete,
            "experiences": _facets_record(detail.experiences),
            "users": _facets_record(detail.users),
            "models": _facets_record(detail.models),
            "versions": _facets_record(detail.versions),
            "budgets": [json.loads(b.to_json()) for b in detail.budgets],
            "members": [_member_record(m) for m in detail.members],
        }
        print(json.dumps(record, indent=2, ensure_ascii=False, default=str))
        return 0
    print(f"store {_shown(url)}")
    cost = money(detail.cost_usd, lower_bound=not detail.cost_complete)
    lines = _head_lines(detail.info, "use case", detail.runs, detail.calls, cost)
    lines += _facet_lines("experiences", detail.experiences)
    lines += _facet_lines("users", detail.users)
    lines += _facet_lines("models", detail.models)
    lines += _facet_lines("versions", detail.versions)
    if detail.budgets:
        lines.append("budgets:")
        body = [[safe_text(b.name), money(b.amount_usd), b.window, b.mode] for b in detail.budgets]
        lines += ["  " + line for line in aligned(["budget", "amount", "window", "mode"], body, 1, 2)]
    else:
        lines.append("budgets: none")
    if detail.members:
        lines.append("members:")
        records = [_member_record(m) for m in detail.members]
        body = [
            [
                safe_text(r.get("principal")),
                safe_text(r.get("role")),
                "yes" if r.get("can_share") else "no",
                "yes" if r.get("notify") else "no",
            ]
            for r in records
        ]
        lines += ["  " + line for line in aligned(["principal", "role", "can share", "notify"], body, 4)]
    else:
        lines.append("members: none")
    print("\n".join(lines))
    return 0


def _print_experience_type(detail: ExperienceTypeDetail, url: str, fmt: str) -> int:
    from ..report.text import money

    if fmt == "json":
        print(f"otel-usecase: read store {_shown(url)}", file=sys.stderr)
        record = {
            "experience_type": _info_record(detail.info),
            "runs": detail.runs,
            "calls": detail.calls,
            "cost_usd": detail.cost_usd,
            "cost_complete": detail.cost_complete,
            "use_cases": _facets_record(detail.use_cases),
            "models": _facets_record(detail.models),
        }
        print(json.dumps(record, indent=2, ensure_ascii=False, default=str))
        return 0
    print(f"store {_shown(url)}")
    cost = money(detail.cost_usd, lower_bound=not detail.cost_complete)
    lines = _head_lines(detail.info, "experience type", detail.runs, detail.calls, cost)
    lines += _facet_lines("use cases", detail.use_cases)
    lines += _facet_lines("models", detail.models)
    print("\n".join(lines))
    return 0


def _audit_table(events: Sequence[AuditEvent]) -> str:
    from ..report.text import aligned, safe_text

    if not events:
        return "(no events)"
    body = [
        [
            str(e.id),
            _time(e.at_ns) or "",
            safe_text(e.actor),
            safe_text(e.action),
            safe_text(e.use_case),
            safe_text(e.target),
            safe_text(json.dumps(e.detail, ensure_ascii=False, sort_keys=True), limit=120),
        ]
        for e in events
    ]
    return "\n".join(
        aligned(["id", "at (UTC)", "actor", "action", "use case", "target", "detail"], body, 0, 1)
    )
