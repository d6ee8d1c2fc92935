"""Raw events into ``events`` (the seed's ``InsertEvent`` / ``BulkInsertEvents``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from worker.domain.events import Event
from worker.domain.metering import MAX_EVENT_QUANTITY, canonical_value
from worker.domain.money import SCALE, parse_decimal, quantize
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


def derived_properties(properties: dict[str, Any]) -> tuple[str, str]:
    """The ``canonical_json`` and ``numeric_json`` texts of one event's properties.

    Per top-level property: its :func:`~worker.domain.metering.canonical_value`
    (skipped when None: null, objects, arrays never match), and the quantity
    metering measures from it - :func:`~worker.domain.money.parse_decimal`,
    negatives clamped to 0, quantized to 15 places, skipped when unparseable or
    at least ``MAX_EVENT_QUANTITY`` - as a decimal string. ClickHouse turns
    them into the ``canonical_properties`` / ``numeric_properties`` maps the
    read side filters and aggregates on (schema migration 2).
    """
    canonical: dict[str, str] = {}
    numeric: dict[str, str] = {}
    for key, value in properties.items():
        if isinstance(value, str):
            canonical[key] = value
            # Only text starting like a number can parse (skips the costly failure).
            first = value.lstrip()[:1]
            if not first or not (first in "+-." or first.isdigit()):
                continue
        elif isinstance(value, int) and not isinstance(value, bool):
            canonical[key] = str(value)
            if value < _MAX_INTEGER:
                numeric[key] = canonical[key] if value > 0 else "0"
            continue
        elif isinstance(value, float):
            digits = _canonical_float(value)
            if digits is None:
                continue
            canonical[key] = digits
            if value <= 0:
                numeric[key] = "0"
            elif value < _MAX_FLOAT:
                # ``digits`` is the exact shortest round-trip decimal, no exponent.
                exact = len(digits.partition(".")[2]) <= SCALE
                numeric[key] = digits if exact else format(quantize(Decimal(digits)), "f")
            continue
        else:
            text = canonical_value(value)
            if text is None:
                continue
            canonical[key] = text
        number = parse_decimal(value)
        if number is not None and number < MAX_EVENT_QUANTITY:
            numeric[key] = format(quantize(number), "f") if number > 0 else "0"
    return orjson.dumps(canonical).decode(), orjson.dumps(numeric).decode()


_MAX_INTEGER = int(MAX_EVENT_QUANTITY)
_MAX_FLOAT = float(MAX_EVENT_QUANTITY)  # 1e18 is exact in binary64


def _canonical_float(value: float) -> str | None:
    """``canonical_value(value)``, without Decimal when ``repr`` has no exponent."""
    shortest = repr(value)  # the shortest round-trip digits
    if "e" in shortest or "n" in shortest:  # exponent, inf, nan: the general rule
        return canonical_value(value)
    return shortest[:-2] if shortest.endswith(".0") else shortest


def event_columns(events: Sequence[Event], ingested_at: datetime) -> dict[str, list[Any]]:
    """The columns of ``events`` rows; ``ingested_at`` fills events that have none.

    ``canonical_json`` / ``numeric_json`` are ephemeral inputs of the property
    maps (see :func:`derived_properties`).
    """
    derived = [derived_properties(e.properties) for e in events]
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
        "canonical_json": [canonical for canonical, _ in derived],
        "numeric_json": [numeric for _, numeric in derived],
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
