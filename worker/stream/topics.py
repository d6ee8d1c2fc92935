"""Create the topics the worker needs when they are missing (DESIGN.md §9).

Only CreateTopics and metadata requests are used: tansu (the local broker)
has no CreatePartitions or AlterConfigs, and DeleteRecords crashes it, so
nothing here alters or deletes an existing topic. The catalog topic
(``settings.catalog_topic``) is created with ``cleanup.policy=compact``; a
broker that refuses the config gets the topic without it and a warning.
Topics get ``settings.topic_replication_factor`` replicas (-1: the broker's
default); with ``settings.create_topics`` false nothing is created and a
missing topic raises :class:`TopicSetupError` naming it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from worker.ops.settings import WorkerSettings

__all__ = ["TopicSetupError", "TopicsReport", "ensure_topics", "worker_topics"]

log = logging.getLogger(__name__)

#: Topic configs applied to the compacted catalog topic.
COMPACT_CONFIG: Final = {"cleanup.policy": "compact"}
#: Errors that mean "the broker does not accept these topic configs".
_CONFIG_REJECTED: Final = frozenset(
    {
        KafkaError.INVALID_CONFIG,
        KafkaError.POLICY_VIOLATION,
        KafkaError.UNSUPPORTED_VERSION,
        KafkaError.INVALID_REQUEST,
    }
)


class TopicSetupError(RuntimeError):
    """A topic could not be created or did not show up in metadata before the deadline."""


@dataclass(frozen=True, slots=True)
class TopicsReport:
    """What :func:`ensure_topics` found and did."""

    created: tuple[str, ...] = ()
    existing: tuple[str, ...] = ()
    #: Topics created without the configs asked for (the broker refused them).
    without_config: tuple[str, ...] = ()
    #: Existing topics with fewer partitions than asked: ``{name: partitions}``.
    #: Never changed here (no CreatePartitions); logged as a warning.
    fewer_partitions: dict[str, int] = field(default_factory=dict)


def worker_topics(settings: WorkerSettings) -> dict[str, int]:
    """Every topic the worker uses, each with ``settings.topic_partitions`` partitions."""
    names = (
        settings.events_topic,
        settings.dlq_topic,
        settings.catalog_topic,
        settings.reprocess_topic,
    )
    return dict.fromkeys(names, settings.topic_partitions)


def ensure_topics(
    settings: WorkerSettings,
    names_with_partitions: Mapping[str, int],
    *,
    timeout_s: float = 15.0,
) -> TopicsReport:
    """Create every topic of ``names_with_partitions`` that does not exist yet.

    Blocking, at most about ``timeout_s`` in total; idempotent (existing topics
    are left alone, a concurrent creator racing us is fine). Returns once every
    named topic is visible in metadata with at least one partition. The topic
    named ``settings.catalog_topic`` is created compacted.

    Raises :class:`TopicSetupError` when the broker cannot be reached, refuses
    to create a topic, or the metadata does not show it before the deadline.
    Never logs secrets: client settings are not logged at all.
    """
    for name, partitions in names_with_partitions.items():
        if not name or partitions < 1:
            raise ValueError(f"topic {name!r}: need a name and partitions >= 1")
    deadline = time.monotonic() + timeout_s
    admin = AdminClient(settings.kafka_config())
    present = _partition_counts(admin, settings.kafka_bootstrap, deadline)
    missing = {n: p for n, p in names_with_partitions.items() if n not in present}
    existing = tuple(n for n in names_with_partitions if n in present)
    fewer = {
        name: present[name]
        for name, wanted in names_with_partitions.items()
        if name in present and present[name] < wanted
    }
    for name, have in fewer.items():
        log.warning(
            "topic %s has %d partitions, fewer than the %d configured; left unchanged",
            name,
            have,
            names_with_partitions[name],
        )
    without_config: list[str] = []
    if missing and not settings.create_topics:
        raise TopicSetupError(
            f"topics {', '.join(sorted(missing))} do not exist and EW_CREATE_TOPICS is false: "
            "create them (partitions, replication, a compacted catalog topic: docs/topics.md) "
            "or let the worker do it"
        )
    if missing:
        with_config = {
            name: dict(COMPACT_CONFIG) if name == settings.catalog_topic else {} for name in missing
        }
        replication = settings.topic_replication_factor
        refused = _create(admin, missing, with_config, deadline, replication)
        if refused:
            for name in refused:
                log.warning(
                    "broker refused configs %s for topic %s; creating it without them",
                    with_config[name],
                    name,
                )
            still_refused = _create(
                admin,
                {n: missing[n] for n in refused},
                {n: {} for n in refused},
                deadline,
                replication,
            )
            if still_refused:
                raise TopicSetupError(f"broker refused to create topics {sorted(still_refused)}")
            without_config = sorted(refused)
        _wait_visible(admin, settings.kafka_bootstrap, missing, deadline, timeout_s)
        log.info("created topics %s", sorted(missing))
    return TopicsReport(
        created=tuple(missing),
        existing=existing,
        without_config=tuple(without_config),
        fewer_partitions=fewer,
    )


def _remaining(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def _partition_counts(admin: AdminClient, bootstrap: str, deadline: float) -> dict[str, int]:
    """``{topic: partitions}`` of every healthy topic in the cluster metadata of ``bootstrap``."""
    try:
        metadata = admin.list_topics(timeout=_remaining(deadline))
    except KafkaException as exc:
        error = exc.args[0]
        detail = error.str() if isinstance(error, KafkaError) else str(error)
        raise TopicSetupError(
            f"cannot read cluster metadata ({detail}) from {bootstrap}: check that the broker "
            "is up, --bootstrap / EW_KAFKA_BOOTSTRAP, and the SASL/SSL properties in "
            "EW_KAFKA_EXTRA"
        ) from None
    return {
        name: len(topic.partitions)
        for name, topic in metadata.topics.items()
        if topic.error is None and topic.partitions
    }


def _create(
    admin: AdminClient,
    topics: Mapping[str, int],
    configs: Mapping[str, dict[str, str]],
    deadline: float,
    replication_factor: int,
) -> list[str]:
    """Create ``topics``; return the names whose configs the broker refused.

    "Already exists" counts as success. Other errors raise :class:`TopicSetupError`.
    """
    timeout = _remaining(deadline)
    futures = admin.create_topics(
        [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                config=configs[name],
            )
            for name, partitions in topics.items()
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    refused: list[str] = []
    for name, future in futures.items():
        try:
            future.result(timeout=_remaining(deadline))
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            if configs[name] and error.code() in _CONFIG_REJECTED:
                refused.append(name)
                continue
            hint = (
                " (EW_TOPIC_REPLICATION_FACTOR)"
                if error.code() == KafkaError.INVALID_REPLICATION_FACTOR
                else ""
            )
            raise TopicSetupError(f"cannot create topic {name}: {error.str()}{hint}") from None
        except TimeoutError:
            raise TopicSetupError(f"creating topic {name} did not finish in time") from None
    return refused


def _wait_visible(
    admin: AdminClient, bootstrap: str, topics: Mapping[str, int], deadline: float, timeout_s: float
) -> None:
    """Block until metadata shows every topic of ``topics``; raise after ``deadline``."""
    while True:
        present = _partition_counts(admin, bootstrap, deadline)
        absent = sorted(name for name in topics if name not in present)
        if not absent:
            return
        if time.monotonic() >= deadline:
            raise TopicSetupError(f"topics {absent} not visible in metadata after {timeout_s}s")
        time.sleep(0.05)
