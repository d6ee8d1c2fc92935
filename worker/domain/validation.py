"""Decoding and validation of raw event messages: bytes -> :class:`Event`.

This is the only place raw producer input is interpreted. Every failure raises
:class:`InvalidEvent` carrying a machine-readable :class:`InvalidReason`, so the
pipeline's single error boundary can dead-letter it with that reason. Nothing
is coerced: identifiers must be JSON strings, ``properties`` a JSON object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from worker.domain.events import Event


class InvalidReason(StrEnum):
    """Why a message was rejected; used as the DLQ ``reason`` header and metric label."""

    MESSAGE_TOO_LARGE = "message_too_large"
    INVALID_ENCODING = "invalid_encoding"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_FIELD = "unknown_field"
    INVALID_TIMESTAMP = "invalid_timestamp"
    PROPERTIES_NOT_OBJECT = "properties_not_object"
    TOO_MANY_PROPERTIES = "too_many_properties"
    VALUE_TOO_LARGE = "value_too_large"


class InvalidEvent(ValueError):
    """A message that cannot become an :class:`Event`. ``reason`` is machine-readable."""

    def __init__(self, reason: InvalidReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class EventLimits:
    """Size limits applied to every message (frozen policy)."""

    max_message_bytes: int = 256 * 1024
    max_properties: int = 256
    max_key_chars: int = 256
    max_id_chars: int = 256
    max_string_value_chars: int = 64 * 1024


DEFAULT_LIMITS = EventLimits()

MAX_PROPERTIES_DEPTH = 32
"""Containers ``properties`` may nest, itself included. JSON allows more (orjson
reads up to 1024), but the stored text must be written back, and deeper values
broke that write; no meter reads below the top level."""

_STRING_FIELDS = (
    "id",
    "tenant_id",
    "environment_id",
    "event_name",
    "source",
    "customer_id",
    "external_customer_id",
)
"""Identifier fields: JSON strings when present; in :class:`Event` field order."""
_REQUIRED = frozenset(("tenant_id", "event_name"))
_CHECK_ORDER = ("tenant_id", "event_name", *(n for n in _STRING_FIELDS if n not in _REQUIRED))
_KNOWN_FIELDS = frozenset((*_STRING_FIELDS, "timestamp", "properties", "ingested_at"))
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})?"
)
#: Event times outside ``[MIN_TIMESTAMP, MAX_TIMESTAMP)`` are invalid: none is ever stored.
MIN_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIMESTAMP = datetime(2200, 1, 1, tzinfo=UTC)


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp; naive means UTC; result is aware UTC.

    Sub-microsecond digits are truncated. Raises :class:`InvalidEvent` with
    ``INVALID_TIMESTAMP`` for anything else or outside [1970, 2200).
    """
    parsed = _parse_rfc3339(text)
    if not MIN_TIMESTAMP <= parsed < MAX_TIMESTAMP:
        raise InvalidEvent(InvalidReason.INVALID_TIMESTAMP, f"out of range: {text[:64]!r}")
    return parsed


def _parse_rfc3339(text: str) -> datetime:
    match = _RFC3339.fullmatch(text) if len(text) <= 64 else None
    if match is None:
        raise InvalidEvent(InvalidReason.INVALID_TIMESTAMP, f"not RFC 3339: {text[:64]!r}")
    date_part, time_part, fraction, offset = match.groups()
    iso = f"{date_part}T{time_part}"
    if fraction:
        iso += "." + fraction[:6].ljust(6, "0")
    if offset and offset not in ("Z", "z"):
        iso += offset
    try:
        parsed = datetime.fromisoformat(iso)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidEvent(InvalidReason.INVALID_TIMESTAMP, f"{text[:64]!r}: {exc}") from None


def decode_event(
    payload: bytes,
    *,
    fallback_id: str,
    fallback_timestamp: datetime,
    limits: EventLimits = DEFAULT_LIMITS,
) -> Event:
    """Decode and validate one message value.

    ``fallback_id`` (derived by the caller from topic/partition/offset, so it is
    stable across redelivery) is used when the message has no ``id``;
    ``fallback_timestamp`` (the Kafka record timestamp, aware) when it has no
    ``timestamp``. Raises :class:`InvalidEvent`; never anything else for bad input.
    """
    if len(payload) > limits.max_message_bytes:
        raise InvalidEvent(
            InvalidReason.MESSAGE_TOO_LARGE,
            f"{len(payload)} bytes > limit {limits.max_message_bytes}",
        )
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent(InvalidReason.INVALID_ENCODING, "not UTF-8 text") from None
        raise InvalidEvent(InvalidReason.INVALID_JSON, str(exc)[:200]) from None
    if not isinstance(document, dict):
        raise InvalidEvent(
            InvalidReason.NOT_AN_OBJECT, f"top level is {json_type(document)}, not an object"
        )
    return event_from_document(
        document, fallback_id=fallback_id, fallback_timestamp=fallback_timestamp, limits=limits
    )


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, with its article (for error messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def event_from_document(
    document: dict[str, Any],
    *,
    fallback_id: str,
    fallback_timestamp: datetime,
    limits: EventLimits = DEFAULT_LIMITS,
) -> Event:
    """Validate an already-decoded JSON object; see :func:`decode_event`."""
    unknown = document.keys() - _KNOWN_FIELDS
    if unknown:
        raise InvalidEvent(InvalidReason.UNKNOWN_FIELD, f"unknown fields: {sorted(unknown)[:5]}")
    strings = _string_fields(document, limits)
    event_name = strings["event_name"].strip()
    if not event_name:
        raise InvalidEvent(InvalidReason.MISSING_FIELD, "event_name is blank")
    if not strings["customer_id"] and not strings["external_customer_id"]:
        raise InvalidEvent(
            InvalidReason.MISSING_FIELD, "external_customer_id or customer_id is required"
        )

    properties = document.get("properties")
    if properties is None:
        properties = {}
    elif not isinstance(properties, dict):
        raise InvalidEvent(
            InvalidReason.PROPERTIES_NOT_OBJECT,
            f"properties is {type(properties).__name__}, not an object",
        )
    _check_properties(properties, limits)

    raw_timestamp = document.get("timestamp")
    if raw_timestamp is None:
        timestamp = fallback_timestamp.astimezone(UTC)
    elif isinstance(raw_timestamp, str):
        timestamp = parse_timestamp(raw_timestamp)
    else:
        raise InvalidEvent(InvalidReason.INVALID_TIMESTAMP, "timestamp must be an RFC 3339 string")

    return Event(
        id=strings["id"] or fallback_id,
        tenant_id=strings["tenant_id"],
        environment_id=strings["environment_id"],
        event_name=event_name,
        timestamp=timestamp,
        properties=properties,
        source=strings["source"],
        customer_id=strings["customer_id"],
        external_customer_id=strings["external_customer_id"],
    )


def _string_fields(document: dict[str, Any], limits: EventLimits) -> dict[str, str]:
    """The identifier fields of ``document`` by name, ``""`` when absent.

    Raises :class:`InvalidEvent` for the first invalid one, required fields
    first: a required field missing or empty, a value that is not a JSON
    string, or one longer than ``limits.max_id_chars``.
    """
    strings: dict[str, str] = {}
    for name in _CHECK_ORDER:
        value = document.get(name)
        if name in _REQUIRED and (value is None or value == ""):
            raise InvalidEvent(InvalidReason.MISSING_FIELD, f"{name} is required")
        if value is None:
            strings[name] = ""
            continue
        if not isinstance(value, str):
            raise InvalidEvent(
                InvalidReason.WRONG_TYPE, f"{name} must be a string, got {json_type(value)}"
            )
        if len(value) > limits.max_id_chars:
            raise InvalidEvent(
                InvalidReason.VALUE_TOO_LARGE,
                f"{name} longer than {limits.max_id_chars} characters",
            )
        strings[name] = value
    return strings


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests more than ``limit`` containers (a scalar nests none).

    Iterative: the value may nest up to orjson's 1024 levels, past Python's
    recursion limit.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > limit:
            return True
        stack.extend((child, depth) for child in children)
    return False


def _check_properties(properties: dict[str, Any], limits: EventLimits) -> None:
    if len(properties) > limits.max_properties:
        raise InvalidEvent(
            InvalidReason.TOO_MANY_PROPERTIES,
            f"{len(properties)} properties > limit {limits.max_properties}",
        )
    for key, value in properties.items():
        if len(key) > limits.max_key_chars:
            raise InvalidEvent(
                InvalidReason.VALUE_TOO_LARGE,
                f"property key longer than {limits.max_key_chars} characters",
            )
        if isinstance(value, str) and len(value) > limits.max_string_value_chars:
            raise InvalidEvent(
                InvalidReason.VALUE_TOO_LARGE,
                f"property {key[:64]!r} longer than {limits.max_string_value_chars} characters",
            )
        if isinstance(value, dict | list) and _nested_deeper_than(value, MAX_PROPERTIES_DEPTH - 1):
            raise InvalidEvent(
                InvalidReason.VALUE_TOO_LARGE,
                f"property {key[:64]!r} nests more than {MAX_PROPERTIES_DEPTH} containers "
                "(properties included)",
            )
