"""The reprocess benchmark at a tiny size: it finds and re-drives exactly the unprocessed events.

It runs as ``make bench`` does (a child process with its own chdb directory and
local tansu broker); only its counts are checked, never its timings.
"""

from __future__ import annotations

from worker.benchmarks.reprocess import run_reprocess_bench


def test_every_unprocessed_event_is_paged_and_republished_once() -> None:
    # 2,500 raw events, every 10th without a processed row: 250 unprocessed.
    result = run_reprocess_bench(table_rows=2_500, unprocessed_every=10)
    assert result.unprocessed == 250
    assert result.pages == 1  # one short page of 1000
    assert result.consumer_republished == 250
