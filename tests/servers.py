"""Processes the tests start on loopback and stop themselves: ``otel-usecase serve`` and rotel."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

BIN = Path(sys.executable).parent


class LoopbackHTTPServer:
    """A ``ThreadingHTTPServer`` serving ``handler`` on 127.0.0.1 (a free port) in a daemon thread.

    Started at construction; stopped by :meth:`close` or by leaving a ``with`` block.
    """

    def __init__(self, handler: type[BaseHTTPRequestHandler], path: str = "/") -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self._path = path

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}{self._path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def __enter__(self) -> LoopbackHTTPServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class ServeProcess:
    """``otel-usecase serve`` as a real subprocess on free loopback ports."""

    def __init__(
        self, store_url: str, *extra: str, env: dict[str, str] | None = None, instrumented: bool = False
    ) -> None:
        """``instrumented``: run it under ``opentelemetry-instrument`` (its SDK pipelines from ``env``)."""
        self.store_url = store_url
        self.instrumented = instrumented
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.extra = extra
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/traces"

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> ServeProcess:
        self.proc = subprocess.Popen(
            [
                *([str(BIN / "opentelemetry-instrument")] if self.instrumented else []),
                str(BIN / "otel-usecase"),
                "serve",
                "--http",
                f"127.0.0.1:{self.http_port}",
                "--grpc",
                f"127.0.0.1:{self.grpc_port}",
                "--store",
                self.store_url,
                *self.extra,
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for_port(self.http_port, timeout=60 if self.instrumented else 20, proc=self.proc)
        wait_for_port(self.grpc_port, proc=self.proc)
        return self

    def healthz(self) -> dict[str, Any]:
        import json

        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=5) as response:
            return json.loads(response.read())

    def terminate(self, timeout: float = 30) -> tuple[int, str]:
        """SIGTERM and wait; returns (exit code, stderr)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                self.kill()


class RotelProcess:
    """The rotel OTLP collector (PyPI ``rotel``), forwarding to an OTLP/HTTP endpoint."""

    def __init__(self, exporter_endpoint: str, tmp: Path) -> None:
        import rotel

        self.binary = Path(rotel.__file__).parent / "rotel-agent"
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.exporter_endpoint = exporter_endpoint
        self.pid_file = tmp / "rotel.pid"
        self.log = tmp / "rotel.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RotelProcess:
        self._log_file = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [
                str(self.binary),
                "start",
                "--otlp-grpc-endpoint",
                f"127.0.0.1:{self.grpc_port}",
                "--otlp-http-endpoint",
                f"127.0.0.1:{self.http_port}",
                "--exporter",
                "otlp",
                "--otlp-exporter-endpoint",
                self.exporter_endpoint,
                "--otlp-exporter-protocol",
                "http",
                "--pid-file",
                str(self.pid_file),
                "--batch-timeout",
                "200ms",
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.http_port, proc=self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log_file.close()


class UIProcess:
    """``otel-usecase ui`` as a real subprocess on a free loopback port (stopped by SIGTERM to its PID)."""

    def __init__(self, store_url: str, *extra: str, env: dict[str, str] | None = None) -> None:
        self.store_url = store_url
        self.port = free_port()
        self.extra = extra
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self.proc = subprocess.Popen(
            [str(BIN / "otel-usecase"), "ui", "--store", self.store_url, "--listen", f"127.0.0.1:{self.port}",
             *self.extra],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_for_port(self.port, proc=self.proc)
        return self

    def terminate(self, timeout: float = 30) -> tuple[int, str]:
        """SIGTERM and wait; returns (exit code, stderr)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate(timeout=10)
