"""A real Prometheus sees the "no commits while lag exists" alert fire and resolve (issue 18).

Debian's ``prometheus`` (``make test-tools``) scrapes a real usage consumer on
tansu + chdb through its own ``/metrics`` endpoint and evaluates the rules of
``deploy/k8s/prometheusrule.yaml``. Only the stall threshold and ``for:`` of
``EventsWorkerNoCommits`` are shortened, and the scrape and evaluation
intervals are 1 s (here only). The worker commits a first batch, then its
processor blocks (as a store that hangs would) with messages waiting: the
alert must go pending, then firing; once released, the worker commits again
and the alert must resolve while the worker keeps running. (The first version
of the rule, on measured lag alone, never fired here: the lag gauge is frozen
while a batch is stuck, at 0 in this run.)
"""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.support import ChdbTarget
from tests.integration.workers import produce, settings_for, write_catalog
from tests.prometheus_rules import promtool, rule_groups, tool, write_rule_file
from worker.domain.catalog import load_catalog_file
from worker.domain.catalog_index import CatalogIndex
from worker.domain.validation import EventLimits
from worker.ops.health import HealthServer, LoopHealth
from worker.ops.metrics import Metrics
from worker.samples.synthetic import build_catalog, generate_events
from worker.store.connect import open_gateway
from worker.store.schema import migrate
from worker.stream.dlq import DeadLetterProducer
from worker.stream.topics import ensure_topics, worker_topics
from worker.stream.usage_batch import PreparedBatch, SourceMessage, UsageBatchProcessor
from worker.stream.usage_consumer import UsageConsumer

ALERT = "EventsWorkerNoCommits"
#: Seconds without a commit (600 in production), without a loop iteration (120) and the
#: alert's `for:` (5m), for this test.
STALL_S = 3
LOOP_STALL_S = 2
FOR = "3s"
EVENTS = 2100  # three batches of 700: messages still wait while the second one stalls


class StallingProcessor(UsageBatchProcessor):
    """Blocks in ``prepare`` of the second batch until released."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches = 0
        self.stalled = threading.Event()
        self.release = threading.Event()

    def prepare(self, messages: Sequence[SourceMessage]) -> PreparedBatch:
        self.batches += 1
        if self.batches == 2:
            self.stalled.set()
            assert self.release.wait(120)
        return super().prepare(messages)


def stall_rules(directory: Path) -> Path:
    """The manifest's rules with only the stall alert's threshold and `for:` shortened."""
    groups = copy.deepcopy(rule_groups())
    [rule] = [r for g in groups for r in g["rules"] if r.get("alert") == ALERT]
    for production, short in (("> 600", f"> {STALL_S}"), ("> 120", f"> {LOOP_STALL_S}")):
        assert rule["expr"].count(production) == 1, f"{production} moved: update this test"
        rule["expr"] = rule["expr"].replace(production, short)
    rule["for"] = FOR
    return write_rule_file(directory / "rules.yaml", groups)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """``start(worker_port) -> base URL`` of a Prometheus scraping the worker every second."""
    processes: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "prometheus.log"

    def start(worker_port: int) -> str:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(stall_rules(tmp_path))],
            "scrape_configs": [
                {
                    "job_name": "events-worker",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{worker_port}"], "labels": {"pod": "usage-0"}}
                    ],
                }
            ],
        }
        config_file = tmp_path / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        check = promtool("check", "config", str(config_file))
        assert check.returncode == 0, check.stdout + check.stderr
        address = f"127.0.0.1:{free_port()}"
        with log.open("wb") as sink:
            processes.append(
                subprocess.Popen(
                    [
                        tool("prometheus"),
                        f"--config.file={config_file}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address={address}",
                    ],
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            )
        url = f"http://{address}"
        wait_until(lambda: ready(url), 60, f"Prometheus at {url} ready", log)
        return url

    try:
        yield start
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.1)


def alert_state(url: str) -> str:
    """The state of :data:`ALERT` in Prometheus (``inactive`` when not listed)."""
    alerts = get_json(f"{url}/api/v1/alerts")["data"]["alerts"]
    states = [a["state"] for a in alerts if a["labels"]["alertname"] == ALERT]
    return states[0] if states else "inactive"


def test_no_commits_alert_fires_while_the_worker_stalls_and_resolves(
    kafka_bootstrap: str,
    chdb_path: Path,
    chdb_database: ChdbTarget,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    prometheus: Callable[[int], str],
) -> None:
    catalog = build_catalog(customers=4, line_items_per_customer=2)
    documents = list(generate_events(catalog, EVENTS, seed=18))
    settings = settings_for(
        kafka_bootstrap, f"chdb://{chdb_path}?database={chdb_database.database}", unique_name
    )
    ensure_topics(settings, worker_topics(settings))
    produce(settings, documents)

    gateway = open_gateway(settings.store_url)
    metrics = Metrics()
    health = LoopHealth(60.0, metrics=metrics)
    try:
        migrate(gateway)
        processor = StallingProcessor(
            gateway,
            CatalogIndex(load_catalog_file(str(write_catalog(tmp_path, catalog)))),
            limits=EventLimits(),
            metrics=metrics,
        )
        health.catalog_loaded()
        consumer = UsageConsumer(
            settings, processor, DeadLetterProducer(settings), metrics=metrics, health=health
        )
        with HealthServer(metrics, health, port=0, host="127.0.0.1") as server:
            url = prometheus(server.port)
            runner = threading.Thread(target=consumer.run)
            runner.start()
            try:
                assert processor.stalled.wait(90), "the second batch never came"
                assert consumer.stats.batches == 1
                assert consumer.stats.messages < EVENTS  # work waits
                seen: list[str] = []

                def reached(state: str) -> bool:
                    seen.append(alert_state(url))
                    return seen[-1] == state

                wait_until(lambda: reached("firing"), 90, f"{ALERT} firing", tmp_path / "x")
                assert "pending" in seen  # `for:` held it back first
                assert seen.index("pending") < seen.index("firing")
            finally:
                processor.release.set()
            wait_until(lambda: reached("inactive"), 60, f"{ALERT} resolved", tmp_path / "x")
            assert runner.is_alive()  # resolved by commits, not by the worker going away
            assert consumer.stats.batches >= 2
            consumer.stop()
            runner.join(120)
            assert not runner.is_alive()
    finally:
        gateway.close()
    assert consumer.stats.messages == EVENTS
