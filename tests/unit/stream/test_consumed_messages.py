"""The usage consumer hands the batch step Kafka messages as consumed
(:class:`ConsumedMessages`): the core reads them by method, Python sees a
:class:`SourceMessage` only where it looks. Both views must say the same.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pyarrow as pa
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE, Message

from worker.benchmarks.core_engine import EmptyStore
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.engine import DEFAULT_MAX_FINGERPRINTS, DEFAULT_MAX_REMEMBERED_OWNERS
from worker.domain.validation import DEFAULT_LIMITS
from worker.samples.synthetic import build_catalog, generate_events
from worker.stream.usage_batch import (
    ConsumedMessages,
    SourceMessage,
    source_message,
    timestamps_ms,
)
from worker.stream.usage_batch_core import CoreBatchStep, CorePrepared

NOW = datetime(2026, 3, 1, tzinfo=UTC)
KAFKA_TS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, inside the synthetic catalog's periods


def _batch() -> tuple[list[Message], list[SourceMessage]]:
    """One batch as Kafka messages and as the records they stand for: two
    topics interleaved, a message without a value, one that is no JSON, and
    events without a timestamp whose time comes from the Kafka timestamp (or,
    without one, from the batch time)."""
    catalog = build_catalog(customers=3, line_items_per_customer=2)
    events = list(generate_events(catalog, 60, late_rate=0.0))
    for event in events[::7]:
        del event["timestamp"]
    payloads: list[bytes | None] = [orjson.dumps(e) for e in events]
    payloads[5], payloads[11] = None, b"{not json"
    kafka: list[Message] = []
    records: list[SourceMessage] = []
    for n, payload in enumerate(payloads):
        topic, partition = ("events", n % 2) if n % 10 else ("events-b", 0)
        kind = TIMESTAMP_NOT_AVAILABLE if n % 3 == 0 else TIMESTAMP_CREATE_TIME
        stamp = KAFKA_TS + n if kind != TIMESTAMP_NOT_AVAILABLE else 0
        kafka.append(
            Message(
                topic=topic,
                partition=partition,
                offset=100 + n,
                key=f"k{n}".encode(),
                value=payload,
                timestamp=(kind, stamp),
            )
        )
        records.append(
            SourceMessage(
                topic,
                partition,
                100 + n,
                payload,
                stamp if kind != TIMESTAMP_NOT_AVAILABLE else None,
                f"k{n}".encode(),
            )
        )
    return kafka, records


def _step() -> CoreBatchStep:
    catalog = build_catalog(customers=3, line_items_per_customer=2)
    return CoreBatchStep(
        CatalogIndex(parse_documents(catalog)),
        NOW,
        limits=DEFAULT_LIMITS,
        max_fingerprints=DEFAULT_MAX_FINGERPRINTS,
        max_remembered_owners=DEFAULT_MAX_REMEMBERED_OWNERS,
    )


def _pylists(columns: dict[str, pa.Array]) -> dict[str, list[object]]:
    return {name: array.to_pylist() for name, array in columns.items()}


def _summary(prepared: CorePrepared) -> tuple[object, ...]:
    rows = prepared.rows
    return (
        rows.decoded.accepted,
        _pylists(rows.decoded.columns),
        _pylists(rows.rated),
        prepared.rejected,
        prepared.refused,
        prepared.unresolved,
        prepared.missing_fields,
        prepared.touched,
        prepared.offsets,
    )


def test_source_message_reads_the_kafka_message() -> None:
    kafka, records = _batch()
    assert [source_message(m) for m in kafka] == records


def test_consumed_messages_are_seen_as_source_messages() -> None:
    kafka, records = _batch()
    consumed = ConsumedMessages(kafka)
    assert len(consumed) == len(records)
    assert list(consumed) == records
    assert consumed[-1] == records[-1]
    assert list(consumed[3:9]) == records[3:9]
    assert timestamps_ms(consumed) == timestamps_ms(records)
    assert (
        timestamps_ms(records)
        == [r.timestamp_ms for r in records if r.timestamp_ms is not None]
        != []
    )


def test_the_core_reads_kafka_messages_as_it_reads_records() -> None:
    kafka, records = _batch()
    from_kafka = _step().prepare(kafka, NOW, EmptyStore())
    from_records = _step().prepare(records, NOW, EmptyStore())
    assert _summary(from_kafka) == _summary(from_records)
    # The batch exercised what differs between the two readers.
    assert len(from_records.offsets) == 3
    assert {reason for _, reason in from_records.rejected} >= {"empty_message"}
    assert from_records.rows.row_count > 0
