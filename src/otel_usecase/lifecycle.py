"""The process around the exporter: fork(), SIGTERM, and processes that exit through ``os._exit``.

- **fork()** (gunicorn, uvicorn and multiprocessing workers): a child inherits the
  exporter's buffer, locks and a writer thread that does not exist in it. Like the
  SDK's own ``BatchSpanProcessor``, one ``os.register_at_fork`` hook gives every
  exporter a fresh state in the child; the parent's buffered calls stay the
  parent's to write (the stores drop their inherited connections the same way).
- **SIGTERM** (Docker, Kubernetes, systemd): its default action kills the process
  without ``atexit``, so the last batch would be lost. When an exporter is created
  on the main thread while SIGTERM still has its default action, a handler is
  installed that flushes (bounded), restores the default action and re-raises
  SIGTERM, so the process still dies of the signal. An app's own handler is never
  replaced; one that restores the previous handler and re-raises (uvicorn) ends in
  this one. PID 1 ignores default-action signals: there the handler exits with 143.
- **multiprocessing** children (fork) end with ``os._exit``: no ``atexit``, no SDK
  shutdown. Call :func:`flush` at the end of the child's work.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import weakref
from typing import Any, Final, Protocol

from ._log import logger

__all__ = ["flush", "gunicorn_post_worker_init", "install_sigterm_flush", "watch"]

SIGTERM_FLUSH_S: Final = 5.0
"""How long the SIGTERM handler spends writing what is pending before the process dies
(well inside Docker's 10 s and Kubernetes' 30 s grace periods)."""


class _Watched(Protocol):
    def force_flush(self, timeout_millis: int = 30000) -> bool: ...

    @property
    def buffered_calls(self) -> int: ...

    @property
    def store_url(self) -> str: ...

    def _after_fork_in_child(self) -> None: ...


_watched: weakref.WeakSet[Any] = weakref.WeakSet()
_fork_hook_installed = False
_install_lock = threading.Lock()


def watch(exporter: _Watched) -> None:
    """Give ``exporter`` fork safety and, from the main thread, the SIGTERM flush."""
    global _fork_hook_installed
    with _install_lock:
        _watched.add(exporter)
        if not _fork_hook_installed and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_hook_installed = True
    install_sigterm_flush()


def _after_fork_in_child() -> None:
    global _install_lock
    _install_lock = threading.Lock()  # another thread may have held it at fork()
    for exporter in list(_watched):
        try:
            exporter._after_fork_in_child()
        except Exception:
            logger.exception("otel_usecase: resetting an exporter after fork() failed")


def flush(timeout_s: float = 10.0) -> bool:
    """Put every finished span's calls in the store, waiting at most ``timeout_s``.

    Flushes the global tracer provider (its batch processors export their queues)
    and then waits for every exporter's own buffer. Returns ``True`` when nothing is
    left; what is left is logged with its number. Call it where a process ends
    without ``atexit``: at the end of a ``multiprocessing`` child's work.
    """
    from opentelemetry import trace

    deadline = time.monotonic() + timeout_s
    done = True
    provider = trace.get_tracer_provider()
    provider_flush = getattr(provider, "force_flush", None)
    if provider_flush is not None:
        try:
            done = bool(provider_flush(int(timeout_s * 1000)))
        except Exception:
            logger.exception("otel_usecase: flushing the tracer provider failed")
            done = False
    for exporter in list(_watched):
        remaining_ms = max(int((deadline - time.monotonic()) * 1000), 0)
        if not exporter.force_flush(remaining_ms):
            done = False
            logger.error(
                "otel_usecase: %d calls not yet written to %s", exporter.buffered_calls, exporter.store_url
            )
    _flush_alerts(deadline)
    return done


_ALERTS_FLUSH_MAX_S: Final = 2.0
"""The most :func:`flush` spends on budget alerts (after the calls): a claimed alert is delivered by
another process after the lease anyway; what this saves is a crossing queued but not yet claimed."""


def _flush_alerts(deadline: float) -> None:
    """Give the budget alert dispatchers what is left of ``deadline`` (bounded), if budgets are loaded."""
    registry = sys.modules.get("otel_usecase.budgets.registry")
    if registry is None:
        return
    for dispatcher in registry.dispatchers():
        left = min(deadline - time.monotonic(), _ALERTS_FLUSH_MAX_S)
        if left <= 0:
            return
        try:
            if not dispatcher.flush(left):
                logger.warning("otel_usecase: budget alerts still pending for %s", dispatcher.store_url)
        except Exception:
            logger.exception("otel_usecase: flushing the budget alerts failed")


def install_sigterm_flush() -> bool:
    """Install the flushing SIGTERM handler if SIGTERM has its default action and this is the main thread.

    Returns whether it is installed. The exporter calls it when created.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        current = signal.getsignal(signal.SIGTERM)
        if current is _on_sigterm:
            return True
        if current is not signal.SIG_DFL:
            return False  # the app handles SIGTERM itself: never replace its handler
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):  # not the main interpreter, or no SIGTERM here
        return False
    return True


def gunicorn_post_worker_init(_worker: object) -> None:
    """gunicorn hook for workers that reset SIGTERM to its default after the fork.

    ``uvicorn.workers.UvicornWorker`` does: its worker dies of the re-raised
    SIGTERM with the last batch unwritten. In the gunicorn config file::

        from otel_usecase.lifecycle import gunicorn_post_worker_init as post_worker_init
    """
    install_sigterm_flush()


def _on_sigterm(signum: int, _frame: object) -> None:
    """Flush (bounded), then die of the signal as the default action would have."""
    # On a thread of its own: the interrupted main thread may hold a lock the flush needs.
    flusher = threading.Thread(target=_flush_quietly, name="otel-usecase-sigterm-flush", daemon=True)
    try:
        flusher.start()
        flusher.join(SIGTERM_FLUSH_S + 1.0)
    except RuntimeError:
        _flush_quietly()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)
    # Still alive: PID 1 of a PID namespace ignores signals left at their default action.
    os._exit(128 + signum)


def _flush_quietly() -> None:
    try:
        flush(SIGTERM_FLUSH_S)
    except Exception:
        logger.exception("otel_usecase: flushing on SIGTERM failed")
