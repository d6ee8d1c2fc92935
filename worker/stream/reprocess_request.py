"""Reprocess requests: the control message on ``events.reprocess`` (DESIGN.md §6).

Wire format, one JSON object per message, keyed by ``request_id``::

    {"request_id": "4f1c...", "tenant_id": "t1", "environment_id": "prod",
     "external_customer_id": "acme",            # optional (null or absent: all)
     "event_name": "api_call",                  # optional (null or absent: all)
     "start_time": "2026-01-01T00:00:00.000000Z",
     "end_time": "2026-02-01T00:00:00.000000Z", # [start, end), RFC 3339
     "batch_size": 1000}                        # optional, 1..10000

:func:`parse_request` is the one place control messages are interpreted: any
problem raises :class:`InvalidRequest` with a machine-readable reason (the DLQ
``reason`` header). Unknown fields are rejected, as for events.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

import orjson
from confluent_kafka import Producer

from worker.domain.validation import InvalidEvent, InvalidReason, parse_timestamp
from worker.ops.settings import WorkerSettings
from worker.store.params import MAX_BATCH_SIZE
from worker.stream.delivery import DeliveryError, DeliveryTracker, produce_or_wait
from worker.stream.producer import producer_config

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "InvalidRequest",
    "RejectReason",
    "ReprocessRequest",
    "parse_request",
    "publish_request",
]

#: Events per page when a request gives no ``batch_size``.
DEFAULT_BATCH_SIZE: Final = 1000
#: Longest request id accepted (characters).
MAX_REQUEST_ID_CHARS: Final = 256
_MAX_MESSAGE_BYTES: Final = 64 * 1024

_REQUIRED: Final = ("request_id", "tenant_id", "environment_id", "start_time", "end_time")
_OPTIONAL_STRINGS: Final = ("external_customer_id", "event_name")
_KNOWN: Final = frozenset((*_REQUIRED, *_OPTIONAL_STRINGS, "batch_size"))


class RejectReason(StrEnum):
    """Why a control message was dead-lettered (the DLQ ``reason`` header).

    A failure that an event message can have too carries the event's reason.
    """

    MESSAGE_TOO_LARGE = InvalidReason.MESSAGE_TOO_LARGE.value
    INVALID_JSON = InvalidReason.INVALID_JSON.value
    NOT_AN_OBJECT = InvalidReason.NOT_AN_OBJECT.value
    MISSING_FIELD = InvalidReason.MISSING_FIELD.value
    WRONG_TYPE = InvalidReason.WRONG_TYPE.value
    UNKNOWN_FIELD = InvalidReason.UNKNOWN_FIELD.value
    INVALID_TIMESTAMP = InvalidReason.INVALID_TIMESTAMP.value
    INVALID_RANGE = "invalid_range"
    INVALID_BATCH_SIZE = "invalid_batch_size"
    REQUEST_ID_REUSED = "request_id_reused"


class InvalidRequest(ValueError):
    """A control message that cannot be served; ``reason`` is machine-readable."""

    def __init__(
        self,
        reason: RejectReason,
        detail: str,
        request_id: str | None = None,
        scope: tuple[str, str] = ("", ""),
    ) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        #: The request id when the message had a usable one (for the status table).
        self.request_id = request_id
        #: (tenant_id, environment_id) when the message named them as strings, else
        #: empty: where the rejection is recorded for ``reprocess status``.
        self.scope = scope


@dataclass(frozen=True, slots=True)
class ReprocessRequest:
    """A validated request: re-drive unprocessed events of a scope in ``[start, end)``.

    Empty ``external_customer_id`` / ``event_name`` mean "every customer" /
    "every event name". Times are aware UTC.
    """

    request_id: str
    tenant_id: str
    environment_id: str
    start_time: datetime
    end_time: datetime
    external_customer_id: str = ""
    event_name: str = ""
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if not self.request_id or len(self.request_id) > MAX_REQUEST_ID_CHARS:
            raise ValueError(f"request_id must have 1..{MAX_REQUEST_ID_CHARS} characters")
        if not self.tenant_id or not self.environment_id:
            raise ValueError("tenant_id and environment_id are required")
        if self.start_time.tzinfo is None or self.end_time.tzinfo is None:
            raise ValueError("start_time and end_time must be timezone-aware")
        if self.start_time >= self.end_time:
            raise ValueError("start_time must be before end_time")
        if self.batch_size is not None and not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be in 1..{MAX_BATCH_SIZE}")

    @property
    def page_size(self) -> int:
        return self.batch_size or DEFAULT_BATCH_SIZE

    def to_json(self) -> dict[str, Any]:
        """The wire form (optional fields omitted when empty); stable for equal requests."""
        document: dict[str, Any] = {
            "request_id": self.request_id,
            "tenant_id": self.tenant_id,
            "environment_id": self.environment_id,
            "start_time": rfc3339(self.start_time),
            "end_time": rfc3339(self.end_time),
        }
        if self.external_customer_id:
            document["external_customer_id"] = self.external_customer_id
        if self.event_name:
            document["event_name"] = self.event_name
        if self.batch_size is not None:
            document["batch_size"] = self.batch_size
        return document

    def canonical(self) -> str:
        """Canonical JSON text (sorted keys): equal requests, equal text."""
        return orjson.dumps(self.to_json(), option=orjson.OPT_SORT_KEYS).decode()


def rfc3339(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_request_id() -> str:
    return str(uuid.uuid4())


def parse_request(payload: bytes | None) -> ReprocessRequest:
    """Decode and validate one control message; raise :class:`InvalidRequest` saying why."""
    if payload is None:
        raise InvalidRequest(RejectReason.NOT_AN_OBJECT, "empty message (null value)")
    if len(payload) > _MAX_MESSAGE_BYTES:
        raise InvalidRequest(
            RejectReason.MESSAGE_TOO_LARGE, f"{len(payload)} bytes > {_MAX_MESSAGE_BYTES}"
        )
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(RejectReason.INVALID_JSON, str(exc)[:200]) from None
    if not isinstance(document, dict):
        raise InvalidRequest(
            RejectReason.NOT_AN_OBJECT, f"top level is {type(document).__name__}, not an object"
        )
    raw_id = document.get("request_id")
    request_id = (
        raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= MAX_REQUEST_ID_CHARS else None
    )

    tenant, environment = document.get("tenant_id"), document.get("environment_id")
    scope = (
        (tenant, environment)
        if isinstance(tenant, str) and isinstance(environment, str)
        else ("", "")
    )

    def reject(reason: RejectReason, detail: str) -> InvalidRequest:
        return InvalidRequest(reason, detail, request_id, scope)

    unknown = document.keys() - _KNOWN
    if unknown:
        raise reject(RejectReason.UNKNOWN_FIELD, f"unknown fields: {sorted(unknown)[:5]}")
    strings: dict[str, str] = {}
    for name in _REQUIRED:
        value = document.get(name)
        if value is None or value == "":
            raise reject(RejectReason.MISSING_FIELD, f"{name} is required")
        if not isinstance(value, str):
            raise reject(RejectReason.WRONG_TYPE, f"{name} must be a string")
        strings[name] = value
    if request_id is None:
        raise reject(
            RejectReason.WRONG_TYPE, f"request_id longer than {MAX_REQUEST_ID_CHARS} characters"
        )
    for name in _OPTIONAL_STRINGS:
        value = document.get(name)
        if value is not None and not isinstance(value, str):
            raise reject(RejectReason.WRONG_TYPE, f"{name} must be a string or null")
        strings[name] = (value or "").strip() if name == "event_name" else (value or "")
    times: dict[str, datetime] = {}
    for name in ("start_time", "end_time"):
        try:
            times[name] = parse_timestamp(strings[name])
        except InvalidEvent as exc:
            raise reject(RejectReason.INVALID_TIMESTAMP, f"{name}: {exc.detail}") from None
    if times["start_time"] >= times["end_time"]:
        raise reject(RejectReason.INVALID_RANGE, "start_time must be before end_time")
    batch_size = document.get("batch_size")
    if batch_size is not None and (
        not isinstance(batch_size, int)
        or isinstance(batch_size, bool)
        or not 1 <= batch_size <= MAX_BATCH_SIZE
    ):
        raise reject(
            RejectReason.INVALID_BATCH_SIZE, f"batch_size must be an integer in 1..{MAX_BATCH_SIZE}"
        )
    return ReprocessRequest(
        request_id=request_id,
        tenant_id=strings["tenant_id"],
        environment_id=strings["environment_id"],
        start_time=times["start_time"],
        end_time=times["end_time"],
        external_customer_id=strings["external_customer_id"],
        event_name=strings["event_name"],
        batch_size=batch_size,
    )


def publish_request(
    settings: WorkerSettings, request: ReprocessRequest, *, timeout_s: float = 30.0
) -> None:
    """Produce ``request`` to the control topic keyed by its id and wait for the ack.

    Blocks at most about ``timeout_s``; raises :class:`DeliveryError` when the
    broker did not acknowledge it. The topic must exist
    (:func:`worker.stream.topics.ensure_topics`).
    """
    tracker = DeliveryTracker()
    producer = Producer(producer_config(settings, **{"linger.ms": 0}))
    produce_or_wait(
        producer,
        tracker,
        settings.reprocess_topic,
        value=orjson.dumps(request.to_json()),
        key=request.request_id,
        queue_full_timeout_s=timeout_s,
    )
    remaining = producer.flush(timeout_s)
    if tracker.failed or remaining or tracker.delivered != 1:
        detail = "; ".join(tracker.errors) or f"unacknowledged after {timeout_s}s"
        raise DeliveryError(f"reprocess request {request.request_id} not delivered: {detail}")
