"""Budget alerts: each threshold crossing POSTed to a webhook once, whichever process saw it first.

The spend tracker calls :meth:`AlertDispatcher.notify` (on the exporter's or
``serve``'s worker thread, never the request path); ``notify`` only appends to a
bounded in-memory queue. A daemon thread does the rest:

1. **Claim** the crossing in the store (``otel_usecase_alerts``, see
   :mod:`otel_usecase.store.alert_sql`): ``INSERT ... ON CONFLICT DO NOTHING``; the
   process whose insert made the row delivers it, every other process drops it.
   So a crossing that several processes (workers, hosts, ``serve`` instances)
   see at once is sent at most once.
2. **Deliver**: renew the claim (abort if it was lost), POST the body signed with
   ``X-Otel-Usecase-Signature: sha256=<hex>``; on no answer, a timeout, 5xx,
   408 or 429 retry with exponential backoff and jitter for up to
   ``OTEL_USECASE_ALERT_RETRY_FOR_S`` after the crossing; other answers are final
   (logged). Every attempt is recorded in the row (attempts, next try, delivered
   time, last error).
3. **Lease**: the owner renews its claims every quarter of the lease while it
   retries. A claim not renewed for ``OTEL_USECASE_ALERT_LEASE_S`` (the owner was
   killed, or is gone) is taken over by another dispatcher, which sends the
   stored body. The claim is renewed right before each POST, an attempt is cut
   at two request timeouts (:func:`~.webhook.post`) and the lease is at least
   three, so a live owner's attempt always ends before anyone may take its claim
   over: never two deliveries while the owner lives.

Nothing here raises into the app (``notify`` never raises or blocks; a full
queue counts and logs the lost alert), the signing secret is never logged, and
webhook URLs are logged redacted (:func:`~.webhook.redact_webhook`).
"""

from __future__ import annotations

import atexit
import json
import os
import random
import secrets
import socket
import threading
import time
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, NamedTuple

from .. import config
from .._log import logger, warn_rate_limited
from ..store import Store, StoreError, open_store
from ..store.alert_sql import AlertKey, ClaimedAlert
from ..store.base import redact_url, register_fork_hooks
from .model import Budget, Crossing
from .payload import payload
from .webhook import SIGNATURE_HEADER, post, redact_webhook, sign, signature_header, webhook_problem

__all__ = ["SIGNATURE_HEADER", "AlertDispatcher", "AlertStats", "payload", "sign"]

TIMEOUT_S: Final = 10.0
"""Default bound of a webhook request's connection and of each read of its answer."""
BACKOFF_S: Final = 1.0
"""Default delay before the first retry; doubled per attempt, with jitter, up to :data:`MAX_BACKOFF_S`."""
MAX_BACKOFF_S: Final = 300.0
RETRY_AFTER_MAX_S: Final = 3600.0
"""The longest ``Retry-After`` honoured (beyond the backoff's own ceiling: the receiver knows best)."""
QUEUE_SIZE: Final = 1000
"""Crossings waiting to be claimed; beyond it a crossing is lost, counted and logged."""
EXIT_S: Final = 2.0
"""How long interpreter exit waits for pending alerts (what is left is taken over after the lease)."""
_TAKE_OVER_BATCH: Final = 100
_REMEMBERED: Final = 10_000
"""Crossings remembered as handled (claimed by this or another process), so a repeat costs no store query."""
_STORE_RETRY_S: Final = (1.0, 30.0)
"""First and longest wait before using an unavailable store again."""


class AlertStats(NamedTuple):
    """What a dispatcher did since it started (in this process)."""

    delivered: int
    """Alerts this process delivered (2xx)."""
    given_up: int
    """Alerts this process gave up: refused by the receiver, or retried for too long."""
    lost: int
    """Crossings dropped before they were claimed: queue full, or still unclaimed at close."""
    pending: int
    """Crossings queued or claimed here and not yet delivered or given up."""


@dataclass(slots=True)
class _Job:
    """A claimed alert this process delivers."""

    key: AlertKey
    body: bytes
    url: str
    crossed_ns: int
    """When the spend crossed the threshold (wall clock): retries stop ``retry_for_s`` after it."""
    attempts: int = 0
    due: float = 0.0
    """Monotonic time of the next step."""
    record: tuple[str | None, int | None] | None = None
    """An outcome not yet written to the row (error or None, retry delay or None): written first."""


_unsigned_warned = False
_live: weakref.WeakSet[AlertDispatcher] = weakref.WeakSet()
_INHERITED: list[Any] = []
"""Stores a forked child inherited: never used (nor closed, which could end the parent's session)."""


class AlertDispatcher:
    """Delivers budget threshold crossings to webhooks, at most once per crossing across processes.

    ``store_url``: the store every process of the app shares (the claims live
    there). ``webhook``, ``secret``, ``lease_s``, ``retry_for_s``: the argument,
    else ``OTEL_USECASE_ALERT_WEBHOOK``, ``OTEL_USECASE_ALERT_SECRET``,
    ``OTEL_USECASE_ALERT_LEASE_S``, ``OTEL_USECASE_ALERT_RETRY_FOR_S``. A budget's
    own webhook wins over ``webhook``. A bad argument raises ``ValueError``; a bad
    env value warns (naming the variable and the rule, never the URL's secret
    parts) and is not used.

    Without a secret, alerts are sent without a signature header and a warning
    is logged once: receivers that do not verify (chat webhooks) still get them.
    """

    def __init__(
        self,
        store_url: str,
        *,
        webhook: str | None = None,
        secret: str | None = None,
        lease_s: float | None = None,
        retry_for_s: float | None = None,
        timeout_s: float = TIMEOUT_S,
        backoff_s: float = BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        if webhook is not None and (problem := webhook_problem(webhook)) is not None:
            raise ValueError(f"webhook {redact_webhook(webhook)!r} cannot be used: {problem}")
        if secret is not None and not secret:
            raise ValueError("secret must not be empty (None: OTEL_USECASE_ALERT_SECRET)")
        for name, value in (
            ("timeout_s", timeout_s),
            ("backoff_s", backoff_s),
            ("max_backoff_s", max_backoff_s),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size!r}")
        self.store_url = store_url
        self._default = webhook if webhook is not None else _env_webhook()
        self._secret = secret if secret is not None else config.ALERT_SECRET.read()
        self._lease_s = float(lease_s if lease_s is not None else config.ALERT_LEASE.read())
        if self._lease_s < 3 * timeout_s:
            raise ValueError(
                f"lease_s ({self._lease_s:g}) must be at least 3 x timeout_s ({timeout_s:g}): an attempt must "
                "end well before another process may take its claim over"
            )
        self._retry_for_ns = int(
            (retry_for_s if retry_for_s is not None else config.ALERT_RETRY_FOR.read()) * 1e9
        )
        if self._retry_for_ns < 0:
            raise ValueError(f"retry_for_s must be >= 0, got {retry_for_s!r}")
        self._timeout_s = timeout_s
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._queue_size = queue_size
        self._closed = False
        self._store: Store | None = None
        self._handled: OrderedDict[AlertKey, None] = OrderedDict()
        self._reset()
        register_fork_hooks(self, after_in_child=AlertDispatcher.after_fork_in_child)
        _live.add(self)
        self._start()

    def _reset(self) -> None:
        """The per-process state: a new lock, queue, owner id and no jobs (also in a forked child)."""
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._incoming: deque[Crossing] = deque()
        self._waiting: list[Crossing] = []
        self._jobs: dict[AlertKey, _Job] = {}
        self._outstanding = 0
        self._delivered = self._given_up = self._lost = 0
        self._stopping = False
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._store_due = 0.0
        self._store_wait = _STORE_RETRY_S[0]
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="otel-usecase-alerts", daemon=True)
        self._thread.start()

    # --- the app side: never blocks, never raises ---------------------------------------------

    def notify(self, crossing: Crossing) -> None:
        """Queue ``crossing`` for delivery and return at once; never raises.

        A full queue (``queue_size``) or a closed dispatcher loses the crossing:
        it is counted (:meth:`stats`) and logged, once a minute.
        """
        try:
            with self._cond:
                accepted = not self._closed and len(self._incoming) < self._queue_size
                if accepted:
                    self._incoming.append(crossing)
                    self._outstanding += 1
                    self._cond.notify_all()
                else:
                    self._lost += 1
                    lost = self._lost
            if not accepted:
                warn_rate_limited(
                    "alerts-lost",
                    "otel_usecase: a budget alert was lost (%s): the %s%% crossing of budget %r; %d lost so far",
                    "the dispatcher is closed"
                    if self._closed
                    else f"{self._queue_size} alerts already queued",
                    getattr(crossing, "threshold", "?"),
                    getattr(getattr(crossing, "budget", None), "name", "?"),
                    lost,
                )
        except Exception:  # never into the tracker, whatever it passed
            logger.debug("otel_usecase: notify() failed", exc_info=True)

    def stats(self) -> AlertStats:
        """Counts of this process's dispatcher (see :class:`AlertStats`)."""
        with self._cond:
            return AlertStats(self._delivered, self._given_up, self._lost, self._outstanding)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every crossing notified so far is delivered, given up or someone else's.

        Returns ``False`` at ``timeout_s`` with alerts still pending (a receiver
        that is down keeps them in their backoff; they are not lost).
        """
        deadline = time.monotonic() + max(timeout_s, 0.0)
        with self._cond:
            while self._outstanding > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait up to ``timeout_s`` for pending alerts, then stop; bounded, never raises.

        Alerts this process claimed and could not deliver in time are released in
        the store, so another process takes them over at its next sweep (or after
        the lease, if this one could not stop cleanly); crossings not yet claimed
        are counted as lost and logged.
        """
        if self._closed:
            return
        deadline = time.monotonic() + max(timeout_s, 0.0)
        try:
            self.flush(timeout_s)
            with self._cond:
                self._closed = True
                self._stopping = True
                self._cond.notify_all()
                unclaimed = len(self._incoming) + len(self._waiting)
            thread = self._thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(deadline - time.monotonic(), 0.1))
            if thread is None or not thread.is_alive():
                # Only once the thread has stopped: a POST in flight must not meet a taker.
                self._release()
            if unclaimed:
                with self._cond:
                    self._lost += unclaimed
                    self._outstanding -= unclaimed
                logger.error(
                    "otel_usecase: %d budget alerts were not sent: the alert dispatcher closed before it "
                    "could claim them (store %s unavailable?)",
                    unclaimed,
                    redact_url(self.store_url),
                )
        except Exception:
            logger.exception("otel_usecase: closing the alert dispatcher failed")

    def _release(self) -> None:
        store = self._store
        if store is None:
            return
        try:
            if self._jobs:
                released = store.alert_release(self._owner)
                logger.warning(
                    "otel_usecase: %d budget alerts not yet delivered were released for another process "
                    "to deliver",
                    released,
                )
            store.close()
        except Exception as exc:
            logger.warning(
                "otel_usecase: the alert dispatcher could not release its claims (%s); another process "
                "takes them over after the lease (%g s)",
                exc,
                self._lease_s,
            )

    def after_fork_in_child(self) -> None:
        """A forked child gets its own queue, lock, owner id, store and thread; the parent's claims stay the
        parent's. (The inherited store is set aside: its own fork hook may not have run yet.)"""
        if self._store is not None:
            _INHERITED.append(self._store)
            self._store = None
        self._reset()
        if not self._closed:
            self._start()

    # --- the worker thread ---------------------------------------------------------------------

    def _run(self) -> None:
        next_sweep = 0.0
        while True:
            with self._cond:
                while not self._stopping and not self._incoming:
                    wait = self._next_wake(next_sweep) - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._stopping:
                    return
                self._waiting.extend(self._incoming)
                self._incoming.clear()
            try:
                next_sweep = self._step(next_sweep)
            except Exception:  # a bug must not end the thread: log, pause, go on
                logger.exception("otel_usecase: the alert dispatcher failed a step; it goes on in 1 s")
                next_sweep = time.monotonic() + 1.0
                self._store_due = time.monotonic() + 1.0

    def _next_wake(self, next_sweep: float) -> float:
        wake = next_sweep
        if self._waiting:
            wake = min(wake, self._store_due)
        for job in self._jobs.values():
            wake = min(wake, job.due)
        return max(wake, self._store_due) if self._store is None else wake

    def _step(self, next_sweep: float) -> float:
        store = self._open_store()
        if store is None:
            return next_sweep
        if self._waiting and time.monotonic() >= self._store_due:
            self._claim_waiting(store)
        if time.monotonic() >= next_sweep:
            self._sweep(store)
            next_sweep = time.monotonic() + self._lease_s / 4
        for job in sorted(self._jobs.values(), key=lambda j: j.due):
            if self._stopping:
                break
            now = time.monotonic()
            if now >= next_sweep:  # long rounds of attempts must not starve the renewals
                self._sweep(store)
                next_sweep = now + self._lease_s / 4
            if job.due <= now and job.key in self._jobs:
                self._attempt(store, job)
        return next_sweep

    def _open_store(self) -> Store | None:
        if self._store is not None:
            return self._store
        if time.monotonic() < self._store_due:
            return None
        try:
            store = open_store(self.store_url)
            try:
                store.alerts_prepare()
            except BaseException:
                store.close()
                raise
        except Exception as exc:
            self._store_unavailable(exc)
            return None
        self._store = store
        self._store_wait = _STORE_RETRY_S[0]
        return store

    def _store_unavailable(self, exc: BaseException) -> None:
        """Use the store again later (doubling the wait); say so once a minute."""
        self._store_due = time.monotonic() + self._store_wait
        warn_rate_limited(
            "alerts-store",
            "otel_usecase: budget alerts wait for the store %s (%s); trying again in %g s",
            redact_url(self.store_url),
            " ".join(str(exc).split())[:300] or type(exc).__name__,
            self._store_wait,
        )
        self._store_wait = min(self._store_wait * 2, _STORE_RETRY_S[1])

    def _finish(self, count: int = 1) -> None:
        with self._cond:
            self._outstanding -= count
            self._cond.notify_all()

    # claiming

    def _claim_waiting(self, store: Store) -> None:
        while self._waiting:
            crossing = self._waiting[0]
            try:
                self._claim(store, crossing)
            except StoreError as exc:
                self._store_unavailable(exc)
                return
            except Exception:
                logger.warning(
                    "otel_usecase: a budget crossing could not be turned into an alert", exc_info=True
                )
                self._finish()
            self._waiting.pop(0)
            self._store_wait = _STORE_RETRY_S[0]

    def _claim(self, store: Store, crossing: Crossing) -> None:
        key = AlertKey(crossing.budget.name, crossing.window_key, crossing.threshold)
        if key in self._handled or key in self._jobs:
            self._finish()
            return
        target = self._target(crossing.budget)
        if target is None:
            warn_rate_limited(
                f"alert-nowhere:{key.budget}",
                "otel_usecase: budget %r crossed %d%% but has no webhook and OTEL_USECASE_ALERT_WEBHOOK is "
                "not set: no alert sent (another process with a webhook may send it)",
                key.budget,
                key.threshold,
            )
            self._finish()
            return
        url, own = target
        body = payload(crossing)
        if store.alert_claim(ClaimedAlert(key, body.decode("utf-8"), own, 0), self._owner):
            self._jobs[key] = _Job(key, body, url, crossing.at_ns, due=time.monotonic())
        else:
            self._finish()  # another process claimed it first: it delivers
        self._remember(key)

    def _remember(self, key: AlertKey) -> None:
        self._handled[key] = None
        if len(self._handled) > _REMEMBERED:
            self._handled.popitem(last=False)

    def _target(self, budget: Budget) -> tuple[str, str | None] | None:
        """Where ``budget``'s alerts go: its own webhook (also stored in the row), else the default."""
        own = budget.webhook
        if own:
            problem = webhook_problem(own)
            if problem is None:
                return own, own
            warn_rate_limited(
                f"alert-webhook:{budget.name}",
                "otel_usecase: budget %r has a webhook that cannot be used (%s): its alerts go to %s",
                budget.name,
                problem,
                "OTEL_USECASE_ALERT_WEBHOOK" if self._default else "no webhook",
            )
        return (self._default, None) if self._default else None

    # leases

    def _sweep(self, store: Store) -> None:
        """Renew this process's claims, then take over claims whose owner stopped renewing them."""
        try:
            for job in list(self._jobs.values()):
                if not store.alert_renew(job.key, self._owner):
                    self._drop(job, "its claim was taken over or ended elsewhere")
            taken = store.alert_take_over(
                self._owner, int(self._lease_s * 1e9), self._default is not None, _TAKE_OVER_BATCH
            )
        except StoreError as exc:
            self._store_unavailable(exc)
            return
        for row in taken:
            self._adopt(store, row)

    def _adopt(self, store: Store, row: ClaimedAlert) -> None:
        """A claim taken over: deliver its stored body where it was going."""
        if row.key in self._jobs:  # our own claim, whose renewal came late: it is ours again, nothing new
            return
        with self._cond:
            self._outstanding += 1
        job = _Job(row.key, row.payload.encode("utf-8"), "", _crossed_ns(row.payload), row.attempts)
        self._jobs[row.key] = job
        self._remember(row.key)
        url = row.webhook or self._default
        problem = webhook_problem(url) if url else "no webhook"
        if url is None or problem is not None:
            job.record = (f"not sent: {problem}", None)
            return
        job.url = url
        logger.info(
            "otel_usecase: took over the alert of budget %r (%s, %d%%) after %d attempts by a process "
            "that stopped renewing its claim",
            row.key.budget,
            row.key.window_key,
            row.key.threshold,
            row.attempts,
        )

    def _drop(self, job: _Job, why: str) -> None:
        logger.warning(
            "otel_usecase: the alert of budget %r (%s, %d%%) is no longer this process's to send: %s",
            job.key.budget,
            job.key.window_key,
            job.key.threshold,
            why,
        )
        self._jobs.pop(job.key, None)
        self._finish()

    # delivery

    def _attempt(self, store: Store, job: _Job) -> None:
        """One step of ``job``: a POST (after renewing the claim) unless an outcome waits to be recorded."""
        try:
            if job.record is None:
                if not store.alert_renew(job.key, self._owner):
                    self._drop(job, "its claim was taken over or ended elsewhere")
                    return
                job.record = self._send(job)
            error, retry_in_ns = job.record
            recorded = store.alert_attempted(job.key, self._owner, error, retry_in_ns)
        except StoreError as exc:
            self._store_unavailable(exc)
            job.due = max(job.due, self._store_due)
            return
        job.record = None
        if not recorded:
            if error is None:
                logger.error(
                    "otel_usecase: the alert of budget %r (%s, %d%%) was delivered after its claim had been "
                    "taken over (the process stalled beyond the lease of %g s): it may arrive twice",
                    job.key.budget,
                    job.key.window_key,
                    job.key.threshold,
                    self._lease_s,
                )
            self._drop(job, "its claim was taken over or ended elsewhere")
            return
        if error is not None and retry_in_ns is not None:
            return  # waits for job.due
        self._jobs.pop(job.key, None)
        with self._cond:
            if error is None:
                self._delivered += 1
            else:
                self._given_up += 1
        self._finish()

    def _send(self, job: _Job) -> tuple[str | None, int | None]:
        """POST the job's body; the outcome to record (and log)."""
        headers: dict[str, str] = {}
        if self._secret:
            headers[SIGNATURE_HEADER] = signature_header(job.body, self._secret)
        else:
            _warn_unsigned()
        sent = post(job.url, job.body, headers, self._timeout_s)
        job.attempts += 1
        where = redact_webhook(job.url)
        what = (job.key.budget, job.key.window_key, job.key.threshold, where)
        if sent.delivered:
            logger.info("otel_usecase: alert of budget %r (%s, %d%%) delivered to %s", *what)
            return None, None
        expired = time.time_ns() - job.crossed_ns > self._retry_for_ns
        if sent.retry and not expired:
            delay = self._delay(job.attempts, sent.retry_after_s)
            job.due = time.monotonic() + delay
            warn_rate_limited(
                f"alert-retry:{where}",
                "otel_usecase: alert of budget %r (%s, %d%%) to %s failed (attempt %d: %s); retrying in %.1f s",
                *what,
                job.attempts,
                sent.detail,
                delay,
            )
            return sent.detail, int(delay * 1e9)
        reason = sent.detail
        if sent.retry:
            reason += f"; given up after retrying for {self._retry_for_ns / 1e9:g} s"
        logger.error(
            "otel_usecase: alert of budget %r (%s, %d%%) to %s was refused and is not retried: %s",
            *what,
            reason,
        )
        return reason, None

    def _delay(self, attempts: int, retry_after_s: float | None) -> float:
        """Exponential backoff with jitter (half fixed, half random), at least the receiver's Retry-After."""
        ceiling: float = min(self._max_backoff_s, self._backoff_s * float(2 ** min(attempts - 1, 30)))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, RETRY_AFTER_MAX_S))
        return delay


def _env_webhook() -> str | None:
    """``OTEL_USECASE_ALERT_WEBHOOK`` when it is a usable URL; else a warning (URL redacted) and None."""
    raw = config.ALERT_WEBHOOK.read()
    if raw is None:
        return None
    problem = webhook_problem(raw)
    if problem is None:
        return raw
    config.ALERT_WEBHOOK.warn_bad(
        redact_webhook(raw), problem, "alerts go only to budgets that name a webhook of their own"
    )
    return None


def _warn_unsigned() -> None:
    global _unsigned_warned
    if not _unsigned_warned:
        _unsigned_warned = True
        logger.warning(
            "otel_usecase: OTEL_USECASE_ALERT_SECRET is not set: budget alerts are sent without the %s "
            "header, so a receiver cannot tell them from forgeries",
            SIGNATURE_HEADER,
        )


def _crossed_ns(body: str) -> int:
    """The crossing time of a stored body (its ``time``); now if it cannot be read."""
    try:
        moment = datetime.fromisoformat(str(json.loads(body)["time"]))
        return int(moment.timestamp() * 1e9)
    except Exception:
        return time.time_ns()


@atexit.register
def _close_all() -> None:
    """At interpreter exit: every dispatcher gets its share of :data:`EXIT_S` to send what is pending."""
    deadline = time.monotonic() + EXIT_S
    for dispatcher in list(_live):
        dispatcher.close(max(deadline - time.monotonic(), 0.0))
