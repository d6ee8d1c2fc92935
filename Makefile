# events-worker: every target does its own set-up (`make setup` is idempotent).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The Rust batch core (core/): `pip install -e` builds it through maturin, so a
# change to its sources re-runs the install.
CORE_SOURCES := core/Cargo.toml core/Cargo.lock $(wildcard core/src/*.rs)
CARGO  ?= cargo

.PHONY: setup test test-unit lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt $(CORE_SOURCES)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

test: setup
	$(CARGO) test --quiet --locked --manifest-path core/Cargo.toml
	$(BIN)/python -m pytest -q

test-unit: setup
	$(BIN)/python -m pytest -q tests/unit

lint: setup
	$(BIN)/ruff check worker tests bench
	$(BIN)/ruff format --check worker tests bench
	$(BIN)/mypy
	$(CARGO) fmt --manifest-path core/Cargo.toml --check
	$(CARGO) clippy --quiet --locked --manifest-path core/Cargo.toml --all-targets -- -D warnings

demo: setup
	$(BIN)/events-worker demo

bench: setup
	$(BIN)/events-worker bench

clean:
	rm -rf $(VENV) core/target worker/_core*.so data .pytest_cache .mypy_cache .ruff_cache .hypothesis
