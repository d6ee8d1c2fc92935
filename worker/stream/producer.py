"""`events-worker produce FILE.jsonl`: put usage events on the events topic, keyed.

Contract (documented in ``--help`` and the README):

* One JSON object per line; blank lines are skipped. Each line's bytes are
  produced as they are (not re-encoded), so the worker validates exactly what
  the file holds: a bad timestamp, unknown field and so on reach the topic and
  end in the DLQ with a reason.
* The key is ``tenant_id:environment_id:customer`` (DESIGN.md §3), customer
  being ``external_customer_id`` or else ``customer_id`` - the same string as
  :attr:`worker.domain.events.Event.partition_key`. A line that cannot be
  keyed (not JSON, not an object, no string ``tenant_id``, no string customer
  id, non-string ``environment_id``) is not a valid event either: it is
  produced without a key, the worker dead-letters it with its reason, and the
  command reports it (nothing is lost, nothing is silently skipped). With
  ``--strict`` the command checks the whole file first and produces nothing if
  any line cannot be keyed (see ``worker.cli``).
* Delivery-checked: idempotent producer, ``acks=all``; after a flush with a
  timeout, every message has a delivery report or counts as failed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import orjson
from confluent_kafka import Producer

from worker.domain.validation import json_type
from worker.ops.settings import WorkerSettings
from worker.stream.delivery import DeliveryTracker, produce_or_wait

__all__ = [
    "REPORTED_PROBLEMS",
    "LineProblem",
    "ProduceResult",
    "check_file",
    "event_key",
    "iter_keyed_lines",
    "produce_file",
    "producer_config",
]

#: Tuning defaults for bulk producing; ``EW_KAFKA_EXTRA`` may override them.
_TUNING: Final[dict[str, Any]] = {
    "linger.ms": 20,
    "batch.num.messages": 10_000,
    "batch.size": 1_000_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 200_000,
    "message.timeout.ms": 30_000,
}
#: Lines that cannot be keyed a :class:`ProduceResult` names (it counts them all).
REPORTED_PROBLEMS: Final = 20
#: Delivery guarantees; these win over ``EW_KAFKA_EXTRA``.
_GUARANTEES: Final[dict[str, Any]] = {"acks": "all", "enable.idempotence": True}


def producer_config(settings: WorkerSettings, **overrides: Any) -> dict[str, Any]:
    """librdkafka producer settings.

    Precedence: tuning defaults < ``EW_KAFKA_EXTRA`` < guarantees < ``overrides``.
    """
    return {**_TUNING, **settings.kafka_config(), **_GUARANTEES, **overrides}


@dataclass(frozen=True, slots=True)
class LineProblem:
    """A line of the input that cannot be keyed; ``line`` counts from 1."""

    line: int
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"


@dataclass(frozen=True, slots=True)
class ProduceResult:
    """Outcome of :func:`produce_file`; ``failed`` counts unacknowledged messages too."""

    topic: str
    produced: int
    failed: int
    elapsed_s: float
    errors: tuple[str, ...] = ()
    unkeyed: int = 0
    """Lines sent without a key because they cannot be keyed (the worker dead-letters them)."""
    problems: tuple[LineProblem, ...] = ()
    """The first :data:`REPORTED_PROBLEMS` of those lines, with what is wrong."""

    @property
    def rate_per_s(self) -> float:
        return self.produced / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        """One line for humans: counts, time and rate."""
        unkeyed = (
            f"; {self.unkeyed} of them without a key (invalid: the worker dead-letters them)"
            if self.unkeyed
            else ""
        )
        return (
            f"produced {self.produced} messages to {self.topic}, failed {self.failed} "
            f"({self.elapsed_s:.2f}s, {self.rate_per_s:,.0f} msgs/s){unkeyed}"
        )


def event_key(document: object) -> str:
    """The partition key of one decoded event line; raises ``ValueError`` saying why not."""
    if not isinstance(document, dict):
        raise ValueError(f"not a JSON object ({json_type(document)})")
    tenant = document.get("tenant_id")
    if not isinstance(tenant, str) or not tenant:
        raise ValueError("tenant_id must be a non-empty string")
    environment = document.get("environment_id")
    if environment is None:
        environment = ""
    elif not isinstance(environment, str):
        raise ValueError("environment_id must be a string")
    external = document.get("external_customer_id")
    customer = document.get("customer_id")
    for name, value in (("external_customer_id", external), ("customer_id", customer)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
    chosen = external or customer
    if not chosen:
        raise ValueError("external_customer_id or customer_id is required")
    return f"{tenant}:{environment}:{chosen}"


def iter_keyed_lines(path: str) -> Iterator[tuple[int, str | LineProblem, bytes]]:
    """Yield ``(line number, key or problem, line bytes)`` for each non-blank line.

    Reads the file lazily; raises ``OSError`` when it cannot be read.
    """
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                key: str | LineProblem = event_key(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                key = LineProblem(number, f"not valid JSON ({str(exc)[:80]})")
            except ValueError as exc:
                key = LineProblem(number, str(exc))
            yield number, key, line


def check_file(path: str) -> tuple[int, list[LineProblem]]:
    """Return ``(keyable lines, problems)`` of a JSONL file without producing anything."""
    good = 0
    problems: list[LineProblem] = []
    for _, key, _ in iter_keyed_lines(path):
        if isinstance(key, LineProblem):
            problems.append(key)
        else:
            good += 1
    return good, problems


def produce_file(
    settings: WorkerSettings,
    path: str,
    topic: str,
    *,
    flush_timeout_s: float = 60.0,
) -> ProduceResult:
    """Produce every non-blank line of a JSONL file to ``topic``, keyed when it can be.

    Blocking: returns after a flush bounded by ``flush_timeout_s``; messages
    without a delivery report then count as failed. Lines that cannot be keyed
    go without a key (counted in ``unkeyed``, the first ones named in
    ``problems``). Not idempotent across calls:
    producing a file twice puts its events on the topic twice (the worker
    deduplicates events with an ``id``). Raises ``OSError`` for an unreadable
    file and :class:`~worker.stream.delivery.DeliveryError` when the local
    queue stays full for the producer's whole message timeout.
    """
    config = producer_config(settings)
    tracker = DeliveryTracker()
    producer = Producer(config)
    started = time.monotonic()
    queue_timeout_s = float(config.get("message.timeout.ms", 30_000)) / 1000.0
    unkeyed = 0
    problems: list[LineProblem] = []
    for _, key, line in iter_keyed_lines(path):
        if isinstance(key, LineProblem):
            unkeyed += 1
            if len(problems) < REPORTED_PROBLEMS:
                problems.append(key)
        produce_or_wait(
            producer,
            tracker,
            topic,
            value=line,
            key=None if isinstance(key, LineProblem) else key,
            queue_full_timeout_s=queue_timeout_s,
        )
        producer.poll(0)
    unacknowledged = producer.flush(flush_timeout_s)
    elapsed = time.monotonic() - started
    errors = list(tracker.errors)
    if unacknowledged:
        errors.append(f"{unacknowledged} messages unacknowledged after {flush_timeout_s}s")
    failed = tracker.failed + max(unacknowledged, tracker.in_flight)
    return ProduceResult(
        topic=topic,
        produced=tracker.delivered,
        failed=failed,
        elapsed_s=elapsed,
        errors=tuple(errors),
        unkeyed=unkeyed,
        problems=tuple(problems),
    )
