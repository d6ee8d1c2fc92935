"""The consumer runtime under the usage and reprocess pipelines, on the in-memory broker.

Rebalance (revoke mid-batch, loss, assign), outage with retry while polling,
abandon, idle exit and SIGTERM, with a driven clock: the whole module runs in
well under a second. The same behaviour is tested on real brokers in
tests/integration/pipeline (never instead of them).
"""

from __future__ import annotations

import logging
import os
import signal

import pytest

from tests.unit.stream.memory_fakes import (
    BAD,
    TOPIC,
    FakeDeadLetters,
    FakeProcessor,
    fill,
    settings,
    usage_consumer,
)
from worker.stream.consumer_support import NeverAssignedError, RetryPolicy
from worker.stream.memory_consumer import MemoryBroker, MemoryConsumer
from worker.stream.reprocess_consumer import ReprocessConsumer
from worker.stream.runtime import LoopOptions

GROUP = "events-worker-usage"


def every_offset(processor: FakeProcessor) -> list[tuple[str, int, int]]:
    return sorted(m for batch in processor.written for m in batch)


def test_batches_are_written_then_committed_and_the_idle_exit_ends_the_run() -> None:
    broker = MemoryBroker()
    fill(broker, partitions=2, per_partition=5)
    processor = FakeProcessor()
    consumer = usage_consumer(broker, processor)
    started = broker.clock()

    consumer.run()

    group = settings().usage_group
    assert every_offset(processor) == [(TOPIC, p, o) for p in (0, 1) for o in range(5)]
    assert processor.committed_batches == processor.written  # committed = written, in order
    assert [len(batch) for batch in processor.written] == [4, 4, 2]
    assert broker.committed_offset(group, TOPIC, 0) == 5
    assert broker.committed_offset(group, TOPIC, 1) == 5
    assert (consumer.stats.batches, consumer.stats.messages) == (3, 10)
    assert broker.clock() - started >= 1.0  # left only after a whole idle second
    assert broker.members[0].consumer.closed


def test_idle_exit_without_ever_owning_a_partition_raises_never_assigned() -> None:
    broker = MemoryBroker()
    fill(broker, partitions=1, per_partition=0)
    broker.consumer({"group.id": settings().usage_group})  # another member holds everything
    consumer = usage_consumer(broker, FakeProcessor())
    started = broker.clock()

    with pytest.raises(NeverAssignedError, match="never received a partition of events"):
        consumer.run()
    # owning nothing, a join may be under way: idle + three session timeouts
    assert broker.clock() - started >= 1.0 + 3 * 6.0


def test_an_outage_pauses_keeps_polling_retries_and_commits_nothing_meanwhile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = MemoryBroker()
    fill(broker, partitions=2, per_partition=2)
    processor = FakeProcessor()
    processor.write_failures = 3
    seen: list[tuple[set[tuple[str, int]], int]] = []
    processor.on_write = lambda attempt: seen.append(
        (set(broker.members[0].consumer.paused), len(broker.commits))
    )
    consumer = usage_consumer(broker, processor)

    with caplog.at_level(logging.DEBUG, logger="worker.stream.runtime"):
        consumer.run()

    assert consumer.stats.retries == 3
    # first attempt before any pause; the retries with every owned partition paused
    assert seen[0] == (set(), 0)
    assert all(paused == {(TOPIC, 0), (TOPIC, 1)} for paused, _ in seen[1:4])
    assert [commits for _, commits in seen[:4]] == [0, 0, 0, 0]  # nothing committed while down
    assert broker.members[0].consumer.paused == set()  # resumed after the retry
    assert every_offset(processor) == [(TOPIC, p, o) for p in (0, 1) for o in range(2)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w.split(";")[0] for w in warnings] == [
        "consumption paused, nothing committed",
        "resumed after 3 failed attempts in 1.4s",  # 0.2 + 0.4 + 0.8 of the driven clock
    ]


def test_a_revoke_during_a_retry_abandons_the_batch_and_keeps_the_owned_messages() -> None:
    broker = MemoryBroker()
    fill(broker, partitions=2, per_partition=2)
    processor = FakeProcessor()
    processor.write_failures = 1
    revoked: list[bool] = []

    def revoke_partition_1(member: MemoryConsumer) -> None:
        if member.paused and not revoked:  # served by the retry's polling
            broker.revoke(member, [(TOPIC, 1)])
            revoked.append(True)

    broker.on_consume = revoke_partition_1
    consumer = usage_consumer(broker, processor, kafka_group_protocol="cooperative-sticky")

    consumer.run()

    group = settings().usage_group
    assert consumer.stats.abandoned == 1
    assert processor.written == [[(TOPIC, 0, 0), (TOPIC, 0, 1)]]  # kept ones, retried here
    assert broker.committed_offset(group, TOPIC, 0) == 2
    assert broker.committed_offset(group, TOPIC, 1) is None  # the next owner reads them
    assert all((TOPIC, 1) not in commit for commit in broker.commits)
    # the revoked partition's state, then (abandon) every remaining state, reloaded later
    assert processor.revoked == [{(TOPIC, 1)}, {(TOPIC, 0)}]
    assert processor.owned == {(TOPIC, 0)}


@pytest.mark.parametrize("protocol", ["eager", "cooperative-sticky", "consumer"])
def test_a_partition_lost_during_a_retry_is_redelivered_from_its_committed_offset(
    protocol: str,
) -> None:
    broker = MemoryBroker()
    fill(broker, partitions=2, per_partition=3)
    processor = FakeProcessor()
    processor.write_failures = 1
    lost: list[bool] = []

    def lose_then_regain(member: MemoryConsumer) -> None:
        if member.paused and not lost:  # served by the retry's polling
            broker.lose(member, [(TOPIC, 1)])
            broker.assign(member, [(TOPIC, 1)])
            lost.append(True)

    broker.on_consume = lose_then_regain
    consumer = usage_consumer(broker, processor, kafka_group_protocol=protocol)

    consumer.run()

    group = settings().usage_group
    assert consumer.stats.abandoned == 1
    # the first batch held p0 0-2 and p1 0; p1's position was past 0 when it
    # was lost: each message is written exactly once all the same
    assert every_offset(processor) == [(TOPIC, p, o) for p in (0, 1) for o in range(3)]
    assert broker.committed_offset(group, TOPIC, 0) == 3
    assert broker.committed_offset(group, TOPIC, 1) == 3
    assert broker.members[0].consumer.assignment == {(TOPIC, 0), (TOPIC, 1)}


def test_a_partition_assigned_mid_run_is_read_from_its_committed_offset() -> None:
    broker = MemoryBroker()
    fill(broker, partitions=3, per_partition=2)
    group = settings().usage_group
    broker.withheld = {(TOPIC, 2)}
    broker.committed[(group, TOPIC, 2)] = 1  # its earlier owner committed the first message
    processor = FakeProcessor()

    def take_partition_2(member: MemoryConsumer) -> None:
        if processor.attempts and (TOPIC, 2) in broker.withheld:  # once a write started
            broker.withheld.clear()
            broker.assign(member, [(TOPIC, 2)])

    broker.on_consume = take_partition_2
    consumer = usage_consumer(broker, processor, kafka_group_protocol="cooperative-sticky")

    consumer.run()

    assert processor.written[0] == [(TOPIC, p, o) for p in (0, 1) for o in range(2)]
    assert processor.written[1:] == [[(TOPIC, 2, 1)]]
    assert broker.committed_offset(group, TOPIC, 2) == 2
    assert consumer.stats.rebalances == 2


def test_sigterm_finishes_and_commits_the_batch_in_flight_then_stops() -> None:
    broker = MemoryBroker()
    fill(broker, partitions=1, per_partition=10)
    processor = FakeProcessor()
    processor.release.clear()  # the first batch's write is in flight when the signal comes
    signalled: list[int] = []

    def sigterm_while_writing(member: MemoryConsumer) -> None:
        if processor.attempts and not signalled:
            signalled.append(len(processor.written))
            os.kill(os.getpid(), signal.SIGTERM)  # handled on this (the main) thread
            processor.release.set()

    broker.on_consume = sigterm_while_writing
    consumer = usage_consumer(broker, processor, idle_s=None)
    previous = signal.getsignal(signal.SIGTERM)

    consumer.run()  # returns (the CLI then exits 0)

    assert signalled == [0]  # nothing was durable yet
    # the batch in flight, then the one collected meanwhile (cut by the stop),
    # both committed before run() returned; nothing more was read
    assert processor.written == [
        [(TOPIC, 0, o) for o in range(4)],
        [(TOPIC, 0, o) for o in range(4, 8)],
    ]
    assert processor.committed_batches == processor.written
    assert broker.committed_offset(settings().usage_group, TOPIC, 0) == 8
    assert signal.getsignal(signal.SIGTERM) == previous  # handler restored


def test_dead_letters_are_acknowledged_before_the_commit_even_after_a_dlq_failure() -> None:
    broker = MemoryBroker()
    broker.create_topic(TOPIC, 1)
    for value in (b'{"n":1}', BAD, b'{"n":2}'):
        broker.produce(TOPIC, 0, value)
    processor = FakeProcessor()
    dlq = FakeDeadLetters()
    dlq.failures = 1
    consumer = usage_consumer(broker, processor, dlq)

    consumer.run()

    assert [(p.partition, p.offset) for p in dlq.acked] == [(0, 1)]  # once, after the retry
    assert consumer.stats.retries == 1 and consumer.stats.dead_letters == 1
    assert broker.commits == [{(TOPIC, 0): 3}]
    assert dlq.closed


def test_a_failing_commit_is_retried_without_writing_again() -> None:
    broker = MemoryBroker()
    fill(broker, partitions=1, per_partition=3)
    broker.failing_commits = 2
    processor = FakeProcessor()
    consumer = usage_consumer(broker, processor)

    consumer.run()

    assert processor.written == [[(TOPIC, 0, o) for o in range(3)]]
    assert consumer.stats.retries == 2
    assert broker.commits == [{(TOPIC, 0): 3}]


def test_reprocess_runs_on_the_same_runtime_a_bad_request_is_dead_lettered_and_committed() -> None:
    broker = MemoryBroker()
    config = settings()
    broker.create_topic(config.reprocess_topic, 1)
    broker.produce(config.reprocess_topic, 0, b"{")
    dlq = FakeDeadLetters()
    dlq.failures = 1
    consumer = ReprocessConsumer(
        config,
        gateway=None,  # type: ignore[arg-type]  # a bad request never reaches the store
        dead_letters=dlq,  # type: ignore[arg-type]
        republisher=FakeDeadLetters(),  # type: ignore[arg-type]  # closed, never used
        loop=LoopOptions(
            retry=RetryPolicy(initial_s=0.2),
            exit_when_idle_s=1.0,
            clock=broker.clock,
            consumer_factory=broker.consumer,
        ),
    )

    consumer.run()

    assert [(p.topic, p.offset) for p in dlq.acked] == [(config.reprocess_topic, 0)]
    assert consumer.stats.requests_rejected == 1 and consumer.stats.retries == 1
    assert broker.committed_offset(config.reprocess_group, config.reprocess_topic, 0) == 1
