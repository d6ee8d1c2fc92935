"""The resolve memo is bounded: least recently used routes are evicted (issue 19).

Its keys come from events (tenant, customer ids, event name), so a stream of
new ids must not grow it without bound; eviction never changes an answer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.events import Event
from worker.samples.synthetic import build_catalog

CATALOG = build_catalog(customers=4, line_items_per_customer=2)


def event(customer: str, name: str = "api_call") -> Event:
    return Event(
        id="e",
        tenant_id=CATALOG["tenant_id"],
        environment_id=CATALOG["environment_id"],
        event_name=name,
        timestamp=datetime(2026, 1, 15, tzinfo=UTC),
        external_customer_id=customer,
        properties={"calls": 1, "region": "us"},
    )


def counting_index(
    monkeypatch: pytest.MonkeyPatch, max_routes: int
) -> tuple[CatalogIndex, list[Any]]:
    computed: list[Any] = []
    original = CatalogIndex._route

    def route(self: CatalogIndex, source: Event) -> Any:
        computed.append(source.external_customer_id)
        return original(self, source)

    monkeypatch.setattr(CatalogIndex, "_route", route)
    return CatalogIndex(parse_documents(CATALOG), max_routes=max_routes), computed


def test_the_memo_keeps_at_most_max_routes_and_evicts_the_least_recently_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index, computed = counting_index(monkeypatch, max_routes=3)
    for customer in ("a", "b", "c", "a", "d"):  # "a" is used again before "d" arrives
        index.resolve(event(customer))
    assert index.memoised_routes == 3
    assert computed == ["a", "b", "c", "d"]
    index.resolve(event("a"))  # still held
    index.resolve(event("b"))  # evicted: computed again
    assert computed == ["a", "b", "c", "d", "b"]
    assert index.memoised_routes == 3


def test_a_stream_of_new_ids_never_grows_the_memo_past_its_bound() -> None:
    index = CatalogIndex(parse_documents(CATALOG), max_routes=50)
    for number in range(1000):
        index.resolve(event(f"unknown-{number}", name=f"name-{number % 7}"))
    assert index.memoised_routes == 50


def test_eviction_never_changes_an_answer() -> None:
    customers = [customer["external_id"] for customer in CATALOG["customers"]] + ["nobody"]
    tiny = CatalogIndex(parse_documents(CATALOG), max_routes=1)
    roomy = CatalogIndex(parse_documents(CATALOG))
    for _ in range(3):
        for customer in customers:
            assert answer(tiny, customer) == answer(roomy, customer)
    assert answer(roomy, customers[0])[1]  # the comparison covers matches


def answer(index: CatalogIndex, customer: str) -> tuple[object, ...]:
    resolution = index.resolve(event(customer))
    matches = tuple((m.binding.line_item_id, m.state_key) for m in resolution.matches)
    return (resolution.customer_id, matches, resolution.unresolved)
