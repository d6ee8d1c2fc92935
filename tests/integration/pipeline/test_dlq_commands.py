"""`events-worker dlq list | redrive` and `query unprocessed`, through the CLI.

A message too large for the worker's limit is dead-lettered; after the limit
is raised, re-driving it prices it (once), with its original key and a header
saying where it came from. A malformed line stays where it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.integration.workers import expected_invoice, run_cli, worker_env, write_catalog
from worker.cli import main
from worker.samples.synthetic import build_catalog, generate_events
from worker.stream.producer import event_key


def _event_count(env: dict[str, str], store: str) -> int:
    result = run_cli(
        env, "query", "line-items", "--tenant", "t1", "--environment", "prod",
        "--store", store, "--json", check=True,
    )  # fmt: skip
    return sum(int(json.loads(line)["event_count"]) for line in result.stdout.splitlines())


def test_list_then_redrive_a_dead_letter_after_the_limit_is_raised(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    catalog = build_catalog(customers=3)
    catalog_file = write_catalog(tmp_path, catalog)
    events = list(generate_events(catalog, 40, seed=9))
    big = {**events[0], "id": "big-1", "properties": {**events[0]["properties"], "n": "x" * 2000}}
    lines = [orjson.dumps(e) for e in events] + [orjson.dumps(big), b"{not json"]
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"\n".join(lines) + b"\n")
    env = {**worker_env(kafka_bootstrap, unique_name), "EW_MAX_MESSAGE_BYTES": "1024"}
    store = f"chdb://{tmp_path / 'store'}"
    run = (
        "run",
        "usage",
        "--store",
        store,
        "--catalog",
        str(catalog_file),
        "--exit-when-idle",
        "2",
    )

    assert run_cli(env, "produce", str(events_file)).returncode == 0
    assert run_cli(env, *run).returncode == 0
    before = _event_count(env, store)

    listed = run_cli(env, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr.decode()
    letters = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(letter["reason"] for letter in letters) == ["invalid_json", "message_too_large"]
    too_large = next(letter for letter in letters if letter["reason"] == "message_too_large")
    assert too_large["key"] == event_key(big)
    text = run_cli(env, "dlq", "list").stdout.decode().splitlines()
    assert (
        text[-1] == f"2 dead letters in {env['EW_DLQ_TOPIC']}: 1 invalid_json, 1 message_too_large"
    )

    redriven = run_cli(env, "dlq", "redrive", "--at", too_large["at"])
    assert redriven.returncode == 0, redriven.stderr.decode()
    assert redriven.stdout.decode() == f"re-drove 1 dead letters from {env['EW_DLQ_TOPIC']}\n"
    del env["EW_MAX_MESSAGE_BYTES"]
    assert run_cli(env, *run).returncode == 0
    # rows the big event adds: one per line item the independent reference prices it on
    priced_rows = sum(line["event_count"] for line in expected_invoice(catalog, [big]))
    assert priced_rows > 0
    assert _event_count(env, store) == before + priced_rows

    (message,) = _messages_with_header(kafka_bootstrap, env["EW_EVENTS_TOPIC"], "redriven_from")
    headers = dict(message.headers() or [])
    dlq_topic, partition, offset = headers["redriven_from"].decode().split("/")
    assert (dlq_topic, f"{partition}:{offset}") == (env["EW_DLQ_TOPIC"], too_large["at"])
    assert headers["redriven_reason"] == b"message_too_large"
    assert "reason" not in headers and message.key() == event_key(big).encode()


def _messages_with_header(bootstrap: str, topic: str, name: str) -> list[object]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "redrive-reader"})
    found = []
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
        empty_polls = 0
        while empty_polls < 6:
            batch = consumer.consume(500, 0.5)
            empty_polls = 0 if batch else empty_polls + 1
            found += [m for m in batch if m.error() is None and name in dict(m.headers() or [])]
    finally:
        consumer.close()
    return found


@pytest.mark.parametrize(
    ("args", "named"),
    [
        pytest.param([], "give --at P:O and/or --reason R, or --all", id="nothing-selected"),
        pytest.param(["--all", "--reason", "x"], "or --all", id="all-and-filter"),
        pytest.param(["--at", "zero:1"], "--at: 'zero:1' is not PARTITION:OFFSET", id="bad-at"),
    ],
)
def test_redrive_selection_mistakes_are_one_line(
    args: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dlq", "redrive", "--bootstrap", "127.0.0.1:1", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err
