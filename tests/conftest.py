"""Fixtures and hooks for every test.

`tests/integration/conftest.py` holds the real-infrastructure fixtures
(broker, ClickHouse, Docker); this file holds what any test may use.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

_INTEGRATION_DIR = Path(__file__).parent / "integration"
_DOCKER_FIXTURES = frozenset({"docker_kafka", "docker_clickhouse"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which real Kafka and ClickHouse the integration tests use."""
    del config
    from tests.integration.support import CLICKHOUSE_ENV, KAFKA_ENV, clickhouse_kinds

    kafka = os.environ.get(KAFKA_ENV)
    server = os.environ.get(CLICKHOUSE_ENV)
    native = f"server from {CLICKHOUSE_ENV}" if server else "local server (chdb, listening)"
    return [
        f"kafka: {kafka} (from {KAFKA_ENV})" if kafka else _local_kafka(),
        f"clickhouse targets: {', '.join(clickhouse_kinds())}; native = {native}",
    ]


def _local_kafka() -> str:
    """The broker the session starts; on Apache Kafka, the version of the jars that run.

    Resolves the jars here (Maven, first run only) so that a machine without
    Java or Maven fails before any test, loudly.
    """
    from tests.integration.kafka_broker import apache_kafka_selected, ensure_jars, jar_version

    if not apache_kafka_selected():
        return "kafka: local tansu broker"
    try:
        lib = ensure_jars()
    except Exception as error:
        raise pytest.UsageError(f"make test-kafka: {error}") from None
    return f"kafka: Apache Kafka {jar_version(lib)} (single-node KRaft, jars in {lib})"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests under tests/integration `integration`, users of Docker fixtures `docker`."""
    del config
    for item in items:
        if _INTEGRATION_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)
        if _DOCKER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.docker)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Return `make(prefix) -> "ew_<prefix>_<test name>_<8 hex>"`, unique per call.

    Only `[A-Za-z0-9_]`, at most ~80 characters: valid as a Kafka topic or
    group name and as an unquoted ClickHouse identifier.
    """
    test_part = _UNSAFE.sub("_", request.node.name).strip("_")[:48]

    def make(prefix: str) -> str:
        prefix_part = _UNSAFE.sub("_", prefix).strip("_")[:16] or "x"
        return f"ew_{prefix_part}_{test_part}_{uuid.uuid4().hex[:8]}"

    return make
