"""Store fixtures: a Gateway on each available ClickHouse (chdb always, a server when set).

`store` opens the gateway on the fresh database of `clickhouse_target` through
the public URL form (so `open_gateway` is what tests exercise); `migrated`
also applies the schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.integration.support import ClickHouseTarget, NativeTarget
from worker.store.gateway import Gateway, open_gateway
from worker.store.schema import migrate


@dataclass(frozen=True)
class StoreUnderTest:
    """A store URL (with credentials, for the CLI) and an open gateway on it."""

    url: str
    gateway: Gateway
    kind: str


def store_url(target: ClickHouseTarget, chdb_path: Path) -> str:
    if isinstance(target, NativeTarget):
        import os

        from tests.integration.support import CLICKHOUSE_ENV

        parts = urlsplit(os.environ[CLICKHOUSE_ENV])
        return urlunsplit(parts._replace(path="/" + target.database))
    return f"chdb://{chdb_path}?database={target.database}"


@pytest.fixture
def store(clickhouse_target: ClickHouseTarget, chdb_path: Path) -> Iterator[StoreUnderTest]:
    """An open gateway on the test's fresh (empty) database."""
    url = store_url(clickhouse_target, chdb_path)
    gateway = open_gateway(url, timeout_s=60)
    try:
        yield StoreUnderTest(url, gateway, clickhouse_target.kind)
    finally:
        gateway.close()


@pytest.fixture
def migrated(store: StoreUnderTest) -> StoreUnderTest:
    """`store` with the schema applied."""
    migrate(store.gateway)
    return store
