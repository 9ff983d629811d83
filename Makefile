# The two quickstart commands: `make serve` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test lint typecheck unit e2e bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

serve: $(STAMP)  ## Serve the bundled example model on http://127.0.0.1:8000
	$(BIN)/infership serve $(ARGS)

test: lint typecheck $(STAMP)  ## Lint, type-check and run the whole test suite
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts bench
	$(BIN)/ruff format --check src tests scripts bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)  ## Fast tests only (no server processes)
	$(BIN)/pytest -m "not e2e"

e2e: $(STAMP)
	$(BIN)/pytest -m e2e

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
