"""Re-pricing stored calls: ``otel-usecase reprice``.

Why this exists: prices change and models appear after calls were recorded (a
model unknown on the day is stored ``unpriced``; an overrides file gets a
negotiated rate). The ledger keeps every token count by class, the model, the
provider, the start time and the price conditions applied (``price_context``),
so a call's price can be computed again from the row alone, with the installed
genai-prices and the overrides file, exactly as the exporter would price it now.

What it changes and what it never touches:

* Only the price columns (``store.base.PRICE_COLUMNS``): ``cost_usd``,
  ``status``, ``cost_source``, ``price_source``, ``price_context``,
  ``unpriced_reason``, ``computed_cost_usd``. Token counts, names, ids and times
  are what the span said and stay as they are.
* A provider-billed call (``cost_source`` ``provider``) keeps its ``cost_usd``,
  status and source: only our own price beside it (``computed_cost_usd``) is
  refreshed.
* Idempotent: a call whose new price columns equal the stored ones is not
  written, so a second run changes nothing.
* Safe while exporters write: calls are read in key order, a batch at a time,
  and each update applies only while the row is still exactly the one read
  (``Store.reprice``). A row a writer replaced meanwhile (a more complete copy
  of the call) keeps the writer's copy and is counted as skipped.
* ``--dry-run`` computes and prints the same summary and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import Final, TypeVar

from ..store import open_store
from ..store.base import (
    PRICE_COLUMNS,
    RepriceFilter,
    Repricing,
    Store,
    StoreError,
    StoreUnavailable,
    calls_to_reprice,
    parse_store_url,
)
from .call import (
    COST_SOURCE_PROVIDER,
    STATUS_PARTIAL,
    Call,
)
from .calls import status_of
from .conditions import parse_context
from .prices import PriceBook
from .usage import LLMUsage

__all__ = ["BATCH_SIZE", "RepriceSummary", "format_summary", "reprice", "repriced", "run"]

BATCH_SIZE: Final = 500
"""Calls read and written per transaction: short enough that an exporter's write waits
milliseconds behind one, large enough that a million calls take a few thousand round trips."""

_ATTEMPTS: Final = 5
"""Tries of one batch's read or write while the store is unavailable (locked, restarting)."""
_BACKOFF_S: Final = 0.2

_T = TypeVar("_T")


def _when(start_ns: int) -> datetime | None:
    """The call's start, to the second (as the exporter prices it); None for an unknown start."""
    if not start_ns:
        return None
    return datetime.fromtimestamp(start_ns // 1_000_000_000, tz=UTC)


def repriced(call: Call, prices: PriceBook) -> Call:
    """``call`` with its price columns computed again from its stored usage, as the exporter would now.

    A provider-billed call keeps its cost, status and sources; only
    ``computed_cost_usd`` (our price beside the billed figure) is refreshed.
    """
    usage = LLMUsage(
        call.model,
        call.provider,
        tokens=call.tokens,
        operation=call.operation,
        complete=call.status != STATUS_PARTIAL,
    )
    quote = prices.quote(usage, when=_when(call.start_ns), context=parse_context(call.price_context))
    if call.cost_source == COST_SOURCE_PROVIDER:
        return call._replace(computed_cost_usd=quote.cost_usd)
    return call._replace(
        cost_usd=quote.cost_usd,
        status=status_of(usage, quote),
        cost_source=quote.source,
        price_source=quote.detail,
        price_context=quote.context,
        unpriced_reason=quote.reason,
        computed_cost_usd=quote.cost_usd,
    )


_price_columns: Final = attrgetter(*PRICE_COLUMNS)
"""The price columns of a call, as a tuple (to tell whether re-pricing changed it)."""


@dataclass
class RepriceSummary:
    """What a re-pricing run did (or, with ``dry_run``, would do)."""

    dry_run: bool
    examined: int = 0
    """Calls read and priced again."""
    changed: int = 0
    """Calls whose price columns changed (written, or with ``dry_run`` to be written)."""
    skipped: int = 0
    """Calls a writer replaced between our read and our write: left as the writer stored them."""
    old_total_usd: float = 0.0
    """Sum of ``cost_usd`` of the examined calls as read (unpriced calls count 0)."""
    new_total_usd: float = 0.0
    """The same sum after re-pricing (a skipped call counts at its value as read)."""
    status_changes: Counter[str] = field(default_factory=Counter)
    """``"unpriced -> priced"`` -> calls, for the changed calls whose status changed."""
    unpriced_after: Counter[str] = field(default_factory=Counter)
    """``unpriced_reason`` -> calls, for the examined calls left without a price."""


def _retrying(what: Callable[..., _T], *args: object) -> _T:
    """``what(*args)``, tried again with a growing pause while the store is unavailable (locked by a long write)."""
    for attempt in range(_ATTEMPTS - 1):
        try:
            return what(*args)
        except StoreUnavailable:
            time.sleep(_BACKOFF_S * 2**attempt)
    return what(*args)


def reprice(
    store: Store,
    prices: PriceBook,
    filters: RepriceFilter = RepriceFilter(),  # noqa: B008 - an immutable NamedTuple
    *,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
) -> RepriceSummary:
    """Price the stored calls matching ``filters`` again and write the changes, a batch at a time.

    Raises :class:`~otel_usecase.store.StoreUnavailable` when the store stays
    unavailable; the batches written before stay written (running again resumes
    where it stopped, since unchanged calls are not written).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    summary = RepriceSummary(dry_run=dry_run)
    old_totals: list[float] = []  # one exact sum per batch: memory stays flat however many calls
    new_totals: list[float] = []
    after: tuple[str, str] | None = None
    while True:
        calls = _retrying(calls_to_reprice, store, filters, after, batch_size)
        if not calls:
            break
        old_costs: list[float] = []
        new_costs: list[float] = []
        after = (calls[-1].trace_id, calls[-1].span_id)
        changes: list[Repricing] = []
        for call in calls:
            new = repriced(call, prices)
            summary.examined += 1
            old_costs.append(call.cost_usd or 0.0)
            if _price_columns(new) != _price_columns(call):
                changes.append(Repricing(call, new))
            else:
                new_costs.append(call.cost_usd or 0.0)
            if new.cost_usd is None and new.unpriced_reason:
                summary.unpriced_after[new.unpriced_reason] += 1
        applied = changes if dry_run or not changes else _retrying(store.reprice, changes)
        done = {(c.old.trace_id, c.old.span_id) for c in applied}
        for change in changes:
            old, new = change
            if (old.trace_id, old.span_id) in done:
                summary.changed += 1
                new_costs.append(new.cost_usd or 0.0)
                if old.status != new.status:
                    summary.status_changes[f"{old.status} -> {new.status}"] += 1
            else:
                summary.skipped += 1
                new_costs.append(old.cost_usd or 0.0)
        old_totals.append(math.fsum(old_costs))
        new_totals.append(math.fsum(new_costs))
        if len(calls) < batch_size:
            break
    summary.old_total_usd = math.fsum(old_totals)
    summary.new_total_usd = math.fsum(new_totals)
    return summary


def format_summary(summary: RepriceSummary, store_url: str, fmt: str = "table") -> str:
    """The summary as a table (for people) or JSON (``--format json``)."""
    if fmt == "json":
        return json.dumps(
            {
                "store": store_url,
                "dry_run": summary.dry_run,
                "examined": summary.examined,
                "changed": summary.changed,
                "skipped": summary.skipped,
                "old_total_usd": summary.old_total_usd,
                "new_total_usd": summary.new_total_usd,
                "status_changes": dict(sorted(summary.status_changes.items())),
                "unpriced_after": dict(sorted(summary.unpriced_after.items())),
            },
            indent=2,
        )
    verb = "would change" if summary.dry_run else "changed"
    rows: list[tuple[str, object]] = [
        ("calls examined", summary.examined),
        (f"calls {verb}", summary.changed),
    ]
    rows += [(f"  {change}: {count}", "") for change, count in sorted(summary.status_changes.items())]
    if summary.skipped:
        rows.append(("calls skipped", f"{summary.skipped} (a writer replaced them meanwhile; run again)"))
    rows.append(("old total", f"${summary.old_total_usd:.6f}"))
    rows.append(("new total", f"${summary.new_total_usd:.6f}"))
    rows += [
        ("still unpriced", f"{count} ({reason})") for reason, count in sorted(summary.unpriced_after.items())
    ]
    lines = [f"store {store_url}" + ("  (dry run: nothing written)" if summary.dry_run else "")]
    lines += [f"{label:<20}{value}".rstrip() for label, value in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """``otel-usecase reprice``: 0 done, 1 the store cannot be used, 2 a bad option, URL or prices file.

    A prices file named by ``OTEL_USECASE_PRICES`` that cannot be read is an
    error here, not a warning as in the exporter: re-pricing with genai-prices
    alone would rewrite every overridden price.
    """
    from .. import config
    from ..report.queries import ReportError, parse_since, safe_text
    from ..store.base import default_store_url
    from .prices import PricesFileError

    url = args.store or default_store_url()
    try:
        parse_store_url(url)
        since_ns = parse_since(args.since)
        prices = PriceBook(args.prices if args.prices is not None else config.prices_path() or None)
    except (StoreError, ReportError, PricesFileError) as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 2
    filters = RepriceFilter(since_ns=since_ns, use_case=args.use_case, only_unpriced=args.only_unpriced)
    try:
        open_store(url, create=False).close()  # a mistyped URL is an error, never a new empty ledger
        store = open_store(url)  # an older ledger gains the columns re-pricing writes
        try:
            summary = reprice(store, prices, filters, dry_run=args.dry_run)
        finally:
            store.close()
    except StoreError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summary, safe_text(store.url, limit=1000), args.format))
    return 0
