"""A local ClickHouse *server* without Docker: chdb's clickhouse-local, listening.

For tests, benchmarks and local use only; it rests on chdb internals (DESIGN.md
§2, "A ClickHouse server without Docker"). chdb (pinned) embeds ClickHouse's
clickhouse-local, which serves the native protocol and HTTP after
``SYSTEM START LISTEN TCP`` / ``HTTP``. That works only through the private
module-level ``chdb._chdb.query(sql, "TabSeparated", path=DATA_DIR)``, reads
``listen_host`` / ``tcp_port`` / ``http_port`` from ``./config.xml`` in the
current directory, and serves only while that one query runs. So the server
is a child process (one such query per process) whose query blocks reading a
FIFO: a line written to the FIFO ends it.

Clients connect as ``default`` without a password, on 127.0.0.1 only. No
Keeper: replicated tables and ``ON CLUSTER`` DDL are unavailable; the optional
``cluster`` is one shard, this server itself, for non-replicated
``Distributed`` tables.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Final, NoReturn

from worker.dev.service import HOST, LOG_TAIL_LINES, LocalService, log_tail

__all__ = ["ClickHouseServerError", "LocalClickHouseServer", "main"]

_CONFIG: Final = "config.xml"
_PORTS: Final = "ports.tsv"
_STOP_FIFO: Final = "stop.fifo"
_LOG: Final = "server.log"


class ClickHouseServerError(RuntimeError):
    """The server did not come up (exited, or did not answer before the deadline).

    The message carries the tail of the server's log.
    """


#: The one clickhouse-local query that is the server: listen, report the ports,
#: block reading the FIFO (paths relative to the run directory, the child's cwd).
_SERVE_SQL: Final = (
    "SYSTEM START LISTEN TCP; SYSTEM START LISTEN HTTP; "
    "SELECT getServerPort('tcp_port'), getServerPort('http_port') "
    "INTO OUTFILE 'ports.tsv' TRUNCATE FORMAT TabSeparated; "
    "SELECT count() FROM file('stop.fifo', 'LineAsString')"
)


def _config_xml(tcp_port: int, http_port: int, cluster: str | None) -> str:
    shard = ""
    if cluster is not None:
        shard = (
            f"  <remote_servers><{cluster}><shard><replica><host>{HOST}</host>"
            f"<port>{tcp_port}</port></replica></shard></{cluster}></remote_servers>\n"
        )
    return (
        "<clickhouse>\n"
        f"  <listen_host>{HOST}</listen_host>\n"
        f"  <tcp_port>{tcp_port}</tcp_port>\n"
        f"  <http_port>{http_port}</http_port>\n"
        f"{shard}"
        "</clickhouse>\n"
    )


class LocalClickHouseServer(LocalService):
    """One ClickHouse server on loopback, serving a persistent data directory.

    Contract:

    * ``start()`` blocks until the server answers HTTP ``/ping`` and accepts
      native-protocol connections, or raises :class:`ClickHouseServerError`
      (with the log tail) after ``startup_timeout_s``, having killed what it
      started. Ports 0 (the default) are chosen by the server; they are then
      kept, so a later ``start()`` after ``stop()`` / ``kill()`` serves the
      same data directory on the same ports (outage tests). With a
      ``cluster`` and port 0 the first start learns the ports and restarts
      once on them (the cluster definition names the port, and
      clickhouse-local cannot reload its configuration).
    * ``stop()`` writes a line to the FIFO the serving query reads (a clean
      end; the server then waits up to 5 s for connected clients), waits
      ``stop_grace_s``, then SIGKILLs the PID; ``kill()``
      SIGKILLs at once (a crash). Both are idempotent and reap the child.
    * No orphans: the child asks the kernel to SIGKILL it when its parent
      dies (Linux ``PR_SET_PDEATHSIG``) and ``start()`` registers nothing
      global: use it as a context manager or call ``stop()``.

    ``url`` is the store URL (``clickhouse://...?http_port=N``). Not
    thread-safe: one owner starts and stops it.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        tcp_port: int = 0,
        http_port: int = 0,
        cluster: str | None = None,
        run_dir: Path | None = None,
        startup_timeout_s: float = 60.0,
        stop_grace_s: float = 10.0,
    ) -> None:
        """Configure the server; nothing starts until ``start()``.

        ``run_dir`` holds config.xml, the FIFO, the ports file and the log
        (default: a temporary directory removed by ``close()``). ``cluster``
        names a one-shard cluster (this server) in ``remote_servers``.
        """
        if startup_timeout_s <= 0 or stop_grace_s < 0:
            raise ValueError("startup_timeout_s must be > 0 and stop_grace_s >= 0")
        if cluster is not None and not cluster.isidentifier():
            raise ValueError(f"cluster must be a plain identifier, got {cluster!r}")
        self.data_dir = data_dir
        self.tcp_port = tcp_port
        self.http_port = http_port
        self.cluster = cluster
        self._own_run_dir = run_dir is None
        self.run_dir = run_dir or Path(tempfile.mkdtemp(prefix="clickhouse-server-"))
        self._startup_timeout_s = startup_timeout_s
        self._stop_grace_s = stop_grace_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- public surface ------------------------------------------------------

    @property
    def url(self) -> str:
        """The store URL: ``clickhouse://default@127.0.0.1:TCP/default?http_port=HTTP``.

        Queries use the native protocol; inserts go over HTTP as Arrow (the
        fast path, see :mod:`worker.store.http_insert`).
        """
        if self.tcp_port == 0:
            raise RuntimeError("LocalClickHouseServer has not started yet: call start()")
        return f"clickhouse://default@{HOST}:{self.tcp_port}/default?http_port={self.http_port}"

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the HTTP interface."""
        if self.http_port == 0:
            raise RuntimeError("LocalClickHouseServer has not started yet: call start()")
        return f"http://{HOST}:{self.http_port}"

    @property
    def pid(self) -> int | None:
        """PID of the serving child, or None when not running."""
        return None if self._process is None else self._process.pid

    def is_running(self) -> bool:
        """Whether the child was started and has not exited."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start serving and block until the server answers; see the class contract."""
        if self.is_running():
            raise RuntimeError("LocalClickHouseServer is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        learn_ports_first = self.cluster is not None and 0 in (self.tcp_port, self.http_port)
        try:
            self._start_once(None if learn_ports_first else self.cluster)
            if learn_ports_first:
                self.stop()
                self._start_once(self.cluster)
        except BaseException:
            self.kill()
            raise

    def stop(self) -> None:
        """End the serving query through the FIFO; SIGKILL after ``stop_grace_s``."""
        process = self._process
        if process is not None and process.poll() is None:
            try:
                # Non-blocking: fails (ENXIO) when no query reads the FIFO yet.
                fd = os.open(self.run_dir / _STOP_FIFO, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                pass
            else:
                try:
                    os.write(fd, b"stop\n")
                finally:
                    os.close(fd)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=self._stop_grace_s)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the server (a crash: no clean shutdown) and reap it. Idempotent."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10.0)
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """``stop()``, then remove the run directory if this object created it."""
        self.stop()
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server's output ("" when there is none)."""
        return log_tail(self.run_dir / _LOG, lines)

    # -- internals -----------------------------------------------------------

    def _start_once(self, cluster: str | None) -> None:
        run_dir = self.run_dir
        (run_dir / _CONFIG).write_text(_config_xml(self.tcp_port, self.http_port, cluster))
        (run_dir / _PORTS).unlink(missing_ok=True)
        fifo = run_dir / _STOP_FIFO
        if not fifo.exists():
            os.mkfifo(fifo)
        self._log = (run_dir / _LOG).open("ab")
        argv = [sys.executable, "-m", "worker.dev.clickhouse_server", "--serve", str(self.data_dir)]
        self._process = subprocess.Popen(
            argv,
            cwd=run_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C reaches the owner, not the server
        )
        deadline = time.monotonic() + self._startup_timeout_s
        tcp_port, http_port = self._wait_for_ports(deadline)
        self._wait_ready(tcp_port, http_port, deadline)
        self.tcp_port, self.http_port = tcp_port, http_port

    def _wait_for_ports(self, deadline: float) -> tuple[int, int]:
        path = self.run_dir / _PORTS
        while True:
            self._raise_if_exited()
            text = path.read_text() if path.exists() else ""
            fields = text.split()
            if text.endswith("\n") and len(fields) == 2 and all(f.isdigit() for f in fields):
                return int(fields[0]), int(fields[1])
            if time.monotonic() >= deadline:
                self._raise_start_error("did not report its ports")
            time.sleep(0.02)

    def _wait_ready(self, tcp_port: int, http_port: int, deadline: float) -> None:
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            self._raise_if_exited()
            try:
                with urllib.request.urlopen(f"http://{HOST}:{http_port}/ping", timeout=2) as reply:
                    answered = reply.read().strip() == b"Ok."
                with socket.create_connection((HOST, tcp_port), timeout=2):
                    pass
                if answered:
                    return
            except OSError as error:
                last_error = error
            time.sleep(0.05)
        self._raise_start_error(f"did not answer on ports {tcp_port}/{http_port} ({last_error})")

    def _raise_if_exited(self) -> None:
        if self._process is not None and (code := self._process.poll()) is not None:
            self._raise_start_error(f"exited with status {code}")

    def _raise_start_error(self, what: str) -> NoReturn:
        if self._log is not None:
            self._log.flush()
        raise ClickHouseServerError(
            f"local ClickHouse server (data {self.data_dir}) {what} within "
            f"{self._startup_timeout_s:.0f}s; log {self.run_dir / _LOG}:\n{self.log_tail()}"
        )


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent exits (no-op elsewhere)."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _serve(data_dir: str) -> int:
    """The child: run the serving query in the current directory (which holds config.xml)."""
    _die_with_parent()
    from chdb import _chdb

    # The private entry point (see the module docstring); guarded by a smoke test.
    _chdb.query(_SERVE_SQL, "TabSeparated", path=data_dir)  # type: ignore[attr-defined]
    # clickhouse-local reports a failed query on its output rather than raising:
    # the owner sees the exit before any ports file and shows the log.
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m worker.dev.clickhouse_server [--data DIR] [--port N] [--http-port N]``.

    Serves DIR on 127.0.0.1 in the foreground until Ctrl-C (local use only).
    """
    parser = argparse.ArgumentParser(
        prog="python -m worker.dev.clickhouse_server",
        description="A local ClickHouse server (chdb's clickhouse-local, listening) for "
        "development and tests: loopback only, user default without password.",
    )
    parser.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, default=Path("data/clickhouse-server"))
    parser.add_argument("--port", type=int, default=9000, help="native port (0: any free)")
    parser.add_argument("--http-port", type=int, default=8123, help="HTTP port (0: any free)")
    args = parser.parse_args(argv)
    if args.serve is not None:
        return _serve(args.serve)
    for name, port in (("--port", args.port), ("--http-port", args.http_port)):
        if not 0 <= port <= 65535:
            parser.exit(2, f"{parser.prog}: {name} must be 0..65535, got {port}\n")
    server = LocalClickHouseServer(
        args.data.resolve(), tcp_port=args.port, http_port=args.http_port
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        server.start()
    except ClickHouseServerError as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 1
    print(f"serving {args.data} at {server.url} (HTTP {server.http_url}); Ctrl-C stops")
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
