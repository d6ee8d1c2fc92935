"""The stored ``properties`` text when the core copies it from the payload.

The core keeps the payload's own text of the ``properties`` object when it is
already what the reference writes (compact, no escapes, no repeated keys,
numbers spelled as the writer spells them) and writes it otherwise. These
payloads sit on both sides of that line: number literals as a producer may
spell them (trailing zeros, leading zeros of a fraction, 14 to 17 digits,
exponents, ``-0``), optional whitespace, escapes and repeated keys.
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.unit.core.test_decode_differential import assert_same
from worker.domain.validation import EventLimits
from worker.stream.usage_batch import SourceMessage

_DIGITS = st.text(alphabet="0123456789", max_size=18)


@st.composite
def number_literals(draw: st.DrawFn) -> str:
    sign = draw(st.sampled_from(["", "", "-"]))
    whole = draw(st.sampled_from(["0", "1", "10", "123", "12345678901234", "123456789012345"]))
    if draw(st.booleans()):
        whole = str(draw(st.integers(0, 10**17)))
    literal = sign + whole
    if draw(st.integers(0, 3)) > 0:
        zeros = "0" * draw(st.integers(0, 6))
        literal += "." + (zeros + draw(_DIGITS) or "0")
    if draw(st.integers(0, 5)) == 0:
        literal += draw(st.sampled_from(["e", "E"])) + draw(st.sampled_from(["", "-", "+"]))
        literal += str(draw(st.integers(0, 20)))
    return literal


_STRINGS = st.sampled_from(['"x"', '"é\u2028"', '"a\\nb"', '"\\u0041"', '"\\/"', '""'])
_VALUES = st.one_of(
    number_literals(), _STRINGS, st.sampled_from(["true", "false", "null", "[]", "{}"])
)
_KEYS = st.sampled_from(['"a"', '"b"', '"ms"', '"\\"q"', '""'])


@st.composite
def properties_texts(draw: st.DrawFn) -> str:
    space = st.sampled_from(["", "", "", " ", "\n"])
    members = []
    for _ in range(draw(st.integers(0, 4))):
        value = draw(_VALUES)
        if draw(st.integers(0, 5)) == 0:
            value = "[" + value + "," + draw(_VALUES) + "]"
        elif draw(st.integers(0, 5)) == 0:
            value = "{" + draw(_KEYS) + ":" + value + "}"
        members.append(draw(space) + draw(_KEYS) + draw(space) + ":" + draw(space) + value)
    return "{" + ",".join(members) + draw(space) + "}"


def _payload(properties: str) -> bytes:
    head = '{"tenant_id":"t","event_name":"e","customer_id":"c","properties":'
    return (head + properties + "}").encode()


@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(properties_texts(), min_size=1, max_size=6))
@example(["{}", '{"ms":131}', '{"n":18.77}', '{"a":1.50}', '{"a":0.00001}', '{"a":-0.0}'])
@example(['{"a":123456789012345.6}', '{"a":0.1234567890123456}', '{"a":1e2}', '{"a":-0}'])
@example(['{"a":1,"a":2}', '{ "a":1}', '{"a":{"b":1,"b":2}}', '{"a":"\\u0041"}'])
def test_properties_text_is_the_reference_text(texts: list[str]) -> None:
    messages = [SourceMessage("events", 0, i, _payload(text)) for i, text in enumerate(texts)]
    assert_same(messages, EventLimits())
