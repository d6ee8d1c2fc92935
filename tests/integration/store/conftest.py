"""Store fixtures: a Gateway on each available ClickHouse (chdb always, a server when set).

`store` opens the gateway on the fresh database of `clickhouse_target` through
the public URL form (so `open_gateway` is what tests exercise); `migrated`
also applies the schema, once per layout: on one server, and on a cluster
(Distributed tables over local ones) - chdb's one-shard test cluster, or the
server's cluster named by `EW_TEST_CLICKHOUSE_CLUSTER`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.integration.support import (
    CHDB_TEST_CLUSTER,
    CLICKHOUSE_CLUSTER_ENV,
    ClickHouseTarget,
    NativeTarget,
)
from worker.store.ddl import LOCAL_SUFFIX, ClusterLayout
from worker.store.gateway import Gateway, open_gateway
from worker.store.schema import migrate


@dataclass(frozen=True)
class StoreUnderTest:
    """A store URL (with credentials, for the CLI) and an open gateway on it."""

    url: str
    gateway: Gateway
    kind: str
    cluster: ClusterLayout | None = None
    """The layout the schema was migrated with (`migrated`)."""

    def rows_table(self, name: str) -> str:
        """The table that holds `name`'s rows (for merges, truncation, parts)."""
        return name if self.cluster is None else name + LOCAL_SUFFIX


def store_url(target: ClickHouseTarget, chdb_path: Path) -> str:
    if isinstance(target, NativeTarget):
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


@pytest.fixture(params=["single", "cluster"])
def migrated(request: pytest.FixtureRequest, store: StoreUnderTest) -> StoreUnderTest:
    """`store` with the schema applied, in each layout (test ids `-single`, `-cluster`)."""
    cluster = None
    if request.param == "cluster":
        if store.kind == "chdb":
            cluster = ClusterLayout(CHDB_TEST_CLUSTER, replicated=False)
        elif os.environ.get(CLICKHOUSE_CLUSTER_ENV):
            cluster = ClusterLayout(os.environ[CLICKHOUSE_CLUSTER_ENV])
        else:
            pytest.skip(f"set {CLICKHOUSE_CLUSTER_ENV} to test the server's cluster layout")
    migrate(store.gateway, cluster=cluster)
    return replace(store, cluster=cluster)
