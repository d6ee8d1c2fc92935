"""Fakes of the usage pipeline's stages for the in-memory runtime tests.

The stages are not under test here (tests/integration runs them on real
brokers and engines); these record what the runtime made them do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from worker.ops.settings import WorkerSettings
from worker.store.errors import StoreError
from worker.stream.consumer_support import RetryPolicy
from worker.stream.dlq import DeadLetterError, SourcePosition
from worker.stream.memory_consumer import MemoryBroker
from worker.stream.runtime import BatchPolicy, LoopOptions
from worker.stream.usage_batch import DeadLetter, PreparedBatch, SourceMessage
from worker.stream.usage_consumer import UsageConsumer

TOPIC = "events"
BAD = b"not json"


class FakeProcessor:
    """Records prepared, written and committed batches as (topic, partition, offset) lists."""

    def __init__(self) -> None:
        self.owned: set[tuple[str, int]] = set()
        self.written: list[list[tuple[str, int, int]]] = []
        self.committed_batches: list[list[tuple[str, int, int]]] = []
        self.write_failures = 0
        self.on_write: Callable[[int], None] | None = None
        self.revoked: list[set[tuple[str, int]]] = []
        self._batches: dict[int, list[tuple[str, int, int]]] = {}
        self._writes = 0

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        self.owned |= set(partitions)

    def revoke(self, partitions: Iterable[tuple[str, int]]) -> None:
        keys = set(partitions)
        self.revoked.append(keys)
        self.owned -= keys

    def replace_index(self, index: object) -> None:
        raise AssertionError("no catalog updates in these tests")

    def prepare(self, messages: Sequence[SourceMessage]) -> PreparedBatch:
        batch = PreparedBatch(messages=len(messages))
        for m in messages:
            batch.first_offsets.setdefault((m.topic, m.partition), m.offset)
            batch.next_offsets[(m.topic, m.partition)] = m.offset + 1
            if m.value == BAD:
                batch.dead_letters.append(DeadLetter(m, "invalid_json", "not JSON"))
        self._batches[id(batch)] = [(m.topic, m.partition, m.offset) for m in messages]
        return batch

    def write(self, batch: PreparedBatch) -> None:
        self._writes += 1
        if self.on_write is not None:
            self.on_write(self._writes)
        if self.write_failures:
            self.write_failures -= 1
            raise StoreError("ClickHouse down (test)")
        self.written.append(self._batches[id(batch)])

    def committed(self, batch: PreparedBatch) -> None:
        self.committed_batches.append(self._batches.pop(id(batch)))


class FakeDeadLetters:
    """Acknowledges dead letters unless told to fail; keeps the acknowledged ones."""

    def __init__(self) -> None:
        self.pending: list[SourcePosition] = []
        self.acked: list[SourcePosition] = []
        self.failures = 0
        self.closed = False

    def send(
        self,
        value: bytes | None,
        *,
        key: bytes | None,
        reason: str,
        error: str,
        source: SourcePosition,
    ) -> None:
        self.pending.append(source)

    def flush_and_check(self, timeout_s: float) -> int:
        if self.failures:
            self.failures -= 1
            raise DeadLetterError("DLQ down (test)")
        acked, self.pending = self.pending, []
        self.acked.extend(acked)
        return len(acked)

    def reset_after_failure(self) -> None:
        self.pending = []

    def close(self) -> None:
        self.closed = True


def settings(**overrides: object) -> WorkerSettings:
    return WorkerSettings(kafka_session_timeout_ms=6000, events_topic=TOPIC, **overrides)  # type: ignore[arg-type]


def usage_consumer(
    broker: MemoryBroker,
    processor: FakeProcessor,
    dlq: FakeDeadLetters | None = None,
    *,
    idle_s: float | None = 1.0,
    max_events: int = 4,
    **overrides: object,
) -> UsageConsumer:
    return UsageConsumer(
        settings(**overrides),
        processor,  # type: ignore[arg-type]
        dlq or FakeDeadLetters(),  # type: ignore[arg-type]
        batch_policy=BatchPolicy(max_events=max_events, max_wait_s=0.1),
        loop=LoopOptions(
            retry=RetryPolicy(initial_s=0.2, max_s=1.0),
            exit_when_idle_s=idle_s,
            clock=broker.clock,
            consumer_factory=broker.consumer,
        ),
    )


def fill(broker: MemoryBroker, partitions: int, per_partition: int) -> None:
    broker.create_topic(TOPIC, partitions)
    for partition in range(partitions):
        for n in range(per_partition):
            broker.produce(TOPIC, partition, f'{{"n":{n}}}'.encode())
