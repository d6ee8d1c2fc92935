"""Raw events into ``events`` (the seed's ``InsertEvent`` / ``BulkInsertEvents``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from worker.domain.events import Event
from worker.store.gateway import Gateway

EVENTS_TABLE = "events"


def properties_text(properties: dict[str, Any]) -> str:
    """The stored JSON object text of ``properties`` (compact, keys as given).

    orjson for speed; the standard library for what orjson refuses (integers
    beyond 64 bits, which JSON allows).
    """
    try:
        return orjson.dumps(properties).decode()
    except TypeError:
        return json.dumps(properties, ensure_ascii=False, separators=(",", ":"))


def event_columns(events: Sequence[Event], ingested_at: datetime) -> dict[str, list[Any]]:
    """The columns of ``events`` rows; ``ingested_at`` fills events that have none."""
    return {
        "tenant_id": [e.tenant_id for e in events],
        "environment_id": [e.environment_id for e in events],
        "id": [e.id for e in events],
        "event_name": [e.event_name for e in events],
        "external_customer_id": [e.external_customer_id for e in events],
        "customer_id": [e.customer_id for e in events],
        "source": [e.source for e in events],
        "timestamp": [e.timestamp for e in events],
        "ingested_at": [e.ingested_at or ingested_at for e in events],
        "properties": [properties_text(e.properties) for e in events],
    }


def insert_raw(
    gateway: Gateway,
    events: Sequence[Event],
    *,
    dedup_token: str | None,
    ingested_at: datetime | None = None,
) -> int:
    """Store raw events; return the number of rows sent.

    Blocking; durable on return. Idempotent with a ``dedup_token`` derived from
    the source offsets (a retried batch is dropped by ClickHouse), and
    duplicates that slip through (other tokens) collapse in merges and are
    never double counted by reads (FINAL). Raises :class:`StoreError`.
    """
    if not events:
        return 0
    columns = event_columns(events, ingested_at or datetime.now(UTC))
    return gateway.insert(EVENTS_TABLE, columns, dedup_token=dedup_token)
