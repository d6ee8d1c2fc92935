"""Valid events whose prices cannot be stored, and events too deep to store,
become dead letters; nothing stalls (issue 19).

Driven only through the command line (`produce`, `run usage`, `query line-items`)
against the real broker and engine. `Decimal(38, 15)` holds magnitudes below
1e23: `calls = 9e17` at 1,000,000 per call is 9e23. Such an event used to fail
the insert, which the worker retried forever with every partition paused.
Expected totals are plain integer arithmetic written here.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.workers import (
    dead_letter_headers,
    run_cli,
    settings_from_env,
    stored_invoice,
    worker_env,
    write_catalog,
)

PRICE_PER_CALL = 1_000_000
CUSTOMERS = 4


def catalog() -> dict[str, Any]:
    return {
        "tenant_id": "t1",
        "environment_id": "prod",
        "customers": [{"id": f"c{i}", "external_id": f"acme{i}"} for i in range(CUSTOMERS)],
        "meters": [
            {"id": "m", "event_name": "api", "aggregation": {"type": "SUM", "field": "calls"}}
        ],
        "prices": [
            {"id": "p", "meter_id": "m", "currency": "usd", "billing_model": "FLAT_FEE",
             "amount": str(PRICE_PER_CALL)}
        ],
        "subscriptions": [
            {"id": f"s{i}", "customer_id": f"c{i}", "status": "active",
             "start_date": "2026-01-01T00:00:00Z", "billing_anchor": "2026-01-01T00:00:00Z",
             "billing_period": "MONTHLY",
             "line_items": [{"id": f"li{i}", "price_id": "p", "meter_id": "m"}]}
            for i in range(CUSTOMERS)
        ],
    }  # fmt: skip


def event(event_id: str, customer: int, calls: int, minute: int) -> dict[str, Any]:
    return {
        "id": event_id,
        "tenant_id": "t1",
        "environment_id": "prod",
        "event_name": "api",
        "external_customer_id": f"acme{customer}",
        "timestamp": f"2026-03-02T10:{minute:02d}:00Z",
        "properties": {"calls": calls},
    }


@pytest.mark.parametrize("engine", ["python", "core"])
def test_values_beyond_the_stored_range_are_dead_lettered_and_the_rest_is_priced(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path, engine: str
) -> None:
    """The same with ``EW_ENGINE=core`` (the fused core: docs/core.md)."""
    documents = [event(f"ok-{c}-{n}", c, n, n) for c in range(CUSTOMERS) for n in range(1, 6)]
    # Customer 1: one event alone beyond the range (9e17 x 1e6 = 9e23).
    documents.insert(7, event("poison", 1, 9 * 10**17, 30))
    # Customer 2: a running total driven toward the bound, 4e22 per event: two
    # fit (8e22), the third and fourth would make 1.2e23.
    documents += [event(f"big-{k}", 2, 4 * 10**16, 40 + k) for k in range(4)]
    # Customer 3: properties nested 900 deep (valid JSON; writing it back used to
    # raise RecursionError in the raw insert, another endless retry).
    deep = event("deep", 3, 1, 50)
    lines = [orjson.dumps(d) for d in documents]
    lines.append(
        orjson.dumps(deep).replace(
            b'{"calls":1}', b'{"calls":1,"x":' + b"[" * 900 + b"]" * 900 + b"}"
        )
    )
    catalog_file = write_catalog(tmp_path, catalog())
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"\n".join(lines) + b"\n")
    env = {**worker_env(kafka_bootstrap, unique_name), "EW_ENGINE": engine}
    store = f"chdb://{tmp_path / 'store'}"

    assert run_cli(env, "produce", str(events_file)).returncode == 0
    worker = run_cli(
        env, "run", "usage", "--store", store, "--catalog", str(catalog_file),
        "--exit-when-idle", "2",
    )  # fmt: skip
    # Exit 0 after idling means every partition was consumed and committed.
    assert worker.returncode == 0, worker.stderr.decode()[-2000:]

    letters = dead_letter_headers(settings_from_env(env, partitions=3), 4)
    reasons = sorted(h["reason"].decode() for h in letters)
    assert reasons == ["value_out_of_range"] * 3 + ["value_too_large"]
    out_of_range = [h for h in letters if h["reason"] == b"value_out_of_range"]
    named = sorted(h["error"].decode().split(":")[0] for h in out_of_range)
    assert named == ["line item li1", "line item li2", "line item li2"]

    calls = {c: 15 for c in range(CUSTOMERS)}
    calls[2] += 2 * 4 * 10**16
    invoice = {line["sub_line_item_id"]: line for line in stored_invoice(env, store)}
    assert sorted(invoice) == [f"li{c}" for c in range(CUSTOMERS)]
    for customer, quantity in calls.items():
        line = invoice[f"li{customer}"]
        assert Decimal(line["qty_total"]) == quantity
        assert Decimal(line["cost"]) == quantity * PRICE_PER_CALL
        assert line["event_count"] == 5 + (2 if customer == 2 else 0)
