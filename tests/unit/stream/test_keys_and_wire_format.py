"""Pure parts of the stream modules: event keys, JSONL checking, catalog wire format."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from worker.domain.catalog import CatalogDocument, parse_documents
from worker.domain.validation import decode_event
from worker.samples import __file__ as samples_init
from worker.stream.catalog_source import (
    EntityType,
    _parse_entity,
    entity_key,
    entity_messages,
)
from worker.stream.producer import LineProblem, check_file, event_key

SAMPLE_CATALOG = Path(samples_init).parent / "catalog.json"


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ({"tenant_id": "t", "environment_id": "prod", "external_customer_id": "x"}, "t:prod:x"),
        ({"tenant_id": "t", "environment_id": "prod", "customer_id": "c"}, "t:prod:c"),
        (
            {
                "tenant_id": "t",
                "environment_id": "e",
                "customer_id": "c",
                "external_customer_id": "x",
            },
            "t:e:x",
        ),
        ({"tenant_id": "t", "customer_id": "c"}, "t::c"),
        ({"tenant_id": "t", "external_customer_id": "", "customer_id": "c"}, "t::c"),
    ],
)
def test_event_key_is_the_events_partition_key(document: dict[str, str], key: str) -> None:
    assert event_key(document) == key
    event = decode_event(
        orjson.dumps({**document, "event_name": "e"}),
        fallback_id="id",
        fallback_timestamp=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert event.partition_key == key


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([1, 2], "not a JSON object (an array)"),
        ("text", "not a JSON object (a string)"),
        ({"customer_id": "c"}, "tenant_id"),
        ({"tenant_id": 7, "customer_id": "c"}, "tenant_id"),
        ({"tenant_id": "t"}, "external_customer_id or customer_id is required"),
        ({"tenant_id": "t", "customer_id": 5}, "customer_id must be a string"),
        ({"tenant_id": "t", "customer_id": "c", "environment_id": 1}, "environment_id"),
    ],
)
def test_event_key_refuses_unkeyable_lines(document: object, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        event_key(document)


def test_check_file_reports_line_numbers_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b'{"tenant_id":"t","customer_id":"c","event_name":"e"}\n'
        b"\n"
        b"{not json\n"
        b'{"tenant_id":"t","event_name":"e"}\r\n'
        b'{"tenant_id":"t","customer_id":"c","timestamp":"yesterday"}'  # keyable: worker DLQs it
    )
    good, problems = check_file(str(path))
    assert good == 2
    assert [p.line for p in problems] == [3, 4]
    assert isinstance(problems[0], LineProblem) and "not valid JSON" in problems[0].problem
    assert str(problems[1]) == "line 4: external_customer_id or customer_id is required"


def test_entity_messages_round_trip_every_entity_of_the_sample_catalog() -> None:
    documents = parse_documents(orjson.loads(SAMPLE_CATALOG.read_bytes()))
    messages = list(entity_messages(documents))
    entity_count = sum(
        len(d.customers) + len(d.meters) + len(d.features) + len(d.prices) + len(d.subscriptions)
        for d in documents
    )
    assert len(messages) == entity_count
    assert len({key for key, _ in messages}) == entity_count  # keys are unique
    rebuilt: dict[tuple[str, str], dict[str, list[Any]]] = {}
    for key, value in messages:
        entity = _parse_entity(key.encode(), value)
        fields = rebuilt.setdefault(
            (entity.tenant_id, entity.environment_id),
            {"customers": [], "meters": [], "features": [], "prices": [], "subscriptions": []},
        )
        fields[f"{entity.entity_type.value}s"].append(entity.model)
    again = [CatalogDocument(tenant_id=t, environment_id=e, **f) for (t, e), f in rebuilt.items()]
    assert sorted(again, key=lambda d: (d.tenant_id, d.environment_id)) == sorted(
        documents, key=lambda d: (d.tenant_id, d.environment_id)
    )


def test_entity_key_shape_and_colon_rule() -> None:
    assert entity_key(EntityType.PRICE, "t1", "prod", "p:1") == "price:t1:prod:p:1"
    assert entity_key(EntityType.CUSTOMER, "t1", "", "c") == "customer:t1::c"
    with pytest.raises(ValueError, match="':' is not allowed"):
        entity_key(EntityType.METER, "t:1", "prod", "m")


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        (b"customer:t1:prod", b'{"id":"c"}', "key is not"),
        (b"plan:t1:prod:p", b'{"id":"p"}', "unknown entity type"),
        (b"customer:t1:prod:c", b'{"id":"other"}', "differs from key id"),
        (b"customer:t1:prod:c", b"[1]", "invalid customer"),
        (b"meter:t1:prod:m", b'{"id":"m","event_name":"e"}', "invalid meter: aggregation"),
        (b"customer::prod:c", b'{"id":"c"}', "empty tenant"),
        (b"customer:t1:prod:c", b"{not json", "invalid customer"),
    ],
)
def test_parse_entity_says_what_is_wrong(key: bytes, value: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        _parse_entity(key, value)
