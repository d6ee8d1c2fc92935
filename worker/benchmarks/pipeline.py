"""End-to-end benchmark: local tansu + embedded chdb + the usage consumer.

Prints, for the same generated events:

* the usage consumer's throughput with the default engine (``EW_ENGINE=core``;
  first batch collected to last commit, all committed), on one process;
* a consume-only baseline (the same group consumer, batches committed, no work):
  the faster of two passes, each in a group of its own, since one pass
  over the local broker varied from 154k to 401k events/s between runs;
* the I/O ceiling (consume-only time plus chdb's time to ingest the rows of
  the run as ready Arrow batches, :mod:`worker.benchmarks.ceiling`) and the
  usage consumer's ratio to it;
* the CPU time of the worker thread per event (``time.thread_time`` around the
  run: start-up and the idle tail included; librdkafka's and chdb's own
  threads are not);
* the same run with the reference engine (``EW_ENGINE=python``);
* a naive per-event baseline (decode, resolve, one insert of its rows and one
  synchronous commit per message, as the reference platform does), measured
  on a sample because it is slow;
* event-to-commit latency (p50 / p99, Kafka timestamp to offset commit) at
  half the measured throughput: a producer process paced at that rate feeds a
  fresh topic while the usage consumer runs; the first third of the run
  (first-touch state loads of every line item) is reported apart from the
  steady state.

Runs in a subprocess-free way but opens its own chdb directory: call it from
a process that has not opened another chdb path (``events-worker bench``).
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from worker.benchmarks.ceiling import ingest_seconds
from worker.benchmarks.child import scratch_directory
from worker.dev.local_broker import LocalTansuBroker, local_settings
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.engine import UsageRater
from worker.domain.validation import decode_event
from worker.ops.health import LoopHealth
from worker.ops.settings import WorkerSettings
from worker.samples.synthetic import build_catalog, generate_events
from worker.store.connect import open_gateway
from worker.store.processed import insert_rated
from worker.store.schema import migrate
from worker.stream.consumer_support import group_consumer_config
from worker.stream.delivery import DeliveryTracker, produce_or_wait
from worker.stream.producer import event_key
from worker.stream.run_usage import run_usage
from worker.stream.topics import ensure_topics, worker_topics


@dataclass(frozen=True, slots=True)
class EngineRun:
    """One usage-consumer run over the benchmark's events."""

    per_s: float
    """Events per second, first batch collected to last commit, all committed."""
    worker_cpu_us: float
    """CPU of the worker thread per event (start-up and the idle tail included)."""

    @classmethod
    def measure(cls, settings: WorkerSettings, catalog_file: Path) -> EngineRun:
        """Run the usage consumer on ``settings`` until it has been idle for 2 s."""
        cpu_started = time.thread_time()
        stats = run_usage(settings, catalog_file=str(catalog_file), exit_when_idle_s=2.0)
        cpu_us = (time.thread_time() - cpu_started) / max(stats.messages, 1) * 1e6
        return cls(stats.messages / max(stats.busy_seconds, 1e-9), cpu_us)


@dataclass(frozen=True, slots=True)
class IoCeiling:
    """Consuming the events plus ingesting the run's rows, one after the other."""

    consume_only_per_s: float
    ingest_seconds: float
    ingest_rows: int

    def per_s(self, events: int) -> float:
        return events / (events / self.consume_only_per_s + self.ingest_seconds)


@dataclass(frozen=True, slots=True)
class Latency:
    """Event-to-commit latency (ms) at ``rate`` events/s: steady state and warm-up."""

    rate: float
    events: int
    """Events of the steady state (the run less its first third, the warm-up)."""
    p50_ms: float
    p99_ms: float
    warmup_p50_ms: float
    warmup_p99_ms: float


@dataclass(frozen=True, slots=True)
class PipelineBenchResult:
    events: int
    produce_per_s: float
    io: IoCeiling
    core: EngineRun
    """The default engine (``EW_ENGINE=core``)."""
    python: EngineRun
    """The reference engine (``EW_ENGINE=python``)."""
    naive: tuple[float, int]
    """Events/s of the naive per-event baseline, and its sample size."""
    latency: Latency
    """Of the default engine, at half its measured throughput."""

    @property
    def ceiling_per_s(self) -> float:
        return self.io.per_s(self.events)

    @property
    def ceiling_ratio(self) -> float:
        return self.core.per_s / self.ceiling_per_s


def run_pipeline_bench(
    events: int = 1_000_000,
    customers: int = 10_000,
    naive_sample: int = 2_000,
    latency_seconds: float = 60.0,
) -> PipelineBenchResult:
    """Run the benchmark (several minutes for 1M events) and return its figures."""
    catalog = build_catalog(customers=customers, line_items_per_customer=3)
    with scratch_directory("pipeline-") as tmp, LocalTansuBroker() as broker:
        catalog_file = Path(tmp) / "catalog.json"
        catalog_file.write_text(json.dumps(catalog))
        settings = local_settings(
            broker,
            store_url=f"chdb://{tmp}/clickhouse",
            topic_partitions=4,
            log_level="WARNING",
        ).model_copy(update={"engine": "core"})
        ensure_topics(settings, worker_topics(settings))
        produce_rate = _produce(settings, catalog, events)
        consume_rate = max(
            _consume_only(settings, events, f"bench-consume-only-{n}") for n in (1, 2)
        )
        core = EngineRun.measure(settings, catalog_file)
        io = IoCeiling(
            consume_rate,
            *ingest_seconds(settings.store_url, catalog, events, settings.batch_max_events),
        )
        # The same events again through the reference engine, in a group and
        # database of their own (one chdb directory per process).
        python = EngineRun.measure(
            settings.model_copy(
                update={
                    "engine": "python",
                    "usage_group": f"{settings.usage_group}-python",
                    "store_url": f"chdb://{tmp}/clickhouse?database=python_bench",
                }
            ),
            catalog_file,
        )
        naive_rate = _naive(settings, catalog, naive_sample)
        latency_rate = core.per_s / 2
        latencies = _latency_at(
            settings,
            catalog,
            catalog_file,
            latency_rate,
            max(1_000, int(latency_rate * latency_seconds)),
        )
    # Commit order is production order per partition: the first third is the warm-up.
    warmup = len(latencies) // 3
    latency = Latency(
        latency_rate,
        len(latencies) - warmup,
        *_percentiles(latencies[warmup:]),
        *_percentiles(latencies[:warmup]),
    )
    return PipelineBenchResult(
        events, produce_rate, io, core, python, (naive_rate, naive_sample), latency
    )


def print_pipeline_bench(events: int = 1_000_000, customers: int = 10_000) -> PipelineBenchResult:
    result = run_pipeline_bench(events=events, customers=customers)
    core, python, io, latency = result.core, result.python, result.io, result.latency
    naive_rate, naive_sample = result.naive
    print(
        f"pipeline: {result.events:,} events, {customers:,} customers x 3 line items, "
        "local tansu (4 partitions) + embedded chdb, one worker process\n"
        f"  produce                 : {result.produce_per_s:>10,.0f} events/s\n"
        f"  consume-only baseline   : {io.consume_only_per_s:>10,.0f} events/s\n"
        f"  usage consumer (priced) : {core.per_s:>10,.0f} events/s, all committed "
        f"({core.per_s / io.consume_only_per_s:.2f}x consume-only; EW_ENGINE=core, "
        "the default)\n"
        f"  I/O ceiling             : {result.ceiling_per_s:>10,.0f} events/s (consume-only + "
        f"chdb ingesting the run's {io.ingest_rows:,} rows as ready Arrow batches in "
        f"{io.ingest_seconds:.1f} s); usage consumer = {result.ceiling_ratio:.2f} of it\n"
        f"  worker thread CPU       : {core.worker_cpu_us:>10.1f} us/event "
        "(start-up and idle tail included)\n"
        f"  reference engine        : {python.per_s:>10,.0f} events/s, all committed, "
        f"{python.worker_cpu_us:.1f} us/event worker thread CPU (EW_ENGINE=python)\n"
        f"  naive per-event baseline: {naive_rate:>10,.0f} events/s "
        f"(sample of {naive_sample:,}; usage consumer is "
        f"{core.per_s / max(naive_rate, 1e-9):,.0f}x faster)\n"
        f"  event-to-commit latency : p50 {latency.p50_ms:,.0f} ms, "
        f"p99 {latency.p99_ms:,.0f} ms at {latency.rate:,.0f} events/s "
        f"(half load, steady state: {latency.events:,} events; Kafka timestamp to "
        f"offset commit)\n"
        f"    first third of that run : p50 {latency.warmup_p50_ms:,.0f} ms, "
        f"p99 {latency.warmup_p99_ms:,.0f} ms (warm-up: every line item loaded on first touch)"
    )
    return result


def _produce(settings: WorkerSettings, catalog: dict[str, Any], count: int) -> float:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 20})
    tracker = DeliveryTracker()
    started = time.perf_counter()
    for event in generate_events(catalog, count, duplicate_rate=0.01):
        payload, key = orjson.dumps(event), event_key(event).encode()
        produce_or_wait(producer, tracker, settings.events_topic, value=payload, key=key)
    if producer.flush(120) or tracker.failed:
        raise RuntimeError(f"bench: events not delivered: {tracker.errors}")
    return count / (time.perf_counter() - started)


def _consume_only(settings: WorkerSettings, count: int, group: str) -> float:
    """Events/s of ``group`` reading ``count`` events, first batch to last commit."""
    consumer = Consumer(group_consumer_config(settings, group))
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
    """Per message: decode, resolve + rate, one insert of its rows, one sync commit."""
    gateway = open_gateway(settings.store_url + "?database=naive")
    migrate(gateway)
    rater = UsageRater(CatalogIndex(parse_documents(catalog)))
    consumer = Consumer(group_consumer_config(settings, "bench-naive"))
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
            insert_rated(gateway, rated.rows, dedup_token=None)
            consumer.commit(message=message, asynchronous=False)
            done += 1
    finally:
        consumer.close()
        gateway.close()
    return done / max(time.perf_counter() - (started or time.perf_counter()), 1e-9)


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    if len(latencies) < 2:
        return (latencies[0], latencies[0]) if latencies else (float("nan"), float("nan"))
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return cuts[49], cuts[98]


def _latency_at(
    settings: WorkerSettings,
    catalog: dict[str, Any],
    catalog_file: Path,
    rate: float,
    count: int,
    *,
    name: str = "bench-latency",
) -> list[float]:
    """Per-message commit latency (ms) with a producer paced at ``rate`` events/s.

    The producer runs in its own process (so it does not share the consumer's
    interpreter) on a fresh topic and store database, and starts only once the
    consumer holds its partitions: the figures are steady-state, not the
    first group join. ``name`` names its topic, group and database (one per run).
    """
    latency_settings = settings.model_copy(
        update={
            "events_topic": f"{name}-events",
            "usage_group": name,
            "store_url": settings.store_url + f"?database={name.replace('-', '_')}",
        }
    )
    ensure_topics(latency_settings, worker_topics(latency_settings))
    context = multiprocessing.get_context("spawn")
    generated, go = context.Event(), context.Event()
    producer = context.Process(
        target=_paced_produce,
        args=(
            settings.kafka_bootstrap,
            latency_settings.events_topic,
            catalog,
            count,
            rate,
            generated,
            go,
        ),
        daemon=True,
    )
    producer.start()
    if not generated.wait(600):
        raise RuntimeError("bench: the paced producer did not start")
    health = LoopHealth(latency_settings.health_stall_seconds)

    def start_when_ready() -> None:
        while not health.readiness().ok:
            time.sleep(0.02)
        go.set()

    threading.Thread(target=start_when_ready, daemon=True).start()
    stats = run_usage(
        latency_settings,
        catalog_file=str(catalog_file),
        exit_when_idle_s=3.0,
        health=health,
        record_commit_latency=True,
    )
    producer.join(60)
    if producer.exitcode != 0:
        raise RuntimeError(f"bench: the paced producer failed ({producer.exitcode})")
    return stats.commit_latencies_ms or []


def _paced_produce(
    bootstrap: str,
    topic: str,
    catalog: dict[str, Any],
    count: int,
    rate: float,
    generated: Any,
    go: Any,
) -> None:
    """Child process: produce ``count`` events at ``rate`` events/s once ``go`` is set."""
    messages = [
        (orjson.dumps(event), event_key(event).encode())
        for event in generate_events(catalog, count, seed=23, duplicate_rate=0.01)
    ]
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    tracker = DeliveryTracker()
    generated.set()
    go.wait()
    started = time.perf_counter()
    while tracker.sent < count:
        due = min(count, int((time.perf_counter() - started) * rate) + 1)
        while tracker.sent < due:
            payload, key = messages[tracker.sent]
            produce_or_wait(producer, tracker, topic, value=payload, key=key)
        producer.poll(0)
        time.sleep(0.002)
    if producer.flush(120) or tracker.failed:
        raise SystemExit(1)
