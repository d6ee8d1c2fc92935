"""End to end: 50k events through the real broker, the usage consumer and ClickHouse.

The catalog has every billing model and aggregation type, two tenants, a
customer with two subscriptions sharing a price, filters and free units; the
stream has client retries, late and out-of-order events, events of a customer
the catalog does not know yet, several billing periods, and 11 kinds of
malformed messages. The invoice read back with `query line-items --json` must
equal a reference computed here from first principles (exact fractions over
the distinct events of each line item and period), and replaying the whole
topic into a fresh consumer group must change nothing.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import orjson

from tests.integration.workers import dead_letter_headers, produce, settings_for, write_catalog
from tests.reference import reference_invoice
from worker.cli import main
from worker.ops.settings import WorkerSettings
from worker.samples.synthetic import build_catalog, generate_events
from worker.stream.run_usage import run_usage
from worker.stream.topics import ensure_topics, worker_topics

BAD_MESSAGES: list[tuple[bytes | None, str]] = [
    (b"{not json", "invalid_json"),
    (b"\xff\xfe\x00 binary garbage", "invalid_encoding"),
    (b'"just a string"', "not_an_object"),
    (b'{"event_name": "api_call", "external_customer_id": "cust-1"}', "missing_field"),
    (b'{"tenant_id": "t1", "external_customer_id": "cust-1"}', "missing_field"),
    (b'{"tenant_id": "t1", "event_name": "api_call"}', "missing_field"),
    (b'{"tenant_id": 1, "event_name": "api_call", "external_customer_id": "c"}', "wrong_type"),
    (
        b'{"tenant_id": "t1", "event_name": "e", "external_customer_id": "c", '
        b'"timestamp": "yesterday"}',
        "invalid_timestamp",
    ),
    (
        b'{"tenant_id": "t1", "event_name": "e", "external_customer_id": "c", "properties": [1]}',
        "properties_not_object",
    ),
    (
        b'{"tenant_id": "t1", "event_name": "e", "external_customer_id": "c", "x": 1}',
        "unknown_field",
    ),
    (
        orjson.dumps(
            {
                "tenant_id": "t1",
                "event_name": "e",
                "external_customer_id": "c",
                "properties": {f"k{i}": i for i in range(300)},
            }
        ),
        "too_many_properties",
    ),
    (b'{"tenant_id": "t1", "pad": "' + b"x" * 300_000 + b'"}', "message_too_large"),
    (None, "empty_message"),
]
BAD_MESSAGES_KEYED: list[tuple[bytes | None, bytes]] = [
    (value, b"bad") for value, _ in BAD_MESSAGES
]


def catalogs() -> list[dict[str, Any]]:
    first = build_catalog(tenant_id="t1", customers=15, line_items_per_customer=4, seed=1)
    second = build_catalog(tenant_id="t2", customers=6, line_items_per_customer=3, seed=2)
    shared = first["subscriptions"][0]
    first["subscriptions"].append(
        {**shared, "id": "sub_0_b", "billing_anchor": "2025-12-20T00:00:00Z",
         "line_items": [{**shared["line_items"][0], "id": "li_0_b", "free_units": "3"}]}
    )  # fmt: skip
    return [first, second]


def stream(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for seed, document in enumerate(documents, start=1):
        events += generate_events(document, 25_000, seed=seed, duplicate_rate=0.03)
    # a customer the catalog does not know (yet): stored raw, left for reprocessing
    unknown = dict(events[0], id="early-1", external_customer_id="cust-unknown")
    return [*events, unknown, dict(unknown, id="early-2")]


def query_line_items(settings: WorkerSettings, tenant: str) -> list[dict[str, Any]]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(
            ["query", "line-items", "--tenant", tenant, "--environment", "prod",
             "--store", settings.store_url, "--json"]
        )  # fmt: skip
    assert code == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_fifty_thousand_events_end_to_end_equal_the_reference_invoice(
    kafka_bootstrap: str,
    store_under_test: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    documents = catalogs()
    catalog_file = write_catalog(tmp_path, documents)
    events = stream(documents)
    store = store_under_test
    settings = settings_for(kafka_bootstrap, store, unique_name).model_copy(
        update={"batch_max_events": 10_000, "batch_max_wait_ms": 500}
    )
    ensure_topics(settings, worker_topics(settings))
    produce(settings, events, BAD_MESSAGES_KEYED, linger_ms=20, flush_timeout_s=60.0)

    stats = run_usage(settings, catalog_file=str(catalog_file), exit_when_idle_s=2.0)

    assert stats.messages == len(events) + len(BAD_MESSAGES)
    expected = {tenant: reference_invoice(documents, events, tenant) for tenant in ("t1", "t2")}
    assert sum(len(lines) for lines in expected.values()) > 50
    for tenant, lines in expected.items():
        assert sorted(query_line_items(settings, tenant), key=_key) == sorted(lines, key=_key)
    letters = dead_letter_headers(settings, len(BAD_MESSAGES))
    assert sorted(h["reason"].decode() for h in letters) == sorted(r for _, r in BAD_MESSAGES)
    distinct_ids = {(e["tenant_id"], e["id"]) for e in events}
    raw = _raw_ids(settings)
    assert raw == distinct_ids  # stored raw, unresolved ones included, each once

    # Redelivery: the whole topic again, into a fresh consumer group.
    replay = settings.model_copy(update={"usage_group": unique_name("replay")})
    again = run_usage(replay, catalog_file=str(catalog_file), exit_when_idle_s=2.0)
    # Only zero rows of repeated COUNT_UNIQUE values are rewritten (same identity, same values).
    assert again.messages == stats.messages and again.rows < stats.rows // 5
    for tenant, lines in expected.items():
        assert sorted(query_line_items(settings, tenant), key=_key) == sorted(lines, key=_key)


def _key(line: dict[str, Any]) -> tuple[str, str, int]:
    return (line["subscription_id"], line["sub_line_item_id"], line["period_id"])


def _raw_ids(settings: WorkerSettings) -> set[tuple[str, str]]:
    from worker.store.connect import open_gateway

    gateway = open_gateway(settings.store_url)
    try:
        rows = gateway.query("SELECT tenant_id, id FROM events FINAL")
    finally:
        gateway.close()
    return {(tenant, event_id) for tenant, event_id in rows}
