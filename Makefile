# events-worker: every target does its own set-up (`make setup` is idempotent).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The Rust batch core (core/): `pip install -e` builds it through maturin, so a
# change to its sources re-runs the install.
CORE_SOURCES := core/Cargo.toml core/Cargo.lock $(wildcard core/src/*.rs)
CARGO  ?= cargo

.PHONY: setup test-tools test test-kafka test-unit lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt $(CORE_SOURCES)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,local]'
	@touch $(STAMP)

# promtool and prometheus for the alert tests: Debian's `prometheus` package (needs root; CI
# runs as root). `apt-get update` only when apt knows no candidate yet.
test-tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  apt-cache policy prometheus | grep -q 'Candidate: [0-9]' || apt-get update -q; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; }

# Test processes of `make test` (pytest-xdist; 0 = one process): see docs/testing.md.
PYTEST_WORKERS ?= 2

test: setup test-tools
	$(CARGO) test --quiet --locked --manifest-path core/Cargo.toml
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal --durations=30

# The integration tests that use Kafka, on Apache Kafka 4 (tests/integration/kafka/pom.xml)
# instead of tansu; Maven fetches the jars into ~/.cache/events-worker on the first run.
test-kafka: setup test-tools
	@command -v java >/dev/null || { echo "make test-kafka: java not found: install Java 17+ (and Maven)" >&2; exit 1; }
	@command -v mvn >/dev/null || { echo "make test-kafka: mvn not found: install Maven (and Java 17+)" >&2; exit 1; }
	EW_TEST_BROKER=apache-kafka $(BIN)/python -m pytest -q --durations=20 tests/integration

test-unit: setup test-tools
	$(BIN)/python -m pytest -q tests/unit

lint: setup
	$(BIN)/ruff check worker tests
	$(BIN)/ruff format --check worker tests
	$(BIN)/mypy
	$(CARGO) fmt --manifest-path core/Cargo.toml --check
	$(CARGO) clippy --quiet --locked --manifest-path core/Cargo.toml --all-targets -- -D warnings

demo: setup
	$(BIN)/events-worker demo

bench: setup
	$(BIN)/events-worker bench

clean:
	rm -rf $(VENV) core/target worker/_core*.so data .pytest_cache .mypy_cache .ruff_cache .hypothesis
