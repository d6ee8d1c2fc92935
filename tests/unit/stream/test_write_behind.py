"""Write-behind (ADR 0002) on the in-memory broker: a batch's write runs on a helper
thread while the next batch is collected.

Each test holds the first write back (``FakeProcessor.release``) and scripts the
broker from the polling thread (``MemoryBroker.on_consume``): revoke, loss, stop
and idle exit with a write in flight, the commit not waiting for the next cut,
and a failed write retried with the same PreparedBatch. The same protocol runs
on real brokers and ClickHouse in tests/integration/pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from tests.unit.stream.memory_fakes import (
    TOPIC,
    FakeProcessor,
    fill,
    settings,
    usage_consumer,
)
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.stream.memory_consumer import MemoryBroker, MemoryConsumer
from worker.stream.usage_batch import PreparedBatch, SourceMessage

GROUP = settings().usage_group
P0, P1 = (TOPIC, 0), (TOPIC, 1)


def offsets(partition: int, *numbers: int) -> list[tuple[str, int, int]]:
    return [(TOPIC, partition, n) for n in numbers]


def once_the_first_write_started(
    broker: MemoryBroker, processor: FakeProcessor, script: Callable[[MemoryConsumer], None]
) -> list[int]:
    """Run ``script`` at the first consume after the first write started (still
    held); returns the list it appends ``len(processor.written)`` to then."""
    seen: list[int] = []

    def on_consume(member: MemoryConsumer) -> None:
        if processor.attempts and not seen:
            seen.append(len(processor.written))
            script(member)

    broker.on_consume = on_consume
    return seen


@pytest.mark.parametrize("protocol", ["eager", "cooperative-sticky", "consumer"])
def test_a_revoke_while_the_write_is_in_flight_finishes_the_batch_in_the_callback(
    protocol: str,
) -> None:
    broker = MemoryBroker()
    fill(broker, partitions=2, per_partition=2)
    processor = FakeProcessor()
    processor.release.clear()

    def revoke_partition_1(member: MemoryConsumer) -> None:
        for partition in (0, 1):
            broker.produce(TOPIC, partition, b'{"n":2}')
        broker.revoke(member, [P1])  # served in this consume, before its fetch
        processor.release.set()  # the callback joins the write

    seen = once_the_first_write_started(broker, processor, revoke_partition_1)
    consumer = usage_consumer(broker, processor, kafka_group_protocol=protocol)

    consumer.run()

    assert seen == [0]  # the write was in flight when the revoke came
    # the durable batch was committed inside on_revoke, the revoked partition
    # too (still ours there): its next owner starts after it, nothing abandoned
    assert broker.commits[0] == {P0: 2, P1: 2}
    assert consumer.stats.abandoned == 0
    assert processor.written == [offsets(0, 0, 1) + offsets(1, 0, 1), offsets(0, 2)]
    assert processor.committed_batches == processor.written
    assert broker.committed_offset(GROUP, TOPIC, 0) == 3
    assert broker.committed_offset(GROUP, TOPIC, 1) == 2


def test_a_partition_lost_while_the_write_is_in_flight_is_redelivered_not_committed() -> None:
    broker = MemoryBroker()
    fill(broker, partitions=2, per_partition=2)
    processor = FakeProcessor()
    processor.release.clear()

    def lose_then_regain_partition_1(member: MemoryConsumer) -> None:
        broker.lose(member, [P1])
        broker.assign(member, [P1])  # as its next owner would get it
        processor.release.set()

    seen = once_the_first_write_started(broker, processor, lose_then_regain_partition_1)
    consumer = usage_consumer(broker, processor, kafka_group_protocol="cooperative-sticky")

    consumer.run()

    assert seen == [0]
    # a lost partition cannot be committed: only the one still owned was
    assert broker.commits[0] == {P0: 2}
    assert consumer.stats.abandoned == 0
    # its durable messages come again (the store's dedup check skips their rows)
    assert processor.written == [offsets(0, 0, 1) + offsets(1, 0, 1), offsets(1, 0, 1)]
    assert broker.committed_offset(GROUP, TOPIC, 1) == 2
    assert processor.revoked == [{P1}]  # only the lost partition's state went


def test_under_eager_a_loss_takes_every_partition_nothing_of_the_batch_is_committed() -> None:
    broker = MemoryBroker()
    fill(broker, partitions=2, per_partition=2)
    processor = FakeProcessor()
    processor.release.clear()

    def lose_partition_1(member: MemoryConsumer) -> None:
        broker.lose(member, [P1])  # eager: every partition is lost, P0 comes back
        processor.release.set()

    once_the_first_write_started(broker, processor, lose_partition_1)
    consumer = usage_consumer(broker, processor, kafka_group_protocol="eager")

    consumer.run()

    assert consumer.stats.abandoned == 0  # durable: finished, with nothing to commit
    assert processor.written == [offsets(0, 0, 1) + offsets(1, 0, 1), offsets(0, 0, 1)]
    assert broker.commits == [{P0: 2}]  # only the redelivered batch's commit
    assert broker.committed_offset(GROUP, TOPIC, 1) is None


@pytest.mark.parametrize("failure", ["write", "commit"])
def test_a_revoke_after_the_write_or_commit_failed_abandons_it_its_messages_lead(
    failure: str,
) -> None:
    broker = MemoryBroker()
    fill(broker, partitions=2, per_partition=2)
    processor = FakeProcessor()
    processor.release.clear()
    if failure == "write":
        processor.write_failures = 1  # the helper's attempt fails
    else:
        broker.failing_commits = 1  # the commit inside on_revoke fails
    consumes_after_start: list[MemoryConsumer] = []

    def script(member: MemoryConsumer) -> None:
        if not processor.attempts:
            return
        consumes_after_start.append(member)
        if len(consumes_after_start) == 1:  # the next batch starts: one message each
            for partition in (0, 1):
                broker.produce(TOPIC, partition, b'{"n":2}')
        elif len(consumes_after_start) == 2:  # it holds them, not cut yet: revoke
            broker.revoke(member, [P1])
            processor.release.set()

    broker.on_consume = script
    consumer = usage_consumer(broker, processor, kafka_group_protocol="cooperative-sticky")

    consumer.run()

    assert consumer.stats.abandoned == 1
    # the abandoned batch's messages still owned, then those the next batch had
    # collected: in offset order, in one batch; nothing of the revoked partition
    assert processor.written[-1] == offsets(0, 0, 1, 2)
    assert broker.committed_offset(GROUP, TOPIC, 0) == 3
    assert broker.committed_offset(GROUP, TOPIC, 1) is None  # its next owner reads it all
    assert all(P1 not in commit for commit in broker.commits)
    # abandon: every rating state went (then the revoked partition's, from the runtime)
    assert processor.revoked[0] == {P0, P1}


def test_a_stop_with_the_write_in_flight_commits_it_before_run_returns() -> None:
    broker = MemoryBroker()
    fill(broker, partitions=1, per_partition=4)
    processor = FakeProcessor()
    processor.release.clear()
    consumer = usage_consumer(broker, processor, idle_s=None)

    def stop(member: MemoryConsumer) -> None:
        consumer.stop()
        processor.release.set()

    seen = once_the_first_write_started(broker, processor, stop)

    consumer.run()

    assert seen == [0]
    assert processor.committed_batches == processor.written == [offsets(0, 0, 1, 2, 3)]
    assert broker.committed_offset(GROUP, TOPIC, 0) == 4


def test_the_idle_exit_waits_for_the_write_in_flight_and_counts_from_its_commit() -> None:
    broker = MemoryBroker()
    fill(broker, partitions=1, per_partition=2)
    processor = FakeProcessor()
    processor.release.clear()
    empty_polls: list[float] = []

    def release_late(member: MemoryConsumer) -> None:
        if processor.attempts:
            empty_polls.append(broker.clock())
            if len(empty_polls) == 9:  # late in the empty collect that follows
                processor.release.set()

    broker.on_consume = release_late
    consumer = usage_consumer(broker, processor, idle_s=1.0)

    consumer.run()

    assert processor.committed_batches == processor.written == [offsets(0, 0, 1)]
    assert broker.committed_offset(GROUP, TOPIC, 0) == 2
    commit_at = consumer.stats.last_commit_at
    assert commit_at is not None and commit_at >= empty_polls[8]
    assert broker.clock() - commit_at >= 1.0  # a whole idle second after the commit


def test_the_batch_is_committed_between_polls_before_the_next_batch_is_cut() -> None:
    broker = MemoryBroker()
    fill(broker, partitions=1, per_partition=6)  # a full batch of 4, then 2
    processor = FakeProcessor()
    processor.release.clear()
    observed: list[tuple[int, int | None]] = []

    def script(member: MemoryConsumer) -> None:
        if not processor.attempts:
            return
        # (batches prepared, committed offset) as each poll of the next collect starts
        observed.append((len(processor.prepared), broker.committed_offset(GROUP, TOPIC, 0)))
        if len(observed) == 2:  # the next batch holds offsets 4-5 and waits for its cut
            processor.finish_writes()

    broker.on_consume = script
    consumer = usage_consumer(broker, processor)

    consumer.run()

    # the first poll of the next collect: the write in flight, nothing committed;
    # after the write finished, the next poll of the same collect (the second
    # batch not yet cut, so not prepared) finds the first batch committed
    assert observed[:3] == [(1, None), (1, None), (1, 4)]
    assert processor.written == [offsets(0, 0, 1, 2, 3), offsets(0, 4, 5)]
    assert broker.committed_offset(GROUP, TOPIC, 0) == 6


def test_a_failed_write_is_retried_on_the_loop_with_the_same_prepared_batch() -> None:
    broker = MemoryBroker()
    fill(broker, partitions=1, per_partition=3)
    processor = FakeProcessor()
    processor.write_failures = 2
    consumer = usage_consumer(broker, processor)

    consumer.run()

    assert len(processor.prepared) == 1  # never prepared again
    assert processor.attempts == [(0, "helper"), (0, "loop"), (0, "loop")]
    assert consumer.stats.retries == 2
    assert processor.written == [offsets(0, 0, 1, 2)]
    assert broker.commits == [{P0: 3}]


def test_a_catalog_change_finishes_the_batch_in_flight_before_it_is_applied() -> None:
    broker = MemoryBroker()
    fill(broker, partitions=1, per_partition=4)
    committed_when_replaced: list[int] = []

    class CatalogAwareProcessor(FakeProcessor):
        def replace_index(self, index: object) -> None:
            committed_when_replaced.append(len(self.committed_batches))

    processor = CatalogAwareProcessor()
    updates = iter([None, CatalogIndex(parse_documents([]))])
    consumer = usage_consumer(broker, processor, catalog_updates=lambda: next(updates, None))

    consumer.run()

    # the first batch was rated with the old catalog: committed before the new one
    assert committed_when_replaced == [1]
    assert processor.written == [offsets(0, 0, 1, 2, 3)]


def test_the_next_batch_is_routed_while_the_write_runs_and_rated_after_the_commit() -> None:
    broker = MemoryBroker()
    fill(broker, partitions=1, per_partition=8)  # two full batches of 4
    committed_when: list[tuple[str, int | None]] = []

    class Recording(FakeProcessor):
        def route(self, messages: Sequence[SourceMessage]) -> None:
            super().route(messages)
            committed_when.append(("route", broker.committed_offset(GROUP, TOPIC, 0)))
            if len(self.routed) == 2:  # the first write is held until the second is routed
                self.release.set()

        def prepare(self, messages: Sequence[SourceMessage]) -> PreparedBatch:
            committed_when.append(("prepare", broker.committed_offset(GROUP, TOPIC, 0)))
            return super().prepare(messages)

    processor = Recording()
    processor.release.clear()
    consumer = usage_consumer(broker, processor)

    consumer.run()

    # (batches prepared before, a write in flight): the second batch was routed
    # while the first batch's write was still running
    assert processor.routed == [(0, False), (1, True)]
    # ... and rated only once the first batch was committed
    assert committed_when == [("route", None), ("prepare", None), ("route", None), ("prepare", 4)]
    assert processor.written == [offsets(0, 0, 1, 2, 3), offsets(0, 4, 5, 6, 7)]
