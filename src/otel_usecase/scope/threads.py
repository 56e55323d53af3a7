"""Scopes that follow work into threads and thread pools.

Python starts every thread with an empty ``contextvars`` context, so a call
made from ``threading.Thread``, ``ThreadPoolExecutor.submit``/``map`` or
``loop.run_in_executor`` inside a scope sees no scope (and no trace): it lands
in ``(untracked)``, one run per call. :func:`propagate_context_to_threads`
fixes that for the whole process, and ``opentelemetry-instrument`` calls it
through this package's hook (``OTEL_USECASE_THREAD_CONTEXT=false`` turns that
off):

* ``Thread.start`` captures the OpenTelemetry context of the thread that
  starts it (scope, baggage, current span) and the new thread's ``run`` runs
  with it attached; subclasses that override ``run`` and ``threading.Timer``
  are covered, because the instance's ``run`` is wrapped, not the class's;
* ``ThreadPoolExecutor.submit`` captures the context of the submitting code
  and runs the task with it attached, then detaches it: a pool thread carries
  no scope from one task to the next. ``Executor.map`` and
  ``loop.run_in_executor`` (and so ``asyncio.to_thread``) go through ``submit``.
  The pool's own worker threads, started inside ``submit``, deliberately
  capture nothing, so a worker never keeps the scope of the task that
  happened to start it.

Only the OpenTelemetry context is carried, not every ``ContextVar`` (which is
what ``contextvars.copy_context`` would do): application context variables
keep the thread semantics the application was written for. ``asyncio.to_thread``
already copies the whole context; under the wrapper its task simply finds the
same OpenTelemetry context attached once more, which is harmless.

This is the job of ``opentelemetry-instrumentation-threading``, done here in a
few lines because that package pins an exact ``opentelemetry-instrumentation``
version, which conflicts with the sets applications install. When it is
active as well, both attach the same context; nothing is counted twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from .. import config
from .._log import logger

__all__ = [
    "propagate_context_to_threads",
    "propagating_context_to_threads",
    "stop_propagating_context_to_threads",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_ORIGINAL_START: Final = threading.Thread.start
_ORIGINAL_SUBMIT: Final = ThreadPoolExecutor.submit

_lock = threading.Lock()
_enabled = False
_installed = {"start": False, "submit": False}
"""Whether our wrapper was put in place (it may since have been wrapped by another library)."""
_in_submit = threading.local()
"""``active`` is true while ``ThreadPoolExecutor.submit`` runs in this thread (it may start workers)."""


def _run_in(ctx: Context, func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Call ``func`` with ``ctx`` attached, and detach it afterwards whatever happens.

    Positional-only, so a task's own keyword arguments (``ctx=``, ``func=``) pass through.
    """
    token = otel_context.attach(ctx)
    try:
        return func(*args, **kwargs)
    finally:
        otel_context.detach(token)


def _start(self: threading.Thread) -> None:
    """``Thread.start`` that hands the starting thread's OpenTelemetry context to the new thread."""
    if not _enabled or getattr(_in_submit, "active", False):
        return _ORIGINAL_START(self)
    ctx = otel_context.get_current()
    if not ctx:  # an empty context is what the thread starts with anyway
        return _ORIGINAL_START(self)
    previous = self.__dict__.get("run")
    run = self.run

    def run_in_context() -> None:
        _run_in(ctx, run)

    self.run = run_in_context  # type: ignore[method-assign]
    try:
        return _ORIGINAL_START(self)
    except BaseException:
        if self.__dict__.get("run") is run_in_context:  # not started (e.g. started twice): undo
            if previous is None:
                del self.__dict__["run"]
            else:
                self.__dict__["run"] = previous
        raise


def _submit(self: ThreadPoolExecutor, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
    """``ThreadPoolExecutor.submit`` that runs the task in the submitting code's OpenTelemetry context."""
    if not _enabled:
        return _ORIGINAL_SUBMIT(self, fn, *args, **kwargs)
    ctx = otel_context.get_current()
    if ctx:
        args = (ctx, fn, *args)
        fn = _run_in
    was_active = getattr(_in_submit, "active", False)
    _in_submit.active = True
    try:
        return _ORIGINAL_SUBMIT(self, fn, *args, **kwargs)
    finally:
        _in_submit.active = was_active


def propagate_context_to_threads() -> None:
    """Make threads and thread pools started from now on run in their starter's scope.

    One call per process, e.g. at start-up; ``opentelemetry-instrument`` makes it
    for you. Idempotent, and reversed by :func:`stop_propagating_context_to_threads`.
    """
    global _enabled
    with _lock:
        if not _installed["start"]:
            threading.Thread.start = _start  # type: ignore[method-assign]
            _installed["start"] = True
        if not _installed["submit"]:
            ThreadPoolExecutor.submit = _submit  # type: ignore[method-assign, assignment]
            _installed["submit"] = True
        _enabled = True


def stop_propagating_context_to_threads() -> None:
    """Undo :func:`propagate_context_to_threads`: threads start with an empty context again.

    The original methods are put back unless another library wrapped them after
    us (then ours stay in place, switched off, so its wrapper keeps working).
    """
    global _enabled
    with _lock:
        _enabled = False
        if threading.Thread.start is _start:
            threading.Thread.start = _ORIGINAL_START  # type: ignore[method-assign]
            _installed["start"] = False
        if ThreadPoolExecutor.submit is _submit:
            ThreadPoolExecutor.submit = _ORIGINAL_SUBMIT  # type: ignore[method-assign]
            _installed["submit"] = False


def propagating_context_to_threads() -> bool:
    """Whether threads and thread pools currently get their starter's context."""
    return _enabled


def enable_from_env() -> None:
    """The ``opentelemetry-instrument`` hook's part: on unless ``OTEL_USECASE_THREAD_CONTEXT=false``.

    Never raises: a failure here must not stop the application.
    """
    try:
        if config.THREAD_CONTEXT.read():
            propagate_context_to_threads()
        else:
            logger.debug("otel_usecase: %s=false, threads start without context", config.ENV_THREAD_CONTEXT)
    except Exception:
        logger.warning("otel_usecase: could not make threads propagate the context", exc_info=True)
