"""What the usage pipeline does around its stages, as hooks: nothing here decides.

* :class:`BatchRecorder`: the metrics, the run summary (:class:`LoopStats`)
  and the log lines of a committed batch and its dead letters;
* :class:`CommitLatencyRecorder`: per message, Kafka timestamp to commit
  (benchmarks only);
* :func:`crash_after_writes`: fault injection between write and commit
  (``EW_FAULT_CRASH_AFTER_WRITES``, the crash-safety tests);
* :class:`LagGauge`: consumer lag of the owned partitions, every few seconds.

Each is called by :class:`~worker.stream.usage_consumer.UsageConsumer` at one
point of its pipeline function; none touches the batch.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from confluent_kafka import KafkaException, TopicPartition

from worker.domain.rating import Outcome
from worker.ops.health import LoopHealth
from worker.ops.metrics import COMMIT_LAG_SAMPLES, Metrics
from worker.stream.runtime import PartitionKey, RunSummary
from worker.stream.usage_batch import PreparedBatch, SourceMessage, timestamps_ms

log = logging.getLogger(__name__)

_LOGGED_DEAD_LETTERS: Final = 20  # per batch; the rest are counted in the batch line
_LAG_INTERVAL_S: Final = 5.0  # consumer lag is measured at most this often (and after commits)
_LAG_AFTER_COMMIT_S: Final = 1.0
_WATERMARK_TIMEOUT_S: Final = 0.5
_DUPLICATE_KINDS: Final = frozenset(o.value for o in Outcome if o is not Outcome.COUNTED)


@dataclass(slots=True)
class LoopStats(RunSummary):
    """The run summary of a usage consumer (the CLI's last line, tests, benchmarks).

    Batch counts are filled by :class:`BatchRecorder` when a batch is committed;
    retries, abandoned batches and rebalances are the runtime's own counters.
    """

    batches: int = 0
    messages: int = 0
    rows: int = 0
    dead_letters: int = 0
    unpriced: dict[str, int] = field(default_factory=dict)
    """Events stored raw without processed rows, by reason (``UnresolvedReason``)."""
    first_batch_at: float | None = None
    """Clock reading when the first batch was collected (throughput window start)."""
    last_commit_at: float | None = None
    commit_latencies_ms: list[float] | None = None
    """When recording (benchmarks): per message, wall milliseconds from its
    Kafka timestamp to the commit of its offset."""

    @property
    def abandoned(self) -> int:
        return self.counters.interrupted

    @property
    def busy_seconds(self) -> float:
        """From the first batch collected to the last commit."""
        if self.first_batch_at is None or self.last_commit_at is None:
            return 0.0
        return self.last_commit_at - self.first_batch_at


class BatchRecorder:
    """Records committed batches into :class:`Metrics`, :class:`LoopStats` and the log."""

    def __init__(self, metrics: Metrics, stats: LoopStats) -> None:
        self._metrics = metrics
        self._stats = stats

    def committed(self, prepared: PreparedBatch, durations: dict[str, float], *, at: float) -> None:
        """Count ``prepared`` (just committed) and say it in one line."""
        stats = self._stats
        stats.last_commit_at = at
        stats.batches += 1
        stats.messages += prepared.messages
        stats.rows += prepared.row_count
        stats.dead_letters += len(prepared.dead_letters)
        for reason, count in prepared.unresolved.items():
            stats.unpriced[str(reason)] = stats.unpriced.get(str(reason), 0) + count
        metrics = self._metrics
        metrics.batches_committed.inc()
        metrics.events_processed.inc(prepared.event_count)
        metrics.batch_messages.observe(prepared.messages)
        metrics.batch_rows.observe(prepared.row_count)
        for unresolved, count in prepared.unresolved.items():
            metrics.unresolved.labels(unresolved.value).inc(count)
        outcomes = {outcome.value: n for outcome, n in prepared.outcomes.items() if n}
        for kind, count in outcomes.items():
            if kind in _DUPLICATE_KINDS:
                metrics.duplicates.labels(kind).inc(count)
        dead_letters = self._dead_letters(prepared)
        if prepared.missing_fields:
            metrics.missing_quantity_fields.inc(prepared.missing_fields)
        metrics.events_committed(prepared.sampled_timestamps(COMMIT_LAG_SAMPLES))
        log.info(
            "batch committed",
            extra={
                "messages": prepared.messages,
                "events": prepared.event_count,
                "rows": prepared.row_count,
                "dead_letters": dead_letters,
                "unresolved": {str(r): n for r, n in prepared.unresolved.items()},
                "outcomes": outcomes,
                "durations_ms": {stage: round(s * 1000, 3) for stage, s in durations.items()},
                "offsets": {
                    f"{topic}/{partition}": [prepared.first_offsets[(topic, partition)], end]
                    for (topic, partition), end in sorted(prepared.next_offsets.items())
                },
            },
        )

    def _dead_letters(self, prepared: PreparedBatch) -> dict[str, int]:
        """Count the acknowledged dead letters by reason; log the first few once."""
        by_reason: dict[str, int] = {}
        for letter in prepared.dead_letters:
            by_reason[letter.reason] = by_reason.get(letter.reason, 0) + 1
        for reason, count in by_reason.items():
            self._metrics.dead_letters.labels(reason).inc(count)
        for letter in prepared.dead_letters[:_LOGGED_DEAD_LETTERS]:
            message = letter.message
            log.warning(
                "dead letter: %s (%s)",
                letter.reason,
                letter.error[:200],
                extra={
                    "topic": message.topic,
                    "partition": message.partition,
                    "offset": message.offset,
                    "tenant": _tenant_hint(message.value),
                    "reason": letter.reason,
                    "error": letter.error[:200],
                },
            )
        return by_reason


class CommitLatencyRecorder:
    """Appends, per committed message, wall ms from its Kafka timestamp to now."""

    def __init__(self, into: list[float]) -> None:
        self._into = into

    def __call__(self, messages: Sequence[SourceMessage]) -> None:
        now_ms = time.time() * 1000
        self._into.extend(now_ms - stamp for stamp in timestamps_ms(messages))


def crash_after_writes(limit: int) -> Callable[[], None]:
    """A hook that exits the process (137) at the ``limit``-th write, before its commit.

    ``limit`` 0 gives a hook that does nothing.
    """
    writes = 0

    def after_write() -> None:
        nonlocal writes
        if not limit:
            return
        writes += 1
        if writes >= limit:
            log.warning("fault injection: exiting after write, before commit")
            os._exit(137)

    return after_write


class LagGauge:
    """Measures high watermark minus position per owned partition into the metrics.

    At most every 5 s, or every second while batches are being committed.
    Watermarks come from librdkafka's cache of fetch responses (no request);
    a partition without a known position or watermark is skipped. On brokers
    whose high watermark lags (tansu) this is a lower bound, which is fine for
    a gauge and never used to decide "caught up".
    """

    def __init__(self, metrics: Metrics, health: LoopHealth, clock: Callable[[], float]) -> None:
        self._metrics = metrics
        self._health = health
        self._clock = clock
        self._last_at: float | None = None

    def reset(self) -> None:
        """Measure at the next call (the assignment changed)."""
        self._last_at = None

    def refresh(
        self, consumer: Any, owned: Collection[PartitionKey], *, after_commit: bool
    ) -> None:
        now = self._clock()
        interval = _LAG_AFTER_COMMIT_S if after_commit else _LAG_INTERVAL_S
        if self._last_at is not None and now - self._last_at < interval:
            return
        self._last_at = now
        if not owned:
            self._health.set_backlog(0)
            return
        try:
            positions = consumer.position([TopicPartition(t, p) for t, p in sorted(owned)])
        except KafkaException as exc:
            log.debug("cannot read positions for the lag: %s", exc)
            return
        total = 0
        for position in positions:
            if position.offset < 0:
                continue
            try:
                _, high = consumer.get_watermark_offsets(
                    position, timeout=_WATERMARK_TIMEOUT_S, cached=True
                )
            except KafkaException:
                continue
            if high < 0:
                continue
            lag = max(0, high - position.offset)
            total += lag
            self._metrics.set_lag(position.topic, position.partition, lag)
        self._health.set_backlog(total)


def _tenant_hint(value: bytes | None) -> str | None:
    """The ``tenant_id`` of a rejected message when it is readable, for the log line only."""
    if not value or len(value) > 65_536:
        return None
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    tenant = document.get("tenant_id") if isinstance(document, dict) else None
    return tenant[:100] if isinstance(tenant, str) else None
