"""The compiled core's first batch stage: message values -> raw ``events`` columns.

:func:`decode_raw_batch` runs decoding and validation of a whole batch in the
Rust core (``worker._core``) and returns the rejection reasons and the Arrow
columns of the raw ``events`` table, built without a Python object per event.
It is the exact equivalent of :func:`worker.domain.validation.decode_event`
followed by :func:`worker.store.raw.event_columns` (a differential property
test holds the two together), except for the detail text of a rejection: the
core gives only the reason code, and dead letters are rare enough to take their
text from the reference (:func:`rejection_detail`).

With ``EW_ENGINE=core`` the usage batch step writes the raw rows from these
columns (``worker.stream.usage_batch``); see docs/core.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeAlias

import pyarrow as pa

from worker import _core
from worker.domain.validation import EventLimits, InvalidEvent, decode_event
from worker.store.arrow_columns import constant_timestamps_us, epoch_us

_TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")


class Message(Protocol):
    """The parts of a Kafka record the core reads."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp_ms(self) -> int | None: ...


class KafkaMessage(Protocol):
    """A Kafka message as the consumer returns it (``confluent_kafka.Message``),
    which the core reads by method; its position is known (consumed)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...


Messages: TypeAlias = Sequence[Message] | Sequence[KafkaMessage]
"""What a core batch call reads: all records or all Kafka messages (the first decides)."""


@dataclass(frozen=True, slots=True)
class CoreDecoded:
    """One decoded batch: which messages became events, why the others did not.

    ``accepted`` and ``rejected`` hold indices into the batch, in batch order;
    ``columns`` hold one value per accepted message (``events`` columns but
    ``ingested_at``, which :meth:`insert_columns` adds).
    """

    accepted: list[int]
    rejected: list[tuple[int, str]]
    columns: dict[str, pa.Array]

    def insert_columns(self, ingested_at: datetime) -> dict[str, pa.Array]:
        """The columns of an ``events`` insert, ``ingested_at`` the same for every row."""
        ingested = constant_timestamps_us(ingested_at, len(self.accepted))
        return {**self.columns, "ingested_at": ingested}


def decode_raw_batch(messages: Messages, now: datetime, limits: EventLimits) -> CoreDecoded:
    """Decode and validate ``messages`` in the core. Pure; releases the GIL meanwhile.

    ``now`` is the timestamp of messages that have neither a ``timestamp`` nor
    a positive Kafka timestamp (the reference's ``fallback_timestamp``).
    """
    accepted, rejected, strings, timestamps = _core.decode_batch(
        *batch_arguments(messages, now, limits)
    )
    return CoreDecoded(accepted, rejected, raw_columns(len(accepted), strings, timestamps))


def batch_arguments(
    messages: Messages, now: datetime, limits: EventLimits
) -> tuple[Messages, int, tuple[int, int, int, int, int]]:
    """The arguments a core batch call takes: the messages themselves (the core
    reads their fields), ``now`` in epoch µs and the limits as a tuple."""
    return (
        messages,
        epoch_us(now),
        (
            limits.max_message_bytes,
            limits.max_properties,
            limits.max_key_chars,
            limits.max_id_chars,
            limits.max_string_value_chars,
        ),
    )


def raw_columns(
    rows: int, strings: dict[str, tuple[bytes, bytes]], timestamps: bytes
) -> dict[str, pa.Array]:
    """The core's raw column buffers (string offsets and data; int64 µs) as Arrow arrays."""
    columns: dict[str, pa.Array] = {
        name: pa.Array.from_buffers(
            pa.string(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
        )
        for name, (offsets, data) in strings.items()
    }
    columns["timestamp"] = pa.Array.from_buffers(
        _TIMESTAMP_TYPE, rows, [None, pa.py_buffer(timestamps)]
    )
    return columns


def rejection_detail(message: Message, now: datetime, limits: EventLimits) -> str:
    """The reference's error text for a message the core rejected (rare path)."""
    if message.value is None:
        return "message has no value"
    fallback = (
        datetime.fromtimestamp(message.timestamp_ms / 1000, UTC)
        if message.timestamp_ms is not None and message.timestamp_ms > 0
        else now
    )
    try:
        decode_event(
            message.value,
            fallback_id=f"{message.topic}-{message.partition}-{message.offset}",
            fallback_timestamp=fallback,
            limits=limits,
        )
    except InvalidEvent as exc:
        return exc.detail
    return "rejected by the compiled core"
