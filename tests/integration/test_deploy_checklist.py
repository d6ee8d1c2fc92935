"""The production checklist's commands that can run here, run (deploy/README.md).

Topics: the checklist's ``kafka-topics.sh --create`` lines, sent as the same
CreateTopics requests to the local broker (no Kafka distribution here), then
``events-worker catalog publish`` on those topics and the worker's own topic
check finding all of them present. Migrate: the migrate Job's command, twice,
on a local store (the second run applies nothing), and ``--dry-run``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tests.deploy_readme import README, topic_specs
from tests.integration.kafka_broker import apache_kafka_selected
from tests.integration.workers import run_cli, worker_env, write_catalog
from worker.ops.settings import WorkerSettings
from worker.samples.synthetic import build_catalog
from worker.stream.catalog_source import CatalogTopicSource
from worker.stream.topics import ensure_topics, worker_topics

#: The ConfigMap's topic names (the checklist's) and the settings naming them.
TOPIC_SETTINGS = {
    "events": "EW_EVENTS_TOPIC",
    "events.dlq": "EW_DLQ_TOPIC",
    "events.catalog": "EW_CATALOG_TOPIC",
    "events.reprocess": "EW_REPROCESS_TOPIC",
}


def test_checklist_topics_then_catalog_publish(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    specs = topic_specs()
    assert {spec.name for spec in specs} == set(TOPIC_SETTINGS)
    renamed = {spec.name: unique_name(spec.name) for spec in specs}  # fresh topics per run
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    # tansu records any replication factor; a one-node Apache Kafka has one copy
    # to give (three would be refused, and acks=all would fail against
    # min.insync.replicas=2), so there the checklist's copies are scaled to one.
    one_node = apache_kafka_selected()
    futures = admin.create_topics(
        [
            NewTopic(
                renamed[spec.name],
                num_partitions=spec.partitions,
                replication_factor=1 if one_node else spec.replication_factor,
                config={**spec.config, "min.insync.replicas": "1"} if one_node else spec.config,
            )
            for spec in specs
        ],
        operation_timeout=30,
        request_timeout=30,
    )
    for future in futures.values():
        future.result(timeout=30)

    partitions = {spec.partitions for spec in specs}
    [count] = partitions
    env = worker_env(kafka_bootstrap, unique_name)
    env.update({TOPIC_SETTINGS[name]: topic for name, topic in renamed.items()})
    env["EW_TOPIC_PARTITIONS"] = str(count)
    catalog = build_catalog(customers=3, line_items_per_customer=2)
    published = run_cli(env, "catalog", "publish", str(write_catalog(tmp_path, catalog)))
    assert published.returncode == 0, published.stderr.decode()[-2000:]

    settings = WorkerSettings(
        kafka_bootstrap=kafka_bootstrap,
        kafka_session_timeout_ms=6000,
        topic_partitions=count,
        events_topic=renamed["events"],
        dlq_topic=renamed["events.dlq"],
        catalog_topic=renamed["events.catalog"],
        reprocess_topic=renamed["events.reprocess"],
    )
    report = ensure_topics(settings, worker_topics(settings))  # what every worker does at start
    assert report.created == ()
    assert set(report.existing) == set(renamed.values())
    assert report.fewer_partitions == {}

    source = CatalogTopicSource(settings)
    try:
        index = source.load(timeout_s=60)
    finally:
        source.close()
    assert index.customer_count == 3
    assert index.line_item_count == 6


def test_the_migrate_job_command_is_idempotent(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    env = worker_env(kafka_bootstrap, unique_name)
    env["EW_STORE_URL"] = f"chdb://{tmp_path / 'store'}?database=billing"
    first = run_cli(env, "migrate")
    assert first.returncode == 0, first.stderr.decode()[-2000:]
    assert "applied: nothing" not in first.stdout.decode()
    again = run_cli(env, "migrate")
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    assert "applied: nothing (up to date)" in again.stdout.decode()
    assert "`applied: nothing (up to date)`" in README.read_text()  # as the checklist says
    dry = run_cli(env, "migrate", "--dry-run")
    assert dry.returncode == 0, dry.stderr.decode()[-2000:]
    assert "CREATE TABLE" in dry.stdout.decode()
