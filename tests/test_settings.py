"""The settings table: every OTEL_USECASE_* variable is one row, documented, and a bad value never raises.

The end-to-end half (each bad value under a real ``opentelemetry-instrument``) is
``tests/test_zero_code.py::test_a_bad_setting_warns_and_every_entry_point_keeps_working``.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from pathlib import Path

import pytest

from otel_usecase import config
from otel_usecase.cost.prices import PriceBook, PricesFileError
from otel_usecase.processor import UseCaseSpanProcessor
from otel_usecase.scope.propagation import (
    DEFAULT_INBOUND_KEYS,
    DEFAULT_OUTBOUND_KEYS,
    UseCaseBaggagePropagator,
)
from otel_usecase.store.base import default_store_url

ROOT = Path(__file__).resolve().parent.parent
ROWS = {setting.env: setting for setting in config.SETTINGS}

BAD_VALUES: dict[str, list[str]] = {
    "OTEL_USECASE_SPANS": ["everything", "LLM,all"],
    "OTEL_USECASE_DEFAULT_NAME": ["has space", "x" * 65],
    "OTEL_USECASE_STRICT": ["maybe", "2"],
    "OTEL_USECASE_ENABLED": ["nope", "tru"],
    "OTEL_USECASE_THREAD_CONTEXT": ["sometimes"],
    "OTEL_USECASE_STORE": ["mysql://u@h/db", "sqlite://costs.db", "sqlite://", "redis://localhost"],
    "OTEL_USECASE_BUFFER": ["lots", "-1", "1e5"],
    "OTEL_USECASE_EXPORT_WAIT_MS": ["soon", "-5"],
    "OTEL_USECASE_SINK_MEMORY": ["many", "-1"],
    "OTEL_USECASE_READ_TIMEOUT": ["soon", "0", "2.5"],
    "OTEL_USECASE_INBOUND_KEYS": ["tenant", "usecase.id,userid", " , "],
    "OTEL_USECASE_OUTBOUND_KEYS": ["everything"],
    "OTEL_USECASE_METRICS": ["sometimes"],
    "OTEL_USECASE_METRIC_ATTRIBUTES": ["email", "user.id,tenant"],
    "OTEL_USECASE_ALERT_LEASE_S": ["a minute", "10"],
    "OTEL_USECASE_ALERT_RETRY_FOR_S": ["forever", "-1"],
    "OTEL_USECASE_BUDGET_REFRESH_S": ["soon", "0", "-1", "inf", "nan"],
    "OTEL_USECASE_RETENTION_DAYS": ["400d", "0", "-5", "1.5"],
}
"""For every row whose parser has a rule, values that break it."""

GOOD_VALUES: dict[str, tuple[str, object]] = {
    "OTEL_USECASE_SPANS": (" ALL ", "all"),
    "OTEL_USECASE_DEFAULT_NAME": ("chat_bot", "chat_bot"),
    "OTEL_USECASE_STRICT": ("Yes", True),
    "OTEL_USECASE_ENABLED": ("0", False),
    "OTEL_USECASE_THREAD_CONTEXT": ("off", False),
    "OTEL_USECASE_STORE": ("postgresql://u@h/db", "postgresql://u@h/db"),
    "OTEL_USECASE_BUFFER": (" 0 ", 0),
    "OTEL_USECASE_EXPORT_WAIT_MS": (" 250 ", 250),
    "OTEL_USECASE_SINK_MEMORY": (" 0 ", 0),
    "OTEL_USECASE_READ_TIMEOUT": (" 7 ", 7),
    "OTEL_USECASE_INBOUND_KEYS": ("user.id", frozenset({"user.id"})),
    "OTEL_USECASE_OUTBOUND_KEYS": ("all", DEFAULT_OUTBOUND_KEYS | {"user.id"}),
    "OTEL_USECASE_METRICS": ("off", False),
    "OTEL_USECASE_METRIC_ATTRIBUTES": (" user.id , experience.name", ("user.id", "experience.name")),
    "OTEL_USECASE_ALERT_LEASE_S": (" 90 ", 90),
    "OTEL_USECASE_ALERT_RETRY_FOR_S": ("0", 0),
    "OTEL_USECASE_BUDGET_REFRESH_S": (" 0.5 ", 0.5),
    "OTEL_USECASE_RETENTION_DAYS": (" 400 ", 400),
}


def _readme_env_table() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


def test_the_readme_env_table_is_the_settings_table() -> None:
    expected = config.env_table_markdown()
    assert _readme_env_table() == expected, (
        "README.md's environment table differs from src/otel_usecase/config.py; replace it with:\n" + expected
    )


def test_every_otel_usecase_variable_in_src_is_a_row() -> None:
    found: dict[str, set[str]] = {}
    for path in (ROOT / "src").rglob("*.py"):
        for name in re.findall(r"\bOTEL_USECASE_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")):
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    missing = {name: sorted(paths) for name, paths in found.items() if name not in ROWS}
    assert not missing, f"add a row to src/otel_usecase/config.py for: {missing}"
    assert len(ROWS) == len(config.SETTINGS)  # one row per variable


def test_every_row_is_documented_and_its_default_is_its_own_type() -> None:
    for setting in config.SETTINGS:
        assert (
            setting.env.startswith("OTEL_USECASE_")
            and setting.doc
            and setting.accepts
            and setting.default_text
        )
        assert (
            "|" not in setting.doc + setting.accepts + setting.default_text
        )  # it goes into a Markdown table


def test_every_row_with_a_rule_has_bad_values_tested() -> None:
    with_rule = {s.env for s in config.SETTINGS if s.parse is not config.text}
    assert with_rule == set(BAD_VALUES)  # the HMAC key (text, length checked by privacy.py): test_trust.py


@pytest.mark.parametrize(
    ("env", "raw"), [(env, raw) for env, values in BAD_VALUES.items() for raw in values], ids=str
)
def test_every_bad_value_warns_names_it_and_falls_back(
    env: str, raw: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    setting = ROWS[env]
    monkeypatch.setenv(env, raw)
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        assert setting.read() == setting.default
    (record,) = caplog.records
    message = record.getMessage()
    assert f"{env}={raw!r}" in message and setting.accepts in message and "Using the default" in message


@pytest.mark.parametrize("env", sorted(GOOD_VALUES))
def test_good_values_are_read_and_blank_means_unset(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    raw, value = GOOD_VALUES[env]
    monkeypatch.setenv(env, raw)
    assert ROWS[env].read() == value
    monkeypatch.setenv(env, "   ")
    assert ROWS[env].read() == ROWS[env].default


def test_a_bad_value_is_warned_about_once_a_minute(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_USECASE_BUFFER", "lots")
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        for _ in range(100):
            assert config.buffer_size() == 100_000
    assert len(caplog.records) == 1


def test_a_very_long_bad_value_is_shown_cut(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_USECASE_SPANS", "x" * 100_000)
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        assert config.spans_mode() == "llm"
    assert (
        len(caplog.records[0].getMessage()) < 600 and "(100000 characters)" in caplog.records[0].getMessage()
    )


def test_the_argument_wins_and_a_bad_argument_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_USECASE_SPANS", "all")
    assert config.spans_mode() == "all"
    assert config.spans_mode("llm") == UseCaseSpanProcessor(spans="llm").spans == "llm"
    with pytest.raises(ValueError, match="'every' is not one of llm, all"):
        config.spans_mode("every")
    monkeypatch.setenv("OTEL_USECASE_INBOUND_KEYS", "all")
    assert UseCaseBaggagePropagator(accept_inbound="none").accept_inbound == DEFAULT_INBOUND_KEYS
    with pytest.raises(ValueError, match="'tenant'"):
        UseCaseBaggagePropagator(accept_inbound="tenant")


# --- the two settings that open something: the store and the prices file ---------------------


@pytest.mark.parametrize("raw", ["mysql://u@h/db", "sqlite://costs.db"])
def test_a_bad_store_url_falls_back_to_the_default_store(
    raw: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.delenv("OTEL_USECASE_STORE", raising=False)
    default = default_store_url()
    assert default == "sqlite:///" + str(tmp_path / "otel-usecase" / "costs.db")
    monkeypatch.setenv("OTEL_USECASE_STORE", raw)
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        assert default_store_url() == default
    assert f"OTEL_USECASE_STORE={raw!r}" in caplog.text and "postgresql://user@host/db" in caplog.text
    monkeypatch.setenv("OTEL_USECASE_STORE", "sqlite:///" + str(tmp_path / "mine.db"))
    assert default_store_url() == "sqlite:///" + str(tmp_path / "mine.db")


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot read it"), ('[models."gpt-4o-mini"]\ninput = "cheap"\n', "gpt-4o-mini"), ("[[", "TOML")],
)
def test_a_bad_prices_file_from_the_env_warns_and_genai_prices_alone_prices(
    content: str | None,
    problem: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "prices.toml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    monkeypatch.setenv("OTEL_USECASE_PRICES", str(path))
    with caplog.at_level(logging.WARNING, logger="otel_usecase"):
        book = PriceBook()
    assert book.overrides_path is None
    price = book.lookup("gpt-4o-mini", "openai")  # published: $0.15 input, $0.60 output per million
    assert price is not None and (price.input_mtok, price.output_mtok) == (Decimal("0.15"), Decimal("0.6"))
    (record,) = caplog.records
    assert f"OTEL_USECASE_PRICES={str(path)!r}" in record.getMessage() and problem in record.getMessage()
    assert "genai-prices alone" in record.getMessage()
    with pytest.raises(PricesFileError):  # the same file named in code is the caller's mistake: it raises
        PriceBook(path)
