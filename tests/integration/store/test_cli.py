"""`events-worker migrate` and `query line-items` through `worker.cli.main`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.store.conftest import StoreUnderTest
from tests.integration.store.rows import row
from tests.processed_rows import insert_processed
from tests.reference import line_totals
from worker.cli import main


def test_migrate_then_query_line_items_json(
    store: StoreUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--store", store.url]) == 0
    assert main(["migrate", "--store", store.url]) == 0
    assert "nothing (up to date)" in capsys.readouterr().out
    rows = [row("e1", qty="3"), row("e2", qty="4"), row("e3", line_item="li_2")]
    insert_processed(store.gateway, rows, dedup_token="cli")
    insert_processed(store.gateway, rows, dedup_token="cli-again")  # counted once

    argv = ["query", "line-items", "--tenant", "t1", "--environment", "prod"]
    assert main([*argv, "--json", "--store", store.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == line_totals(rows)  # the reference sums
    assert json.loads(lines[0])["qty_total"] == "7.000000000000000"

    assert main([*argv, "--customer-id", "nobody", "--json", "--store", store.url]) == 0
    assert capsys.readouterr().out == ""

    assert main([*argv, "--store", store.url]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["subscription", "line"]
    assert len(table) == 3 and "li_2" in table[2]


def test_migrate_dry_run_prints_the_ddl_that_migrate_runs(
    store: StoreUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--dry-run", "--store", store.url]) == 0
    script = capsys.readouterr().out
    assert store.gateway.query(
        "SELECT count() FROM system.tables WHERE database = {db:String}",
        {"db": store.gateway.database},
    ) == [(0,)]  # a dry run touches nothing
    for statement in script.split(";\n"):
        sql = "\n".join(line for line in statement.splitlines() if not line.startswith("--"))
        if sql.strip():
            store.gateway.execute(sql)
    printed = _schema(store)
    assert main(["migrate", "--store", store.url]) == 0
    assert "applied: 1, 2, 3, 4" in capsys.readouterr().out  # no version rows: all again
    assert _schema(store) == printed  # ... and nothing differs from the printed DDL


def _schema(store: StoreUnderTest) -> list[tuple[str, str]]:
    return store.gateway.query(
        "SELECT name, create_table_query FROM system.tables WHERE database = {db:String} "
        "ORDER BY name",
        {"db": store.gateway.database},
    )


def test_query_before_migrate_says_what_to_do(
    store: StoreUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["query", "line-items", "--tenant", "t", "--environment", "e", "--store", store.url]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run `events-worker migrate`" in err


def test_bad_store_url_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--store", "mysql://localhost/db"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid store URL" in err


def test_readers_never_create_a_missing_chdb_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo"
    argv = ["query", "line-items", "--tenant", "t", "--environment", "e"]
    assert main([*argv, "--store", f"chdb://{missing}"]) == 2
    scope = ["--tenant", "t", "--environment", "e"]
    assert main(["reprocess", "status", "r1", *scope, "--store", f"chdb://{missing}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and f"no chdb store at {missing}" in err
    assert not missing.exists()
