"""SIGTERM (how Docker, Kubernetes and systemd stop every deployment) loses no call.

Each app runs under the real ``opentelemetry-instrument``; its calls' spans are
still in the SDK's queue (5 s schedule delay) when the signal arrives. gunicorn
(SIGTERM to the arbiter) is covered in ``test_fork.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from otel_usecase.testing import FakeOpenAI, FakeUsage

from .expect import mini_cost, report_json
from .servers import BIN, free_port
from .test_fork import APPS, CALLS_PER_REQUEST, WebServer, instrumented_env

SCRIPT_CALLS = 25


@pytest.fixture
def answering(fake_openai: FakeOpenAI) -> FakeOpenAI:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=100))
    return fake_openai


def start_script(
    argv_prefix: list[str], store_url: str, fake: FakeOpenAI, *args: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *argv_prefix,
            str(BIN / "opentelemetry-instrument"),
            str(BIN / "python"),
            str(APPS / "llm_script.py"),
            fake.base_url,
            str(SCRIPT_CALLS),
            *args,
        ],
        env=instrumented_env(store_url, fake),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(proc: subprocess.Popen[str], prefix: str, timeout: float = 120) -> str:
    """The first stdout line starting with ``prefix`` (the script prints and flushes them)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"no {prefix!r} line; stderr:\n{proc.communicate(timeout=10)[1]}")


def stop(proc: subprocess.Popen[str], pid: int | None = None, timeout: float = 30) -> tuple[int, str, str]:
    """SIGTERM to ``pid`` (default: the process itself); returns (exit code, stdout, stderr)."""
    os.kill(pid if pid is not None else proc.pid, signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"still running {timeout} s after SIGTERM\n{err}") from None
    return proc.returncode, out, err


def assert_script_calls_stored(store_url: str) -> None:
    (row,) = report_json(store_url, "run")
    assert (row["run_id"], row["calls"]) == ("script-run", SCRIPT_CALLS)
    assert row["cost_usd"] == pytest.approx(SCRIPT_CALLS * mini_cost(1_000, 100))


@pytest.mark.parametrize("handler", ["default", "own-handler"])
def test_sigterm_to_a_plain_script_keeps_its_calls_and_it_still_dies_of_sigterm(
    handler: str, store_url: str, answering: FakeOpenAI
) -> None:
    proc = start_script([], store_url, answering, handler)
    wait_for_line(proc, f"MADE {SCRIPT_CALLS}")
    code, out, err = stop(proc)
    assert code == -signal.SIGTERM, err  # killed by the signal, as without the exporter
    if handler == "own-handler":
        assert "APP HANDLER RAN" in out  # the app's handler ran (and chained to ours)
    assert_script_calls_stored(store_url)


def _child_pid(parent: int, timeout: float = 60) -> int:
    """The pid (in our namespace) of ``parent``'s only child."""
    children = Path(f"/proc/{parent}/task/{parent}/children")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = children.read_text().split()
        if found:
            return int(found[0])
        time.sleep(0.05)
    raise AssertionError(f"process {parent} has no child")


def test_sigterm_to_pid_1_keeps_its_calls_and_exits_143(store_url: str, answering: FakeOpenAI) -> None:
    """``docker run`` style: the app is PID 1 of its PID namespace, where SIGTERM's default action does nothing."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1) here: PID namespaces cannot be made")
    probe = subprocess.run(
        [unshare, "--pid", "--fork", "--mount-proc", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"no PID namespaces here (unshare: {probe.stderr!r})")
    proc = start_script([unshare, "--pid", "--fork", "--mount-proc"], store_url, answering)
    assert wait_for_line(proc, "PID ") == "1"
    wait_for_line(proc, f"MADE {SCRIPT_CALLS}")
    app = _child_pid(proc.pid)  # the app, PID 1 inside; signalled from outside, as `docker stop` does
    code, _, err = stop(proc, pid=app)
    assert code == 128 + signal.SIGTERM, err
    assert_script_calls_stored(store_url)


def test_sigterm_to_uvicorn_keeps_the_last_requests_calls(store_url: str, answering: FakeOpenAI) -> None:
    port = free_port()
    server = WebServer(
        [
            str(BIN / "opentelemetry-instrument"),
            str(BIN / "uvicorn"),
            "tests.apps.llm_service:asgi_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        instrumented_env(store_url, answering),
        port,
    )
    try:
        runs = [f"req-{i}" for i in range(12)]
        server.requests(runs)
        code, out, _ = server.terminate()
    finally:
        server.kill()
    assert code == -signal.SIGTERM, out  # uvicorn re-raises the signal after its graceful shutdown
    rows = {r["run_id"]: r for r in report_json(store_url, "run")}
    assert sorted(rows) == sorted(runs), out
    assert all(r["calls"] == CALLS_PER_REQUEST for r in rows.values())
    assert sum(r["cost_usd"] for r in rows.values()) == pytest.approx(
        len(runs) * CALLS_PER_REQUEST * mini_cost(1_000, 100)
    )


def test_an_app_handler_installed_before_the_exporter_is_never_replaced(store_url: str) -> None:
    from otel_usecase import UseCaseCostExporter

    def app_handler(signum: int, frame: object) -> None:
        raise AssertionError("not called in this test")

    previous = signal.signal(signal.SIGTERM, app_handler)
    try:
        exporter = UseCaseCostExporter(store=store_url)
        assert signal.getsignal(signal.SIGTERM) is app_handler
        exporter.shutdown()
    finally:
        signal.signal(signal.SIGTERM, previous)
