"""Benchmark of the pure domain step: decode, resolve, measure and rate.

Single thread, no Kafka, no ClickHouse. Reports events/s for decoding +
validation and for matching + rating separately, against a catalog of
``customers`` customers with 3 line items each; and the compiled core's decode
stage alone (decode + validate + the raw ``events`` Arrow columns) on the same
payloads, next to the Python equivalent (decode + ``event_columns``); and the
fused core alone (``EW_ENGINE=core``'s batch step: decode to rated Arrow rows,
then both tables' insert columns; :mod:`worker.benchmarks.core_engine`), the fastest
of :data:`FUSED_PASSES` passes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from worker.benchmarks.core_engine import fused_core_seconds
from worker.core_decode import decode_raw_batch
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.engine import UsageRater
from worker.domain.events import Event
from worker.domain.validation import DEFAULT_LIMITS, decode_event
from worker.ops.gc_tuning import tune_gc
from worker.samples.synthetic import build_catalog, generate_events
from worker.store.raw import event_columns
from worker.stream.usage_batch import SourceMessage

FUSED_PASSES = 3
"""Passes of the fused core over the same payloads; the fastest is reported,
as the pipeline's consume-only figure is the faster of two: other load on
the VM only ever slows a pass down, so the fastest is the closest to the
core's own cost."""


@dataclass(frozen=True, slots=True)
class DomainBenchResult:
    events: int
    customers: int
    line_items: int
    decode_events_per_s: float
    rate_events_per_s: float
    rows: int
    unresolved: int
    core_decode_events_per_s: float
    python_raw_columns_events_per_s: float
    fused_core_events_per_s: float
    fused_core_columns_events_per_s: float
    fused_core_rows: int


def run_domain_bench(
    events: int = 1_000_000, customers: int = 10_000, batch_size: int = 10_000
) -> DomainBenchResult:
    """Run the benchmark and return its figures (prints nothing).

    Times are CPU seconds of this process (``time.process_time``), so other
    load on the machine distorts them less than wall time would.
    """
    catalog = build_catalog(customers=customers, line_items_per_customer=3)
    index = CatalogIndex(parse_documents(catalog))
    payloads = [orjson.dumps(doc) for doc in generate_events(catalog, events, duplicate_rate=0.01)]
    now = datetime.now(UTC)
    tune_gc()
    python = _python_domain_seconds(index, payloads, now, batch_size)
    core_seconds, python_seconds = _raw_column_seconds(payloads, now, batch_size)
    # A fresh engine per pass, as a new process has; the fastest pass counts.
    fused = min(
        (fused_core_seconds(index, payloads, now, batch_size) for _ in range(FUSED_PASSES)),
        key=lambda seconds: seconds.core + seconds.columns,
    )
    return DomainBenchResult(
        events=events,
        customers=customers,
        line_items=index.line_item_count,
        decode_events_per_s=events / python.decode,
        rate_events_per_s=events / python.rate,
        rows=python.rows,
        unresolved=python.unresolved,
        core_decode_events_per_s=events / core_seconds,
        python_raw_columns_events_per_s=events / python_seconds,
        fused_core_events_per_s=events / fused.core,
        fused_core_columns_events_per_s=events / (fused.core + fused.columns),
        fused_core_rows=fused.rows,
    )


@dataclass(frozen=True, slots=True)
class _PythonDomainSeconds:
    decode: float
    rate: float
    rows: int
    unresolved: int


def _python_domain_seconds(
    index: CatalogIndex, payloads: Sequence[bytes], now: datetime, batch_size: int
) -> _PythonDomainSeconds:
    """CPU seconds of the Python engine's decode and of its resolve + rate.

    Its rating state is gone when this returns, so the sections after it
    do not run beside a million events' worth of Python objects."""
    rater = UsageRater(index)
    rows = unresolved = 0
    decode_seconds = rate_seconds = 0.0
    # Batch by batch, as the consumer does: decode a batch, then rate it.
    for offset in range(0, len(payloads), batch_size):
        started = time.process_time()
        decoded: list[Event] = [
            decode_event(payload, fallback_id=str(n), fallback_timestamp=now)
            for n, payload in enumerate(payloads[offset : offset + batch_size], offset)
        ]
        decoded_at = time.process_time()
        batch = rater.resolve(decoded)
        rated = rater.rate(batch, now)
        # As in the pipeline after each commit.
        rater.committed()
        rate_seconds += time.process_time() - decoded_at
        decode_seconds += decoded_at - started
        rows += len(rated.rows)
        unresolved += len(batch.unresolved)
    return _PythonDomainSeconds(decode_seconds, rate_seconds, rows, unresolved)


def _raw_column_seconds(
    payloads: Sequence[bytes], now: datetime, batch_size: int
) -> tuple[float, float]:
    """CPU seconds of decode + raw columns: in the core, and in Python."""
    core_seconds = python_seconds = 0.0
    for offset in range(0, len(payloads), batch_size):
        chunk = payloads[offset : offset + batch_size]
        messages = [SourceMessage("events", 0, n, p) for n, p in enumerate(chunk, offset)]
        started = time.process_time()
        decode_raw_batch(messages, now, DEFAULT_LIMITS).insert_columns(now)
        core_seconds += time.process_time() - started
        started = time.process_time()
        decoded = [
            decode_event(payload, fallback_id=str(n), fallback_timestamp=now)
            for n, payload in enumerate(chunk, offset)
        ]
        event_columns(decoded, now)
        python_seconds += time.process_time() - started
    return core_seconds, python_seconds


def print_domain_bench(events: int = 1_000_000, customers: int = 10_000) -> DomainBenchResult:
    """Run the benchmark and print its figures."""
    result = run_domain_bench(events=events, customers=customers)
    print(
        f"domain: {result.events:,} events, {result.customers:,} customers, "
        f"{result.line_items:,} line items, single thread\n"
        f"  decode + validate : {result.decode_events_per_s:>10,.0f} events/s\n"
        f"  resolve + rate    : {result.rate_events_per_s:>10,.0f} events/s "
        f"({result.rows:,} rows, {result.unresolved:,} unresolved)\n"
        f"  raw columns, core : {result.core_decode_events_per_s:>10,.0f} events/s "
        "(compiled core: decode + validate + raw events Arrow columns)\n"
        f"  same, Python      : {result.python_raw_columns_events_per_s:>10,.0f} events/s "
        "(decode_event + event_columns)\n"
        f"  fused core alone  : {result.fused_core_events_per_s:>10,.0f} events/s "
        f"(EW_ENGINE=core: decode, route, measure, state, rate -> {result.fused_core_rows:,} "
        f"Arrow rows; empty store; the fastest of {FUSED_PASSES} passes)\n"
        f"  + insert columns  : {result.fused_core_columns_events_per_s:>10,.0f} events/s "
        "(the same, then both tables' insert columns)"
    )
    return result
