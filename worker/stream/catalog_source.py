"""The catalog on the compacted topic ``events.catalog`` (DESIGN.md §1, §8).

Wire format, one message per entity:

* key ``entity_type:tenant_id:environment_id:entity_id`` (UTF-8), entity type
  one of ``customer``, ``meter``, ``feature``, ``price``, ``subscription``
  (a subscription carries its ``line_items`` embedded). Tenant and
  environment ids must not contain ``:``; entity ids may (the key is split
  at most three times).
* value: the entity as a JSON object in the §8 shape of that entity
  (decimals as strings); a null value (tombstone) deletes the entity.

The latest value per key wins, which is exactly what compaction keeps, with
one exception: a value that fails validation (bad JSON, an unknown field, an
unknown status, an unratable price, ...) is *rejected*: the previous version
of that entity stays in force, the rejection is listed in ``problems`` and
handed to the ``on_rejected`` callback (the usage worker dead-letters it to
``events.dlq`` with its reason, counts it in a metric and reports it on
``/readyz``). A bad entity never stops the fleet.
:class:`CatalogPublisher` writes entities; :class:`CatalogTopicSource`
reads the whole topic into a :class:`~worker.domain.catalog_index.CatalogIndex`
and then follows it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)
from pydantic import BaseModel, ValidationError

from worker.domain.catalog import (
    CatalogDocument,
    CustomerDoc,
    FeatureDoc,
    MeterDoc,
    PriceDoc,
    SubscriptionDoc,
    describe_errors,
    reference_problems,
)
from worker.domain.catalog_index import CatalogIndex
from worker.ops.settings import WorkerSettings
from worker.stream.delivery import AckedProducer

__all__ = [
    "REJECTED_REASON",
    "CatalogLoadTimeout",
    "CatalogPublisher",
    "CatalogTopicSource",
    "EntityType",
    "PublishResult",
    "entity_key",
    "entity_messages",
]

log = logging.getLogger(__name__)


class EntityType(StrEnum):
    """The first part of a catalog message key."""

    CUSTOMER = "customer"
    METER = "meter"
    FEATURE = "feature"
    PRICE = "price"
    SUBSCRIPTION = "subscription"


_MODELS: Final[dict[EntityType, type[BaseModel]]] = {
    EntityType.CUSTOMER: CustomerDoc,
    EntityType.METER: MeterDoc,
    EntityType.FEATURE: FeatureDoc,
    EntityType.PRICE: PriceDoc,
    EntityType.SUBSCRIPTION: SubscriptionDoc,
}
#: CatalogDocument list field holding each entity type.
_FIELDS: Final[dict[EntityType, str]] = {
    EntityType.CUSTOMER: "customers",
    EntityType.METER: "meters",
    EntityType.FEATURE: "features",
    EntityType.PRICE: "prices",
    EntityType.SUBSCRIPTION: "subscriptions",
}
#: Dead-letter reason of a catalog entity value that failed validation.
REJECTED_REASON: Final = "invalid_catalog_entity"
#: Called with each rejected catalog message and the one-line reason.
RejectionHandler = Callable[[Message, str], None]
#: Longest a single ``consume`` call may block (signals are seen between calls).
_CONSUME_SLICE_S: Final = 0.5


def entity_key(entity_type: EntityType, tenant_id: str, environment_id: str, entity_id: str) -> str:
    """The message key of one entity; raises ``ValueError`` when tenant or environment has ':'."""
    if ":" in tenant_id or ":" in environment_id:
        raise ValueError(
            f"tenant {tenant_id!r} / environment {environment_id!r}: ':' is not allowed "
            "in catalog topic keys"
        )
    return f"{entity_type.value}:{tenant_id}:{environment_id}:{entity_id}"


def entity_messages(documents: Iterable[CatalogDocument]) -> Iterator[tuple[str, bytes]]:
    """``(key, JSON value)`` upserts for every entity of ``documents``, in document order.

    Raises ``ValueError`` for tenant or environment ids containing ':'.
    """
    for document in documents:
        tenant, environment = document.tenant_id, document.environment_id
        for entity_type, field_name in _FIELDS.items():
            entities: list[Any] = getattr(document, field_name)
            for entity in entities:
                key = entity_key(entity_type, tenant, environment, str(entity.id))
                yield key, orjson.dumps(entity.model_dump(mode="json"))


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Outcome of a publish: messages sent per entity type (and ``deleted``), and how many
    of them the broker did not acknowledge (``failed``, over all types)."""

    topic: str
    published: dict[str, int]
    failed: int
    errors: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line for humans."""
        total = sum(self.published.values())
        parts = ", ".join(
            f"{count} {kind if kind == 'deleted' else kind + 's'}"
            for kind, count in self.published.items()
            if count
        )
        return (
            f"published {total} catalog entities to {self.topic} ({parts or 'none'}), "
            f"failed {self.failed}"
        )


class CatalogPublisher:
    """Writes entity upserts and deletes to the catalog topic (one thread).

    :meth:`upsert_documents` / :meth:`delete` only queue messages;
    :meth:`flush` blocks (bounded) until the broker acknowledged them. The
    topic must exist and should be compacted (see
    :func:`worker.stream.topics.ensure_topics`). Publishing the same entity
    again is harmless: the latest value wins.
    """

    def __init__(self, settings: WorkerSettings, *, topic: str | None = None) -> None:
        self.topic = topic or settings.catalog_topic
        self._producer = AckedProducer(self.topic, {"linger.ms": 10, **settings.kafka_config()})
        self._counts: dict[str, int] = {}

    def _send(self, key: str, value: bytes | None, kind: str) -> None:
        self._producer.send(value, key=key)
        self._counts[kind] = self._counts.get(kind, 0) + 1

    def upsert_documents(self, documents: Iterable[CatalogDocument]) -> None:
        """Queue an upsert for every entity of ``documents`` (never deletes what they lack)."""
        for key, value in entity_messages(documents):
            self._send(key, value, key.split(":", 1)[0])

    def delete(
        self, entity_type: EntityType, tenant_id: str, environment_id: str, entity_id: str
    ) -> None:
        """Queue a tombstone (null value) for one entity."""
        self._send(entity_key(entity_type, tenant_id, environment_id, entity_id), None, "deleted")

    def flush(self, timeout_s: float = 30.0) -> PublishResult:
        """Block until every queued message is acknowledged or ``timeout_s`` passed.

        Returns the counts since the previous flush; unacknowledged messages
        count as failed. Never raises for delivery failures: check ``failed``.
        """
        remaining = self._producer.flush(timeout_s)
        tracker = self._producer.tracker
        errors = list(tracker.errors)
        if remaining:
            errors.append(f"{remaining} messages unacknowledged after {timeout_s}s")
        failed = tracker.failed + max(remaining, tracker.in_flight)
        published = {EntityType(k).value: v for k, v in self._counts.items() if k != "deleted"}
        if "deleted" in self._counts:
            published["deleted"] = self._counts["deleted"]
        if failed:
            # Per-type counts are of queued messages; report the failures beside them.
            log.warning("catalog publish: %d of %d messages failed", failed, tracker.sent)
        result = PublishResult(self.topic, published, failed, tuple(errors))
        tracker.reset()
        self._counts = {}
        return result


class CatalogLoadTimeout(TimeoutError):
    """The catalog topic was not read to its end before the deadline."""


@dataclass(slots=True)
class _Entity:
    entity_type: EntityType
    tenant_id: str
    environment_id: str
    model: BaseModel


@dataclass(slots=True)
class _FollowState:
    """Mutable progress of one source: positions, pending changes, timing."""

    next_offsets: dict[int, int] = field(default_factory=dict)
    last_message_at: float = 0.0
    changed: bool = False
    first_change_at: float = 0.0


class CatalogTopicSource:
    """The whole catalog topic folded into a :class:`CatalogIndex`, then followed.

    Reads with its own consumer and explicit ``assign()`` of every partition
    from the beginning: no group join, no commits (every worker holds the
    whole catalog). Single-threaded: call :meth:`load` once, then
    :meth:`poll_updates` (or iterate :meth:`follow`) from the same thread;
    :meth:`close` at the end.

    "Caught up" is decided by watermarks *and* idleness: the high watermark
    read at the start is reached on every partition, and then no message has
    arrived for ``idle_gap_s`` (tansu reports watermarks lower than the true
    end, so watermarks alone would stop early).

    Invalid entity values (bad JSON, wrong shape, unknown fields or values,
    unratable prices, a key that does not parse) are rejected: the key's
    previous valid value, if any, stays in force; ``on_rejected`` is called
    with the message and the reason (from the reading thread, once per
    message read); every such key is listed in ``problems`` and in the built
    index's ``problems`` until a valid value or a tombstone replaces it.
    Dangling references (a subscription of an unknown customer, a line item
    of an unknown price, ...) are listed too: entities may arrive out of
    order, so the index tolerates them and events for them stay unresolved.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        topic: str | None = None,
        idle_gap_s: float = 0.5,
        debounce_s: float = 0.5,
        max_staleness_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_rejected: RejectionHandler | None = None,
    ) -> None:
        """Configure; no network I/O until :meth:`load`.

        ``debounce_s``: :meth:`poll_updates` rebuilds the index once no update
        arrived for this long, or ``max_staleness_s`` after the first unapplied
        update under a steady trickle.
        """
        self.topic = topic or settings.catalog_topic
        self._settings = settings
        self._idle_gap_s = idle_gap_s
        self._debounce_s = debounce_s
        self._max_staleness_s = max_staleness_s
        self._clock = clock
        self._consumer: Consumer | None = None
        self._entities: dict[bytes, _Entity] = {}
        self._bad_keys: dict[bytes, str] = {}
        self._state = _FollowState()
        self._on_rejected = on_rejected
        self.messages_read = 0
        self.rejected = 0
        """Entity values rejected since start (each message counted once)."""

    # -- reading ---------------------------------------------------------------

    def _open(self, timeout_s: float) -> Consumer:
        config = {
            "fetch.wait.max.ms": 100,
            **self._settings.kafka_config(),
            # Never joins: assign() only. librdkafka still wants a group id.
            "group.id": f"events-worker-catalog-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
        consumer = Consumer(config)
        try:
            metadata = consumer.list_topics(self.topic, timeout=timeout_s)
        except KafkaException as exc:
            consumer.close()
            raise CatalogLoadTimeout(f"cannot read metadata of {self.topic}: {exc}") from None
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            consumer.close()
            reason = "missing" if topic is None or topic.error is None else topic.error.str()
            raise CatalogLoadTimeout(f"catalog topic {self.topic} unusable: {reason}")
        partitions = sorted(topic.partitions)
        self._state.next_offsets = dict.fromkeys(partitions, 0)
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        return consumer

    def load(self, timeout_s: float = 60.0) -> CatalogIndex:
        """Read the topic from the beginning until caught up; return the index.

        Blocking, at most ``timeout_s``; raises :class:`CatalogLoadTimeout`
        when the broker is unreachable, the topic is missing (create it first
        with :func:`worker.stream.topics.ensure_topics`) or it is not caught up
        in time. Call once per instance.
        """
        if self._consumer is not None:
            raise RuntimeError("CatalogTopicSource.load() was already called")
        started = self._clock()
        deadline = started + timeout_s
        self._consumer = consumer = self._open(timeout_s)
        targets: dict[int, int] = {}
        for partition in self._state.next_offsets:
            remaining = max(0.1, deadline - self._clock())
            try:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=remaining
                )
            except KafkaException as exc:
                raise CatalogLoadTimeout(f"cannot read watermarks of {self.topic}: {exc}") from None
            targets[partition] = high
        self._state.last_message_at = self._clock()
        while True:
            now = self._clock()
            reached = self._reached(targets)
            if reached and now - self._state.last_message_at >= self._idle_gap_s:
                break
            if now >= deadline:
                raise CatalogLoadTimeout(
                    f"catalog topic {self.topic} not caught up after {timeout_s}s "
                    f"(read {self.messages_read} messages; positions {self._state.next_offsets}, "
                    f"watermarks {targets})"
                )
            self._consume(min(_CONSUME_SLICE_S, max(0.01, deadline - now)))
        self._state.changed = False
        index = self._build()
        log.info(
            "catalog loaded from %s: %d messages, %d entities, %d problems in %.2fs",
            self.topic,
            self.messages_read,
            len(self._entities),
            len(index.problems),
            self._clock() - started,
        )
        return index

    def _reached(self, targets: dict[int, int]) -> bool:
        """Whether every partition's position is at or past its target offset.

        The consumer's position also moves past records it never hands out
        (transaction markers), which our own next offsets would not see.
        """
        assert self._consumer is not None
        positions = self._consumer.position(
            [TopicPartition(self.topic, partition) for partition in targets]
        )
        for position in positions:
            mine = self._state.next_offsets.get(position.partition, 0)
            if max(mine, position.offset) < targets[position.partition]:
                return False
        return True

    def poll_updates(self, timeout_s: float) -> CatalogIndex | None:
        """Read updates for up to ``timeout_s``; return a new index when they settled, else None.

        Blocking at most ``timeout_s`` (returns early with an index). Debounced:
        a new index is built once no update arrived for ``debounce_s`` (or
        ``max_staleness_s`` after the first pending one). Requires :meth:`load`.
        """
        if self._consumer is None:
            raise RuntimeError("CatalogTopicSource.load() must be called first")
        deadline = self._clock() + timeout_s
        while True:
            state = self._state
            now = self._clock()
            if state.changed and (
                now - state.last_message_at >= self._debounce_s
                or now - state.first_change_at >= self._max_staleness_s
            ):
                state.changed = False
                return self._build()
            if now >= deadline:
                return None
            self._consume(min(_CONSUME_SLICE_S, max(0.0, deadline - now)))

    def follow(self, *, poll_s: float = 0.5) -> Iterator[CatalogIndex]:
        """Yield a new index whenever updates settle; endless (stop by not iterating).

        Each ``next()`` blocks until there is a new index.
        """
        while True:
            index = self.poll_updates(poll_s)
            if index is not None:
                yield index

    @property
    def problems(self) -> list[str]:
        """Entity values currently ignored, by key."""
        return [f"{key.decode(errors='replace')}: {why}" for key, why in self._bad_keys.items()]

    def close(self) -> None:
        """Close the consumer (leaves no group: there is none). Idempotent."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()

    # -- folding ----------------------------------------------------------------

    def _consume(self, timeout_s: float) -> None:
        assert self._consumer is not None
        messages = self._consumer.consume(1000, timeout_s)
        if not messages:
            return
        now = self._clock()
        applied = 0
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                log.warning("catalog consumer: %s", error.str())
                continue
            partition, offset = message.partition(), message.offset()
            if partition is None or offset is None:
                continue
            self._state.next_offsets[partition] = offset + 1
            self.messages_read += 1
            applied += 1
            self._apply(message)
        if not applied:
            return
        state = self._state
        if not state.changed:
            state.first_change_at = now
        state.changed = True
        state.last_message_at = now

    def _apply(self, message: Message) -> None:
        key = message.key()
        if key is None:
            log.warning("catalog message without key at offset %s ignored", message.offset())
            return
        value = message.value()
        self._bad_keys.pop(key, None)
        if value is None:
            self._entities.pop(key, None)  # tombstone: deleted
            return
        try:
            self._entities[key] = _parse_entity(key, value)
        except ValueError as exc:
            kept = "previous version kept" if key in self._entities else "no previous version"
            reason = f"rejected ({kept}): {exc}"
            self._bad_keys[key] = reason
            self.rejected += 1
            log.warning("catalog entity %s %s", key.decode(errors="replace"), reason)
            if self._on_rejected is not None:
                self._on_rejected(message, reason)

    def _build(self) -> CatalogIndex:
        grouped: dict[tuple[str, str], dict[str, list[Any]]] = {}
        for key in sorted(self._entities):
            entity = self._entities[key]
            lists = grouped.setdefault(
                (entity.tenant_id, entity.environment_id), {name: [] for name in _FIELDS.values()}
            )
            lists[_FIELDS[entity.entity_type]].append(entity.model)
        documents = [
            CatalogDocument(tenant_id=tenant, environment_id=environment, **lists)
            for (tenant, environment), lists in sorted(grouped.items())
        ]
        index = CatalogIndex(documents)
        index.problems.extend(problem for doc in documents for problem in reference_problems(doc))
        index.problems.extend(self.problems)
        return index


def _parse_entity(key: bytes, value: bytes) -> _Entity:
    """Decode one upsert; raises ``ValueError`` saying what is wrong."""
    parts = key.decode("utf-8", errors="strict").split(":", 3)
    if len(parts) != 4:
        raise ValueError("key is not entity_type:tenant:environment:id")
    type_text, tenant, environment, entity_id = parts
    try:
        entity_type = EntityType(type_text)
    except ValueError:
        raise ValueError(f"unknown entity type {type_text!r}") from None
    if not tenant or not entity_id:
        raise ValueError("key has an empty tenant or id")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"invalid {entity_type.value}: value is not JSON: {exc}") from None
    try:
        model = _MODELS[entity_type].model_validate(data)
    except ValidationError as exc:
        root = f"{entity_type.value} {entity_id!r} of {tenant}/{environment}"
        raise ValueError(
            f"invalid {entity_type.value}: {describe_errors(exc, data, root=root)}"
        ) from None
    if getattr(model, "id", None) != entity_id:
        raise ValueError(f"value id {getattr(model, 'id', None)!r} differs from key id")
    return _Entity(entity_type, tenant, environment, model)
