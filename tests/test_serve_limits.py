"""What ``serve`` reads, and for how long: every gzip member within the body limit, and a read timeout.

Real sockets against a real ``otel-usecase serve``: a client that sends half a
request and stalls is cut off within the read timeout while other clients are
served; a gzip body of several members is read whole (RFC 1952), a bomb spread
over members is still refused at the limit.
"""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from google.rpc import status_pb2

from .expect import mini_cost, report_json
from .servers import ServeProcess
from .test_fuzz_receiver import llm_span, request_with

READ_TIMEOUT_S = 2
BOUND_S = READ_TIMEOUT_S + 15  # generous: the machine may be loaded
PROTOBUF_GZIP = {"content-type": "application/x-protobuf", "content-encoding": "gzip"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServeProcess]:
    store = "sqlite:///" + str(tmp_path / "limits.db")
    with ServeProcess(
        store, "--read-timeout", str(READ_TIMEOUT_S), "--max-body-bytes", str(1024 * 1024)
    ) as server:
        yield server


def calls_of(served: ServeProcess, run: str) -> int:
    return sum(r["calls"] for r in report_json(served.store_url, "run") if r["run_id"] == run)


def test_a_gzip_body_of_two_members_is_read_whole(served: ServeProcess) -> None:
    """``gzip a >> body.gz; gzip b >> body.gz`` is one valid gzip stream of two members."""
    first = request_with([llm_span(0x61, 1, "members")])
    second = request_with([llm_span(0x62, 2, "members")])  # two serialized requests concatenated = both spans
    response = httpx.post(
        served.http_url, content=gzip.compress(first) + gzip.compress(second), headers=PROTOBUF_GZIP
    )
    assert response.status_code == 200, response.content
    assert calls_of(served, "members") == 2
    (row,) = [r for r in report_json(served.store_url, "run") if r["run_id"] == "members"]
    assert row["cost_usd"] == pytest.approx(2 * mini_cost(1_000, 100))


def test_the_body_limit_holds_over_all_members_and_garbage_is_refused(served: ServeProcess) -> None:
    small = gzip.compress(request_with([llm_span(0x63, 3, "bomb")]))
    bomb = gzip.compress(
        b"\x00" * (600 * 1024)
    )  # each member under the 1 MiB limit, the two together over it
    response = httpx.post(served.http_url, content=small + bomb + bomb, headers=PROTOBUF_GZIP)
    assert response.status_code == 413
    assert "limit of 1048576 bytes" in status_pb2.Status.FromString(response.content).message
    garbage = httpx.post(served.http_url, content=small + b"not gzip", headers=PROTOBUF_GZIP)
    assert garbage.status_code == 400
    assert "after 1 complete members" in status_pb2.Status.FromString(garbage.content).message
    assert calls_of(served, "bomb") == 0  # nothing of a refused body is stored


@pytest.mark.parametrize("encoding", ["deflate", "br", "zstd", "gzip, gzip"])
def test_an_unsupported_content_encoding_is_415_naming_it(served: ServeProcess, encoding: str) -> None:
    response = httpx.post(
        served.http_url,
        content=b"x",
        headers={"content-type": "application/json", "content-encoding": encoding},
    )
    assert response.status_code == 415
    message = response.json()["message"]
    assert repr(encoding) in message and "gzip" in message


def _closed_within(sock: socket.socket, bound: float) -> tuple[bytes, float]:
    """Read until the server closes the connection; returns what it sent and when it closed."""
    started = time.monotonic()
    sock.settimeout(bound)
    received = b""
    while True:
        chunk = sock.recv(65536)  # raises TimeoutError if the server keeps the connection beyond the bound
        if not chunk:
            return received, time.monotonic() - started
        received += chunk


def test_slow_clients_are_cut_off_and_others_are_served(served: ServeProcess) -> None:
    address = ("127.0.0.1", served.http_port)
    body = request_with([llm_span(0x71, 1, "slow")])
    half_headers = socket.create_connection(address)
    half_headers.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Ty")
    half_body = socket.create_connection(address)
    half_body.sendall(
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[: len(body) // 2]
    )
    silent = socket.create_connection(address)
    started = time.monotonic()

    # others are served meanwhile
    ok = httpx.post(
        served.http_url, content=body, headers={"content-type": "application/x-protobuf"}, timeout=30
    )
    assert ok.status_code == 200

    sent, _ = _closed_within(half_headers, BOUND_S)
    assert sent.startswith(b"HTTP/1.1 408 ")
    sent, _ = _closed_within(half_body, BOUND_S)
    assert sent.startswith(b"HTTP/1.1 408 ")
    assert b"did not arrive within the read timeout of 2 s" in sent
    sent, _ = _closed_within(silent, BOUND_S)
    assert sent == b""  # nothing came, nothing to answer: just closed
    assert time.monotonic() - started >= READ_TIMEOUT_S * 0.9  # cut off by the timeout, not at once
    for sock in (half_headers, half_body, silent):
        sock.close()

    # a keep-alive connection that stalls in its second request is cut off too
    with socket.create_connection(address) as sock:
        request = (
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        sock.sendall(request)
        sock.settimeout(30)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        sock.sendall(request[:20])
        sent, _ = _closed_within(sock, BOUND_S)
        assert sent.startswith(b"HTTP/1.1 408 ")
    assert calls_of(served, "slow") == 1
    assert (
        httpx.post(
            served.http_url, content=body, headers={"content-type": "application/x-protobuf"}
        ).status_code
        == 200
    )


def test_a_grpc_connection_that_stalls_in_its_handshake_is_cut_off(served: ServeProcess) -> None:
    with socket.create_connection(("127.0.0.1", served.grpc_port)) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n")  # half the HTTP/2 connection preface, then nothing
        started = time.monotonic()
        _closed_within(sock, BOUND_S)
        assert time.monotonic() - started >= READ_TIMEOUT_S * 0.9
