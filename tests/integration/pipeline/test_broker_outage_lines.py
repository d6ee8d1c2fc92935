"""The world's failures in the worker's words: the broker stops mid-run.

librdkafka alone logs a FAIL line per connection attempt per client (~300 in
a minute) and never a sentence of ours. The worker must say once that Kafka
is unreachable (address, what to check), once that it is back, and stay
within a bounded number of log lines meanwhile.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.workers import (
    CLI,
    produce,
    settings_from_env,
    worker_env,
    write_catalog,
)
from worker.dev.local_broker import LocalTansuBroker, free_port
from worker.samples.synthetic import build_catalog, generate_events
from worker.stream.topics import ensure_topics

#: Most log lines the worker may write from start to stop around one outage.
MAX_LINES = 40


class _Lines:
    """The stderr lines of a running process, collected by a thread."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str, timeout_s: float = 60) -> None:
        """Block until a line contains `text` (woken by each new line)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line with {text!r}: {self.lines[-10:]}")
                self._changed.wait(left)

    def join(self) -> list[str]:
        self._thread.join(30)
        return self.lines


def test_a_broker_outage_is_two_lines_of_ours_and_no_librdkafka_flood(
    unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    port = free_port()
    broker = LocalTansuBroker(port=port, log_path=tmp_path / "tansu.log")
    broker.start()
    try:
        env = worker_env(broker.bootstrap, unique_name)
        settings = settings_from_env(env, partitions=1)
        env["EW_TOPIC_PARTITIONS"] = "1"
        ensure_topics(settings, {settings.events_topic: 1})
        catalog = build_catalog(customers=2)
        produce(settings, generate_events(catalog, 10, seed=2))
        catalog_file = write_catalog(tmp_path, catalog)
        worker = subprocess.Popen(
            [
                *CLI,
                "run",
                "usage",
                "--store",
                f"chdb://{tmp_path / 's'}",
                "--catalog",
                str(catalog_file),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        lines = _Lines(worker)
        try:
            # WARNING level: the first line of ours is the outage, so wait on
            # the broker instead: the events are committed once it is working.
            _wait_committed(broker.bootstrap, env, 10)
            broker.stop()
            lines.wait_for("Kafka unreachable at")
            broker.start()  # same port, a fresh broker
            lines.wait_for("Kafka reachable again at")
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
    finally:
        broker.stop()
    output = lines.join()
    logged = [json.loads(line) for line in output if line.startswith("{")]
    ours = [line["event"] for line in logged if line["logger"] == "worker.ops.kafka_reachability"]
    assert len(ours) == 2, "\n".join(output)
    assert ours[0].startswith(f"Kafka unreachable at 127.0.0.1:{port} (")
    assert "check that the broker is up, --bootstrap / EW_KAFKA_BOOTSTRAP" in ours[0]
    assert ours[1].startswith(f"Kafka reachable again at 127.0.0.1:{port} after ")
    librdkafka = [line["event"] for line in logged if line["logger"] == "librdkafka"]
    assert not [line for line in librdkafka if line.startswith(("FAIL", "ERROR"))]
    assert len(output) <= MAX_LINES, "\n".join(output)


def _wait_committed(bootstrap: str, env: dict[str, str], offset: int) -> None:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": env["EW_USAGE_GROUP"]})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            (tp,) = consumer.committed([TopicPartition(env["EW_EVENTS_TOPIC"], 0)], 5)
            if tp.offset >= offset:
                return
            consumer.poll(0.5)
        raise AssertionError("the worker did not commit")
    finally:
        consumer.close()


def test_short_commands_without_a_broker_give_up_with_one_line_of_ours(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"tenant_id": "t", "event_name": "x", "external_customer_id": "c"}\n')
    catalog_file = write_catalog(tmp_path, build_catalog(customers=1))
    env = worker_env("127.0.0.1:1", lambda prefix: f"ew_{prefix}_nobroker")
    commands = [
        ["produce", str(events)],
        ["catalog", "publish", str(catalog_file)],
        [
            "reprocess",
            "request",
            "--tenant",
            "t",
            "--environment",
            "e",
            "--start",
            "2026-01-01",
            "--end",
            "2026-02-01",
        ],
    ]
    # Concurrently: each gives up on its own bounded metadata timeout.
    running = [
        subprocess.Popen([*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for args in commands
    ]
    for process in running:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 1
        assert out == b""
        (line,) = err.decode().splitlines()
        assert line.startswith("events-worker: cannot read cluster metadata (")
        assert "from 127.0.0.1:1: check that the broker is up" in line
