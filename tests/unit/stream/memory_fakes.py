"""Fakes of the usage pipeline's stages for the in-memory runtime tests.

The stages are not under test here (tests/integration runs them on real
brokers and engines); these record what the runtime made them do.

A batch's write runs on a helper thread (write-behind, ADR 0002). A test
holds writes back with ``FakeProcessor.release.clear()`` and lets them go
from the polling thread (``MemoryBroker.on_consume``) with
``release.set()``, or with :meth:`FakeProcessor.finish_writes`, which also
waits until the helper has returned: then the loop sees the write finished
at an exact point, without sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

from worker.domain.catalog_index import CatalogIndex
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
_HELD_WRITE_TIMEOUT_S = 10.0  # a test that never releases a held write fails, never hangs


class FakeProcessor:
    """Records prepared, written and committed batches as (topic, partition, offset) lists."""

    def __init__(self) -> None:
        self.owned: set[tuple[str, int]] = set()
        self.written: list[list[tuple[str, int, int]]] = []
        self.committed_batches: list[list[tuple[str, int, int]]] = []
        self.write_failures = 0
        self.on_write: Callable[[int], None] | None = None
        self.revoked: list[set[tuple[str, int]]] = []
        self.prepared: list[PreparedBatch] = []
        """Every batch prepared, in order (the write attempts refer to them)."""
        self.attempts: list[tuple[int, str]] = []
        """Per write attempt: the index of its batch in ``prepared``, and the
        thread it ran on (``"helper"`` or ``"loop"``)."""
        self.routed: list[tuple[int, bool]] = []
        """Per ``route`` call: batches prepared before it, and whether a write was in flight."""
        self.release = threading.Event()
        self.release.set()
        """Cleared: every write waits until it is set again."""
        self._loop_thread = threading.current_thread()
        self._writers: list[threading.Thread] = []
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

    def route(self, messages: Sequence[SourceMessage]) -> None:
        self.routed.append((len(self.prepared), self.writing))

    def prefetch(self, messages: Sequence[SourceMessage]) -> None:
        pass

    def prepare(self, messages: Sequence[SourceMessage]) -> PreparedBatch:
        batch = PreparedBatch(messages=len(messages))
        for m in messages:
            batch.first_offsets.setdefault((m.topic, m.partition), m.offset)
            batch.next_offsets[(m.topic, m.partition)] = m.offset + 1
            if m.value == BAD:
                batch.dead_letters.append(DeadLetter(m, "invalid_json", "not JSON"))
        self._batches[id(batch)] = [(m.topic, m.partition, m.offset) for m in messages]
        self.prepared.append(batch)
        return batch

    def write(self, batch: PreparedBatch) -> None:
        thread = threading.current_thread()
        helper = thread is not self._loop_thread
        if helper:
            self._writers.append(thread)
        self.attempts.append(
            (
                next(i for i, b in enumerate(self.prepared) if b is batch),
                "helper" if helper else "loop",
            )
        )
        if not self.release.wait(_HELD_WRITE_TIMEOUT_S):
            raise AssertionError("a held write was never released")
        self._writes += 1
        if self.on_write is not None:
            self.on_write(self._writes)
        if self.write_failures:
            self.write_failures -= 1
            raise StoreError("ClickHouse down (test)")
        self.written.append(self._batches[id(batch)])

    def committed(self, batch: PreparedBatch) -> None:
        self.committed_batches.append(self._batches.pop(id(batch)))

    def finish_writes(self) -> None:
        """Release held writes and wait until every helper thread's write has returned."""
        self.release.set()
        for writer in self._writers:
            writer.join()

    @property
    def writing(self) -> bool:
        """A helper thread's write has started and not returned."""
        return any(writer.is_alive() for writer in self._writers)


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
    catalog_updates: Callable[[], CatalogIndex | None] | None = None,
    **overrides: object,
) -> UsageConsumer:
    return UsageConsumer(
        settings(**overrides),
        processor,  # type: ignore[arg-type]
        dlq or FakeDeadLetters(),  # type: ignore[arg-type]
        batch_policy=BatchPolicy(max_events=max_events, max_wait_s=0.1),
        catalog_updates=catalog_updates,
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
