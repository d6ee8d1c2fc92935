"""The fused batch step in the compiled core: decode, route, measure and rate.

:class:`CoreBatchEngine` holds the catalog tables (``worker.core_catalog``),
the terms of every line item and the rating state (``worker.core_rating``'s
rules) in one core object, so the rows of a batch never become Python
objects: :meth:`prepare` decodes and routes a batch and keeps its rows,
:meth:`missing_states` / :meth:`load_states` and :meth:`lookup_keys` /
:meth:`remember` let the pipeline read the store between the phases as
today, and :meth:`rate` returns the priced rows as Arrow arrays
(``decimal128(38, 15)`` deltas straight from the core's scaled integers).

With ``EW_ENGINE=core`` the usage batch step runs on it
(``worker.stream.usage_batch_core``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import repeat

import pyarrow as pa

from worker import _core
from worker.core_catalog import (
    DEFAULT_PERIODS_AFTER,
    DEFAULT_PERIODS_BEFORE,
    CyclePeriods,
    catalog_tables,
    needed_periods,
)
from worker.core_decode import CoreDecoded, Messages, batch_arguments, raw_columns
from worker.core_rating import CoreState, snapshot_argument, terms_tuple
from worker.domain.aggregates import AggregateSnapshot
from worker.domain.catalog_index import CatalogIndex, LineItemBinding
from worker.domain.engine import outcome_counts
from worker.domain.metering import WindowSize
from worker.domain.rating import Outcome
from worker.domain.rating_reads import DedupKey, StateKey
from worker.domain.validation import EventLimits
from worker.store.arrow_columns import epoch_us
from worker.store.processed_core import EVENT_COLUMNS, LINE_ITEM_COLUMNS, line_item_rows

_DECIMAL = pa.decimal128(38, 15)
_TIMESTAMP = pa.timestamp("us", tz="UTC")
_INTEGERS = {"row": pa.int32(), "event": pa.int32(), "line_item": pa.int32()}
_INTEGERS |= {"period_id": pa.int64(), "outcome": pa.int8()}
_DELTAS = ("qty_total", "qty_billable", "qty_free_applied", "tier_snapshot", "unit_cost", "cost")


PartitionKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class EnginePrepared:
    """A prepared batch: messages accepted/rejected, the count of unresolved
    events per reason code, the
    catalog customer per accepted event (a ``string`` array, ``""`` when
    unknown), the matches with a missing field, the accepted events' raw
    ``events`` columns (as ``decode_raw_batch``'s) and per partition of the
    batch its first offset and the offset after its last message."""

    accepted: list[int]
    rejected: list[tuple[int, str]]
    customers: pa.Array
    unresolved: list[tuple[str, int]]
    missing_fields: int
    columns: dict[str, pa.Array]
    offsets: dict[PartitionKey, tuple[int, int]]

    @property
    def decoded(self) -> CoreDecoded:
        """The decoding verdicts and raw columns, as :func:`decode_raw_batch` gives them."""
        return CoreDecoded(self.accepted, self.rejected, self.columns)


@dataclass(frozen=True, slots=True)
class EngineRated:
    """The written rows of a batch as Arrow arrays, the outcome counts, and
    ``(event, line item, period id)`` of refused rows (``value_out_of_range``).

    ``columns``: ``row`` (held row), ``event`` (accepted message), ``line_item``
    (index into :attr:`CoreBatchEngine.bindings`), ``period_id``, ``outcome``
    (0 counted, 1 repeated value), ``unique_hash``, the six deltas, and the
    row's ``events_processed`` columns copied from its event and line item
    (``processed_core.EVENT_COLUMNS``, ``timestamp``, ``LINE_ITEM_COLUMNS``)
    and its ``final_lag_ms``.
    """

    columns: dict[str, pa.Array]
    outcomes: Counter[Outcome]
    refused: list[tuple[int, int, int]]


@dataclass(frozen=True, slots=True)
class MissingStates:
    """The states the held rows lack (:meth:`CoreBatchEngine.missing`), in
    the core's order: per state the window size its store read needs (as
    ``load_missing_states`` asks), and its position in that order, which is
    how the engine's loading refers to it."""

    requests: dict[StateKey, WindowSize | None]
    positions: dict[StateKey, int]


class CoreBatchEngine(CoreState[_core.CoreEngine]):
    """Catalog, terms and rating state of one consumer in the core. One thread only."""

    def __init__(
        self,
        index: CatalogIndex,
        now: datetime,
        *,
        max_fingerprints: int,
        max_remembered_owners: int,
        before: timedelta = DEFAULT_PERIODS_BEFORE,
        after: timedelta = DEFAULT_PERIODS_AFTER,
    ) -> None:
        self.index = index
        self._around = (before, after)
        tables = catalog_tables(index)
        self._periods = CyclePeriods(tables.subscriptions)
        self._set_bindings(tables.bindings)
        self._core = _core.CoreEngine(
            tables.arguments(),
            [terms_tuple(binding) for binding in tables.bindings],
            max_fingerprints,
            max_remembered_owners,
        )
        self._core.set_line_item_columns(line_item_rows(tables.bindings))
        tables.add_periods_around(self._core, now - before, now + after)

    def replace_index(self, index: CatalogIndex, now: datetime) -> None:
        """Use a new catalog version from the next :meth:`prepare` on, keeping
        the rating state (states keep the price they were created with, as
        ``UsageRater.replace_index``). Call between batches."""
        tables = catalog_tables(index)
        self._core.replace_catalog(
            tables.arguments(), [terms_tuple(binding) for binding in tables.bindings]
        )
        self._core.set_line_item_columns(line_item_rows(tables.bindings))
        before, after = self._around
        tables.add_periods_around(self._core, now - before, now + after)
        self.index = index
        self._periods = CyclePeriods(tables.subscriptions)
        self._set_bindings(tables.bindings)

    def _set_bindings(self, bindings: list[LineItemBinding]) -> None:
        self.bindings: list[LineItemBinding] = bindings
        # Per line item its state's (tenant, environment, line item id).
        self._state_names: list[tuple[str, str, str]] = [
            (b.tenant_id, b.environment_id, b.line_item_id) for b in bindings
        ]
        # Per line item the window size a store read of its states needs.
        self._buckets: list[WindowSize | None] = [b.meter.bucket_size for b in bindings]

    def prepare(self, messages: Messages, now: datetime, limits: EventLimits) -> EnginePrepared:
        """Decode, route and measure ``messages``; the core holds their rows.

        Billing periods the catalog lacks are added while the core routes
        (it asks :func:`needed_periods`), so a batch is decoded once."""
        periods = self._periods
        accepted, rejected, need, customers, unresolved, missing, buffers, offsets = (
            self._core.prepare(
                *batch_arguments(messages, now, limits),
                lambda need: needed_periods(periods, need),
            )
        )
        if need:  # pragma: no cover - each round adds every period the last one asked for
            raise RuntimeError("the core kept asking for billing periods")
        rows = len(accepted)
        return EnginePrepared(
            accepted,
            rejected,
            pa.Array.from_buffers(pa.string(), rows, [None, *(pa.py_buffer(b) for b in customers)]),
            unresolved,
            missing,
            raw_columns(rows, *buffers),
            {(topic, partition): (first, after) for topic, partition, first, after in offsets},
        )

    def touched(self) -> list[tuple[PartitionKey, StateKey]]:
        """The (partition, state) pairs of the prepared batch's held rows that
        were not reported before, each once. A pair stays reported until
        :meth:`drop` drops its state (or a catalog change): the caller keeps
        the pairs per partition and drops their states when it gives the
        partition up. Call once per batch, after :meth:`rate`."""
        return self._core.touched(StateKey, self._state_names)

    def missing_states(self) -> set[StateKey]:
        return set(map(StateKey._make, self._core.missing_states()))

    def missing(self) -> MissingStates:
        """The held rows' states not in memory (``missing_states``), each
        with its store request, for :meth:`coverable_of` and :meth:`load_of`:
        the first touch of a state crosses back without its key."""
        states, windows = self._core.missing(StateKey, self._state_names, self._buckets)
        return MissingStates(
            dict(zip(states, windows, strict=True)),
            dict(zip(states, range(len(states)), strict=True)),
        )

    def coverable_of(
        self, missing: MissingStates, snapshots: Mapping[StateKey, AggregateSnapshot]
    ) -> list[StateKey]:
        """``coverable`` of snapshots of :meth:`missing`'s states (the last
        answer), each crossing into the core by position."""
        positions = missing.positions
        counts = [(positions[key], s.count) for key, s in snapshots.items() if s.count > 0]
        if not counts:
            return []
        keys = list(positions)
        return [keys[position] for position in self._core.coverable_at(counts)]

    def load_of(
        self,
        missing: MissingStates,
        snapshots: Mapping[StateKey, AggregateSnapshot],
        stored_fingerprints: Mapping[StateKey, Iterable[int]] | None,
    ) -> None:
        """``load_states`` of snapshots (and stored fingerprints) of
        :meth:`missing`'s states (the last answer), each by position."""
        positions = missing.positions
        self._core.load_at(
            [(positions[key], snapshot_argument(s)) for key, s in snapshots.items()],
            None
            if stored_fingerprints is None
            else [(positions[key], list(values)) for key, values in stored_fingerprints.items()],
        )

    def lookup_keys(self) -> set[DedupKey]:
        keys: set[DedupKey] = set()
        for key, hashes in self._core.lookup_keys():
            keys.update(map(DedupKey, repeat(StateKey._make(key)), hashes))
        return keys

    def rate(self, processed_at: datetime) -> EngineRated:
        """Rate the held rows in order (the GIL released meanwhile);
        ``processed_at`` is the time their ``final_lag_ms`` is measured to."""
        buffers, rows, (counted, repeated, skipped), refused = self._core.rate(
            epoch_us(processed_at)
        )
        columns: dict[str, pa.Array] = {
            name: pa.Array.from_buffers(kind, rows, [None, pa.py_buffer(buffers[name])])
            for name, kind in _INTEGERS.items()
        }
        strings = [(name, buffers[name]) for name in ("unique_hash", *EVENT_COLUMNS)]
        strings += zip(LINE_ITEM_COLUMNS, buffers["line_item_columns"], strict=True)
        for name, (offsets, data) in strings:
            columns[name] = pa.Array.from_buffers(
                pa.string(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
            )
        columns["timestamp"] = pa.Array.from_buffers(
            _TIMESTAMP, rows, [None, pa.py_buffer(buffers["timestamp"])]
        )
        columns["final_lag_ms"] = pa.Array.from_buffers(
            pa.uint32(), rows, [None, pa.py_buffer(buffers["final_lag_ms"])]
        )
        for name in _DELTAS:
            columns[name] = pa.Array.from_buffers(
                _DECIMAL, rows, [None, pa.py_buffer(buffers[name])]
            )
        return EngineRated(columns, outcome_counts(counted, repeated, skipped), refused)
