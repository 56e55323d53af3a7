"""``otel-usecase ui`` and ``serve --ui`` as real processes: who may read, what every answer carries.

Loopback only: a non-loopback address is only ever asked for to check that it is refused
(before anything is bound). The token is checked with Bearer and Basic, and must never
appear in what the process prints.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest

from otel_usecase.store import open_store

from .builders import a_call
from .servers import ServeProcess, UIProcess, free_port

BIN = Path(sys.executable).parent
TOKEN = "s3cret-token-for-the-dashboard-0123456789"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


@pytest.fixture
def ledger(store_url: str) -> str:
    store = open_store(store_url)
    try:
        assert (
            store.write([a_call(start_ns=1_700_000_000_000_000_000, end_ns=1_700_000_001_000_000_000)]) == []
        )
    finally:
        store.close()
    return store_url


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, Message, bytes]:
    """Status, headers (case-insensitive) and body of one request."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_a_non_loopback_address_without_a_token_is_refused_and_nothing_listens(ledger: str) -> None:
    port = free_port()
    done = subprocess.run(
        [str(BIN / "otel-usecase"), "ui", "--store", ledger, "--listen", f"0.0.0.0:{port}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "0.0.0.0 is not a loopback address" in done.stderr and "token" in done.stderr
    served = subprocess.run(
        [str(BIN / "otel-usecase"), "serve", "--store", ledger, "--ui", "--http", f"0.0.0.0:{port}",
         "--grpc", "off"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert served.returncode == 2
    assert "0.0.0.0 is not a loopback address" in served.stderr


def test_with_a_token_every_path_needs_it_bearer_or_basic_and_it_is_never_printed(
    ledger: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with UIProcess(ledger, "--token-file", str(token_file)) as ui:
        for path in ("/", "/api/report", "/static/dashboard.css", "/nope"):
            status, headers, _ = get(ui.url + path)
            assert status == 401, path
            assert headers["WWW-Authenticate"].startswith("Basic")
        assert get(ui.url + "/", {"Authorization": "Bearer wrong"})[0] == 401
        assert get(ui.url + "/", {"Authorization": "Bearer " + TOKEN[:-1]})[0] == 401
        assert get(ui.url + "/", {"Authorization": "Bearer " + TOKEN + "x"})[0] == 401
        status, _, body = get(ui.url + "/api/report?format=json", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and json.loads(body)[0]["use_case"] == "u"
        basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
        assert get(ui.url + "/", {"Authorization": f"Basic {basic}"})[0] == 200
        wrong = base64.b64encode(b"anyone:nope").decode()
        assert get(ui.url + "/", {"Authorization": f"Basic {wrong}"})[0] == 401
        assert get(ui.url + "/", {"Authorization": "Basic !!!"})[0] == 401
        code, err = ui.terminate()
    assert code == 0
    assert "token auth on" in err
    assert TOKEN not in err
    assert ui.proc is not None and ui.proc.stdout is not None


def test_every_answer_has_the_csp_and_hardening_headers_and_only_get_is_served(ledger: str) -> None:
    with UIProcess(ledger) as ui:
        for path in ("/", "/run?id=r", "/api/summary", "/nope", "/?since=yesterday"):
            status, headers, _ = get(ui.url + path)
            assert headers["Content-Security-Policy"] == CSP, path
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["X-Frame-Options"] == "DENY"
            assert headers["Referrer-Policy"] == "no-referrer"
            assert headers["Cache-Control"] == "no-store"
        status, headers, _ = get(ui.url + "/", method="POST")
        assert status == 405 and headers["Allow"] == "GET, HEAD"


BAD_QUERIES = [
    ("since=yesterday", "since='yesterday' is neither a duration"),
    ("bogus=1", "'bogus' is not a parameter of this page"),
    ("tag=novalue", "tag='novalue' is not KEY=VALUE"),
    ("bucket=week", "bucket='week' is not one of hour, day"),
    ("user=a&user=b", "user is given twice"),
]


def test_a_parameter_a_page_cannot_use_is_a_400_naming_it(ledger: str) -> None:
    with UIProcess(ledger) as ui:
        for query, named in BAD_QUERIES:
            status, _, body = get(f"{ui.url}/?{query}")
            assert status == 400, query
            assert named.replace("'", "&#x27;") in body.decode(), query
            status, _, body = get(f"{ui.url}/api/series?{query}")
            assert status == 400 and named in json.loads(body)["error"], query


def test_serve_ui_serves_the_dashboard_under_ui_beside_the_receiver(ledger: str) -> None:
    with ServeProcess(ledger, "--ui") as serve:
        base = f"http://127.0.0.1:{serve.http_port}"
        status, headers, body = get(base + "/ui/")
        assert status == 200 and headers["Content-Security-Policy"] == CSP
        assert b'href="/ui/static/dashboard.css"' in body and b'href="/ui/users"' in body
        status, _, body = get(base + "/ui/api/report?by=model&format=csv")
        assert status == 200 and body.decode().startswith("provider,model,")
        assert get(base + "/ui")[0] == 200  # redirected (308) to /ui/
        assert serve.healthz()["status"] == "ok"
        assert get(base + "/v1/traces")[0] == 405  # the receiver still answers its path
        code, err = serve.terminate()
    assert code == 0
    assert "dashboard on http://127.0.0.1:" in err
    # serve's token guards the receiver and the dashboard alike
    with ServeProcess(ledger, "--ui", env={"OTEL_USECASE_TOKEN": TOKEN}) as serve:
        base = f"http://127.0.0.1:{serve.http_port}"
        assert get(base + "/ui/")[0] == 401
        assert get(base + "/ui/", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        code, err = serve.terminate()
    assert TOKEN not in err


PAGES = ("/", "/use-case?use_case=u", "/run?id=r0", "/users", "/experiences", "/models", "/budgets")


def test_every_page_and_route_answers_over_sqlite_and_postgresql_as_the_cli_does(
    sqlite_or_postgres: str,
) -> None:
    store = open_store(sqlite_or_postgres)
    try:
        calls = [
            a_call(span_id=f"{i:016x}", run_id=f"r{i % 3}", user_id=f"user-{i % 2}",
                   start_ns=1_700_000_000_000_000_000 + i * 3_600_000_000_000, end_ns=1_700_000_000_000_000_001 + i * 3_600_000_000_000,
                   tokens={"input": 100 * i, "output": 10 * i}, cost_usd=(100 * i * 0.15 + 10 * i * 0.6) / 1e6)
            for i in range(12)
        ]  # fmt: skip
        assert store.write(calls) == []
    finally:
        store.close()
    with UIProcess(sqlite_or_postgres) as ui:
        for path in PAGES:
            status, headers, body = get(ui.url + path)
            assert status == 200, (path, body[:500])
            assert headers["Content-Type"] == "text/html; charset=utf-8"
        for by in ("use-case", "run", "user", "model", "step", "version", "cost-source"):
            for fmt in ("csv", "json"):
                status, _, body = get(f"{ui.url}/api/report?by={by}&format={fmt}")
                assert status == 200
                expected = subprocess.run(
                    [str(BIN / "otel-usecase"), "report", "--by", by, "--format", fmt, "--store", sqlite_or_postgres],
                    capture_output=True, timeout=120, check=True,
                ).stdout  # fmt: skip
                assert body + b"\n" == expected, (by, fmt)
        status, _, body = get(ui.url + "/api/summary")
        summary = json.loads(body)
        assert summary["calls"] == 12 and summary["runs"] == 3
        assert summary["cost_usd"] == pytest.approx(
            sum(100 * i * 0.15 + 10 * i * 0.6 for i in range(12)) / 1e6
        )
        status, _, body = get(ui.url + "/api/series?bucket=hour")
        assert sum(p["calls"] for p in json.loads(body)) == 12
        status, _, body = get(ui.url + "/api/runs?order=cost&limit=2")
        assert [r["run_id"] for r in json.loads(body)] == ["r2", "r1"]


def test_without_a_token_only_loopback_host_names_are_answered(ledger: str, tmp_path: Path) -> None:
    """A page elsewhere that points its own name at 127.0.0.1 (DNS rebinding) reads nothing."""
    with UIProcess(ledger) as ui:
        for host in ("evil.example", f"evil.example:{ui.port}", "127.0.0.1.nip.io", "10.0.0.1"):
            status, _, body = get(ui.url + "/api/summary", {"Host": host})
            assert status == 403, host
            assert b"DNS rebinding" in body
        for host in (f"127.0.0.1:{ui.port}", f"localhost:{ui.port}", "[::1]", "localhost"):
            assert get(ui.url + "/api/summary", {"Host": host})[0] == 200, host
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with UIProcess(ledger, "--token-file", str(token_file)) as ui:  # a token: any name, with the token
        assert get(ui.url + "/", {"Host": "dashboard.internal", "Authorization": f"Bearer {TOKEN}"})[0] == 200


def test_a_missing_store_or_token_file_is_a_clear_error_and_nothing_is_created(tmp_path: Path) -> None:
    missing = "sqlite:///" + str(tmp_path / "nowhere.db")
    done = subprocess.run(
        [str(BIN / "otel-usecase"), "ui", "--store", missing, "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "nowhere.db" in done.stderr
    assert not (tmp_path / "nowhere.db").exists()
    done = subprocess.run(
        [str(BIN / "otel-usecase"), "ui", "--store", missing, "--token-file", str(tmp_path / "no-token")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "--token-file" in done.stderr and "cannot be read" in done.stderr
