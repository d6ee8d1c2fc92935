"""The ``events_processed`` columns of the fused core's rows, without a Python object per row.

The core (:class:`~worker.core_engine.CoreBatchEngine`) rates a batch into
Arrow arrays that name, per written row, its accepted ``event`` and its
catalog ``line_item`` (an index into the engine's bindings). Every other
column is *taken* from a table by one of those indices (an Arrow kernel):

* the event's columns (id, name, external id, source, tenant, environment,
  timestamp, properties text) from the batch's raw ``events`` columns, which
  the core decoded into exactly the reference's values;
* the catalog customer from the core's per-event customer list;
* the line item's columns (line item id, subscription, price, feature,
  meter, currency) from :func:`line_item_table`, built once per catalog.

The result equals :func:`~worker.store.processed.rated_columns` of the
reference's rows (an integration test compares the stored rows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa

from worker.domain.catalog_index import LineItemBinding
from worker.store.processed import processing_columns

_EVENT_COLUMNS = (
    "id",
    "event_name",
    "external_customer_id",
    "source",
    "tenant_id",
    "environment_id",
    "timestamp",
    "properties",
)
# The core's row arrays that are no stored column (indices and the outcome code).
_ROW_INDICES = frozenset({"row", "event", "line_item", "period_id", "outcome"})


def line_item_table(bindings: Sequence[LineItemBinding]) -> dict[str, pa.Array]:
    """Per catalog line item (the core's ``line_item`` index), its stored columns."""
    string = pa.string()
    return {
        "sub_line_item_id": pa.array([b.line_item_id for b in bindings], string),
        "subscription_id": pa.array([b.subscription.id for b in bindings], string),
        "price_id": pa.array([b.price.price_id for b in bindings], string),
        "feature_id": pa.array([b.feature_id for b in bindings], string),
        "meter_id": pa.array([b.meter.id for b in bindings], string),
        "currency": pa.array([b.price.currency for b in bindings], string),
    }


def core_processed_columns(
    *,
    raw: Mapping[str, pa.Array],
    customers: pa.Array,
    line_items: Mapping[str, pa.Array],
    rated: Mapping[str, pa.Array],
    processed_at: datetime,
    version: int,
    ingested_at: pa.Array,
) -> dict[str, Any]:
    """The ``events_processed`` insert columns of the core's written rows.

    ``raw`` are the accepted events' raw columns, ``customers`` their catalog
    customer ids, ``rated`` the core's row arrays (``event``, ``line_item``,
    ``period_id``, ``unique_hash`` and the six decimal deltas) and
    ``ingested_at`` one value per accepted event.
    """
    events = rated["event"]
    items = rated["line_item"]
    columns: dict[str, Any] = {name: raw[name].take(events) for name in _EVENT_COLUMNS}
    columns["customer_id"] = customers.take(events)
    columns["ingested_at"] = ingested_at.take(events)
    columns.update({name: column.take(items) for name, column in line_items.items()})
    columns["period_id"] = rated["period_id"].cast(pa.uint64())
    # unique_hash and the six decimal deltas, stored as the core made them.
    columns.update({name: array for name, array in rated.items() if name not in _ROW_INDICES})
    columns.update(processing_columns(processed_at, version, columns["timestamp"]))
    return columns
