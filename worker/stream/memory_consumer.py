"""An in-memory broker, its group consumer and a driven clock, for fast tests.

In the manner of arroyo's ``LocalBroker`` + ``MockedClock``: a
:class:`ConsumerRuntime <worker.stream.runtime.ConsumerRuntime>` built with
``LoopOptions(consumer_factory=broker.consumer, clock=broker.clock)`` runs its real
loop (collect, retry while polling, rebalance callbacks, commit) in
milliseconds. It implements only what the runtime calls of
``confluent_kafka.Consumer``, with the same contracts:

* rebalance callbacks run inside :meth:`MemoryConsumer.consume` (never
  elsewhere), as librdkafka serves them; the broker assigns every partition
  of the subscribed topic but the :attr:`MemoryBroker.withheld` ones to the
  first member, and a test moves partitions with :meth:`MemoryBroker.revoke`
  / :meth:`MemoryBroker.lose` / :meth:`MemoryBroker.assign`, delivered at that
  member's next ``consume``; under the ``eager`` protocol a revoke or loss
  takes every partition and assigns back the ones that stay, as a real eager
  rebalance does;
* a partition's fetch position starts at its committed offset (0 when none)
  and only advances by fetching; paused partitions deliver nothing;
* ``consume`` that finds nothing advances the clock by its timeout (time
  passes only while the worker waits), so idle exits and backoffs are exact;
* :attr:`MemoryBroker.failing_commits` makes that many commits raise
  ``KafkaException`` (a broker outage seen by the commit);
* :attr:`MemoryBroker.on_consume` is called at the start of every
  ``consume`` on the polling thread, before pending rebalances are served: a
  test's script runs there (move partitions, release a blocked write) at an
  exact point of the loop, without sleeps.

The broker is not thread-safe: only the thread that polls may touch it (a
write running behind the collect must not).

Never used in production and never instead of the real-broker tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

PartitionKey = tuple[str, int]
Callback = Callable[[Any, list[TopicPartition]], None]


class DrivenClock:
    """A monotonic clock that moves only when told (``advance``)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


@dataclass(frozen=True, slots=True)
class MemoryMessage:
    """A stored message with the accessors of ``confluent_kafka.Message``."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = None
    _timestamp_ms: int = 0

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp_ms)  # TIMESTAMP_CREATE_TIME

    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def error(self) -> KafkaError | None:
        return None


@dataclass(slots=True)
class _Change:
    kind: str  # "assign" | "revoke" | "lost"
    partitions: list[PartitionKey]


@dataclass(slots=True)
class _Member:
    consumer: MemoryConsumer
    pending: list[_Change] = field(default_factory=list)


class MemoryBroker:
    """Topics, committed offsets and group membership, in memory. One thread."""

    def __init__(self, clock: DrivenClock | None = None) -> None:
        self.clock = clock if clock is not None else DrivenClock()
        self.logs: dict[PartitionKey, list[MemoryMessage]] = {}
        self.committed: dict[tuple[str, str, int], int] = {}
        """(group, topic, partition) -> next offset to read."""
        self.commits: list[dict[PartitionKey, int]] = []
        """Every successful commit request, in order (group aside)."""
        self.failing_commits = 0
        self.withheld: set[PartitionKey] = set()
        """Partitions not given to the first member (held elsewhere until assigned)."""
        self.members: list[_Member] = []
        self.on_consume: Callable[[MemoryConsumer], None] | None = None
        """Called at the start of every ``consume`` (a test's script; see the module)."""

    def create_topic(self, topic: str, partitions: int) -> None:
        for partition in range(partitions):
            self.logs.setdefault((topic, partition), [])

    def produce(
        self, topic: str, partition: int, value: bytes | None, key: bytes | None = None
    ) -> int:
        """Append one message; returns its offset."""
        log = self.logs[(topic, partition)]
        log.append(MemoryMessage(topic, partition, len(log), value, key, int(self.clock() * 1000)))
        return len(log) - 1

    def consumer(self, config: dict[str, Any]) -> MemoryConsumer:
        """A ``consumer_factory``: a new member of ``config["group.id"]``."""
        eager = config.get("group.protocol") == "classic" and (
            config.get("partition.assignment.strategy") != "cooperative-sticky"
        )
        member = _Member(MemoryConsumer(self, str(config["group.id"]), eager=eager))
        self.members.append(member)
        return member.consumer

    def committed_offset(self, group: str, topic: str, partition: int) -> int | None:
        return self.committed.get((group, topic, partition))

    # -- moving partitions (delivered at the member's next consume) -----------------

    def assign(self, consumer: MemoryConsumer, partitions: Iterable[PartitionKey]) -> None:
        self._member(consumer).pending.append(_Change("assign", sorted(partitions)))

    def revoke(self, consumer: MemoryConsumer, partitions: Iterable[PartitionKey]) -> None:
        self._member(consumer).pending.append(_Change("revoke", sorted(partitions)))

    def lose(self, consumer: MemoryConsumer, partitions: Iterable[PartitionKey]) -> None:
        self._member(consumer).pending.append(_Change("lost", sorted(partitions)))

    def _member(self, consumer: MemoryConsumer) -> _Member:
        return next(m for m in self.members if m.consumer is consumer)

    def _subscribed(self, consumer: MemoryConsumer, topics: list[str]) -> None:
        """The first member of a group gets every partition of ``topics``."""
        others = [
            m
            for m in self.members
            if m.consumer is not consumer and m.consumer.group == consumer.group
        ]
        if not others:
            keys = [k for k in sorted(self.logs) if k[0] in topics and k not in self.withheld]
            self._member(consumer).pending.append(_Change("assign", keys))

    def _take_changes(self, consumer: MemoryConsumer) -> list[_Change]:
        member = self._member(consumer)
        changes, member.pending = member.pending, []
        return changes


class MemoryConsumer:
    """What the runtime uses of ``confluent_kafka.Consumer``, on a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker, group: str, *, eager: bool = False) -> None:
        self._broker = broker
        self.group = group
        self.eager = eager
        self.assignment: set[PartitionKey] = set()
        self.positions: dict[PartitionKey, int] = {}
        self.paused: set[PartitionKey] = set()
        self.closed = False
        self._callbacks: dict[str, Callback] = {}

    def subscribe(
        self,
        topics: list[str],
        *,
        on_assign: Callback,
        on_revoke: Callback,
        on_lost: Callback,
    ) -> None:
        self._callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}
        self._broker._subscribed(self, topics)

    def consume(self, num_messages: int, timeout: float) -> list[MemoryMessage]:
        """Serve pending rebalances (callbacks), then fetch; an empty fetch waits ``timeout``."""
        if self._broker.on_consume is not None:
            self._broker.on_consume(self)
        for change in self._broker._take_changes(self):
            self._rebalance(change)
        fetched: list[MemoryMessage] = []
        for key in sorted(self.assignment - self.paused):
            log = self._broker.logs[key]
            position = self.positions[key]
            taken = log[position : position + num_messages - len(fetched)]
            fetched.extend(taken)
            self.positions[key] = position + len(taken)
            if len(fetched) >= num_messages:
                break
        if not fetched:
            self._broker.clock.advance(timeout)
        return fetched

    def _rebalance(self, change: _Change) -> None:
        keys = change.partitions
        if self.eager:  # everything goes, then the whole new assignment comes
            if change.kind == "assign":
                after, kind = self.assignment | set(keys), "revoke"
            else:
                after, kind = self.assignment - set(keys), change.kind
            if self.assignment:
                self._callbacks[kind](self, _partitions(self.assignment))
            self._callbacks["assign"](self, _partitions(after))
            return
        self._callbacks[change.kind](self, _partitions(keys))

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assignment = set()
        self.incremental_assign(partitions)

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self.assignment.add(key)
            committed = self._broker.committed_offset(self.group, *key)
            self.positions[key] = committed if committed is not None else 0

    def unassign(self) -> None:
        self.assignment = set()

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        self.assignment -= {(tp.topic, tp.partition) for tp in partitions}

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def commit(
        self, *, offsets: list[TopicPartition], asynchronous: bool = True
    ) -> list[TopicPartition]:
        if self._broker.failing_commits:
            self._broker.failing_commits -= 1
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "commit failed (test)"))
        request: dict[PartitionKey, int] = {}
        for tp in offsets:
            self._broker.committed[(self.group, tp.topic, tp.partition)] = tp.offset
            request[(tp.topic, tp.partition)] = tp.offset
        self._broker.commits.append(request)
        return offsets

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.positions.get((tp.topic, tp.partition), -1))
            for tp in partitions
        ]

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = 0.0, cached: bool = False
    ) -> tuple[int, int]:
        return 0, len(self._broker.logs[(partition.topic, partition.partition)])

    def close(self) -> None:
        self.closed = True


def _partitions(keys: Iterable[PartitionKey]) -> list[TopicPartition]:
    return [TopicPartition(topic, partition) for topic, partition in sorted(keys)]
