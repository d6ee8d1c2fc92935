"""rate(q) per billing model against hand-worked amounts (DESIGN.md §4)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from worker.domain.pricing import (
    BillingModel,
    PackageRounding,
    PriceError,
    PriceTable,
    Tier,
    TierMode,
)

THREE_TIERS = (
    Tier(up_to=D(100), unit_amount=D("1.00"), flat_amount=D(10)),
    Tier(up_to=D(1000), unit_amount=D("0.50"), flat_amount=D(20)),
    Tier(up_to=None, unit_amount=D("0.25"), flat_amount=D(5)),
)


def tiered(mode: TierMode, tiers: tuple[Tier, ...] = THREE_TIERS) -> PriceTable:
    return PriceTable("p", "usd", BillingModel.TIERED, tier_mode=mode, tiers=tiers)


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("0", "0"),
        ("1", "11"),  # 1 x 1.00 + 10
        ("100", "110"),  # up_to is inclusive: still tier 1
        ("100.5", "70.25"),  # whole quantity at tier 2: 100.5 x 0.5 + 20
        ("1000", "520"),
        ("1001", "255.25"),  # 1001 x 0.25 + 5
    ],
)
def test_volume_prices_the_whole_quantity_at_the_first_tier_that_holds_it(
    quantity: str, expected: str
) -> None:
    assert tiered(TierMode.VOLUME).rate(D(quantity)) == D(expected)


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("0", "0"),
        ("50", "60"),  # 50 x 1 + flat 10
        ("100", "110"),  # tier boundary hit exactly: tier 2 takes nothing, no flat 20
        ("101", "130.5"),  # 110 + 1 x 0.5 + 20
        ("1000", "580"),  # 110 + 900 x 0.5 + 20 (width = 1000 - 100)
        ("1001", "585.25"),  # 580 + 1 x 0.25 + 5 (flat of the third tier once reached)
        ("1500", "710"),  # 580 + 500 x 0.25 + 5
    ],
)
def test_slab_fills_each_tier_by_its_width_and_adds_flat_fees_of_tiers_reached(
    quantity: str, expected: str
) -> None:
    assert tiered(TierMode.SLAB).rate(D(quantity)) == D(expected)


def test_slab_with_bounded_last_tier_keeps_its_rate_beyond_the_bound() -> None:
    price = tiered(TierMode.SLAB, (Tier(D(10), D(2)), Tier(D(20), D(1))))
    assert price.rate(D(25)) == D(20 + 10 + 5)


def test_volume_first_tier_flat_fee_is_not_charged_for_zero_usage() -> None:
    assert tiered(TierMode.VOLUME).rate(D(0)) == 0


@pytest.mark.parametrize(
    ("rounding", "quantity", "expected"),
    [
        (PackageRounding.UP, "0", "0"),
        (PackageRounding.UP, "1", "2"),
        (PackageRounding.UP, "10", "2"),
        (PackageRounding.UP, "10.01", "4"),
        (PackageRounding.DOWN, "9.99", "0"),
        (PackageRounding.DOWN, "10", "2"),
        (PackageRounding.DOWN, "19", "2"),
        (PackageRounding.DOWN, "20", "4"),
    ],
)
def test_package_charges_per_started_or_completed_package(
    rounding: PackageRounding, quantity: str, expected: str
) -> None:
    price = PriceTable(
        "p",
        "usd",
        BillingModel.PACKAGE,
        amount=D(2),
        package_size=D(10),
        package_rounding=rounding,
    )
    assert price.rate(D(quantity)) == D(expected)


def test_flat_fee_is_amount_times_quantity_quantized_half_up_to_15_places() -> None:
    price = PriceTable("p", "usd", BillingModel.FLAT_FEE, amount=D("0.1234567890123456789"))
    assert price.rate(D(1)) == D("0.123456789012346")
    assert price.rate(D(1000)) == D("123.456789012345679")
    assert str(price.rate(D(3))) == "0.370370367037037"


@pytest.mark.parametrize(
    "tiers",
    [
        (),
        (Tier(D(10), D(1)), Tier(D(10), D(1))),
        (Tier(None, D(1)), Tier(D(10), D(1))),
        (Tier(D(0), D(1)),),
    ],
)
def test_unratable_tier_tables_are_rejected_at_construction(tiers: tuple[Tier, ...]) -> None:
    with pytest.raises(PriceError):
        tiered(TierMode.SLAB, tiers)


def test_package_needs_a_positive_size() -> None:
    with pytest.raises(PriceError):
        PriceTable("p", "usd", BillingModel.PACKAGE, amount=D(1), package_size=D(0))
