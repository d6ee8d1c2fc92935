"""Delivery edges on the real broker and chdb: SIGTERM, a DLQ outage, fallback ids.

Each test compares the final invoice with the independent reference
(`tests/reference.py`) and checks the committed offsets against what the
store holds, so a batch written twice, written but not committed, or
committed but not written fails it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.workers import (
    MALFORMED,
    MALFORMED_MESSAGES,
    committed_messages,
    dead_letter_headers,
    expected_invoice,
    make_consumer,
    produce,
    query_store,
    settings_for,
    settings_from_env,
    start_cli,
    stderr_tail,
    stored_invoice,
    stored_totals,
    wait_until,
    worker_env,
    write_catalog,
)
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.samples.synthetic import build_catalog, generate_events
from worker.store.connect import open_gateway
from worker.store.schema import migrate
from worker.stream.dlq import DeadLetterError, DeadLetterProducer
from worker.stream.topics import ensure_topics, worker_topics

RAW_COUNT = "SELECT count() FROM events FINAL"


def usage(store: str, catalog_file: Path, *extra: str) -> tuple[str, ...]:
    return ("run", "usage", "--store", store, "--catalog", str(catalog_file), *extra)


def test_sigterm_finishes_the_batch_in_hand_commits_it_and_exits_0(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    catalog = build_catalog(customers=8, line_items_per_customer=3, seed=51)
    catalog_file = write_catalog(tmp_path, catalog)
    documents = list(generate_events(catalog, 6000, seed=51))  # every id distinct
    env = {**worker_env(kafka_bootstrap, unique_name), "EW_BATCH_MAX_EVENTS": "150"}
    store = f"chdb://{tmp_path / 'store'}"
    settings = settings_from_env(env, 3)
    ensure_topics(settings, worker_topics(settings))
    produce(settings, documents)

    worker = start_cli(env, *usage(store, catalog_file))  # no idle exit: only the signal
    wait_until(lambda: committed_messages(env) > 0, "a first batch committed", 120)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0, stderr_tail(worker)

    committed = committed_messages(env)
    assert 0 < committed < len(documents), "stopped mid-stream by the signal"
    # Finished and committed: what it wrote is exactly what it committed.
    assert query_store(store, RAW_COUNT) == [[committed]]

    rest = start_cli(env, *usage(store, catalog_file, "--exit-when-idle", "1"))
    assert rest.wait(120) == 0, stderr_tail(rest)
    assert stored_invoice(env, store) == expected_invoice(catalog, documents)


class FlakyDeadLetters:
    """A real DLQ producer that refuses every dead letter while ``down`` is set."""

    def __init__(self, inner: DeadLetterProducer) -> None:
        self.inner = inner
        self.down = threading.Event()

    def send(self, *args: Any, **kwargs: Any) -> None:
        if self.down.is_set():
            raise DeadLetterError("simulated outage: the DLQ topic refuses writes")
        self.inner.send(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_dlq_outage_commits_nothing_and_the_redelivered_batch_keeps_its_fallback_ids(
    kafka_bootstrap: str,
    chdb_path: Path,
    chdb_database: Any,
    unique_name: Callable[[str], str],
) -> None:
    store = f"chdb://{chdb_path}?database={chdb_database.database}"
    catalog = build_catalog(customers=6, line_items_per_customer=3, seed=53)
    documents = list(generate_events(catalog, 900, seed=53, duplicate_rate=0.03))
    without_id = range(0, len(documents), 3)
    documents = [
        {k: v for k, v in d.items() if k != "id" or n % 3} for n, d in enumerate(documents)
    ]
    settings = settings_for(kafka_bootstrap, store, unique_name)
    ensure_topics(settings, worker_topics(settings))
    gateway = open_gateway(store)
    migrate(gateway)
    index = CatalogIndex(parse_documents(catalog))
    env = {"EW_KAFKA_BOOTSTRAP": kafka_bootstrap, "EW_USAGE_GROUP": settings.usage_group,
           "EW_EVENTS_TOPIC": settings.events_topic}  # fmt: skip
    produce(settings, documents, MALFORMED_MESSAGES)
    total = len(documents) + len(MALFORMED_MESSAGES)
    dlq = FlakyDeadLetters(DeadLetterProducer(settings))
    dlq.down.set()
    first = make_consumer(settings, gateway, index, idle_s=300.0, max_events=5000, dead_letters=dlq)
    second = make_consumer(settings, gateway, index, idle_s=300.0, max_events=5000)
    runs = [threading.Thread(target=first.run), threading.Thread(target=second.run)]
    try:
        runs[0].start()
        wait_until(lambda: first.stats.retries >= 3, "the batch with dead letters stuck")
        stuck_at = committed_messages(env)
        assert stuck_at < total  # the batch holding the malformed messages is not committed
        [(written,)] = gateway.query("SELECT count() FROM events FINAL")
        assert written > stuck_at  # ... though its rows are written: it will be written again
        retries = first.stats.retries
        wait_until(lambda: first.stats.retries >= retries + 3, "still retrying")
        assert committed_messages(env) == stuck_at  # ... and nothing more while the DLQ is down

        runs[1].start()  # a rebalance: the stuck batch is dropped and delivered again
        wait_until(lambda: first.stats.abandoned > 0, "the stuck batch abandoned")
        dlq.down.clear()
        wait_until(lambda: committed_messages(env) == total, "everything committed", 120)
    finally:
        first.stop()
        second.stop()
        for run in runs:
            run.join(60)
        gateway.close()
    assert not any(run.is_alive() for run in runs)
    letters = dead_letter_headers(settings, len(MALFORMED))
    assert sorted(h["reason"].decode() for h in letters) == sorted(r for _, r in MALFORMED)
    # The reference needs ids only to tell events apart: any distinct ones will do.
    named = [{"id": f"no-id-{n}", **d} if "id" not in d else d for n, d in enumerate(documents)]
    assert stored_totals(settings) == expected_invoice(catalog, named)
    # Written, abandoned, delivered again and written again: each event still
    # has one raw row, the id-less ones under their topic-partition-offset.
    gateway = open_gateway(store)
    try:
        ids = [event_id for (event_id,) in gateway.query("SELECT id FROM events FINAL")]
    finally:
        gateway.close()
    fallback = [event_id for event_id in ids if event_id.startswith(f"{settings.events_topic}-")]
    assert len(ids) == len({d["id"] for d in named})
    assert len(fallback) == len(set(fallback)) == len(without_id)
