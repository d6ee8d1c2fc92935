"""The gateway contract on every available ClickHouse: typed rows, parameters, dedup, errors."""

from __future__ import annotations

import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.store.conftest import StoreUnderTest
from tests.integration.support import ChdbTarget
from worker.store.connect import open_gateway
from worker.store.errors import SchemaMissingError, StoreError
from worker.store.gateway import QUERY_MAX_MEMORY_BYTES
from worker.store.url import ChdbLocation, NativeLocation, parse_store_url

TRICKY = ["x' OR '1'='1", "back\\slash", "tab\there", "new\nline", "\\N", "é☃", "); DROP --"]


def test_parameters_round_trip_exactly(store: StoreUnderTest) -> None:
    ts = datetime(2026, 2, 28, 23, 59, 59, 999_999, tzinfo=UTC)
    amount = Decimal("12345678901234567890123.123456789012345")
    for text in TRICKY:
        rows = store.gateway.query(
            "SELECT {s:String}, {d:Decimal(38, 15)}, {ts:DateTime64(6, 'UTC')}, "
            "{arr:Array(String)}, {n:UInt64}",
            {"s": text, "d": amount, "ts": ts, "arr": [text, "b"], "n": 2**64 - 1},
        )
        assert rows == [(text, amount, ts, [text, "b"], 2**64 - 1)]


def test_insert_with_the_same_token_keeps_one_copy(migrated: StoreUnderTest) -> None:
    gateway = migrated.gateway
    ts = datetime(2026, 1, 1, 12, 0, 0, 1, tzinfo=UTC)
    columns = {
        "tenant_id": ["t", "t"],
        "environment_id": ["e", "e"],
        "id": ["a", "b"],
        "event_name": ["n", "n"],
        "external_customer_id": ["c", "c"],
        "customer_id": ["", ""],
        "source": ["", ""],
        "timestamp": [ts, ts],
        "ingested_at": [ts, ts],
        "properties": ["{}", "{}"],
    }
    assert gateway.insert("events", columns, dedup_token="topic:0:0-1") == 2
    assert gateway.insert("events", columns, dedup_token="topic:0:0-1") == 2
    assert gateway.query("SELECT count() FROM events") == [(2,)]
    gateway.insert("events", columns, dedup_token="topic:0:2-3")
    assert gateway.query("SELECT count() FROM events") == [(4,)]
    assert gateway.query("SELECT count() FROM events FINAL") == [(2,)]


def test_insert_refuses_unsafe_names_and_tokens(migrated: StoreUnderTest) -> None:
    with pytest.raises(StoreError, match="invalid table name"):
        migrated.gateway.insert("events; DROP TABLE events", {"id": ["x"]})
    with pytest.raises(StoreError, match="column"):
        migrated.gateway.insert("events", {"id) VALUES ('x": ["x"]})
    if migrated.kind == "chdb":
        with pytest.raises(StoreError, match="insert_deduplication_token"):
            migrated.gateway.insert("events", {"id": ["x"]}, dedup_token="a' , x = '1")


def test_missing_database_says_run_migrate(store: StoreUnderTest) -> None:
    with pytest.raises(SchemaMissingError, match="events-worker migrate"):
        store.gateway.query("SELECT count() FROM events_processed")


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://host/db",
        "chdb://",
        "chdb://host/dir",
        "clickhouse:///db",
        "chdb:///d?database=a-b",
    ],
)
def test_invalid_url_is_a_one_line_store_error(url: str) -> None:
    with pytest.raises(StoreError) as error:
        parse_store_url(url)
    assert "\n" not in str(error.value)
    assert "invalid" in str(error.value)


def test_invalid_url_hides_the_password() -> None:
    with pytest.raises(StoreError) as error:
        parse_store_url("clickhouse://user:s3cret@host:notaport/db")
    assert "s3cret" not in str(error.value)


def test_unreachable_server_is_a_clear_store_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(StoreError, match=f"cannot reach ClickHouse at 127.0.0.1:{port}"):
        open_gateway(f"clickhouse://u:pw@127.0.0.1:{port}/db", timeout_s=5)


def test_second_chdb_directory_in_one_process_is_refused(
    chdb_connection: object, tmp_path: Path
) -> None:
    with pytest.raises(StoreError, match="one directory per process"):
        open_gateway(f"chdb://{tmp_path}/other")


def test_chdb_directory_locked_by_another_process(chdb_connection: object, chdb_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "migrate", "--store", f"chdb://{chdb_path}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert "is in use by another process" in last_line
    assert "Traceback" not in result.stderr


def test_url_forms_parse() -> None:
    assert parse_store_url("chdb://./data/clickhouse") == ChdbLocation(
        Path("./data/clickhouse"), "default"
    )
    assert parse_store_url("chdb:///var/lib/ew?database=billing") == ChdbLocation(
        Path("/var/lib/ew"), "billing"
    )
    assert parse_store_url("clickhouse://u:p%40ss@ch.example:9440/billing?secure=1") == (
        NativeLocation("ch.example", 9440, "u", "p@ss", "billing", secure=True)
    )
    assert parse_store_url("clickhouse://ch") == NativeLocation(
        "ch", 9000, "default", "", "default", secure=False
    )


def test_one_gateway_serves_many_threads(migrated: StoreUnderTest) -> None:
    def work(n: int) -> list[int]:
        return [
            migrated.gateway.query("SELECT {n:UInt32} + count() FROM events", {"n": n})[0][0]
            for _ in range(10)
        ]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(16)))
    assert results == [[n] * 10 for n in range(16)]


def test_chdb_gateways_on_two_databases_share_the_connection(
    chdb_database: ChdbTarget, chdb_path: Path
) -> None:
    first = open_gateway(f"chdb://{chdb_path}?database={chdb_database.database}")
    other_db = chdb_database.database + "_b"
    other = open_gateway(f"chdb://{chdb_path}?database={other_db}")
    try:
        other.ensure_database()

        def work(n: int) -> tuple[str, str]:
            gateway = other if n % 2 else first
            return gateway.database, gateway.query("SELECT currentDatabase()")[0][0]

        with ThreadPoolExecutor(max_workers=4) as pool:
            for expected, seen in pool.map(work, range(40)):
                assert seen == expected
    finally:
        other.execute("DROP DATABASE IF EXISTS {db:Identifier} SYNC", {"db": other_db})
        other.close()
        first.close()


def test_a_gateway_runs_two_statements_at_once(store: StoreUnderTest) -> None:
    """A gateway holds more than one connection, so a statement does not wait
    for another (the write-behind's raw and processed inserts run at once, and
    the next batch's first-touch reads during them): while one thread's query
    runs, another thread's query sees it in ``system.processes``."""
    gateway = store.gateway
    slow = f"SELECT sleep(2) AS slow_statement_{store.kind}"
    seen: list[tuple[str, ...]] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(gateway.query, slow)
        while not running.done() and not seen:
            seen = gateway.query(
                "SELECT query FROM system.processes WHERE query = {q:String}", {"q": slow}
            )
        assert running.result() == [(0,)]
    assert seen == [(slow,)]


def test_a_database_never_migrated_says_run_migrate(store: StoreUnderTest) -> None:
    missing = store.gateway.database + "_never"
    if store.kind == "chdb":
        url = store.url.replace(f"database={store.gateway.database}", f"database={missing}")
    else:
        url = store.url.replace(f"/{store.gateway.database}", f"/{missing}")
    gateway = open_gateway(url)
    try:
        with pytest.raises(SchemaMissingError, match="run `events-worker migrate`"):
            gateway.query("SELECT count() FROM events_processed FINAL")
    finally:
        gateway.close()


def test_every_query_runs_under_the_memory_cap(store: StoreUnderTest) -> None:
    """`max_memory_usage` bounds what one statement may take, on both stores."""
    [(cap,)] = store.gateway.query("SELECT getSetting('max_memory_usage')")
    assert int(cap) == QUERY_MAX_MEMORY_BYTES == 4 * 1024**3


def test_the_embedded_engine_merges_cheaply_at_the_lowest_cpu_priority(tmp_path: Path) -> None:
    """A fresh process opening a chdb store configures its engine from
    ``chdb_config.xml`` (the first connection to a directory decides it; this
    suite's own opened first): merge threads at nice 19, merge base 10."""
    script = (
        "import sys\n"
        "from worker.store.connect import open_gateway\n"
        "gateway = open_gateway(sys.argv[1])\n"
        'print(gateway.query("SELECT value FROM system.server_settings "\n'
        "    \"WHERE name = 'os_threads_nice_value_merge_mutate'\")[0][0])\n"
        'print(gateway.query("SELECT value FROM system.merge_tree_settings "\n'
        "    \"WHERE name = 'merge_selector_base'\")[0][0])\n"
        "gateway.close()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, f"chdb://{tmp_path / 'store'}"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert result.stdout.decode().split() == ["19", "10"]
