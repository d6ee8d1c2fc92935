"""Every name the worker puts into SQL is matched whole: a trailing newline is refused.

`re.match(r"^...$")` accepts "name\\n" because `$` also matches before a final
newline; these checks must use full matches.
"""

from __future__ import annotations

import pytest

from worker.store.chdb_gateway import insert_settings
from worker.store.ddl import ClusterLayout
from worker.store.errors import StoreError
from worker.store.gateway import check_identifier
from worker.store.url import parse_store_url

TRAILING = ["\n", "\r\n", " ", "\t"]


@pytest.mark.parametrize("tail", TRAILING)
def test_identifiers_refuse_a_trailing_character(tail: str) -> None:
    assert check_identifier("billing") == "billing"
    with pytest.raises(StoreError, match="invalid database name"):
        check_identifier("billing" + tail)


@pytest.mark.parametrize(
    "url",
    [
        "chdb:///tmp/store?database=billing%0A",
        "chdb:///tmp/store?database=billing%0D%0A",
        "clickhouse://u:p@db.internal:9000/billing%0A",
    ],
)
def test_store_urls_refuse_a_database_name_with_a_newline(url: str) -> None:
    with pytest.raises(StoreError, match="invalid database name"):
        parse_store_url(url)


@pytest.mark.parametrize("tail", TRAILING)
def test_cluster_names_refuse_a_trailing_character(tail: str) -> None:
    assert ClusterLayout("prod").name == "prod"
    with pytest.raises(StoreError, match="invalid cluster name"):
        ClusterLayout("prod" + tail)


@pytest.mark.parametrize("tail", TRAILING)
def test_dedup_tokens_refuse_a_trailing_character(tail: str) -> None:
    assert "insert_deduplication_token = 'raw:abc'" in insert_settings("raw:abc")
    with pytest.raises(StoreError, match="invalid insert_deduplication_token"):
        insert_settings("raw:abc" + tail)
