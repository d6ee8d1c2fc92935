"""`ensure_topics` against the real broker: creates, is idempotent, compacts the catalog."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not re-exported in stubs
    AdminClient,
    ConfigResource,
    ResourceType,
)

from tests.integration.stream.conftest import PARTITIONS
from tests.integration.support import create_topic
from worker.ops.settings import WorkerSettings
from worker.stream.topics import TopicSetupError, ensure_topics, worker_topics


def _partitions(bootstrap: str) -> dict[str, int]:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def test_creates_missing_topics_once_and_compacts_the_catalog(
    stream_settings: WorkerSettings,
) -> None:
    s = stream_settings
    wanted = {s.events_topic: PARTITIONS, s.dlq_topic: 1, s.catalog_topic: 2}

    first = ensure_topics(s, wanted, timeout_s=10)
    second = ensure_topics(s, wanted, timeout_s=10)

    assert sorted(first.created) == sorted(wanted) and first.existing == ()
    assert first.without_config == ()
    assert second.created == () and sorted(second.existing) == sorted(wanted)
    present = _partitions(s.kafka_bootstrap)
    assert {name: present[name] for name in wanted} == wanted
    admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
    described = {}
    for name in (s.catalog_topic, s.events_topic):
        future = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name)])
        configs = next(iter(future.values())).result(timeout=10)
        described[name] = configs["cleanup.policy"].value if "cleanup.policy" in configs else None
    assert described[s.catalog_topic] == "compact"
    assert described[s.events_topic] != "compact"


def test_existing_topic_with_fewer_partitions_is_reported_not_changed(
    stream_settings: WorkerSettings,
) -> None:
    s = stream_settings
    create_topic(s.kafka_bootstrap, s.events_topic, 1)

    report = ensure_topics(s, {s.events_topic: 4}, timeout_s=10)

    assert report.created == () and report.fewer_partitions == {s.events_topic: 1}
    assert _partitions(s.kafka_bootstrap)[s.events_topic] == 1


def test_unreachable_broker_raises_within_the_timeout() -> None:
    settings = WorkerSettings(kafka_bootstrap="127.0.0.1:1")
    with pytest.raises(TopicSetupError, match="metadata"):  # not a hang (pytest's timeout)
        ensure_topics(settings, {"x": 1}, timeout_s=1.5)


def test_worker_topics_are_all_created(stream_settings: WorkerSettings) -> None:
    s = stream_settings
    report = ensure_topics(s, worker_topics(s), timeout_s=10)
    names = {s.events_topic, s.dlq_topic, s.catalog_topic, s.reprocess_topic}
    assert set(report.created) == names
    present = _partitions(s.kafka_bootstrap)
    assert {name: present[name] for name in names} == dict.fromkeys(names, PARTITIONS)
