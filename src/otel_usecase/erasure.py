"""Forget a user, an experience or a run: its id replaced by a tombstone everywhere the store holds it.

``otel-usecase forget --user ID`` (``--experience ID``, ``--run ID``) and
:func:`forget_user`, :func:`forget_experience`, :func:`forget_run`. Every stored
form of the id (:func:`stored_forms`: the id as given, and as scopes store it:
hashed when ``OTEL_USECASE_USER_ID_HMAC_KEY`` is set, an experience id as its
GUID) is replaced by its own ``forgotten:<32 random hex digits>``: drawn at
random, not derived from the id, so nothing in the store links it back to the
person, and the same id forgotten twice (calls written after the first forget)
gets another tombstone.

Nothing is deleted: every call keeps its tokens and cost, so use-case and
finance totals do not change (the output prints them before and after). The
ledger's ``UPDATE`` moves the calls between the rollups' cells through the
rollup triggers, in the same transaction as the rest (see
:mod:`otel_usecase.store.erasure_sql` for the tables and why it is exact while
exporters write). Calls written after the forget carry whatever the application
sends: stop sending the id first.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from typing import Final, NamedTuple

from . import audit
from ._log import logger
from .store import Store, StoreError, open_store
from .store.erasure_sql import EXPERIENCE, KINDS, RUN, USER, Erased, Totals, write
from .store.erasure_sql import forget as forget_sql

__all__ = [
    "TOMBSTONE_PREFIX",
    "Forgotten",
    "add_parser",
    "forget",
    "forget_experience",
    "forget_run",
    "forget_user",
    "run",
    "stored_forms",
    "totals_lines",
    "unchanged",
]

TOMBSTONE_PREFIX: Final = "forgotten:"


class Forgotten(NamedTuple):
    """What a forget did: the kind of id, one tombstone per stored form found, the rows changed per table,
    and the dashboard's totals per use case before and after (equal: nothing was deleted)."""

    kind: str
    tombstones: tuple[str, ...]
    rows: dict[str, int]
    before: dict[str, Totals]
    after: dict[str, Totals]

    @property
    def unchanged(self) -> bool:
        """Whether every use case's calls, runs and cost are what they were (cost to rounding)."""
        return unchanged(self.before, self.after)


def unchanged(before: dict[str, Totals], after: dict[str, Totals]) -> bool:
    """Whether every use case's calls, runs and cost are the same in ``after`` as in ``before`` (cost to
    floating-point rounding: the rollups add and take out the same figures in another order)."""
    return set(before) == set(after) and all(_same(before[name], after[name]) for name in before)


def _same(a: Totals, b: Totals) -> bool:
    if (a.calls, a.runs) != (b.calls, b.runs) or (a.cost_usd is None) != (b.cost_usd is None):
        return False
    return (
        a.cost_usd is None
        or b.cost_usd is None
        or abs(a.cost_usd - b.cost_usd) <= 1e-9 * max(1.0, abs(a.cost_usd))
    )


def stored_forms(kind: str, given: str) -> tuple[str, ...]:
    """The values under which id ``given`` of ``kind`` can be stored: as given (the stored form itself, or
    an id written before hashing was turned on) and as a scope stores it now. Raises ``ValueError`` for an
    unknown kind or an empty id."""
    from .scope.tracking import stored_user_id
    from .scope.validation import experience_guid, normalised_id

    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {', '.join(KINDS)}")
    if not isinstance(given, str) or not given:
        raise ValueError(f"{kind} id {given!r} is empty: give the id to forget")
    forms = [given]
    if kind == USER:
        stored = stored_user_id(given)
        if stored is not None:
            forms.append(str(stored))
    else:
        forms.append(normalised_id(given))
        if kind == EXPERIENCE:
            forms.append(experience_guid(forms[-1]))
    return tuple(dict.fromkeys(forms))


def forget(store: Store, kind: str, given: str, *, actor: str = "admin") -> Forgotten:
    """Replace id ``given`` of ``kind`` (``user``, ``experience``, ``run``) by tombstones in every table, in
    one transaction, then record a ``forget`` audit event (naming the tombstones, never the id). Raises
    ``ValueError`` for a bad kind or id, :class:`~otel_usecase.store.StoreError` when the store cannot do it
    (then nothing changed)."""
    tombstones = {form: TOMBSTONE_PREFIX + secrets.token_hex(16) for form in stored_forms(kind, given)}
    erased: Erased = write(store, f"forgetting a {kind} id", lambda tx: forget_sql(tx, kind, tombstones))
    used = erased.tombstones
    result = Forgotten(kind, used, erased.rows, erased.before, erased.after)
    try:
        audit.record(
            store,
            actor=actor,
            action="forget",
            use_case=None,
            target=", ".join(used) or "-",
            detail={"kind": kind, "tombstones": list(used), "rows": dict(erased.rows)},
        )
    except StoreError as exc:  # the forget is committed: say so rather than fail it
        logger.warning("otel_usecase: forget done, but its audit event could not be written: %s", exc)
    return result


def forget_user(store: Store, user_id: str, *, actor: str = "admin") -> Forgotten:
    """Forget a user: the id as the application gives it (hashed as scopes hash it), or as stored."""
    return forget(store, USER, user_id, actor=actor)


def forget_experience(store: Store, experience_id: str, *, actor: str = "admin") -> Forgotten:
    """Forget an experience: the id as the application gives it (stored as its GUID), or as stored."""
    return forget(store, EXPERIENCE, experience_id, actor=actor)


def forget_run(store: Store, run_id: str, *, actor: str = "admin") -> Forgotten:
    """Forget a run (its id, in every use case that has it)."""
    return forget(store, RUN, run_id, actor=actor)


# --- the command ----------------------------------------------------------------------------------


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser], store_help: str) -> None:
    """``otel-usecase forget``."""
    parser = commands.add_parser(
        "forget",
        help="replace a user's, experience's or run's id by a tombstone everywhere (totals do not change)",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--user", metavar="ID", help="a user id as the app gives it (hashed as scopes hash it)"
    )
    which.add_argument("--experience", metavar="ID", help="an experience id as the app gives it")
    which.add_argument("--run", metavar="ID", help="a run id")
    parser.add_argument("--format", default="table", choices=("table", "json"))
    parser.add_argument("--store", metavar="URL", help=store_help)


def run(args: argparse.Namespace) -> int:
    """``otel-usecase forget``: 0 done (also when nothing held the id), 1 the store cannot be used, 2 bad id."""
    from .report.queries import safe_text
    from .store.base import default_store_url, parse_store_url

    kind, given = next((k, getattr(args, k)) for k in KINDS if getattr(args, k) is not None)
    url = args.store or default_store_url()
    try:
        parse_store_url(url)
        stored_forms(kind, given)
    except (StoreError, ValueError) as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 2
    try:
        open_store(url, create=False).close()  # a mistyped URL is an error, never a new empty store
        store = open_store(url)
        try:
            result = forget(store, kind, given)
        finally:
            store.close()
    except StoreError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 1
    print(format_forgotten(result, safe_text(store.url, limit=1000), args.format))
    return 0


def format_forgotten(result: Forgotten, store_url: str, fmt: str) -> str:
    """What ``forget`` prints: the tombstones, the rows changed per table, the totals before and after."""
    if fmt == "json":
        return json.dumps(
            {
                "store": store_url,
                "kind": result.kind,
                "tombstones": list(result.tombstones),
                "rows": result.rows,
                "totals_unchanged": result.unchanged,
                "before": {k: v._asdict() for k, v in result.before.items()},
                "after": {k: v._asdict() for k, v in result.after.items()},
            },
            indent=2,
        )
    lines = [f"store {store_url}"]
    if not result.tombstones:
        lines.append(f"no row held this {result.kind} id: nothing changed (check the id)")
        return "\n".join(lines)
    lines.append(
        f"{result.kind} id replaced by {', '.join(result.tombstones)} (random: it cannot be linked back)"
    )
    lines += [f"  {table:<28} {count:>10} rows" for table, count in result.rows.items()]
    lines.append(
        "nothing was deleted: use-case totals "
        + ("are unchanged" if result.unchanged else "CHANGED (calls were written meanwhile?)")
    )
    lines += totals_lines(result.before, result.after)
    return "\n".join(lines)


def totals_lines(before: dict[str, Totals], after: dict[str, Totals]) -> list[str]:
    """The totals per use case before and after, as the table ``forget`` and ``prune`` print."""
    lines = [f"  {'use case':<24} {'calls before':>12} {'after':>10} {'cost before':>14} {'after':>14}"]
    for name in sorted(set(before) | set(after)):
        b, a = before.get(name), after.get(name)
        lines.append(f"  {name:<24} {_n(b, 'calls'):>12} {_n(a, 'calls'):>10} {_cost(b):>14} {_cost(a):>14}")
    return lines


def _n(totals: Totals | None, field: str) -> str:
    return "-" if totals is None else str(getattr(totals, field))


def _cost(totals: Totals | None) -> str:
    return "-" if totals is None or totals.cost_usd is None else f"${totals.cost_usd:.6f}"
