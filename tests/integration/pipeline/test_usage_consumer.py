"""The usage consumer end to end on the real tansu broker and embedded ClickHouse.

Events (with client retries and malformed messages) are produced keyed by
customer; `run_usage` consumes until idle; the invoice read back from
ClickHouse must equal an independent in-memory rating of the distinct events,
and every malformed message must be in the DLQ with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest

from tests.integration.workers import (
    MALFORMED,
    MALFORMED_MESSAGES,
    dead_letter_headers,
    expected_invoice,
    produce,
    settings_for,
    stored_totals,
    write_catalog,
)
from worker.samples.synthetic import build_catalog, generate_events
from worker.stream.run_usage import run_usage


@pytest.mark.parametrize("engine", ["python", "core"])
def test_consumer_prices_every_event_once_and_dead_letters_bad_input(
    kafka_bootstrap: str,
    store_under_test: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    engine: Literal["python", "core"],
) -> None:
    """With ``EW_ENGINE=core`` the fused core does the whole batch (docs/core.md)."""
    catalog = build_catalog(customers=12, line_items_per_customer=4)
    catalog_file = write_catalog(tmp_path, catalog)
    documents = list(generate_events(catalog, 3000, seed=9, duplicate_rate=0.05))
    settings = settings_for(kafka_bootstrap, store_under_test, unique_name).model_copy(
        update={"engine": engine}
    )
    from worker.stream.topics import ensure_topics, worker_topics

    ensure_topics(settings, worker_topics(settings))
    produce(settings, documents, MALFORMED_MESSAGES)

    stats = run_usage(settings, catalog_file=str(catalog_file), exit_when_idle_s=2.0)

    assert stats.messages == len(documents) + len(MALFORMED)
    stored = stored_totals(settings)
    assert stored == expected_invoice(catalog, documents)
    letters = dead_letter_headers(settings, len(MALFORMED))
    assert sorted(h["reason"].decode() for h in letters) == sorted(r for _, r in MALFORMED)
