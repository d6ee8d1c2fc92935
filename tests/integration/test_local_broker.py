"""LocalTansuBroker: comes up answering metadata, goes away without a trace."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from worker.dev.local_broker import BrokerStartError, LocalTansuBroker


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_answers_metadata_and_stop_leaves_no_process(tmp_path: Path) -> None:
    broker = LocalTansuBroker(log_path=tmp_path / "tansu.log")
    with broker:
        pid = broker.pid
        assert pid is not None and broker.is_running()
        host, _, port = broker.bootstrap.partition(":")
        assert host == "127.0.0.1" and int(port) > 0
        metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=5.0)
        assert metadata.brokers, "the broker should describe itself"

    assert not broker.is_running() and broker.pid is None
    assert not _alive(pid)
    with pytest.raises(RuntimeError, match="not running"):
        _ = broker.bootstrap
    broker.stop()  # idempotent
    assert "listening on" in (tmp_path / "tansu.log").read_text()


def test_a_broker_that_exits_fails_start_with_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho 'fake tansu: cannot bind' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    # A start timeout far beyond pytest's own: only noticing the exit can pass.
    broker = LocalTansuBroker(binary=str(fake), startup_timeout_s=3600.0)

    with pytest.raises(BrokerStartError, match="exited with status 3") as raised:
        broker.start()

    assert "fake tansu: cannot bind" in str(raised.value)
    assert not broker.is_running()


def test_a_killed_parent_takes_the_broker_with_it(tmp_path: Path) -> None:
    # The parent dies by SIGKILL (no atexit): the parent-death signal must end tansu.
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from worker.dev.local_broker import LocalTansuBroker\n"
        "b = LocalTansuBroker(log_path=Path(sys.argv[1])); b.start(); print(b.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "tansu.log")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    pid = int(done.stdout.strip())
    deadline = time.monotonic() + 10.0
    while _alive(pid) and _state(pid) != "Z":
        assert time.monotonic() < deadline, f"tansu pid {pid} outlived its parent"
        time.sleep(0.05)


def _state(pid: int) -> str:
    """The process state letter from /proc (Z = dead, waiting to be reaped)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "gone"
    return stat_line.rsplit(")", 1)[1].split()[0]
