"""librdkafka's connection noise folded into two lines of our own (issue 15).

Without this, a broker that is down makes librdkafka log a ``FAIL`` line per
connection attempt per client (hundreds a minute) and never a sentence of
the worker's. :class:`BrokerReachability` is handed to every client of a
process (``logger``, ``error_cb`` and ``stats_cb`` client properties, see
:func:`with_reachability`) and:

* drops librdkafka's connection-failure lines (facilities ``FAIL``,
  ``ERROR``, ``BROKERFAIL``) and counts them;
* reports once when the brokers are unreachable, with the bootstrap address
  and what to check, and once when one is back, with how long it was away
  and how many lines it hid.

The state comes from the clients' statistics (every second): each client's
latest report says "a broker is UP", "none is, and it had been connected or
a connection is failing" or nothing (an idle client that never connected). Reports are served late
by clients that are rarely polled, so only reports generated (librdkafka's
own ``ts``) within a few intervals of the newest one count: one fresh client
with a broker UP means reachable; otherwise one failing means unreachable.

Callbacks run inside the clients' ``poll``/``consume``/``flush`` calls, on
whatever thread makes them; the state is guarded by a lock.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import orjson
from confluent_kafka import KafkaError

from worker.ops.settings import WorkerSettings

#: librdkafka log facilities that are connection noise while a broker is away.
_NOISE: Final = frozenset({"FAIL", "ERROR", "BROKERFAIL"})
_CONNECTION_CODES: Final = frozenset(
    {KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE, KafkaError._TRANSPORT}
)
#: Broker states of a connection that is failing or being retried.
_FAILING: Final = frozenset({"DOWN", "CONNECT", "TRY_CONNECT"})
#: The logger name librdkafka's lines carry (``logger`` field of the JSON lines).
KAFKA_LOGGER: Final = "librdkafka"
#: How often clients report statistics (how soon a change is noticed), ms.
STATS_INTERVAL_MS: Final = 1000
#: Reports generated this long before the newest one no longer count (µs).
_FRESH_US: Final = 3 * STATS_INTERVAL_MS * 1000

log = logging.getLogger(__name__)


class BrokerReachability(logging.Filter):
    """Broker up/down as one line each; see the module docstring.

    ``report(line, down)`` says it (a log call, or a print for short CLI
    commands); ``on_change(down)`` is for metrics. ``unreachable_count``
    counts the times the brokers became unreachable, ``hidden_lines`` the
    librdkafka lines dropped.
    """

    def __init__(
        self,
        bootstrap: str,
        report: Callable[[str, bool], None],
        *,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.bootstrap = bootstrap
        self._report = report
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._last_detail = ""
        self.unreachable_count = 0
        self.hidden_lines = 0
        self._hidden_at_down = 0
        self._reports: dict[str, tuple[int, bool | None]] = {}
        self._connected: set[str] = set()
        # Our own logger object named like the shared one ("librdkafka" in the
        # JSON lines) but not registered: its filter is this instance's alone.
        self._librdkafka = logging.Logger(KAFKA_LOGGER)
        self._librdkafka.parent = logging.getLogger()
        self._librdkafka.addFilter(self)

    def client_properties(self) -> dict[str, Any]:
        """librdkafka properties that route a client's noise and state through here."""
        return {
            "logger": self._librdkafka,
            "error_cb": self.on_error,
            "stats_cb": self.on_stats,
            "statistics.interval.ms": STATS_INTERVAL_MS,
        }

    # -- librdkafka callbacks ----------------------------------------------------

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop connection noise (noting its detail); let every other line through.

        Noise: warnings and errors of the connection facilities (a failed
        connect, "all brokers down"); an informational "Disconnected" passes.
        """
        message = record.getMessage()
        if record.levelno < logging.WARNING or message.split(" ", 1)[0] not in _NOISE:
            return True
        with self._lock:
            self.hidden_lines += 1
            self._last_detail = message.rsplit("]: ", 1)[-1][:300]
        return False

    def on_error(self, error: KafkaError) -> None:
        """``error_cb``: connection errors only note their detail; others are logged."""
        if error.code() in _CONNECTION_CODES:
            with self._lock:
                self._last_detail = self._last_detail or error.str()
            return
        log.log(logging.ERROR if error.fatal() else logging.WARNING, "kafka: %s", error.str())

    def on_stats(self, stats: str) -> None:
        """``stats_cb``: fold one client's report into the state (module docstring)."""
        try:
            report = orjson.loads(stats)
            name, generated = str(report["name"]), int(report["ts"])
            states = [str(b.get("state")) for b in report.get("brokers", {}).values()]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return
        with self._lock:
            if "UP" in states:
                self._connected.add(name)
                up: bool | None = True
            elif name in self._connected or _FAILING.intersection(states):
                up = False  # lost (its brokers fall back to INIT), or failing to connect
            else:
                up = None  # never connected (sparse connections: idle so far)
            self._reports[name] = (generated, up)
            newest = max(ts for ts, _ in self._reports.values())
            fresh = [state for ts, state in self._reports.values() if newest - ts <= _FRESH_US]
        if True in fresh:
            self._came_back()
        elif False in fresh:
            self._went_down()

    # -- transitions ---------------------------------------------------------------

    def _went_down(self) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = self._clock()
            self.unreachable_count += 1
            self._hidden_at_down = self.hidden_lines
            detail = self._last_detail or "all brokers down"
        if self._on_change is not None:
            self._on_change(True)
        self._report(
            f"Kafka unreachable at {self.bootstrap} ({detail}): check that the broker is up, "
            "--bootstrap / EW_KAFKA_BOOTSTRAP, and SASL/SSL properties in EW_KAFKA_EXTRA; "
            "retrying",
            True,
        )

    def _came_back(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            away = self._clock() - self._down_since
            hidden = self.hidden_lines - self._hidden_at_down
            self._down_since = None
            self._last_detail = ""
        if self._on_change is not None:
            self._on_change(False)
        self._report(
            f"Kafka reachable again at {self.bootstrap} after {away:.1f}s "
            f"({hidden} librdkafka connection lines hidden)",
            False,
        )


def with_reachability(settings: WorkerSettings, reachability: BrokerReachability) -> WorkerSettings:
    """``settings`` whose Kafka clients report through ``reachability``.

    A copy (not re-validated: it holds callables); log the original
    settings' ``redacted()``.
    """
    extra = {**settings.kafka_extra, **reachability.client_properties()}
    return settings.model_copy(update={"kafka_extra": extra})


def stderr_report(line: str, down: bool) -> None:
    """``report`` for short command-line runs: a plain line on stderr."""
    print(f"events-worker: {line}", file=sys.stderr)


def for_command_line(settings: WorkerSettings) -> WorkerSettings:
    """``settings`` for a short CLI command: librdkafka's noise folded into stderr lines."""
    return with_reachability(settings, BrokerReachability(settings.kafka_bootstrap, stderr_report))


def log_report(line: str, down: bool) -> None:
    """``report`` for long-running workers: a warning in the JSON log."""
    log.warning("%s", line, extra={"kafka_reachable": not down})
