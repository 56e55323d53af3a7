"""Wiring 2: ``opentelemetry-instrument`` with nothing but the package installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from opentelemetry import trace

from otel_usecase.processor import add_to_global_provider
from otel_usecase.testing import FakeOpenAI

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
