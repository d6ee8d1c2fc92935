"""The worker against a ClickHouse *server* next to embedded chdb, in one run.

Runs in a child process (it opens chdb; ``events-worker bench`` has opened
another directory already) on a local tansu broker and a local ClickHouse
server (:mod:`worker.dev.clickhouse_server`). Prints:

* end to end, the same produced events priced by ``events-worker run usage``
  processes of a fresh group each: one process on embedded chdb, one process
  on the server, two processes on the server. The rate is the events
  committed after the group's first commit divided by the time from that
  commit to the last one (the bench polls the group's committed offsets), so
  start-up, the group join and the idle exit are left out the same way for
  every store;
* inserts of rated ``events_processed`` rows (:func:`insert_rated`) in
  batches of 10k: embedded chdb, the server over HTTP as Arrow (the path the
  worker uses with ``?http_port=N``) and over the native protocol.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import orjson
from confluent_kafka import Consumer, TopicPartition

from worker.benchmarks.child import run_child, scratch_directory
from worker.dev.clickhouse_server import LocalClickHouseServer
from worker.dev.local_broker import LocalTansuBroker, local_settings
from worker.ops.settings import WorkerSettings
from worker.samples.synthetic import build_catalog, generate_events
from worker.store.connect import open_gateway
from worker.store.gateway import Gateway
from worker.store.processed import MatchColumnCache, insert_rated
from worker.store.schema import migrate
from worker.stream.topics import ensure_topics, worker_topics

PARTITIONS = 4
_RUN_TIMEOUT_S = 1800.0


@dataclass(frozen=True, slots=True)
class ServerBenchResult:
    """Events/s end to end and rows/s of inserts; see the module docstring."""

    events: int
    embedded_per_s: float
    server_per_s: float
    server_two_per_s: float
    insert_rows: int
    insert_chdb_per_s: float
    insert_http_per_s: float
    insert_native_per_s: float


def run_server_bench(
    events: int = 200_000, customers: int = 10_000, insert_rows: int = 100_000
) -> ServerBenchResult:
    """Run the benchmark in a child process (see the module docstring)."""
    args = ["--events", str(events), "--customers", str(customers)]
    figures = run_child("worker.benchmarks.server", [*args, "--insert-rows", str(insert_rows)])
    return ServerBenchResult(**figures)


def print_server_bench(events: int = 200_000, customers: int = 10_000) -> None:
    r = run_server_bench(events, customers)
    print(
        f"server: {r.events:,} events, {customers:,} customers x 3 line items, local tansu "
        f"({PARTITIONS} partitions); ClickHouse server = chdb's clickhouse-local listening\n"
        f"  embedded chdb, 1 process : {r.embedded_per_s:>10,.0f} events/s\n"
        f"  server, 1 process        : {r.server_per_s:>10,.0f} events/s "
        f"({r.server_per_s / max(r.embedded_per_s, 1e-9):.2f}x embedded)\n"
        f"  server, 2 processes      : {r.server_two_per_s:>10,.0f} events/s "
        f"({r.server_two_per_s / max(r.server_per_s, 1e-9):.2f}x one process)\n"
        f"  insert {r.insert_rows:,} rated rows (batches of 10k): chdb "
        f"{r.insert_chdb_per_s:,.0f} rows/s, server HTTP Arrow {r.insert_http_per_s:,.0f} "
        f"rows/s, server native {r.insert_native_per_s:,.0f} rows/s"
    )


def measure(events: int, customers: int, insert_rows: int) -> ServerBenchResult:
    """The measurement itself (in the child process).

    Batches are cut at a tenth of ``events`` (at most the default 20,000), so
    every run has about ten commits to time.
    """
    catalog = build_catalog(customers=customers, line_items_per_customer=3)
    with (
        scratch_directory("server-") as tmp,
        LocalTansuBroker() as broker,
        LocalClickHouseServer(tmp / "server-data") as server,
    ):
        catalog_file = tmp / "catalog.json"
        catalog_file.write_text(json.dumps(catalog))
        settings = local_settings(
            broker,
            topic_partitions=PARTITIONS,
        )
        ensure_topics(settings, worker_topics(settings))
        env = _worker_env(settings, batch_events=min(20_000, max(500, events // 10)))
        _produce(env, catalog, events, tmp / "events.jsonl")
        embedded = _priced_per_s(env, f"chdb://{tmp / 'embedded'}", "embedded", catalog_file, 1)
        one = _priced_per_s(env, _database(server.url, "one"), "server1", catalog_file, 1)
        two = _priced_per_s(env, _database(server.url, "two"), "server2", catalog_file, 2)
        rows, inserts = _insert_rates(tmp, server.url, insert_rows)
    return ServerBenchResult(events, embedded, one, two, rows, *inserts)


def _produce(env: dict[str, str], catalog: dict[str, Any], events: int, path: Path) -> None:
    """Produce the generated events with ``events-worker produce`` (the public command)."""
    with path.open("wb") as out:
        for document in generate_events(catalog, events, duplicate_rate=0.01):
            out.write(orjson.dumps(document) + b"\n")
    command = [sys.executable, "-m", "worker.cli", "produce", str(path)]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, timeout=900)


def _database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


def _worker_env(settings: WorkerSettings, batch_events: int) -> dict[str, str]:
    return {
        **os.environ,
        "EW_BATCH_MAX_EVENTS": str(batch_events),
        "EW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "EW_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "EW_EVENTS_TOPIC": settings.events_topic,
        "EW_TOPIC_PARTITIONS": str(PARTITIONS),
        "EW_LOG_LEVEL": "WARNING",
        "EW_HTTP_PORT": "0",
    }


def _priced_per_s(
    env: dict[str, str], store: str, group: str, catalog_file: Path, processes: int
) -> float:
    """Run ``processes`` usage workers of a fresh group to the end; events/s while committing."""
    env = {**env, "EW_USAGE_GROUP": f"bench-{group}", "EW_STORE_URL": store}
    if processes > 1:  # apply the schema once, not raced by the workers
        gateway = open_gateway(store)
        try:
            gateway.ensure_database()
            migrate(gateway)
        finally:
            gateway.close()
    argv = [sys.executable, "-m", "worker.cli", "run", "usage", "--catalog", str(catalog_file)]
    workers = [
        subprocess.Popen([*argv, "--exit-when-idle", "3"], env=env, stdout=subprocess.DEVNULL)
        for _ in range(processes)
    ]
    try:
        first, last = _watch_commits(env, workers)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait(30)
    if any(worker.returncode != 0 for worker in workers):
        raise RuntimeError(f"bench: a worker on {group} failed")
    (first_at, first_count), (last_at, last_count) = first, last
    return (last_count - first_count) / max(last_at - first_at, 1e-9)


def _watch_commits(
    env: dict[str, str], workers: list[subprocess.Popen[bytes]]
) -> tuple[tuple[float, int], tuple[float, int]]:
    """(time, committed events) at the group's first commit and at its last, while they run."""
    reader = Consumer(
        {
            "bootstrap.servers": env["EW_KAFKA_BOOTSTRAP"],
            "group.id": env["EW_USAGE_GROUP"],
            "enable.auto.commit": False,
        }
    )
    partitions = [TopicPartition(env["EW_EVENTS_TOPIC"], p) for p in range(PARTITIONS)]
    first: tuple[float, int] | None = None
    last = (time.monotonic(), 0)
    deadline = time.monotonic() + _RUN_TIMEOUT_S
    try:
        while any(worker.poll() is None for worker in workers):
            if time.monotonic() > deadline:
                raise RuntimeError("bench: the workers did not finish in time")
            committed = sum(max(tp.offset, 0) for tp in reader.committed(partitions, timeout=10))
            now = time.monotonic()
            if committed > last[1]:
                last = (now, committed)
                if first is None:
                    first = (now, committed)
            time.sleep(0.1)
    finally:
        reader.close()
    if first is None or last[1] == first[1]:
        raise RuntimeError("bench: too few commits to measure; use more events")
    return first, last


def _insert_rates(
    tmp: Path, server_url: str, insert_rows: int
) -> tuple[int, tuple[float, float, float]]:
    from worker.benchmarks.store import rated_batches

    batches = rated_batches(insert_rows, min(10_000, insert_rows))
    rows = sum(map(len, batches))
    native_url = _without_http_port(_database(server_url, "insert_native"))
    urls = (
        f"chdb://{tmp / 'insert'}",
        _database(server_url, "insert_http"),
        native_url,
    )
    rates = []
    for url in urls:
        gateway = open_gateway(url, timeout_s=300)
        try:
            gateway.ensure_database()
            migrate(gateway)
            rates.append(rows / _insert_all(gateway, batches))
        finally:
            gateway.close()
    return rows, (rates[0], rates[1], rates[2])


def _insert_all(gateway: Gateway, batches: list[Any]) -> float:
    cache = MatchColumnCache()
    started = time.perf_counter()
    for n, batch in enumerate(batches):
        insert_rated(gateway, batch, dedup_token=f"bench:{n}", cache=cache)
    return time.perf_counter() - started


def _without_http_port(url: str) -> str:
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items() if k != "http_port"}
    return urlunsplit(parts._replace(query=urlencode(query)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.benchmarks.server")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--insert-rows", type=int, default=100_000)
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    result = measure(args.events, args.customers, args.insert_rows)
    print(f"server bench took {datetime.now(UTC) - started}", file=sys.stderr)
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
