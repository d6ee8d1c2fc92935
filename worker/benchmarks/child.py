"""Benchmarks that open chdb run in a child process (chdb: one data directory per process).

Their data directories come from :func:`scratch_directory`. Deleting one
benchmark's tens of thousands of part files makes creating files slow for the
next minute or two on this VM's ext4, which runs without a journal (new inodes
skip the recently freed ones, one inode-table lookup each: 30 µs per file
became 500-800 µs). ``events-worker bench`` therefore keeps every data
directory under one scratch root (:data:`SCRATCH_ROOT_VARIABLE`, inherited by
the child processes) and deletes the root once, after the last benchmark.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHILD_TIMEOUT_S = 3600.0
SCRATCH_ROOT_VARIABLE = "EW_BENCH_SCRATCH_ROOT"


@contextmanager
def scratch_directory(prefix: str) -> Iterator[Path]:
    """A new empty directory for one benchmark's data.

    Inside the scratch root when :data:`SCRATCH_ROOT_VARIABLE` names one (it is
    left there for whoever owns the root to delete); otherwise a temporary
    directory deleted on exit.
    """
    root = os.environ.get(SCRATCH_ROOT_VARIABLE)
    if root:
        yield Path(tempfile.mkdtemp(prefix=prefix, dir=root))
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as directory:
        yield Path(directory)


@contextmanager
def scratch_root(prefix: str = "ew-bench-") -> Iterator[Path]:
    """Set the scratch root for the benchmarks run inside; delete it on exit."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    previous = os.environ.get(SCRATCH_ROOT_VARIABLE)
    os.environ[SCRATCH_ROOT_VARIABLE] = str(root)
    try:
        yield root
    finally:
        if previous is None:
            del os.environ[SCRATCH_ROOT_VARIABLE]
        else:
            os.environ[SCRATCH_ROOT_VARIABLE] = previous
        shutil.rmtree(root, ignore_errors=True)


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
