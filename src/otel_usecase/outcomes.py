"""record_outcome: what a run achieved, so that reports show the cost per outcome.

``record_outcome("ticket_resolved")`` inside a scope records one outcome for the
current run; ``report --per-outcome ticket_resolved`` then divides what the runs
cost by what they achieved (the figure finance asks for).

**How an outcome travels.** It is a span: ``record_outcome`` starts and ends a
``usecase.outcome`` span (attributes ``usecase.outcome.name``,
``usecase.outcome.value``, ``usecase.name`` and, when the run has an id,
``usecase.id``) on the global tracer provider, as a child of the current span.
Everything that carries spans carries outcomes, with no second pipeline:

* in-process, :class:`~otel_usecase.UseCaseCostExporter` finds outcome spans in
  each batch (:func:`outcomes_from_spans`) and writes them through a writer
  thread of its own (bounded buffer, retries, drops counted), flushed by
  ``provider.force_flush()``, :func:`otel_usecase.lifecycle.flush` and SIGTERM;
* through ``otel-usecase serve`` (directly or behind a Collector), the receiver
  finds the same spans in OTLP requests and writes them with the calls (an
  outage answers 503, and the sender's retry writes them once);
* recording never blocks: starting and ending a span is a few microseconds, and
  the SDK's batch processor exports it on its own thread.

The table's key is the span's (trace id, span id): a retried export or a resent
OTLP request writes an outcome once. A sampler that drops the trace drops its
outcome with its calls, so a sampled ledger keeps cost and outcomes in proportion.

**Rules.** The name is code and follows the name rule (a bad one raises
``ValueError``); the value is data: one that is not a finite number is warned
about (:class:`~otel_usecase.UseCaseWarning`) and not recorded. Outside a scope
``run_id`` (and ``use_case``, unless a default use case is set) must be given;
without them the outcome is warned about and not recorded. Nothing here raises
because of data, and every outcome not recorded is counted
(:func:`outcome_counts`).
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Iterable
from numbers import Real
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from opentelemetry import trace

from ._log import logger, warn_rate_limited
from .scope import keys as attr
from .scope.validation import NAME_RULE, UseCaseWarning, check_name, is_name, scope_id
from .scope.validation import _first_warning as first_warning  # the ids' rate limit, shared
from .store.outcome_sql import Outcome
from .version import __version__

if TYPE_CHECKING:
    from .cost.calls import SpanView

__all__ = [
    "OUTCOME_SPAN_NAME",
    "Outcome",
    "OutcomeCounts",
    "outcome_counts",
    "outcomes_from_spans",
    "record_outcome",
]

OUTCOME_SPAN_NAME: Final = "usecase.outcome"
"""The name of the span ``record_outcome`` emits."""
TRACER_NAME: Final = "otel_usecase.outcomes"
"""Its instrumentation scope (not an LLM scope: the span processor never stamps it)."""


class OutcomeCounts(NamedTuple):
    """What ``record_outcome`` did in this process since it started."""

    recorded: int
    """Handed to the tracer provider as a span (the exporter or ``serve`` stores it)."""
    not_recorded: int
    """Refused: a value that is not a finite number, no run to record it for, no SDK tracer provider."""
    sampled_out: int
    """Dropped by the sampler with the rest of their trace (its calls are not in the ledger either)."""


_lock = threading.Lock()
_counts = [0, 0, 0]


def outcome_counts() -> OutcomeCounts:
    """The process's counts of recorded, refused and sampled-out outcomes."""
    with _lock:
        return OutcomeCounts(*_counts)


def _count(which: int) -> None:
    with _lock:
        _counts[which] += 1


def _refuse(message: str) -> bool:
    """Count an outcome not recorded and warn about it as about a repaired id: a :class:`UseCaseWarning`
    at the caller, once per distinct message and at most ten a minute (with the ids' warnings)."""
    _count(1)
    if first_warning(hash(message)):
        warnings.warn(f"{message}; the outcome is not recorded", UseCaseWarning, stacklevel=3)
    return False


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def record_outcome(
    name: str,
    value: float = 1.0,
    *,
    run_id: str | None = None,
    use_case: str | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> bool:
    """Record that a run achieved ``value`` of outcome ``name`` (a resolved ticket, an accepted summary).

    Inside a scope it is the current run's; ``run_id`` (with ``use_case``, unless
    the scope's or the default use case applies) records it for another run, e.g.
    from a feedback endpoint hours later. ``tracer_provider``: the provider to emit
    the outcome span on (default: the global one, as instrumentations do).
    Returns whether the outcome was handed on (see :func:`outcome_counts`).

    Raises ``ValueError`` for a ``name`` or ``use_case`` that breaks the name rule
    (names are code). Never raises because of data: a ``value`` that is not a finite
    number, or no run to record for, is a :class:`~otel_usecase.UseCaseWarning`
    and the outcome is not recorded (counted).
    """
    check_name("outcome name", name)
    if use_case is not None:
        check_name("use_case", use_case)
    number = _finite(value)
    if number is None:
        return _refuse(f"outcome {name!r}: value={value!r} is not a finite number")
    from .scope.tracking import current_scope

    scope = current_scope()
    if run_id is not None:
        run = scope_id("run_id", run_id)
        if run is None:
            return _refuse(f"outcome {name!r}: run_id is empty")
        case = use_case or (scope.use_case_name if scope is not None else None)
        if case is None:
            return _refuse(
                f"outcome {name!r} for run_id={run!r} outside any scope: pass use_case= (the run's use case)"
            )
    else:
        current = scope.use_case_name if scope is not None else None
        if current is None:
            return _refuse(
                f"outcome {name!r} outside any scope: record it inside track_context()/@track, "
                "or pass run_id= and use_case="
            )
        if use_case is not None and use_case != current:
            return _refuse(
                f"outcome {name!r}: use_case={use_case!r} is not the current run's ({current!r}); "
                "pass run_id= to record it for a run of another use case"
            )
        case = current
        # A scope without a run id (the default use case): the run is the trace, as for its calls.
        run = scope.use_case_id if scope is not None else None
    attributes: dict[str, Any] = {
        attr.OUTCOME_NAME: name,
        attr.OUTCOME_VALUE: number,
        attr.USE_CASE_NAME: case,
    }
    if run is not None:
        attributes[attr.USE_CASE_ID] = run
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    try:
        span = provider.get_tracer(TRACER_NAME, __version__).start_span(
            OUTCOME_SPAN_NAME, attributes=attributes
        )
        recording = span.is_recording()
        span.end()
    except Exception:  # a broken provider must not break the app
        logger.exception("otel_usecase: emitting the outcome span failed")
        _count(1)
        return False
    if recording:
        _count(0)
        return True
    if hasattr(provider, "add_span_processor"):  # an SDK provider whose sampler dropped the trace
        _count(2)
        return False
    _count(1)
    warn_rate_limited(
        "outcomes:no-sdk",
        "otel_usecase: outcome %r not recorded: the tracer provider %s is not an OpenTelemetry SDK "
        "TracerProvider (run under opentelemetry-instrument, or set one up with the usecase exporter)",
        name,
        type(provider).__name__,
    )
    return False


def outcomes_from_spans(
    spans: Iterable[SpanView], refused: list[tuple[SpanView, str]] | None = None
) -> list[Outcome]:
    """The outcomes among finished spans (exporter and ``serve`` alike): spans with ``usecase.outcome.name``.

    The run is found as for a call: ``usecase.id``, else the trace (a use case without
    run ids); the use case ``usecase.name``, else ``(untracked)``. A span whose name
    breaks the name rule or whose value is not a finite number came from outside
    (``record_outcome`` never sends one): it is skipped, added to ``refused`` with the
    reason (``serve`` tells the sender) and logged (rate-limited).
    """
    key = attr.OUTCOME_NAME
    found: list[Outcome] = []
    # One membership test per span, in a comprehension: this runs on every exported batch. Measured
    # 69 ns a span (a third of a loop that reads the attribute), against about 20 us per span exported.
    for span in [s for s in spans if key in s.attributes]:
        attributes = span.attributes
        name = attributes[key]
        raw = attributes.get(attr.OUTCOME_VALUE)
        value = _finite(raw)
        if not isinstance(name, str) or not is_name(name):
            reason = f"{key} {name!r} is not a valid name: use {NAME_RULE}"
        elif value is None:
            reason = f"{attr.OUTCOME_VALUE} {raw!r} is not a finite number"
        else:
            found.append(_outcome(span, name, value))
            continue
        if refused is not None:
            refused.append((span, reason))
        warn_rate_limited(
            "outcomes:bad-span",
            "otel_usecase: skipping outcome span %016x of trace %032x: %s",
            span.span_id,
            span.trace_id,
            reason,
        )
    return found


def _outcome(span: SpanView, name: str, value: float) -> Outcome:
    from .cost.calls import UNTRACKED

    trace_hex = format(span.trace_id, "032x")
    get = span.attributes.get
    case = get(attr.USE_CASE_NAME)
    run = get(attr.USE_CASE_ID)
    return Outcome(
        trace_hex,
        format(span.span_id, "016x"),
        span.end_ns or span.start_ns,
        span.service,
        str(case) if case else UNTRACKED,
        str(run) if run else trace_hex,
        name,
        value,
    )
