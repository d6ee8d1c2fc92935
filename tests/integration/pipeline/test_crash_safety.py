"""Crash safety: SIGKILL the worker at random moments and between write and commit.

The worker runs as a real `events-worker run usage` process on its own chdb
directory (one process per directory) or on the session's ClickHouse server,
is killed repeatedly and restarted; the final invoice (read back with
`events-worker query line-items --json`) must equal an uninterrupted
computation: nothing missing, nothing twice.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.integration.workers import (
    committed_messages,
    expected_invoice,
    produce,
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
from worker.stream.topics import ensure_topics, worker_topics


def start_worker(env: dict[str, str], store: str, catalog: Path) -> subprocess.Popen[bytes]:
    return start_cli(
        env, "run", "usage", "--store", store, "--catalog", str(catalog), "--exit-when-idle", "3"
    )


def test_killed_and_restarted_worker_counts_every_event_exactly_once(
    kafka_bootstrap: str, process_store: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    catalog = build_catalog(customers=10, line_items_per_customer=4)
    catalog_file = write_catalog(tmp_path, catalog)
    documents = list(generate_events(catalog, 8_000, seed=21, duplicate_rate=0.03))
    # Every start but the first follows a kill: static membership spares the
    # wait for the killed member's session to time out.
    env = static_member(worker_env(kafka_bootstrap, unique_name), unique_name)
    store = process_store
    settings = settings_from_env(env, partitions=3)
    ensure_topics(settings, worker_topics(settings))
    produce(settings, documents)

    kills = 0
    # Between write and commit, deterministically (fault injection): after the
    # first write, and with committed batches before the crash ...
    for crash_after in (3, 1, 4):
        crashing = start_worker(
            dict(env, EW_FAULT_CRASH_AFTER_WRITES=str(crash_after)), store, catalog_file
        )
        assert crashing.wait(120) == 137, stderr_tail(crashing)
        kills += 1
    # ... then SIGKILL mid-stream, each time after the restarted worker committed
    # a batch of its own (so it had joined and was working), then a run to the end.
    # Small batches keep the rest of the stream longer than noticing a commit
    # takes, so the kill lands with work left even on a fast store.
    slow = dict(env, EW_BATCH_MAX_EVENTS="20")
    worker = start_worker(slow, store, catalog_file)
    for kill in range(2):
        before = committed_messages(env)
        wait_until(lambda n=before: committed_messages(env) > n, "a restarted worker committed")
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(30) == -signal.SIGKILL, "killed while still running"
        assert committed_messages(env) < len(documents), "killed before the end"
        kills += 1
        # The last run, to the end, needs no small batches.
        worker = start_worker(env if kill == 1 else slow, store, catalog_file)
    assert worker.wait(300) == 0, stderr_tail(worker)

    assert kills == 5
    expected = expected_invoice(catalog, documents)
    assert stored_invoice(env, store) == expected
