"""``otel-usecase serve`` says what is wrong in one line: a port in use, a missing extra, a bad setting.

The real console script in a subprocess, with real sockets holding the ports.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_usecase.store import open_store

from .servers import BIN, ServeProcess, free_port


def serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``otel-usecase serve`` expecting it to stop on its own (it fails to start)."""
    return subprocess.run(
        [str(BIN / "otel-usecase"), "serve", "--store", f"sqlite:///{tmp_path}/cli.db", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_port_in_use_is_one_clear_line_and_exit_1(tmp_path: Path, taken_port: int, protocol: str) -> None:
    ports = {"http": free_port(), "grpc": free_port(), protocol: taken_port}
    done = serve(tmp_path, "--http", f"127.0.0.1:{ports['http']}", "--grpc", f"127.0.0.1:{ports['grpc']}")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr  # no announcement before it, no gRPC log line, no traceback
    assert f"127.0.0.1:{taken_port}" in lines[0] and "already in use" in lines[0]
    assert f"OTLP/{'HTTP' if protocol == 'http' else 'gRPC'}" in lines[0] and f"--{protocol}" in lines[0]


def test_both_protocols_on_one_port_is_refused_before_starting(tmp_path: Path) -> None:
    port = free_port()
    done = serve(tmp_path, "--http", f"127.0.0.1:{port}", "--grpc", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert f"OTLP/gRPC on 127.0.0.1:{port}" in done.stderr and "already in use" in done.stderr


BLOCKER = '''
import importlib.abc, sys

class _Missing(importlib.abc.MetaPathFinder):
    """As if {names} were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {names!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _Missing())
'''


@pytest.mark.parametrize("missing", ["uvicorn", "grpc"])
def test_without_the_serve_extra_it_names_the_extra(tmp_path: Path, missing: str) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER.format(names={missing}))
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    done = serve(
        tmp_path,
        "--http",
        f"127.0.0.1:{free_port()}",
        "--grpc",
        f"127.0.0.1:{free_port()}",
        env={"PYTHONPATH": path},
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"otel-usecase: serve needs the 'serve' extra ({missing} is missing): pip install 'otel-usecase[serve]'"
    )
    # the blocker is what made it fail: the same command reports works without it
    open_store(f"sqlite:///{tmp_path}/cli.db").close()  # reports read an existing store only
    assert (
        subprocess.run(
            [str(BIN / "otel-usecase"), "report", "--store", f"sqlite:///{tmp_path}/cli.db"],
            env={**os.environ, "PYTHONPATH": path},
            capture_output=True,
            timeout=60,
            check=False,
        ).returncode
        == 0
    )


def _announced(server: ServeProcess) -> str:
    code, err = server.terminate()
    assert code == 0
    return err.splitlines()[0]


def test_read_timeout_from_the_flag_the_env_or_the_default(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/cli.db"
    with ServeProcess(store) as server:
        assert _announced(server).endswith("read timeout 30 s")
    with ServeProcess(store, env={"OTEL_USECASE_READ_TIMEOUT": "7"}) as server:
        assert _announced(server).endswith("read timeout 7 s")
    with ServeProcess(store, "--read-timeout", "2.5", env={"OTEL_USECASE_READ_TIMEOUT": "7"}) as server:
        assert _announced(server).endswith("read timeout 2.5 s")
    with ServeProcess(store, env={"OTEL_USECASE_READ_TIMEOUT": "soon"}) as server:
        code, err = server.terminate()
    assert code == 0
    assert "OTEL_USECASE_READ_TIMEOUT='soon' is not accepted" in err and "Using the default (30)" in err
    assert "read timeout 30 s" in err
    done = serve(tmp_path, "--read-timeout", "0")
    assert done.returncode == 2 and "--read-timeout must be positive" in done.stderr
