# Everything a new user or CI needs, from a machine with only Python 3 installed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $@

## demo: run a demo app under opentelemetry-instrument against the bundled fake OpenAI server
demo: $(VENV)/.installed-demo
	rm -f .demo/costs.db .demo/costs.db-wal .demo/costs.db-shm
	OTEL_SERVICE_NAME=otel-usecase-demo OTEL_USECASE_STORE=sqlite:///.demo/costs.db \
	OTEL_TRACES_EXPORTER=usecase OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \
	$(BIN)/opentelemetry-instrument $(BIN)/python -m otel_usecase.demo

## test: lint and type-check the package, then the whole test suite
test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## lint: ruff (rules and formatting) and mypy --strict over src/
lint: $(VENV)/.installed-test
	$(BIN)/ruff check src
	$(BIN)/ruff format --check src
	$(BIN)/mypy src

## bench: the benchmarks of benchmarks/README.md, side by side in one run (a few minutes)
bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build dist
