"""The core's fixed-point products and quotients against ``money.py``.

``quantize(mul(a, b))`` and ``quantize(div(a, b))`` of ``Decimal(38, 15)``
operands must come out of the core's 256-bit integer arithmetic with the same
value, digit for digit, whenever the result fits; the core says None otherwise.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from worker import _core
from worker.domain.money import div, mul, quantize

_I128_MAX = 2**127 - 1


def _amounts(max_digits: int) -> st.SearchStrategy[Decimal]:
    return st.integers(min_value=-(10**max_digits), max_value=10**max_digits).map(
        lambda scaled: Decimal(scaled).scaleb(-15)
    )


_AMOUNTS = st.one_of(
    _amounts(38),  # the whole Decimal(38, 15) range
    _amounts(20),
    _amounts(15),  # below 1: the rounding digit matters most
    st.sampled_from([Decimal("0.5"), Decimal("-0.5"), Decimal("0.000000000000001"), Decimal(3)]),
)


def _expected(op: str, a: Decimal, b: Decimal) -> Decimal | None:
    result = quantize(mul(a, b) if op == "mul" else div(a, b))
    return result if abs(result.scaleb(15)) <= _I128_MAX else None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["mul", "div"]), _AMOUNTS, _AMOUNTS), max_size=20))
def test_fixed_point_equals_the_reference(ops: list[tuple[str, Decimal, Decimal]]) -> None:
    ops = [(op, a, b) for op, a, b in ops if not (op == "div" and b == 0)]
    got = _core.fixed_point_ops([(op, format(a, "f"), format(b, "f")) for op, a, b in ops])
    want = [_expected(op, a, b) for op, a, b in ops]
    assert [None if g is None else Decimal(g) for g in got] == want
    # Equal values with the same 15 places: the same digits (up to the sign of zero).
    for value, expected in zip(got, want, strict=True):
        if value is not None and expected is not None and expected != 0:
            assert value == format(expected, "f")
