"""Price tables and ``rate(q)``: the amount owed for a billable quantity (DESIGN.md §4).

A :class:`PriceTable` is frozen policy. ``rate`` is pure, total over ``q >= 0``,
returns values quantized to 15 places and ``rate(0) == 0`` for every model.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum

from worker.domain.money import ZERO, div, mul, quantize


class BillingModel(StrEnum):
    FLAT_FEE = "FLAT_FEE"
    PACKAGE = "PACKAGE"
    TIERED = "TIERED"


class TierMode(StrEnum):
    VOLUME = "VOLUME"
    SLAB = "SLAB"


class PackageRounding(StrEnum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Tier:
    """One price tier; ``up_to`` is inclusive, ``None`` means unbounded."""

    up_to: Decimal | None
    unit_amount: Decimal
    flat_amount: Decimal = ZERO


class PriceError(ValueError):
    """A price definition that cannot be rated (raised at catalog load, never per event)."""


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Everything needed to rate a quantity under one price."""

    price_id: str
    currency: str
    model: BillingModel
    amount: Decimal = ZERO
    tier_mode: TierMode = TierMode.VOLUME
    tiers: tuple[Tier, ...] = ()
    package_size: Decimal = Decimal(1)
    package_rounding: PackageRounding = PackageRounding.UP

    def __post_init__(self) -> None:
        if self.model is BillingModel.PACKAGE and self.package_size <= 0:
            raise PriceError(f"price {self.price_id}: divide_by must be > 0")
        if self.model is BillingModel.TIERED:
            _check_tiers(self.price_id, self.tiers)

    def rate(self, quantity: Decimal) -> Decimal:
        """Amount for ``quantity`` billable units, quantized to 15 places."""
        if quantity <= 0:
            return ZERO
        if self.model is BillingModel.FLAT_FEE:
            return quantize(mul(self.amount, quantity))
        if self.model is BillingModel.PACKAGE:
            rounding = ROUND_CEILING if self.package_rounding is PackageRounding.UP else ROUND_FLOOR
            packages = div(quantity, self.package_size).to_integral_value(rounding=rounding)
            return quantize(mul(self.amount, packages))
        if self.tier_mode is TierMode.VOLUME:
            return quantize(_volume(self.tiers, quantity))
        return quantize(_slab(self.tiers, quantity))


def _volume(tiers: tuple[Tier, ...], quantity: Decimal) -> Decimal:
    for tier in tiers:
        if tier.up_to is None or quantity <= tier.up_to:
            return mul(tier.unit_amount, quantity) + tier.flat_amount
    # Quantity beyond the last bounded tier: the last tier applies.
    last = tiers[-1]
    return mul(last.unit_amount, quantity) + last.flat_amount


def _slab(tiers: tuple[Tier, ...], quantity: Decimal) -> Decimal:
    total = ZERO
    remaining = quantity
    previous_up_to = ZERO
    for tier in tiers:
        if remaining <= 0:
            break
        taken = remaining if tier.up_to is None else min(remaining, tier.up_to - previous_up_to)
        if taken > 0:
            total += mul(tier.unit_amount, taken) + tier.flat_amount
            remaining -= taken
        if tier.up_to is not None:
            previous_up_to = tier.up_to
    if remaining > 0:
        # Bounded last tier: it keeps taking units at its own rate.
        total += mul(tiers[-1].unit_amount, remaining)
    return total


def _check_tiers(price_id: str, tiers: tuple[Tier, ...]) -> None:
    if not tiers:
        raise PriceError(f"price {price_id}: TIERED needs at least one tier")
    previous = ZERO
    for position, tier in enumerate(tiers):
        if tier.up_to is None:
            if position != len(tiers) - 1:
                raise PriceError(f"price {price_id}: only the last tier may have up_to null")
            continue
        if tier.up_to <= previous:
            raise PriceError(f"price {price_id}: tier up_to must be positive and increasing")
        previous = tier.up_to
