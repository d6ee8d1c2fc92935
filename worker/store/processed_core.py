"""The ``events_processed`` columns of the fused core's rows, without a Python object per row.

The core (:class:`~worker.core_engine.CoreBatchEngine`) rates a batch into
Arrow arrays of the written rows. Besides the indices (``event``,
``line_item``, ``period_id``), the hash and the deltas, the core copies each
row's stored columns itself (no Arrow ``take`` per row in Python):

* the event's columns (id, name, external id, source, tenant, environment,
  timestamp, properties text) from the batch's raw ``events`` columns, which
  the core decoded into exactly the reference's values, and its catalog
  customer;
* the line item's columns (line item id, subscription, price, feature,
  meter, currency) from :func:`line_item_rows`, handed to the core once per
  catalog.

The result equals :func:`~worker.store.processed.rated_columns` of the
reference's rows (an integration test compares the stored rows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa

from worker.domain.catalog_index import LineItemBinding
from worker.store.arrow_columns import constant_timestamps_us
from worker.store.processed import constant_processing_columns

LINE_ITEM_COLUMNS = (
    "sub_line_item_id",
    "subscription_id",
    "price_id",
    "feature_id",
    "meter_id",
    "currency",
)
"""The columns the core copies from a row's line item, in :func:`line_item_rows` order."""
EVENT_COLUMNS = (
    "id",
    "event_name",
    "external_customer_id",
    "source",
    "tenant_id",
    "environment_id",
    "properties",
    "customer_id",
)
"""The string columns the core copies from a row's event (``customer_id``:
the catalog customer); ``timestamp`` comes as int64 µs."""
# The core's row arrays that are no stored column (indices and the outcome code).
_ROW_INDICES = frozenset({"row", "event", "line_item", "period_id", "outcome"})


def line_item_rows(bindings: Sequence[LineItemBinding]) -> list[tuple[str, ...]]:
    """Per catalog line item (the core's ``line_item`` index), its stored
    columns in :data:`LINE_ITEM_COLUMNS` order."""
    return [
        (
            b.line_item_id,
            b.subscription.id,
            b.price.price_id,
            b.feature_id,
            b.meter.id,
            b.price.currency,
        )
        for b in bindings
    ]


def core_processed_columns(
    *,
    rated: Mapping[str, pa.Array],
    processed_at: datetime,
    version: int,
    ingested_at: datetime,
) -> dict[str, Any]:
    """The ``events_processed`` insert columns of the core's written rows.

    ``rated`` are the core's row arrays (``event``, ``line_item``,
    ``period_id``, the copied event and line item columns, ``unique_hash``,
    the six decimal deltas and ``final_lag_ms``, measured to
    ``processed_at``); ``ingested_at`` is the batch's, that of every row (as
    in its ``events`` insert: ``CoreDecoded.insert_columns``).
    """
    columns: dict[str, Any] = {
        name: array for name, array in rated.items() if name not in _ROW_INDICES
    }
    columns["ingested_at"] = constant_timestamps_us(ingested_at, len(rated["event"]))
    columns["period_id"] = rated["period_id"].cast(pa.uint64())
    columns.update(constant_processing_columns(processed_at, version, len(rated["event"])))
    return columns
