"""The core's decode stage against the Python reference, message for message.

The reference is ``validation.decode_event`` (reason codes) followed by
``raw.event_columns`` (the ``events`` columns). Every generated batch goes
through both; any difference in a reason, in which messages are accepted or in
one character of any column fails the test.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.unit.core.strategies import numeric_strings
from worker.core_decode import decode_raw_batch, rejection_detail
from worker.domain.validation import _STRING_FIELDS, EventLimits, InvalidEvent, decode_event
from worker.store.raw import event_columns
from worker.stream.usage_batch import SourceMessage

NOW = datetime(2026, 12, 6, 12, 0, 0, 123456, tzinfo=UTC)
INGESTED = datetime(2026, 12, 6, 12, 0, 1, tzinfo=UTC)
SMALL = EventLimits(
    max_message_bytes=600,
    max_properties=4,
    max_key_chars=6,
    max_id_chars=8,
    max_string_value_chars=12,
)


def reference(
    messages: list[SourceMessage], limits: EventLimits
) -> tuple[list[int], list[tuple[int, str]], dict[str, list[Any]]]:
    accepted: list[int] = []
    rejected: list[tuple[int, str]] = []
    events = []
    for index, message in enumerate(messages):
        if message.value is None:
            rejected.append((index, "empty_message"))
            continue
        fallback = (
            datetime.fromtimestamp(message.timestamp_ms / 1000, UTC)
            if message.timestamp_ms is not None and message.timestamp_ms > 0
            else NOW
        )
        try:
            event = decode_event(
                message.value,
                fallback_id=message.fallback_id,
                fallback_timestamp=fallback,
                limits=limits,
            )
        except InvalidEvent as exc:
            rejected.append((index, exc.reason.value))
            continue
        accepted.append(index)
        events.append(event)
    return accepted, rejected, event_columns(events, INGESTED)


def assert_same(messages: list[SourceMessage], limits: EventLimits) -> None:
    want_accepted, want_rejected, want_columns = reference(messages, limits)
    got = decode_raw_batch(messages, NOW, limits)
    assert got.rejected == want_rejected
    assert got.accepted == want_accepted
    got_columns = {name: array.to_pylist() for name, array in got.insert_columns(INGESTED).items()}
    assert got_columns.keys() == want_columns.keys()
    for name, want in want_columns.items():
        assert got_columns[name] == want, name


# --- generated messages -------------------------------------------------------

_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=10)
_FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e20, max_value=1e20, allow_nan=False),
    st.sampled_from([1e16, 1e-5, 1e-7, 2.5e-7, 0.1, 1e18, 999999999999999.9, -0.0, 5e-324]),
    st.decimals(min_value=0, max_value=10**19, places=17).map(float),
)
_INTS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from([0, 10**18 - 1, 10**18, 2**63, 2**64 - 1, -(2**63)]),
    # Beyond [-2^63, 2^64) JSON integers are read as the nearest double.
    st.integers(min_value=2**64, max_value=10**40),
    st.integers(min_value=-(10**40), max_value=-(2**63) - 1),
)
_SCALARS = st.one_of(st.none(), st.booleans(), _INTS, _FLOATS, _TEXT, numeric_strings())
_NUMBERS = st.one_of(_INTS, _FLOATS, numeric_strings())
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def timestamps(draw: st.DrawFn) -> object:
    moment = draw(
        st.datetimes(
            min_value=datetime(1969, 12, 31), max_value=datetime(2200, 1, 2), timezones=st.none()
        )
    )
    date = moment.strftime("%Y-%m-%d")
    clock = moment.strftime("%H:%M:%S")
    separator = draw(st.sampled_from(["T", "T", "t", " "]))
    fraction = draw(st.sampled_from(["", ".1", ".123", ".123456", ".1234567899", ".123456٣"]))
    offset = draw(
        st.one_of(
            st.sampled_from(["", "Z", "Z", "z", "+00:00", "-00:00", "+05:30"]),
            st.tuples(st.sampled_from("+-"), st.integers(0, 99), st.integers(0, 99)).map(
                lambda t: f"{t[0]}{t[1]:02d}:{t[2]:02d}"
            ),
        )
    )
    text = f"{date}{separator}{clock}{fraction}{offset}"
    if draw(st.integers(0, 3)) > 0:
        return text
    return draw(
        st.one_of(
            st.just(text.replace("0", "٠", 1)),
            st.just(text.replace(":", "x", 1)),
            st.just(text + "."),
            st.just(text[: draw(st.integers(0, len(text)))]),
            st.sampled_from(["2024-02-30T00:00:00Z", "2024-01-01T24:00:00Z", "x" * 70]),
            st.none(),
            st.integers(),
        )
    )


_IDENTIFIERS = st.one_of(
    st.none(),
    st.sampled_from(["t1", "", " ", "api_call", " api ", "\u3000e\x1f", "a" * 9]),
    _TEXT,
    st.integers(),
    st.lists(st.integers(), max_size=1),
)
_NAMES = st.one_of(st.sampled_from(["t1", "api", " api\t", "x", "\u3000", "a" * 9]), _TEXT)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, object]:
    """Mostly valid events; some with one or more fields made wrong."""
    document: dict[str, object] = {}
    for name in _STRING_FIELDS:
        required = name in ("tenant_id", "event_name")
        if required or draw(st.booleans()):
            document[name] = draw(_NAMES)
    has_customer = "customer_id" in document or "external_customer_id" in document
    if not has_customer and draw(st.integers(0, 4)) > 0:
        document["customer_id"] = "c1"
    if draw(st.integers(0, 4)) > 0:
        document["properties"] = draw(
            st.dictionaries(st.text(max_size=7), _NUMBERS | _JSON, max_size=6)
        )
    elif draw(st.booleans()):
        document["properties"] = draw(st.one_of(_SCALARS, st.lists(_SCALARS, max_size=2)))
    if draw(st.booleans()):
        document["timestamp"] = draw(timestamps())
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        document[draw(st.sampled_from(_STRING_FIELDS))] = draw(_IDENTIFIERS)
    if draw(st.integers(0, 9)) == 0:
        document[draw(st.sampled_from(["ingested_at", "extra", "Tenant_id"]))] = 1
    return document


def _float_spelling(value: float, style: int) -> str:
    if style == 0 or not math.isfinite(value):
        return repr(value)
    if style == 1:
        return f"{value:.17e}".replace("e+", "E+")
    return format(value, ".20f") if abs(value) < 1e20 else repr(value)


def encode(value: object, style: int) -> str:
    """JSON text with a choice of number spellings (the reference reads them all)."""
    if isinstance(value, float):
        return _float_spelling(value, style)
    if isinstance(value, dict):
        return (
            "{" + ",".join(f"{encode(k, style)}:{encode(v, style)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(encode(v, style) for v in value) + "]"
    return json.dumps(value, ensure_ascii=style == 1)


@st.composite
def payloads(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return None
    if kind == 1:
        return draw(st.binary(max_size=40))
    if kind == 2:
        return draw(
            st.sampled_from(
                [
                    b"[]",
                    b'"x"',
                    b"\xef\xbb\xbf{}",
                    b'{"tenant_id":"t","tenant_id":"u","event_name":"e","customer_id":"c"}',
                    b'{"tenant_id":"t","event_name":"e","customer_id":"c","properties":{"a":1,"a":2.5}}',
                    b'{"tenant_id":"t","event_name":"e","customer_id":"c","properties":{"a":"\\ud800"}}',
                    b'{"tenant_id":"t","event_name":"e","customer_id":"c","properties":{"a":1e400}}',
                    b'{"tenant_id":"t","event_name":"e","customer_id":"c","properties":{"a":-0}}',
                    b'{"tenant_id":"t","event_name":"e","customer_id":"c","properties":{"a":1.},"x":1}',
                    b'{"tenant_id":"t","event_name":"e","customer_id":"c"} x',
                    b'{"tenant_id":"t","event_name":"e","customer_id":"c","properties":{"a":"\xff"}}',
                ]
            )
        )
    text = encode(draw(documents()), draw(st.integers(0, 2)))
    if kind == 3:
        cut = draw(st.integers(0, len(text)))
        text = text[:cut]
    return text.encode("utf-8", "surrogatepass")


_MESSAGES = st.lists(
    st.tuples(payloads(), st.one_of(st.none(), st.integers(-5, 2**41))), max_size=8
)


@settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(_MESSAGES, st.booleans())
def test_core_decodes_exactly_like_the_reference(
    batch: list[tuple[bytes | None, int | None]], small: bool
) -> None:
    messages = [
        SourceMessage("events", 3, 100 + i, value, timestamp)
        for i, (value, timestamp) in enumerate(batch)
    ]
    assert_same(messages, SMALL if small else EventLimits())


def _nested(depth: int) -> bytes:
    """Properties holding a float inside ``depth`` containers (the object included)."""
    inner = b"[" * (depth - 1) + b"1.5e-7" + b"]" * (depth - 1)
    return b'{"tenant_id":"t","event_name":"e","customer_id":"c","properties":{"a":' + inner + b"}}"


def test_nesting_is_bounded_the_same_way() -> None:
    """Properties nest at most 32 containers (itself included): one more is
    ``value_too_large`` in both; past orjson's 1024 levels the JSON is invalid."""
    messages = [
        SourceMessage("events", 0, depth, _nested(depth)) for depth in (2, 31, 32, 33, 254, 1023)
    ]
    assert_same(messages, EventLimits())
    decoded = decode_raw_batch(
        [*messages, SourceMessage("events", 0, 1024, _nested(1024))], NOW, EventLimits()
    )
    assert decoded.accepted == [0, 1, 2]
    assert decoded.rejected == [
        (3, "value_too_large"),
        (4, "value_too_large"),
        (5, "value_too_large"),
        (6, "invalid_json"),
    ]


def test_columns_are_arrow_arrays_of_the_insert_types() -> None:
    message = SourceMessage(
        "events", 1, 7, b'{"tenant_id":"t","event_name":"e","customer_id":"c"}', 1_700_000_000_123
    )
    columns = decode_raw_batch([message], NOW, EventLimits()).insert_columns(INGESTED)
    assert columns["timestamp"].type == pa.timestamp("us", tz="UTC")
    assert columns["timestamp"].to_pylist() == [
        datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    ]
    assert columns["id"].to_pylist() == ["events-1-7"]
    assert columns["ingested_at"].to_pylist() == [INGESTED]


def test_rejection_detail_is_the_reference_text() -> None:
    message = SourceMessage("events", 0, 0, b'{"tenant_id":"t"}')
    decoded = decode_raw_batch([message], NOW, EventLimits())
    assert decoded.rejected == [(0, "missing_field")]
    assert rejection_detail(message, NOW, EventLimits()) == "event_name is required"


@settings(max_examples=3000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
@example(562949953421312.25)  # exact tie between .2 and .3: Python writes the even .2
@example(1125899906842624.75)
@example(5e-324)
@example(1.7976931348623157e308)
def test_floats_are_spelled_like_the_reference(number: float) -> None:
    """Every finite double read from the JSON text of properties comes back in
    the reference's spelling, ties between two shortest spellings included."""
    value = b'{"tenant_id":"t","event_name":"e","customer_id":"c","properties":{"a":%s}}' % (
        repr(number).encode()
    )
    assert_same([SourceMessage("events", 0, 1, value)], EventLimits())
