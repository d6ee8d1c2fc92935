"""The I/O ceiling of the pipeline benchmark: what consuming plus ingesting costs.

The ceiling of one worker process is the time to consume the events (the
consume-only baseline) plus the time ClickHouse takes to ingest the rows a run
writes, handed over as ready Arrow batches of the batch size. The rows are
rebuilt here, outside the timed part, from the same generated events: the raw
``events`` columns by the compiled core (equal to what the pipeline writes, see
docs/core.md), the ``events_processed`` columns by the reference rater and the
store's own column builder. Only the inserts into a freshly migrated database
are timed. Each insert carries an ``insert_deduplication_token``, as the
pipeline's do: without one, a table with a deduplication window hashes the
whole block, a cost the pipeline never pays (docs/insert-path.md).
"""

from __future__ import annotations

import time
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

import orjson

from worker.core_decode import decode_raw_batch
from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.engine import UsageRater
from worker.domain.validation import DEFAULT_LIMITS, decode_event
from worker.samples.synthetic import generate_events
from worker.store.connect import open_gateway
from worker.store.processed import PROCESSED_TABLE, rated_columns
from worker.store.raw import EVENTS_TABLE
from worker.store.schema import migrate
from worker.stream.usage_batch import SourceMessage


def ingest_seconds(
    store_url: str, catalog: dict[str, Any], count: int, batch_size: int
) -> tuple[float, int]:
    """Wall seconds chdb takes to ingest the rows of ``count`` generated events,
    and the number of rows; ``store_url`` must be a chdb URL without a query."""
    now = datetime.now(UTC)
    rater = UsageRater(CatalogIndex(parse_documents(catalog)))
    payloads = [orjson.dumps(e) for e in generate_events(catalog, count, duplicate_rate=0.01)]
    batches: list[tuple[str, dict[str, Any]]] = []
    rows = 0
    for start in range(0, len(payloads), batch_size):
        chunk = payloads[start : start + batch_size]
        records = [SourceMessage("events", 0, n, p) for n, p in enumerate(chunk, start)]
        raw = decode_raw_batch(records, now, DEFAULT_LIMITS)
        batches.append((EVENTS_TABLE, raw.insert_columns(now)))
        events = [
            decode_event(
                record.value or b"", fallback_id=str(record.offset), fallback_timestamp=now
            )
            for record in (records[i] for i in raw.accepted)
        ]
        rated = rater.rate(rater.resolve(events), now).rows
        rater.committed()
        if rated:
            batches.append((PROCESSED_TABLE, rated_columns(rated, now)))
        rows += len(raw.accepted) + len(rated)
    # Closed before returning: a process that exits with a chdb connection open
    # can crash at exit (chdb-io/chdb-core#177), after every figure was printed.
    with closing(open_gateway(store_url + "?database=ceiling")) as target:
        migrate(target)
        started = time.perf_counter()
        for number, (table, columns) in enumerate(batches):
            target.insert(table, columns, dedup_token=f"ceiling:{table}:{number}")
        return time.perf_counter() - started, rows
