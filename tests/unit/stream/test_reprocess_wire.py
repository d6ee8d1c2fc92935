"""Reprocess wire formats: control messages, re-published events, pacing (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from worker.domain.events import Event
from worker.domain.validation import decode_event
from worker.stream.producer import event_key
from worker.stream.reprocess_consumer import RateLimiter, encode_event, event_document
from worker.stream.reprocess_request import (
    InvalidRequest,
    RejectReason,
    ReprocessRequest,
    parse_request,
)

GOOD = {
    "request_id": "r1",
    "tenant_id": "t1",
    "environment_id": "prod",
    "start_time": "2026-01-01T00:00:00Z",
    "end_time": "2026-02-01T00:00:00+01:00",
}


def test_a_request_round_trips_through_its_wire_form() -> None:
    request = ReprocessRequest(
        request_id="r9",
        tenant_id="t1",
        environment_id="prod",
        start_time=datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC),
        end_time=datetime(2026, 2, 1, tzinfo=UTC),
        external_customer_id="acme",
        event_name="api_call",
        batch_size=250,
    )
    assert parse_request(orjson.dumps(request.to_json())) == request
    minimal = parse_request(orjson.dumps(GOOD))
    assert minimal.end_time == datetime(2026, 1, 31, 23, tzinfo=UTC)
    assert minimal.page_size == 1000 and minimal.external_customer_id == ""
    assert parse_request(orjson.dumps(minimal.to_json())).canonical() == minimal.canonical()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{nope", RejectReason.INVALID_JSON),
        (b"[1]", RejectReason.NOT_AN_OBJECT),
        (orjson.dumps({**GOOD, "tenant_id": None}), RejectReason.MISSING_FIELD),
        (orjson.dumps({**GOOD, "tenant_id": 5}), RejectReason.WRONG_TYPE),
        (orjson.dumps({**GOOD, "extra": 1}), RejectReason.UNKNOWN_FIELD),
        (orjson.dumps({**GOOD, "start_time": "yesterday"}), RejectReason.INVALID_TIMESTAMP),
        (orjson.dumps({**GOOD, "end_time": GOOD["start_time"]}), RejectReason.INVALID_RANGE),
        (orjson.dumps({**GOOD, "batch_size": 0}), RejectReason.INVALID_BATCH_SIZE),
        (orjson.dumps({**GOOD, "batch_size": True}), RejectReason.INVALID_BATCH_SIZE),
        (orjson.dumps({**GOOD, "event_name": 3}), RejectReason.WRONG_TYPE),
    ],
)
def test_bad_requests_are_rejected_with_a_reason(payload: bytes, reason: RejectReason) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(payload)
    assert caught.value.reason is reason


def test_a_republished_event_decodes_to_the_same_event_under_its_original_key() -> None:
    event = Event(
        id="e1",
        tenant_id="t1",
        environment_id="prod",
        event_name="api_call",
        timestamp=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        properties={"calls": 2.5, "big": 2**70, "region": "eu", "nested": {"a": [1, None]}},
        source="sdk",
        customer_id="",
        external_customer_id="acme",
    )
    key, value = encode_event(event)
    assert key == "t1:prod:acme" == event_key(event_document(event)) == event.partition_key
    decoded = decode_event(value, fallback_id="x", fallback_timestamp=datetime.now(UTC))
    assert decoded == event


def test_the_rate_limiter_paces_without_burst_credit() -> None:
    now = [100.0]
    limiter = RateLimiter(1000.0, clock=lambda: now[0])
    assert limiter.chunk_size(5000) == 100
    assert limiter.reserve(100) == 0.0
    assert limiter.reserve(100) == pytest.approx(0.1)
    now[0] += 10.0  # idle time earns nothing
    assert limiter.reserve(500) == 0.0
    assert limiter.reserve(1) == pytest.approx(0.5)
