"""`events-worker produce FILE.jsonl` into the real broker, read back."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from tests.integration.stream.conftest import read_topic
from worker.cli import main
from worker.ops.settings import WorkerSettings
from worker.stream.producer import produce_file

EVENTS = 600


def _write_events(path: Path, count: int) -> list[bytes]:
    lines = []
    for i in range(count):
        event = {
            "id": f"evt_{i}",
            "tenant_id": f"t{i % 2}",
            "environment_id": "prod",
            "event_name": "api_call",
            "timestamp": "2026-01-05T10:00:00Z",
            "properties": {"calls": i},
        }
        if i % 3:
            event["external_customer_id"] = f"cust-{i % 7}"
        else:
            event["customer_id"] = f"cus_{i % 5}"
        lines.append(orjson.dumps(event))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def test_produce_keys_every_line_and_keeps_bytes(
    cli_env: WorkerSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    lines = _write_events(path, EVENTS)

    assert main(["produce", str(path)]) == 0

    out = capsys.readouterr().out.strip()
    assert out.startswith(f"produced {EVENTS} messages to {cli_env.events_topic}, failed 0")
    messages = read_topic(cli_env.kafka_bootstrap, cli_env.events_topic, EVENTS)
    assert sorted(m.value() or b"" for m in messages) == sorted(lines)
    partitions_of_key: dict[bytes, set[int | None]] = defaultdict(set)
    for message in messages:
        event = orjson.loads(message.value() or b"")
        customer = event.get("external_customer_id") or event["customer_id"]
        key = f"{event['tenant_id']}:{event['environment_id']}:{customer}".encode()
        assert message.key() == key
        partitions_of_key[key].add(message.partition())
    assert len(partitions_of_key) > 10
    assert all(
        len(parts) == 1 for parts in partitions_of_key.values()
    )  # one customer, one partition
    assert len(set().union(*partitions_of_key.values())) > 1  # and the customers spread out


MIXED = (
    b'{"tenant_id":"t","customer_id":"c","event_name":"e"}\n'
    b"[1,2]\n"
    b'{"tenant_id":"t","event_name":"e"}\n'
    b"not json\n"
    b"\xff\xfe binary \x00 garbage\n"
)


def test_unkeyable_lines_go_without_a_key_and_are_reported(
    cli_env: WorkerSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(MIXED)

    assert main(["produce", str(path)]) == 0

    captured = capsys.readouterr()
    assert captured.out.startswith(f"produced 5 messages to {cli_env.events_topic}, failed 0")
    assert captured.out.rstrip().endswith(
        "; 4 of them without a key (invalid: the worker dead-letters them)"
    )
    err = captured.err.splitlines()
    assert [line.split(": ")[2] for line in err] == ["line 2", "line 3", "line 4", "line 5"]
    assert all(line.endswith("sent without a key, the worker will dead-letter it") for line in err)
    messages = read_topic(cli_env.kafka_bootstrap, cli_env.events_topic, 5)
    keys = {message.value(): message.key() for message in messages}
    assert keys == {
        line: (b"t::c" if n == 0 else None) for n, line in enumerate(MIXED.splitlines())
    }


def test_strict_refuses_a_file_with_unkeyable_lines_and_produces_nothing(
    cli_env: WorkerSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"tenant_id":"t","customer_id":"c","event_name":"e"}\n'
        "[1,2]\n"
        '{"tenant_id":"t","event_name":"e"}\n'
        "not json\n"
    )

    assert main(["produce", str(path), "--strict", "--topic", cli_env.events_topic]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.splitlines()
    assert [line.split(": ")[2] for line in err[:3]] == ["line 2", "line 3", "line 4"]
    assert err[-1].endswith(
        "3 of 4 lines cannot be keyed (need a JSON object with string "
        "tenant_id and external_customer_id or customer_id); nothing produced"
    )
    topics = AdminClient({"bootstrap.servers": cli_env.kafka_bootstrap}).list_topics(timeout=10)
    assert cli_env.events_topic not in topics.topics


def test_missing_file_is_a_one_line_usage_error(
    cli_env: WorkerSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["produce", "/nonexistent/events.jsonl"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read /nonexistent/events.jsonl" in err


def test_undeliverable_messages_are_counted_as_failed(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    _write_events(path, 5)
    settings = WorkerSettings(
        kafka_bootstrap="127.0.0.1:1", kafka_extra={"message.timeout.ms": 1000, "log_level": 0}
    )

    result = produce_file(settings, str(path), "events", flush_timeout_s=10)

    assert (result.produced, result.failed) == (0, 5)
    assert result.errors and "timed out" in result.errors[0].lower()
