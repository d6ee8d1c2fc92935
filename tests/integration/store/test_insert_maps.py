"""``events``' property maps inserted as Arrow maps equal the ones ClickHouse derives
from the ephemeral JSON texts (the DDL is unchanged: a DEFAULT applies only when
its column is omitted), on every available ClickHouse."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from tests.integration.store.conftest import StoreUnderTest
from tests.integration.store.rows import event
from worker.store.raw import EVENTS_TABLE, event_columns

_PROPERTIES: list[dict[str, Any]] = [
    {"region": "eu", "calls": 3},
    {},
    {
        "s": 'ü"x\\n\u2603',
        "flag": True,
        "neg": -3,
        "n": 12.5,
        "obj": {"a": 1},
        "big": 10**30,
        "tiny": "0.0000000000000015",
        "": "empty key",
    },
]

_MAPS_READ = (
    "SELECT id, canonical_properties, numeric_properties FROM events "
    "WHERE tenant_id = {tenant:String} AND environment_id = {env:String} ORDER BY id"
)


def _as_maps(columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The same columns with the property maps in place of their JSON texts."""
    maps = {k: v for k, v in columns.items() if not k.endswith("_json")}
    maps["canonical_properties"] = [orjson.loads(text) for text in columns["canonical_json"]]
    maps["numeric_properties"] = [
        {key: Decimal(value) for key, value in orjson.loads(text).items()}
        for text in columns["numeric_json"]
    ]
    return maps


def test_property_maps_sent_as_maps_equal_the_json_path(migrated: StoreUnderTest) -> None:
    gateway = migrated.gateway
    now = datetime(2026, 3, 2, tzinfo=UTC)
    by_path = {}
    for env in ("json", "maps"):
        events = [event(f"e{n}", env=env, properties=p) for n, p in enumerate(_PROPERTIES)]
        columns = event_columns(events, now)
        sent = columns if env == "json" else _as_maps(columns)
        assert gateway.insert(EVENTS_TABLE, sent, dedup_token=f"maps-test:{env}") == 3
        by_path[env] = gateway.query(_MAPS_READ, {"tenant": "t1", "env": env})
    assert by_path["maps"] == by_path["json"]
    # chdb reads maps back as (key, value) lists, the native driver as dicts.
    rows = [(i, dict(c), dict(n)) for i, c, n in by_path["maps"]]
    assert rows[0] == ("e0", {"region": "eu", "calls": "3"}, {"calls": Decimal(3)})
    assert rows[1] == ("e1", {}, {})


def test_a_map_insert_repeated_with_its_token_is_dropped(migrated: StoreUnderTest) -> None:
    gateway = migrated.gateway
    columns = _as_maps(event_columns([event("e1"), event("e2")], datetime.now(UTC)))
    gateway.insert(EVENTS_TABLE, columns, dedup_token="events:0:0-1")
    gateway.insert(EVENTS_TABLE, columns, dedup_token="events:0:0-1")
    assert gateway.query("SELECT count() FROM events") == [(2,)]
