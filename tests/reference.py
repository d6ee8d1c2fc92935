"""Reference computations for tests: exact fractions, written independently of the rater.

Pricing of DESIGN.md §4 over :class:`fractions.Fraction`, quantized half away
from zero to 15 places. Unit tests (the rating invariant) and integration
tests (the end-to-end invoice) compare the worker's results with these.
"""

from __future__ import annotations

import math
from decimal import Context, Decimal
from fractions import Fraction

from worker.domain.pricing import BillingModel, PackageRounding, PriceTable, TierMode

Q15 = Decimal("1e-15")
#: Wide enough for every value a Decimal(38, 15) column holds (the default
#: context keeps 28 digits and would refuse to quantize 1e13 to 15 places).
_EXACT = Context(prec=100)


def q15(value: Fraction | Decimal | int) -> Decimal:
    """Reference quantizer: exact fraction -> 15 places, half away from zero."""
    fraction = Fraction(value)
    sign = -1 if fraction < 0 else 1
    scaled = abs(fraction) * 10**15
    whole = math.floor(scaled)
    if scaled - whole >= Fraction(1, 2):
        whole += 1
    return _EXACT.multiply(Decimal(sign * whole), Q15).quantize(Q15, context=_EXACT)


def reference_rate(price: PriceTable, quantity: Decimal) -> Decimal:
    q = Fraction(quantity)
    if q <= 0:
        return Decimal(0)
    if price.model is BillingModel.FLAT_FEE:
        return q15(Fraction(price.amount) * q)
    if price.model is BillingModel.PACKAGE:
        packages = q / Fraction(price.package_size)
        count = (
            math.ceil(packages)
            if price.package_rounding is PackageRounding.UP
            else math.floor(packages)
        )
        return q15(Fraction(price.amount) * count)
    tiers = price.tiers
    if price.tier_mode is TierMode.VOLUME:
        for tier in tiers:
            if tier.up_to is None or q <= tier.up_to:
                return q15(Fraction(tier.unit_amount) * q + Fraction(tier.flat_amount))
        return q15(Fraction(tiers[-1].unit_amount) * q + Fraction(tiers[-1].flat_amount))
    total, remaining, lower = Fraction(0), q, Fraction(0)
    for tier in tiers:
        width = remaining if tier.up_to is None else Fraction(tier.up_to) - lower
        taken = min(remaining, width)
        if taken > 0:
            total += Fraction(tier.unit_amount) * taken + Fraction(tier.flat_amount)
            remaining -= taken
        if tier.up_to is not None:
            lower = Fraction(tier.up_to)
    total += Fraction(tiers[-1].unit_amount) * remaining
    return q15(total)
