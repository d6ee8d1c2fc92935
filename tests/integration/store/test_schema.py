"""Migrations: idempotent, versioned, and required by readers."""

from __future__ import annotations

import pytest

from tests.integration.store.conftest import StoreUnderTest
from worker.store.errors import SchemaMissingError
from worker.store.schema import LATEST_VERSION, current_version, migrate, require_schema


def test_migrate_twice_applies_once(store: StoreUnderTest) -> None:
    assert migrate(store.gateway) == list(range(1, LATEST_VERSION + 1))
    assert migrate(store.gateway) == []
    assert current_version(store.gateway) == LATEST_VERSION
    assert store.gateway.query("SELECT count() FROM schema_version") == [(LATEST_VERSION,)]
    tables = store.gateway.query(
        "SELECT name, engine FROM system.tables WHERE database = {db:String} ORDER BY name",
        {"db": store.gateway.database},
    )
    assert tables == [
        ("events", "ReplacingMergeTree"),
        ("events_processed", "ReplacingMergeTree"),
        ("reprocess_requests", "ReplacingMergeTree"),
        ("schema_version", "ReplacingMergeTree"),
    ]
    require_schema(store.gateway)


def test_readers_require_the_schema(store: StoreUnderTest) -> None:
    with pytest.raises(SchemaMissingError, match="events-worker migrate"):
        require_schema(store.gateway)


def test_cluster_is_a_seam_not_yet_built(store: StoreUnderTest) -> None:
    with pytest.raises(NotImplementedError):
        migrate(store.gateway, cluster="main")
