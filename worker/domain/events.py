"""The usage event and its priced form (the seed's ``Event`` and ``ProcessedEvent``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from worker.domain.money import ZERO


@dataclass(frozen=True, slots=True)
class Event:
    """A validated raw usage event. Built once by validation and then only read.

    ``timestamp`` is timezone-aware UTC with microsecond precision. At least one
    of ``customer_id`` / ``external_customer_id`` is non-empty (validation
    guarantees it). ``properties`` is the JSON object as decoded; treat it as
    read-only.
    """

    id: str
    tenant_id: str
    environment_id: str
    event_name: str
    timestamp: datetime
    properties: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    customer_id: str = ""
    external_customer_id: str = ""
    ingested_at: datetime | None = None

    @property
    def partition_key(self) -> str:
        """The Kafka key producers use: ``tenant:environment:customer``."""
        customer = self.external_customer_id or self.customer_id
        return f"{self.tenant_id}:{self.environment_id}:{customer}"


@dataclass(frozen=True, slots=True)
class ProcessedEvent:
    """One priced row: an event rated against one subscription line item.

    Quantities and amounts are deltas of the (line item, period) aggregate
    caused by this event (DESIGN.md §4); ``tier_snapshot`` is the billable
    quantity of the period after the event. The row identity is
    ``(tenant, environment, sub_line_item_id, period_id, event.id)``.
    """

    event: Event
    customer_id: str
    subscription_id: str
    sub_line_item_id: str
    price_id: str
    feature_id: str
    meter_id: str
    period_id: int
    currency: str
    unique_hash: str
    qty_total: Decimal = ZERO
    qty_billable: Decimal = ZERO
    qty_free_applied: Decimal = ZERO
    tier_snapshot: Decimal = ZERO
    unit_cost: Decimal = ZERO
    cost: Decimal = ZERO
    version: int = 0
    sign: int = 1
    processed_at: datetime | None = None
    final_lag_ms: int = 0
