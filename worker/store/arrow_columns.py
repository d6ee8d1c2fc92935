"""Columnar batches as Arrow: the fast insert path into chdb.

A table's ClickHouse column types decide the Arrow types, so Python values
(str, int, Decimal, aware datetime) are converted exactly: Decimal(P, S) ->
``decimal128(P, S)`` (values with more than S places are refused, never
rounded), DateTime64(6, 'UTC') -> ``timestamp[us, UTC]``, Map(K, V) ->
``map<K, V>`` (so a writer may hand ``events``' property maps over as they
are, instead of the ephemeral JSON texts ClickHouse would parse into them).

The builders below (:func:`timestamps_us`, :func:`constant_timestamps_us`)
are the cheap conversions writers use to hand the gateway ready-made Arrow
arrays: per value they run in C (``map``, Arrow kernels), not in a Python loop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import sub
from typing import Any

import pyarrow as pa

from worker.store.errors import StoreError, first_line

_DECIMAL = re.compile(r"^Decimal\((\d+),\s*(\d+)\)$")
_DATETIME64 = re.compile(r"^DateTime64\((\d)(?:,\s*'([^']+)')?\)$")
_WRAPPER = re.compile(r"^(?:LowCardinality|Nullable)\((.*)\)$")
_MAP = re.compile(r"^Map\((.*)\)$")
_SIMPLE: dict[str, Any] = {
    "String": pa.string(),
    "UInt8": pa.uint8(),
    "UInt16": pa.uint16(),
    "UInt32": pa.uint32(),
    "UInt64": pa.uint64(),
    "Int8": pa.int8(),
    "Int16": pa.int16(),
    "Int32": pa.int32(),
    "Int64": pa.int64(),
    "Float64": pa.float64(),
    "Bool": pa.bool_(),
}
_UNITS = {0: "s", 3: "ms", 6: "us", 9: "ns"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TICKS = {
    "s": timedelta(seconds=1),
    "ms": timedelta(milliseconds=1),
    "us": timedelta(microseconds=1),
}


def arrow_type(clickhouse_type: str) -> Any:
    """The Arrow type that carries values of ``clickhouse_type`` exactly.

    Raises ``TypeError`` for a type without a mapping here.
    """
    inner = clickhouse_type
    while (wrapped := _WRAPPER.match(inner)) is not None:
        inner = wrapped.group(1)
    if inner in _SIMPLE:
        return _SIMPLE[inner]
    if (mapping := _MAP.match(inner)) is not None:
        key, value = _split_pair(mapping.group(1), clickhouse_type)
        return pa.map_(arrow_type(key), arrow_type(value))
    if (decimal := _DECIMAL.match(inner)) is not None:
        return pa.decimal128(int(decimal.group(1)), int(decimal.group(2)))
    if (datetime64 := _DATETIME64.match(inner)) is not None:
        unit = _UNITS.get(int(datetime64.group(1)))
        if unit is not None:
            return pa.timestamp(unit, tz=datetime64.group(2) or "UTC")
    raise TypeError(f"no Arrow mapping for ClickHouse type {clickhouse_type}")


def _split_pair(arguments: str, clickhouse_type: str) -> tuple[str, str]:
    """``"K, V"`` of ``Map(K, V)`` split at its one top-level comma."""
    depth = 0
    for position, character in enumerate(arguments):
        if character == "(":
            depth += 1
        elif character == ")":
            depth -= 1
        elif character == "," and depth == 0:
            return arguments[:position].strip(), arguments[position + 1 :].strip()
    raise TypeError(f"no Arrow mapping for ClickHouse type {clickhouse_type}")


def ipc_stream(columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]) -> tuple[bytes, int]:
    """Arrow IPC stream bytes for ``columns`` typed by ``types``; also the row count.

    A column may already be a ``pyarrow.Array`` (cast if its type differs).
    Raises ``ValueError`` for unequal lengths, ``KeyError`` for unknown columns.
    """
    arrays = []
    for name, values in columns.items():
        target = arrow_type(types[name])
        if isinstance(values, pa.Array | pa.ChunkedArray):
            arrays.append(values if values.type == target else values.cast(target))
        elif pa.types.is_timestamp(target) and target.unit in _TICKS:
            arrays.append(_timestamps(values, target))
        else:
            arrays.append(pa.array(values, type=target))
    table = pa.Table.from_arrays(arrays, names=list(columns))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes(), table.num_rows


def warm_up_arrow() -> None:
    """Convert one Python list: pyarrow imports what it needs lazily on its first
    list conversion (pandas, about 0.4 s), which a long-running process should
    pay at start-up rather than in its first batch."""
    pa.array([""])


def insert_payload(
    table: str, columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]
) -> tuple[bytes, int]:
    """:func:`ipc_stream` for an insert into ``table``: every failure a ``StoreError``.

    Refuses columns ``table`` does not have (``types`` are its columns) and
    values its column types cannot hold exactly.
    """
    unknown = set(columns) - types.keys()
    if unknown:
        raise StoreError(f"table {table} has no column(s) {', '.join(sorted(unknown))}")
    try:
        return ipc_stream(columns, types)
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise StoreError(f"cannot convert rows for {table}: {first_line(str(exc))}") from exc


def _timestamps(values: Sequence[Any], target: Any) -> Any:
    """Aware datetimes as a timestamp array, via integer ticks since the epoch.

    About 15x faster than letting Arrow convert aware datetimes one by one;
    a naive datetime raises ``TypeError`` (it cannot be placed in UTC safely).
    """
    if target.unit == "us":
        return timestamps_us(values).cast(target)
    tick = _TICKS[target.unit]
    ticks = [(value - _EPOCH) // tick for value in values]
    return pa.array(ticks, type=pa.int64()).cast(target)


_US_UTC = pa.timestamp("us", tz="UTC")


def timestamps_us(values: Sequence[datetime]) -> Any:
    """Aware datetimes as ``timestamp[us, UTC]``, exactly (microseconds are whole).

    The offsets from the epoch are ``timedelta`` objects that Arrow reads in C,
    about 3x faster than integer ticks computed in Python. A naive datetime
    raises ``TypeError``; anything that is not a datetime raises too.
    """
    offsets = list(map(sub, values, repeat(_EPOCH)))
    return pa.array(offsets, type=pa.duration("us")).view(pa.int64()).cast(_US_UTC)


def epoch_us(value: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (floor, exact)."""
    return (value - _EPOCH) // _TICKS["us"]


def constant_timestamps_us(value: datetime, count: int) -> Any:
    """``count`` copies of one aware datetime as ``timestamp[us, UTC]``."""
    return constant_integers(epoch_us(value), _US_UTC, count)


def constant_integers(value: int, arrow_type: Any, count: int) -> Any:
    """``count`` copies of ``value`` as an array of ``arrow_type``, a fixed-width
    integer type or one stored as such (timestamps). Raises ``OverflowError``
    when ``value`` does not fit it.

    The value's bytes repeated into one buffer: ``pa.repeat`` of a scalar costs
    about 20x more at a batch's size."""
    width = arrow_type.bit_width // 8
    signed = not pa.types.is_unsigned_integer(arrow_type)
    data = value.to_bytes(width, "little", signed=signed) * count
    return pa.Array.from_buffers(arrow_type, count, [None, pa.py_buffer(data)])
