"""Dead letters on the real broker: every kind of malformed message, its reason and its bytes."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from confluent_kafka import Message, Producer

from tests.integration.stream.conftest import read_topic
from worker import __version__
from worker.domain.validation import InvalidEvent, InvalidReason, decode_event
from worker.ops.settings import WorkerSettings
from worker.stream.dlq import DeadLetterError, DeadLetterProducer, SourcePosition
from worker.stream.topics import ensure_topics

VALID = {"tenant_id": "t", "environment_id": "prod", "event_name": "api_call", "customer_id": "c"}


def _json(**changes: object) -> bytes:
    document = {**VALID, **changes}
    return orjson.dumps({k: v for k, v in document.items() if v is not None})


#: (value, expected reason); None reason = a valid event that must not be dead-lettered.
CASES: list[tuple[bytes | None, InvalidReason | None]] = [
    (b'{"tenant_id": "t", "event_name": ', InvalidReason.INVALID_JSON),
    (b"", InvalidReason.INVALID_JSON),
    (None, InvalidReason.INVALID_JSON),  # a tombstone on the events topic
    (b"[1, 2, 3]", InvalidReason.NOT_AN_OBJECT),
    (b'"just a string"', InvalidReason.NOT_AN_OBJECT),
    (_json(tenant_id=None), InvalidReason.MISSING_FIELD),
    (_json(event_name=None), InvalidReason.MISSING_FIELD),
    (_json(customer_id=None), InvalidReason.MISSING_FIELD),
    (_json(timestamp="yesterday"), InvalidReason.INVALID_TIMESTAMP),
    (_json(timestamp=1767225600), InvalidReason.INVALID_TIMESTAMP),
    (_json(properties=[1, 2]), InvalidReason.PROPERTIES_NOT_OBJECT),
    (_json(properties={"blob": "x" * 300_000}), InvalidReason.MESSAGE_TOO_LARGE),
    (_json(properties={f"k{i}": i for i in range(300)}), InvalidReason.TOO_MANY_PROPERTIES),
    (_json(tenant_id=42), InvalidReason.WRONG_TYPE),
    (_json(customer_id=["c"]), InvalidReason.WRONG_TYPE),
    (_json(amount=3), InvalidReason.UNKNOWN_FIELD),
    (b"\xff\xfe\x00\x81garbage\x00", InvalidReason.INVALID_ENCODING),
    (_json(id="ok-1", properties={"calls": 3}), None),
    (_json(id="ok-2", timestamp="2026-01-05T10:00:00Z"), None),
]


def _headers(message: Message) -> dict[str, bytes]:
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {
        name: value if isinstance(value, bytes) else (value or "").encode() for name, value in pairs
    }


def test_each_malformed_message_lands_in_the_dlq_with_its_reason_and_bytes(
    stream_settings: WorkerSettings,
) -> None:
    s = stream_settings
    ensure_topics(s, {s.events_topic: 3, s.dlq_topic: 1}, timeout_s=10)
    producer = Producer({"bootstrap.servers": s.kafka_bootstrap, "message.max.bytes": 2_000_000})
    for number, (value, _) in enumerate(CASES):
        producer.produce(
            s.events_topic, key=f"k{number}", value=value, headers=[("case", str(number).encode())]
        )
    assert producer.flush(10) == 0
    source_messages = read_topic(s.kafka_bootstrap, s.events_topic, len(CASES))
    assert len(source_messages) == len(CASES)

    # The pipeline's error boundary, in miniature: decode, dead-letter, ack, then commit.
    dlq = DeadLetterProducer(s)
    expected: dict[tuple[int, int], tuple[InvalidReason, bytes | None, int]] = {}
    valid = 0
    for message in source_messages:
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None
        try:
            decode_event(
                message.value() or b"",
                fallback_id=f"{s.events_topic}:{partition}:{offset}",
                fallback_timestamp=datetime(2026, 1, 1, tzinfo=UTC),
            )
            valid += 1
        except InvalidEvent as exc:
            dlq.send_message(message, reason=exc.reason.value, error=str(exc))
            case = int(_headers(message)["case"])
            expected[(partition, offset)] = (exc.reason, message.value(), case)
    assert dlq.flush_and_check(timeout_s=10) == len(CASES) - 2
    assert dlq.pending == 0
    assert valid == 2

    letters = read_topic(s.kafka_bootstrap, s.dlq_topic, len(expected))

    assert len(letters) == len(expected) == len(CASES) - 2
    seen_reasons = set()
    for letter in letters:
        headers = _headers(letter)
        position = (int(headers["source_partition"]), int(headers["source_offset"]))
        reason, value, case = expected[position]
        assert CASES[case][1] is reason  # the reason we meant to provoke
        assert headers["reason"] == reason.value.encode()
        assert headers["error"].decode().startswith(f"{reason.value}: ")
        assert headers["source_topic"] == s.events_topic.encode()
        assert headers["worker_version"] == __version__.encode()
        assert headers["case"] == str(case).encode()  # original headers kept
        assert letter.value() == value  # original bytes, unchanged (None stays None)
        assert letter.key() == f"k{case}".encode()
        seen_reasons.add(reason)
    assert len(seen_reasons) >= 10


def test_oversized_dead_letter_is_truncated_and_says_so(stream_settings: WorkerSettings) -> None:
    s = stream_settings
    ensure_topics(s, {s.dlq_topic: 1}, timeout_s=10)
    dlq = DeadLetterProducer(s, max_payload_bytes=1000)
    dlq.send(
        b"y" * 5000,
        key=None,
        reason="message_too_large",
        error="5000 bytes",
        source=SourcePosition("events", 2, 41),
    )
    assert dlq.flush_and_check(timeout_s=10) == 1

    [letter] = read_topic(s.kafka_bootstrap, s.dlq_topic, 1)

    assert letter.value() == b"y" * 1000
    headers = _headers(letter)
    assert headers["payload_truncated_from"] == b"5000"
    assert (headers["source_partition"], headers["source_offset"]) == (b"2", b"41")


def test_unacknowledged_dead_letters_raise_until_reset() -> None:
    settings = WorkerSettings(
        kafka_bootstrap="127.0.0.1:1", kafka_extra={"message.timeout.ms": 1000, "log_level": 0}
    )
    dlq = DeadLetterProducer(settings, topic="events.dlq")
    dlq.send(
        b"{}", key=b"k", reason="invalid_json", error="x", source=SourcePosition("events", 0, 7)
    )

    with pytest.raises(DeadLetterError, match="1 dead letters failed"):
        dlq.flush_and_check(timeout_s=10)
    with pytest.raises(DeadLetterError):  # still failing: the caller has not acted on it
        dlq.flush_and_check(timeout_s=1)
    dlq.reset_after_failure()
    assert dlq.flush_and_check(timeout_s=1) == 0
    assert dlq.close(timeout_s=1) == 0
