"""Benchmarks that open chdb run in a child process (chdb: one data directory per process)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

CHILD_TIMEOUT_S = 3600.0


def run_child(module: str, args: list[str], *, timeout_s: float = CHILD_TIMEOUT_S) -> Any:
    """Run ``python -m module *args``; return the JSON of its last stdout line.

    The child's stderr (progress lines) passes through. Raises ``RuntimeError``
    when it fails or takes longer than ``timeout_s``.
    """
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, *args],
            stdout=subprocess.PIPE,
            text=True,
            check=False,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{module} took over {timeout_s:g} s; stopped") from None
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed (exit status {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])
