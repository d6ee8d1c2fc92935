"""LocalClickHouseServer: chdb's clickhouse-local really serves, restarts on its data, stops.

It rests on a private chdb entry point (`chdb._chdb.query` with `path=`); these
tests fail loudly when a chdb upgrade stops it listening.
"""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
from clickhouse_driver import Client

from worker.dev.clickhouse_server import ClickHouseServerError, LocalClickHouseServer


def _client(server: LocalClickHouseServer) -> Client:
    return Client(host="127.0.0.1", port=server.tcp_port, connect_timeout=5)


def test_the_served_server_answers_native_and_http_and_stops_without_a_trace(
    tmp_path: Path,
) -> None:
    import chdb

    server = LocalClickHouseServer(tmp_path / "data", run_dir=tmp_path / "run")
    with server:
        pid = server.pid
        assert pid is not None and server.is_running()
        assert server.url == (
            f"clickhouse://default@127.0.0.1:{server.tcp_port}/default?http_port={server.http_port}"
        )
        client = _client(server)
        ((version, tcp_port),) = client.execute("SELECT version(), getServerPort('tcp_port')")
        client.disconnect()
        assert tcp_port == server.tcp_port
        # the server is the ClickHouse chdb embeds, not some other one on the port
        assert version == chdb.engine_version
        with urllib.request.urlopen(f"{server.http_url}/?query=SELECT%2041", timeout=5) as reply:
            assert reply.read() == b"41\n"

    assert not server.is_running() and not Path(f"/proc/{pid}").exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", tcp_port), timeout=1).close()


def test_a_restart_serves_the_same_data_on_the_same_ports_after_stop_and_after_kill(
    tmp_path: Path,
) -> None:
    server = LocalClickHouseServer(tmp_path / "data", cluster="ew_self")
    try:
        server.start()
        ports = (server.tcp_port, server.http_port)
        client = _client(server)
        assert client.execute(
            "SELECT port, is_local FROM system.clusters WHERE cluster = 'ew_self'"
        ) == [(server.tcp_port, 1)]
        client.execute("CREATE TABLE kept (n UInt32) ENGINE = MergeTree ORDER BY n")
        client.execute("CREATE TABLE kept_all AS kept ENGINE = Distributed(ew_self, default, kept)")
        client.execute(
            "INSERT INTO kept_all VALUES", [(1,), (2,)], settings={"insert_distributed_sync": 1}
        )
        client.disconnect()

        server.stop()
        server.start()
        assert (server.tcp_port, server.http_port) == ports
        client = _client(server)
        client.execute("INSERT INTO kept VALUES", [(3,)])
        client.disconnect()

        server.kill()  # a crash
        assert not server.is_running()
        server.start()
        assert (server.tcp_port, server.http_port) == ports
        client = _client(server)
        assert client.execute("SELECT groupArray(n) FROM (SELECT n FROM kept_all ORDER BY n)") == [
            ([1, 2, 3],)
        ]
        client.disconnect()
    finally:
        server.close()


def test_a_taken_port_fails_start_with_the_server_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = LocalClickHouseServer(tmp_path / "data", tcp_port=port, startup_timeout_s=30)
        with pytest.raises(ClickHouseServerError, match=r"exited with status|did not") as raised:
            server.start()
    assert "log" in str(raised.value)
    assert not server.is_running()
    server.close()
