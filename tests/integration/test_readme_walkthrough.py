"""The README's "First run, in ten lines" block, run exactly as written.

In a scratch directory holding a copy of the sample files at the paths the
block names, with the virtualenv's `events-worker` first on PATH. The only
environment it gets beyond that: a free port for the broker (so parallel runs
on one machine never collide) and an ephemeral metrics port.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from worker.dev.local_broker import free_port

ROOT = Path(__file__).resolve().parents[2]


def _walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    found = re.search(
        r"<!-- walkthrough:start -->\n```sh\n(.*?)```\n<!-- walkthrough:end -->", readme, re.S
    )
    assert found, "the README walkthrough block is missing"
    return found.group(1)


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    block = _walkthrough()
    assert len(block.splitlines()) <= 10
    shutil.copytree(ROOT / "worker" / "samples", tmp_path / "worker" / "samples")
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "EW_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
        "EW_HTTP_PORT": "0",
    }
    for name in ("EW_KAFKA_SESSION_TIMEOUT_MS", "EW_STORE_URL", "EW_KAFKA_EXTRA"):
        env.pop(name, None)
    result = subprocess.run(
        ["bash", "-e", "-c", block],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=300,
    )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err[-3000:]
    assert f"tansu broker listening: bootstrap 127.0.0.1:{port}" in out
    assert "catalog worker/samples/catalog.json is valid: 2 tenant/environment documents" in out
    assert "produced 200 messages" in out
    line_items = [line for line in out.splitlines() if line.startswith("sub_1 ")]
    assert len(line_items) >= 3  # cust-1 is cus_1: sub_1 and its line items
    assert not [line for line in out.splitlines() if re.match(r"sub_[02-9] ", line)]
    assert "(no priced usage)" not in out
    # The sample has api_call events outside cust-0's region filter: unpriced, and said so.
    unprocessed = re.search(r"^(\d+) unprocessed events: (\d+) no_matching_line_item$", out, re.M)
    assert unprocessed and unprocessed.group(1) == unprocessed.group(2) != "0"
    assert re.search(
        r"^unpriced events \(stored raw\): \d+ no_matching_line_item; .*"
        r"`events-worker reprocess request ",
        err,
        re.M,
    )
    assert "tansu broker stopped" in out
    assert "Traceback" not in err


def test_broker_refuses_a_port_in_use_with_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "worker.cli", "broker", "--port", str(port)],
            capture_output=True,
            timeout=60,
        )
    assert result.returncode == 2 and result.stdout == b""
    (line,) = result.stderr.decode().splitlines()
    assert line.startswith(f"events-worker: port {port} is in use (")
    assert "--port N" in line
