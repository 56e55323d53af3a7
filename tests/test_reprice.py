"""``otel-usecase reprice``: stored calls priced again after prices change, never touching billed costs.

Calls are recorded through the real exporter (real openai client, real Traceloop
instrumentation, FakeOpenAI); expected figures come from the prices written in
each test's overrides file or published prices (``tests/expect.py``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import openai
import pytest

from otel_usecase import track_context
from otel_usecase.cli import main as cli_main
from otel_usecase.cost import token_classes
from otel_usecase.cost.call import COST_SOURCE_PROVIDER, STATUS_PARTIAL, STATUS_PRICED, Call
from otel_usecase.cost.prices import PriceBook
from otel_usecase.cost.reprice import reprice
from otel_usecase.store import open_store
from otel_usecase.store.base import COLUMNS, TABLE, RepriceFilter, calls_to_reprice
from otel_usecase.testing import FakeOpenAI, FakeUsage

from .builders import a_call
from .expect import M, mini_cost, report_json
from .pg import PostgresServer
from .rigs import CostRig

MSG = [{"role": "user", "content": "hi"}]
CLI = str(Path(sys.executable).parent / "otel-usecase")

# The overrides before and after the change: acme-llm-9000 gets cheaper.
V1 = '[models."acme-llm-9000"]\ninput = 3.0\noutput = 12.0\ncache_read = 0.3\n'
V2 = '[models."acme-llm-9000"]\ninput = 1.0\noutput = 4.0\ncache_read = 0.1\n'
ACME_USAGE = FakeUsage(prompt_tokens=10_000, completion_tokens=1_000, cached_tokens=4_000)
ACME_V1 = (6_000 * 3.0 + 4_000 * 0.3 + 1_000 * 12.0) / M
ACME_V2 = (6_000 * 1.0 + 4_000 * 0.1 + 1_000 * 4.0) / M
MINI_USAGE = FakeUsage(prompt_tokens=2_000, completion_tokens=300)


def _prices(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _record(
    store_url: str,
    prices: str | None,
    fake: FakeOpenAI,
    client: openai.OpenAI,
    calls: list[tuple[str, str, FakeUsage]],
) -> None:
    """Each (use case, model, usage) as one chat call through the real exporter, priced with ``prices``."""
    rig = CostRig(store_url, prices=prices)
    try:
        for use_case, model, usage in calls:
            fake.respond(usage=usage)
            with track_context(use_case):
                client.chat.completions.create(model=model, messages=MSG)
        rig.flush()
    finally:
        rig.close()


def _reprice_cli(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    """What ``otel-usecase reprice --format json`` prints (exit status 0 asserted)."""
    capsys.readouterr()
    assert cli_main(["reprice", "--format", "json", *args]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def _ledger(store_url: str) -> list[tuple[Any, ...]]:
    store = open_store(store_url)
    try:
        return store.query(f"SELECT {', '.join(COLUMNS)} FROM {TABLE} ORDER BY trace_id, span_id")
    finally:
        store.close()


def _by_use_case(store_url: str) -> dict[str, dict[str, Any]]:
    return {row["use_case"]: row for row in report_json(store_url)}


@pytest.fixture
def recorded_v1(
    store_url: str, tmp_path: Path, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> tuple[str, str]:
    """Two acme calls priced by the V1 overrides and a gpt-4o-mini call priced by genai-prices;
    returns the paths of the V1 and V2 overrides files."""
    v1 = _prices(tmp_path, "v1.toml", V1)
    _record(
        store_url,
        v1,
        fake_openai,
        client,
        [
            ("acme", "acme-llm-9000", ACME_USAGE),
            ("acme", "acme-llm-9000", ACME_USAGE),
            ("mini", "gpt-4o-mini", MINI_USAGE),
        ],
    )
    return v1, _prices(tmp_path, "v2.toml", V2)


def test_an_overrides_change_reprices_stored_calls_to_the_new_figures(
    store_url: str, recorded_v1: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, v2 = recorded_v1
    assert _by_use_case(store_url)["acme"]["cost_usd"] == pytest.approx(2 * ACME_V1)

    summary = _reprice_cli(capsys, "--store", store_url, "--prices", v2)

    assert summary["examined"] == 3
    assert summary["changed"] == 2  # the gpt-4o-mini call's price did not change
    assert summary["skipped"] == 0
    assert summary["old_total_usd"] == pytest.approx(2 * ACME_V1 + mini_cost(2_000, 300))
    assert summary["new_total_usd"] == pytest.approx(2 * ACME_V2 + mini_cost(2_000, 300))
    assert summary["status_changes"] == {}
    report = _by_use_case(store_url)
    assert report["acme"]["cost_usd"] == pytest.approx(2 * ACME_V2)
    assert report["mini"]["cost_usd"] == pytest.approx(mini_cost(2_000, 300))
    sources = {row[COLUMNS.index("cost_source")] for row in _ledger(store_url)}
    assert any(s.startswith("override") and "v1" not in s for s in sources if s)


def test_a_second_run_changes_nothing(
    store_url: str, recorded_v1: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, v2 = recorded_v1
    first = _reprice_cli(capsys, "--store", store_url, "--prices", v2)
    after_first = _ledger(store_url)

    second = _reprice_cli(capsys, "--store", store_url, "--prices", v2)

    assert first["changed"] == 2
    assert second["examined"] == 3
    assert second["changed"] == 0
    assert second["old_total_usd"] == second["new_total_usd"] == pytest.approx(first["new_total_usd"])
    assert _ledger(store_url) == after_first


def test_dry_run_writes_nothing_and_prints_the_same_summary(
    store_url: str, recorded_v1: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, v2 = recorded_v1
    before = _ledger(store_url)

    dry = _reprice_cli(capsys, "--store", store_url, "--prices", v2, "--dry-run")

    assert _ledger(store_url) == before
    assert dry["dry_run"] is True
    real = _reprice_cli(capsys, "--store", store_url, "--prices", v2)
    assert real["dry_run"] is False
    for key in ("examined", "changed", "skipped", "old_total_usd", "new_total_usd", "status_changes"):
        assert dry[key] == real[key], key
    assert dry["new_total_usd"] == pytest.approx(2 * ACME_V2 + mini_cost(2_000, 300))

    # the table form, from the real console script, says it wrote nothing
    proc = subprocess.run(
        [CLI, "reprice", "--store", store_url, "--prices", v2, "--dry-run"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "dry run: nothing written" in proc.stdout
    assert re.search(r"calls would change +0\n", proc.stdout)
    assert re.search(r"new total +\$0\.0", proc.stdout)


def test_a_model_unknown_when_recorded_is_priced_once_an_override_adds_it(
    store_url: str,
    tmp_path: Path,
    fake_openai: FakeOpenAI,
    client: openai.OpenAI,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _record(
        store_url,
        None,
        fake_openai,
        client,
        [
            ("new_model", "zeta-9-preview", FakeUsage(prompt_tokens=5_000, completion_tokens=2_000)),
            ("mini", "gpt-4o-mini", MINI_USAGE),
        ],
    )
    (unpriced,) = [r for r in _ledger(store_url) if r[COLUMNS.index("model")] == "zeta-9-preview"]
    assert unpriced[COLUMNS.index("status")] == "unpriced"
    assert unpriced[COLUMNS.index("unpriced_reason")] == "unknown model"
    added = _prices(tmp_path, "added.toml", '[models."zeta-9-preview"]\ninput = 2.0\noutput = 8.0\n')

    summary = _reprice_cli(capsys, "--store", store_url, "--prices", added, "--only-unpriced")

    assert summary["examined"] == 1  # the priced gpt-4o-mini call is not even read
    assert summary["changed"] == 1
    assert summary["status_changes"] == {"unpriced -> priced": 1}
    expected = (5_000 * 2.0 + 2_000 * 8.0) / M
    assert summary["old_total_usd"] == 0
    assert summary["new_total_usd"] == pytest.approx(expected)
    report = _by_use_case(store_url)
    assert report["new_model"]["cost_usd"] == pytest.approx(expected)
    assert report["new_model"]["unpriced_calls"] == 0
    (row,) = [r for r in _ledger(store_url) if r[COLUMNS.index("model")] == "zeta-9-preview"]
    assert row[COLUMNS.index("unpriced_reason")] is None
    assert row[COLUMNS.index("computed_cost_usd")] == pytest.approx(expected)


def _call(
    key: int,
    *,
    use_case: str = "billed",
    start_ns: int = 1_760_000_000 * 10**9,
    status: str = STATUS_PRICED,
    tokens: dict[str, int] | None = None,
    cost_usd: float | None = None,
    cost_source: str | None = None,
) -> Call:
    return a_call(
        trace_id=f"{key:032x}",
        span_id=f"{key:016x}",
        start_ns=start_ns,
        end_ns=start_ns + 10**9,
        service="svc",
        use_case=use_case,
        run_id=f"run-{key}",
        tokens=tokens if tokens is not None else {"input": 2_000, "output": 300},
        cost_usd=cost_usd,
        status=status,
        cost_source=cost_source,
    )


def test_a_provider_billed_cost_is_never_touched_only_our_price_beside_it(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # OpenRouter billed $0.5 for this call (usage.cost on the span): that is what it cost.
    store = open_store(store_url)
    store.write([_call(1, cost_usd=0.5, cost_source=COST_SOURCE_PROVIDER)])
    store.close()

    summary = _reprice_cli(capsys, "--store", store_url)

    (row,) = _ledger(store_url)
    value = dict(zip(COLUMNS, row, strict=True))
    assert value["cost_usd"] == 0.5
    assert value["cost_source"] == COST_SOURCE_PROVIDER
    assert value["status"] == STATUS_PRICED
    assert value["computed_cost_usd"] == pytest.approx(mini_cost(2_000, 300))
    assert summary["changed"] == 1  # our price was filled in beside the billed one
    assert summary["old_total_usd"] == summary["new_total_usd"] == 0.5
    assert _reprice_cli(capsys, "--store", store_url)["changed"] == 0


def test_a_priority_tier_call_priced_at_the_standard_rate_is_repriced_at_its_tier(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # gpt-5: $1.25 / $10 per million at the standard tier, $2.50 / $20 at the Priority tier.
    # Recorded with the conditions (price_context) but priced at the standard rate (an older version).
    tokens = {"input": 8, "output": 82, "reasoning": 64}
    standard = (8 * 1.25 + 82 * 10.0) / M
    stored = _call(
        1, start_ns=time.time_ns(), tokens=tokens, cost_usd=standard, cost_source="genai-prices 0.0.1"
    )._replace(model="gpt-5", price_context="service_tier=priority", computed_cost_usd=standard)
    store = open_store(store_url)
    store.write([stored])
    store.close()

    summary = _reprice_cli(capsys, "--store", store_url)

    assert summary["changed"] == 1
    assert summary["old_total_usd"] == pytest.approx(standard)
    assert summary["new_total_usd"] == pytest.approx(0.00166)  # (8 * 2.50 + 82 * 20) / 1M, as billed
    (row,) = _ledger(store_url)
    value = dict(zip(COLUMNS, row, strict=True))
    assert value["cost_usd"] == pytest.approx(0.00166)
    assert value["price_context"] == "service_tier=priority"
    assert value["cost_source"].startswith("genai-prices ") and value["cost_source"] != "genai-prices 0.0.1"


def test_since_and_use_case_select_the_calls_repriced(
    store_url: str,
    recorded_v1: tuple[str, str],
    fake_openai: FakeOpenAI,
    client: openai.OpenAI,
    capsys: pytest.CaptureFixture[str],
) -> None:
    v1, v2 = recorded_v1  # two acme calls, one mini call
    time.sleep(0.01)
    middle = datetime.now(tz=UTC)
    time.sleep(0.01)
    _record(
        store_url,
        v1,
        fake_openai,
        client,
        [("acme_later", "acme-llm-9000", ACME_USAGE), ("acme", "acme-llm-9000", ACME_USAGE)],
    )

    since = _reprice_cli(
        capsys, "--store", store_url, "--prices", v2, "--since", middle.isoformat(), "--dry-run"
    )
    assert since["examined"] == 2
    assert since["changed"] == 2
    assert since["new_total_usd"] == pytest.approx(2 * ACME_V2)

    one_case = _reprice_cli(capsys, "--store", store_url, "--prices", v2, "--use-case", "acme")
    assert one_case["examined"] == 3
    assert one_case["changed"] == 3
    report = _by_use_case(store_url)
    assert report["acme"]["cost_usd"] == pytest.approx(3 * ACME_V2)
    assert report["acme_later"]["cost_usd"] == pytest.approx(ACME_V1)  # another use case: untouched


def test_a_bad_option_or_missing_store_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = "sqlite:///" + str(tmp_path / "nowhere.db")
    assert cli_main(["reprice", "--store", missing]) == 1
    assert "nowhere.db" in capsys.readouterr().err
    assert not (tmp_path / "nowhere.db").exists()  # never created empty
    assert cli_main(["reprice", "--store", missing, "--since", "yesterday"]) == 2
    assert "yesterday" in capsys.readouterr().err
    bad = _prices(tmp_path, "bad.toml", '[models."m"]\ninput = 1.0\nouput = 2.0\n')
    assert cli_main(["reprice", "--store", missing, "--prices", bad]) == 2
    assert "ouput" in capsys.readouterr().err


# --- both stores: the conditional write, and re-pricing while a real exporter writes -----------

_db_names = count()


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request: pytest.FixtureRequest, store_url: str) -> str:
    """A fresh SQLite file, then a fresh database on a real PostgreSQL."""
    if request.param == "sqlite":
        return store_url
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database(f"reprice_{next(_db_names)}")


def test_every_token_class_is_read_back_for_repricing(any_url: str) -> None:
    tokens = {c.name: 1_000 + i for i, c in enumerate(token_classes.TOKEN_CLASSES)}
    store = open_store(any_url)
    try:
        store.write([_call(1, tokens=tokens), _call(2, tokens={"output": 7})])
        first, second = calls_to_reprice(store, RepriceFilter(), None, 10)
    finally:
        store.close()
    assert dict(first.tokens) == tokens
    assert dict(second.tokens) == {"output": 7}  # the unknown input stays unknown, absent parts absent


def test_a_row_a_writer_replaced_meanwhile_keeps_the_writers_copy(any_url: str) -> None:
    store = open_store(any_url)
    try:
        # A partial copy (input unreadable) and an unpriced one, both stored with no cost.
        store.write([_call(1, status=STATUS_PARTIAL, tokens={"output": 300}), _call(2, status="unpriced")])
        read = calls_to_reprice(store, RepriceFilter(), None, 10)
        assert [c.span_id for c in read] == [f"{1:016x}", f"{2:016x}"]
        book = PriceBook()
        from otel_usecase.cost.reprice import repriced
        from otel_usecase.store.base import Repricing

        changes = [Repricing(c, repriced(c, book)) for c in read]
        # Meanwhile the other instrumentation's complete copy of call 1 arrives, billed by the provider.
        store.write([_call(1, cost_usd=0.25, cost_source=COST_SOURCE_PROVIDER)])

        applied = store.reprice(changes)

        assert [c.old.span_id for c in applied] == [f"{2:016x}"]
        after = {c.span_id: c for c in calls_to_reprice(store, RepriceFilter(), None, 10)}
        assert after[f"{1:016x}"].cost_usd == 0.25  # the writer's copy, not our stale update
        assert after[f"{1:016x}"].cost_source == COST_SOURCE_PROVIDER
        assert after[f"{2:016x}"].cost_usd == pytest.approx(mini_cost(2_000, 300))
        assert after[f"{2:016x}"].status == STATUS_PRICED
    finally:
        store.close()


def test_repricing_while_a_real_exporter_writes_loses_and_duplicates_nothing(
    any_url: str, tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = _prices(tmp_path, "v1.toml", V1)
    v2 = _prices(tmp_path, "v2.toml", V2)
    fake_openai.respond(usage=ACME_USAGE)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")  # the exporter writes small batches all along
    rig = CostRig(any_url, prices=v1)
    requests_per_thread, threads = 40, 3
    failures: list[BaseException] = []

    def app() -> None:
        client = openai.OpenAI(base_url=fake_openai.base_url, api_key="test", max_retries=0)
        try:
            for _ in range(requests_per_thread):
                with track_context("busy"):
                    client.chat.completions.create(model="acme-llm-9000", messages=MSG)
        except BaseException as exc:  # re-raised below
            failures.append(exc)

    workers = [threading.Thread(target=app) for _ in range(threads)]
    for worker in workers:
        worker.start()
    store = open_store(any_url)
    book = PriceBook(v2)
    changed_while_writing = 0
    try:
        while any(w.is_alive() for w in workers):
            changed_while_writing += reprice(store, book, batch_size=7).changed
        for worker in workers:
            worker.join(60)
        rig.flush()
        final = reprice(store, book, batch_size=7)
        again = reprice(store, book, batch_size=7)
    finally:
        rig.close()
        store.close()
    assert not failures
    calls = threads * requests_per_thread
    assert changed_while_writing > 0  # re-pricing really overlapped the exporter's writes
    assert final.examined == again.examined == calls
    assert again.changed == 0
    (row,) = report_json(any_url)
    assert row["calls"] == calls
    assert row["input_tokens"] == calls * 10_000
    assert row["cost_usd"] == pytest.approx(calls * ACME_V2)
