"""A reprocess worker SIGKILLed mid-request resumes from its durable cursor.

Everything runs as real `events-worker` processes on one chdb directory (one
process at a time) or on the session's ClickHouse server: `run usage` stores
the events of customers the catalog does not know yet; `reprocess request`
publishes a request; `run reprocess` (rate-limited so the request takes
seconds) is killed once part of it is re-published, then restarted and
finishes; `run usage` with the full catalog
prices everything. The invoice must equal an independent computation, and
the events topic must hold every unprocessed event re-published under its
original key, at most one page more than once.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from tests.integration.workers import (
    catalog_without,
    expected_invoice,
    never_priced,
    produce,
    run_cli,
    settings_from_env,
    start_cli,
    static_member,
    stderr_tail,
    stored_invoice,
    wait_until,
    worker_env,
    write_catalog,
)
from worker.samples.synthetic import build_catalog, generate_events
from worker.stream.producer import event_key
from worker.stream.reprocess_consumer import HEADER_REQUEST_ID
from worker.stream.topics import ensure_topics, worker_topics

PAGE = 100
PARTITIONS = 3


class RepublishedReader:
    """Reads the events topic from the start and keeps the re-published messages."""

    def __init__(self, env: dict[str, str]) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": env["EW_KAFKA_BOOTSTRAP"],
                "group.id": "republished-reader",
                "enable.auto.commit": False,
            }
        )
        self._consumer.assign(
            [TopicPartition(env["EW_EVENTS_TOPIC"], p, 0) for p in range(PARTITIONS)]
        )
        self.messages: list[tuple[str, str, str]] = []  # (request id, key, event id)

    def read(self, seconds: float) -> int:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for message in self._consumer.consume(500, 0.2):
                if message.error() is not None:
                    continue
                headers = dict(message.headers() or [])
                if HEADER_REQUEST_ID in headers:
                    document = json.loads(message.value() or b"{}")
                    self.messages.append(
                        (
                            headers[HEADER_REQUEST_ID].decode(),
                            (message.key() or b"").decode(),
                            document["id"],
                        )
                    )
        return len(self.messages)

    def close(self) -> None:
        self._consumer.close()


def test_killed_reprocess_worker_resumes_and_totals_stay_exact(
    kafka_bootstrap: str, process_store: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    full = build_catalog(customers=4, line_items_per_customer=3)
    initial = catalog_without(catalog_without(full, "cus_2"), "cus_3")
    initial_file = write_catalog(tmp_path, initial, "initial.json")
    full_file = write_catalog(tmp_path, full, "full.json")
    documents = list(generate_events(full, 3000, seed=8, duplicate_rate=0.02))
    env = worker_env(kafka_bootstrap, unique_name)
    env.update({"EW_REPROCESS_GROUP": unique_name("rep"), "EW_REPROCESS_RATE_LIMIT": "300"})
    store = process_store
    settings = settings_from_env(env, PARTITIONS)
    ensure_topics(settings, worker_topics(settings))
    produce(settings, documents)
    keys = {d["id"]: event_key(d) for d in documents}  # as `produce` keyed them
    unprocessed = never_priced(initial, documents)
    assert len(unprocessed) > 10 * PAGE

    usage = ["run", "usage", "--store", store, "--exit-when-idle", "2"]
    first_usage = start_cli(env, *usage, "--catalog", str(initial_file))
    assert first_usage.wait(120) == 0, stderr_tail(first_usage)

    requested = run_cli(
        env,
        *("reprocess", "request", "--tenant", "t1", "--environment", "prod"),
        *("--start", "2025-12-01", "--end", "2026-03-01T00:00:00Z"),
        *("--batch-size", str(PAGE)),
    )
    assert requested.returncode == 0, requested.stderr
    request_id = requested.stdout.decode().strip()
    assert len(request_id) == 36  # a uuid4

    reader = RepublishedReader(env)
    try:
        reprocess = ["run", "reprocess", "--store", store, "--exit-when-idle", "3"]
        # The restart follows a kill: static membership spares the wait for the
        # killed member's session to time out.
        reprocessing = static_member(env, unique_name)
        worker = start_cli(reprocessing, *reprocess)
        deadline = time.monotonic() + 60
        while reader.read(0.5) < 3 * PAGE and time.monotonic() < deadline:
            assert worker.poll() is None, stderr_tail(worker)
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        seen_at_kill = reader.read(0.5)
        assert 3 * PAGE <= seen_at_kill < len(unprocessed)

        restarted = start_cli(reprocessing, *reprocess)
        assert restarted.wait(120) == 0, stderr_tail(restarted)

        def all_read_back() -> bool:
            reader.read(0.2)
            return {event_id for _, _, event_id in reader.messages} >= unprocessed

        wait_until(all_read_back, "every unprocessed event read back from the events topic")
    finally:
        reader.close()

    status = run_cli(
        env, "reprocess", "status", request_id, "--tenant", "t1", "--environment", "prod",
        "--store", store, "--json",
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    progress = json.loads(status.stdout)
    assert progress["state"] == "completed"
    assert progress["found"] == progress["republished"] == len(unprocessed)

    # Every unprocessed event re-published under its original key; repeats at
    # most the one page in flight (not yet saved) at the kill.
    copies = Counter(event_id for _, _, event_id in reader.messages)
    assert set(copies) == unprocessed
    assert len(reader.messages) - len(unprocessed) <= PAGE
    assert {request for request, _, _ in reader.messages} == {request_id}
    for _, key, event_id in reader.messages:
        assert key == keys[event_id]

    last_usage = start_cli(env, *usage, "--catalog", str(full_file))
    assert last_usage.wait(120) == 0, stderr_tail(last_usage)
    expected = expected_invoice(full, documents)
    assert stored_invoice(env, store) == expected
