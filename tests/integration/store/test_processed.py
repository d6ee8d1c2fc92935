"""events_processed: exact round trip, idempotent inserts, deduplicated batched reads."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.integration.store.conftest import StoreUnderTest
from tests.integration.store.rows import PERIOD, T0, event, row
from tests.processed_rows import insert_processed
from tests.reference import line_totals, window_start
from worker.domain.aggregates import AggregateSnapshot, new_aggregate
from worker.domain.engine import fingerprint
from worker.domain.invoice import LineItemTotal
from worker.domain.metering import AggregationType, WindowSize
from worker.domain.rating_reads import DedupKey, StateKey
from worker.store.params import PeriodParams
from worker.store.processed import (
    PeriodFeatureTotal,
    find_hash_owners,
    get_period_cost,
    get_period_feature_totals,
    line_item_totals,
    load_fingerprints,
    load_snapshots,
)
from worker.store.raw import insert_raw

KEY = StateKey("t1", "prod", "li_1", PERIOD)
SUB_1 = PeriodParams("t1", "prod", "cus_1", "sub_1", PERIOD)


def test_round_trip_is_exact(migrated: StoreUnderTest) -> None:
    big = Decimal("12345678901234567890123.123456789012345")
    ts = datetime(2026, 3, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    stored = row("e1", qty=big, timestamp=ts, cost=Decimal("-0.000000000000001"), version=2**63)
    insert_processed(migrated.gateway, [stored], dedup_token=None)
    rows = migrated.gateway.query(
        "SELECT id, timestamp, qty_total, cost, version, sign, processed_at, properties, "
        "period_id, final_lag_ms FROM events_processed"
    )
    assert rows == [
        (
            "e1",
            ts,
            big,
            Decimal("-0.000000000000001"),
            2**63,
            1,
            T0 + timedelta(hours=1),
            '{"calls":1}',
            PERIOD,
            60_000,
        )
    ]


def test_raw_round_trip_is_exact(migrated: StoreUnderTest) -> None:
    ts = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    raw = event("r1", timestamp=ts, properties={"a": "x'y", "n": 1.5, "nested": {"k": [1]}})
    insert_raw(migrated.gateway, [raw], dedup_token="events:0:1-1", ingested_at=ts)
    assert migrated.gateway.query(
        "SELECT id, timestamp, ingested_at, properties, external_customer_id FROM events FINAL"
    ) == [("r1", ts, ts, '{"a":"x\'y","n":1.5,"nested":{"k":[1]}}', "acme")]


def test_same_token_twice_leaves_one_copy(migrated: StoreUnderTest) -> None:
    batch = [row(f"e{i}") for i in range(50)]
    insert_processed(migrated.gateway, batch, dedup_token="events:3:100-149")
    insert_processed(migrated.gateway, batch, dedup_token="events:3:100-149")
    assert migrated.gateway.query("SELECT count() FROM events_processed") == [(50,)]


def test_an_event_stored_twice_is_counted_once_by_every_read(migrated: StoreUnderTest) -> None:
    gateway = migrated.gateway
    first = [row("e1", qty="2"), row("e2", qty="3")]
    again = [row("e1", qty="2", version=2), row("e2", qty="3", version=2)]
    insert_processed(gateway, first, dedup_token="a")
    insert_processed(gateway, again, dedup_token="b")
    assert gateway.query("SELECT count() FROM events_processed") == [(4,)]  # before merges

    [total] = line_item_totals(gateway, "t1", "prod")
    assert (total.qty_total, total.cost, total.event_count) == (Decimal(5), Decimal("0.05"), 2)
    assert get_period_cost(gateway, SUB_1) == Decimal("0.05")
    assert get_period_feature_totals(gateway, SUB_1) == [
        PeriodFeatureTotal("feat_1", Decimal(5), Decimal(0), Decimal("0.05"))
    ]
    snapshot = load_snapshots(gateway, "t1", "prod", {KEY: None})[KEY]
    assert (snapshot.total, snapshot.count, snapshot.maximum) == (Decimal(5), 2, Decimal(3))
    owners = find_hash_owners(
        gateway, "t1", "prod", [DedupKey(KEY, "hash_e1"), DedupKey(KEY, "hash_e2")]
    )
    assert owners == {DedupKey(KEY, "hash_e1"): "e1", DedupKey(KEY, "hash_e2"): "e2"}


def test_the_highest_version_wins(migrated: StoreUnderTest) -> None:
    insert_processed(migrated.gateway, [row("e1", qty="7", version=5)], dedup_token=None)
    insert_processed(migrated.gateway, [row("e1", qty="1", version=4)], dedup_token=None)
    [total] = line_item_totals(migrated.gateway, "t1", "prod")
    assert total.qty_total == Decimal(7)


def test_find_hash_owners_batches_ten_thousand_keys_per_tenant(migrated: StoreUnderTest) -> None:
    gateway = migrated.gateway
    stored = [row(f"e{i}", line_item=f"li_{i % 7}") for i in range(0, 10_000, 2)]
    other_tenant = [row(f"e{i}", tenant="t2", line_item=f"li_{i % 7}") for i in range(10_000)]
    insert_processed(gateway, stored, dedup_token=None)
    insert_processed(gateway, other_tenant, dedup_token=None)
    keys: list[DedupKey] = [
        DedupKey(StateKey("t1", "prod", f"li_{i % 7}", PERIOD), f"hash_e{i}") for i in range(10_000)
    ]
    owners = find_hash_owners(gateway, "t1", "prod", keys)
    assert owners == {key: f"e{i}" for i, key in enumerate(keys) if i % 2 == 0}
    # The same hash under another line item or period is not a match.
    crossed: list[DedupKey] = [
        DedupKey(StateKey("t1", "prod", "li_1", PERIOD), "hash_e0"),  # e0 is stored under li_0
        DedupKey(StateKey("t1", "prod", "li_0", PERIOD + 1), "hash_e0"),
    ]
    assert find_hash_owners(gateway, "t1", "prod", crossed) == {}


def test_find_hash_owners_refuses_keys_of_another_tenant(migrated: StoreUnderTest) -> None:
    with pytest.raises(ValueError, match="outside tenant"):
        find_hash_owners(
            migrated.gateway, "t1", "prod", [DedupKey(StateKey("t2", "prod", "li", 1), "h")]
        )


def test_hash_owner_prefers_the_row_that_counted(migrated: StoreUnderTest) -> None:
    # COUNT_UNIQUE: e0 repeated the value of e9 (qty 0) but sorts first by id and time.
    repeat = row("e0", qty="0", unique_hash="value_x", timestamp=T0)
    counted = row("e9", qty="1", unique_hash="value_x", timestamp=T0 + timedelta(days=1))
    insert_processed(migrated.gateway, [repeat, counted], dedup_token=None)
    owners = find_hash_owners(migrated.gateway, "t1", "prod", [DedupKey(KEY, "value_x")])
    assert owners == {(KEY, "value_x"): "e9"}


VALUES = ["5", "1.5", "9", "0", "2.25", "9", "3"]
TIMES = [
    T0 + timedelta(minutes=7),
    T0 + timedelta(minutes=16),
    T0 + timedelta(hours=5, minutes=1),
    T0 + timedelta(days=6, hours=23),
    T0 + timedelta(days=9),
    T0 + timedelta(days=9),  # a tie on timestamp: the greater id is the latest
    T0 + timedelta(days=40),  # next calendar month (the period is only a key here)
]


@pytest.mark.parametrize("bucket", [None, *WindowSize])
def test_load_snapshots_matches_a_hand_computation(
    migrated: StoreUnderTest, bucket: WindowSize | None
) -> None:
    rows = [
        row(f"e{i}", qty=value, timestamp=ts)
        for i, (value, ts) in enumerate(zip(VALUES, TIMES, strict=True))
    ]
    insert_processed(migrated.gateway, rows, dedup_token=None)
    empty_key = StateKey("t1", "prod", "li_empty", PERIOD)
    snapshots = load_snapshots(migrated.gateway, "t1", "prod", {KEY: bucket, empty_key: None})

    values = [Decimal(v) for v in VALUES]
    expected_buckets: dict[datetime, Decimal] = {}
    if bucket is not None:
        for value, ts in zip(values, TIMES, strict=True):
            start = window_start(ts, bucket)  # the independent reference
            expected_buckets[start] = max(value, expected_buckets.get(start, value))
    assert snapshots[KEY] == AggregateSnapshot(
        total=sum(values, Decimal(0)),
        count=len(values),
        maximum=Decimal(9),
        latest=(TIMES[6], "e6", Decimal(3)),
        bucket_maxima=expected_buckets,
    )
    assert snapshots[empty_key] == AggregateSnapshot()


@pytest.mark.parametrize("kind", list(AggregationType))
def test_loaded_state_equals_the_state_built_in_memory(
    migrated: StoreUnderTest, kind: AggregationType
) -> None:
    bucket = WindowSize.HOUR if kind is AggregationType.MAX else None
    rows = [
        row(f"e{i}", qty=value, timestamp=ts)
        for i, (value, ts) in enumerate(zip(VALUES, TIMES, strict=True))
    ]
    insert_processed(migrated.gateway, rows, dedup_token=None)
    in_memory = new_aggregate(kind, bucket)
    for stored in rows:
        in_memory.add(stored.qty_total, stored.event.timestamp, stored.event.id)
    snapshot = load_snapshots(migrated.gateway, "t1", "prod", {KEY: bucket})[KEY]
    assert new_aggregate(kind, bucket, snapshot).quantity() == in_memory.quantity()


def as_json(totals: list[LineItemTotal]) -> list[dict[str, object]]:
    return [total.to_json() for total in totals]


def test_line_item_totals_equal_the_sums_of_their_rows(migrated: StoreUnderTest) -> None:
    rows = [
        row("e1", qty="2", qty_free_applied=Decimal(2), qty_billable=Decimal(0), cost=Decimal(0)),
        row("e2", qty="5", qty_free_applied=Decimal(1), qty_billable=Decimal(4)),
        row("e3", line_item="li_2", feature_id="feat_2", price_id="price_2"),
        row("e4", period=PERIOD + 86_400_000),
        row("e5", subscription_id="sub_2", customer_id="cus_2", line_item="li_9"),
        row("e6", tenant="t2"),
    ]
    insert_processed(migrated.gateway, rows, dedup_token=None)
    mine = [r for r in rows if r.event.tenant_id == "t1"]
    assert as_json(line_item_totals(migrated.gateway, "t1", "prod")) == line_totals(mine)
    by_customer = line_item_totals(migrated.gateway, "t1", "prod", customer_id="cus_2")
    assert as_json(by_customer) == line_totals([r for r in mine if r.customer_id == "cus_2"])
    by_subscription = line_item_totals(migrated.gateway, "t1", "prod", subscription_id="sub_1")
    assert as_json(by_subscription) == line_totals(
        [r for r in mine if r.subscription_id == "sub_1"]
    )
    assert line_item_totals(migrated.gateway, "t1", "staging") == []
    features = get_period_feature_totals(migrated.gateway, SUB_1)
    assert [f.feature_id for f in features] == ["feat_1", "feat_2"]
    assert features[0].quantity == Decimal(7) and features[0].free_units == Decimal(3)


INJECTIONS = [
    "x' OR '1'='1",
    "t1' --",
    "t1\\' OR 1=1 --",
    "'); DROP TABLE events_processed; --",
    "t1\tprod",
    "{tenant:String}",
]


@pytest.mark.parametrize("attack", INJECTIONS)
def test_injection_attempts_find_nothing_and_harm_nothing(
    migrated: StoreUnderTest, attack: str
) -> None:
    gateway = migrated.gateway
    insert_processed(gateway, [row("e1"), row(attack, line_item=attack)], dedup_token=None)
    key = StateKey(attack, "prod", attack, PERIOD)
    assert line_item_totals(gateway, attack, "prod") == []
    assert line_item_totals(gateway, "t1", "prod", customer_id=attack) == []
    assert find_hash_owners(gateway, attack, "prod", [DedupKey(key, attack)]) == {}
    assert load_snapshots(gateway, attack, "prod", {key: WindowSize.DAY}) == {
        key: AggregateSnapshot()
    }
    attacked_period = PeriodParams("t1", "prod", attack, "sub_1", PERIOD)
    assert get_period_cost(gateway, attacked_period) == Decimal(0)
    # The value itself is stored and found exactly; the table is intact.
    attacked = StateKey("t1", "prod", attack, PERIOD)
    assert find_hash_owners(gateway, "t1", "prod", [DedupKey(attacked, f"hash_{attack}")]) == {
        (attacked, f"hash_{attack}"): attack
    }
    assert gateway.query("SELECT count() FROM events_processed") == [(2,)]


def test_properties_beyond_64_bit_integers_are_stored(migrated: StoreUnderTest) -> None:
    raw = event("big", properties={"n": 2**70, "s": "ü"})
    insert_raw(migrated.gateway, [raw], dedup_token=None)
    assert migrated.gateway.query("SELECT properties FROM events") == [
        ('{"n":1180591620717411303424,"s":"ü"}',)
    ]


def test_load_fingerprints_matches_the_domain_fingerprint_per_key(
    migrated: StoreUnderTest,
) -> None:
    gateway = migrated.gateway
    hashes = {f"e{i}": hashlib.sha256(f"e{i}".encode()).hexdigest() for i in range(40)}
    stored = [
        row(event_id, line_item=f"li_{n % 2}", unique_hash=unique_hash)
        for n, (event_id, unique_hash) in enumerate(hashes.items())
    ]
    other_tenant = [row("x", tenant="t2", unique_hash=hashes["e0"], line_item="li_0")]
    insert_processed(gateway, stored, dedup_token=None)
    insert_processed(gateway, stored[:5], dedup_token=None)  # an unmerged second copy
    insert_processed(gateway, other_tenant, dedup_token=None)
    li_0, li_1, empty = (
        StateKey("t1", "prod", "li_0", PERIOD),
        StateKey("t1", "prod", "li_1", PERIOD),
        StateKey("t1", "prod", "li_0", PERIOD + 1),
    )
    found = load_fingerprints(gateway, "t1", "prod", [li_0, li_1, empty])
    assert {key: sorted(values) for key, values in found.items()} == {
        li_0: sorted(fingerprint(h) for n, h in enumerate(hashes.values()) if n % 2 == 0),
        li_1: sorted(fingerprint(h) for n, h in enumerate(hashes.values()) if n % 2 == 1),
        empty: [],
    }
    with pytest.raises(ValueError, match="outside tenant"):
        load_fingerprints(gateway, "t1", "prod", [StateKey("t2", "prod", "li_0", PERIOD)])
