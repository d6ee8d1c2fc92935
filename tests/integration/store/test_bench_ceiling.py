"""The I/O ceiling's ingest (``make bench``) on a real chdb: it reports the rows it
ingested and leaves no chdb connection open behind it (a process that exits with
one open can crash at exit after printing every figure: chdb-io/chdb-core#177)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

# A fresh process: the test process may hold its own chdb connection.
_SCRIPT = """
import sys
from worker.benchmarks.ceiling import ingest_seconds
from worker.samples.synthetic import build_catalog
from worker.store import chdb_gateway

catalog = build_catalog(customers=20, line_items_per_customer=3)
seconds, rows = ingest_seconds(sys.argv[1], catalog, 600, 200)
print(rows, chdb_gateway._shared is None)
"""


def test_the_ceiling_ingests_every_row_and_closes_its_connection(tmp_path: Path) -> None:
    url = f"chdb://{tmp_path}/clickhouse"
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, url], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows, released = done.stdout.split()
    # 600 raw events (1% duplicates are still raw rows) plus their priced rows.
    assert int(rows) > 600
    assert released == "True"
