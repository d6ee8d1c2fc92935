"""Scale-out with real rows: several usage worker processes of one group on one server.

Only a ClickHouse server lets several worker processes share one store (chdb
allows one process per directory). N `events-worker run usage` processes of
one consumer group write to the session's server while events flow; one is
SIGKILLed, the others leave with SIGTERM, replacements join (a rolling
catalog update: they know a customer the first ones did not), and a
reprocess consumer runs beside them the whole time. After a reprocess
request for the window the totals must reach an independent rating of the
distinct events, and after every worker stopped the invoice read back with
`query line-items --json` must still equal it: nothing lost, nothing counted
twice.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.support import NativeTarget
from tests.integration.workers import (
    CLI,
    catalog_without,
    expected_invoice,
    group_positions,
    never_priced,
    produce,
    run_cli,
    settings_from_env,
    stored_invoice,
    stored_totals,
    wait_until,
    worker_env,
    write_catalog,
)
from worker.samples.synthetic import build_catalog, generate_events
from worker.store.connect import open_gateway
from worker.stream.topics import ensure_topics, worker_topics

PARTITIONS = 6
CHUNKS = 6


class Processes:
    """Worker subprocesses whose stderr goes to files (a pipe nobody reads fills up
    and blocks a chatty worker mid-stream); `tail` shows a process's last lines."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self._env = env
        self._log_dir = log_dir
        self._logs: dict[int, Path] = {}

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        path = self._log_dir / f"worker-{len(self._logs)}.log"
        with path.open("wb") as log:
            process = subprocess.Popen(
                [*CLI, *args], env=self._env, stdout=subprocess.DEVNULL, stderr=log
            )
        self._logs[process.pid] = path
        return process

    def tail(self, process: subprocess.Popen[bytes]) -> str:
        return self._logs[process.pid].read_text(errors="replace")[-3000:]

    def settled(self, members: list[subprocess.Popen[bytes]]) -> bool:
        """Whether the group is stable with exactly ``members``: the last group event
        each one logged is an assignment, and together they hold every partition.

        A member that only ever logged an assignment may already be in the next
        rebalance; stopping one mid-rebalance can leave tansu 0.6's group without
        any assignment for minutes, which is the broker's problem, not the worker's.
        """
        held: list[str] = []
        for member in members:
            last = None
            for line in self._logs[member.pid].read_text(errors="replace").splitlines():
                if '"assigned [' in line or '"revoked [' in line or '"lost [' in line:
                    last = json.loads(line)
            if last is None or not str(last["event"]).startswith("assigned"):
                return False
            held += [p.rsplit("/", 1)[1] for p in last.get("partitions", [])]
        return sorted(held, key=int) == [str(p) for p in range(PARTITIONS)]

    def timeline(self) -> str:
        """Every worker's group events, warnings and committed batches, in time
        order (a failure's diagnosis: a stalled group shows as a long gap)."""
        rows: list[tuple[str, str]] = []
        for number, path in enumerate(self._logs.values()):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    rows.append(("~", f"worker-{number}: {line[:160]}"))
                    continue
                event = str(record.get("event", ""))
                if event == "batch committed" or record.get("level") == "debug":
                    continue
                partitions = [p.rsplit("/", 1)[1] for p in record.get("partitions", [])]
                said = event.split(" [")[0] + (f" {','.join(partitions)}" if partitions else "")
                rows.append((str(record.get("timestamp", "")), f"worker-{number}: {said[:160]}"))
        return "\n".join(f"{at[11:23]} {said}" for at, said in sorted(rows))


def _raw_events(store: str) -> int:
    gateway = open_gateway(store)
    try:
        return int(gateway.query("SELECT count() FROM events")[0][0])
    finally:
        gateway.close()


@pytest.mark.parametrize("processes", [2, 3])
def test_workers_of_one_group_on_one_server_count_every_event_once(
    processes: int,
    kafka_bootstrap: str,
    native_database: NativeTarget,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    store = native_database.url
    full = build_catalog(customers=9, line_items_per_customer=3)
    initial = catalog_without(full, "cus_2")  # the first workers do not know cus_2 yet
    initial_file = write_catalog(tmp_path, initial, "initial.json")
    full_file = write_catalog(tmp_path, full, "full.json")
    documents = list(generate_events(full, 6_000, seed=40 + processes, duplicate_rate=0.03))
    env = worker_env(kafka_bootstrap, unique_name)
    env.update(
        {"EW_REPROCESS_GROUP": unique_name("rep"), "EW_STORE_URL": store, "EW_LOG_LEVEL": "INFO"}
    )
    settings = settings_from_env(env, PARTITIONS)
    store_settings = settings.model_copy(update={"store_url": store})
    expected = expected_invoice(full, documents)
    ensure_topics(settings, worker_topics(settings))
    migrated = run_cli(env, "migrate")  # once, before the workers race to do it
    assert migrated.returncode == 0, migrated.stderr

    started = Processes(env, tmp_path)
    stderr_tail = started.tail

    def usage(catalog: Path) -> subprocess.Popen[bytes]:
        return started.start("run", "usage", "--catalog", str(catalog))

    first = [usage(initial_file) for _ in range(processes)]
    live: list[subprocess.Popen[bytes]] = []  # their replacements, with the full catalog
    reprocess = started.start("run", "reprocess")
    pending = [documents[i::CHUNKS] for i in range(CHUNKS)]

    def produce_next() -> None:
        if pending:
            produce(settings, pending.pop(0))

    try:
        produce_next()
        produce_next()
        # Each disruption waits for the group to settle (see Processes.settled).
        members = list(first)

        def settle(what: str) -> None:
            try:
                wait_until(lambda: started.settled(members), what, timeout_s=120)
            except AssertionError as stalled:
                raise AssertionError(f"{stalled}\n{started.timeline()}") from None

        settle("the first members hold every partition")
        wait_until(lambda: _raw_events(store) > 0, "the first rows stored")

        first[0].send_signal(signal.SIGKILL)  # a crash mid-stream
        assert first[0].wait(30) == -signal.SIGKILL
        members.remove(first[0])
        live.append(usage(full_file))  # a replacement joins
        members.append(live[-1])
        produce_next()
        for old in first[1:]:  # the others leave: each finishes its batch, commits, exits 0
            settle("the replacement and the others hold every partition")
            old.send_signal(signal.SIGTERM)
            assert old.wait(60) == 0, stderr_tail(old)
            members.remove(old)
            live.append(usage(full_file))
            members.append(live[-1])
            produce_next()
        while pending:
            produce_next()
        settle("the replacements hold every partition")

        # Whatever the first generation left unpriced (cus_2) is re-driven by reprocessing.
        requested = run_cli(
            env,
            *("reprocess", "request", "--tenant", "t1", "--environment", "prod"),
            *("--start", "2025-12-01", "--end", "2026-03-01T00:00:00Z"),
        )
        assert requested.returncode == 0, requested.stderr
        request_id = requested.stdout.decode().strip()

        def completed() -> bool:
            status = run_cli(
                env, "reprocess", "status", request_id, "--tenant", "t1", "--environment", "prod",
                "--json",
            )  # fmt: skip
            return status.returncode == 0 and json.loads(status.stdout)["state"] == "completed"

        wait_until(completed, "the reprocess request completed", timeout_s=120)
        # The live workers price the tail and the re-published events: give them
        # until the totals match (the final assert shows any difference), then
        # stop them all the polite way.
        deadline = time.monotonic() + 120
        while stored_totals(store_settings) != expected and time.monotonic() < deadline:
            time.sleep(0.5)
        for worker in live:  # SIGTERM: each finishes and commits its batch
            assert worker.poll() is None, stderr_tail(worker)
            worker.send_signal(signal.SIGTERM)
        for worker in live:
            assert worker.wait(60) == 0, stderr_tail(worker)
        reprocess.send_signal(signal.SIGTERM)
        assert reprocess.wait(60) == 0, stderr_tail(reprocess)
    finally:
        for process in [*first, *live, reprocess]:
            if process.poll() is None:
                process.kill()
                process.wait(30)

    assert never_priced(initial, documents)  # the scenario needed reprocessing
    # Nothing more after they all stopped; read back through the command line too.
    invoice = stored_invoice(env, store)
    assert invoice == expected, (
        f"group positions (committed, end): {group_positions(env, PARTITIONS)}\n"
        f"{started.timeline()}"
    )
