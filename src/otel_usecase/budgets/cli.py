"""``otel-usecase budgets set|list|delete|status``: manage the store's budgets from a shell.

``set`` writes (and creates the store if missing, like an exporter); ``list``,
``delete`` and ``status`` never create one: a store that does not exist is an
error naming it (exit 1). A bad budget is a usage error (exit 2) naming the value
and the rule. Every command says which store it used (stderr for JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..store import StoreError, default_store_url, parse_store_url
from .model import DEFAULT_THRESHOLDS, MODES, WINDOWS

__all__ = ["add_arguments", "run"]


def add_arguments(commands: Any, store_help: str) -> None:
    """Add the ``budgets`` command and its subcommands to the ``otel-usecase`` parser."""
    budgets = commands.add_parser("budgets", help="spend limits per use case (and user, experience, version)")
    sub = budgets.add_subparsers(dest="budgets_command", required=True, metavar="COMMAND")
    put = sub.add_parser("set", help="create or replace a budget")
    put.add_argument("name", metavar="NAME")
    put.add_argument("--use-case", required=True, metavar="NAME", help="the use case it limits")
    put.add_argument("--amount", required=True, type=float, metavar="USD", help="US dollars per window")
    put.add_argument("--window", default="day", choices=WINDOWS, help="default day")
    put.add_argument(
        "--mode", default="warn", choices=MODES, help="warn (log and alert) or block (default warn)"
    )
    put.add_argument(
        "--timezone", default="UTC", metavar="ZONE", help="IANA zone of the window (default UTC)"
    )
    put.add_argument(
        "--thresholds",
        default=",".join(map(str, DEFAULT_THRESHOLDS)),
        metavar="P,P",
        help="alert at these percents of the amount (default 50,80,100)",
    )
    put.add_argument("--user", metavar="ID", help="only this user's calls")
    put.add_argument("--experience", metavar="NAME", help="only this experience's calls")
    put.add_argument("--version", metavar="V", help="only this use case version's calls")
    put.add_argument(
        "--tag",
        metavar="KEY=VALUE",
        action="append",
        dest="tags",
        help="only calls with this tag (repeatable: every one must match)",
    )
    put.add_argument("--webhook", metavar="URL", help="where this budget's alerts go")
    put.add_argument("--store", metavar="URL", help=store_help)
    listing = sub.add_parser("list", help="the budgets in the store")
    listing.add_argument("--format", default="table", choices=("table", "json"))
    listing.add_argument("--store", metavar="URL", help=store_help)
    delete = sub.add_parser("delete", help="delete a budget")
    delete.add_argument("name", metavar="NAME")
    delete.add_argument("--store", metavar="URL", help=store_help)
    status = sub.add_parser("status", help="each budget's spend, limit, remaining and window end")
    status.add_argument("--format", default="table", choices=("table", "json"))
    status.add_argument("--store", metavar="URL", help=store_help)


def _thresholds(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--thresholds {text!r} is not a comma-separated list of whole percents") from None


def _tags(pairs: list[str] | None) -> tuple[tuple[str, str], ...]:
    """``--tag KEY=VALUE`` options as pairs (the budget checks the key and the value)."""
    parsed = []
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--tag {pair!r} is not KEY=VALUE")
        parsed.append((key, value))
    return tuple(parsed)


def _when(ns: int | None, zone: str) -> str:
    if ns is None:
        return "-"
    from .windows import zone as tz

    return datetime.fromtimestamp(ns / 1e9, tz(zone)).isoformat(timespec="seconds")


def _record(budget: Any) -> dict[str, Any]:
    values: dict[str, Any] = json.loads(budget.to_json())
    return values


def status_records(statuses: Sequence[Any]) -> list[dict[str, Any]]:
    """``budgets status --format json``'s records (the dashboard's ``/api/budgets`` too)."""
    return [
        {
            "budget": _record(s.budget),
            "window": s.budget.window,
            "window_key": s.window_key,
            "window_start": _when(s.window_start_ns, s.budget.timezone),
            "window_end": _when(s.window_end_ns, s.budget.timezone),
            "spent_usd": s.spent_usd,
            "limit_usd": s.limit_usd,
            "remaining_usd": s.remaining_usd,
            "unpriced_calls": s.unpriced_calls,
            "spent_is_lower_bound": s.unpriced_calls > 0,
        }
        for s in statuses
    ]


def run(args: argparse.Namespace) -> int:
    """Run a ``budgets`` subcommand; the exit status (0 done, 1 store unusable or no such budget, 2 usage)."""
    from . import api
    from .model import Budget

    url = args.store or default_store_url()
    try:
        parse_store_url(url)
    except StoreError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 2
    command = args.budgets_command
    try:
        if command == "set":
            try:
                budget = Budget(
                    name=args.name,
                    use_case=args.use_case,
                    amount_usd=args.amount,
                    window=args.window,
                    mode=args.mode,
                    timezone=args.timezone,
                    thresholds=tuple(_thresholds(args.thresholds)),
                    user_id=args.user,
                    experience_name=args.experience,
                    version=args.version,
                    webhook=args.webhook,
                    tags=_tags(args.tags),
                )
            except ValueError as exc:
                print(f"otel-usecase: {exc}", file=sys.stderr)
                return 2
            api.set_budget(budget, store=url)
            print(f"budget {budget.name!r} set in store {_shown(url)}")
            return 0
        if command == "delete":
            if not api.delete_budget(args.name, store=url):
                print(f"otel-usecase: no budget {args.name!r} in store {_shown(url)}", file=sys.stderr)
                return 1
            print(f"budget {args.name!r} deleted from store {_shown(url)}")
            return 0
        if command == "list":
            budgets = api.list_budgets(store=url)
            if args.format == "json":
                print(f"otel-usecase: read store {_shown(url)}", file=sys.stderr)
                print(json.dumps([_record(b) for b in budgets], indent=2))
                return 0
            print(f"store {_shown(url)}")
            rows: list[tuple[str, ...]] = [
                (
                    b.name,
                    " ".join(f"{k}={v}" for k, v in b.selector().items()),
                    f"${b.amount_usd:.6g}",
                    b.window,
                    b.timezone,
                    b.mode,
                    ",".join(map(str, b.thresholds)),
                )
                for b in budgets
            ]
            print(_table(("budget", "selector", "amount", "window", "zone", "mode", "thresholds"), rows))
            return 0
        statuses = api.budget_status(store=url)
        if args.format == "json":
            print(f"otel-usecase: read store {_shown(url)}", file=sys.stderr)
            print(json.dumps(status_records(statuses), indent=2))
            return 0
        print(f"store {_shown(url)}")
        status_rows: list[tuple[str, ...]] = [
            (
                s.budget.name,
                s.budget.mode,
                s.window_key,
                f"${s.spent_usd:.6f}" + ("+" if s.unpriced_calls else ""),
                f"${s.limit_usd:.6f}",
                f"${s.remaining_usd:.6f}",
                f"{100 * s.spent_usd / s.limit_usd:.1f}%",
                _when(s.window_end_ns, s.budget.timezone),
                str(s.unpriced_calls),
            )
            for s in statuses
        ]
        print(
            _table(
                ("budget", "mode", "window", "spent", "limit", "remaining", "used", "window end", "unpriced"),
                status_rows,
            )
        )
        if any(s.unpriced_calls for s in statuses):
            print("+ spent is a lower bound: the window has calls whose cost is unknown or partial")
        return 0
    except StoreError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 1


def _shown(url: str) -> str:
    from ..report.queries import safe_text
    from ..store.base import redact_url

    return safe_text(redact_url(url), limit=1000)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    from ..report.queries import safe_text

    cells = [header, *[tuple(safe_text(c) for c in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in cells]
    if not rows:
        lines.append("(no budgets)")
    return "\n".join(lines)
