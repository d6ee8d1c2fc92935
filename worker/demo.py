"""``events-worker demo``: price a generated day of usage against the sample catalog.

This version runs the pure pricing core only (no broker, no store): it decodes
generated event messages, rates them incrementally, and prints one invoice per
customer plus throughput. Later versions drive the same events through the
local broker and embedded ClickHouse.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, TextIO

import orjson

from worker.domain.catalog import parse_documents
from worker.domain.catalog_index import CatalogIndex
from worker.domain.engine import UsageRater
from worker.domain.events import ProcessedEvent
from worker.domain.invoice import summarize
from worker.domain.validation import InvalidEvent, decode_event
from worker.report import render_invoices
from worker.samples.synthetic import generate_events


def sample_catalog() -> list[dict[str, Any]]:
    """The catalog shipped with the package (two tenants)."""
    text = resources.files("worker.samples").joinpath("catalog.json").read_bytes()
    data = orjson.loads(text)
    assert isinstance(data, list)
    return data


@dataclass(frozen=True, slots=True)
class DemoSummary:
    events: int
    rows: int
    duplicates: int
    unresolved: int
    invalid: int
    seconds: float


def run_pricing_demo(out: TextIO, events_per_tenant: int = 50_000) -> DemoSummary:
    """Generate, decode, rate and print invoices; returns the figures printed."""
    documents = sample_catalog()
    index = CatalogIndex(parse_documents(documents))
    rater = UsageRater(index)
    now = datetime.now(UTC)
    rows: list[ProcessedEvent] = []
    duplicates = unresolved = invalid = total = 0
    started = time.perf_counter()
    for seed, document in enumerate(documents):
        payloads = [
            orjson.dumps(event)
            for event in generate_events(
                document, events_per_tenant, seed=seed + 1, duplicate_rate=0.02
            )
        ]
        events = []
        for offset, payload in enumerate(payloads):
            try:
                events.append(
                    decode_event(payload, fallback_id=f"demo-{offset}", fallback_timestamp=now)
                )
            except InvalidEvent:
                invalid += 1
        batch = rater.resolve(events)
        rated = rater.rate(batch, now)
        rows.extend(rated.rows)
        duplicates += sum(n for outcome, n in rated.outcomes.items() if outcome != "counted")
        unresolved += len(batch.unresolved)
        total += len(payloads)
    seconds = time.perf_counter() - started

    for document in documents:
        tenant = document["tenant_id"]
        tenant_rows = [row for row in rows if row.event.tenant_id == tenant]
        out.write(f"== tenant {tenant} / {document['environment_id']} ==\n")
        out.write(render_invoices(summarize(tenant_rows), index, tenant) + "\n\n")
    summary = DemoSummary(total, len(rows), duplicates, unresolved, invalid, seconds)
    out.write(
        f"{summary.events:,} events priced in {summary.seconds:.2f}s "
        f"({summary.events / summary.seconds:,.0f} events/s, pure pricing core): "
        f"{summary.rows:,} processed rows, {summary.duplicates:,} duplicates, "
        f"{summary.unresolved:,} unresolved, {summary.invalid:,} invalid\n"
    )
    return summary
