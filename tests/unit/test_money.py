"""Decimal rules: 15-place quantizing, invoice rounding, parsing (DESIGN.md §3, §4)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.domain.money import (
    SCALE,
    currency_precision,
    div,
    format_decimal,
    mul,
    parse_decimal,
    quantize,
    round_invoice_amount,
)

# --- round_invoice_amount -------------------------------------------------------------------

INVOICE = [
    pytest.param("2.345", "usd", "2.35", id="half-rounds-up"),
    pytest.param("2.344999", "usd", "2.34", id="below-half-rounds-down"),
    pytest.param("-2.345", "usd", "-2.35", id="negative-half-away-from-zero"),
    pytest.param("2.335", "usd", "2.34", id="odd-cent-half"),
    pytest.param("2.325", "usd", "2.33", id="half-even-would-give-2.32"),
    pytest.param("0.005", "usd", "0.01", id="half-cent"),
    pytest.param("-0.005", "usd", "-0.01", id="negative-half-cent"),
    pytest.param("0.004999999999999999", "usd", "0.00", id="just-below-half-cent"),
    pytest.param("10", "usd", "10.00", id="integer-gets-two-places"),
    pytest.param("2.345", "eur", "2.35", id="eur-two-places"),
    pytest.param("2.5", "jpy", "3", id="jpy-half-up"),
    pytest.param("3.5", "jpy", "4", id="jpy-3.5"),
    pytest.param("-2.5", "jpy", "-3", id="jpy-negative-half"),
    pytest.param("2.49", "jpy", "2", id="jpy-below-half"),
    pytest.param("1234.5", "krw", "1235", id="krw"),
    pytest.param("0.5", "vnd", "1", id="vnd"),
    pytest.param("99.5", "clp", "100", id="clp"),
    pytest.param("2.5", "JPY", "3", id="upper-case-jpy"),
    pytest.param("2.5", "Jpy", "3", id="mixed-case-jpy"),
    pytest.param("2.345", "USD", "2.35", id="upper-case-usd"),
]


@pytest.mark.parametrize(("amount", "currency", "expected"), INVOICE)
def test_round_invoice_amount(amount: str, currency: str, expected: str) -> None:
    result = round_invoice_amount(Decimal(amount), currency)
    assert result == Decimal(expected)
    # Same number of places as the expected text (2 or 0).
    assert result.as_tuple().exponent == Decimal(expected).as_tuple().exponent


def test_round_invoice_amount_of_a_large_amount_keeps_every_digit() -> None:
    amount = Decimal("12345678901234567890123.125")
    assert round_invoice_amount(amount, "usd") == Decimal("12345678901234567890123.13")


@pytest.mark.parametrize(
    ("currency", "places"),
    [
        ("usd", 2),
        ("USD", 2),
        ("eur", 2),
        ("gbp", 2),
        ("jpy", 0),
        ("JPY", 0),
        ("krw", 0),
        ("vnd", 0),
        ("clp", 0),
        ("Clp", 0),
    ],
)
def test_currency_precision(currency: str, places: int) -> None:
    assert currency_precision(currency) == places


# --- quantize -------------------------------------------------------------------------------

QUANTIZE = [
    pytest.param("1", "1.000000000000000", id="integer"),
    pytest.param("0.1", "0.100000000000000", id="one-tenth"),
    pytest.param("0.0000000000000005", "0.000000000000001", id="half-at-16th-rounds-up"),
    pytest.param("0.0000000000000015", "0.000000000000002", id="odd-digit-half"),
    pytest.param("0.0000000000000025", "0.000000000000003", id="half-even-would-give-2"),
    pytest.param("0.00000000000000049", "0.000000000000000", id="below-half-rounds-down"),
    pytest.param("-0.0000000000000005", "-0.000000000000001", id="negative-half-away"),
    pytest.param("0.1234567890123456789", "0.123456789012346", id="long-fraction"),
    pytest.param("2.9999999999999995", "3.000000000000000", id="carries-into-units"),
    pytest.param(
        "12345678901234567890123.1234567890123456789",
        "12345678901234567890123.123456789012346",
        id="38-significant-digits",
    ),
]


@pytest.mark.parametrize(("value", "expected"), QUANTIZE)
def test_quantize_to_15_places_half_up(value: str, expected: str) -> None:
    result = quantize(Decimal(value))
    assert result == Decimal(expected)
    assert result.as_tuple().exponent == -SCALE


def test_scale_is_15() -> None:
    assert SCALE == 15


def test_mul_keeps_more_than_28_significant_digits() -> None:
    a = Decimal("12345678901234567890.123456789012345")
    # a x 2 is exact: 35 significant digits, more than the default context's 28.
    assert mul(a, Decimal(2)) == Decimal("24691357802469135780.246913578024690")


def test_div_keeps_enough_digits_to_quantize_exactly() -> None:
    # 1/3 to 15 places is 0.333333333333333; 2/3 rounds up at the last place.
    assert quantize(div(Decimal(1), Decimal(3))) == Decimal("0.333333333333333")
    assert quantize(div(Decimal(2), Decimal(3))) == Decimal("0.666666666666667")


def test_format_decimal_has_no_exponent() -> None:
    assert format_decimal(Decimal("1E+6")) == "1000000"
    assert format_decimal(Decimal("1E-7")) == "0.0000001"
    assert format_decimal(quantize(Decimal("2.5"))) == "2.500000000000000"


# --- parse_decimal --------------------------------------------------------------------------

PARSED = [
    pytest.param(5, Decimal(5), id="int"),
    pytest.param(-5, Decimal(-5), id="negative-int"),
    pytest.param(10**30, Decimal(10**30), id="big-int"),
    pytest.param(0.1, Decimal("0.1"), id="float-0.1-shortest-repr"),
    pytest.param(2.5, Decimal("2.5"), id="float-2.5"),
    pytest.param(1e6, Decimal(1000000), id="float-1e6"),
    pytest.param("1e3", Decimal(1000), id="exponent-string"),
    pytest.param(" 5 ", Decimal(5), id="padded-string"),
    pytest.param("\t7.25\n", Decimal("7.25"), id="tab-newline-padded"),
    pytest.param("-3.5", Decimal("-3.5"), id="negative-string"),
    pytest.param("0", Decimal(0), id="zero-string"),
    pytest.param(Decimal("4.2"), Decimal("4.2"), id="decimal-passthrough"),
]


@pytest.mark.parametrize(("value", "expected"), PARSED)
def test_parse_decimal_accepts_numbers_and_numeric_strings(
    value: object, expected: Decimal
) -> None:
    assert parse_decimal(value) == expected


def test_parse_decimal_of_float_is_not_the_binary_expansion() -> None:
    result = parse_decimal(0.1)
    assert result == Decimal("0.1")
    assert result != Decimal.from_float(0.1)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param(None, id="null"),
        pytest.param("nan", id="nan-string"),
        pytest.param("NaN", id="NaN-string"),
        pytest.param("sNaN", id="signalling-nan-string"),
        pytest.param("inf", id="inf-string"),
        pytest.param("-Infinity", id="minus-infinity-string"),
        pytest.param(float("nan"), id="float-nan"),
        pytest.param(float("inf"), id="float-inf"),
        pytest.param(Decimal("NaN"), id="decimal-nan"),
        pytest.param("", id="empty-string"),
        pytest.param("   ", id="blank-string"),
        pytest.param("abc", id="word"),
        pytest.param("1,5", id="comma-decimal"),
        pytest.param("5 units", id="trailing-text"),
        pytest.param([1], id="array"),
        pytest.param({"v": 1}, id="object"),
    ],
)
def test_parse_decimal_rejects_non_numbers(value: object) -> None:
    assert parse_decimal(value) is None


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_parse_decimal_of_any_finite_float_round_trips(value: float) -> None:
    result = parse_decimal(value)
    assert result is not None
    assert float(result) == value
