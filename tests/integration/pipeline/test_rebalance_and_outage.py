"""Rebalance and store outage on the real broker and ClickHouse.

* A second worker joins mid-stream and leaves again: the totals equal an
  uninterrupted, independent computation.
* ClickHouse fails for a while (a gateway that raises for N seconds): the
  worker pauses, retries, never loses or double-counts, and resumes by itself.
  (`test_server_outage.py` stops and restarts a real server instead.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.support import ChdbTarget
from tests.integration.workers import (
    MALFORMED_MESSAGES,
    FlakyGateway,
    expected_invoice,
    make_consumer,
    produce,
    settings_for,
    stored_totals,
    wait_until,
    write_catalog,
)
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.ops.settings import WorkerSettings
from worker.samples.synthetic import build_catalog, generate_events
from worker.store.connect import open_gateway
from worker.store.schema import migrate
from worker.stream.topics import ensure_topics, worker_topics


def setup(
    kafka_bootstrap: str,
    store: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> tuple[WorkerSettings, dict[str, Any], CatalogIndex]:
    catalog = build_catalog(customers=12, line_items_per_customer=4)
    write_catalog(tmp_path, catalog)
    settings = settings_for(kafka_bootstrap, store, unique_name)
    ensure_topics(settings, worker_topics(settings))
    gateway = open_gateway(settings.store_url)
    migrate(gateway)
    gateway.close()
    return settings, catalog, CatalogIndex(parse_documents(catalog))


def test_a_worker_joining_and_leaving_mid_stream_changes_no_total(
    kafka_bootstrap: str, store_under_test: str,
    unique_name: Callable[[str], str], tmp_path: Path,
) -> None:  # fmt: skip
    settings, catalog, index = setup(kafka_bootstrap, store_under_test, unique_name, tmp_path)
    documents = list(generate_events(catalog, 9000, seed=31, duplicate_rate=0.05))
    chunks = [documents[i : i + 500] for i in range(0, len(documents), 500)]
    gateway = open_gateway(settings.store_url)
    first = make_consumer(settings, gateway, index, idle_s=4.0)
    second = make_consumer(settings, gateway, index, idle_s=120.0)
    runner = threading.Thread(target=first.run)
    helper = threading.Thread(target=second.run)
    produced = 0

    def feed() -> None:
        """Produce the next chunk and wait until the group has consumed it."""
        nonlocal produced
        chunk = chunks.pop(0)
        produce(settings, chunk, MALFORMED_MESSAGES)
        produced += len(chunk) + len(MALFORMED_MESSAGES)
        wait_until(
            lambda: first.stats.messages + second.stats.messages >= produced, "chunk consumed", 60
        )

    try:
        runner.start()
        feed()
        # the first worker holds state for everyone
        wait_until(lambda: first.stats.batches > 0, "a first batch", 60)
        helper.start()
        while second.stats.batches == 0 and chunks:  # stream on until the second one works
            feed()
        for _ in range(3):  # both share the stream for a while
            if chunks:
                feed()
        assert second.stats.batches > 0, "the second worker never took part"
        second.stop()  # ... then the second one leaves mid-stream
        helper.join(60)
        while chunks:  # the first one takes every partition back, with the others' history
            feed()
        runner.join(120)
    finally:
        first.stop()
        second.stop()
        gateway.close()
    assert not runner.is_alive() and not helper.is_alive()
    assert first.stats.rebalances >= 3 and second.stats.messages > 0
    assert stored_totals(settings) == expected_invoice(catalog, documents)


def test_store_outage_pauses_retries_and_loses_nothing(
    kafka_bootstrap: str, chdb_path: Path, chdb_database: ChdbTarget,
    unique_name: Callable[[str], str], tmp_path: Path,
) -> None:  # fmt: skip
    # Embedded chdb cannot go away: a wrapper fails its calls. The server's
    # outage is real (test_server_outage.py).
    store = f"chdb://{chdb_path}?database={chdb_database.database}"
    settings, catalog, index = setup(kafka_bootstrap, store, unique_name, tmp_path)
    documents = list(generate_events(catalog, 6000, seed=32, duplicate_rate=0.05))
    flaky = FlakyGateway(open_gateway(settings.store_url))
    consumer = make_consumer(settings, flaky, index, idle_s=3.0)
    produce(settings, documents[:2000], MALFORMED_MESSAGES)
    runner = threading.Thread(target=consumer.run)
    runner.start()
    try:
        wait_until(lambda: consumer.stats.batches > 0, "a first batch", 60)
        flaky.down.set()  # ClickHouse goes away
        produce(settings, documents[2000:], MALFORMED_MESSAGES)
        wait_until(lambda: consumer.stats.retries > 0, "a batch stuck on the store", 60)
        committed_before, retries = consumer.stats.messages, consumer.stats.retries
        wait_until(lambda: consumer.stats.retries >= retries + 5, "it keeps retrying", 60)
        assert consumer.stats.messages == committed_before  # ... and commits nothing meanwhile
        flaky.down.clear()
        runner.join(120)
    finally:
        consumer.stop()
        flaky.inner.close()
    assert not runner.is_alive()
    assert flaky.failures > 0 and consumer.stats.retries > 0
    assert stored_totals(settings) == expected_invoice(catalog, documents)
