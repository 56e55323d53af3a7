"""Cost as OpenTelemetry metrics: a call-sink subscriber that counts cost, calls and tokens.

Why here: teams watch Grafana, not a CLI. The figures come from the
:class:`~otel_usecase.cost.sink.CallSink`, so the in-process exporter and
``otel-usecase serve`` emit the same numbers, and a request recorded by two
instrumentations counts once (a better copy adds only its difference).

Why the global ``MeterProvider``: the application's own metric pipeline (OTLP,
Prometheus, whatever ``opentelemetry-instrument`` or its code set up) carries the
figures; with none configured nothing is recorded and nothing is paid. The
instruments come from the API's proxy meter, which forwards once a provider is
set: ``opentelemetry-instrument`` builds the tracing pipeline (and this
exporter) before the metrics pipeline.

Instruments (scope ``otel_usecase``), all monotonic counters:

* ``usecase.cost`` (USD), ``usecase.calls``, ``usecase.tokens`` (with
  ``gen_ai.token.type`` from :mod:`otel_usecase.cost.token_classes`),
  ``usecase.calls.unpriced`` (with ``usecase.unpriced.reason``).
* ``usecase.calls.dropped`` (with ``usecase.drop.reason``), over the live sources
  (exporters, ``serve``): ``buffer`` for calls the exporter's writer could not
  keep (buffer full while the store was away, or not written by shutdown),
  ``refused`` for calls the store refused for their data. These calls were
  priced and are in ``usecase.cost``; the ledger misses them.

**Speed.** ``Counter.add`` costs about 30 us in the SDK; the exporter prices a
span in about 36. So a batch is summed in plain Python per attribute set into
running totals, and the counters are *observable* ones that the SDK reads once
per collection (see :class:`_Totals`): what a batch costs does not depend on
how many attribute sets it has.

**Replaced copies.** A :class:`~otel_usecase.cost.sink.CallEvent` with
``replaced`` adds ``call - replaced``: the cost and token differences, with the
better copy's attributes, and no second call. A counter never goes down, so a
negative difference (the better copy read the cached part of the prompt the
first one missed, so it costs less) is not subtracted, and a call first seen unpriced stays in ``usecase.calls.unpriced``
when a priced copy replaces it; the ledger (``otel-usecase report``) has the
final figures.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import Any, Final, Protocol

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

from ._log import warn_rate_limited
from .config import METRIC_ATTRIBUTES, METRICS
from .cost.call import Call
from .cost.sink import CallEvent, CallSink
from .cost.token_classes import BY_NAME
from .scope.keys import TAG_PREFIX
from .version import __version__

__all__ = [
    "DEFAULT_ATTRIBUTES",
    "OPT_IN_ATTRIBUTES",
    "CostMetrics",
    "attach",
    "meter_provider_set",
]

METER_NAME: Final = "otel_usecase"

DEFAULT_ATTRIBUTES: Final[tuple[tuple[str, str], ...]] = (
    ("usecase.name", "use_case"),
    ("usecase.version", "use_case_version"),
    ("usecase.step", "step"),
    ("gen_ai.provider.name", "provider"),
    ("gen_ai.response.model", "model"),
    ("usecase.cost.source", "cost_source"),
)
"""(metric attribute, :class:`Call` field): the bounded attributes every data point carries.

``gen_ai.response.model`` is the model the call was priced as: the response
model (the dated snapshot billed), else the request model."""

OPT_IN_ATTRIBUTES: Final[dict[str, str]] = {
    "user.id": "user_id",
    "experience.name": "experience_name",
    "experience.id": "experience_id",
    "usecase.id": "run_id",
}
"""Attributes added only when listed in ``OTEL_USECASE_METRIC_ATTRIBUTES`` (or ``attributes=``).

Each distinct attribute set is a time series the metrics backend keeps (and
bills) for as long as it retains data; a user id or a run id makes one per
user or run. The ledger already answers per-user and per-run questions.
Besides these, ``tag.<key>`` adds the call's tag ``<key>`` as ``usecase.tag.<key>``
(:data:`TAG_OPTION`), bounded like every attribute set (:data:`MAX_ATTRIBUTE_SETS`)."""

TAG_OPTION: Final = "tag."
"""``tag.<key>`` in ``OTEL_USECASE_METRIC_ATTRIBUTES``: the call's tag ``<key>`` on the data points."""

TOKEN_TYPE: Final = "gen_ai.token.type"
UNPRICED_REASON: Final = "usecase.unpriced.reason"
DROP_REASON: Final = "usecase.drop.reason"


def meter_provider_set() -> bool:
    """Whether a global ``MeterProvider`` was set (until then the API's proxy instruments drop everything).

    The one read of the OpenTelemetry API's private state in this module
    (``tests/test_metrics.py::test_no_meter_provider_no_work_and_the_api_read_still_works`` fails
    loudly if the API renames it); without it, a process with no metrics
    pipeline would sum every batch for nothing.
    """
    return otel_metrics._internal._METER_PROVIDER is not None


class DropSource(Protocol):
    """What ``usecase.calls.dropped`` reads: an exporter, or ``serve``'s ingest."""

    @property
    def dropped_calls(self) -> int: ...

    @property
    def rejected_calls(self) -> int: ...


class _Entry:
    """The running totals of one attribute set (mutated under :attr:`_Totals.lock`)."""

    __slots__ = ("attributes", "calls", "cost", "tokens", "unpriced")

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.attributes = attributes
        self.cost = 0.0
        self.calls = 0
        self.tokens: dict[str, int] = {}
        """By token class name (``gen_ai.token.type`` is looked up at collection)."""
        self.unpriced: dict[str, int] = {}
        """By ``usecase.unpriced.reason``."""


MAX_ATTRIBUTE_SETS: Final = 10_000
"""Attribute sets kept per meter; later new sets are summed under ``otel.metric.overflow=true`` (the
SDK's own convention; its default limit, 2000 per instrument, applies first)."""


class _Totals:
    """The running totals of one meter and its observable counters; every subscriber of the process adds here.

    Why observable counters over running totals: ``Counter.add`` costs about 30 us
    per call in the SDK (attribute cleaning and hashing, on a loaded 2-core host),
    and a batch of 512 calls spread over many use cases, versions, steps and models
    has hundreds of attribute sets: adding per batch would cost more than pricing
    the spans. Here a call costs a few dict operations on its attribute set's
    :class:`_Entry`, and the SDK reads each total once per collection (a scrape,
    or the export interval), on the collecting thread.

    One per meter because the SDK keeps only the first callback of an instrument
    registered twice; two exporters in one process add to the same entries. A
    source's drop count may fall (a call given up at shutdown and written after
    all; a forked child starts at 0): only its rises are added, so the counter
    never goes down, and what a source had counted stays when it is collected.
    """

    def __init__(self, meter: Meter) -> None:
        self.lock = threading.Lock()
        self._entries: dict[tuple[str, ...], dict[tuple[Any, ...], _Entry]] = {}
        """Attribute names -> their values -> the entry (one dict per attribute configuration)."""
        self._count = 0
        self._overflow = _Entry({"otel.metric.overflow": True})
        self._labelled: dict[tuple[int, str, str], dict[str, Any]] = {}
        self._sources: weakref.WeakKeyDictionary[Any, list[int]] = weakref.WeakKeyDictionary()
        self._dropped = {"buffer": 0, "refused": 0}
        self._drop_attributes = {reason: {DROP_REASON: reason} for reason in self._dropped}
        meter.create_observable_counter(
            "usecase.cost",
            callbacks=[self._observe_cost],
            unit="USD",
            description="What the LLM calls cost (billed by the provider, else priced)",
        )
        meter.create_observable_counter(
            "usecase.calls", callbacks=[self._observe_calls], unit="{call}", description="LLM calls"
        )
        meter.create_observable_counter(
            "usecase.tokens",
            callbacks=[self._observe_tokens],
            unit="{token}",
            description="Tokens of the LLM calls, by gen_ai.token.type",
        )
        meter.create_observable_counter(
            "usecase.calls.unpriced",
            callbacks=[self._observe_unpriced],
            unit="{call}",
            description="LLM calls without a cost (no usage, unknown model ...), by usecase.unpriced.reason",
        )
        meter.create_observable_counter(
            "usecase.calls.dropped",
            callbacks=[self._observe_dropped],
            unit="{call}",
            description="LLM calls priced but not stored: buffer (the exporter's writer could not keep "
            "them), refused (the store refused their data)",
        )

    def entries_for(self, names: tuple[str, ...]) -> dict[tuple[Any, ...], _Entry]:
        """The entries of the attribute sets with these names, by their values (a subscriber reads it directly)."""
        with self.lock:
            return self._entries.setdefault(names, {})

    def new_entry(self, names: tuple[str, ...], values: tuple[Any, ...]) -> _Entry:
        """Add the entry of a new attribute set (holding ``lock``); past the limit, the overflow entry."""
        if self._count >= MAX_ATTRIBUTE_SETS:
            return self._overflow
        self._count += 1
        entry = _Entry({k: v for k, v in zip(names, values) if v is not None})
        self._entries[names][values] = entry
        return entry

    def after_fork_in_child(self) -> None:
        """A forked child counts its own calls: zero totals and a fresh lock (a parent thread may have held it).

        The entries stay (subscribers hold their dicts), their numbers are zeroed.
        The sources' last counts stay too: a child's exporter starts its own at 0,
        which adds nothing.
        """
        self.lock = threading.Lock()
        for entry in self._all():
            entry.cost, entry.calls = 0.0, 0
            entry.tokens.clear()
            entry.unpriced.clear()
        self._dropped = dict.fromkeys(self._dropped, 0)

    def add_source(self, source: DropSource) -> None:
        with self.lock:
            if source not in self._sources:
                self._sources[source] = [0, 0]

    def _all(self) -> list[_Entry]:
        return [e for by_values in self._entries.values() for e in by_values.values()] + [self._overflow]

    def _labelled_attributes(self, entry: _Entry, label: str, value: str) -> dict[str, Any]:
        found = self._labelled.get((id(entry), label, value))
        if found is None:
            found = self._labelled[(id(entry), label, value)] = {**entry.attributes, label: value}
        return found

    # The callbacks copy the totals under the lock and build the SDK's observations outside it, so a
    # collection holds the exporter's thread for a copy of the numbers, not for the SDK's work.

    def _observe_cost(self, options: CallbackOptions) -> Iterable[Observation]:
        with self.lock:
            totals = [(e.cost, e.attributes) for e in self._all() if e.calls or e.cost]
        return [Observation(value, attributes) for value, attributes in totals]

    def _observe_calls(self, options: CallbackOptions) -> Iterable[Observation]:
        with self.lock:
            totals = [(e.calls, e.attributes) for e in self._all() if e.calls]
        return [Observation(value, attributes) for value, attributes in totals]

    def _observe_tokens(self, options: CallbackOptions) -> Iterable[Observation]:
        with self.lock:
            totals = [
                (count, self._labelled_attributes(e, TOKEN_TYPE, _token_type(name)))
                for e in self._all()
                for name, count in e.tokens.items()
            ]
        return [Observation(value, attributes) for value, attributes in totals]

    def _observe_unpriced(self, options: CallbackOptions) -> Iterable[Observation]:
        with self.lock:
            totals = [
                (count, self._labelled_attributes(e, UNPRICED_REASON, reason))
                for e in self._all()
                for reason, count in e.unpriced.items()
            ]
        return [Observation(value, attributes) for value, attributes in totals]

    def _observe_dropped(self, options: CallbackOptions) -> Iterable[Observation]:
        with self.lock:
            for source, last in list(self._sources.items()):
                for index, (reason, now) in enumerate(
                    (("buffer", source.dropped_calls), ("refused", source.rejected_calls))
                ):
                    if now > last[index]:
                        self._dropped[reason] += now - last[index]
                    last[index] = now
            return [Observation(v, self._drop_attributes[r]) for r, v in self._dropped.items()]


def _token_type(name: str) -> str:
    token_class = BY_NAME.get(name)
    return token_class.token_type if token_class is not None else name


_totals_lock = threading.Lock()
_global_totals: _Totals | None = None
_totals_by_provider: weakref.WeakKeyDictionary[MeterProvider, _Totals] = weakref.WeakKeyDictionary()


def _after_fork_in_child() -> None:
    global _totals_lock
    _totals_lock = threading.Lock()
    for totals in [_global_totals, *_totals_by_provider.values()]:
        if totals is not None:
            totals.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _totals_for(provider: MeterProvider | None) -> _Totals:
    """The totals of ``provider``'s meter (None: the global provider, through the API's proxy)."""
    global _global_totals
    with _totals_lock:
        if provider is None:
            if _global_totals is None:
                _global_totals = _Totals(otel_metrics.get_meter(METER_NAME, __version__))
            return _global_totals
        found = _totals_by_provider.get(provider)
        if found is None:
            meter = otel_metrics.get_meter(METER_NAME, __version__, meter_provider=provider)
            found = _totals_by_provider[provider] = _Totals(meter)
        return found


def parse_attributes(keys: Iterable[str]) -> tuple[str, ...]:
    """The opt-in attribute keys among ``keys`` (``tag.<key>`` included); an unknown key raises ``ValueError``
    naming it."""
    from .scope.validation import is_name

    chosen: list[str] = []
    for key in keys:
        key = key.strip()
        if not key:
            continue
        if key not in OPT_IN_ATTRIBUTES and not (
            key.startswith(TAG_OPTION) and is_name(key[len(TAG_OPTION) :])
        ):
            raise ValueError(
                f"{key!r} is not one of {', '.join(OPT_IN_ATTRIBUTES)} or tag.<key> (a tag key: a name)"
            )
        if key not in chosen:
            chosen.append(key)
    return tuple(chosen)


class CostMetrics:
    """The sink subscriber: call it with each put's events; it adds them to the running totals.

    ``meter_provider``: where to record (``None``: the global one, through the
    API's proxy, so a provider set later still gets the figures). ``attributes``:
    the opt-in attribute keys to add (``None``: ``OTEL_USECASE_METRIC_ATTRIBUTES``);
    an unknown key raises ``ValueError``.
    """

    def __init__(
        self, meter_provider: MeterProvider | None = None, *, attributes: Iterable[str] | None = None
    ) -> None:
        extra = parse_attributes(attributes) if attributes is not None else METRIC_ATTRIBUTES.read()
        fields = [f for _, f in DEFAULT_ATTRIBUTES] + [
            OPT_IN_ATTRIBUTES[k] for k in extra if k in OPT_IN_ATTRIBUTES
        ]
        tags = tuple(k[len(TAG_OPTION) :] for k in extra if k not in OPT_IN_ATTRIBUTES)
        self.attribute_keys: tuple[str, ...] = (
            *(k for k, _ in DEFAULT_ATTRIBUTES),
            *(k for k in extra if k in OPT_IN_ATTRIBUTES),
            *(TAG_PREFIX + tag for tag in tags),
        )
        self._key_of = _key_getter(attrgetter(*fields), tags)
        self._explicit = meter_provider is not None
        self._totals = _totals_for(meter_provider)
        self._entries = self._totals.entries_for(self.attribute_keys)
        """Attribute values -> the entry, shared with every subscriber of the meter with these names."""
        self.errors = 0

    def watch_drops(self, source: DropSource) -> None:
        """Count ``source``'s dropped and refused calls in ``usecase.calls.dropped`` (while it lives)."""
        self._totals.add_source(source)

    def __call__(self, events: Sequence[CallEvent]) -> None:
        if not self._explicit and not meter_provider_set():
            return
        try:
            with self._totals.lock:
                self._record(events)
        except Exception as exc:  # never into the pipeline (the sink would catch it too, but say why here)
            self.errors += 1
            warn_rate_limited(
                "metrics:record",
                "otel_usecase: recording cost metrics for %d calls failed (%s: %s); the calls are stored",
                len(events),
                type(exc).__name__,
                exc,
            )

    def _record(self, events: Sequence[CallEvent]) -> None:
        """Add each event to its attribute set's entry (holding the totals' lock: no I/O, no SDK call)."""
        key_of = self._key_of
        entries = self._entries
        for call, old in events:
            values = key_of(call)
            entry = entries.get(values)
            if entry is None:
                entry = self._totals.new_entry(self.attribute_keys, values)
            tokens = entry.tokens
            if old is None:
                entry.calls += 1
                cost = call.cost_usd
                if cost is None:
                    reason = call.unpriced_reason or call.status
                    entry.unpriced[reason] = entry.unpriced.get(reason, 0) + 1
                else:
                    entry.cost += cost
                for name, count in call.tokens.items():
                    if count:
                        tokens[name] = tokens.get(name, 0) + count
            else:
                _add_difference(entry, call, old)


def _key_getter(
    fields: Callable[[Call], tuple[Any, ...]], tags: tuple[str, ...]
) -> Callable[[Call], tuple[Any, ...]]:
    """The attribute values of a call: its fields, then (with ``tag.<key>`` options) its tags' values."""
    if not tags:
        return fields

    def values(call: Call) -> tuple[Any, ...]:
        get = call.tags.get
        return (*fields(call), *(get(tag) for tag in tags))

    return values


def _add_difference(entry: _Entry, call: Call, old: Call) -> None:
    """Add ``call - old`` (a better copy of a request already counted): cost and tokens, never a call."""
    if call.cost_usd is not None:
        difference = call.cost_usd - (old.cost_usd or 0.0)
        if difference > 0:
            entry.cost += difference
    tokens = entry.tokens
    before = old.tokens
    for name, count in call.tokens.items():
        more = count - before.get(name, 0)
        if more > 0:
            tokens[name] = tokens.get(name, 0) + more


def attach(sink: CallSink[Any], source: DropSource | None = None) -> CostMetrics | None:
    """Subscribe cost metrics to ``sink`` (unless ``OTEL_USECASE_METRICS=false``); never raises.

    ``source``: what counts the calls lost after the sink (the exporter; ``serve``'s
    ingest), read by ``usecase.calls.dropped``. Returns the subscriber, or None.
    """
    try:
        if not METRICS.read():
            return None
        recorder = CostMetrics()
        if source is not None:
            recorder.watch_drops(source)
        sink.subscribe(recorder)
        return recorder
    except Exception as exc:
        warn_rate_limited(
            "metrics:attach", "otel_usecase: cost metrics are off (%s: %s)", type(exc).__name__, exc
        )
        return None
