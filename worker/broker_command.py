"""``events-worker broker [--port N]``: the local tansu broker in the foreground.

For a first day and local runs only (tansu keeps topics in memory: they are
gone when it stops). Prints the bootstrap address, then blocks until Ctrl-C
or SIGTERM, then stops the broker. A port in use is a user error.
"""

from __future__ import annotations

import signal
import socket
import threading
from typing import TextIO
from urllib.parse import urlsplit

from worker.dev.local_broker import BrokerStartError, LocalTansuBroker
from worker.ops.settings import LOOPBACK_HOSTS, WorkerSettings

#: Port when neither ``--port`` nor a loopback ``EW_KAFKA_BOOTSTRAP`` names one.
DEFAULT_PORT = 9092


class BrokerCommandError(Exception):
    """The broker cannot start here; the message says why, in one line."""


def default_port(settings: WorkerSettings) -> int:
    """The port of a loopback ``EW_KAFKA_BOOTSTRAP`` (what the other commands will
    dial), else :data:`DEFAULT_PORT`."""
    first = settings.kafka_bootstrap.split(",")[0].strip()
    try:
        parts = urlsplit(f"//{first}")
        if parts.hostname in LOOPBACK_HOSTS and parts.port:
            return parts.port
    except ValueError:
        pass
    return DEFAULT_PORT


def run_broker(port: int, out: TextIO, *, ready: threading.Event | None = None) -> None:
    """Start tansu on 127.0.0.1:``port``, print its address, block until a signal.

    Raises :class:`BrokerCommandError` when the port is taken or tansu does
    not start. ``ready`` (tests) is set once the address was printed.
    """
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise BrokerCommandError(
                f"port {port} is in use ({exc.strerror}): choose another with --port N and "
                f"point the other commands at it (EW_KAFKA_BOOTSTRAP=127.0.0.1:N)"
            ) from None
    broker = LocalTansuBroker(port=port)
    try:
        broker.start()
    except BrokerStartError as exc:
        first = str(exc).splitlines()[0]
        raise BrokerCommandError(f"tansu did not start on port {port}: {first}") from None
    stop = threading.Event()
    previous = {
        number: signal.signal(number, lambda *_: stop.set())
        for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        print(
            f"tansu broker listening: bootstrap {broker.bootstrap} (topics in memory, "
            f"lost when it stops); Ctrl-C to stop. Other shells: "
            f"export EW_KAFKA_BOOTSTRAP={broker.bootstrap}",
            file=out,
            flush=True,
        )
        if ready is not None:
            ready.set()
        while not stop.wait(1.0):
            if not broker.is_running():
                raise BrokerCommandError(f"tansu exited: {broker.log_tail(3)}")
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        broker.stop()
    print("tansu broker stopped", file=out, flush=True)
