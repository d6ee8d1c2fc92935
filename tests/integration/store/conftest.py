"""Store fixtures: a Gateway on each ClickHouse (embedded chdb and the session's server).

`store` opens the gateway on the fresh database of `clickhouse_target` through
the public URL form (so `open_gateway` is what tests exercise); `migrated`
also applies the schema, once per layout: on one server, and on a cluster
(Distributed tables over local ones) - chdb's one-shard test cluster, or the
server's cluster named by `EW_TEST_CLICKHOUSE_CLUSTER`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from tests.integration.support import (
    CHDB_TEST_CLUSTER,
    CLICKHOUSE_CLUSTER_ENV,
    ClickHouseTarget,
    ServedClickHouse,
)
from worker.store.connect import open_gateway
from worker.store.ddl import LOCAL_SUFFIX, ClusterLayout
from worker.store.gateway import Gateway
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


@pytest.fixture
def store(clickhouse_target: ClickHouseTarget, store_under_test: str) -> Iterator[StoreUnderTest]:
    """An open gateway on the test's fresh (empty) database."""
    url = store_under_test
    gateway = open_gateway(url, timeout_s=60)
    try:
        yield StoreUnderTest(url, gateway, clickhouse_target.kind)
    finally:
        gateway.close()


@pytest.fixture(params=["single", "cluster"])
def migrated(request: pytest.FixtureRequest, store: StoreUnderTest) -> StoreUnderTest:
    """`store` with the schema applied, in each layout (test ids `-single`, `-cluster`).

    The cluster layout: chdb's one-shard test cluster; on the local server a
    non-replicated Distributed table over its one-shard cluster (itself); on
    an external server the cluster named by `EW_TEST_CLICKHOUSE_CLUSTER`.
    """
    cluster = None
    if request.param == "cluster":
        if store.kind == "chdb":
            cluster = ClusterLayout(CHDB_TEST_CLUSTER, replicated=False)
        else:
            served: ServedClickHouse = request.getfixturevalue("clickhouse_server")
            if served.cluster is None:
                pytest.skip(f"set {CLICKHOUSE_CLUSTER_ENV} to test the server's cluster layout")
            cluster = ClusterLayout(served.cluster, replicated=served.replicated)
    migrate(store.gateway, cluster=cluster)
    return replace(store, cluster=cluster)
