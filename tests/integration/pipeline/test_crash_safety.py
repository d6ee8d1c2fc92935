"""Crash safety: SIGKILL the worker at random moments and between write and commit.

The worker runs as a real `events-worker run usage` process on its own chdb
directory (one process per directory), is killed repeatedly and restarted;
the final invoice (read back with `events-worker query line-items --json`)
must equal an uninterrupted computation: nothing missing, nothing twice.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from tests.integration.pipeline.test_usage_consumer import expected_invoice
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.ops.settings import WorkerSettings
from worker.samples.synthetic import build_catalog, generate_events
from worker.stream.topics import ensure_topics, worker_topics

CLI = [sys.executable, "-m", "worker.cli"]


def worker_env(bootstrap: str, unique_name: Callable[[str], str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "EW_KAFKA_BOOTSTRAP": bootstrap,
            "EW_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "EW_EVENTS_TOPIC": unique_name("events"),
            "EW_DLQ_TOPIC": unique_name("dlq"),
            "EW_CATALOG_TOPIC": unique_name("catalog"),
            "EW_REPROCESS_TOPIC": unique_name("reprocess"),
            "EW_USAGE_GROUP": unique_name("usage"),
            "EW_TOPIC_PARTITIONS": "3",
            "EW_BATCH_MAX_EVENTS": "400",
            "EW_BATCH_MAX_WAIT_MS": "100",
            "EW_LOG_LEVEL": "WARNING",
            "EW_HTTP_PORT": "0",  # ephemeral: never collide with another run on this machine
        }
    )
    return env


def produce(env: dict[str, str], documents: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": env["EW_KAFKA_BOOTSTRAP"], "linger.ms": 5})
    for document in documents:
        key = f"t1:prod:{document['external_customer_id']}".encode()
        producer.produce(env["EW_EVENTS_TOPIC"], orjson.dumps(document), key)
    assert producer.flush(30) == 0


def start_worker(env: dict[str, str], store: str, catalog: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *CLI,
            "run",
            "usage",
            "--store",
            store,
            "--catalog",
            str(catalog),
            "--exit-when-idle",
            "3",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stored_invoice(env: dict[str, str], store: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [
            *CLI,
            "query",
            "line-items",
            "--tenant",
            "t1",
            "--environment",
            "prod",
            "--store",
            store,
            "--json",
        ],
        env=env,
        capture_output=True,
        check=True,
        timeout=120,
    )
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def test_killed_and_restarted_worker_counts_every_event_exactly_once(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    catalog = build_catalog(customers=10, line_items_per_customer=4)
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(json.dumps(catalog))
    documents = list(generate_events(catalog, 8_000, seed=21, duplicate_rate=0.03))
    env = worker_env(kafka_bootstrap, unique_name)
    store = f"chdb://{tmp_path / 'clickhouse'}"
    settings = WorkerSettings(
        kafka_bootstrap=kafka_bootstrap,
        events_topic=env["EW_EVENTS_TOPIC"],
        dlq_topic=env["EW_DLQ_TOPIC"],
        catalog_topic=env["EW_CATALOG_TOPIC"],
        reprocess_topic=env["EW_REPROCESS_TOPIC"],
        topic_partitions=3,
    )
    ensure_topics(settings, worker_topics(settings))
    produce(env, documents)

    kills = 0
    # Between write and commit, deterministically (fault injection), five times ...
    for crash_after in (3, 2, 4, 1, 5):
        crashing = start_worker(
            dict(env, EW_FAULT_CRASH_AFTER_WRITES=str(crash_after)), store, catalog_file
        )
        assert crashing.wait(120) == 137, _stderr(crashing)
        kills += 1
    # ... then SIGKILL at arbitrary moments, then a run to the end.
    rng = random.Random(4)
    worker = start_worker(env, store, catalog_file)
    for _ in range(2):
        time.sleep(rng.uniform(3.0, 4.5))
        if worker.poll() is not None:
            break
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        kills += 1
        worker = start_worker(env, store, catalog_file)
    assert worker.wait(300) == 0, _stderr(worker)

    assert kills >= 5
    index = CatalogIndex(parse_documents(catalog))
    expected = [total.to_json() for total in expected_invoice(index, documents)]
    assert stored_invoice(env, store) == expected


def _stderr(process: subprocess.Popen[bytes]) -> str:
    return process.stderr.read().decode(errors="replace")[-3000:] if process.stderr else ""
