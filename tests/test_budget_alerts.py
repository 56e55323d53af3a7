"""Spend -> crossing -> webhook, end to end: real openai calls through the real instrumentation against
FakeOpenAI, the exporter's call sink, the spend tracker, the alert dispatcher, a real HTTP receiver.

Expected figures come from published prices (tests/expect.py): FakeOpenAI's default usage is 10 prompt
and 5 completion tokens, so each gpt-4o-mini call costs 10 * $0.15/M + 5 * $0.60/M.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from otel_usecase import track_context
from otel_usecase.budgets import registry as budget_registry
from otel_usecase.budgets import set_budget
from otel_usecase.testing import FakeOpenAI

from .expect import mini_cost, report_json
from .rigs import CostRig
from .test_budgets import _instrumented_env, known, today_utc, wait_until
from .webhooks import SECRET, Receiver

COST = mini_cost(10, 5)
MSG = [{"role": "user", "content": "hello"}]
BIN = Path(sys.executable).parent
APP = Path(__file__).parent / "apps" / "budget_app.py"


@pytest.fixture(autouse=True)
def _fast_refresh_and_secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OTEL_USECASE_BUDGET_REFRESH_S", "0.3")
    monkeypatch.setenv("OTEL_USECASE_ALERT_SECRET", SECRET)
    monkeypatch.delenv("OTEL_USECASE_ALERT_WEBHOOK", raising=False)
    budget_registry.reset()
    yield
    budget_registry.reset()


def bodies(receiver: Receiver) -> list[dict[str, object]]:
    return [json.loads(got.body) for got in receiver.deliveries()]


def test_real_calls_crossing_each_threshold_send_one_signed_alert_each(
    rig: CostRig, client: openai.OpenAI
) -> None:
    with Receiver() as receiver:
        set_budget(
            name="support-daily",
            use_case="support",
            amount_usd=2.5 * COST,
            mode="warn",
            webhook=receiver.url,  # the budget's own webhook (no env webhook in this test)
            store=rig.store_url,
        )
        tracker = budget_registry.tracker_for(rig.store_url)
        wait_until(lambda: known(tracker, "support-daily"), what="the tracker to read the budget")
        for _ in range(3):  # 40 %, 80 %, 120 % of the amount: crosses 80 then 100 (50 with the second call)
            with track_context("support"):
                client.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
            rig.flush()
        wait_until(lambda: len(receiver.deliveries()) >= 3, what="three alerts")
        seen = tracker.refreshes
        wait_until(lambda: tracker.refreshes >= seen + 3, what="three refreshes")  # refreshes re-tell nothing
        time.sleep(0.5)
        got = receiver.deliveries()

    assert len(got) == 3 and all(g.verified for g in got)  # signed with the secret, checked by our own hmac
    alerts = sorted(bodies(receiver), key=lambda b: b["threshold"])  # type: ignore[arg-type, return-value]
    assert [a["threshold"] for a in alerts] == [50, 80, 100]
    # 50 % and 80 % are both first reached by the second call (2 x COST = 80 %), 100 % by the third.
    assert [a["spent_usd"] for a in alerts] == [
        pytest.approx(2 * COST),
        pytest.approx(2 * COST),
        pytest.approx(3 * COST),
    ]
    for alert in alerts:
        assert alert["budget"] == "support-daily" and alert["mode"] == "warn"
        assert alert["limit_usd"] == pytest.approx(2.5 * COST)
        assert alert["selector"]["use_case"] == "support"  # type: ignore[index]
        assert alert["window"]["kind"] == "day" and alert["window"]["key"] == today_utc()  # type: ignore[index]
    assert len({a["id"] for a in alerts}) == 3
    assert [r["cost_usd"] for r in rig.report()] == [pytest.approx(3 * COST)]


def test_two_app_processes_crossing_the_same_threshold_send_one_alert(
    store_url: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    """Each process's own two calls take its view of the spend past 100 %: both see the crossing, one sends."""
    with Receiver() as receiver:
        set_budget(
            name="shared-cap",
            use_case="summarize",
            amount_usd=1.5 * COST,
            mode="block",
            thresholds=(100,),
            store=store_url,
        )
        env = {**_instrumented_env(store_url, tmp_path), "OTEL_USECASE_ALERT_WEBHOOK": receiver.url}
        env["OTEL_USECASE_ALERT_SECRET"] = SECRET
        env["OTEL_USECASE_BUDGET_REFRESH_S"] = "60"  # neither process reads the other's spend: both cross
        apps = [
            subprocess.Popen(
                [
                    str(BIN / "opentelemetry-instrument"),
                    sys.executable,
                    str(APP),
                    fake_openai.base_url,
                    "2",
                    "summarize",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        try:
            outputs = [app.communicate(timeout=120) for app in apps]
        finally:
            for app in apps:
                if app.poll() is None:
                    os.kill(app.pid, 9)
                    app.wait(10)
        for app, (out, err) in zip(apps, outputs):
            assert app.returncode == 0 and "FLUSHED" in out, err[-3000:]
        wait_until(lambda: receiver.deliveries(), what="the alert")
        time.sleep(2.0)  # a second delivery would come within this
        got = receiver.deliveries()

    assert len(got) == 1 and got[0].verified
    (alert,) = bodies(receiver)
    assert alert["budget"] == "shared-cap" and alert["threshold"] == 100 and alert["mode"] == "block"
    assert alert["spent_usd"] == pytest.approx(2 * COST)  # the sender's own two calls
    assert [r["cost_usd"] for r in report_json(store_url, "use-case")] == [pytest.approx(4 * COST)]
