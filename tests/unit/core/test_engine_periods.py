"""``CoreEngine.prepare`` adds the billing periods a batch lacks while it
routes (``periods_for``), and holds nothing when they stay missing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from worker.core_catalog import needed_periods
from worker.core_decode import batch_arguments
from worker.core_engine import CoreBatchEngine
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.validation import DEFAULT_LIMITS
from worker.samples.synthetic import build_catalog, generate_events
from worker.stream.usage_batch import SourceMessage

# Months after the synthetic events, so that none of their periods is precomputed.
NOW = datetime(2027, 6, 1, tzinfo=UTC)


def _engine_and_messages() -> tuple[CoreBatchEngine, list[SourceMessage]]:
    catalog = build_catalog(customers=3, line_items_per_customer=2)
    payloads = [orjson.dumps(e) for e in generate_events(catalog, 30, late_rate=0.0)]
    engine = CoreBatchEngine(
        CatalogIndex(parse_documents(catalog)),
        NOW,
        max_fingerprints=1000,
        max_remembered_owners=1000,
        before=timedelta(0),
        after=timedelta(0),
    )
    return engine, [SourceMessage("events", 0, n, p) for n, p in enumerate(payloads)]


def test_periods_still_missing_are_returned_and_nothing_is_held() -> None:
    engine, messages = _engine_and_messages()
    asked: list[list[tuple[int, int]]] = []

    def no_periods(need: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
        asked.append(need)
        return []

    result = engine._core.prepare(*batch_arguments(messages, NOW, DEFAULT_LIMITS), no_periods)
    need = result[2]
    assert need and need == asked[-1]
    assert engine.missing_states() == set()  # no row held


def test_missing_periods_are_added_within_one_prepare() -> None:
    engine, messages = _engine_and_messages()
    reference = _engine_and_messages()[0]
    # The reference engine gets the periods first, the way Python added them before.
    need = reference._core.prepare(*batch_arguments(messages, NOW, DEFAULT_LIMITS))[2]
    for number, start, end in needed_periods(reference._periods, need):
        reference._core.add_periods(number, [(start, end)])

    got = engine.prepare(messages, NOW, DEFAULT_LIMITS)
    want = reference.prepare(messages, NOW, DEFAULT_LIMITS)
    assert (got.accepted, got.unresolved, got.missing_fields) == (
        want.accepted,
        want.unresolved,
        want.missing_fields,
    )
    assert got.customers.equals(want.customers)
    assert engine.missing_states() == reference.missing_states() != set()
