"""A real ClickHouse outage: the server the worker writes to dies and comes back.

A worker process prices events into a local ClickHouse server of its own; the
server is SIGKILLed mid-stream (a crash) and, later, restarted on the same
data directory and ports. The worker must pause without leaving its group,
commit nothing while the store is down, say so once in its own words (and
once when it resumes), resume by itself, and end with totals equal to an
independent rating.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.workers import (
    CLI,
    committed_messages,
    expected_invoice,
    produce,
    settings_from_env,
    stored_invoice,
    wait_until,
    worker_env,
    write_catalog,
)
from worker.dev.clickhouse_server import LocalClickHouseServer
from worker.samples.synthetic import build_catalog, generate_events
from worker.stream.topics import ensure_topics, worker_topics

PARTITIONS = 3
PAUSED = "consumption paused, nothing committed"
RESUMED = "resumed after"  # ... N failed attempts in S s


def _log_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def _said(path: Path, phrase: str) -> list[dict[str, Any]]:
    return [line for line in _log_lines(path) if phrase in str(line.get("event", ""))]


def _retries(path: Path) -> list[dict[str, Any]]:
    return [line for line in _said(path, PAUSED) if "attempt" in line]


def test_a_server_crash_pauses_the_worker_which_resumes_on_restart_losing_nothing(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    catalog = build_catalog(customers=8, line_items_per_customer=3)
    catalog_file = write_catalog(tmp_path, catalog)
    documents = list(generate_events(catalog, 4_000, seed=51, duplicate_rate=0.03))
    log_path = tmp_path / "worker.log"
    env = worker_env(kafka_bootstrap, unique_name)
    settings = settings_from_env(env, PARTITIONS)
    ensure_topics(settings, worker_topics(settings))
    produce(settings, documents[:2_000])
    with LocalClickHouseServer(tmp_path / "data", run_dir=tmp_path / "run") as server:
        # DEBUG: the retries after the first are logged at DEBUG only.
        env.update({"EW_STORE_URL": server.url, "EW_LOG_LEVEL": "DEBUG"})
        argv = [*CLI, "run", "usage", "--catalog", str(catalog_file)]
        with log_path.open("wb") as log:
            worker = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
        try:
            wait_until(lambda: committed_messages(env, PARTITIONS) > 0, "a first commit")
            server.kill()  # ClickHouse crashes
            before = committed_messages(env, PARTITIONS)
            produce(settings, documents[2_000:])
            # Paused, not gone: it retries the same batch while the store is down.
            wait_until(lambda: len(_retries(log_path)) >= 3, "three failed attempts")
            assert committed_messages(env, PARTITIONS) == before
            assert worker.poll() is None

            server.start()  # the same data directory on the same ports
            wait_until(
                lambda: committed_messages(env, PARTITIONS) >= len(documents),
                "everything committed",
            )
        finally:
            worker.terminate()
            assert worker.wait(60) == 0
        invoice = stored_invoice(env, server.url)

    assert invoice == expected_invoice(catalog, documents)
    # Said once when it paused, once when it resumed; warnings in between: none.
    warnings = [line for line in _log_lines(log_path) if line.get("level") == "warning"]
    said = [str(line["event"]) for line in warnings]
    assert [s.split(";")[0] if s.startswith(PAUSED) else s[: len(RESUMED)] for s in said] == [
        PAUSED,
        RESUMED,
    ], said
    assert "cannot reach ClickHouse" in said[0]  # its own words, one line
    # It kept its partitions through the outage: no rebalance between pause and resume.
    events = [str(line.get("event", "")) for line in _log_lines(log_path)]
    paused_at = next(i for i, event in enumerate(events) if event.startswith(PAUSED))
    resumed_at = next(i for i, event in enumerate(events) if event.startswith(RESUMED))
    assert paused_at < resumed_at
    between = events[paused_at:resumed_at]
    assert not [event for event in between if event.startswith(("revoked", "assigned", "lost"))]
