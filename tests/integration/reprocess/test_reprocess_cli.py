"""`reprocess request` input errors and `reprocess status` through `worker.cli.main`."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.support import ChdbTarget
from worker.cli import main
from worker.store.connect import open_gateway
from worker.store.reprocess_state import ReprocessProgress, RequestState, save_progress

REQUEST = ["reprocess", "request", "--tenant", "t1", "--environment", "prod"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--start", "yesterday", "--end", "2026-02-01"], "--start: not an ISO 8601 time"),
        (["--start", "2026-01-01", "--end", "2026-13-01"], "--end: not an ISO 8601 time"),
        (["--start", "2026-02-01", "--end", "2026-01-01"], "start_time must be before end_time"),
        (
            ["--start", "2026-01-01", "--end", "2026-02-01", "--batch-size", "0"],
            "batch_size must be in 1..10000",
        ),
    ],
)
def test_bad_request_input_is_one_line_exit_2_and_nothing_is_sent(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # No broker is reachable at this address: the input is checked first.
    assert main([*REQUEST, *extra, "--bootstrap", "127.0.0.1:1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err


def test_status_prints_saved_progress_and_exits_1_for_an_unknown_id(
    chdb_path: Path, chdb_database: ChdbTarget, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"chdb://{chdb_path}?database={chdb_database.database}"
    assert main(["migrate", "--store", store]) == 0
    capsys.readouterr()
    scope = ["--tenant", "t1", "--environment", "prod"]
    assert main(["reprocess", "status", "nope", *scope, "--store", store]) == 1
    assert "not found" in capsys.readouterr().err

    now = datetime(2026, 2, 1, tzinfo=UTC)
    progress = ReprocessProgress(
        request_id="r1",
        tenant_id="t1",
        environment_id="prod",
        request='{"request_id":"r1"}',
        state=RequestState.RUNNING,
        created_at=now,
        updated_at=now,
        version=1,
    )
    gateway = open_gateway(store)
    try:
        save_progress(gateway, progress)
        save_progress(
            gateway,
            progress.advanced(
                cursor_timestamp=datetime(2026, 1, 5, 1, 2, 3, 4, tzinfo=UTC),
                cursor_id="e9",
                found=10,
                republished=10,
                pages=1,
            ),
        )
    finally:
        gateway.close()

    assert main(["reprocess", "status", "r1", *scope, "--json", "--store", store]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["state"], shown["found"], shown["republished"]) == ("running", 10, 10)
    assert shown["cursor_timestamp"] == "2026-01-05T01:02:03.000004Z"
    assert shown["cursor_id"] == "e9"
    assert main(["reprocess", "status", "r1", *scope, "--store", store]) == 0
    assert "state: running" in capsys.readouterr().out.splitlines()
    # Scoped: the same id is unknown to another tenant or environment ...
    other = ["--tenant", "t2", "--environment", "prod"]
    assert main(["reprocess", "status", "r1", *other, "--store", store]) == 1
    assert main(["reprocess", "status", "r1", "--tenant", "t1", "--environment", "dev",
                 "--store", store]) == 1  # fmt: skip
    # ... and once another tenant uses it, each tenant sees its own request.
    gateway = open_gateway(store)
    try:
        save_progress(gateway, replace(progress, tenant_id="t2", state=RequestState.COMPLETED))
    finally:
        gateway.close()
    capsys.readouterr()
    assert main(["reprocess", "status", "r1", *other, "--json", "--store", store]) == 0
    theirs = json.loads(capsys.readouterr().out)
    assert (theirs["tenant_id"], theirs["state"], theirs["found"]) == ("t2", "completed", 0)
    assert main(["reprocess", "status", "r1", *scope, "--json", "--store", store]) == 0
    ours = json.loads(capsys.readouterr().out)
    assert (ours["tenant_id"], ours["state"], ours["found"]) == ("t1", "running", 10)
