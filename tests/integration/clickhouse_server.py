"""A real ClickHouse server for tests that run several worker processes on one store.

chdb allows one process per data directory, so worker *processes* sharing a
store need a server. This one is chdb's own clickhouse-local (ClickHouse 26)
serving the native protocol from a child process (DESIGN.md §2): the child's
one query starts the TCP listener, writes the port to a file and blocks on a
FIFO; writing a line to the FIFO ends the query and the server. User
`default`, no password, loopback only.

Minimal on purpose (issue 17's multi-process group tests); a general server
store kind for the whole suite is issue 14's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

_START_TIMEOUT_S = 60.0
_CONFIG = """<clickhouse>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>0</tcp_port>
  <http_port>0</http_port>
</clickhouse>
"""
_SERVE = """
import sys
import chdb._chdb as engine
port_file, fifo, data = sys.argv[1:4]
engine.query(
    "SYSTEM START LISTEN TCP; "
    f"INSERT INTO FUNCTION file('{port_file}', 'TSV') SELECT getServerPort('tcp_port'); "
    f"SELECT count() FROM file('{fifo}', 'LineAsString')",
    "TabSeparated",
    path=data,
)
"""


class ClickHouseServer:
    """A clickhouse-local server under `root` (its own cwd, config and data).

    `start` blocks until the port is known (raises `RuntimeError` with the
    child's output otherwise); `url(database)` is a store URL for the worker;
    `stop` ends the query and waits (killing after 30 s). Idempotent.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        assert self.port is not None, "server not started"
        return f"clickhouse://default@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "config.xml").write_text(_CONFIG)
        port_file, fifo = self.root / "port.tsv", self.root / "stop.fifo"
        port_file.unlink(missing_ok=True)
        if not fifo.exists():
            os.mkfifo(fifo)
        with (self.root / "server.log").open("ab") as out:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _SERVE, str(port_file), str(fifo), str(self.root / "data")],
                cwd=self.root, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            text = port_file.read_text().strip() if port_file.exists() else ""
            if text:
                self.port = int(text)
                return
            time.sleep(0.1)
        log = (self.root / "server.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"the ClickHouse server did not start:\n{log}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            # Opening the FIFO for writing blocks until the reader has it: use O_NONBLOCK.
            try:
                fd = os.open(self.root / "stop.fifo", os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader (yet): nothing to end gracefully
                process.kill()
            else:
                os.write(fd, b"stop\n")
                os.close(fd)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)

    def __enter__(self) -> ClickHouseServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
