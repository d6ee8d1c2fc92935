# events-worker: every target does its own set-up (`make setup` is idempotent).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test test-kafka test-unit lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

# The integration tests that use Kafka, on Apache Kafka 4 (tests/integration/kafka/pom.xml)
# instead of tansu; Maven fetches the jars into ~/.cache/events-worker on the first run.
test-kafka: setup
	@command -v java >/dev/null || { echo "make test-kafka: java not found: install Java 17+ (and Maven)" >&2; exit 1; }
	@command -v mvn >/dev/null || { echo "make test-kafka: mvn not found: install Maven (and Java 17+)" >&2; exit 1; }
	EW_TEST_BROKER=apache-kafka $(BIN)/python -m pytest -q tests/integration

test-unit: setup
	$(BIN)/python -m pytest -q tests/unit

lint: setup
	$(BIN)/ruff check worker tests bench
	$(BIN)/ruff format --check worker tests bench
	$(BIN)/mypy

demo: setup
	$(BIN)/events-worker demo

bench: setup
	$(BIN)/events-worker bench

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache .hypothesis
