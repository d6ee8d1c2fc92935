"""End-to-end benchmark: local tansu + embedded chdb + the usage consumer.

Prints, for the same generated events:

* the usage consumer's throughput (first batch collected to last commit, all
  committed), CPU-bound on one process;
* a consume-only baseline (the same group consumer, batches committed, no work);
* a naive per-event baseline (decode, resolve, one single-row insert and one
  synchronous commit per message, as the reference platform does), measured
  on a sample because it is slow.

Runs in a subprocess-free way but opens its own chdb directory: call it from
a process that has not opened another chdb path (``events-worker bench``).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.engine import UsageRater
from worker.domain.validation import decode_event
from worker.ops.local_broker import LocalTansuBroker
from worker.ops.settings import WorkerSettings
from worker.samples.synthetic import build_catalog, generate_events
from worker.store.gateway import open_gateway
from worker.store.processed import insert_processed
from worker.store.schema import migrate
from worker.stream.producer import event_key
from worker.stream.run_usage import run_usage
from worker.stream.topics import ensure_topics, worker_topics


@dataclass(frozen=True, slots=True)
class PipelineBenchResult:
    events: int
    produce_per_s: float
    pipeline_per_s: float
    consume_only_per_s: float
    naive_per_s: float
    naive_sample: int


def run_pipeline_bench(
    events: int = 1_000_000, customers: int = 10_000, naive_sample: int = 2_000
) -> PipelineBenchResult:
    """Run the benchmark (several minutes for 1M events) and return its figures."""
    catalog = build_catalog(customers=customers, line_items_per_customer=3)
    with tempfile.TemporaryDirectory(prefix="ew-bench-") as tmp, LocalTansuBroker() as broker:
        catalog_file = Path(tmp) / "catalog.json"
        catalog_file.write_text(json.dumps(catalog))
        settings = WorkerSettings(
            kafka_bootstrap=broker.bootstrap,
            kafka_session_timeout_ms=6000,
            store_url=f"chdb://{tmp}/clickhouse",
            topic_partitions=4,
            log_level="WARNING",
        )
        ensure_topics(settings, worker_topics(settings))
        produce_rate = _produce(settings, catalog, events)
        consume_rate = _consume_only(settings, events)
        stats = run_usage(settings, catalog_file=str(catalog_file), exit_when_idle_s=2.0)
        pipeline_rate = stats.messages / max(stats.busy_seconds, 1e-9)
        naive_rate = _naive(settings, catalog, naive_sample)
    return PipelineBenchResult(
        events, produce_rate, pipeline_rate, consume_rate, naive_rate, naive_sample
    )


def print_pipeline_bench(events: int = 1_000_000, customers: int = 10_000) -> None:
    result = run_pipeline_bench(events=events, customers=customers)
    print(
        f"pipeline: {result.events:,} events, {customers:,} customers x 3 line items, "
        "local tansu (4 partitions) + embedded chdb, one worker process\n"
        f"  produce                 : {result.produce_per_s:>10,.0f} events/s\n"
        f"  consume-only baseline   : {result.consume_only_per_s:>10,.0f} events/s\n"
        f"  usage consumer (priced) : {result.pipeline_per_s:>10,.0f} events/s, all committed "
        f"({result.pipeline_per_s / result.consume_only_per_s:.2f}x consume-only)\n"
        f"  naive per-event baseline: {result.naive_per_s:>10,.0f} events/s "
        f"(sample of {result.naive_sample:,}; usage consumer is "
        f"{result.pipeline_per_s / max(result.naive_per_s, 1e-9):,.0f}x faster)"
    )


def _produce(settings: WorkerSettings, catalog: dict[str, Any], count: int) -> float:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 20})
    started = time.perf_counter()
    for event in generate_events(catalog, count, duplicate_rate=0.01):
        payload, key = orjson.dumps(event), event_key(event).encode()
        while True:
            try:
                producer.produce(settings.events_topic, payload, key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError("bench: events not delivered")
    return count / (time.perf_counter() - started)


def _consume_only(settings: WorkerSettings, count: int) -> float:
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": "bench-consume-only",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": settings.kafka_session_timeout_ms,
            }
        )
    )
    consumer.subscribe([settings.events_topic])
    seen = 0
    started: float | None = None
    try:
        deadline = time.monotonic() + 600
        while seen < count and time.monotonic() < deadline:
            messages = consumer.consume(10_000, 0.5)
            if not messages:
                continue
            if started is None:
                started = time.perf_counter()
            seen += len(messages)
            last: dict[int, int] = {}
            for message in messages:
                partition, offset = message.partition(), message.offset()
                if partition is not None and offset is not None:
                    last[partition] = offset + 1
            consumer.commit(
                offsets=[TopicPartition(settings.events_topic, p, o) for p, o in last.items()],
                asynchronous=False,
            )
    finally:
        consumer.close()
    return seen / max(time.perf_counter() - (started or time.perf_counter()), 1e-9)


def _naive(settings: WorkerSettings, catalog: dict[str, Any], sample: int) -> float:
    """Per message: decode, resolve + rate, one single-row insert, one sync commit."""
    gateway = open_gateway(settings.store_url + "?database=naive")
    migrate(gateway)
    rater = UsageRater(CatalogIndex(parse_documents(catalog)))
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": "bench-naive",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": settings.kafka_session_timeout_ms,
            }
        )
    )
    consumer.subscribe([settings.events_topic])
    done = 0
    started: float | None = None
    try:
        while done < sample:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            if started is None:
                started = time.perf_counter()
            event = decode_event(
                message.value() or b"", fallback_id="-", fallback_timestamp=datetime.now(UTC)
            )
            rated = rater.rate(rater.resolve([event]), datetime.now(UTC))
            for row in rated.rows:
                insert_processed(gateway, [row], dedup_token=None)
            consumer.commit(message=message, asynchronous=False)
            done += 1
    finally:
        consumer.close()
        gateway.close()
    return done / max(time.perf_counter() - (started or time.perf_counter()), 1e-9)
