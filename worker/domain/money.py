"""Decimal arithmetic rules shared by metering, pricing and storage.

Every quantity and amount is a :class:`~decimal.Decimal`, never a float. Values
that are stored (quantities, rated amounts, per-row deltas) are quantized to
``SCALE`` decimal places with ROUND_HALF_UP (half away from zero), so that sums of
stored per-event deltas are exact in ``Decimal(38, 15)`` columns and telescope to
the invoice. Invoice amounts round to the currency's precision, also half away
from zero (not Python's default half-even).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import ROUND_DOWN, ROUND_HALF_UP, Context, Decimal, InvalidOperation, localcontext
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")

SCALE = 15
"""Decimal places kept for every stored quantity and amount."""

STORED_DIGITS = 38
"""Precision of the stored decimal columns: ``Decimal(38, 15)``."""

STORED_LIMIT = Decimal(10) ** (STORED_DIGITS - SCALE)
"""Every stored value (and every period total a read sums up) is below this in
magnitude: ``Decimal(38, 15)`` holds 23 integer digits."""

ZERO = Decimal(0)
ONE = Decimal(1)
_QUANTUM = Decimal(1).scaleb(-SCALE)
# Intermediate products and quotients keep 76 significant digits and are
# *truncated* there; the single half-up rounding happens in ``quantize``.
# Truncating first can never flip that final rounding (a truncated value below
# the half stays below it; one at the half was at or above it), so
# quantize(div(a, b)) is the exactly rounded quotient whenever its integer part
# has fewer than 60 digits -- far beyond Decimal(38, 15).
_CONTEXT = Context(prec=76, rounding=ROUND_DOWN)

_ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "VND", "CLP"})


def exact(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``function`` with +, - and comparisons of Decimals exact for stored values.

    Python's default context keeps 28 significant digits, so the difference of
    two amounts above 1e13 with 15 decimals (e.g. a period's rated amount
    before and after an event) would be rounded and the rows would no longer
    sum to the invoice. Inside, the thread's context is this module's
    76-digit one: any sum or difference of ``Decimal(38, 15)`` values is exact.
    Entering costs about a microsecond: wrap batch-level calls, not per-event ones.
    """

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with localcontext(_CONTEXT):
            return function(*args, **kwargs)

    return wrapper


def quantize(value: Decimal) -> Decimal:
    """Round ``value`` to ``SCALE`` places, half away from zero."""
    return value.quantize(_QUANTUM, rounding=ROUND_HALF_UP, context=_CONTEXT)


def mul(a: Decimal, b: Decimal) -> Decimal:
    """Exact-enough product (76 significant digits) before any quantizing."""
    return _CONTEXT.multiply(a, b)


def div(a: Decimal, b: Decimal) -> Decimal:
    """Quotient with 76 significant digits; the caller quantizes."""
    return _CONTEXT.divide(a, b)


def currency_precision(currency: str) -> int:
    """Minor-unit digits of an ISO 4217 currency code (2 unless zero-decimal)."""
    return 0 if currency.upper() in _ZERO_DECIMAL_CURRENCIES else 2


def round_invoice_amount(amount: Decimal, currency: str) -> Decimal:
    """Round an invoice amount to the currency's precision, half away from zero."""
    quantum = Decimal(1).scaleb(-currency_precision(currency))
    return amount.quantize(quantum, rounding=ROUND_HALF_UP, context=_CONTEXT)


def parse_decimal(value: object) -> Decimal | None:
    """Parse a JSON number or numeric string into a finite Decimal.

    Returns None for anything else (booleans, null, objects, NaN, infinities,
    unparseable strings). Floats are converted through their shortest repr, so
    ``0.1`` becomes ``Decimal('0.1')``, not the binary expansion.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            return None
    elif isinstance(value, Decimal):
        result = value
    else:
        return None
    return result if result.is_finite() else None


def format_decimal(value: Decimal) -> str:
    """Plain digits without exponent, trailing zeros kept as quantized."""
    return f"{value:f}"
