"""The ledger row is built by name: a shifted column is a failing test, not a silent mix-up."""

from __future__ import annotations

from typing import Any

from otel_usecase.cost.call import Call
from otel_usecase.cost.token_classes import TOKEN_CLASSES
from otel_usecase.store.base import COLUMNS, LEDGER, TOKEN_COLUMNS, row_of


def _distinct_call() -> Call:
    """A call whose every field and token class holds a value no other one holds."""
    values: dict[str, Any] = {}
    for i, field in enumerate(Call._fields):
        kind = str(Call.__annotations__[field])
        values[field] = f"v-{field}" if "str" in kind else 1_000 + i
    values["cost_usd"], values["computed_cost_usd"] = 0.25, 0.5
    values["tokens"] = {c.name: 10_000 + i for i, c in enumerate(TOKEN_CLASSES)}
    values["tags"] = {"tenant": "v-tags"}
    return Call(**values)


def test_every_column_gets_the_field_or_token_class_of_its_name() -> None:
    call = _distinct_call()
    row = dict(zip(COLUMNS, row_of(call), strict=True))
    for field in Call._fields:
        if field == "tags":
            assert row[field] == '{"tenant":"v-tags"}'
        elif field != "tokens":
            assert row[field] == getattr(call, field), field
    for c in TOKEN_CLASSES:
        assert row[c.column] == call.tokens[c.name], c.column


def test_the_ledger_is_the_call_fields_with_tokens_spread_into_one_column_per_class() -> None:
    assert set(COLUMNS) == (set(Call._fields) - {"tokens"}) | set(TOKEN_COLUMNS)
    assert len(COLUMNS) == len(set(COLUMNS)) == len(LEDGER)


def test_absent_parts_are_zero_and_unknown_input_output_stay_unknown() -> None:
    call = _distinct_call()._replace(tokens={"output": 7})
    row = dict(zip(COLUMNS, row_of(call), strict=True))
    assert row["input_tokens"] is None and row["output_tokens"] == 7
    assert all(row[c.column] == 0 for c in TOKEN_CLASSES[2:])
