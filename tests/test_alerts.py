"""Budget alerts against a real webhook receiver on 127.0.0.1, real app processes and real stores.

The receiver is a ``ThreadingHTTPServer`` that checks each request's signature the way
a user's receiver would (its own ``hmac`` code, below, not ours). Crossings are built
here directly (the spend tracker that produces them is tested with budgets).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from otel_usecase.budgets.alerts import AlertDispatcher
from otel_usecase.budgets.model import Budget, Crossing
from otel_usecase.store import open_store

from .servers import free_port
from .webhooks import SECRET, Receiver

APP = Path(__file__).parent / "apps" / "alert_app.py"
PARIS = ZoneInfo("Europe/Paris")
DAY_START = datetime(2026, 12, 2, tzinfo=PARIS)
DAY_END = DAY_START + timedelta(days=1)
WINDOW_KEY = DAY_START.isoformat()
NOW_NS = time.time_ns() // 10**6 * 10**6
"""When the test's crossings happened: now (retries stop a day after the crossing), to the millisecond."""


# --- helpers ------------------------------------------------------------------------------------


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def crossing(name: str = "support-bot-daily", *, threshold: int = 80, webhook: str | None = None) -> Crossing:
    budget = Budget(
        name=name,
        use_case="support_bot",
        amount_usd=10.0,
        window="day",
        timezone="Europe/Paris",
        user_id="u-42",
        webhook=webhook,
    )
    return Crossing(
        budget=budget,
        window_key=WINDOW_KEY,
        window_start_ns=int(DAY_START.timestamp()) * 10**9,
        window_end_ns=int(DAY_END.timestamp()) * 10**9,
        threshold=threshold,
        spent_usd=8.0125,
        limit_usd=10.0,
        at_ns=NOW_NS,
    )


def rows(store_url: str) -> list[dict[str, Any]]:
    store = open_store(store_url)
    try:
        names = (
            "budget",
            "window_key",
            "threshold",
            "claimed_by",
            "claimed_ns",
            "attempts",
            "next_ns",
            "delivered_ns",
            "last_error",
        )
        found = store.query(f"SELECT {', '.join(names)} FROM otel_usecase_alerts ORDER BY threshold")
        return [dict(zip(names, row)) for row in found]
    finally:
        store.close()


def dispatcher(store_url: str, webhook: str | None, **options: Any) -> AlertDispatcher:
    settings: dict[str, Any] = {
        "secret": SECRET,
        "lease_s": 60,
        "timeout_s": 5.0,
        "backoff_s": 0.1,
        "max_backoff_s": 0.4,
    }
    return AlertDispatcher(store_url, webhook=webhook, **{**settings, **options})


@pytest.fixture
def closing() -> Iterator[list[AlertDispatcher]]:
    """Dispatchers a test starts, closed at its end whatever happens."""
    started: list[AlertDispatcher] = []
    yield started
    for d in started:
        d.close(1.0)


class App:
    """``tests/apps/alert_app.py`` as a subprocess (stopped by the test, by PID)."""

    def __init__(
        self, store_url: str, webhook: str, go: Path, *, lease_s: float = 60, hold: bool = False
    ) -> None:
        c = crossing()
        args = {
            "store": store_url,
            "webhook": webhook,
            "secret": SECRET,
            "lease_s": lease_s,
            "timeout_s": min(5.0, lease_s / 3),
            "backoff_s": 0.1,
            "go": str(go),
            "hold": hold,
            "crossing": {
                "budget": {
                    k: getattr(c.budget, k)
                    for k in ("name", "use_case", "amount_usd", "window", "timezone", "user_id")
                },
                "window_key": c.window_key,
                "start_ns": c.window_start_ns,
                "end_ns": c.window_end_ns,
                "threshold": c.threshold,
                "spent": c.spent_usd,
                "limit": c.limit_usd,
                "at_ns": c.at_ns,
            },
        }
        self.proc = subprocess.Popen(
            [sys.executable, str(APP), json.dumps(args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("READY "), line + self.proc.stderr.read() if self.proc.stderr else line
        self.pid = int(line.split()[1])

    def finish(self, timeout: float = 90) -> tuple[dict[str, Any], str]:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err[-3000:]
        stats = next(line for line in out.splitlines() if line.startswith("STATS "))
        return json.loads(stats[len("STATS ") :]), err

    def kill(self) -> str:
        os.kill(self.pid, signal.SIGKILL)
        _, err = self.proc.communicate(timeout=30)
        return err


# --- the body, the signature, the row ---------------------------------------------------------------


def test_an_alert_arrives_once_signed_with_every_field(
    store_url: str, closing: list[AlertDispatcher]
) -> None:
    with Receiver() as receiver:
        d = dispatcher(store_url, receiver.url)
        closing.append(d)
        d.notify(crossing())
        d.notify(crossing())  # the tracker told twice: still one alert
        assert d.flush(30)
        (got,) = receiver.deliveries()
    assert got.verified and got.headers["Content-Type"] == "application/json"
    body = json.loads(got.body)
    assert body["budget"] == "support-bot-daily"
    assert body["selector"] == {
        "use_case": "support_bot",
        "user_id": "u-42",
        "experience_name": None,
        "version": None,
        "tags": {},
    }
    assert body["mode"] == "warn"
    window = body["window"]
    assert (window["kind"], window["key"], window["timezone"]) == ("day", WINDOW_KEY, "Europe/Paris")
    start, end = datetime.fromisoformat(window["start"]), datetime.fromisoformat(window["end"])
    assert (start, end) == (DAY_START, DAY_END) and start.utcoffset() == timedelta(hours=1)
    assert (body["spent_usd"], body["limit_usd"], body["threshold"]) == (8.0125, 10.0, 80)
    assert body["time"].endswith("Z") and datetime.fromisoformat(body["time"]) == datetime.fromtimestamp(
        NOW_NS / 1e9, UTC
    )
    assert "80%" in body["text"] and "$8.01 of $10.00" in body["text"]
    (row,) = rows(store_url)
    assert row["attempts"] == 1 and row["delivered_ns"] is not None and row["last_error"] is None
    assert d.stats().delivered == 1


def test_each_threshold_is_its_own_alert_and_the_id_is_stable(
    store_url: str, closing: list[AlertDispatcher]
) -> None:
    with Receiver() as receiver:
        d = dispatcher(store_url, receiver.url)
        closing.append(d)
        for threshold in (50, 80, 100):
            d.notify(crossing(threshold=threshold))
        assert d.flush(30)
        bodies = sorted((json.loads(g.body) for g in receiver.deliveries()), key=lambda b: b["threshold"])
    assert [b["threshold"] for b in bodies] == [50, 80, 100]
    assert len({b["id"] for b in bodies}) == 3
    assert [r["threshold"] for r in rows(store_url)] == [50, 80, 100]


# --- at most once across processes -------------------------------------------------------------------


def test_two_app_processes_notifying_the_same_crossing_at_once_deliver_it_once(
    sqlite_or_postgres: str, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    with Receiver() as receiver:
        apps = [App(sqlite_or_postgres, receiver.url, go) for _ in range(2)]
        go.touch()
        results = [app.finish() for app in apps]
        assert len(receiver.deliveries()) == 1
        assert receiver.deliveries()[0].verified
    assert sorted(stats["delivered"] for stats, _ in results) == [0, 1]
    assert all(stats["flushed"] and stats["lost"] == 0 for stats, _ in results)
    (row,) = rows(sqlite_or_postgres)
    assert row["attempts"] == 1 and row["delivered_ns"] is not None
    for _, err in results:
        assert SECRET not in err


def test_a_process_killed_after_claiming_is_delivered_by_another_dispatcher_after_the_lease(
    sqlite_or_postgres: str, tmp_path: Path, closing: list[AlertDispatcher]
) -> None:
    lease_s = 3.0
    port = free_port()
    webhook = f"http://127.0.0.1:{port}/hooks/budget"  # nothing listens: the owner keeps retrying
    go = tmp_path / "go"
    go.touch()
    app = App(sqlite_or_postgres, webhook, go, lease_s=lease_s, hold=True)
    try:
        owner_row = wait_for(
            lambda: [r for r in rows(sqlite_or_postgres) if r["attempts"] >= 1],
            "the app to claim and try once",
        )[0]
    finally:
        err = app.kill()  # a real SIGKILL: no close(), no release, the claim stays
    (last,) = rows(sqlite_or_postgres)
    assert f":{app.pid}:" in owner_row["claimed_by"] and owner_row["delivered_ns"] is None
    assert last["claimed_by"] == owner_row["claimed_by"]
    assert "Connection refused" in (owner_row["last_error"] or "")
    assert SECRET not in err
    with Receiver(port) as receiver:
        taker = dispatcher(sqlite_or_postgres, webhook, lease_s=lease_s, timeout_s=1.0)
        closing.append(taker)
        wait_for(receiver.deliveries, "the taker to deliver")
        time.sleep(lease_s)  # a second delivery would come within a lease
        (got,) = receiver.deliveries()
    assert got.verified and json.loads(got.body)["budget"] == "support-bot-daily"
    # Not before a whole lease after the killed owner's last renewal (the store's clock; SQLite's has ms).
    assert got.at_ns - last["claimed_ns"] >= lease_s * 1e9 - 2e6
    (row,) = rows(sqlite_or_postgres)
    assert f":{os.getpid()}:" in row["claimed_by"] and row["delivered_ns"] is not None
    assert row["attempts"] >= 2 and row["last_error"] is None


def test_a_live_owner_keeps_its_claim_past_the_lease_and_delivers_once(
    store_url: str, closing: list[AlertDispatcher]
) -> None:
    lease_s = 3.0
    port = free_port()
    webhook = f"http://127.0.0.1:{port}/hooks/budget"
    owner = dispatcher(store_url, webhook, lease_s=lease_s, timeout_s=1.0)
    other = dispatcher(store_url, webhook, lease_s=lease_s, timeout_s=1.0)
    closing += [owner, other]
    owner.notify(crossing())
    wait_for(lambda: [r for r in rows(store_url) if r["attempts"] >= 1], "the owner's first attempt")
    other.notify(crossing())  # the other process saw the same crossing: it is the owner's
    time.sleep(2 * lease_s)  # the owner, alive and retrying, renews; the other never takes it over
    (row,) = rows(store_url)
    assert row["delivered_ns"] is None and row["attempts"] >= 2
    claimed_by = row["claimed_by"]
    with Receiver(port) as receiver:
        assert owner.flush(30) and other.flush(30)
        time.sleep(lease_s)
        assert len(receiver.deliveries()) == 1
    (row,) = rows(store_url)
    assert row["claimed_by"] == claimed_by and row["delivered_ns"] is not None
    assert (owner.stats().delivered, other.stats().delivered) == (1, 0)


# --- retries ----------------------------------------------------------------------------------------


def test_receiver_down_then_back_is_delivered_once_after_recovery(
    store_url: str, closing: list[AlertDispatcher]
) -> None:
    port = free_port()
    d = dispatcher(store_url, f"http://127.0.0.1:{port}/hooks/budget")
    closing.append(d)
    d.notify(crossing())
    wait_for(lambda: [r for r in rows(store_url) if r["attempts"] >= 3], "three refused attempts")
    (row,) = rows(store_url)
    assert row["delivered_ns"] is None and row["next_ns"] is not None and "refused" in row["last_error"]
    with Receiver(port) as receiver:
        assert d.flush(30)
        time.sleep(1.0)  # four more backoffs: nothing else may arrive
        (got,) = receiver.deliveries()
    assert got.verified
    (row,) = rows(store_url)
    assert row["delivered_ns"] is not None and row["attempts"] >= 4 and row["last_error"] is None


def test_5xx_and_429_are_retried_to_one_success_with_the_same_signed_body(
    store_url: str, closing: list[AlertDispatcher]
) -> None:
    with Receiver(answers=[503, 500, 429, 200]) as receiver:
        d = dispatcher(store_url, receiver.url)
        closing.append(d)
        d.notify(crossing())
        assert d.flush(30)
        time.sleep(0.5)
        got = list(receiver.got)
    assert [g.status for g in got] == [503, 500, 429, 200]
    assert len({g.body for g in got}) == 1 and all(g.verified for g in got)
    assert got[3].at_ns - got[2].at_ns >= 0.99e9  # the 429's Retry-After: 1 beats the 0.4 s backoff
    (row,) = rows(store_url)
    assert row["attempts"] == 4 and row["delivered_ns"] is not None


def test_an_answer_that_never_ends_is_cut_at_twice_the_timeout_and_retried(
    store_url: str, closing: list[AlertDispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_usecase"), Receiver(answers=["drip", 200]) as receiver:
        # 2 s, not less: on a loaded machine the 200 that follows must come within the timeout
        d = dispatcher(store_url, receiver.url, timeout_s=2.0)
        closing.append(d)
        d.notify(crossing())
        assert d.flush(60)
        assert len(receiver.deliveries()) == 1
    assert any("no answer within 4 s" in r.getMessage() for r in caplog.records)
    (row,) = rows(store_url)
    assert row["attempts"] == 2 and row["delivered_ns"] is not None


def test_400_is_not_retried_and_is_logged(
    store_url: str, closing: list[AlertDispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="otel_usecase"), Receiver(answers=[400]) as receiver:
        d = dispatcher(store_url, receiver.url)
        closing.append(d)
        d.notify(crossing())
        assert d.flush(30)
        time.sleep(1.0)  # several backoffs: a retry would have come
        assert [g.status for g in receiver.got] == [400]
    (row,) = rows(store_url)
    assert row["delivered_ns"] is None and row["next_ns"] is None and row["attempts"] == 1
    assert "HTTP 400: bad hook: unknown channel" in row["last_error"]
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "support-bot-daily" in error.getMessage() and "HTTP 400" in error.getMessage()
    assert "not retried" in error.getMessage()
    assert d.stats().given_up == 1


# --- never blocks, bounded, fork ---------------------------------------------------------------------


def test_notify_never_blocks_a_full_queue_is_counted_and_logged_and_close_is_bounded(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_usecase"), Receiver(answers=["hang"]) as receiver:
        d = dispatcher(store_url, receiver.url, timeout_s=20.0, queue_size=2)
        d.notify(crossing(threshold=50))
        assert receiver.hanging.wait(30)  # the thread is inside a POST: the queue is not drained
        started = time.monotonic()
        for threshold in (80, 100, 110):
            d.notify(crossing(threshold=threshold))
        assert time.monotonic() - started < 1.0
        assert d.stats().lost == 1
        assert any("alert was lost" in r.getMessage() and "110%" in r.getMessage() for r in caplog.records)
        started = time.monotonic()
        d.close(1.0)
        assert time.monotonic() - started < 5.0  # the request's own timeout is 20 s
    assert d.stats().lost == 3  # the two queued crossings were never claimed: counted too


def test_a_forked_child_delivers_its_own_crossing_and_the_parent_goes_on(
    store_url: str, closing: list[AlertDispatcher]
) -> None:
    with Receiver() as receiver:
        d = dispatcher(store_url, receiver.url)
        closing.append(d)
        d.notify(crossing(threshold=50))
        assert d.flush(30)
        pid = os.fork()
        if pid == 0:  # the child: its own thread and store connection
            code = 1
            try:
                d.notify(crossing(threshold=80))
                code = 0 if d.flush(30) and d.stats().delivered == 1 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        d.notify(crossing(threshold=100))
        assert d.flush(30)
        thresholds = sorted(json.loads(g.body)["threshold"] for g in receiver.deliveries())
    assert thresholds == [50, 80, 100]
    assert [r["delivered_ns"] is not None for r in rows(store_url)] == [True, True, True]


# --- settings and secrets -----------------------------------------------------------------------------


def test_the_secret_and_url_credentials_never_appear_in_logs(
    store_url: str, closing: list[AlertDispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="otel_usecase"), Receiver(answers=[500, 400]) as receiver:
        port = receiver.server.server_address[1]
        webhook = f"http://hookuser:hookpass-9x@127.0.0.1:{port}/hooks/T0/B0/pathsecret?token=querysecret"
        d = dispatcher(store_url, webhook)
        closing.append(d)
        d.notify(crossing(threshold=50))
        assert d.flush(30)
        down = f"http://hookuser:hookpass-9x@127.0.0.1:{free_port()}/x/pathsecret?token=querysecret"
        d2 = dispatcher(store_url, None, retry_for_s=0)
        closing.append(d2)
        d2.notify(crossing("other", webhook=down))
        assert d2.flush(30)
        (got,) = receiver.got[-1:]
    assert got.headers["Authorization"].startswith("Basic ")  # userinfo is sent as Basic auth
    logged = "\n".join(
        r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
        for r in caplog.records
    )
    assert "HTTP 500" in logged and "HTTP 400" in logged and "127.0.0.1" in logged
    for secret in (SECRET, "hookpass-9x", "pathsecret", "querysecret", "hookuser"):
        assert secret not in logged


def test_a_bad_webhook_env_value_warns_naming_it_and_falls_back(
    store_url: str,
    closing: list[AlertDispatcher],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_USECASE_ALERT_WEBHOOK", "ftp://u:topsecret@hooks.example.com/x?token=t0ken")
    with caplog.at_level(logging.WARNING, logger="otel_usecase"), Receiver() as receiver:
        d = dispatcher(store_url, None)
        closing.append(d)
        (warning,) = [
            r.getMessage() for r in caplog.records if "OTEL_USECASE_ALERT_WEBHOOK" in r.getMessage()
        ]
        assert "must start with http:// or https://" in warning and "ftp://hooks.example.com/…" in warning
        assert "topsecret" not in warning and "t0ken" not in warning
        d.notify(crossing("no-webhook"))  # nowhere to send it: not claimed, so another process may
        d.notify(crossing("own-webhook", webhook=receiver.url))  # a budget's own webhook still works
        assert d.flush(30)
        bodies = [json.loads(g.body)["budget"] for g in receiver.deliveries()]
    assert bodies == ["own-webhook"]
    assert [r["budget"] for r in rows(store_url)] == ["own-webhook"]
    with pytest.raises(ValueError, match="must start with http"):
        AlertDispatcher(store_url, webhook="ftp://hooks.example.com/x")


def test_without_a_secret_alerts_go_unsigned_with_one_warning(
    store_url: str,
    closing: list[AlertDispatcher],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from otel_usecase.budgets import alerts

    monkeypatch.delenv("OTEL_USECASE_ALERT_SECRET", raising=False)
    monkeypatch.setattr(alerts, "_unsigned_warned", False)
    with caplog.at_level(logging.WARNING, logger="otel_usecase"), Receiver() as receiver:
        d = AlertDispatcher(store_url, webhook=receiver.url, backoff_s=0.1)
        closing.append(d)
        for threshold in (50, 80):
            d.notify(crossing(threshold=threshold))
        assert d.flush(30)
        got = receiver.deliveries()
    assert len(got) == 2 and all("X-Otel-Usecase-Signature" not in g.headers for g in got)
    warnings = [r.getMessage() for r in caplog.records if "OTEL_USECASE_ALERT_SECRET" in r.getMessage()]
    assert len(warnings) == 1 and "without the X-Otel-Usecase-Signature header" in warnings[0]


def test_a_store_made_before_alerts_existed_gets_the_table(
    sqlite_or_postgres: str, closing: list[AlertDispatcher]
) -> None:
    open_store(sqlite_or_postgres).close()
    # As a current ledger written by the previous version: migrate() runs no DDL on it, no alerts table.
    if sqlite_or_postgres.startswith("postgresql"):
        import psycopg

        with psycopg.connect(sqlite_or_postgres, autocommit=True) as conn:
            conn.execute("DROP TABLE otel_usecase_alerts")
    else:
        import sqlite3

        with sqlite3.connect(sqlite_or_postgres[len("sqlite:///") :]) as conn:
            conn.execute("DROP TABLE otel_usecase_alerts")
    store_url = sqlite_or_postgres
    with Receiver() as receiver:
        d = dispatcher(store_url, receiver.url)
        closing.append(d)
        d.notify(crossing())
        assert d.flush(30)
        assert len(receiver.deliveries()) == 1
    assert len(rows(store_url)) == 1


def test_the_readme_receiver_snippet_accepts_a_real_alert_and_refuses_forgeries_and_replays(
    store_url: str, closing: list[AlertDispatcher]
) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    (snippet,) = [
        block for block in re.findall(r"```python\n(.*?)```", section, re.DOTALL) if "def accept" in block
    ]
    receiver_code: dict[str, Any] = {}
    exec(snippet, receiver_code)  # noqa: S102 - the README's own snippet, run as a user would paste it
    receiver_code["SECRET"] = SECRET.encode()
    with Receiver() as receiver:
        d = dispatcher(store_url, receiver.url)
        closing.append(d)
        d.notify(crossing())
        assert d.flush(30)
        (got,) = receiver.deliveries()
    signature = got.headers["X-Otel-Usecase-Signature"]
    accept = receiver_code["accept"]
    assert accept(got.body.replace(b"8.0125", b"0.0125"), signature) is None  # a forged body
    assert accept(got.body, None) is None  # unsigned
    assert accept(got.body, signature)["budget"] == "support-bot-daily"
    assert accept(got.body, signature) is None  # the same alert again: a replay


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("hooks.example.com/x", "must start with http:// or https://"),
        ("ftp://hooks.example.com/x", "must start with http:// or https://"),
        ("https:///x", "must name a host"),
        ("https://hooks.example.com:99999/x", "valid host and port"),
        ("https://hooks.example.com/a b", "spaces or control characters"),
        ("", "non-empty URL"),
    ],
)
def test_a_bad_webhook_argument_raises_naming_the_rule(url: str, rule: str, store_url: str) -> None:
    with pytest.raises(ValueError, match=re.escape(rule)):
        AlertDispatcher(store_url, webhook=url)
