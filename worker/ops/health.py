"""Liveness, readiness and ``/metrics`` over HTTP (``EW_HTTP_PORT``).

:class:`LoopHealth` is written by the consumer loop (one thread) and read by
the HTTP server's threads; every field is a single reference assignment, so no
lock is needed for a consistent-enough view.

* ``/healthz`` (liveness) answers 503 when messages are waiting (a batch is in
  flight, or the last measured consumer lag is above 0) and either the loop has
  not iterated for ``stall_s`` (it hangs), or nothing was committed for
  ``stall_s`` since the work appeared (it spins without progress: paused
  partitions that never resume, a store outage longer than ``stall_s``). An
  idle consumer with nothing to do is always live. The restart that follows is
  safe: nothing uncommitted is lost (DESIGN §5).
* ``/readyz`` answers 200 when partitions are assigned, the catalog is loaded
  (and not empty, unless allowed) and the store answers a ping (bounded by a
  short timeout, cached a few seconds so probes never queue behind each
  other). Rejected catalog entities do not make it unready (a bad entity must
  not stop the fleet) but its answer names how many and the latest.
* ``/metrics`` is the Prometheus text format of the process's
  :class:`~worker.ops.metrics.Metrics`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from worker.ops.metrics import Metrics

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Status:
    """One probe answer: ``ok`` and a one-line reason."""

    ok: bool
    detail: str


class StoreProbe:
    """Runs ``ping`` in a helper thread with a timeout and caches the answer.

    :meth:`check` blocks at most ``timeout_s``. At most one ping runs at a
    time; while one hangs, checks report the store as not answering.
    """

    def __init__(
        self,
        ping: Callable[[], None],
        *,
        timeout_s: float = 2.0,
        cache_s: float = 5.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._ping = ping
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, Status] | None = None
        self._running: threading.Thread | None = None
        self._result: Status | None = None
        self._failing = False

    def check(self) -> Status:
        with self._lock:
            now = self._clock()
            if self._cached is not None and now - self._cached[0] < self._cache_s:
                return self._cached[1]
            if self._running is None or not self._running.is_alive():
                self._result = None
                self._running = threading.Thread(target=self._run, name="store-probe", daemon=True)
                self._running.start()
            running = self._running
            running.join(self._timeout_s)
            result = self._result
            if running.is_alive() or result is None:
                result = Status(False, f"store did not answer within {self._timeout_s:g}s")
            self._cached = (self._clock(), result)
            return result

    def _run(self) -> None:
        try:
            self._ping()
            self._result = Status(True, "store answers")
            self._failing = False
        except Exception as exc:  # any failure means: not ready
            # The probe's answer is public (unauthenticated HTTP): the error text,
            # which can name hosts, users or SQL, goes to the log only, once per outage.
            if not self._failing:
                log.warning("readiness: the store does not answer: %s", exc)
            self._failing = True
            self._result = Status(False, "store does not answer")


class LoopHealth:
    """Progress of the consumer loop, as the probes judge it. See the module docstring."""

    def __init__(
        self,
        stall_s: float,
        *,
        metrics: Metrics | None = None,
        needs_catalog: bool = True,
        clock: Clock = time.monotonic,
    ) -> None:
        """``needs_catalog=False`` for consumers without a catalog (reprocess)."""
        self.stall_s = stall_s
        self._metrics = metrics
        self._clock = clock
        now = clock()
        self._last_beat = now
        self._last_progress = now
        self._in_flight_since: float | None = None
        self._backlog = 0
        self._assigned = 0
        self._catalog_loaded = not needs_catalog
        self._catalog_waiting: str | None = None
        self._catalog_rejected = 0
        self._latest_rejection = ""
        self._store: StoreProbe | None = None

    # -- written by the loop ----------------------------------------------------

    def beat(self) -> None:
        """The loop made one iteration (or one poll while waiting)."""
        self._last_beat = self._clock()
        if self._metrics is not None:
            self._metrics.heartbeat.set(time.time())

    def batch_started(self) -> None:
        if not self._waiting():
            self._last_progress = self._clock()
        self._in_flight_since = self._clock()

    def batch_finished(self, *, committed: bool) -> None:
        """The batch in flight was committed, or abandoned (rebalance)."""
        self._in_flight_since = None
        self._last_progress = self._clock()
        if committed and self._metrics is not None:
            self._metrics.committed()

    def set_backlog(self, messages: int) -> None:
        """The consumer lag just measured over the owned partitions."""
        if messages > 0 and not self._waiting():
            self._last_progress = self._clock()
        self._backlog = max(0, messages)

    def set_assigned(self, partitions: int) -> None:
        self._assigned = partitions
        self._last_progress = self._clock()
        if partitions == 0:
            self._backlog = 0

    def catalog_loaded(self) -> None:
        self._catalog_loaded = True
        self._catalog_waiting = None

    def catalog_waiting(self, reason: str) -> None:
        """The catalog is loaded but unusable (e.g. empty): not ready, with ``reason``."""
        self._catalog_waiting = reason

    def catalog_rejected(self, detail: str) -> None:
        """One catalog entity value was rejected (``detail``: its key and reason)."""
        self._catalog_rejected += 1
        self._latest_rejection = detail

    def watch_store(self, probe: StoreProbe | None) -> None:
        self._store = probe

    # -- read by the probes -------------------------------------------------------

    def _waiting(self) -> bool:
        return self._in_flight_since is not None or self._backlog > 0

    def liveness(self) -> Status:
        now = self._clock()
        if not self._waiting():
            return Status(True, "idle: nothing waiting")
        silent = now - self._last_beat
        if silent > self.stall_s:
            return Status(False, f"loop stalled: no iteration for {silent:.1f}s with work waiting")
        without = now - self._last_progress
        if without > self.stall_s:
            return Status(False, f"commit overdue: no commit for {without:.1f}s with work waiting")
        return Status(True, "making progress")

    def readiness(self) -> Status:
        if self._catalog_waiting is not None:
            return Status(False, self._catalog_waiting)
        if not self._catalog_loaded:
            return Status(False, "catalog not loaded")
        if self._assigned <= 0:
            return Status(False, "no partitions assigned")
        if self._store is None:
            return Status(False, "store not opened")
        status = self._store.check()
        if self._catalog_rejected:
            detail = (
                f"{status.detail}; catalog: {self._catalog_rejected} entity values rejected "
                f"(dead-lettered, previous versions kept), latest {self._latest_rejection}"
            )
            return Status(status.ok, detail[:1000])
        return status


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on a daemon thread.

    ``port`` 0 picks a free port (see :attr:`port`). :meth:`close` stops the
    server (idempotent). Requests never touch the consumer: they read
    :class:`LoopHealth` and the metrics registry only.
    """

    def __init__(
        self, metrics: Metrics, health: LoopHealth, *, port: int, host: str = "127.0.0.1"
    ) -> None:
        handler = _handler_class(metrics, health)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-http", daemon=True
        )
        self._closed = False

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("serving /metrics, /healthz and /readyz", extra={"port": self.port})
        return self

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _handler_class(metrics: Metrics, health: LoopHealth) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "events-worker"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(HTTPStatus.OK, metrics.render(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._status(health.liveness())
            elif path == "/readyz":
                self._status(health.readiness())
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

        def _status(self, status: Status) -> None:
            code = HTTPStatus.OK if status.ok else HTTPStatus.SERVICE_UNAVAILABLE
            self._send(code, f"{status.detail}\n".encode(), "text/plain; charset=utf-8")

        def _send(self, code: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("http %s", format % args)

    return Handler
