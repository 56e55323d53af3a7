"""The collector configs in collector-config/ and the OTTL that prices spans in a collector.

No collector binary here: the configs are checked for structure (every component
referenced is defined and every defined one is used, connectors bridge two
pipelines, ...), and the generated OTTL is checked for syntax and *run* by a small
Python interpreter of the OTTL subset it uses, against costs computed here from
the providers' published prices (written in this file, never read from the code).
"""

from __future__ import annotations

import functools
import io
import random
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import redirect_stderr, redirect_stdout
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import genai_prices
import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml is a test dependency (add it to the test extra)")

from otel_usecase.collector import command as cc
from otel_usecase.cost import usage
from otel_usecase.cost.calls import is_model_call
from otel_usecase.cost.prices import ENV_PRICES, PriceBook
from otel_usecase.cost.token_classes import BY_NAME, TOKEN_CLASSES
from otel_usecase.cost.usage import read_usage

CONFIG_DIR = Path(__file__).resolve().parent.parent / "collector-config"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
SECTIONS = ("receivers", "processors", "exporters", "connectors", "extensions")
PIPELINE_ID = re.compile(r"^(traces|metrics|logs)(/[A-Za-z0-9_.\-]+)?$")
COMPONENT_ID = re.compile(r"^[a-z][a-z0-9_]*(/[A-Za-z0-9_.\-]+)?$")
M = Decimal(1_000_000)
UNPRICED = "usecase.cost.unpriced_reason"


@pytest.fixture(autouse=True)
def _no_prices_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checked-in config is generated from genai-prices alone."""
    monkeypatch.delenv(ENV_PRICES, raising=False)


@pytest.fixture(scope="module")
def book() -> PriceBook:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(ENV_PRICES, raising=False)
        return PriceBook()


@pytest.fixture(scope="module")
def default_plan(book: PriceBook) -> cc.TransformPlan:
    return cc.plan_transform(prices=book)


@pytest.fixture(scope="module")
def default_statements(default_plan: cc.TransformPlan, book: PriceBook) -> list[str]:
    statements = cc.transform_statements(prices=book)
    assert statements == default_plan.statements
    return statements


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((CONFIG_DIR / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def kind(component_id: str) -> str:
    return component_id.split("/", 1)[0]


# -- a tiny interpreter of the OTTL the generator writes --------------------------

STRING = re.compile(r'"(?:\\.|[^\\"])*"')


class _Map(dict[str, Any]):
    def __missing__(self, key: str) -> None:
        return None


def _code_parts(text: str) -> Iterator[tuple[bool, str]]:
    """(is_string_literal, text) pieces."""
    pos = 0
    for match in STRING.finditer(text):
        yield False, text[pos : match.start()]
        yield True, match.group(0)
        pos = match.end()
    yield False, text[pos:]


def _code_only(text: str) -> str:
    """``text`` with every string literal blanked out (same length)."""
    return "".join(
        part if not is_str else '"' + " " * (len(part) - 2) + '"' for is_str, part in _code_parts(text)
    )


def _to_python(expr: str) -> str:
    out = []
    for is_str, part in _code_parts(expr):
        if is_str:
            out.append(part)  # OTTL unquotes as Go does; the escapes used here mean the same in Python
            continue
        part = re.sub(r"\battributes\[", "A[", part)
        part = re.sub(r"\bcache\[", "C[", part)
        part = re.sub(r"\bnil\b", "None", part)
        part = re.sub(r"\btrue\b", "True", part)
        part = re.sub(r"\bfalse\b", "False", part)
        part = part.replace("IsMatch(", "_is_match(").replace("Double(", "_double(")
        part = part.replace("ToLowerCase(", "_lower(")
        out.append(part)
    return "".join(out)


def _double(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _is_match(target: object, pattern: str) -> bool:
    if target is None:
        return False
    text = ("true" if target else "false") if isinstance(target, bool) else str(target)
    return re.search(pattern, text) is not None


def _lower(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("ToLowerCase needs a string")
    return value.lower()


def split_statement(statement: str) -> tuple[str, str, str]:
    """``set(TARGET, VALUE) where COND`` -> (TARGET, VALUE, COND)."""
    code = _code_only(statement)
    assert code.count(" where ") == 1, statement
    at = code.index(" where ")
    head, cond = statement[:at], statement[at + len(" where ") :]
    assert head.startswith("set(") and head.endswith(")"), statement
    inner, inner_code = head[4:-1], code[4 : at - 1]
    depth = 0
    for i, char in enumerate(inner_code):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "," and depth == 0:
            return inner[:i].strip(), inner[i + 1 :].strip(), cond
    raise AssertionError(f"no top-level comma in {statement}")


TARGET = re.compile(r'^(attributes|cache)\[("(?:\\.|[^\\"])*")\]$')


class Program:
    """The generated statements, compiled to Python, run on one span's attributes."""

    def __init__(self, statements: list[str]) -> None:
        self.steps = []
        for statement in statements:
            target, value, cond = split_statement(statement)
            match = TARGET.match(target)
            assert match, target
            key = eval(match.group(2))  # a string literal
            self.steps.append(
                (
                    match.group(1),
                    key,
                    compile(_to_python(value), "<value>", "eval"),
                    compile(_to_python(cond), "<where>", "eval"),
                )
            )

    def run(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        a, c = _Map(attributes), _Map()
        scope = {"A": a, "C": c, "_double": _double, "_is_match": _is_match, "_lower": _lower}
        for where, key, value, cond in self.steps:
            try:  # error_mode: ignore -- a failing statement does nothing
                if not eval(cond, scope):
                    continue
                result = eval(value, scope)
            except TypeError:
                continue
            if result is not None:
                (a if where == "attributes" else c)[key] = result
        return dict(a)


@pytest.fixture(scope="module")
def program(default_statements: list[str]) -> Program:
    return Program(default_statements)


def cost_of(program: Program, attributes: Mapping[str, Any]) -> float | None:
    return program.run(attributes).get(cc.COST_ATTRIBUTE)


# -- every config: structure ----------------------------------------------------


def test_the_attribute_names_users_read() -> None:
    assert (cc.COST_ATTRIBUTE, cc.UNPRICED_REASON_ATTRIBUTE) == ("gen_ai.usage.cost", UNPRICED)


def test_the_three_configs_exist() -> None:
    assert {p.name for p in CONFIGS} >= {"gateway.yaml", "loadbalancing.yaml", "cost-in-collector.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_is_wired(path: Path) -> None:
    assert_wired(load(path.name))


def assert_wired(config: Mapping[str, Any]) -> None:
    """Every component defined is used, every one used is defined, processors in a sane order."""
    assert set(config) <= {*SECTIONS, "service"}, set(config)
    defined = {section: set(config.get(section) or {}) for section in SECTIONS}
    for section, ids in defined.items():
        for component_id in ids:
            assert COMPONENT_ID.match(component_id), f"{section}: {component_id!r}"
    pipelines = config["service"]["pipelines"]
    assert pipelines
    used: dict[str, set[str]] = {section: set() for section in SECTIONS}
    connector_as_exporter: dict[str, list[str]] = {}
    connector_as_receiver: dict[str, list[str]] = {}
    for name, pipeline in pipelines.items():
        assert PIPELINE_ID.match(name), name
        assert set(pipeline) <= {"receivers", "processors", "exporters"}, name
        assert pipeline.get("receivers") and pipeline.get("exporters"), name
        for rid in pipeline["receivers"]:
            if rid in defined["connectors"]:
                connector_as_receiver.setdefault(rid, []).append(name)
                used["connectors"].add(rid)
            else:
                assert rid in defined["receivers"], f"{name}: receiver {rid} is not defined"
                used["receivers"].add(rid)
        for pid in pipeline.get("processors") or []:
            assert pid in defined["processors"], f"{name}: processor {pid} is not defined"
            used["processors"].add(pid)
        for eid in pipeline["exporters"]:
            if eid in defined["connectors"]:
                connector_as_exporter.setdefault(eid, []).append(name)
                used["connectors"].add(eid)
            else:
                assert eid in defined["exporters"], f"{name}: exporter {eid} is not defined"
                used["exporters"].add(eid)
        processors = pipeline.get("processors") or []
        if "memory_limiter" in processors:
            assert processors[0] == "memory_limiter", f"{name}: memory_limiter must come first"
        if "batch" in processors:
            assert processors[-1] == "batch", f"{name}: batch goes last"
    for section in ("receivers", "processors", "exporters", "connectors"):
        assert defined[section] == used[section], (
            f"{section} defined but unused: {defined[section] - used[section]}"
        )
    for connector in defined["connectors"]:
        assert connector in connector_as_exporter and connector in connector_as_receiver, connector
        assert set(connector_as_exporter[connector]).isdisjoint(connector_as_receiver[connector])
    assert not defined["extensions"] or set(config["service"].get("extensions", [])) == defined["extensions"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_has_no_secret_in_it(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for line in text.splitlines():
        if "Bearer" in line and not line.lstrip().startswith("#"):
            assert "Bearer ${env:OTEL_USECASE_TOKEN}" in line, line


# -- every config: validates as shipped, and with the current component names ----------------

ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
README = CONFIG_DIR / "README.md"


def validate_commands(text: str, name: str) -> list[set[str]]:
    """The variables set (``NAME=...``) by each ``otelcol-contrib validate`` command for ``name`` in ``text``."""
    commands = []
    lines = [line.lstrip("#").strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if f"otelcol-contrib validate --config collector-config/{name}" in line:
            command = line
            j = i - 1
            while j >= 0 and lines[j].endswith("\\"):  # continuation lines above
                command = lines[j] + " " + command
                j -= 1
            commands.append(set(re.findall(r"\b([A-Z][A-Z0-9_]*)=", command)))
    return commands


def env_without_default(text: str) -> set[str]:
    """Variables a config reads without a default, outside comments."""
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return {m.group(1) for m in ENV_REF.finditer(code) if m.group(2) is None}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_env_var_has_a_default_or_is_in_the_validate_command(path: Path) -> None:
    """``otelcol-contrib validate`` fails on an empty exporter endpoint: the commands shown must set them."""
    text = path.read_text(encoding="utf-8")
    needed = env_without_default(text)
    endpoints = {
        m.group(1)
        for line in text.splitlines()
        if line.strip().startswith("endpoint:")
        for m in ENV_REF.finditer(line)
        if m.group(2) is None
    }
    assert endpoints, "every shipped config sends somewhere configured by the environment"
    for where, source in (
        (path.name, text),
        ("collector-config/README.md", README.read_text(encoding="utf-8")),
    ):
        commands = validate_commands(source, path.name)
        assert commands, f"{where} shows no `otelcol-contrib validate --config collector-config/{path.name}`"
        for variables in commands:
            assert endpoints <= variables, (where, endpoints - variables)
    # Any other variable without a default (the bearer token) is set in the file's run command.
    run_assignments = set(re.findall(r"\b([A-Z][A-Z0-9_]*)=", text))
    assert needed <= run_assignments, needed - run_assignments


def test_env_var_defaults_use_the_collector_syntax() -> None:
    for path in CONFIGS:
        for line in path.read_text(encoding="utf-8").splitlines():
            if "${" in line and not line.lstrip().startswith("#"):
                assert all(ref.startswith("${env:") for ref in re.findall(r"\$\{[^}]*\}", line)), line


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_current_names_config_parses_is_wired_and_filters_the_same(path: Path) -> None:
    config = yaml.safe_load(cc.current_names(path.read_text(encoding="utf-8")))
    assert_wired(config)
    kinds = {kind(e) for e in config["exporters"]}
    assert not kinds & {"otlp", "otlphttp", "loadbalancing"}, kinds
    assert config["receivers"].keys() == load(path.name)["receivers"].keys()  # receivers keep `otlp`
    original = load(path.name)
    for pid, processor in config["processors"].items():
        if kind(pid) != "filter":
            continue
        assert "traces" not in processor
        conditions = processor["trace_conditions"]
        assert all(c.count("span.attributes[") == c.count("attributes[") for c in conditions)
        old = filter_drops(original, pid)
        new = [
            compile(_to_python(c.replace("span.attributes[", "attributes[")), "<c>", "eval")
            for c in conditions
        ]
        for span in [*SPANS_KEPT, *SPANS_DROPPED]:
            scope = {"A": _Map(span), "_is_match": _is_match}
            assert any(eval(c, scope) for c in new) == old(span), span


def test_current_names_command_prints_the_rewritten_config(tmp_path: Path) -> None:
    command = [str(Path(sys.executable).parent / "otel-usecase"), "collector-config", "current-names"]
    done = subprocess.run(
        [*command, str(CONFIG_DIR / "loadbalancing.yaml")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    assert "load_balancing/usecase" in config["exporters"]
    assert config["service"]["pipelines"]["traces/usecase"]["exporters"] == ["load_balancing/usecase"]
    odd = tmp_path / "odd.yaml"
    odd.write_text("processors:\n  filter/x:\n    traces:\n      spanevent:\n        - 'name == \"x\"'\n")
    refused = subprocess.run([*command, str(odd)], check=False, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "traces: span:" in refused.stderr


# -- gateway.yaml ------------------------------------------------------------------


def filter_drops(config: Mapping[str, Any], pid: str) -> Callable[[Mapping[str, Any]], bool]:
    conditions = config["processors"][pid]["traces"]["span"]
    compiled = [compile(_to_python(c), "<filter>", "eval") for c in conditions]

    def drops(attributes: Mapping[str, Any]) -> bool:
        scope = {"A": _Map(attributes), "_is_match": _is_match}
        return any(eval(c, scope) for c in compiled)

    return drops


SPANS_KEPT = [
    {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"},
    {"gen_ai.system": "openai", "gen_ai.usage.input_tokens": 3},
    {"gen_ai.provider.name": "anthropic", "gen_ai.usage.output_tokens": 3},
    {"openinference.span.kind": "LLM", "llm.token_count.prompt": 3},
]
SPANS_DROPPED = [
    {"http.request.method": "POST", "url.full": "https://api.openai.com/v1/chat/completions"},
    {"db.system": "postgresql", "usecase.name": "summarize"},
    {},
]


@pytest.mark.parametrize("name", ["gateway.yaml", "loadbalancing.yaml"])
def test_only_llm_spans_go_to_the_cost_engine(name: str) -> None:
    config = load(name)
    pipelines = config["service"]["pipelines"]
    traces = [p for p in pipelines if kind(p) == "traces"]
    assert len(traces) == 2
    to_engine = [
        p for p in traces if any(kind(e) in ("otlphttp", "loadbalancing") for e in pipelines[p]["exporters"])
    ]
    assert len(to_engine) == 1
    engine = pipelines[to_engine[0]]
    filters = [p for p in engine["processors"] if kind(p) == "filter"]
    assert len(filters) == 1
    assert all(kind(e) in ("otlphttp", "loadbalancing") for e in engine["exporters"])
    drops = filter_drops(config, filters[0])
    for span in SPANS_KEPT:
        assert not drops(span), span
        assert not is_model_call(span) or not drops(span)
    for span in SPANS_DROPPED:
        assert drops(span), span
    (backend,) = [p for p in traces if p not in to_engine]
    assert not any(kind(p) == "filter" for p in pipelines[backend].get("processors", []))
    assert [kind(e) for e in pipelines[backend]["exporters"]] == ["otlp"]
    for signal in ("metrics", "logs"):
        assert any(kind(p) == signal for p in pipelines), f"{name} forwards {signal} too"


def test_the_filter_keeps_every_span_the_engine_counts() -> None:
    drops = filter_drops(load("gateway.yaml"), "filter/llm_spans")
    rng = random.Random(7)
    keys = ["gen_ai.operation.name", "gen_ai.system", "gen_ai.provider.name", "openinference.span.kind"]
    values = {
        "gen_ai.operation.name": ["chat", "embeddings", "invoke_agent"],
        "openinference.span.kind": ["LLM", "CHAIN"],
    }
    for _ in range(300):
        span: dict[str, Any] = {"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 2}
        for key in keys:
            if rng.random() < 0.4:
                span[key] = rng.choice(values.get(key, ["openai", "anthropic"]))
        if is_model_call(span):
            assert not drops(span), span


def test_gateway_exporters() -> None:
    config = load("gateway.yaml")
    backend = config["exporters"]["otlp/backend"]
    assert backend["endpoint"] == "${env:TRACING_BACKEND_ENDPOINT}"
    engine = config["exporters"]["otlphttp/usecase"]
    assert engine["endpoint"].startswith("${env:OTEL_USECASE_ENDPOINT")
    assert engine["headers"]["authorization"] == "Bearer ${env:OTEL_USECASE_TOKEN}"
    receiver = config["receivers"]["otlp"]["protocols"]
    assert set(receiver) == {"grpc", "http"}


# -- loadbalancing.yaml ----------------------------------------------------------------


def test_loadbalancing_routes_runs_by_usecase_id_over_grpc() -> None:
    config = load("loadbalancing.yaml")
    (lb_id,) = [e for e in config["exporters"] if kind(e) == "loadbalancing"]
    lb = config["exporters"][lb_id]
    assert lb["routing_key"] == "attributes"
    assert lb["routing_attributes"] == ["usecase.id"]
    assert set(lb["protocol"]) == {"otlp"}  # OTLP/gRPC to the serve instances
    assert "endpoint" not in lb["protocol"]["otlp"]
    assert lb["protocol"]["otlp"]["headers"]["authorization"] == "Bearer ${env:OTEL_USECASE_TOKEN}"
    hostnames = lb["resolver"]["static"]["hostnames"]
    assert len(hostnames) >= 2 and len(set(hostnames)) == len(hostnames)
    for host in hostnames:
        assert re.fullmatch(r"127\.0\.0\.1:\d{4,5}", host), host
        assert host.split(":")[1] not in ("4317", "4318"), "the gateway itself listens there"
    pipelines = config["service"]["pipelines"]
    assert [p for p in pipelines if lb_id in pipelines[p]["exporters"]] == ["traces/usecase"]


# -- cost-in-collector.yaml: the generated block cannot drift from the prices -------------


def test_cost_config_statements_are_what_the_generator_writes_now(default_statements: list[str]) -> None:
    config = load("cost-in-collector.yaml")
    processor = config["processors"][cc.PROCESSOR_ID]
    assert processor["error_mode"] == "ignore"
    (group,) = processor["trace_statements"]
    assert group["context"] == "span"
    assert group["statements"] == default_statements, (
        "collector-config/cost-in-collector.yaml is stale: run "
        "`python -m otel_usecase.collector.command --update collector-config/cost-in-collector.yaml`"
    )


def test_cost_config_pipelines() -> None:
    config = load("cost-in-collector.yaml")
    pipelines = config["service"]["pipelines"]
    (traces,) = [p for p in pipelines if kind(p) == "traces"]
    processors = pipelines[traces]["processors"]
    assert cc.PROCESSOR_ID in processors
    assert processors.index(cc.PROCESSOR_ID) < processors.index("batch")
    (sum_id,) = [c for c in config["connectors"] if kind(c) == "sum"]
    assert sum_id in pipelines[traces]["exporters"]
    (metrics,) = [p for p in pipelines if kind(p) == "metrics"]
    assert pipelines[metrics]["receivers"][0] == sum_id
    metric = config["connectors"][sum_id]["spans"]["llm.cost.usd"]
    assert metric["source_attribute"] == cc.COST_ATTRIBUTE
    assert [a["key"] for a in metric["attributes"]] == ["usecase.name"]
    scope = {"A": _Map({cc.COST_ATTRIBUTE: 0.5}), "_is_match": _is_match}
    assert all(eval(compile(_to_python(c), "<c>", "eval"), scope) for c in metric["conditions"])
    nested = _Map({cc.COST_ATTRIBUTE: 0.5, "usecase.call.span_id": "00f067aa0ba902b7"})
    assert not any(eval(compile(_to_python(c), "<c>", "eval"), {"A": nested}) for c in metric["conditions"])
    # calls of a listed model that could not be priced are counted, per use case and reason
    (count_id,) = [c for c in config["connectors"] if kind(c) == "count"]
    assert count_id in pipelines[traces]["exporters"] and count_id in pipelines[metrics]["receivers"]
    unpriced = config["connectors"][count_id]["spans"]["llm.calls.unpriced"]
    assert [a["key"] for a in unpriced["attributes"]] == ["usecase.name", cc.UNPRICED_REASON_ATTRIBUTE]
    conditions = [compile(_to_python(c), "<c>", "eval") for c in unpriced["conditions"]]

    def counted(attributes: dict[str, Any]) -> bool:
        return any(eval(c, {"A": _Map(attributes)}) for c in conditions)

    assert counted({UNPRICED: "unknown token class audio"})
    assert not counted({cc.COST_ATTRIBUTE: 0.5})
    assert not counted({UNPRICED: "unknown token class audio", "usecase.call.span_id": "00f067aa0ba902b7"})


def test_update_writes_the_block_between_the_markers(tmp_path: Path, book: PriceBook) -> None:
    original = (CONFIG_DIR / "cost-in-collector.yaml").read_text(encoding="utf-8")
    lines = original.splitlines(keepends=True)
    begin = next(i for i, line in enumerate(lines) if line.strip() == cc.BEGIN_MARKER)
    end = next(i for i, line in enumerate(lines) if line.strip() == cc.END_MARKER)
    emptied = "".join(lines[: begin + 1] + lines[end:])
    target = tmp_path / "cost.yaml"
    target.write_text(emptied, encoding="utf-8")
    assert run_cli(["--check", str(target)])[0] == 1
    assert run_cli(["--update", str(target)])[0] == 0
    assert target.read_text(encoding="utf-8") == original
    assert run_cli(["--check", str(target)])[0] == 0
    assert run_cli(["--update", str(tmp_path / "missing.yaml")])[0] == 2
    (tmp_path / "nomarkers.yaml").write_text("processors: {}\n", encoding="utf-8")
    assert run_cli(["--update", str(tmp_path / "nomarkers.yaml")])[0] == 2


# -- the generated OTTL: syntax ------------------------------------------------------


def test_every_statement_is_well_formed(default_statements: list[str]) -> None:
    assert len(default_statements) > len(cc.DEFAULT_MODELS)
    for statement in default_statements:
        assert statement.count('"') % 2 == 0 or STRING.sub("", statement).count('"') == 0, statement
        code = _code_only(statement)
        assert '"' not in STRING.sub("", code), statement  # every quote closes
        depth = 0
        for char in code:
            depth += {"(": 1, ")": -1}.get(char, 0)
            assert depth >= 0, statement
        assert depth == 0, statement
        assert code.count("[") == code.count("]"), statement
        assert code.count(" where ") == 1, statement
        assert statement.startswith("set(")
        target, value, cond = split_statement(statement)
        assert TARGET.match(target)
        for number in re.findall(r"(?<![\w\"])[-+]?\d[\d.eE+-]*", _code_only(value) + " " + _code_only(cond)):
            assert re.fullmatch(r"\d+\.\d+", number), f"{number!r} is not a plain OTTL float in {statement}"
        for pattern in re.findall(r'IsMatch\([^,]+, ("(?:\\.|[^\\"])*")\)', statement):
            # RE2 has no lookaround
            assert "(?=" not in pattern and "(?!" not in pattern and "(?<" not in pattern


def test_token_counts_are_read_as_doubles_with_nil_guards(
    default_plan: cc.TransformPlan, default_statements: list[str]
) -> None:
    token_keys = [key for c in default_plan.read for key in c.span_keys] + list(usage.TOTAL_KEYS)
    reads = 0
    for statement in default_statements:
        _, value, cond = split_statement(statement)
        for key in token_keys:
            ref = f'attributes["{key}"]'
            for match in re.finditer(re.escape(ref), value):
                reads += 1
                assert value[: match.start()].endswith("Double("), statement
                assert f"{ref} != nil" in cond, statement
    assert reads == len(token_keys)
    # the per-model statements compute with doubles only: cache values set from Double() or float literals
    for statement in default_statements:
        target, value, _ = split_statement(statement)
        if target.startswith("cache[") and "attributes[" not in value:
            assert re.fullmatch(r'[\s\w\[\]".()*+\-/]*', _code_only(value)), statement


def test_every_class_read_is_read_from_all_its_span_keys_in_table_order(
    default_plan: cc.TransformPlan,
) -> None:
    """Derived from the token-class table: a class's keys come from its row, first key wins (set last)."""
    names = [c.name for c in default_plan.read]
    assert names == [c.name for c in TOKEN_CLASSES if c.name in names]
    statements = [s for _, group in default_plan.prelude for s in group]
    for token_class in default_plan.read:
        target = f'cache["{token_class.name}"]'
        keys = [
            re.search(r'attributes\["([^"]+)"\]', split_statement(s)[1]).group(1)  # type: ignore[union-attr]
            for s in statements
            if split_statement(s)[0] == target and "Double(attributes[" in s
        ]
        assert keys == list(reversed(token_class.span_keys)), token_class.name


# -- the generated OTTL: prices -------------------------------------------------------


def model_statement(plan: cc.TransformPlan, model: str) -> str:
    """The statement that computes the cost for ``model`` (one of the names asked for)."""
    (found,) = [m.cost for m in plan.models if model in m.names]
    assert found in plan.statements
    return found


def top_level_terms(expression: str) -> list[str]:
    """``(a - b) * x + c * y`` -> ``["(a - b) * x", "c * y"]``: split on the ``+`` outside parentheses."""
    terms, depth, start = [], 0, 0
    code = _code_only(expression)
    for i, char in enumerate(code):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and code.startswith(" + ", i):
            terms.append(expression[start:i])
            start = i + 3
    return [*terms, expression[start:]]


def rates_in(statement: str) -> dict[str, Decimal]:
    """USD per token by class, read back from one per-model cost statement."""
    rates = {}
    for term in top_level_terms(split_statement(statement)[1]):
        match = re.fullmatch(r'\(?cache\["(\w+)"\][^*]* \* (\d+\.\d+)', term)
        assert match, term
        assert match.group(1) not in rates
        rates[match.group(1)] = Decimal(match.group(2))
    return rates


D = Decimal
PUBLISHED: dict[str, dict[str, Decimal]] = {
    # USD per million tokens, from the providers' price pages (OpenAI, Anthropic, Google AI for developers);
    # every rate genai-prices has for the model, so the set of classes priced is checked too
    "gpt-4o": {"input": D("2.50"), "output": D(10), "cache_read": D("1.25")},
    "gpt-4o-mini": {"input": D("0.15"), "output": D("0.60"), "cache_read": D("0.075")},
    "gpt-4.1": {"input": D(2), "output": D(8), "cache_read": D("0.50")},
    "gpt-4.1-mini": {"input": D("0.40"), "output": D("1.60"), "cache_read": D("0.10")},
    "gpt-4.1-nano": {"input": D("0.10"), "output": D("0.40"), "cache_read": D("0.025")},
    "o3": {"input": D(2), "output": D(8), "cache_read": D("0.50")},
    "o4-mini": {"input": D("1.10"), "output": D("4.40"), "cache_read": D("0.275")},
    "gpt-5": {"input": D("1.25"), "output": D(10), "cache_read": D("0.125")},
    "gpt-5-mini": {"input": D("0.25"), "output": D(2), "cache_read": D("0.025")},
    "gpt-5-nano": {"input": D("0.05"), "output": D("0.40"), "cache_read": D("0.005")},
    # Anthropic: cache writes 1.25x input (5-minute TTL), 2x input (1-hour TTL), reads 0.1x
    "claude-sonnet-4-5": {
        "input": D(3),
        "output": D(15),
        "cache_read": D("0.30"),
        "cache_write": D("3.75"),
        "cache_write_1h": D(6),
    },
    "claude-haiku-4-5": {
        "input": D(1),
        "output": D(5),
        "cache_read": D("0.10"),
        "cache_write": D("1.25"),
        "cache_write_1h": D(2),
    },
    "claude-opus-4-1": {
        "input": D(15),
        "output": D(75),
        "cache_read": D("1.50"),
        "cache_write": D("18.75"),
        "cache_write_1h": D(30),
    },
    "gemini-2.5-pro": {"input": D("1.25"), "output": D(10), "cache_read": D("0.125")},  # up to 200k tokens
    "gemini-2.5-flash": {
        "input": D("0.30"),
        "output": D("2.50"),
        "cache_read": D("0.03"),
        "input_audio": D("1.00"),
        "cache_audio_read": D("0.10"),
    },
    "gemini-2.5-flash-lite": {
        "input": D("0.10"),
        "output": D("0.40"),
        "cache_read": D("0.01"),
        "input_audio": D("0.30"),
        "cache_audio_read": D("0.03"),
    },
}


def test_published_table_is_the_default_list() -> None:
    assert tuple(PUBLISHED) == cc.DEFAULT_MODELS


@pytest.mark.parametrize("model", cc.DEFAULT_MODELS)
def test_prices_in_the_statements_are_the_published_ones(model: str, default_plan: cc.TransformPlan) -> None:
    rates = rates_in(model_statement(default_plan, model))
    assert rates == {part: per_million / M for part, per_million in PUBLISHED[model].items()}


# -- the generated OTTL: run it ------------------------------------------------------------


def span(model: str, *, input: int, output: int, **extra: Any) -> dict[str, Any]:
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.response.model": model,
        "gen_ai.usage.input_tokens": input,
        "gen_ai.usage.output_tokens": output,
    }
    attributes.update({k.replace("__", "."): v for k, v in extra.items()})
    return attributes


def test_gpt_4o_with_cached_tokens(program: Program) -> None:
    attributes = span(
        "gpt-4o-2024-08-06", input=1000, output=500, gen_ai__usage__cache_read__input_tokens=200
    )
    # 800 x $2.50/M + 200 x $1.25/M + 500 x $10/M
    assert cost_of(program, attributes) == pytest.approx(0.00725, rel=1e-12)


def test_missing_cache_attribute_counts_as_zero(program: Program) -> None:
    assert cost_of(program, span("gpt-4o-mini", input=1_000_000, output=1_000_000)) == pytest.approx(
        0.75, rel=1e-12
    )


def test_traceloop_cache_key_and_request_model_fallback(program: Program) -> None:
    attributes = {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "GPT-4o-mini",
        "gen_ai.usage.input_tokens": 10_000,
        "gen_ai.usage.output_tokens": 1_000,
        "gen_ai.usage.cache_read_input_tokens": 4_000,
    }
    # 6000 x 0.15 + 4000 x 0.075 + 1000 x 0.60, per million
    assert cost_of(program, attributes) == pytest.approx(0.0018, rel=1e-12)
    attributes["gen_ai.response.model"] = ""  # empty names nothing: the request model still counts
    assert cost_of(program, attributes) == pytest.approx(0.0018, rel=1e-12)


def test_anthropic_cache_writes_and_exclusive_input(program: Program) -> None:
    inclusive = span(
        "claude-sonnet-4-5-20250929",
        input=1300,
        output=100,
        gen_ai__usage__cache_read__input_tokens=1000,
        gen_ai__usage__cache_creation__input_tokens=200,
    )
    expected = (100 * 3 + 1000 * 0.30 + 200 * 3.75 + 100 * 15) / 1e6
    assert cost_of(program, inclusive) == pytest.approx(expected, rel=1e-12)
    # the raw Anthropic count, without the cached parts
    exclusive = dict(inclusive, **{"gen_ai.usage.input_tokens": 100})
    assert cost_of(program, exclusive) == pytest.approx(expected, rel=1e-12)
    # 150 of the 200 written with the 1-hour TTL: $6/M instead of $3.75/M
    one_hour = dict(exclusive, **{"gen_ai.usage.cache_creation.ephemeral_1h_input_tokens": 150})
    expected = (100 * 3 + 1000 * 0.30 + 50 * 3.75 + 150 * 6 + 100 * 15) / 1e6
    assert cost_of(program, one_hour) == pytest.approx(expected, rel=1e-12)
    # more 1-hour writes than writes: genai-prices refuses such counts, and so do the statements
    bad = program.run(dict(exclusive, **{"gen_ai.usage.cache_creation.ephemeral_1h_input_tokens": 201}))
    assert cc.COST_ATTRIBUTE not in bad and bad[UNPRICED] == "inconsistent token counts"


def test_a_reported_total_decides_what_the_counts_exclude(program: Program) -> None:
    # Gemini-style: output without the thinking tokens, input without the cached part; the total adds both
    raw = span(
        "gemini-2.5-flash",
        input=5000,
        output=300,
        gen_ai__usage__cache_read__input_tokens=1000,
        gen_ai__usage__reasoning__output_tokens=200,
    )
    cases = {
        5300: (5000, 300),  # total = input + output: counts are inclusive already
        6300: (6000, 300),  # the cached part was left out of the input
        5500: (5000, 500),  # the reasoning was left out of the output
        6500: (6000, 500),  # both
        9999: (5000, 300),  # a total that fits neither reading changes nothing
    }
    for total, (inp, out) in cases.items():
        attributes = dict(raw, **{"gen_ai.usage.total_tokens": total})
        expected = ((inp - 1000) * 0.30 + 1000 * 0.03 + out * 2.50) / 1e6
        assert cost_of(program, attributes) == pytest.approx(expected, rel=1e-12), total


def test_what_is_not_priced(program: Program) -> None:
    assert cost_of(program, span("some-local-llama", input=10, output=10)) is None
    # genai-prices prices this snapshot differently from gpt-4o: not priced as gpt-4o
    assert cost_of(program, span("gpt-4o-2024-05-13", input=10, output=10)) is None
    assert cost_of(program, {"http.request.method": "GET", "gen_ai.usage.input_tokens": 5}) is None
    agent = span("gpt-4o", input=10, output=10, gen_ai__operation__name="invoke_agent")
    assert cost_of(program, agent) is None  # its children are the calls
    no_usage = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}
    assert cost_of(program, no_usage) is None
    result = program.run(span("gpt-4o", input=10, output=10))
    assert set(result) == set(span("gpt-4o", input=10, output=10)) | {cc.COST_ATTRIBUTE}
    assert isinstance(result[cc.COST_ATTRIBUTE], float)


# -- every token class of the table, priced at its published rate -----------------------------


class ClassCase(NamedTuple):
    """A call of ``model`` with ``tokens`` (class -> count; parts included in their whole) and its cost."""

    model: str
    provider: str | None
    tokens: dict[str, int]
    expected_usd: float
    """Written from the provider's published prices (USD per million tokens), never from the code."""


CLASS_CASES: dict[str, ClassCase] = {
    # gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60 output
    "input": ClassCase("gpt-4o-mini", None, {"input": 1000, "output": 200}, (1000 * 0.15 + 200 * 0.60) / 1e6),
    "output": ClassCase(
        "gpt-4o-mini", None, {"input": 100, "output": 2000}, (100 * 0.15 + 2000 * 0.60) / 1e6
    ),
    "cache_read": ClassCase(
        "gpt-4o-mini",
        None,
        {"input": 1000, "cache_read": 600, "output": 100},
        (400 * 0.15 + 600 * 0.075 + 100 * 0.60) / 1e6,
    ),
    # claude-haiku-4-5: $1 input, $1.25 5-minute cache write, $2 1-hour cache write, $5 output
    "cache_write": ClassCase(
        "claude-haiku-4-5",
        None,
        {"input": 1000, "cache_write": 600, "output": 100},
        (400 * 1 + 600 * 1.25 + 100 * 5) / 1e6,
    ),
    "cache_write_1h": ClassCase(
        "claude-haiku-4-5",
        None,
        {"input": 1000, "cache_write": 600, "cache_write_1h": 400, "output": 100},
        (400 * 1 + 200 * 1.25 + 400 * 2 + 100 * 5) / 1e6,
    ),
    # Perplexity sonar-deep-research: $2 input, $8 output, $3 reasoning
    "reasoning": ClassCase(
        "sonar-deep-research",
        "perplexity",
        {"input": 100, "output": 1000, "reasoning": 800},
        (100 * 2 + 200 * 8 + 800 * 3) / 1e6,
    ),
    # gpt-realtime: text $4 input, $0.40 cached, $16 output; audio $32 input, $0.40 cached, $64 output
    "input_audio": ClassCase(
        "gpt-realtime",
        None,
        {"input": 1000, "input_audio": 700, "output": 100},
        (300 * 4 + 700 * 32 + 100 * 16) / 1e6,
    ),
    "cache_audio_read": ClassCase(
        "gpt-realtime",
        None,
        {"input": 1000, "cache_read": 500, "input_audio": 700, "cache_audio_read": 400, "output": 100},
        # 200 text input, 100 cached text, 300 audio input, 400 cached audio, 100 text output
        (200 * 4 + 100 * 0.40 + 300 * 32 + 400 * 0.40 + 100 * 16) / 1e6,
    ),
    "output_audio": ClassCase(
        "gpt-realtime",
        None,
        {"input": 100, "output": 1000, "output_audio": 900},
        (100 * 4 + 100 * 16 + 900 * 64) / 1e6,
    ),
    # gpt-image-1: text $5 input, $1.25 cached; image $10 input, $2.50 cached; $40 output
    "input_image": ClassCase(
        "gpt-image-1",
        None,
        {"input": 1000, "input_image": 800, "output": 100},
        (200 * 5 + 800 * 10 + 100 * 40) / 1e6,
    ),
    "cache_image_read": ClassCase(
        "gpt-image-1",
        None,
        {"input": 1000, "cache_read": 500, "input_image": 800, "cache_image_read": 400, "output": 100},
        # 100 text input, 100 cached text, 400 image input, 400 cached image, 100 output
        (100 * 5 + 100 * 1.25 + 400 * 10 + 400 * 2.50 + 100 * 40) / 1e6,
    ),
    # gemini-2.5-flash-image: $0.30 input, $2.50 text output, $30 image output
    "output_image": ClassCase(
        "gemini-2.5-flash-image",
        None,
        {"input": 100, "output": 1300, "output_image": 1290},
        (100 * 0.30 + 10 * 2.50 + 1290 * 30) / 1e6,
    ),
    # gemini-live-2.5-flash: $0.50 text input, $3 audio/video input, $2 text output
    "input_video": ClassCase(
        "gemini-live-2.5-flash",
        None,
        {"input": 1000, "input_video": 900, "output": 100},
        (100 * 0.50 + 900 * 3 + 100 * 2) / 1e6,
    ),
    # gemini-omni-flash-preview (as genai-prices 0.2.3 lists it): $1.50 input, $9 text output, $17.50 video output
    "output_video": ClassCase(
        "gemini-omni-flash-preview",
        None,
        {"input": 100, "output": 1000, "output_video": 900},
        (100 * 1.50 + 100 * 9 + 900 * 17.50) / 1e6,
    ),
}


@functools.cache
def class_program(model: str, provider: str | None) -> tuple[cc.TransformPlan, Program]:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(ENV_PRICES, raising=False)
        plan = cc.plan_transform([model], provider, PriceBook())
    return plan, Program(plan.statements)


def class_span(case: ClassCase, key_of: Mapping[str, str]) -> dict[str, Any]:
    attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.response.model": case.model}
    for name, count in case.tokens.items():
        attributes[key_of.get(name, BY_NAME[name].span_keys[0])] = count
    return attributes


@pytest.mark.parametrize(
    ("name", "key"),
    [(c.name, key) for c in TOKEN_CLASSES for key in c.span_keys],
    ids=lambda value: str(value),
)
def test_every_token_class_is_priced_at_its_published_rate(name: str, key: str) -> None:
    """Every row of the token-class table, from each of its span keys, with no OTTL code per class.

    A class added to the table fails here until a case with its published price is
    written, and passes once the generated statements price it right.
    """
    case = CLASS_CASES.get(name)
    if case is None:
        pytest.fail(
            f"token class {name!r} has no case here: add a model that prices it, at its published rate"
        )
    assert name in case.tokens
    plan, program = class_program(case.model, case.provider)
    assert [m.names for m in plan.models] == [(case.model,)]
    assert name in {c.name for c in plan.read}
    result = program.run(class_span(case, {name: key}))
    assert UNPRICED not in result
    assert result[cc.COST_ATTRIBUTE] == pytest.approx(case.expected_usd, rel=1e-12)
    # and the same figure as genai-prices' own decomposition of the same usage
    usage_of = genai_prices.Usage(**{BY_NAME[n].usage_key: count for n, count in case.tokens.items()})
    reference = genai_prices.calc_price(usage_of, case.model, provider_id=case.provider)
    assert float(reference.total_price) == pytest.approx(case.expected_usd, rel=1e-12)


def test_a_class_that_needs_its_own_price_is_never_priced_as_text(program: Program) -> None:
    # gpt-4o-audio-preview bills audio at $40/M input and $80/M output, but genai-prices lists only its
    # $2.50/$10 text rates: priced as text its audio would be a 16x under-count, so it stays unpriced
    plan = cc.plan_transform(["gpt-4o-audio-preview"], prices=PriceBook())
    audio_preview = Program(plan.statements)
    audio = span(
        "gpt-4o-audio-preview-2024-12-17",
        input=1200,
        output=900,
        gen_ai__usage__audio__input_tokens=1000,
        gen_ai__usage__audio__output_tokens=800,
    )
    result = audio_preview.run(audio)
    assert cc.COST_ATTRIBUTE not in result
    assert result[UNPRICED] == "unknown token class audio"
    assert cost_of(audio_preview, span("gpt-4o-audio-preview", input=1000, output=100)) == pytest.approx(
        (1000 * 2.50 + 100 * 10) / 1e6, rel=1e-12
    )  # its text calls are priced
    assert cost_of(program, audio) is None and UNPRICED not in program.run(audio)  # not a default model
    # the same on a default model, from OpenInference's key, and for output audio alone
    oi = span("gpt-4o", input=300, output=20, llm__token_count__prompt_details__audio=100)
    assert program.run(oi)[UNPRICED] == "unknown token class audio"
    assert cost_of(program, oi) is None
    spoken = span("gemini-2.5-flash", input=300, output=200, gen_ai__usage__audio__output_tokens=150)
    assert program.run(spoken)[UNPRICED] == "unknown token class audio"  # it prices audio input only
    # audio input where the model has that rate: gemini-2.5-flash $0.30 text, $1.00 audio, $2.50 output
    heard = span("gemini-2.5-flash", input=300, output=200, gen_ai__usage__audio__input_tokens=100)
    assert cost_of(program, heard) == pytest.approx((200 * 0.30 + 100 * 1.00 + 200 * 2.50) / 1e6, rel=1e-12)
    # a zero audio count (OpenInference writes one on every OpenAI call) is no audio
    zero = span("gpt-4o", input=300, output=20, llm__token_count__prompt_details__audio=0)
    assert cost_of(program, zero) == pytest.approx((300 * 2.50 + 20 * 10) / 1e6, rel=1e-12)
    assert UNPRICED not in program.run(zero)


def test_image_input_without_its_own_rate_is_priced_as_input() -> None:
    # OpenAI bills gpt-4o-mini's image inputs as input tokens ($0.15/M): no image statements needed
    plan, program = class_program("gpt-4o-mini", None)
    assert not {"input_image", "input_video", "cache_image_read"} & {c.name for c in plan.read}
    assert "image.input_tokens" not in " ".join(plan.statements)
    image = span("gpt-4o-mini", input=1000, output=100, gen_ai__usage__image__input_tokens=800)
    assert cost_of(program, image) == pytest.approx((1000 * 0.15 + 100 * 0.60) / 1e6, rel=1e-12)


def test_the_statements_read_only_the_classes_the_models_need() -> None:
    text_only, _ = class_program("gpt-4o-mini", None)
    realtime, _ = class_program("gpt-realtime", None)
    text_cost = text_only.models[0].cost
    assert "audio" not in text_cost and "image" not in text_cost  # priced: input, cached input, output
    assert rates_in(text_cost).keys() == {"input", "cache_read", "output"}
    assert rates_in(realtime.models[0].cost).keys() == {
        "input",
        "output",
        "cache_read",
        "input_audio",
        "cache_audio_read",
        "output_audio",
        "input_image",
        "cache_image_read",
    }
    # read without a rate only to leave such calls unpriced: the classes that need their own price
    extra = {c.name for c in text_only.read} - {"input", "output", "cache_read", "cache_write", "reasoning"}
    assert extra == {c.name for c in TOKEN_CLASSES if c.needs_own_price}


def test_parts_larger_than_their_whole_are_not_priced() -> None:
    _, program = class_program("gpt-realtime", None)
    bad = program.run(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.response.model": "gpt-realtime",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.audio.input_tokens": 500,
            "gen_ai.usage.output_tokens": 10,
        }
    )
    assert cc.COST_ATTRIBUTE not in bad and bad[UNPRICED] == "inconsistent token counts"


# the names a span may carry for each default model (dated snapshots, other spellings)
COVERED = {
    "gpt-4o": ["gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20", "GPT-4o"],
    "gpt-4o-mini": ["gpt-4o-mini", "gpt-4o-mini-2024-07-18"],
    "gpt-4.1": ["gpt-4.1", "gpt-4.1-2025-04-14"],
    "gpt-4.1-mini": ["gpt-4.1-mini-2025-04-14"],
    "gpt-4.1-nano": ["gpt-4.1-nano"],
    "o3": ["o3", "o3-2025-04-16"],
    "o4-mini": ["o4-mini-2025-04-16"],
    "gpt-5": ["gpt-5", "gpt-5-2025-08-07"],
    "gpt-5-mini": ["gpt-5-mini-2025-08-07"],
    "gpt-5-nano": ["gpt-5-nano-2025-08-07"],
    "claude-sonnet-4-5": ["claude-sonnet-4-5", "claude-sonnet-4-5-20250929"],
    "claude-haiku-4-5": ["claude-haiku-4-5-20251001"],
    "claude-opus-4-1": ["claude-opus-4-1-20250805"],
    "gemini-2.5-pro": ["gemini-2.5-pro"],
    "gemini-2.5-flash": ["gemini-2.5-flash"],
    "gemini-2.5-flash-lite": ["gemini-2.5-flash-lite"],
}
NOT_COVERED = [
    "gpt-4o-2024-05-13",
    "gpt-4-turbo",
    "claude-3-opus-20240229",
    "mistral-large-latest",
    "my-model",
]
PROVIDER_OF = {"gpt": "openai", "o3": "openai", "o4": "openai", "claude": "anthropic", "gemini": "gcp.gemini"}


def test_covered_names_table_is_the_default_list() -> None:
    assert tuple(COVERED) == cc.DEFAULT_MODELS


def random_span(rng: random.Random) -> tuple[dict[str, Any], str]:
    covered = rng.random() < 0.85
    name = (
        rng.choice([n for names in COVERED.values() for n in names]) if covered else rng.choice(NOT_COVERED)
    )
    attributes: dict[str, Any] = {}
    roll = rng.random()
    if roll < 0.6:
        attributes["gen_ai.operation.name"] = rng.choice(
            ["chat", "chat", "text_completion", "execute_tool", "custom"]
        )
    elif roll < 0.75:
        attributes["openinference.span.kind"] = rng.choice(["LLM", "llm", "CHAIN"])
    if rng.random() < 0.6:
        provider = next((p for prefix, p in PROVIDER_OF.items() if name.lower().startswith(prefix)), "openai")
        attributes[rng.choice(["gen_ai.system", "gen_ai.provider.name"])] = provider
    where = rng.random()
    model_keys = usage.MODEL_KEYS
    if where < 0.5:
        attributes[model_keys[0]] = name
    elif where < 0.7:
        attributes[model_keys[1]] = name
        if rng.random() < 0.3:
            attributes[model_keys[0]] = "  "
    elif where < 0.85:
        attributes[model_keys[2]] = name
    else:
        attributes[model_keys[0]] = name
        attributes[model_keys[1]] = "unrelated-request-name"
    inp, out = rng.randint(0, 90_000), rng.randint(0, 20_000)
    cache_read, cache_write, reasoning = (
        rng.choice([0, rng.randint(0, 45_000)]),
        rng.choice([0, 0, rng.randint(0, 45_000)]),
        rng.choice([0, rng.randint(0, 10_000)]),
    )
    inclusive = rng.random() < 0.7
    if inclusive:
        inp += cache_read + cache_write
        out += reasoning

    def put(keys: tuple[str, ...], value: int, p_absent: float) -> None:
        if rng.random() < p_absent:
            return
        key = rng.choice(keys)
        attributes[key] = rng.choice([value, value, str(value), float(value)])
        if rng.random() < 0.1:  # a second, lower-priority key with another value: the first must win
            attributes[keys[-1]] = value + 7

    put(BY_NAME["input"].span_keys, inp, 0.1)
    put(BY_NAME["output"].span_keys, out, 0.1)
    put(BY_NAME["cache_read"].span_keys, cache_read, 0.3)
    put(BY_NAME["cache_write"].span_keys, cache_write, 0.5)
    put(BY_NAME["reasoning"].span_keys, reasoning, 0.5)
    if rng.random() < 0.4:
        total = (
            inp
            + out
            + rng.choice(
                [0, 0, cache_read + cache_write, reasoning, cache_read + cache_write + reasoning, 13]
            )
        )
        attributes[rng.choice(usage.TOTAL_KEYS)] = total
    if rng.random() < 0.05:
        attributes[rng.choice(BY_NAME["input"].span_keys)] = "not a number"
    return attributes, name if covered else ""


DEFAULT_OF = {name.lower(): model for model, names in COVERED.items() for name in names}


def published_cost(attributes: Mapping[str, Any], covered_name: str) -> float | None:
    """The cost of a random span at the published prices of its model; None for a span not priced.

    The counts are the engine's reading of the span (read_usage, whose meaning the
    statements mirror); the prices and their arithmetic are the providers' own.
    """
    if not is_model_call(attributes) or not covered_name:
        return None
    read = read_usage(attributes)
    if not read.has_usage or (read.model or "").lower() != covered_name.lower():
        return None
    rates = PUBLISHED[DEFAULT_OF[covered_name.lower()]]
    cache_read, cache_write = read.count("cache_read"), read.count("cache_write")
    inp = read.input_tokens if read.input_tokens is not None else cache_read + cache_write
    out = read.output_tokens if read.output_tokens is not None else read.count("reasoning")
    usd = out * rates["output"]  # no default model has a reasoning rate: reasoning is output
    for part, count in (("cache_read", cache_read), ("cache_write", cache_write)):
        if part in rates:  # a part with its own rate comes out of the input
            inp -= count
            usd += count * rates[part]
    return float((usd + inp * rates["input"]) / M)


def test_generated_statements_price_at_the_published_prices(program: Program) -> None:
    rng = random.Random(20240917)
    compared = 0
    for _ in range(2000):
        attributes, covered_name = random_span(rng)
        expected = published_cost(attributes, covered_name)
        got = cost_of(program, attributes)
        if expected is None:
            assert got is None, attributes
            continue
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-15), attributes
        compared += 1
    assert compared > 800


# -- other inputs: overrides, provider, unknown models ---------------------------------------


def test_overrides_and_aliases(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[models."my-model"]\ninput = 1.5\noutput = 4\ncache_read = 0.5\n\n'
        '[models."gpt-4o"]\ninput = 2\noutput = 8\n\n'
        '[aliases]\n"prod-4o" = "gpt-4o"\n',
        encoding="utf-8",
    )
    book = PriceBook(prices)
    plan = cc.plan_transform(["my-model", "prod-4o", "nope-xyz"], prices=book)
    assert [m.names for m in plan.models] == [("my-model",), ("prod-4o",)]
    assert [name for name, _ in plan.skipped] == ["nope-xyz"]
    program = Program(plan.statements)
    assert cost_of(
        program, span("My-Model", input=3000, output=1000, gen_ai__usage__cache_read__input_tokens=1000)
    ) == (pytest.approx((2000 * 1.5 + 1000 * 0.5 + 1000 * 4) / 1e6, rel=1e-12))
    for name in ("prod-4o", "gpt-4o", "gpt-4o-2024-08-06"):  # the override prices gpt-4o's dated names too
        assert cost_of(program, span(name, input=1000, output=1000)) == pytest.approx(0.01, rel=1e-12), name
    # an override prices text only: no audio rate taken from genai-prices' gpt-4o, so audio stays unpriced
    audio = program.run(span("gpt-4o", input=1000, output=10, gen_ai__usage__audio__input_tokens=500))
    assert cc.COST_ATTRIBUTE not in audio and audio[UNPRICED] == "unknown token class audio"


def test_same_model_twice_is_one_statement(book: PriceBook) -> None:
    plan = cc.plan_transform(["gpt-4o", "gpt-4o-2024-08-06, gpt-4o"], prices=book)
    assert len(plan.models) == 1
    assert plan.models[0].names == ("gpt-4o", "gpt-4o-2024-08-06")


def test_a_rule_name_priced_differently_is_excluded(book: PriceBook) -> None:
    (model,) = cc.plan_transform(["gpt-4"], prices=book).models
    program = Program(cc.transform_statements(["gpt-4"], prices=book))
    # GPT-4 (8k, gpt-4-0613): $30 per million input tokens
    assert cost_of(program, span("gpt-4-0613", input=1000, output=0)) == pytest.approx(0.03, rel=1e-12)
    # priced differently: gpt-4o $2.50, gpt-4-turbo $10, gpt-4-32k $60 per million input tokens
    for name in ("gpt-4o", "gpt-4-turbo", "gpt-4-32k"):
        assert cost_of(program, span(name, input=1000, output=0)) is None, name
    assert model.match.count(" where ") == 1 and model.cost.count(" where ") == 1


def test_tiered_models_are_marked(book: PriceBook) -> None:
    text = cc.render_transform_processor(["claude-sonnet-4-5", "gpt-4o"], prices=book)
    tier_notes = [line for line in text.splitlines() if "Tiered price" in line]
    assert len(tier_notes) == 1 and "200,000" in tier_notes[0]


# -- the command line ----------------------------------------------------------------------


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = cc.main(argv)
    return status, out.getvalue(), err.getvalue()


def test_cli_prints_a_processors_block() -> None:
    status, out, _ = run_cli(["--models", "gpt-4o,gpt-4o-mini", "--provider", "openai"])
    assert status == 0
    data = yaml.safe_load(out)
    processor = data["processors"][cc.PROCESSOR_ID]
    statements = processor["trace_statements"][0]["statements"]
    assert statements == cc.transform_statements(["gpt-4o", "gpt-4o-mini"], "openai")
    assert "--models gpt-4o,gpt-4o-mini --provider openai" in out


def test_cli_default_models_and_main_transform(default_statements: list[str]) -> None:
    status, out, _ = run_cli([])
    assert status == 0
    assert (
        yaml.safe_load(out)["processors"][cc.PROCESSOR_ID]["trace_statements"][0]["statements"]
        == default_statements
    )
    assert cc.main_transform(None, None) == out
    assert yaml.safe_load(cc.main_transform(["gpt-4o"], "openai"))["processors"][cc.PROCESSOR_ID]


def test_cli_reports_unpriced_models() -> None:
    status, out, err = run_cli(["--models", "gpt-4o", "--models", "no-such-model-xyz"])
    assert status == 0
    assert "no-such-model-xyz" in err
    assert "# Skipped no-such-model-xyz: no price" in out
    status, out, err = run_cli(["--models", "no-such-model-xyz"])
    assert status == 1 and out == ""


def test_cli_bad_prices_file(tmp_path: Path) -> None:
    bad = tmp_path / "prices.toml"
    bad.write_text('[models."x"]\ninput = 1\n', encoding="utf-8")
    status, _, err = run_cli(["--prices", str(bad)])
    assert status == 2 and "output" in err


def test_the_module_itself_needs_no_yaml_library() -> None:
    package = Path(cc.__file__).parent / "collector"
    for path in [Path(cc.__file__), *package.glob("*.py")]:
        assert "yaml" not in re.findall(
            r"^\s*(?:import|from)\s+(\w+)", path.read_text(encoding="utf-8"), re.MULTILINE
        ), path


def test_console_script_checks_the_shipped_config() -> None:
    """The documented command, as users run it: the shipped block is current with the price data."""
    from pathlib import Path

    root = Path(__file__).parent.parent
    command = [str(Path(sys.executable).parent / "otel-usecase"), "collector-config", "transform"]
    check = subprocess.run(
        [*command, "--check", str(root / "collector-config" / "cost-in-collector.yaml")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    printed = subprocess.run(
        [*command, "--models", "gpt-4o-mini"], check=False, capture_output=True, text=True, timeout=60
    )
    assert printed.returncode == 0 and "transform/usecase_cost:" in printed.stdout
    assert "0.00000015" in printed.stdout and "0.0000006" in printed.stdout  # $0.15 / $0.60 per million
