"""Decoding raw event messages: every rejection reason and the happy path (DESIGN.md §3).

Expected values are worked out by hand from the spec, never by running the decoder.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.domain.events import Event
from worker.domain.validation import (
    DEFAULT_LIMITS,
    EventLimits,
    InvalidEvent,
    InvalidReason,
    decode_event,
)

FALLBACK_ID = "events:3:1042"
FALLBACK_TS = datetime(2026, 5, 4, 12, 30, 15, 250000, tzinfo=UTC)
SMALL_LIMITS = EventLimits(
    max_message_bytes=1024,
    max_properties=3,
    max_key_chars=8,
    max_id_chars=16,
    max_string_value_chars=10,
)


def _valid_document(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": "evt_1",
        "tenant_id": "t1",
        "environment_id": "prod",
        "event_name": "api_call",
        "external_customer_id": "acme",
        "timestamp": "2026-03-18T14:47:31Z",
        "properties": {"calls": 3},
    }
    for key, value in overrides.items():
        if value is _DROP:
            document.pop(key, None)
        else:
            document[key] = value
    return document


_DROP = object()


def _encode(document: object) -> bytes:
    return json.dumps(document).encode("utf-8")


def _decode(payload: bytes, limits: EventLimits = DEFAULT_LIMITS) -> Event:
    return decode_event(
        payload, fallback_id=FALLBACK_ID, fallback_timestamp=FALLBACK_TS, limits=limits
    )


def _decode_document(**overrides: Any) -> Event:
    return _decode(_encode(_valid_document(**overrides)))


# --- rejections -----------------------------------------------------------------------------

MALFORMED = [
    pytest.param(b'{"tenant_id": "t1",', InvalidReason.INVALID_JSON, id="truncated-json"),
    pytest.param(b"{'tenant_id': 't1'}", InvalidReason.INVALID_JSON, id="single-quoted-json"),
    pytest.param(b"", InvalidReason.INVALID_JSON, id="empty-payload"),
    pytest.param(b'{"a": NaN}', InvalidReason.INVALID_JSON, id="nan-literal"),
    pytest.param(b"\xff\xfe\x00\x81garbage", InvalidReason.INVALID_ENCODING, id="binary-garbage"),
    pytest.param(
        b'{"tenant_id": "t\xe9"}', InvalidReason.INVALID_ENCODING, id="latin1-inside-json"
    ),
    pytest.param(b"[]", InvalidReason.NOT_AN_OBJECT, id="top-level-array"),
    pytest.param(b'"an event"', InvalidReason.NOT_AN_OBJECT, id="top-level-string"),
    pytest.param(b"42", InvalidReason.NOT_AN_OBJECT, id="top-level-number"),
    pytest.param(b"null", InvalidReason.NOT_AN_OBJECT, id="top-level-null"),
    pytest.param(
        _encode(_valid_document(tenant_id=_DROP)), InvalidReason.MISSING_FIELD, id="no-tenant"
    ),
    pytest.param(
        _encode(_valid_document(event_name=_DROP)), InvalidReason.MISSING_FIELD, id="no-name"
    ),
    pytest.param(
        _encode(_valid_document(external_customer_id=_DROP)),
        InvalidReason.MISSING_FIELD,
        id="no-customer-ids",
    ),
    pytest.param(
        _encode(_valid_document(tenant_id=None)), InvalidReason.MISSING_FIELD, id="null-tenant"
    ),
    pytest.param(
        _encode(_valid_document(tenant_id="")), InvalidReason.MISSING_FIELD, id="empty-tenant"
    ),
    pytest.param(
        _encode(_valid_document(event_name="")), InvalidReason.MISSING_FIELD, id="empty-name"
    ),
    pytest.param(
        _encode(_valid_document(event_name="   ")),
        InvalidReason.MISSING_FIELD,
        id="blank-name",
    ),
    pytest.param(
        _encode(_valid_document(external_customer_id="", customer_id="")),
        InvalidReason.MISSING_FIELD,
        id="empty-customer-ids",
    ),
    pytest.param(
        _encode(_valid_document(tenant_id=5)), InvalidReason.WRONG_TYPE, id="numeric-tenant"
    ),
    pytest.param(
        _encode(_valid_document(event_name=["api_call"])),
        InvalidReason.WRONG_TYPE,
        id="array-name",
    ),
    pytest.param(
        _encode(_valid_document(external_customer_id=12345)),
        InvalidReason.WRONG_TYPE,
        id="numeric-external-customer",
    ),
    pytest.param(
        _encode(_valid_document(customer_id=True)),
        InvalidReason.WRONG_TYPE,
        id="boolean-customer-id",
    ),
    pytest.param(
        _encode(_valid_document(environment_id=1)), InvalidReason.WRONG_TYPE, id="numeric-env"
    ),
    pytest.param(_encode(_valid_document(id=7)), InvalidReason.WRONG_TYPE, id="numeric-id"),
    pytest.param(
        _encode(_valid_document(timestamp="18/03/2026 14:47")),
        InvalidReason.INVALID_TIMESTAMP,
        id="timestamp-not-rfc3339",
    ),
    pytest.param(
        _encode(_valid_document(timestamp="2026-03-18")),
        InvalidReason.INVALID_TIMESTAMP,
        id="timestamp-date-only",
    ),
    pytest.param(
        _encode(_valid_document(timestamp=1773845251)),
        InvalidReason.INVALID_TIMESTAMP,
        id="timestamp-numeric-epoch",
    ),
    pytest.param(
        _encode(_valid_document(timestamp="1773845251")),
        InvalidReason.INVALID_TIMESTAMP,
        id="timestamp-epoch-string",
    ),
    pytest.param(
        _encode(_valid_document(timestamp="")),
        InvalidReason.INVALID_TIMESTAMP,
        id="timestamp-empty",
    ),
    pytest.param(
        _encode(_valid_document(timestamp="2026-02-30T00:00:00Z")),
        InvalidReason.INVALID_TIMESTAMP,
        id="timestamp-feb-30",
    ),
    pytest.param(
        _encode(_valid_document(timestamp="2026-03-18T25:00:00Z")),
        InvalidReason.INVALID_TIMESTAMP,
        id="timestamp-hour-25",
    ),
    pytest.param(
        _encode(_valid_document(timestamp="1969-12-31T23:59:59Z")),
        InvalidReason.INVALID_TIMESTAMP,
        id="timestamp-before-1970",
    ),
    pytest.param(
        _encode(_valid_document(timestamp="1970-01-01T00:30:00+01:00")),
        InvalidReason.INVALID_TIMESTAMP,
        id="timestamp-before-1970-after-offset",
    ),
    pytest.param(
        _encode(_valid_document(timestamp="2200-01-01T00:00:00Z")),
        InvalidReason.INVALID_TIMESTAMP,
        id="timestamp-year-2200",
    ),
    pytest.param(
        _encode(_valid_document(properties=[1, 2])),
        InvalidReason.PROPERTIES_NOT_OBJECT,
        id="properties-array",
    ),
    pytest.param(
        _encode(_valid_document(properties="calls=3")),
        InvalidReason.PROPERTIES_NOT_OBJECT,
        id="properties-string",
    ),
    pytest.param(
        _encode(_valid_document(customer="acme")),
        InvalidReason.UNKNOWN_FIELD,
        id="unknown-top-level-field",
    ),
]


@pytest.mark.parametrize(("payload", "reason"), MALFORMED)
def test_malformed_message_is_rejected_with_its_reason(
    payload: bytes, reason: InvalidReason
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        _decode(payload)
    assert caught.value.reason is reason


SIZE_LIMITED = [
    pytest.param(
        _encode(_valid_document(properties={"a": 1, "b": 2, "c": 3, "d": 4})),
        InvalidReason.TOO_MANY_PROPERTIES,
        id="four-properties-limit-three",
    ),
    pytest.param(
        _encode(_valid_document(properties={"abcdefghi": 1})),
        InvalidReason.VALUE_TOO_LARGE,
        id="nine-char-key-limit-eight",
    ),
    pytest.param(
        _encode(_valid_document(properties={"note": "x" * 11})),
        InvalidReason.VALUE_TOO_LARGE,
        id="eleven-char-value-limit-ten",
    ),
    pytest.param(
        _encode(_valid_document(id="e" * 17)),
        InvalidReason.VALUE_TOO_LARGE,
        id="seventeen-char-id-limit-sixteen",
    ),
    pytest.param(
        _encode(_valid_document(properties={"pad": "p" * 1100})),
        InvalidReason.MESSAGE_TOO_LARGE,
        id="message-over-1024-bytes",
    ),
]


@pytest.mark.parametrize(("payload", "reason"), SIZE_LIMITED)
def test_size_limits_are_enforced(payload: bytes, reason: InvalidReason) -> None:
    with pytest.raises(InvalidEvent) as caught:
        _decode(payload, SMALL_LIMITS)
    assert caught.value.reason is reason


def test_values_exactly_at_the_limits_are_accepted() -> None:
    document = _valid_document(id="e" * 16, properties={"abcdefgh": "x" * 10, "b": 1, "c": 2})
    event = _decode(_encode(document), SMALL_LIMITS)
    assert event.id == "e" * 16
    assert event.properties == {"abcdefgh": "x" * 10, "b": 1, "c": 2}


def test_message_of_exactly_max_bytes_is_accepted() -> None:
    limits = EventLimits(max_message_bytes=1024, max_string_value_chars=2048)
    padding = 1024 - len(_encode(_valid_document(properties={"pad": ""})))
    payload = _encode(_valid_document(properties={"pad": "p" * padding}))
    assert len(payload) == 1024
    assert _decode(payload, limits).properties == {"pad": "p" * padding}
    with pytest.raises(InvalidEvent) as caught:
        _decode(payload + b" ", limits)
    assert caught.value.reason is InvalidReason.MESSAGE_TOO_LARGE


def test_numeric_event_name_is_not_coerced() -> None:
    with pytest.raises(InvalidEvent) as caught:
        _decode_document(event_name=17)
    assert caught.value.reason is InvalidReason.WRONG_TYPE


def test_invalid_event_is_a_value_error_naming_its_reason() -> None:
    with pytest.raises(ValueError, match="wrong_type") as caught:
        _decode_document(tenant_id=5)
    assert isinstance(caught.value, InvalidEvent)
    assert caught.value.reason is InvalidReason.WRONG_TYPE
    assert "tenant_id" in str(caught.value)


def test_invalid_json_message_names_invalid_json() -> None:
    with pytest.raises(InvalidEvent, match=r"^invalid_json: "):
        _decode(b"{nope")


def test_timestamp_year_one_with_positive_offset_is_invalid_not_a_crash() -> None:
    # 0001-01-01T00:00+01:00 is 0000-12-31T23:00Z: out of range, so INVALID_TIMESTAMP.
    with pytest.raises(InvalidEvent) as caught:
        _decode_document(timestamp="0001-01-01T00:00:00+01:00")
    assert caught.value.reason is InvalidReason.INVALID_TIMESTAMP


def test_timestamp_year_9999_with_negative_offset_is_invalid_not_a_crash() -> None:
    # 9999-12-31T23:59:59-01:00 is 10000-01-01T00:59:59Z: out of range, INVALID_TIMESTAMP.
    with pytest.raises(InvalidEvent) as caught:
        _decode_document(timestamp="9999-12-31T23:59:59-01:00")
    assert caught.value.reason is InvalidReason.INVALID_TIMESTAMP


def test_timestamp_with_trailing_newline_is_not_rfc3339() -> None:
    with pytest.raises(InvalidEvent) as caught:
        _decode_document(timestamp="2026-03-18T14:47:31Z\n")
    assert caught.value.reason is InvalidReason.INVALID_TIMESTAMP


# --- happy path -----------------------------------------------------------------------------


def test_full_event_is_decoded_field_by_field() -> None:
    payload = _encode(
        {
            "id": "evt_42",
            "tenant_id": "t1",
            "environment_id": "prod",
            "event_name": "api_call",
            "customer_id": "cus_1",
            "external_customer_id": "acme",
            "source": "sdk-python",
            "timestamp": "2026-03-18T14:47:31Z",
            "properties": {"calls": 3, "region": "eu", "nested": {"a": [1, 2]}},
        }
    )
    assert _decode(payload) == Event(
        id="evt_42",
        tenant_id="t1",
        environment_id="prod",
        event_name="api_call",
        timestamp=datetime(2026, 3, 18, 14, 47, 31, tzinfo=UTC),
        properties={"calls": 3, "region": "eu", "nested": {"a": [1, 2]}},
        source="sdk-python",
        customer_id="cus_1",
        external_customer_id="acme",
    )


TIMESTAMPS = [
    pytest.param("2026-03-18T14:47:31", datetime(2026, 3, 18, 14, 47, 31), id="naive-is-utc"),
    pytest.param("2026-03-18T14:47:31Z", datetime(2026, 3, 18, 14, 47, 31), id="upper-z"),
    pytest.param("2026-03-18t14:47:31z", datetime(2026, 3, 18, 14, 47, 31), id="lower-t-z"),
    pytest.param("2026-03-18 14:47:31Z", datetime(2026, 3, 18, 14, 47, 31), id="space-separator"),
    pytest.param("2026-03-18T14:47:31+00:00", datetime(2026, 3, 18, 14, 47, 31), id="plus-zero"),
    pytest.param("2026-03-18T14:47:31+05:30", datetime(2026, 3, 18, 9, 17, 31), id="plus-0530"),
    pytest.param("2026-03-18T14:47:31-08:00", datetime(2026, 3, 18, 22, 47, 31), id="minus-08"),
    pytest.param(
        "2026-03-18T20:00:00-08:00", datetime(2026, 3, 19, 4, 0, 0), id="offset-crosses-day"
    ),
    pytest.param(
        "2026-01-01T00:30:00+01:00", datetime(2025, 12, 31, 23, 30), id="offset-crosses-year"
    ),
    pytest.param(
        "2026-03-18T14:47:31.123Z", datetime(2026, 3, 18, 14, 47, 31, 123000), id="millis"
    ),
    pytest.param(
        "2026-03-18T14:47:31.123456Z", datetime(2026, 3, 18, 14, 47, 31, 123456), id="micros"
    ),
    pytest.param(
        "2026-03-18T14:47:31.123456789Z",
        datetime(2026, 3, 18, 14, 47, 31, 123456),
        id="nanos-truncated",
    ),
    pytest.param(
        "2026-03-18T14:47:31.999999999Z",
        datetime(2026, 3, 18, 14, 47, 31, 999999),
        id="nanos-truncated-not-rounded-up",
    ),
    pytest.param(
        "2026-03-18T14:47:31.5+01:00",
        datetime(2026, 3, 18, 13, 47, 31, 500000),
        id="fraction-and-offset",
    ),
    pytest.param("1970-01-01T00:00:00Z", datetime(1970, 1, 1), id="lower-bound-inclusive"),
    pytest.param(
        "2199-12-31T23:59:59.999999Z",
        datetime(2199, 12, 31, 23, 59, 59, 999999),
        id="just-below-2200",
    ),
]


@pytest.mark.parametrize(("text", "expected_utc_wall"), TIMESTAMPS)
def test_timestamp_is_normalised_to_aware_utc(text: str, expected_utc_wall: datetime) -> None:
    timestamp = _decode_document(timestamp=text).timestamp
    assert timestamp == expected_utc_wall.replace(tzinfo=UTC)
    assert timestamp.utcoffset() == timedelta(0)
    assert timestamp.tzinfo is UTC


def test_twelve_fraction_digits_are_valid_rfc3339_and_truncated() -> None:
    # RFC 3339: time-secfrac = "." 1*DIGIT, so any number of digits is allowed.
    timestamp = _decode_document(timestamp="2026-03-18T14:47:31.123456789012Z").timestamp
    assert timestamp == datetime(2026, 3, 18, 14, 47, 31, 123456, tzinfo=UTC)


def test_missing_timestamp_falls_back_to_the_record_time() -> None:
    assert _decode_document(timestamp=_DROP).timestamp == FALLBACK_TS


def test_null_timestamp_falls_back_to_the_record_time() -> None:
    assert _decode_document(timestamp=None).timestamp == FALLBACK_TS


def test_fallback_record_time_in_another_zone_is_converted_to_utc() -> None:
    record_time = datetime(2026, 5, 4, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    event = decode_event(
        _encode(_valid_document(timestamp=_DROP)),
        fallback_id=FALLBACK_ID,
        fallback_timestamp=record_time,
    )
    assert event.timestamp == datetime(2026, 5, 4, 12, 30, tzinfo=UTC)
    assert event.timestamp.utcoffset() == timedelta(0)


def test_missing_id_takes_the_fallback_id() -> None:
    assert _decode_document(id=_DROP).id == FALLBACK_ID


def test_empty_id_takes_the_fallback_id() -> None:
    assert _decode_document(id="").id == FALLBACK_ID


def test_fallback_id_is_stable_across_redelivery() -> None:
    payload = _encode(_valid_document(id=_DROP))
    first = _decode(payload)
    second = _decode(payload)
    assert first.id == second.id == FALLBACK_ID
    assert first == second


def test_explicit_id_wins_over_the_fallback() -> None:
    assert _decode_document(id="evt_client").id == "evt_client"


def test_event_name_is_trimmed() -> None:
    assert _decode_document(event_name="  api_call\t\n").event_name == "api_call"


def test_environment_id_is_optional() -> None:
    assert _decode_document(environment_id=_DROP).environment_id == ""


def test_customer_id_alone_is_enough() -> None:
    event = _decode_document(external_customer_id=_DROP, customer_id="cus_1")
    assert event.customer_id == "cus_1"
    assert event.external_customer_id == ""


def test_external_customer_id_alone_is_enough() -> None:
    event = _decode_document()
    assert event.external_customer_id == "acme"
    assert event.customer_id == ""


def test_missing_properties_become_an_empty_object() -> None:
    assert _decode_document(properties=_DROP).properties == {}


def test_property_values_are_kept_as_decoded() -> None:
    properties = {"n": 1000000, "f": 0.1, "b": True, "s": "1", "z": None, "l": [1]}
    assert _decode_document(properties=properties).properties == properties


def test_ingested_at_is_a_known_field() -> None:
    event = _decode_document(ingested_at="2026-03-18T14:47:32Z")
    assert event.tenant_id == "t1"


# --- properties -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise_anything_but_invalid_event(payload: bytes) -> None:
    try:
        event = _decode(payload)
    except InvalidEvent as exc:
        assert isinstance(exc.reason, InvalidReason)
    else:
        assert event.tenant_id and event.event_name
        assert event.timestamp.tzinfo is not None


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json_values = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=5,
)
_field_names = st.sampled_from(
    [
        "id",
        "tenant_id",
        "environment_id",
        "event_name",
        "customer_id",
        "external_customer_id",
        "timestamp",
        "properties",
        "source",
        "other",
    ]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_field_names, _json_values, max_size=10))
def test_arbitrary_json_objects_never_raise_anything_but_invalid_event(
    document: dict[str, Any],
) -> None:
    try:
        event = _decode(json.dumps(document).encode("utf-8"))
    except InvalidEvent as exc:
        assert isinstance(exc.reason, InvalidReason)
    else:  # accepted: exactly the document's own values, nothing invented
        assert "other" not in document  # an unknown field is never accepted
        assert event.tenant_id == document["tenant_id"]
        assert event.event_name == document["event_name"].strip() != ""
        assert event.id == (document.get("id") or FALLBACK_ID)
        assert event.environment_id == (document.get("environment_id") or "")
        assert event.properties == (document.get("properties") or {})
        assert document.get("customer_id") or document.get("external_customer_id")


@st.composite
def _rfc3339_like(draw: st.DrawFn) -> str:
    year = draw(st.sampled_from([1, 1970, 2199, 2200, 9999]) | st.integers(1, 9999))
    month = draw(st.sampled_from([1, 12]) | st.integers(1, 12))
    day = draw(st.sampled_from([1, 31]) | st.integers(1, 31))
    hour = draw(st.integers(0, 23))
    minute = draw(st.integers(0, 59))
    offset = draw(
        st.sampled_from(["", "Z"])
        | st.builds(
            lambda sign, hours, minutes: f"{sign}{hours:02d}:{minutes:02d}",
            st.sampled_from("+-"),
            st.integers(0, 23),
            st.integers(0, 59),
        )
    )
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:00{offset}"


@settings(max_examples=500, deadline=None)
@given(_rfc3339_like())
def test_any_well_formed_timestamp_parses_in_range_or_is_invalid(text: str) -> None:
    try:
        timestamp = _decode_document(timestamp=text).timestamp
    except InvalidEvent as exc:
        assert exc.reason is InvalidReason.INVALID_TIMESTAMP
    else:
        assert datetime(1970, 1, 1, tzinfo=UTC) <= timestamp < datetime(2200, 1, 1, tzinfo=UTC)
        assert timestamp.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (b"[1, 2]", "top level is an array, not an object"),
        (b'"an event"', "top level is a string, not an object"),
        (b"4.5", "top level is a number, not an object"),
        (b"true", "top level is a boolean, not an object"),
        (b"null", "top level is null, not an object"),
        (
            b'{"tenant_id": ["t"], "event_name": "e", "customer_id": "c"}',
            "tenant_id must be a string, got an array",
        ),
        (
            b'{"tenant_id": "t", "event_name": 5, "customer_id": "c"}',
            "event_name must be a string, got a number",
        ),
    ],
)
def test_type_errors_name_json_types(payload: bytes, detail: str) -> None:
    with pytest.raises(InvalidEvent) as raised:
        decode_event(payload, fallback_id="f", fallback_timestamp=FALLBACK_TS)
    assert raised.value.detail == detail
