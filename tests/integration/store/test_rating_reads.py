"""StoreRatingReads on a real ClickHouse: tenant-scoped, sorted, chunked reads.

The gateway is the real one, wrapped only to count the queries it runs: the
number of store round trips per batch is part of the contract.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from tests.integration.store.conftest import StoreUnderTest
from tests.integration.store.rows import PERIOD, row
from tests.processed_rows import insert_processed
from worker.domain.aggregates import AggregateSnapshot
from worker.domain.engine import fingerprint
from worker.domain.metering import WindowSize
from worker.domain.rating_reads import DedupKey, StateKey
from worker.store import rating_reads
from worker.store.gateway import Gateway, Params, Row
from worker.store.rating_reads import StoreRatingReads


class CountingGateway:
    """A real gateway that counts its queries (nothing else changes)."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self.queries = 0

    def query(self, sql: str, params: Params | None = None) -> list[Row]:
        self.queries += 1
        return self._gateway.query(sql, params)


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


@pytest.fixture
def stored(migrated: StoreUnderTest) -> StoreUnderTest:
    """Rows for li_0..li_6 of t1 (two rows each) and li_0 of t2."""
    rows = [
        row(f"e{i}", line_item=f"li_{i % 7}", qty=str(i + 1), unique_hash=sha(f"e{i}"))
        for i in range(14)
    ]
    rows.append(row("x1", tenant="t2", line_item="li_0", qty="100", unique_hash=sha("x1")))
    insert_processed(migrated.gateway, rows, dedup_token=None)
    return migrated


@pytest.fixture
def counting(stored: StoreUnderTest) -> CountingGateway:
    return CountingGateway(stored.gateway)


def chunked_reads(
    counting: CountingGateway, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> StoreRatingReads:
    monkeypatch.setattr(rating_reads, "STORE_READ_CHUNK", chunk)
    return StoreRatingReads(counting)  # type: ignore[arg-type]


def test_snapshots_come_in_sorted_single_tenant_chunks(
    counting: CountingGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = chunked_reads(counting, monkeypatch, 3)
    t1 = [StateKey("t1", "prod", f"li_{n}", PERIOD) for n in (6, 0, 3, 1, 5, 2, 4)]
    t2 = [StateKey("t2", "prod", "li_0", PERIOD), StateKey("t2", "prod", "li_9", PERIOD)]
    requests: dict[StateKey, WindowSize | None] = dict.fromkeys([*t2, *t1])

    chunks = [dict(chunk) for chunk in reads.snapshots(requests)]

    assert [list(chunk) for chunk in chunks] == [
        sorted(t1)[0:3],
        sorted(t1)[3:6],
        sorted(t1)[6:],
        sorted(t2),
    ]
    assert counting.queries == 4  # one read per chunk
    merged = {key: snapshot for chunk in chunks for key, snapshot in chunk.items()}
    # li_n of t1 holds rows e_n and e_(n+7): quantities n+1 and n+8.
    assert {key.line_item_id: merged[key].total for key in t1} == {
        f"li_{n}": Decimal(2 * n + 9) for n in range(7)
    }
    assert merged[t2[0]].total == Decimal(100) and merged[t2[0]].count == 1
    assert merged[t2[1]] == AggregateSnapshot()


def test_hash_owners_and_fingerprints_read_per_tenant_chunk(
    counting: CountingGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = chunked_reads(counting, monkeypatch, 2)
    t1_keys = [
        DedupKey(StateKey("t1", "prod", f"li_{i % 7}", PERIOD), sha(f"e{i}")) for i in (0, 8)
    ]
    absent = DedupKey(StateKey("t1", "prod", "li_0", PERIOD), sha("nobody"))
    t2_key = DedupKey(StateKey("t2", "prod", "li_0", PERIOD), sha("x1"))
    crossed = DedupKey(StateKey("t2", "prod", "li_0", PERIOD), sha("e0"))  # e0 is t1's

    owners = reads.hash_owners([t2_key, crossed, *t1_keys, absent])

    assert owners == {t1_keys[0]: "e0", t1_keys[1]: "e8", t2_key: "x1"}
    assert counting.queries == 3  # t1: 3 keys in chunks of 2; t2: 2 keys in one

    counting.queries = 0
    states = [StateKey("t1", "prod", "li_1", PERIOD), StateKey("t2", "prod", "li_0", PERIOD)]
    found = {key: sorted(values) for key, values in reads.fingerprints(states).items()}
    assert found == {
        states[0]: sorted(fingerprint(sha(f"e{i}")) for i in (1, 8)),
        states[1]: [fingerprint(sha("x1"))],
    }
    assert counting.queries == 2  # one per tenant
