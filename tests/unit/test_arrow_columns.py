"""The ClickHouse -> Arrow type mapping of inserts (pure: no engine)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from worker.store.arrow_columns import (
    arrow_type,
    constant_integers,
    constant_timestamps_us,
    ipc_stream,
)


@pytest.mark.parametrize(
    ("clickhouse", "arrow"),
    [
        ("LowCardinality(String)", pa.string()),
        ("Decimal(38, 15)", pa.decimal128(38, 15)),
        ("DateTime64(6, 'UTC')", pa.timestamp("us", tz="UTC")),
        ("Map(String, String)", pa.map_(pa.string(), pa.string())),
        ("Map(String, Decimal(38, 15))", pa.map_(pa.string(), pa.decimal128(38, 15))),
        (
            "Map(LowCardinality(String), DateTime64(3, 'UTC'))",
            pa.map_(pa.string(), pa.timestamp("ms", tz="UTC")),
        ),
        (
            "Map(String, Map(String, UInt64))",
            pa.map_(pa.string(), pa.map_(pa.string(), pa.uint64())),
        ),
    ],
)
def test_clickhouse_types_map_to_exact_arrow_types(clickhouse: str, arrow: pa.DataType) -> None:
    assert arrow_type(clickhouse) == arrow


@pytest.mark.parametrize("clickhouse", ["Map(String)", "Map(String, Float32)", "Array(String)"])
def test_unmapped_types_are_refused(clickhouse: str) -> None:
    with pytest.raises(TypeError, match="no Arrow mapping"):
        arrow_type(clickhouse)


def test_map_values_keep_every_digit_or_are_refused() -> None:
    types = {"m": "Map(String, Decimal(38, 15))"}
    _, rows = ipc_stream({"m": [{"a": Decimal("0.000000000000001")}, {}]}, types)
    assert rows == 2
    with pytest.raises(pa.ArrowInvalid):
        ipc_stream({"m": [{"a": Decimal("0.0000000000000001")}]}, types)


def test_a_map_array_is_cast_to_the_column_type_exactly() -> None:
    texts = pa.array(
        [[("n", "12.5"), ("m", "0.000000000000001")], []], type=pa.map_(pa.string(), pa.string())
    )
    payload, rows = ipc_stream({"m": texts}, {"m": "Map(String, Decimal(38, 15))"})
    read = pa.ipc.open_stream(payload).read_all()
    assert rows == 2
    assert read.column("m").to_pylist() == [
        [("n", Decimal("12.500000000000000")), ("m", Decimal("0.000000000000001"))],
        [],
    ]


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (2**64 - 1, pa.uint64()),
        (1, pa.int8()),
        (-128, pa.int8()),
        (-(2**63), pa.int64()),
        (4_000_000_000, pa.uint32()),
    ],
)
def test_constant_integers_repeat_the_exact_value(value: int, kind: pa.DataType) -> None:
    column = constant_integers(value, kind, 3)
    assert column.type == kind
    assert column.to_pylist() == [value] * 3
    assert len(constant_integers(value, kind, 0)) == 0


def test_constant_integers_refuse_a_value_the_type_cannot_hold() -> None:
    with pytest.raises(OverflowError):
        constant_integers(-1, pa.uint64(), 2)
    with pytest.raises(OverflowError):
        constant_integers(128, pa.int8(), 2)


def test_constant_timestamps_carry_the_instant_in_microseconds() -> None:
    instant = datetime(2026, 12, 7, 9, 30, 1, 123456, tzinfo=UTC)
    column = constant_timestamps_us(instant, 2)
    assert column.type == pa.timestamp("us", tz="UTC")
    assert column.to_pylist() == [instant, instant]
