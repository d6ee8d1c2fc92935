# events-worker: every target does its own set-up (`make setup` is idempotent).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test-tools test test-unit lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# promtool and prometheus for the alert tests: Debian's `prometheus` package (needs root; CI
# runs as root). `apt-get update` only when apt knows no candidate yet.
test-tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  apt-cache policy prometheus | grep -q 'Candidate: [0-9]' || apt-get update -q; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; }

test: setup test-tools
	$(BIN)/python -m pytest -q

test-unit: setup test-tools
	$(BIN)/python -m pytest -q tests/unit

lint: setup
	$(BIN)/ruff check worker tests
	$(BIN)/ruff format --check worker tests
	$(BIN)/mypy

demo: setup
	$(BIN)/events-worker demo

bench: setup
	$(BIN)/events-worker bench

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache .hypothesis
