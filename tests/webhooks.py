"""A webhook receiver on 127.0.0.1 for the alert tests, checking signatures the way a user's receiver would.

Its ``hmac`` check is the test's own code (the README's snippet), not the library's.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple, Self

SECRET = "whsec-Ue8pQ2-the-test-secret-7f3a"


# --- what a user writes on the receiving side ---------------------------------------------------


def verify(body: bytes, header: str | None, secret: str) -> bool:
    """A receiver's check: recompute the HMAC-SHA256 of the raw body and compare in constant time."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return header is not None and hmac.compare_digest(header, expected)


class Got(NamedTuple):
    headers: dict[str, str]
    body: bytes
    status: int
    verified: bool
    at_ns: int
    """When it arrived (wall clock)."""


class Receiver:
    """A webhook receiver on 127.0.0.1 answering the scripted statuses in turn (then 200).

    ``"hang"`` in the script holds that request unanswered until the receiver closes; ``"drip"`` answers
    with a status line that never ends (a space every 0.1 s).
    """

    def __init__(self, port: int = 0, answers: list[int | str] | None = None) -> None:
        self.got: list[Got] = []
        self.answers: list[int | str] = list(answers or [])
        self.lock = threading.Lock()
        self.hanging = threading.Event()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    answer = receiver.answers.pop(0) if receiver.answers else 200
                if answer == "hang":
                    receiver.hanging.set()
                    receiver.release.wait(120)
                    return
                if answer == "drip":  # a status line that never ends, one byte at a time
                    with contextlib.suppress(OSError):
                        self.wfile.write(b"HTTP/1.1")
                        while not receiver.release.wait(0.1):
                            self.wfile.write(b" ")
                            self.wfile.flush()
                    return
                status = int(answer)
                ok = verify(body, self.headers.get("X-Otel-Usecase-Signature"), SECRET)
                with receiver.lock:
                    receiver.got.append(Got(dict(self.headers), body, status, ok, time.time_ns()))
                text = b"bad hook: unknown channel" if status == 400 else b"ok"
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/budget"

    def deliveries(self) -> list[Got]:
        with self.lock:
            return [g for g in self.got if 200 <= g.status < 300]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
