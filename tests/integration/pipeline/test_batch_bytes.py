"""Batches are cut by bytes as well as by count and age (issue 19), and every
message still reaches the store exactly once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.workers import (
    expected_invoice,
    produce,
    settings_for,
    stored_totals,
    write_catalog,
)
from worker.samples.synthetic import build_catalog, generate_events
from worker.stream.run_usage import run_usage
from worker.stream.topics import ensure_topics, worker_topics
from worker.stream.usage_batch import SourceMessage, UsageBatchProcessor

BUDGET = 1024 * 1024


def test_a_batch_of_large_messages_is_cut_by_bytes(
    kafka_bootstrap: str,
    chdb_path: Path,
    chdb_database: Any,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    catalog = build_catalog(customers=6, line_items_per_customer=2)
    catalog_file = write_catalog(tmp_path, catalog)
    documents = list(generate_events(catalog, 60, seed=11))
    for document in documents:  # ~60 KB each: 3.6 MB in all
        document["properties"]["padding"] = "x" * 60_000
    settings = settings_for(
        kafka_bootstrap, f"chdb://{chdb_path}?database={chdb_database.database}", unique_name
    ).model_copy(update={"batch_max_bytes": BUDGET, "batch_max_events": 20_000})
    ensure_topics(settings, worker_topics(settings))
    produce(settings, documents)

    batches: list[list[SourceMessage]] = []
    prepare = UsageBatchProcessor.prepare

    def recording(self: UsageBatchProcessor, messages: list[SourceMessage]) -> Any:
        batches.append(list(messages))
        return prepare(self, messages)

    monkeypatch.setattr(UsageBatchProcessor, "prepare", recording)
    stats = run_usage(settings, catalog_file=str(catalog_file), exit_when_idle_s=2.0)

    sizes = [sum(len(m.value or b"") for m in batch) for batch in batches]
    assert stats.messages == len(documents) and sum(len(b) for b in batches) == len(documents)
    assert len(batches) >= 4 and max(sizes) <= BUDGET, sizes
    assert stored_totals(settings) == expected_invoice(catalog, documents)
