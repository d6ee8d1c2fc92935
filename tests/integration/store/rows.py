"""Builders of events and priced rows for store tests (plain data, no mocks)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from worker.domain.events import Event, ProcessedEvent
from worker.domain.money import quantize

T0 = datetime(2026, 3, 1, tzinfo=UTC)
PERIOD = int(T0.timestamp() * 1000)


def event(event_id: str, *, tenant: str = "t1", env: str = "prod", **fields: Any) -> Event:
    values: dict[str, Any] = {
        "event_name": "api_call",
        "timestamp": T0 + timedelta(minutes=1),
        "customer_id": "cus_1",
        "external_customer_id": "acme",
        "properties": {"calls": 1},
        "source": "sdk",
    }
    values.update(fields)
    return Event(id=event_id, tenant_id=tenant, environment_id=env, **values)


def row(
    event_id: str,
    *,
    tenant: str = "t1",
    env: str = "prod",
    line_item: str = "li_1",
    period: int = PERIOD,
    qty: Decimal | str = "1",
    unique_hash: str | None = None,
    timestamp: datetime | None = None,
    version: int = 1,
    **fields: Any,
) -> ProcessedEvent:
    """A priced row: all billable at 0.01 unless ``fields`` say otherwise; decimals quantized."""
    quantity = Decimal(qty)
    ev = event(event_id, tenant=tenant, env=env, timestamp=timestamp or T0 + timedelta(minutes=1))
    values: dict[str, Any] = {
        "customer_id": "cus_1",
        "subscription_id": "sub_1",
        "sub_line_item_id": line_item,
        "price_id": "price_1",
        "feature_id": "feat_1",
        "meter_id": "meter_1",
        "period_id": period,
        "currency": "usd",
        "unique_hash": unique_hash or f"hash_{event_id}",
        "qty_total": quantity,
        "qty_billable": quantity,
        "qty_free_applied": Decimal(0),
        "tier_snapshot": quantity,
        "unit_cost": Decimal("0.01"),
        "cost": quantity * Decimal("0.01"),
        "version": version,
        "processed_at": T0 + timedelta(hours=1),
        "final_lag_ms": 60_000,
    }
    values.update(fields)
    # Stored amounts are quantized to 15 places by the domain; so are these.
    values = {k: quantize(v) if isinstance(v, Decimal) else v for k, v in values.items()}
    return ProcessedEvent(event=ev, **values)
