"""The core's remembered owners against ``LineItemPeriodRating``, with real hashes.

The core holds a 64-digit lowercase hex unique hash as its 32 bytes and a
canonical (lowercase) UUID event id as its 16 bytes; anything else as text.
Streams here mix both forms of hashes and ids: digests that share their
first 8 bytes (the bytes the core's index hashes), the same digits in
capitals (another hash), UUIDs in both cases, ids of 36 characters that are
not UUIDs, long and empty ids. Every delta (outcome included) must be the
reference's.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.core.test_rating_differential import (
    _EPOCH,
    _MOMENTS,
    _QUANTITIES,
    _text,
    prices,
    reference,
    snapshots,
)
from worker import _core
from worker.core_rating import price_tuple, snapshot_tuple
from worker.domain.metering import AggregationType

_HEAD = "0123456789abcdef"
_HASHES = [
    _HEAD + "0" * 48,
    _HEAD + "0" * 47 + "1",  # the same first 8 bytes as the one above
    "f" * 64,
    (_HEAD + "0" * 48).upper(),  # text: not what hexdigest writes
    "h1",
]
_UUID = "0f8e2a4c-1b3d-4e5f-a6b7-c8d9e0f1a2b3"
_IDS = [
    _UUID,
    _UUID[:-1] + "4",
    _UUID.upper(),
    _UUID.replace("-", "_"),
    "x" * 300,
    "",
    "é",
]


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_owners_of_digests_and_uuid_ids_decide_like_the_reference(data: st.DataObject) -> None:
    price = data.draw(prices())
    kind = data.draw(st.sampled_from([AggregationType.COUNT, AggregationType.COUNT_UNIQUE]))
    snapshot = data.draw(snapshots())
    hashes = st.sampled_from(_HASHES)
    ids = st.sampled_from(_IDS)
    known = data.draw(st.dictionaries(hashes, ids, max_size=3))
    events = data.draw(st.lists(st.tuples(ids, _MOMENTS, _QUANTITIES, hashes), max_size=30))
    want = reference(price, kind, None, Decimal(0), snapshot, known, events)
    stream = [(e, (t - _EPOCH) // timedelta(microseconds=1), _text(q), h) for e, t, q, h in events]
    zero = _text(Decimal(0))
    terms = (price_tuple(price), kind.value, None, zero, snapshot_tuple(snapshot))
    got = _core.rate_period(*terms, list(known.items()), stream)
    # Outcome and amounts of each delta; None for a refused event.
    assert [None if d is None else (d[0], *map(Decimal, d[1:])) for d in got] == want
