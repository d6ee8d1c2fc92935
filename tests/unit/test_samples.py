"""The synthetic sample catalog used by tests, the demo and the benchmarks."""

from __future__ import annotations

from worker.samples.synthetic import build_catalog


def test_sample_catalogs_are_independent_copies() -> None:
    first = build_catalog(customers=1)
    first["prices"][0]["amount"] = "999"
    first["meters"][0]["id"] = "changed"
    second = build_catalog(customers=1)
    assert second["prices"][0].get("amount") != "999"
    assert second["meters"][0]["id"] != "changed"
