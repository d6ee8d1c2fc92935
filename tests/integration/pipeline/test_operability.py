"""Metrics, health probes and logs of the usage consumer on tansu + chdb (issue 6).

The usage consumer runs in a thread with the health server on an ephemeral
port: `/metrics` is scraped during and after the run and must agree with
ClickHouse and the DLQ; a processor that blocks makes `/healthz` fail and
recover; the JSON logs carry batch and dead-letter context and never a secret.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.workers import (
    MALFORMED,
    MALFORMED_MESSAGES,
    expected_invoice,
    produce,
    settings_for,
    write_catalog,
)
from worker.domain.catalog import load_catalog_file
from worker.domain.catalog_index import CatalogIndex
from worker.domain.validation import EventLimits
from worker.ops.health import HealthServer, LoopHealth, StoreProbe
from worker.ops.logging import configure_logging, secret_values
from worker.ops.metrics import Metrics
from worker.ops.settings import WorkerSettings
from worker.samples.synthetic import build_catalog, generate_events
from worker.store.connect import open_gateway
from worker.store.schema import migrate
from worker.stream.dlq import DeadLetterProducer
from worker.stream.run_usage import run_usage
from worker.stream.runtime import LoopOptions
from worker.stream.topics import ensure_topics, worker_topics
from worker.stream.usage_batch import PreparedBatch, SourceMessage, UsageBatchProcessor
from worker.stream.usage_consumer import LoopStats, UsageConsumer

SASL_PASSWORD = "s3cr3t-sasl-pa55word"
UNKNOWN_CUSTOMER_EVENTS = 5

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(port: int) -> Samples:
    status, text = http_get(port, "/metrics")
    assert status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def values(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


@pytest.fixture
def json_logs() -> Iterator[Callable[[WorkerSettings], io.StringIO]]:
    """Install the JSON log handler into a buffer; restore logging afterwards."""
    root = logging.getLogger()
    level = root.level
    installed: list[logging.Handler] = []

    def install(settings: WorkerSettings) -> io.StringIO:
        buffer = io.StringIO()
        installed.append(configure_logging("INFO", secrets=secret_values(settings), stream=buffer))
        return buffer

    try:
        yield install
    finally:
        for handler in installed:
            root.removeHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()


def repeated_values(catalog: dict[str, Any], documents: list[dict[str, Any]]) -> int:
    """Events of COUNT_UNIQUE line items whose value their period already counted,
    by the independent reference (every synthetic event carries its value)."""
    unique = {m["id"] for m in catalog["meters"] if m["aggregation"]["type"] == "COUNT_UNIQUE"}
    price_meter = {p["id"]: p["meter_id"] for p in catalog["prices"]}
    items = {
        item["id"]
        for subscription in catalog["subscriptions"]
        for item in subscription["line_items"]
        if (item.get("meter_id") or price_meter[item["price_id"]]) in unique
    }
    return sum(
        line["event_count"] - int(Decimal(line["qty_total"]))
        for line in expected_invoice(catalog, documents)
        if line["sub_line_item_id"] in items
    )


def unknown_customer_events() -> list[dict[str, Any]]:
    return [
        {
            "id": f"nobody-{i}",
            "tenant_id": "t1",
            "environment_id": "prod",
            "event_name": "api_call",
            "external_customer_id": "nobody-at-all",
            "timestamp": "2026-02-10T00:00:00Z",
            "properties": {},
        }
        for i in range(UNKNOWN_CUSTOMER_EVENTS)
    ]


def test_metrics_scraped_during_a_run_agree_with_clickhouse_and_the_dlq(
    kafka_bootstrap: str,
    store_under_test: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    json_logs: Callable[[WorkerSettings], io.StringIO],
) -> None:
    catalog = build_catalog(customers=12, line_items_per_customer=4)
    catalog_file = write_catalog(tmp_path, catalog)
    documents = list(generate_events(catalog, 3000, seed=11, duplicate_rate=0.05))
    documents += unknown_customer_events()
    settings = settings_for(kafka_bootstrap, store_under_test, unique_name).model_copy(
        update={"kafka_extra": {"sasl.username": "svc", "sasl.password": SASL_PASSWORD}}
    )
    logs = json_logs(settings)
    ensure_topics(settings, worker_topics(settings))
    produce(settings, documents, MALFORMED_MESSAGES)

    metrics = Metrics()
    health = LoopHealth(60.0, metrics=metrics)
    result: list[LoopStats] = []
    with HealthServer(metrics, health, port=0, host="127.0.0.1") as server:
        assert http_get(server.port, "/readyz")[0] == 503  # nothing loaded yet
        runner = threading.Thread(
            target=lambda: result.append(
                run_usage(
                    settings,
                    catalog_file=str(catalog_file),
                    exit_when_idle_s=2.0,
                    metrics=metrics,
                    health=health,
                )
            )
        )
        started = time.time()
        runner.start()
        ready_seen, live_always, assigned_seen, fingerprints_seen = False, True, 0.0, 0.0
        during: Samples = {}
        # Per-partition lag gauges go with the partitions at exit, so the last
        # scrape may already miss them: keep every value seen.
        lags: dict[tuple[tuple[str, str], ...], float] = {}
        while runner.is_alive():
            ready_seen |= http_get(server.port, "/readyz")[0] == 200
            live_always &= http_get(server.port, "/healthz")[0] == 200
            during = scrape(server.port)
            lags.update(values(during, "events_worker_consumer_lag"))
            assigned_seen = max(assigned_seen, value(during, "events_worker_assigned_partitions"))
            fingerprints_seen = max(
                fingerprints_seen, value(during, "events_worker_dedup_fingerprints")
            )
            runner.join(0.2)
        after = scrape(server.port)
    assert result, "run_usage raised"
    stats = result[0]

    assert ready_seen and live_always
    assert assigned_seen == settings.topic_partitions
    assert during, "scraped while running"

    produced = len(documents) + len(MALFORMED)
    assert stats.messages == produced
    assert value(after, "events_worker_messages_consumed_total") == produced
    assert value(after, "events_worker_events_processed_total") == len(documents)
    assert value(after, "events_worker_batches_committed_total") == stats.batches
    gateway = open_gateway(settings.store_url)
    try:
        [(stored_rows,)] = gateway.query("SELECT count() FROM events_processed FINAL")
        [(stored_hashes,)] = gateway.query(
            "SELECT uniqExact(sub_line_item_id, period_id, unique_hash) FROM events_processed"
        )
    finally:
        gateway.close()
    assert stored_rows > 0
    assert value(after, "events_worker_processed_rows_inserted_total") == stored_rows == stats.rows

    dlq = values(after, "events_worker_dlq_messages_total")
    assert sum(dlq.values()) == len(MALFORMED)
    for _, reason in MALFORMED:
        assert value(after, "events_worker_dlq_messages_total", reason=reason) == 1
    assert (
        value(after, "events_worker_events_unresolved_total", reason="unknown_customer")
        == UNKNOWN_CUSTOMER_EVENTS
    )
    assert value(after, "events_worker_duplicates_total", kind="already_processed") > 0
    # A COUNT_UNIQUE line counts each distinct value once: its other events are repeats.
    repeats = repeated_values(catalog, documents)
    assert repeats > 0
    assert value(after, "events_worker_duplicates_total", kind="repeated_value") == repeats

    # A fresh store: every state is covered, so only repeats go to ClickHouse,
    # and the fingerprints held never exceed the hashes stored; all are dropped
    # with the partitions at exit.
    assert value(after, "events_worker_dedup_store_lookups_total") < stored_rows // 2
    assert 0 < fingerprints_seen <= stored_hashes
    assert value(after, "events_worker_dedup_fingerprints") == 0

    assert value(after, "events_worker_batch_messages_count") == stats.batches
    assert value(after, "events_worker_batch_messages_sum") == produced
    assert value(after, "events_worker_batch_rows_sum") == stored_rows
    for stage in ("prepare", "write", "dead_letters", "commit"):
        assert value(after, "events_worker_stage_duration_seconds_count", stage=stage) == (
            stats.batches
        )
        assert value(after, "events_worker_stage_duration_seconds_sum", stage=stage) > 0
    for table in ("raw_events", "processed_events"):
        assert (
            value(after, "events_worker_clickhouse_insert_duration_seconds_count", table=table)
            == stats.batches
        )
        assert value(after, "events_worker_clickhouse_insert_errors_total", table=table) == 0
    assert 0 < value(after, "events_worker_event_commit_lag_seconds_count") <= len(documents)
    # Synthetic events are stamped in early 2026: their lag to the commit is positive.
    assert value(after, "events_worker_event_commit_lag_seconds_sum") > 0

    assert lags and all(v >= 0 for v in lags.values())
    assert {dict(labels)["topic"] for labels in lags} == {settings.events_topic}
    assert value(after, "events_worker_assigned_partitions") == 0  # closed: all revoked
    assert value(after, "events_worker_rebalances_total", kind="assign") >= 1
    assert value(after, "events_worker_rebalances_total", kind="revoke") >= 1
    assert started <= value(after, "events_worker_last_commit_timestamp_seconds") <= time.time()
    assert started <= value(after, "events_worker_loop_heartbeat_timestamp_seconds")
    assert value(after, "events_worker_catalog_entities", kind="customer") == 12
    assert value(after, "events_worker_catalog_entities", kind="line_item") == 48
    assert value(after, "events_worker_catalog_updates_total") == 1
    assert 0 <= value(after, "events_worker_catalog_age_seconds") < 600
    for state in ("pending", "running", "completed", "failed"):
        assert value(after, "events_worker_reprocess_requests", state=state) == 0

    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    batches = [line for line in lines if line["event"] == "batch committed"]
    assert len(batches) == stats.batches
    assert sum(line["messages"] for line in batches) == produced
    assert all({"durations_ms", "offsets", "rows", "level", "timestamp"} <= set(b) for b in batches)
    dead = [line for line in lines if line["event"].startswith("dead letter: ")]
    assert all(line["event"].startswith(f"dead letter: {line['reason']} (") for line in dead)
    assert sorted(line["reason"] for line in dead) == sorted(reason for _, reason in MALFORMED)
    assert all({"topic", "partition", "offset", "tenant"} <= set(line) for line in dead)
    assert any(line.get("logger") == "librdkafka" for line in lines)  # bridged, as JSON
    assert SASL_PASSWORD not in logs.getvalue()


class BlockingProcessor(UsageBatchProcessor):
    """Blocks in ``prepare`` of the first batch until released."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered = threading.Event()
        self.release = threading.Event()

    def prepare(self, messages: Sequence[SourceMessage]) -> PreparedBatch:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(60)
        return super().prepare(messages)


def wait_for_status(port: int, path: str, expected: int, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    status, body = http_get(port, path)
    while status != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        status, body = http_get(port, path)
    assert status == expected, f"{path}: {status} {body}"
    return body


def test_healthz_fails_while_the_loop_stalls_and_recovers(
    kafka_bootstrap: str,
    store_under_test: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    catalog = build_catalog(customers=4, line_items_per_customer=2)
    catalog_file = write_catalog(tmp_path, catalog)
    documents = list(generate_events(catalog, 200, seed=3))
    settings = settings_for(kafka_bootstrap, store_under_test, unique_name)
    ensure_topics(settings, worker_topics(settings))
    produce(settings, documents, MALFORMED_MESSAGES)

    gateway = open_gateway(settings.store_url)
    metrics = Metrics()
    health = LoopHealth(1.0, metrics=metrics)
    health.watch_store(StoreProbe(gateway.ping))
    try:
        migrate(gateway)
        processor = BlockingProcessor(
            gateway,
            CatalogIndex(load_catalog_file(str(catalog_file))),
            limits=EventLimits(),
            metrics=metrics,
        )
        health.catalog_loaded()
        consumer = UsageConsumer(
            settings,
            processor,
            DeadLetterProducer(settings),
            metrics=metrics,
            health=health,
            loop=LoopOptions(exit_when_idle_s=2.0),
        )
        with HealthServer(metrics, health, port=0, host="127.0.0.1") as server:
            assert http_get(server.port, "/healthz")[0] == 200  # idle before anything
            runner = threading.Thread(target=consumer.run)
            runner.start()
            try:
                assert processor.entered.wait(60)
                body = wait_for_status(server.port, "/healthz", 503, timeout_s=10)
                assert "stalled" in body or "overdue" in body
                assert http_get(server.port, "/readyz")[0] == 200  # assigned, loaded, store up
            finally:
                processor.release.set()
            wait_for_status(server.port, "/healthz", 200, timeout_s=10)
            runner.join(120)
            assert not runner.is_alive()
            assert http_get(server.port, "/healthz")[0] == 200
    finally:
        health.watch_store(None)
        gateway.close()
    assert consumer.stats.messages == len(documents) + len(MALFORMED)
    assert value(scrape_metrics(metrics), "events_worker_batches_committed_total") >= 1


def scrape_metrics(metrics: Metrics) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples
