"""Bad input driven only through the command line: `produce` a JSONL file that
mixes events with malformed lines, `run usage`, `query line-items`.

Every malformed line must reach the DLQ with its reason (none may be refused or
dropped on the way), and the invoice must equal an independent rating of the
valid events.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson

from tests.integration.workers import (
    MALFORMED,
    dead_letter_headers,
    expected_invoice,
    run_cli,
    settings_from_env,
    stored_invoice,
    worker_env,
    write_catalog,
)
from worker.samples.synthetic import build_catalog, generate_events

#: Malformed lines that a JSONL file can carry on top of `MALFORMED`.
MORE_MALFORMED: list[tuple[bytes, str]] = [
    (b'{"tenant_id": "t1", "external_customer_id": "c"}', "missing_field"),
    (b'{"tenant_id": "t1", "event_name": "x"}', "missing_field"),
    (
        b'{"tenant_id": "t1", "event_name": "x", "external_customer_id": "c", '
        b'"timestamp": "yesterday"}',
        "invalid_timestamp",
    ),
    (
        b'{"tenant_id": "t1", "event_name": "x", "external_customer_id": "c", "properties": [1]}',
        "properties_not_object",
    ),
]


def test_malformed_lines_produced_by_the_cli_all_reach_the_dlq(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    catalog = build_catalog(customers=6, line_items_per_customer=3)
    catalog_file = write_catalog(tmp_path, catalog)
    documents = list(generate_events(catalog, 400, seed=4, duplicate_rate=0.05))
    bad = MALFORMED + MORE_MALFORMED
    lines = [orjson.dumps(document) for document in documents]
    for position, (value, _) in enumerate(bad):  # spread through the file
        lines.insert(position * 37, value)
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"\n".join(lines) + b"\n")
    env = worker_env(kafka_bootstrap, unique_name)
    store = f"chdb://{tmp_path / 'store'}"

    produced = run_cli(env, "produce", str(events_file))
    assert produced.returncode == 0, produced.stderr.decode()
    assert produced.stdout.decode().startswith(f"produced {len(lines)} messages")
    worker = run_cli(
        env, "run", "usage", "--store", store, "--catalog", str(catalog_file),
        "--exit-when-idle", "2",
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr.decode()[-2000:]

    letters = dead_letter_headers(settings_from_env(env, partitions=3), len(bad))
    assert sorted(h["reason"].decode() for h in letters) == sorted(r for _, r in bad)
    expected = expected_invoice(catalog, documents)
    assert len(expected) > 5
    assert sorted(stored_invoice(env, store), key=_key) == sorted(expected, key=_key)


def _key(line: dict[str, object]) -> tuple[str, str, str]:
    return (str(line["subscription_id"]), str(line["sub_line_item_id"]), str(line["period_id"]))
