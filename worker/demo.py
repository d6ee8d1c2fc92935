"""``events-worker demo``: the real pipeline on embedded parts, end to end.

Starts a local tansu broker, opens embedded ClickHouse under ``./data``,
migrates, publishes the sample catalog to the catalog topic, produces
generated usage (with client retries and a few malformed messages), runs the
usage consumer until it is idle with everything committed, and prints one
invoice per customer read back from ClickHouse, plus throughput and lag.
Stops what it started. Nothing needs a server.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from importlib import resources
from typing import Any, TextIO

import orjson
from confluent_kafka import Producer

from worker.dev.local_broker import LocalTansuBroker, local_settings
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.ops.settings import WorkerSettings
from worker.report import render_invoices
from worker.samples.synthetic import generate_events
from worker.store.connect import open_gateway
from worker.store.processed import line_item_totals
from worker.store.schema import migrate
from worker.stream.catalog_source import CatalogPublisher
from worker.stream.producer import event_key, producer_config
from worker.stream.run_usage import run_usage
from worker.stream.topics import ensure_topics, worker_topics

DEMO_STORE = "chdb://./data/clickhouse?database=demo"
MALFORMED = [b"{not json", b'{"tenant_id": 7}', b"\xff\xfe binary"]


def sample_catalog() -> list[dict[str, Any]]:
    """The catalog shipped with the package (two tenants)."""
    data = orjson.loads(resources.files("worker.samples").joinpath("catalog.json").read_bytes())
    assert isinstance(data, list)
    return data


@dataclass(frozen=True, slots=True)
class DemoSummary:
    events: int
    consumed: int
    rows: int
    dead_letters: int
    consume_seconds: float


def run_demo(out: TextIO = sys.stdout, *, events_per_tenant: int = 50_000) -> DemoSummary:
    """Run the whole demo; returns the figures it printed. Blocking, ~1 minute."""
    logging.basicConfig(level=logging.WARNING)
    documents = sample_catalog()
    with LocalTansuBroker() as broker:
        settings = local_settings(
            broker,
            store_url=DEMO_STORE,
            topic_partitions=4,
        )
        out.write(f"broker: local tansu at {broker.bootstrap}; store: {DEMO_STORE}\n")
        _reset_store(settings)
        ensure_topics(settings, worker_topics(settings))
        publisher = CatalogPublisher(settings)
        publisher.upsert_documents(parse_documents(documents))
        out.write(publisher.flush(timeout_s=60).summary() + "\n")
        del publisher  # its connection must not outlive the broker
        produced = _produce(settings, documents, events_per_tenant, out)

        stats = run_usage(settings, exit_when_idle_s=2.0)

    index = CatalogIndex(parse_documents(documents))
    gateway = open_gateway(DEMO_STORE)
    try:
        for document in documents:
            tenant, environment = document["tenant_id"], document["environment_id"]
            out.write(f"\n== tenant {tenant} / {environment} ==\n")
            totals = line_item_totals(gateway, tenant, environment)
            out.write(render_invoices(totals, index, tenant) + "\n")
    finally:
        gateway.close()
    summary = DemoSummary(
        produced, stats.messages, stats.rows, stats.dead_letters, stats.busy_seconds
    )
    out.write(
        f"\n{summary.events:,} messages produced; the usage consumer priced and committed "
        f"{summary.consumed:,} in {summary.consume_seconds:.1f}s from first batch to last "
        f"commit ({summary.consumed / max(summary.consume_seconds, 0.001):,.0f} msgs/s, "
        f"{stats.batches} batches): {summary.rows:,} priced rows, "
        f"{summary.dead_letters} dead letters.\n"
        f"consumer lag at exit: {summary.events - summary.consumed:,} messages "
        f"(everything produced was consumed and committed).\n"
        f"\nThe {len(MALFORMED)} dead letters are deliberate: the demo also sent a line that "
        "is not JSON, one whose tenant_id is a number and one of binary bytes. Each went to "
        "events.dlq with its reason (the `dead letter: <reason> (...)` warnings above), "
        "none stopped a partition.\n"
        "\nLook further (the demo's broker is gone, its store stays):\n"
        f"  events-worker query line-items --store '{DEMO_STORE}' --tenant acme-cloud "
        "--environment prod --external-customer-id cust-0\n"
        f"  events-worker query unprocessed --store '{DEMO_STORE}' --tenant acme-cloud "
        "--environment prod\n"
        "  and the README's first run (events-worker broker, produce, run usage, dlq list).\n"
    )
    return summary


def _reset_store(settings: WorkerSettings) -> None:
    """Fresh ``demo`` database on every run (other databases are left alone)."""
    gateway = open_gateway("chdb://./data/clickhouse")
    try:
        gateway.execute("DROP DATABASE IF EXISTS demo")
    finally:
        gateway.close()
    gateway = open_gateway(settings.store_url)
    try:
        migrate(gateway)
    finally:
        gateway.close()


def _produce(
    settings: WorkerSettings, documents: list[dict[str, Any]], per_tenant: int, out: TextIO
) -> int:
    producer = Producer(producer_config(settings))
    failures: list[str] = []

    def on_delivery(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))

    total = per_tenant * len(documents) + len(MALFORMED)
    sent = 0
    for seed, document in enumerate(documents, start=1):
        events = generate_events(document, per_tenant, seed=seed, duplicate_rate=0.02)
        for event in events:
            payload = orjson.dumps(event)
            while True:
                try:
                    producer.produce(
                        settings.events_topic,
                        payload,
                        event_key(event).encode(),
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
            sent += 1
            if sent % 10_000 == 0:
                producer.poll(0)
                _progress(out, sent, total)
    for payload in MALFORMED:
        producer.produce(settings.events_topic, payload, b"demo:bad", on_delivery=on_delivery)
        sent += 1
    remaining = producer.flush(60)
    _progress(out, sent, total)
    out.write("\n")
    if remaining or failures:
        raise RuntimeError(f"demo: {remaining + len(failures)} messages not delivered")
    return sent


def _progress(out: TextIO, done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    out.write(f"\rproducing [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}")
    out.flush()
