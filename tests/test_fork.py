"""fork(): pre-forked gunicorn workers (sync and uvicorn) and multiprocessing children record every call.

The exporter is created before the fork (``--preload`` under ``opentelemetry-instrument``,
as users run it), while exports run; each worker must start with its own buffer,
lock, writer thread and store connection, and never hang.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_usecase.testing import FakeOpenAI, FakeUsage

from .expect import mini_cost, report_json
from .pg import PostgresServer
from .servers import BIN, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
CALLS_PER_REQUEST = 3  # tests/apps/llm_service.py: CALLS


def instrumented_env(store_url: str, fake_openai: FakeOpenAI, **extra: str) -> dict[str, str]:
    """The environment of an app run under ``opentelemetry-instrument`` with the usecase exporter."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OTEL_SERVICE_NAME": "fork-test",
        "OTEL_TRACES_EXPORTER": "usecase",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_USECASE_STORE": store_url,
        "FAKE_OPENAI_URL": fake_openai.base_url,
        **extra,
    }


class WebServer:
    """A real server process (gunicorn or uvicorn) on a free loopback port, stopped by SIGTERM."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, cwd: Path = ROOT) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            wait_for_port(port, timeout=60, proc=self.proc)
        except BaseException as exc:
            self.kill()
            raise AssertionError(
                f"{argv} did not start: {exc}\n{self.proc.stdout.read() if self.proc.stdout else ''}"
            ) from exc

    def get(self, run: str) -> str:
        url = f"http://127.0.0.1:{self.port}/?run={run}"
        with urllib.request.urlopen(url, timeout=60) as response:
            assert response.status == 200
            return str(response.read().decode())

    def requests(self, runs: list[str], threads: int = 4) -> set[str]:
        """Send one request per run id from ``threads`` threads; returns the pids that answered."""
        answers: list[str] = []
        errors: list[BaseException] = []

        def client(mine: list[str]) -> None:
            try:
                answers.extend(self.get(run) for run in mine)
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=client, args=(runs[i::threads],)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert not errors, errors
        assert len(answers) == len(runs) and all(a.startswith("ok ") for a in answers)
        return {a.split()[1] for a in answers}

    def terminate(self, timeout: float = 60) -> tuple[int, str, float]:
        """SIGTERM (as Docker, Kubernetes and systemd stop it); returns (exit code, output, seconds to exit)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running {timeout} s after SIGTERM (a worker hangs)") from None
        return self.proc.returncode, out, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


_databases = iter(range(1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("pg_server")
        return server.create_database(f"fork_{next(_databases)}_{os.getpid()}")
    return "sqlite:///" + str(tmp_path / "costs.db")


@pytest.fixture
def answering(fake_openai: FakeOpenAI) -> FakeOpenAI:
    fake_openai.respond(usage=FakeUsage(prompt_tokens=1_000, completion_tokens=100))
    return fake_openai


def gunicorn_argv(worker: str, port: int, tmp_path: Path) -> list[str]:
    argv = [
        str(BIN / "opentelemetry-instrument"),
        str(BIN / "gunicorn"),
        "--preload",
        "--workers",
        "4",
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "20",
    ]
    if worker == "sync":
        return [*argv, "tests.apps.llm_service:application"]
    config = tmp_path / "gunicorn_conf.py"
    config.write_text("from otel_usecase.lifecycle import gunicorn_post_worker_init as post_worker_init\n")
    return [
        *argv,
        "-c",
        str(config),
        "--worker-class",
        "uvicorn.workers.UvicornWorker",
        "tests.apps.llm_service:asgi_app",
    ]


@pytest.mark.parametrize("worker", ["sync", "uvicorn"])
def test_gunicorn_preload_4_workers_store_every_request_and_stop_on_sigterm(
    worker: str, any_store_url: str, answering: FakeOpenAI, tmp_path: Path
) -> None:
    port = free_port()
    server = WebServer(
        gunicorn_argv(worker, port, tmp_path), instrumented_env(any_store_url, answering), port
    )
    try:
        runs = [f"req-{i}" for i in range(40)]
        pids = server.requests(runs)
        code, out, seconds = server.terminate()
    finally:
        server.kill()
    assert code == 0, out
    assert seconds < 20, out  # no worker waited out the graceful timeout
    assert len(pids) >= 2, pids  # the requests really were spread over forked workers
    rows = {r["run_id"]: r for r in report_json(any_store_url, "run")}
    assert sorted(rows) == sorted(runs), out
    assert all(r["calls"] == CALLS_PER_REQUEST for r in rows.values())
    assert sum(r["cost_usd"] for r in rows.values()) == pytest.approx(
        len(runs) * CALLS_PER_REQUEST * mini_cost(1_000, 100)
    )


def _run_app(name: str, store_url: str, fake: FakeOpenAI) -> subprocess.CompletedProcess[str]:
    """Run ``tests/apps/NAME STORE_URL FAKE_URL`` to its end, output captured."""
    return subprocess.run(
        [sys.executable, str(APPS / name), store_url, fake.base_url],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_multiprocessing_fork_children_record_their_calls_with_one_flush_call(
    store_url: str, answering: FakeOpenAI
) -> None:
    done = _run_app("llm_multiprocessing.py", store_url, answering)
    assert done.returncode == 0, done.stderr
    parent_made = int(done.stdout.split("PARENT_MADE ")[1].split()[0])
    rows = {r["run_id"]: r["calls"] for r in report_json(store_url, "run")}
    assert rows == {"child-0": 5, "child-1": 5, "child-2": 5, "child-3": 5, "parent-run": parent_made}
    total = sum(r["cost_usd"] for r in report_json(store_url, "run"))
    assert total == pytest.approx((20 + parent_made) * mini_cost(1_000, 100))


def test_fork_while_the_writer_is_stuck_in_a_write_child_records_its_own_calls(
    store_url: str, answering: FakeOpenAI
) -> None:
    done = _run_app("fork_during_export.py", store_url, answering)
    assert done.returncode == 0, done.stderr
    assert "CHILD_EXIT 0" in done.stdout, done.stdout + done.stderr  # it neither hung nor failed to flush
    rows = {r["run_id"]: r for r in report_json(store_url, "run")}
    assert {run: r["calls"] for run, r in rows.items()} == {"parent": 4, "child": 4}
    assert sum(r["cost_usd"] for r in rows.values()) == pytest.approx(8 * mini_cost(1_000, 100))
