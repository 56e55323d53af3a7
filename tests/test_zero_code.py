"""Wiring 2: ``opentelemetry-instrument`` with nothing but the package installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

from otel_usecase.processor import add_to_global_provider
from otel_usecase.testing import FakeOpenAI, FakeUsage

from .expect import mini_cost, report_json

APP = Path(__file__).parent / "apps" / "zero_code_app.py"
BIN = Path(sys.executable).parent


def console_spans(stdout: str) -> list[dict[str, Any]]:
    """Parse the JSON objects that the console span exporter prints one after another."""
    decoder = json.JSONDecoder()
    spans, pos = [], 0
    while True:
        start = stdout.find("{", pos)
        if start < 0:
            return spans
        span, pos = decoder.raw_decode(stdout, start)
        spans.append(span)


def run_instrumented(base_url: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "zero-code-test",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        **extra_env,
    }
    return subprocess.run(
        [str(BIN / "opentelemetry-instrument"), sys.executable, str(APP), base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def result_line(stderr: str) -> dict[str, Any]:
    line = next(line for line in stderr.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_opentelemetry_instrument_stamps_llm_spans_with_zero_code() -> None:
    with FakeOpenAI() as server:
        proc = run_instrumented(server.base_url)
    result = result_line(proc.stderr)
    assert result["provider"] == "TracerProvider"
    assert result["usecase_processors"] == 1  # added once by the entry point, never twice
    spans = console_spans(proc.stdout)
    llm = [s for s in spans if s["attributes"].get("gen_ai.operation.name") == "chat"]
    assert llm, "no LLM span exported"  # one per installed OpenAI instrumentation
    for span in llm:
        assert span["attributes"]["usecase.name"] == "zero_code_case"
        assert span["attributes"]["usecase.id"] == result["use_case_id"]
        assert span["attributes"]["user.id"] == "u-zero"
    http = [s for s in spans if s["attributes"].get("http.method") == "POST"]
    assert http and all("usecase.name" not in s["attributes"] for s in http)  # only LLM spans


def test_opentelemetry_instrument_can_be_told_not_to_add_it() -> None:
    with FakeOpenAI() as server:
        proc = run_instrumented(server.base_url, OTEL_USECASE_ENABLED="false")
    assert result_line(proc.stderr)["usecase_processors"] == 0
    llm = [s for s in console_spans(proc.stdout) if s["attributes"].get("gen_ai.operation.name") == "chat"]
    assert llm and all("usecase.name" not in s["attributes"] for s in llm)


def test_hook_is_a_no_op_without_an_sdk_provider(caplog: Any) -> None:
    import logging

    assert not hasattr(trace.get_tracer_provider(), "add_span_processor")
    with caplog.at_level(logging.DEBUG, logger="otel_usecase"):
        assert add_to_global_provider() is None
    assert "not an SDK TracerProvider" in caplog.text


# --- a setting never switches telemetry off ------------------------------------------------------

SETTINGS_APP = Path(__file__).parent / "apps" / "settings_app.py"
SETTINGS_USAGE = FakeUsage(prompt_tokens=1_000, completion_tokens=200)


@dataclass(frozen=True)
class BadSetting:
    """One bad value, the entry point that reads it, and what the warning must say is accepted."""

    variable: str
    value: str
    entry_point: str
    accepted: str


BAD_SETTINGS = [
    BadSetting("OTEL_USECASE_STORE", "mysql://u@h/db", "exporter", "postgresql://"),
    BadSetting("OTEL_USECASE_STORE", "sqlite://costs.db", "exporter", "sqlite:///relative.db"),
    BadSetting("OTEL_USECASE_PRICES", "{tmp}/missing.toml", "exporter", "prices TOML file"),
    BadSetting("OTEL_USECASE_PRICES", "{tmp}/broken.toml", "exporter", "prices TOML file"),
    BadSetting("OTEL_USECASE_BUFFER", "lots", "exporter", "whole number"),
    BadSetting("OTEL_USECASE_METRIC_ATTRIBUTES", "user.id,email", "exporter", "list of user.id"),
    BadSetting("OTEL_USECASE_ENABLED", "maybe", "hook", "true or false"),
    BadSetting("OTEL_USECASE_SPANS", "everything", "hook", "llm or all"),
    BadSetting("OTEL_USECASE_DEFAULT_NAME", "bad name!", "hook", "letters, digits"),
    BadSetting("OTEL_USECASE_INBOUND_KEYS", "tenant", "propagator", "comma-separated list"),
    BadSetting("OTEL_USECASE_OUTBOUND_KEYS", "everything", "propagator", "comma-separated list"),
    BadSetting("OTEL_USECASE_USER_ID_HMAC_KEY", "k3y-s3cr3t", "propagator", "at least 16"),
]


def _run_with_bad_setting(
    tmp_path: Path, bad: BadSetting, exporters: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "broken.toml").write_text('[models."gpt-4o-mini"]\ninput = "cheap"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "XDG_DATA_HOME"))}
    if env.get("PYTHONPATH"):  # the app runs in tmp_path: keep a relative PYTHONPATH=src pointing here
        env["PYTHONPATH"] = os.pathsep.join(
            str(Path(p).resolve()) for p in env["PYTHONPATH"].split(os.pathsep)
        )
    env.update(
        {
            "OTEL_SERVICE_NAME": "settings-test",
            "OTEL_TRACES_EXPORTER": exporters,
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_PROPAGATORS": "tracecontext,usecase_baggage",
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "langchain,openai_agents",  # unused here, slow to load
            "XDG_DATA_HOME": str(tmp_path / "xdg"),  # where the default store is, and the fallback
            "OTEL_USECASE_STORE": "sqlite:///" + str(tmp_path / "configured.db"),
            bad.variable: bad.value.format(tmp=tmp_path),
        }
    )
    with FakeOpenAI(usage=SETTINGS_USAGE) as server:
        return subprocess.run(
            [str(BIN / "opentelemetry-instrument"), sys.executable, str(SETTINGS_APP), server.base_url],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )


@pytest.mark.parametrize("bad", BAD_SETTINGS, ids=[f"{b.variable}={b.value}" for b in BAD_SETTINGS])
def test_a_bad_setting_warns_and_every_entry_point_keeps_working(tmp_path: Path, bad: BadSetting) -> None:
    """``opentelemetry-instrument`` with one bad OTEL_USECASE_* value: the SDK configures, everything exports."""
    exporters = "usecase,console" if bad.value == "sqlite://costs.db" else "console,usecase"
    proc = _run_with_bad_setting(tmp_path, bad, exporters)
    assert proc.returncode == 0, proc.stderr
    assert "Failed to auto initialize" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr

    # the warning names the variable, the value and what is accepted
    warning = next((line for line in proc.stderr.splitlines() if bad.variable in line), "")
    if bad.variable == "OTEL_USECASE_USER_ID_HMAC_KEY":  # a secret: its length is shown, never its value
        assert "is 10 bytes long" in warning and bad.value not in proc.stderr + proc.stdout, warning
    else:
        assert repr(bad.value.format(tmp=tmp_path)) in warning, proc.stderr
    assert bad.accepted in warning, warning

    result = result_line(proc.stderr)
    # the propagator entry point was loaded and its inbound rule is the default (none of our keys)
    assert result["propagators"] == ["TraceContextTextMapPropagator", "UseCaseBaggagePropagator"]
    assert result["inbound"] == {"tenant": "acme"}
    # the console exporter printed the LLM call, and the hook's span processor stamped it
    llm = [s for s in console_spans(proc.stdout) if s["attributes"].get("gen_ai.operation.name") == "chat"]
    assert llm, proc.stdout[-2000:]
    for span in llm:
        assert span["attributes"]["usecase.name"] == "settings_case"
    # the usecase exporter priced the call into the configured store, or the default one for a bad URL
    store = tmp_path / (
        "xdg/otel-usecase/costs.db" if bad.variable == "OTEL_USECASE_STORE" else "configured.db"
    )
    (row,) = report_json("sqlite:///" + str(store), "use-case")
    assert (row["use_case"], row["calls"]) == ("settings_case", 1)
    assert row["cost_usd"] == pytest.approx(mini_cost(1_000, 200), rel=1e-9)  # genai-prices alone
    assert not (tmp_path / "costs.db").exists()  # nothing made up from the bad URL

    if bad.variable == "OTEL_USECASE_USER_ID_HMAC_KEY":  # too short: user ids are dropped, never sent raw
        assert result["user_id"] is None
        assert all("user.id" not in s["attributes"] for s in llm)
        assert "u-settings" not in proc.stdout
    else:
        assert result["user_id"] == "u-settings"
