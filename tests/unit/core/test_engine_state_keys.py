"""The state keys the core makes for ``missing`` and ``touched`` are real
``StateKey`` instances (the store and the revocation bookkeeping read them by
field), equal to the keys the Python side names the same states with."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from worker.core_engine import CoreBatchEngine
from worker.domain.aggregates import AggregateSnapshot
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.rating_reads import StateKey
from worker.domain.validation import DEFAULT_LIMITS
from worker.samples.synthetic import build_catalog, generate_events
from worker.stream.usage_batch import SourceMessage

NOW = datetime.now(UTC)


def _prepared_engine() -> CoreBatchEngine:
    catalog = build_catalog(customers=4, line_items_per_customer=2)
    payloads = [orjson.dumps(e) for e in generate_events(catalog, 60, late_rate=0.0)]
    engine = CoreBatchEngine(
        CatalogIndex(parse_documents(catalog)),
        NOW,
        max_fingerprints=1000,
        max_remembered_owners=1000,
    )
    messages = [SourceMessage("events", 3, n, p) for n, p in enumerate(payloads)]
    engine.prepare(messages, NOW, DEFAULT_LIMITS)
    return engine


def test_missing_states_come_as_state_keys_with_their_windows() -> None:
    engine = _prepared_engine()
    missing = engine.missing()
    assert missing.requests and set(missing.requests) == engine.missing_states()
    assert all(type(key) is StateKey for key in missing.requests)
    assert list(missing.positions.values()) == list(range(len(missing.requests)))
    buckets = {b.line_item_id: b.meter.bucket_size for b in engine.bindings}
    for key, window in missing.requests.items():
        assert key.tenant_id and key.environment_id
        assert window == buckets[key.line_item_id]


def test_touched_pairs_come_as_partition_tuples_and_state_keys() -> None:
    engine = _prepared_engine()
    missing = engine.missing()
    engine.load_of(missing, dict.fromkeys(missing.requests, AggregateSnapshot()), None)
    engine.rate(NOW)
    touched = engine.touched()
    assert touched
    assert all(partition == ("events", 3) for partition, _ in touched)
    assert all(type(key) is StateKey for _, key in touched)
    assert {key for _, key in touched} == set(missing.requests)


def test_a_key_type_that_is_no_tuple_is_refused() -> None:
    engine = _prepared_engine()
    with pytest.raises(TypeError, match="tuple subclass"):
        engine._core.missing(dict, engine._state_names, engine._buckets)  # type: ignore[arg-type]
