"""Priced rows in ``events_processed``: the write path and the reads the pipeline needs.

Every function is scoped by tenant and environment, parameterised (no value
in SQL text), and reads through ``FINAL``: a row stored twice (redelivery,
replay, reprocess) is counted once even before merges. Every function blocks
and raises :class:`~worker.store.errors.StoreError` on failure.

* :func:`insert_rated` - ``BulkInsertProcessedEvents`` of a rater's
  :class:`~worker.domain.processed_rows.ProcessedRows`, as Arrow columns
* :func:`find_hash_owners` - the batched ``IsDuplicate``
* :func:`load_snapshots` - the batched ``GetLineItemUsage`` (aggregate state)
* :func:`load_fingerprints` - fingerprints of the stored hashes of (line item, period)s
* :func:`line_item_totals`, :func:`get_period_cost`, :func:`get_period_feature_totals`
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

import orjson

from worker.domain.aggregates import AggregateSnapshot
from worker.domain.catalog_index import Match
from worker.domain.invoice import LineItemTotal
from worker.domain.metering import WindowSize
from worker.domain.money import ZERO, exact
from worker.domain.processed_rows import ProcessedRows
from worker.domain.rating_reads import DedupKey, StateKey
from worker.store.errors import StoreError, first_line
from worker.store.gateway import Gateway
from worker.store.params import PeriodParams, window_step
from worker.store.raw import properties_text

PROCESSED_TABLE = "events_processed"

_NO_BUCKET = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PeriodFeatureTotal:
    """Usage of one feature in a period (the seed's ``PeriodFeatureTotal``).

    ``quantity`` = free + billable quantity; ``free_units`` = free quantity
    applied; ``cost`` = unrounded sum of the rows' cost.
    """

    feature_id: str
    quantity: Decimal
    free_units: Decimal
    cost: Decimal


# -- write -------------------------------------------------------------------


def insert_rated(
    gateway: Gateway,
    rows: ProcessedRows,
    *,
    dedup_token: str | None,
    cache: MatchColumnCache | None = None,
) -> int:
    """Store rated rows in one columnar insert; return the number of rows sent.

    Builds the columns straight from ``rows`` as Arrow arrays
    (:func:`rated_columns`; events without ``ingested_at`` get the insert
    time). A writer that inserts batch after batch passes its own ``cache``
    (:class:`MatchColumnCache`, one per thread). Blocking; durable on return.
    Idempotent with ``dedup_token`` (the same token again is a no-op); rows
    with the same identity under other tokens are replaced by the highest
    ``version`` and never double counted by reads. Decimals must have at most
    15 places (they are refused, never rounded). Raises
    :class:`~worker.store.errors.StoreError`.
    """
    if not rows:
        return 0
    try:
        columns = rated_columns(rows, datetime.now(UTC), cache)
    except (ValueError, TypeError, ArithmeticError) as exc:
        # The messages the gateway gives for rows it cannot convert.
        raise StoreError(
            f"cannot convert rows for {PROCESSED_TABLE}: {first_line(str(exc))}"
        ) from exc
    return gateway.insert(PROCESSED_TABLE, columns, dedup_token=dedup_token)


_MAX_LAG_MS = 2**32 - 1
_EVENT_STRINGS = ("id", "event_name", "external_customer_id", "source")
_MATCH_COLUMNS = (
    "tenant_id",
    "environment_id",
    "sub_line_item_id",
    "period_id",
    "subscription_id",
    "price_id",
    "feature_id",
    "meter_id",
    "currency",
)
_MATCH_VALUES = tuple[str, str, str, int, str, str, str, str, str]
#: Chunks a cached column may have before they are combined into one.
_MAX_CHUNKS = 8


def _match_values(match: Match) -> _MATCH_VALUES:
    """The :data:`_MATCH_COLUMNS` values of one catalog match.

    The state key's tenant and environment are the event's, by construction
    in the catalog index.
    """
    key = match.state_key
    binding = match.binding
    price = binding.price
    return (
        key.tenant_id,
        key.environment_id,
        key.line_item_id,
        key.period_id,
        binding.subscription.id,
        price.price_id,
        binding.feature_id,
        binding.meter.id,
        price.currency,
    )


class MatchColumnCache:
    """The catalog-derived columns of the matches a writer has seen, as Arrow arrays.

    A processed row's tenant, environment, line item, period, subscription,
    price, feature, meter and currency depend only on its catalog ``Match``,
    which the catalog index shares between events and from batch to batch.
    Converting them once per match, instead of walking the catalog objects for
    every row of every batch, is the largest saving of :func:`rated_columns`.

    Keeps the matches it has seen (so their ``id()`` stays theirs) and starts
    over once it holds more than ``limit`` (bounded memory across catalog
    reloads). Not thread-safe: one cache per writer thread.
    """

    def __init__(self, limit: int = 200_000) -> None:
        self._limit = limit
        self._codes: dict[int, int] = {}
        self._matches: list[Match] = []
        self._chunks: dict[str, list[Any]] = {name: [] for name in _MATCH_COLUMNS}

    def clear(self) -> None:
        """Forget every match (the next batch converts its matches again)."""
        self._codes.clear()
        self._matches.clear()
        self._chunks = {name: [] for name in _MATCH_COLUMNS}

    def __len__(self) -> int:
        return len(self._matches)

    def columns(self, matches: Sequence[Match]) -> dict[str, Any]:
        """The :data:`_MATCH_COLUMNS` of rows with these ``matches`` (Arrow arrays)."""
        import pyarrow as pa

        identities = list(map(id, matches))
        codes = list(map(self._codes.get, identities))
        if None in codes:
            new = {
                identity: match
                for identity, match, code in zip(identities, matches, codes, strict=True)
                if code is None
            }
            if len(self._matches) + len(new) > self._limit:
                self.clear()
                new = dict(zip(identities, matches, strict=True))
            self._add(list(new.values()))
            codes = list(map(self._codes.__getitem__, identities))
        positions = pa.array(codes, type=pa.int32())
        return {
            name: pa.chunked_array(chunks).take(positions).combine_chunks()
            for name, chunks in self._chunks.items()
        }

    def _add(self, matches: list[Match]) -> None:
        import pyarrow as pa

        values = zip(*map(_match_values, matches), strict=True)
        arrays = {
            name: pa.array(column, type=pa.uint64() if name == "period_id" else pa.string())
            for name, column in zip(_MATCH_COLUMNS, values, strict=True)
        }
        first = len(self._matches)
        self._matches.extend(matches)
        self._codes.update(zip(map(id, matches), range(first, len(self._matches)), strict=True))
        for name, chunks in self._chunks.items():
            chunks.append(arrays[name])
            if len(chunks) > _MAX_CHUNKS:
                chunks[:] = [pa.concat_arrays(chunks)]


def rated_columns(
    rows: ProcessedRows, now: datetime, cache: MatchColumnCache | None = None
) -> dict[str, Any]:
    """The ``events_processed`` columns of ``rows`` as Arrow arrays (``rows`` not empty).

    Built column by column with the per-row work in C: what depends only on
    the catalog match comes from ``cache`` (a throw-away one when None: pass
    the writer's own to convert each match once, not once per batch);
    decimals become ``decimal128(38, 15)`` (more than 15 places is refused,
    never rounded); times become microseconds since the epoch; ``version`` is
    ``rows.version`` and ``sign`` 1. ``now`` fills events without
    ``ingested_at``; ``final_lag_ms`` = clamp(floor((processed_at - timestamp)
    / 1 ms), 0, 2**32 - 1).
    """
    import pyarrow as pa

    from worker.store.arrow_columns import timestamps_us

    string = pa.string()
    events = rows.events

    columns: dict[str, Any] = {
        name: pa.array(list(map(attrgetter(name), events)), type=string) for name in _EVENT_STRINGS
    }
    cache = MatchColumnCache() if cache is None else cache
    columns.update(cache.columns(rows.matches))
    columns["customer_id"] = pa.array(rows.customer_ids, type=string)
    columns["unique_hash"] = pa.array(rows.unique_hashes, type=string)
    timestamps = timestamps_us(list(map(attrgetter("timestamp"), events)))
    columns["timestamp"] = timestamps
    ingested = list(map(attrgetter("ingested_at"), events))
    if None in ingested:
        ingested = [value or now for value in ingested]
    columns["ingested_at"] = timestamps_us(ingested)
    columns["properties"] = pa.array(
        _properties_texts(list(map(attrgetter("properties"), events))), type=string
    )
    # pyarrow (>= 20) converts Decimal objects in C, exactly: any exponent is
    # rescaled, and a value that would lose digits or exceed 38 digits raises
    # ArrowInvalid (a ValueError). 40% cheaper than going through str().
    decimal = pa.decimal128(38, 15)
    for name, values in (
        ("qty_total", rows.qty_total),
        ("qty_billable", rows.qty_billable),
        ("qty_free_applied", rows.qty_free_applied),
        ("tier_snapshot", rows.tier_snapshot),
        ("unit_cost", rows.unit_cost),
        ("cost", rows.cost),
    ):
        columns[name] = pa.array(values, type=decimal)
    columns.update(processing_columns(rows.processed_at, rows.version, timestamps))
    return columns


def processing_columns(processed_at: datetime, version: int, timestamps: Any) -> dict[str, Any]:
    """``version``, ``sign`` (1), ``processed_at`` and ``final_lag_ms`` of rows
    whose event times are ``timestamps`` (a ``timestamp[us, UTC]`` array)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from worker.store.arrow_columns import epoch_us

    # Arrow's integer division truncates, which differs from floor only below 0.
    lag_us = pc.subtract(epoch_us(processed_at), timestamps.view(pa.int64()))
    lag_ms = pc.max_element_wise(pc.divide(lag_us, 1000), 0)
    return {
        **constant_processing_columns(processed_at, version, len(timestamps)),
        "final_lag_ms": pc.min_element_wise(lag_ms, _MAX_LAG_MS).cast(pa.uint32()),
    }


def constant_processing_columns(processed_at: datetime, version: int, count: int) -> dict[str, Any]:
    """``version``, ``sign`` (1) and ``processed_at`` of ``count`` rows."""
    import pyarrow as pa

    from worker.store.arrow_columns import constant_integers, constant_timestamps_us

    return {
        "version": constant_integers(version, pa.uint64(), count),
        "sign": constant_integers(1, pa.int8(), count),
        "processed_at": constant_timestamps_us(processed_at, count),
    }


def _properties_texts(properties: Sequence[dict[str, Any]]) -> list[str]:
    """``properties_text`` of each object: orjson in one C loop when it takes them all."""
    try:
        return list(map(bytes.decode, map(orjson.dumps, properties)))
    except TypeError:
        return list(map(properties_text, properties))


# -- reads for the pipeline --------------------------------------------------


def _scoped(keys: Iterable[StateKey], tenant_id: str, environment_id: str) -> None:
    for key in keys:
        if key.tenant_id != tenant_id or key.environment_id != environment_id:
            raise ValueError(f"key {key!r} is outside tenant {tenant_id!r} / {environment_id!r}")


_HASH_OWNERS_SQL = """
SELECT sub_line_item_id, period_id, unique_hash,
       argMin(id, (qty_total = 0, timestamp, id)) AS owner
FROM events_processed FINAL
WHERE tenant_id = {tenant:String}
  AND environment_id = {environment:String}
  AND sub_line_item_id IN {line_items:Array(String)}
  AND unique_hash IN {hashes:Array(String)}
  AND (sub_line_item_id, period_id, unique_hash) IN (
      SELECT k.1, k.2, k.3
      FROM (SELECT arrayJoin({keys:Array(Tuple(String, UInt64, String))}) AS k))
GROUP BY sub_line_item_id, period_id, unique_hash
"""


def find_hash_owners(
    gateway: Gateway, tenant_id: str, environment_id: str, keys: Iterable[DedupKey]
) -> dict[DedupKey, str]:
    """For each (state key, unique_hash) already stored, the event id that counted it.

    One query for all ``keys`` (the batched ``IsDuplicate``). When several
    events stored the same hash in a (line item, period) - COUNT_UNIQUE repeats
    are stored with ``qty_total`` 0 - the owner is the one with a non-zero
    quantity (then the earliest). Keys not stored are absent from the result.
    Every key must belong to ``tenant_id`` / ``environment_id`` (ValueError).
    """
    wanted = set(keys)
    if not wanted:
        return {}
    _scoped((key.state for key in wanted), tenant_id, environment_id)
    triples = sorted(
        (key.state.line_item_id, key.state.period_id, key.unique_hash) for key in wanted
    )
    rows = gateway.query(
        _HASH_OWNERS_SQL,
        {
            "tenant": tenant_id,
            "environment": environment_id,
            "line_items": sorted({t[0] for t in triples}),
            "hashes": sorted({t[2] for t in triples}),
            "keys": triples,
        },
    )
    return {
        DedupKey(StateKey(tenant_id, environment_id, line_item, int(period)), unique_hash): str(
            owner
        )
        for line_item, period, unique_hash, owner in rows
    }


# Rows of the (line item, period) pairs of :func:`_state_key_params`; the
# line item list lets the primary key skip to their ranges.
_STATE_KEYS_WHERE = """
WHERE tenant_id = {tenant:String}
  AND environment_id = {environment:String}
  AND sub_line_item_id IN {line_items:Array(String)}
  AND (sub_line_item_id, period_id) IN (
      SELECT k.1, k.2 FROM (SELECT arrayJoin({keys:Array(Tuple(String, UInt64))}) AS k))"""


def _state_key_params(
    tenant_id: str, environment_id: str, keys: Iterable[StateKey]
) -> dict[str, Any]:
    keys = list(keys)
    return {
        "tenant": tenant_id,
        "environment": environment_id,
        "line_items": sorted({key.line_item_id for key in keys}),
        "keys": sorted((key.line_item_id, key.period_id) for key in keys),
    }


# The 64-bit fingerprint of worker.domain.engine.fingerprint: the first 16 hex
# digits of the hash read as a big-endian integer. No FINAL: an unmerged copy
# only repeats a fingerprint.
_FINGERPRINTS_SQL = "".join(
    (
        """
SELECT sub_line_item_id, period_id,
       groupUniqArray(reinterpretAsUInt64(reverse(unhex(substring(unique_hash, 1, 16)))))
FROM events_processed""",
        _STATE_KEYS_WHERE,
        """
GROUP BY sub_line_item_id, period_id
""",
    )
)


def load_fingerprints(
    gateway: Gateway, tenant_id: str, environment_id: str, keys: Iterable[StateKey]
) -> dict[StateKey, list[int]]:
    """Fingerprints of every unique_hash stored for each (line item, period), in one query.

    Keys with nothing stored map to an empty list. Every key must belong to
    ``tenant_id`` / ``environment_id`` (ValueError).
    """
    wanted = set(keys)
    if not wanted:
        return {}
    _scoped(wanted, tenant_id, environment_id)
    rows = gateway.query(_FINGERPRINTS_SQL, _state_key_params(tenant_id, environment_id, wanted))
    found: dict[StateKey, list[int]] = {key: [] for key in wanted}
    for line_item, period, fingerprints in rows:
        found[StateKey(tenant_id, environment_id, line_item, int(period))] = [
            int(f) for f in fingerprints
        ]
    return found


_SNAPSHOT_SQL = "".join(
    (
        """
SELECT sub_line_item_id, period_id,
       multiIf(step = 0, toDateTime(0, 'UTC'),
               step > 0, toDateTime(intDiv(toUnixTimestamp(timestamp), step) * step, 'UTC'),
               step = -1, toDateTime(toMonday(timestamp, 'UTC'), 'UTC'),
               toDateTime(toStartOfMonth(timestamp, 'UTC'), 'UTC')) AS bucket,
       sum(qty_total), count(), max(qty_total),
       argMax(timestamp, (timestamp, id)), argMax(id, (timestamp, id)),
       argMax(qty_total, (timestamp, id))
FROM (
    SELECT sub_line_item_id, period_id, timestamp, id, qty_total,
           transform(sub_line_item_id, {bucket_items:Array(String)},
                     {bucket_steps:Array(Int64)}, toInt64(0)) AS step
    FROM events_processed FINAL""",
        _STATE_KEYS_WHERE,
        """
)
GROUP BY sub_line_item_id, period_id, bucket
""",
    )
)


def load_snapshots(
    gateway: Gateway,
    tenant_id: str,
    environment_id: str,
    requests: Mapping[StateKey, WindowSize | None],
) -> dict[StateKey, AggregateSnapshot]:
    """Aggregate snapshots of many (line item, period) in one query (``GetLineItemUsage``).

    ``requests`` maps each state key to its meter's bucket size (None when the
    meter is not bucketed). Every requested key is in the result (an empty
    snapshot when nothing is stored). ``total`` = sum(qty_total), ``count`` =
    rows, ``maximum`` = max(qty_total) (0 when empty), ``latest`` = the row with
    the greatest (timestamp, id); ``bucket_maxima`` (bucketed keys only) uses
    the UTC windows of :func:`worker.domain.windows.window_start`.
    """
    if not requests:
        return {}
    _scoped(requests, tenant_id, environment_id)
    buckets: dict[str, int] = {}
    for key, size in requests.items():
        step = window_step(size)
        if buckets.setdefault(key.line_item_id, step) != step:
            raise ValueError(f"line item {key.line_item_id!r} requested with two bucket sizes")
    bucketed = sorted(item for item, step in buckets.items() if step != 0)
    rows = gateway.query(
        _SNAPSHOT_SQL,
        {
            **_state_key_params(tenant_id, environment_id, requests),
            "bucket_items": bucketed,
            "bucket_steps": [buckets[item] for item in bucketed],
        },
    )
    parts: dict[StateKey, list[tuple[Any, ...]]] = {}
    for line_item, period, *rest in rows:
        parts.setdefault(StateKey(tenant_id, environment_id, line_item, int(period)), []).append(
            tuple(rest)
        )
    return {
        key: _snapshot(parts.get(key, []), bucketed=buckets[key.line_item_id] != 0)
        for key in requests
    }


def _snapshot(groups: list[tuple[Any, ...]], *, bucketed: bool) -> AggregateSnapshot:
    """Combine per-bucket groups (bucket, sum, count, max, ts, id, value) into one snapshot."""
    if not groups:
        return AggregateSnapshot()
    total, count, maximum = ZERO, 0, None
    latest: tuple[datetime, str, Decimal] | None = None
    maxima: dict[datetime, Decimal] = {}
    for bucket, part_sum, part_count, part_max, ts, event_id, value in groups:
        total += part_sum
        count += int(part_count)
        maximum = part_max if maximum is None or part_max > maximum else maximum
        ts = ts.astimezone(UTC)
        if latest is None or (ts, event_id) > latest[:2]:
            latest = (ts, str(event_id), value)
        if bucketed:
            maxima[bucket.astimezone(UTC)] = part_max
    return AggregateSnapshot(
        total=total, count=count, maximum=maximum or ZERO, latest=latest, bucket_maxima=maxima
    )


# -- totals (invoice side) ---------------------------------------------------

_LINE_ITEM_TOTALS_SQL = """
SELECT min(customer_id), subscription_id, sub_line_item_id, period_id,
       min(price_id), min(feature_id), min(currency),
       sum(qty_free_applied), sum(qty_billable), sum(cost), count()
FROM events_processed FINAL
WHERE tenant_id = {tenant:String}
  AND environment_id = {environment:String}
  AND ({customer:String} = '' OR customer_id = {customer:String})
  AND ({subscription:String} = '' OR subscription_id = {subscription:String})
  AND ({external:String} = '' OR customer_id IN (
        SELECT customer_id FROM events_processed
        WHERE tenant_id = {tenant:String}
          AND environment_id = {environment:String}
          AND external_customer_id = {external:String}))
GROUP BY subscription_id, sub_line_item_id, period_id
ORDER BY subscription_id, sub_line_item_id, period_id
"""


@exact
def line_item_totals(
    gateway: Gateway,
    tenant_id: str,
    environment_id: str,
    *,
    customer_id: str | None = None,
    subscription_id: str | None = None,
    external_customer_id: str | None = None,
) -> list[LineItemTotal]:
    """Deduplicated totals per (subscription, line item, period), sorted by those keys.

    ``external_customer_id`` selects the customer(s) that priced events named
    by that external id (their events sent with ``customer_id`` included).

    ``qty_total`` = sum(qty_free_applied) + sum(qty_billable) (telescoping rows,
    DESIGN.md §4), ``cost`` = sum(cost) unrounded, ``event_count`` = rows.
    """
    rows = gateway.query(
        _LINE_ITEM_TOTALS_SQL,
        {
            "tenant": tenant_id,
            "environment": environment_id,
            "customer": customer_id or "",
            "subscription": subscription_id or "",
            "external": external_customer_id or "",
        },
    )
    return [
        LineItemTotal(
            customer_id=customer,
            subscription_id=subscription,
            sub_line_item_id=line_item,
            period_id=int(period),
            price_id=price,
            feature_id=feature,
            currency=currency,
            qty_total=free + billable,
            qty_free_applied=free,
            qty_billable=billable,
            cost=cost,
            event_count=int(count),
        )
        for (
            customer,
            subscription,
            line_item,
            period,
            price,
            feature,
            currency,
            free,
            billable,
            cost,
            count,
        ) in rows
    ]


# The rows of one subscription period (rows telescope within it, DESIGN.md §4);
# its placeholders are the fields of PeriodParams.
_PERIOD_ROWS = """
FROM events_processed FINAL
WHERE tenant_id = {tenant_id:String}
  AND environment_id = {environment_id:String}
  AND customer_id = {customer_id:String}
  AND subscription_id = {subscription_id:String}
  AND period_id = {period_id:UInt64}
"""
_PERIOD_COST_SQL = "SELECT sum(cost)" + _PERIOD_ROWS
_PERIOD_FEATURES_SQL = (
    "SELECT feature_id, sum(qty_free_applied), sum(qty_billable), sum(cost)"
    + _PERIOD_ROWS
    + "GROUP BY feature_id\nORDER BY feature_id\n"
)


def get_period_cost(gateway: Gateway, period: PeriodParams) -> Decimal:
    """Unrounded usage cost of a customer's subscription in one period (0 when none)."""
    rows = gateway.query(_PERIOD_COST_SQL, asdict(period))
    return rows[0][0] if rows and rows[0][0] is not None else ZERO


def get_period_feature_totals(gateway: Gateway, period: PeriodParams) -> list[PeriodFeatureTotal]:
    """Usage per feature of a customer's subscription in one period, sorted by feature id."""
    rows = gateway.query(_PERIOD_FEATURES_SQL, asdict(period))
    return [
        PeriodFeatureTotal(feature_id=feature, quantity=free + billable, free_units=free, cost=cost)
        for feature, free, billable, cost in rows
    ]
