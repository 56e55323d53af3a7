"""Retention: delete the per-call rows older than a window, keep the aggregates the dashboard shows.

``otel-usecase prune --older-than 400d`` and :func:`prune`; with
``OTEL_USECASE_RETENTION_DAYS`` set, the exporter and ``serve`` do it themselves
at most once a day (:class:`RetentionKeeper`, off by default).

What goes: the ledger's rows (one per call) and the outcomes recorded before
the cutoff. What stays: the hour rollup, the run rollup and the per-run table,
which have no delete trigger, so the dashboard's totals, cost series, top lists,
runs list and histogram, and ``report`` by use case, user, experience, version
or tag over whole hours, read the same before and after. What then reads
less: ``runs show`` of a pruned run (its calls are gone), and what sums the
calls themselves (``report --by run``, ``model``, ``provider``, ``step`` or
``cost-source`` and the dashboard's top lists by model and step, a window that starts or
ends mid-hour, budgets' spend windows) covers only the calls still kept.

The cutoff is rounded down to a whole UTC hour, so a rollup cell (one hour)
is either entirely kept or entirely pruned. Deletion runs in short transactions
(:func:`.store.erasure_sql.prune_batches`), so writers are never held up long.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Final, NamedTuple

from . import audit, config
from ._log import logger, warn_rate_limited
from .store import Store, StoreError, open_store
from .store.base import TABLE
from .store.erasure_sql import Totals, claim_sql, prune_batches, totals, write
from .store.outcome_sql import OUTCOMES_TABLE

__all__ = ["DAY_NS", "Pruned", "RetentionKeeper", "add_parser", "cutoff_of", "prune", "run"]

HOUR_NS: Final = 3_600_000_000_000
DAY_NS: Final = 24 * HOUR_NS
_CHECK_EVERY_S: Final = 3600.0
"""How often a writing process asks the store whether the day's prune is due (a one-row query)."""


class Pruned(NamedTuple):
    """What a prune did: the cutoff (ns, a whole UTC hour), the calls and outcomes deleted, and the
    dashboard's totals per use case before and after (equal: the rollups keep them)."""

    cutoff_ns: int
    calls: int
    outcomes: int
    before: dict[str, Totals]
    after: dict[str, Totals]


def cutoff_of(older_than_ns: int) -> int:
    """The prune's cutoff for "older than ``older_than_ns``": that time rounded down to a whole UTC hour."""
    return older_than_ns - older_than_ns % HOUR_NS


def prune(store: Store, older_than_ns: int, *, actor: str = "admin") -> Pruned:
    """Delete the calls and outcomes that started (were recorded) before ``older_than_ns`` rounded down to
    the hour, in short transactions, then record a ``prune`` audit event. Raises
    :class:`~otel_usecase.store.StoreError` when the store cannot (what was deleted stays deleted; run it
    again to finish)."""
    cutoff = cutoff_of(older_than_ns)
    before = write(store, "reading the totals", totals)
    deleted = prune_batches(store, cutoff)
    after = write(store, "reading the totals", totals)
    result = Pruned(cutoff, deleted.get(TABLE, 0), deleted.get(OUTCOMES_TABLE, 0), before, after)
    try:
        audit.record(
            store,
            actor=actor,
            action="prune",
            use_case=None,
            target=f"older than {_iso(cutoff)}",
            detail={"cutoff_ns": cutoff, "calls": result.calls, "outcomes": result.outcomes},
        )
    except StoreError as exc:
        logger.warning("otel_usecase: prune done, but its audit event could not be written: %s", exc)
    return result


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // 1_000_000_000))


def _claim(store: Store, now_ns: int) -> bool:
    """Whether this process takes today's prune of ``store`` (no process did within the last day)."""
    return bool(
        write(
            store, "claiming the day's prune", lambda tx: tx.changed(claim_sql(), (now_ns, now_ns - DAY_NS))
        )
    )


class RetentionKeeper:
    """Runs the day's prune for a writing process (the exporter's writer, ``serve``) when
    ``OTEL_USECASE_RETENTION_DAYS`` (or ``days``) is set.

    :meth:`poke` is called after each write: when off, one attribute test; when on, one clock read,
    and once an hour a thread that asks the store (a one-row compare-and-set in its meta table) whether
    another process pruned within the day, and prunes if not. The prune never runs on the write path
    and never raises: a failure is logged and tried again the next hour.
    """

    def __init__(self, days: int | None = None) -> None:
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 1):
            raise ValueError(f"days={days!r} is not a whole number of days >= 1")
        self.days = days if days is not None else config.RETENTION_DAYS.read()
        self._next = 0.0
        self.thread: threading.Thread | None = None
        """The last prune thread started (tests wait for it)."""

    def poke(self, store: Store) -> None:
        """After a write to ``store``: start the hourly check when it is due.

        No lock (a fork must never inherit one held): two threads that both find the check due start two
        threads, and the store's compare-and-set lets one of them prune."""
        if self.days is None or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + _CHECK_EVERY_S
        thread = threading.Thread(target=self._run, args=(store,), name="otel-usecase-retention", daemon=True)
        self.thread = thread
        try:
            thread.start()
        except RuntimeError:  # interpreter shutdown: no new thread; the next process prunes
            self.thread = None

    def _run(self, store: Store) -> None:
        days = self.days
        if days is None:
            return
        try:
            now_ns = time.time_ns()
            if not _claim(store, now_ns):
                return
            result = prune(store, now_ns - days * DAY_NS, actor="retention")
            logger.info(
                "otel_usecase: retention (%d days): deleted %d calls and %d outcomes before %s; "
                "the rollups keep their totals",
                days,
                result.calls,
                result.outcomes,
                _iso(result.cutoff_ns),
            )
        except Exception as exc:  # never into the app: try again next hour
            warn_rate_limited(
                "retention:failed", "otel_usecase: retention prune failed (tried again in an hour): %s", exc
            )


# --- the command ----------------------------------------------------------------------------------


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser], store_help: str) -> None:
    """``otel-usecase prune``."""
    parser = commands.add_parser(
        "prune",
        help="delete per-call rows older than a window (the dashboard's totals stay: rollups keep them)",
    )
    parser.add_argument(
        "--older-than", required=True, metavar="AGE", help="400d, 52w, 12h or a date (2025-01-01, UTC)"
    )
    parser.add_argument("--format", default="table", choices=("table", "json"))
    parser.add_argument("--store", metavar="URL", help=store_help)


def run(args: argparse.Namespace) -> int:
    """``otel-usecase prune``: 0 done, 1 the store cannot be used, 2 a bad option or URL."""
    from .report.queries import ReportError, parse_since, safe_text
    from .store.base import default_store_url, parse_store_url

    url = args.store or default_store_url()
    try:
        parse_store_url(url)
        older_than = parse_since(args.older_than)
    except StoreError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 2
    except ReportError:
        print(
            f"otel-usecase: --older-than {args.older_than!r} is neither an age (400d, 52w, 12h) "
            "nor a date (2025-01-01)",
            file=sys.stderr,
        )
        return 2
    assert older_than is not None
    try:
        open_store(url, create=False).close()  # a mistyped URL is an error, never a new empty store
        store = open_store(url)
        try:
            result = prune(store, older_than)
        finally:
            store.close()
    except StoreError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 1
    print(format_pruned(result, safe_text(store.url, limit=1000), args.format))
    return 0


_READS_LESS: Final = (
    "what now reads less for that time: `runs show` of a pruned run (its calls are gone), and what sums the "
    "calls themselves: `report --by run|model|provider|step|cost-source` and the dashboard's top lists by model and step, "
    "windows starting or ending mid-hour, and budget spend windows"
)


def format_pruned(result: Pruned, store_url: str, fmt: str) -> str:
    """What ``prune`` prints: the cutoff, what was deleted, the totals before and after, what reads less."""
    from .erasure import totals_lines, unchanged

    same = unchanged(result.before, result.after)
    if fmt == "json":
        return json.dumps(
            {
                "store": store_url,
                "cutoff": _iso(result.cutoff_ns),
                "cutoff_ns": result.cutoff_ns,
                "calls_deleted": result.calls,
                "outcomes_deleted": result.outcomes,
                "totals_unchanged": same,
                "before": {k: v._asdict() for k, v in result.before.items()},
                "after": {k: v._asdict() for k, v in result.after.items()},
                "reads_less": _READS_LESS.replace("`", ""),
            },
            indent=2,
        )
    return "\n".join(
        [
            f"store {store_url}",
            (
                f"deleted {result.calls} calls and {result.outcomes} outcomes that started before "
                f"{_iso(result.cutoff_ns)} (the cutoff, rounded down to the hour)"
            ),
            "the rollups keep their totals: the dashboard's totals, series, top lists and runs "
            + ("are unchanged" if same else "CHANGED (calls were written meanwhile?)"),
            *totals_lines(result.before, result.after),
            _READS_LESS.replace("`", ""),
        ]
    )
