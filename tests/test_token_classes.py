"""The token-class table: consistent with genai-prices, complete, and the README's copy of it."""

from __future__ import annotations

import re
from pathlib import Path

from genai_prices import data_snapshot
from genai_prices.data_units import unit_data
from genai_prices.types import ModelPrice

from otel_usecase.cost import token_classes
from otel_usecase.cost.token_classes import BY_NAME, INCLUDED_IN, NOT_ON_SPANS, TOKEN_CLASSES

ROOT = Path(__file__).resolve().parent.parent


def _model_prices() -> list[ModelPrice]:
    found: list[ModelPrice] = []
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            prices = model.prices
            found += [prices] if isinstance(prices, ModelPrice) else [c.prices for c in prices]
            found += [variant.prices for variant in model.price_variants or ()]
    return found


def test_every_token_class_genai_prices_prices_is_a_row_or_explained() -> None:
    token_price_keys = {
        unit["price_key"]
        for unit in unit_data.values()
        if unit["dimensions"].get("family") in ("tokens", "messages")
    }
    used = {key for price in _model_prices() for key, value in vars(price).items() if value is not None}
    rows = {c.price_key for c in TOKEN_CLASSES}
    missing = sorted((used & token_price_keys) - rows - set(NOT_ON_SPANS))
    assert not missing, f"genai-prices prices these token classes: add a row to cost/token_classes.py: {missing}"
    assert not (rows & set(NOT_ON_SPANS)), "a key is both a row and 'not on spans'"


def test_rows_name_genai_prices_units_and_distinct_columns() -> None:
    for c in TOKEN_CLASSES:
        assert c.usage_key in unit_data, c
        assert re.fullmatch(r"[a-z][a-z0-9_]*", c.name), c
    assert len({c.column for c in TOKEN_CLASSES}) == len(TOKEN_CLASSES)
    assert TOKEN_CLASSES[0].name == "input" and TOKEN_CLASSES[1].name == "output"


def test_a_span_key_belongs_to_one_class() -> None:
    seen: dict[str, str] = {}
    for c in TOKEN_CLASSES:
        assert c.span_keys, f"{c.name} has no span key"
        for key in c.span_keys:
            assert key not in seen, f"{key} is read for both {seen[key]} and {c.name}"
            seen[key] = c.name


def test_every_part_is_included_in_input_or_output() -> None:
    assert INCLUDED_IN["input"] == () and INCLUDED_IN["output"] == ()
    for c in TOKEN_CLASSES[2:]:
        assert {"input", "output"} & set(INCLUDED_IN[c.name]), c.name
    assert set(INCLUDED_IN["cache_write_1h"]) == {"input", "cache_write"}
    assert set(INCLUDED_IN["cache_audio_read"]) == {"input", "cache_read", "input_audio"}
    assert INCLUDED_IN["reasoning"] == ("output",)


def test_classes_billed_far_above_text_need_their_own_price() -> None:
    # Audio and generated media are billed at several times the text rate where they are billed at all.
    for name in ("input_audio", "output_audio", "cache_audio_read", "output_image", "output_video"):
        assert BY_NAME[name].needs_own_price, name
    for name in ("input", "output", "cache_read", "cache_write", "reasoning", "input_image", "input_video"):
        assert not BY_NAME[name].needs_own_price, name


def _readme_table() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Token classes", 1)[1].split("\n#", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


def test_the_readme_token_table_is_the_table() -> None:
    expected = token_classes.markdown_table()
    assert _readme_table() == expected, (
        "README.md's token-class table differs from src/otel_usecase/cost/token_classes.py; replace it with:\n"
        + expected
    )
