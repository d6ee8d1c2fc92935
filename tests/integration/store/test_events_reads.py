"""GetEvents and FindUnprocessedEvents on real ClickHouse."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.integration.store.conftest import StoreUnderTest
from tests.integration.store.rows import T0, event, row
from tests.processed_rows import insert_processed
from worker.domain.events import Event, ProcessedEvent
from worker.store import events_reads
from worker.store.events_reads import find_unprocessed_events, get_events
from worker.store.params import (
    MAX_PAGE_SIZE,
    EventIterator,
    FindUnprocessedEventsParams,
    GetEventsParams,
    SortOrder,
)
from worker.store.raw import insert_raw

END = T0 + timedelta(days=1)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def params(**fields: Any) -> GetEventsParams:
    return GetEventsParams("t1", "prod", T0, END, **fields)


def ids(events: tuple[Event, ...] | list[Event]) -> list[str]:
    return [item.id for item in events]


# Three events tie on the timestamp at minute 5; ids order them.
TIMELINE = [
    event("a", timestamp=at(1)),
    event("c", timestamp=at(5)),
    event("b", timestamp=at(5)),
    event("d", timestamp=at(5)),
    event("e", timestamp=at(7)),
    event("f", timestamp=at(9)),
    event("g", timestamp=at(12)),
]
NEWEST_FIRST = ["g", "f", "e", "d", "c", "b", "a"]


def test_keyset_pages_forwards_and_backwards_with_ties(migrated: StoreUnderTest) -> None:
    insert_raw(migrated.gateway, TIMELINE, dedup_token=None)
    pages: list[list[str]] = []
    page = get_events(migrated.gateway, params(page_size=2))
    while page.events:
        pages.append(ids(page.events))
        cursor = EventIterator.of(page.events[-1])
        page = get_events(migrated.gateway, params(page_size=2, iter_last=cursor))
    assert pages == [["g", "f"], ["e", "d"], ["c", "b"], ["a"]]

    # Back from the oldest page towards newer ones: the 2 events right after the cursor.
    oldest = event("a", timestamp=at(1))
    back = get_events(migrated.gateway, params(page_size=2, iter_first=EventIterator.of(oldest)))
    assert ids(back.events) == ["c", "b"]
    back = get_events(
        migrated.gateway, params(page_size=2, iter_first=EventIterator.of(back.events[0]))
    )
    assert ids(back.events) == ["e", "d"]

    # Ascending order pages the other way round, ties still broken by id.
    ascending: list[str] = []
    page = get_events(migrated.gateway, params(page_size=3, order=SortOrder.ASC))
    while page.events:
        ascending += ids(page.events)
        cursor = EventIterator.of(page.events[-1])
        page = get_events(
            migrated.gateway, params(page_size=3, order=SortOrder.ASC, iter_first=cursor)
        )
    assert ascending == NEWEST_FIRST[::-1]
    older = params(page_size=2, order=SortOrder.ASC, iter_last=EventIterator(at(9), "f"))
    assert ids(get_events(migrated.gateway, older).events) == ["d", "e"]

    between = params(
        iter_first=EventIterator(at(1), "a"), iter_last=EventIterator(at(5), "d"), page_size=10
    )
    assert ids(get_events(migrated.gateway, between).events) == ["c", "b"]
    assert ids(get_events(migrated.gateway, params(page_size=2, offset=3)).events) == ["d", "c"]


def test_filters_and_total(migrated: StoreUnderTest) -> None:
    insert_raw(
        migrated.gateway,
        [
            event("r1", properties={"region": "us", "n": 1000000.0}, source="sdk"),
            event("r2", properties={"region": "eu"}, source="api"),
            event("r3", properties={"region": "us"}, source="api", external_customer_id="x"),
            event("r4", properties={"region": "us"}, event_name="other"),
            event("r5", timestamp=END),  # outside [start, end)
        ],
        dedup_token=None,
    )
    total = lambda **f: get_events(migrated.gateway, params(count_total=True, **f)).total  # noqa: E731
    page = get_events(migrated.gateway, params(count_total=True, page_size=1))
    assert page.total == 4 and len(page.events) == 1
    assert get_events(migrated.gateway, params()).total is None
    assert total(property_filters={"region": ["us"]}) == 3
    assert total(property_filters={"n": ["1000000"]}) == 1
    assert total(property_filters={"region": ["us"]}, source="api") == 1
    assert total(event_name="api_call") == 3
    assert total(external_customer_id="x") == 1
    assert ids(get_events(migrated.gateway, params(event_id="r2")).events) == ["r2"]
    [found] = get_events(migrated.gateway, params(event_id="r1")).events
    assert found.properties == {"region": "us", "n": 1000000.0}
    assert found.source == "sdk" and found.external_customer_id == "acme"
    assert found.timestamp == at(1) and found.timestamp.tzinfo is not None


def test_an_event_stored_twice_is_returned_once(migrated: StoreUnderTest) -> None:
    insert_raw(migrated.gateway, TIMELINE, dedup_token="one")
    insert_raw(migrated.gateway, TIMELINE, dedup_token="two")
    page = get_events(migrated.gateway, params(page_size=100, count_total=True))
    assert ids(page.events) == NEWEST_FIRST
    assert page.total == 7
    unprocessed = find_unprocessed_events(
        migrated.gateway, FindUnprocessedEventsParams("t1", "prod", T0, END)
    )
    assert ids(unprocessed) == NEWEST_FIRST[::-1]


def test_tenants_never_see_each_other(migrated: StoreUnderTest) -> None:
    insert_raw(migrated.gateway, TIMELINE, dedup_token=None)
    insert_raw(migrated.gateway, [event("z", tenant="t2"), event("y", env="dev")], dedup_token=None)
    assert ids(get_events(migrated.gateway, params(page_size=100)).events) == NEWEST_FIRST
    other = GetEventsParams("t2", "prod", T0, END, count_total=True)
    page = get_events(migrated.gateway, other)
    assert ids(page.events) == ["z"] and page.total == 1
    unprocessed = find_unprocessed_events(
        migrated.gateway, FindUnprocessedEventsParams("t1", "dev", T0, END)
    )
    assert ids(unprocessed) == ["y"]


INJECTIONS = ["' OR 1=1 --", "a') OR ('1'='1", "\\' OR 1=1 /*", "'; DROP TABLE events; --"]


def test_injection_attempts_return_nothing_and_harm_nothing(migrated: StoreUnderTest) -> None:
    insert_raw(migrated.gateway, [*TIMELINE, event("r", properties={"k": "v"})], dedup_token=None)
    for text in INJECTIONS:
        for fields in (
            {"event_id": text},
            {"source": text},
            {"external_customer_id": text},
            {"event_name": text},
            {"property_filters": {text: ["v"]}},
            {"property_filters": {"k": [text]}},
            {"iter_last": EventIterator(END, text), "event_id": "zz"},
        ):
            page = get_events(migrated.gateway, params(count_total=True, **fields))
            assert page.events == () and page.total == 0, fields
        assert (
            find_unprocessed_events(
                migrated.gateway, FindUnprocessedEventsParams(text, "prod", T0, END)
            )
            == []
        )
        assert (
            find_unprocessed_events(
                migrated.gateway,
                FindUnprocessedEventsParams("t1", "prod", T0, END, external_customer_id=text),
            )
            == []
        )
    assert get_events(migrated.gateway, params(count_total=True)).total == 8


def test_page_size_and_scope_are_bounded() -> None:
    with pytest.raises(ValueError, match="page_size"):
        params(page_size=MAX_PAGE_SIZE + 1)
    with pytest.raises(ValueError, match="page_size"):
        params(page_size=0)
    with pytest.raises(ValueError, match="offset"):
        params(offset=-1)
    with pytest.raises(ValueError, match="environment_id"):
        GetEventsParams("t1", "", T0, END)
    with pytest.raises(ValueError, match="batch_size"):
        FindUnprocessedEventsParams("t1", "prod", T0, END, batch_size=0)
    with pytest.raises(ValueError):
        params(order="sideways")


def processed(
    event_id: str, timestamp: datetime, line_item: str = "li_1", **event_fields: Any
) -> ProcessedEvent:
    priced = row(event_id, timestamp=timestamp, line_item=line_item)
    raw = dataclasses.replace(priced.event, **event_fields)
    return dataclasses.replace(priced, event=raw)


@pytest.mark.parametrize("slice_scan", [1, 2, 3, 50_000])
def test_unprocessed_events_are_found_by_keyset_and_scoped_anti_join(
    migrated: StoreUnderTest, slice_scan: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small slices make every page span several bounded anti-joins.
    monkeypatch.setattr(events_reads, "SLICE_SCAN", slice_scan)
    gateway = migrated.gateway
    raw = [
        event("u1", timestamp=at(1)),
        event("u2", timestamp=at(2)),
        event("u3", timestamp=at(3)),
        event("u4", timestamp=at(3)),  # tie with u3
        event("u5", timestamp=at(4)),
        event("u6", timestamp=at(5)),
        event("u7", timestamp=at(6), external_customer_id="globex"),
        event("u8", timestamp=at(7), event_name="other"),
        event("u9", timestamp=END),  # outside the window
    ]
    insert_raw(gateway, raw, dedup_token=None)
    insert_processed(
        gateway,
        [
            processed("u2", at(2)),
            processed("u4", at(3)),
            processed("u4", at(3), line_item="li_2"),  # a second line item's row
            # Rows that must not count: other tenant, other environment, other
            # customer, other event name, outside the window.
            processed("u1", at(1), tenant_id="t2"),
            processed("u3", at(3), environment_id="dev"),
            processed("u5", at(4), external_customer_id="globex"),
            processed("u6", at(5), line_item="li_2", event_name="other"),
            processed("u6", END + timedelta(hours=1)),
        ],
        dedup_token=None,
    )

    def batches(**fields: Any) -> list[list[str]]:
        found: list[list[str]] = []
        after = None
        while True:
            batch = find_unprocessed_events(
                gateway,
                FindUnprocessedEventsParams(
                    "t1",
                    "prod",
                    T0,
                    END,
                    external_customer_id="acme",
                    event_name="api_call",
                    batch_size=2,
                    after=after,
                    **fields,
                ),
            )
            if not batch:
                return found
            found.append(ids(batch))
            after = EventIterator.of(batch[-1])

    assert batches() == [["u1", "u3"], ["u5", "u6"]]
    everything = find_unprocessed_events(
        gateway, FindUnprocessedEventsParams("t1", "prod", T0, END, batch_size=100)
    )
    # Unscoped by customer and name, u5 and u6 have processed rows (any line item).
    assert ids(everything) == ["u1", "u3", "u7", "u8"]
    assert everything[2].external_customer_id == "globex"


@pytest.mark.parametrize("slice_scan", [2, 50_000])
def test_unmerged_copies_of_raw_events_page_once_each(
    migrated: StoreUnderTest, slice_scan: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Five unmerged copies of every event (five inserts, distinct tokens): more
    # copies than a page holds, so a read full of copies must not end a page early.
    monkeypatch.setattr(events_reads, "SLICE_SCAN", slice_scan)
    gateway = migrated.gateway
    raw = [event(f"v{n}", timestamp=at(n // 2)) for n in range(9)]
    # Merges lag behind inserts.
    gateway.execute(f"SYSTEM STOP MERGES {migrated.rows_table('events')}")
    for copy in range(5):
        insert_raw(
            gateway, raw, dedup_token=f"copy-{copy}", ingested_at=T0 + timedelta(seconds=copy)
        )
    insert_processed(gateway, [processed("v4", at(2))], dedup_token=None)
    assert gateway.query("SELECT count() FROM events") == [(45,)]  # not merged yet
    pages: list[list[str]] = []
    latest_ingested: set[datetime | None] = set()
    after = None
    while True:
        page = find_unprocessed_events(
            gateway, FindUnprocessedEventsParams("t1", "prod", T0, END, batch_size=3, after=after)
        )
        pages.append(ids(page))
        latest_ingested |= {item.ingested_at for item in page}
        if len(page) < 3:
            break
        after = EventIterator.of(page[-1])
    assert pages == [["v0", "v1", "v2"], ["v3", "v5", "v6"], ["v7", "v8"]]
    assert latest_ingested == {T0 + timedelta(seconds=4)}
