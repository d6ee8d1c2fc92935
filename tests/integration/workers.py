"""Helpers shared by the pipeline and reprocess integration tests.

Settings, producing, reading dead letters, the reference invoice, worker
subprocesses. Test modules import from here (never from each other).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.reference import never_priced as reference_never_priced
from tests.reference import reference_invoice
from worker.domain.catalog_index import CatalogIndex
from worker.domain.validation import DEFAULT_LIMITS
from worker.ops.settings import WorkerSettings
from worker.store.connect import open_gateway
from worker.store.errors import StoreError
from worker.store.gateway import Gateway, Params, Row
from worker.store.processed import line_item_totals
from worker.stream.consumer_support import RetryPolicy
from worker.stream.delivery import DeliveryTracker, produce_or_wait
from worker.stream.dlq import DeadLetterProducer
from worker.stream.producer import event_key
from worker.stream.runtime import LoopOptions
from worker.stream.usage_batch import UsageBatchProcessor
from worker.stream.usage_consumer import BatchPolicy, UsageConsumer

#: The worker's command line, run with this interpreter.
CLI = [sys.executable, "-m", "worker.cli"]
#: The record time the reference gives an event without a timestamp.
RATED_AT = datetime(2026, 3, 1, tzinfo=UTC)

#: Malformed messages (value, dead-letter reason).
MALFORMED: list[tuple[bytes, str]] = [
    (b"{not json", "invalid_json"),
    (b"\xff\xfe\x00garbage", "invalid_encoding"),
    (b"[1, 2]", "not_an_object"),
    (b'{"event_name": "x", "external_customer_id": "c"}', "missing_field"),
    (b'{"tenant_id": 5, "event_name": "x", "external_customer_id": "c"}', "wrong_type"),
    (
        b'{"tenant_id": "t1", "event_name": "x", "external_customer_id": "c", "oops": 1}',
        "unknown_field",
    ),
]
#: `MALFORMED` as raw (value, key) messages for `produce`.
MALFORMED_MESSAGES: list[tuple[bytes, bytes]] = [(value, b"bad") for value, _ in MALFORMED]


# -- settings ------------------------------------------------------------------


def settings_for(
    bootstrap: str, store_url: str, unique_name: Callable[[str], str]
) -> WorkerSettings:
    """Settings of an in-process worker on fresh topics and a fresh consumer group."""
    return WorkerSettings(
        kafka_bootstrap=bootstrap,
        kafka_session_timeout_ms=6000,
        store_url=store_url,
        events_topic=unique_name("events"),
        dlq_topic=unique_name("dlq"),
        catalog_topic=unique_name("catalog"),
        reprocess_topic=unique_name("reprocess"),
        usage_group=unique_name("usage"),
        topic_partitions=3,
        batch_max_events=700,
        batch_max_wait_ms=200,
    )


def worker_env(bootstrap: str, unique_name: Callable[[str], str]) -> dict[str, str]:
    """The environment of a worker subprocess on fresh topics and a fresh consumer group."""
    env = dict(os.environ)
    env.update(
        {
            "EW_KAFKA_BOOTSTRAP": bootstrap,
            "EW_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "EW_EVENTS_TOPIC": unique_name("events"),
            "EW_DLQ_TOPIC": unique_name("dlq"),
            "EW_CATALOG_TOPIC": unique_name("catalog"),
            "EW_REPROCESS_TOPIC": unique_name("reprocess"),
            "EW_USAGE_GROUP": unique_name("usage"),
            "EW_TOPIC_PARTITIONS": "3",
            "EW_BATCH_MAX_EVENTS": "400",
            "EW_BATCH_MAX_WAIT_MS": "100",
            "EW_LOG_LEVEL": "WARNING",
            "EW_HTTP_PORT": "0",  # ephemeral: never collide with another run on this machine
        }
    )
    return env


def static_member(env: dict[str, str], unique_name: Callable[[str], str]) -> dict[str, str]:
    """`env` with a static group membership (KIP-345 `group.instance.id`) for its consumers.

    A worker restarted after a SIGKILL then takes over its killed predecessor's
    membership instead of waiting for that member's session to time out (on
    tansu about 6 s instead of 11 s per restart): the wait is the broker's, not
    what a crash test is about. For one worker process of a group at a time.
    """
    extra = {"group.instance.id": unique_name("member")}
    return dict(env, EW_KAFKA_EXTRA=json.dumps(extra))


def settings_from_env(env: Mapping[str, str], partitions: int) -> WorkerSettings:
    """Settings naming the broker and topics of `worker_env` (to create the topics here)."""
    return WorkerSettings(
        kafka_bootstrap=env["EW_KAFKA_BOOTSTRAP"],
        events_topic=env["EW_EVENTS_TOPIC"],
        dlq_topic=env["EW_DLQ_TOPIC"],
        catalog_topic=env["EW_CATALOG_TOPIC"],
        reprocess_topic=env["EW_REPROCESS_TOPIC"],
        topic_partitions=partitions,
    )


def write_catalog(
    directory: Path, catalog: dict[str, Any] | list[dict[str, Any]], name: str = "catalog.json"
) -> Path:
    """Write `catalog` (one document or several) as JSON to `directory / name`."""
    path = directory / name
    path.write_text(json.dumps(catalog))
    return path


# -- Kafka ---------------------------------------------------------------------


def produce(
    settings: WorkerSettings,
    documents: Iterable[dict[str, Any]],
    extra: Sequence[tuple[bytes | None, bytes]] = (),
    *,
    linger_ms: int = 5,
    flush_timeout_s: float = 30.0,
) -> None:
    """Produce `documents` to the events topic, then the raw (value, key) messages `extra`.

    Documents are keyed by :func:`~worker.stream.producer.event_key`, as the
    ``produce`` command keys them. A full local queue is waited out; every
    message must be delivered.
    """
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": linger_ms})
    tracker = DeliveryTracker()
    keyed = ((orjson.dumps(document), event_key(document).encode()) for document in documents)
    for value, key in chain(keyed, extra):
        produce_or_wait(producer, tracker, settings.events_topic, value=value, key=key)
    assert producer.flush(flush_timeout_s) == 0
    assert tracker.failed == 0 and tracker.delivered == tracker.sent, tracker.errors


def dead_letter_headers(
    settings: WorkerSettings, expected: int, *, rounds: int = 40
) -> list[dict[str, bytes]]:
    """The headers of the dead letters, read from the start of the DLQ topic.

    Reads until `expected` dead letters arrived or `rounds` polls of up to
    0.5 s each passed; headers without a value are left out.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "dlq-reader",
            "enable.auto.commit": False,
        }
    )
    consumer.assign(
        [TopicPartition(settings.dlq_topic, p, 0) for p in range(settings.topic_partitions)]
    )
    letters: list[dict[str, bytes]] = []
    try:
        for _ in range(rounds):
            for message in consumer.consume(100, 0.5):
                if message.error() is None:
                    headers = dict(message.headers() or [])
                    letters.append({k: v for k, v in headers.items() if isinstance(v, bytes)})
            if len(letters) >= expected:
                break
    finally:
        consumer.close()
    return letters


def committed_messages(env: Mapping[str, str], partitions: int = 3) -> int:
    """Messages of the events topic the usage group of `env` has committed, summed."""
    return sum(max(committed, 0) for committed, _ in group_positions(env, partitions).values())


def group_positions(env: Mapping[str, str], partitions: int) -> dict[int, tuple[int, int]]:
    """Per partition of the events topic: the usage group's committed offset (-1:
    none) and the partition's end offset, for a failure's diagnosis (a group that
    stalled has committed < end; a skip would commit the end without the rows)."""
    reader = Consumer(
        {
            "bootstrap.servers": env["EW_KAFKA_BOOTSTRAP"],
            "group.id": env["EW_USAGE_GROUP"],
            "enable.auto.commit": False,
        }
    )
    try:
        topic = env["EW_EVENTS_TOPIC"]
        committed = reader.committed([TopicPartition(topic, p) for p in range(partitions)], 10)
        return {
            tp.partition: (tp.offset, reader.get_watermark_offsets(tp, timeout=10)[1])
            for tp in committed
        }
    finally:
        reader.close()


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 90.0) -> None:
    """Poll `condition` until it holds; the deadline only bounds a failure."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout_s:g}s"
        time.sleep(0.05)


# -- the reference -------------------------------------------------------------


def expected_invoice(
    catalog: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    documents: Iterable[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """The t1/prod invoice lines of `documents` by the independent reference
    (`tests/reference.py`), in the `query line-items --json` form."""
    return reference_invoice(catalog, documents, "t1", record_time=RATED_AT)


def never_priced(catalog: Mapping[str, Any], documents: Iterable[Mapping[str, Any]]) -> set[str]:
    """Ids of event `documents` the reference prices on no line item of `catalog`."""
    return reference_never_priced(catalog, documents, record_time=RATED_AT)


def catalog_without(catalog: dict[str, Any], customer_id: str) -> dict[str, Any]:
    """``catalog`` minus one customer and its subscriptions."""
    reduced = copy.deepcopy(catalog)
    reduced["customers"] = [c for c in reduced["customers"] if c["id"] != customer_id]
    reduced["subscriptions"] = [
        s for s in reduced["subscriptions"] if s["customer_id"] != customer_id
    ]
    return reduced


def stored_totals(settings: WorkerSettings) -> list[dict[str, Any]]:
    """The line item totals of t1/prod in the store of `settings`, as
    `query line-items --json` prints them (comparable with `expected_invoice`)."""
    gateway = open_gateway(settings.store_url)
    try:
        return [total.to_json() for total in line_item_totals(gateway, "t1", "prod")]
    finally:
        gateway.close()


# -- in-process workers ------------------------------------------------------


class FlakyGateway:
    """A real gateway that fails every call while ``down`` is set."""

    def __init__(self, inner: Gateway) -> None:
        self.inner = inner
        self.down = threading.Event()
        self.failures = 0

    def _check(self) -> None:
        if self.down.is_set():
            self.failures += 1
            raise StoreError("simulated outage: ClickHouse unreachable")

    def query(self, sql: str, params: Params | None = None) -> list[Row]:
        self._check()
        return self.inner.query(sql, params)

    def execute(self, sql: str, params: Params | None = None) -> None:
        self._check()
        self.inner.execute(sql, params)

    def insert(
        self, table: str, columns: Mapping[str, Sequence[Any]], *, dedup_token: str | None = None
    ) -> int:
        self._check()
        return self.inner.insert(table, columns, dedup_token=dedup_token)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def make_consumer(
    settings: WorkerSettings,
    gateway: Any,
    index: CatalogIndex,
    idle_s: float,
    *,
    max_events: int = 300,
    dead_letters: Any = None,
) -> UsageConsumer:
    """An in-process usage consumer on `gateway` with short batches and retries
    (`dead_letters`: the DLQ producer, a fresh one when None)."""
    processor = UsageBatchProcessor(gateway, index, limits=DEFAULT_LIMITS)
    return UsageConsumer(
        settings,
        processor,
        dead_letters or DeadLetterProducer(settings),
        batch_policy=BatchPolicy(max_events=max_events, max_wait_s=0.1),
        loop=LoopOptions(retry=RetryPolicy(initial_s=0.1, max_s=0.5), exit_when_idle_s=idle_s),
    )


# -- worker subprocesses -------------------------------------------------------


def start_cli(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """Start `events-worker args...` in the background; stderr is kept for `stderr_tail`."""
    return subprocess.Popen(
        [*CLI, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def run_cli(
    env: dict[str, str], *args: str, check: bool = False
) -> subprocess.CompletedProcess[bytes]:
    """Run `events-worker args...` to its end (at most 120 s), capturing its output."""
    return subprocess.run([*CLI, *args], env=env, capture_output=True, check=check, timeout=120)


def stderr_tail(process: subprocess.Popen[bytes]) -> str:
    """The last 3000 characters a finished `start_cli` process wrote to stderr."""
    return process.stderr.read().decode(errors="replace")[-3000:] if process.stderr else ""


def stored_invoice(env: dict[str, str], store: str) -> list[dict[str, Any]]:
    """The t1/prod line items of `store`, read with `events-worker query line-items --json`."""
    result = run_cli(
        env,
        *("query", "line-items", "--tenant", "t1", "--environment", "prod"),
        *("--store", store, "--json"),
        check=True,
    )
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def query_store(store: str, sql: str) -> list[list[Any]]:
    """Rows of `sql` on `store`, read by a child process (chdb: one process per
    directory, so the test process never opens a worker's directory itself)."""
    code = (
        "import json, sys\n"
        "from worker.store.connect import open_gateway\n"
        "gateway = open_gateway(sys.argv[1])\n"
        "print(json.dumps([list(row) for row in gateway.query(sys.argv[2])], default=str))\n"
        "gateway.close()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, store, sql], capture_output=True, check=True, timeout=120
    )
    rows: list[list[Any]] = json.loads(result.stdout)
    return rows
