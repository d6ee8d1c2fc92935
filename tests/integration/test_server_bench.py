"""The server benchmark runs end to end at a tiny size (its figures are not checked)."""

from __future__ import annotations

from worker.benchmarks.server import run_server_bench


def test_the_server_bench_prices_on_both_stores_and_inserts_on_every_path() -> None:
    result = run_server_bench(events=6_000, customers=200, insert_rows=3_000)
    assert result.events == 6_000 and result.insert_rows >= 3_000
    rates = [
        result.embedded_per_s,
        result.server_per_s,
        result.server_two_per_s,
        result.insert_chdb_per_s,
        result.insert_http_per_s,
        result.insert_native_per_s,
    ]
    assert all(rate > 0 for rate in rates), rates
