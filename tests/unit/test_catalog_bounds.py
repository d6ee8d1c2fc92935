"""Catalog numbers are bounded at load (issue 19): a price amount below 1e12 in
magnitude, a quantity (tier bound, free units, package size) below the per-event
limit of 1e18, at most 15 decimal places. One past a bound is a located error;
at the bound's edge the catalog loads. Catalog files are bounded in size."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.catalog_cases import document, line_item, meter, price, subscription
from worker.cli import main
from worker.domain import catalog as catalog_module
from worker.domain.catalog import CatalogError, load_catalog_file, parse_documents

BIG_AMOUNT, BIGGEST_AMOUNT = "1000000000000", "999999999999.999999999999999"
BIG_QUANTITY, BIGGEST_QUANTITY = "1000000000000000000", "999999999999999999.999999999999999"
TOO_PRECISE = "0.0000000000000001"  # 16 places


def with_amount(value: str) -> dict[str, Any]:
    return document(prices=[price(amount=value)])


def with_tier(field: str, value: str) -> dict[str, Any]:
    tier = {"up_to": "100", "unit_amount": "1", "flat_amount": "0", field: value}
    rest = {"up_to": None, "unit_amount": "1"}
    tiered = {"billing_model": "TIERED", "tier_mode": "SLAB", "amount": None}
    return document(prices=[price(**tiered, tiers=[tier, rest])])


def with_free_units(value: str) -> dict[str, Any]:
    return document(subscriptions=[subscription(line_items=[line_item(free_units=value)])])


def with_divide_by(value: str) -> dict[str, Any]:
    package = {"billing_model": "PACKAGE", "amount": "5"}
    return document(prices=[price(**package, transform_quantity={"divide_by": value})])


def with_multiplier(value: str) -> dict[str, Any]:
    aggregation = {"type": "SUM_WITH_MULTIPLIER", "field": "calls", "multiplier": value}
    return document(meters=[meter(aggregation=aggregation)])


CASES: list[tuple[str, Callable[[str], dict[str, Any]], str, str, str]] = [
    ("amount", with_amount, BIGGEST_AMOUNT, BIG_AMOUNT, "amount"),
    ("negative amount", with_amount, "-" + BIGGEST_AMOUNT, "-" + BIG_AMOUNT, "amount"),
    (
        "unit_amount",
        lambda v: with_tier("unit_amount", v),
        BIGGEST_AMOUNT,
        BIG_AMOUNT,
        "unit_amount",
    ),
    (
        "flat_amount",
        lambda v: with_tier("flat_amount", v),
        BIGGEST_AMOUNT,
        BIG_AMOUNT,
        "flat_amount",
    ),
    ("multiplier", with_multiplier, BIGGEST_AMOUNT, BIG_AMOUNT, "multiplier"),
    ("free_units", with_free_units, BIGGEST_QUANTITY, BIG_QUANTITY, "free_units"),
    ("divide_by", with_divide_by, BIGGEST_QUANTITY, BIG_QUANTITY, "divide_by"),
    ("amount places", with_amount, "0.000000000000001", TOO_PRECISE, "amount"),
    ("free_units places", with_free_units, "0.000000000000001", TOO_PRECISE, "free_units"),
]


@pytest.mark.parametrize(
    ("what", "build", "edge", "beyond", "field"), CASES, ids=[case[0] for case in CASES]
)
def test_numbers_load_at_the_edge_and_are_refused_past_it_with_the_field_named(
    what: str, build: Callable[[str], dict[str, Any]], edge: str, beyond: str, field: str
) -> None:
    assert parse_documents(build(edge))
    with pytest.raises(CatalogError, match=field) as refused:
        parse_documents(build(beyond))
    assert "\n" not in str(refused.value)


def test_a_tier_bound_past_the_quantity_limit_is_refused() -> None:
    with pytest.raises(CatalogError, match="up_to"):
        parse_documents(with_tier("up_to", BIG_QUANTITY))
    assert parse_documents(with_tier("up_to", "999999999999999999"))


def test_a_catalog_file_over_the_size_limit_is_refused_before_it_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(document()))
    size = path.stat().st_size
    assert load_catalog_file(str(path), max_bytes=size)
    with pytest.raises(CatalogError, match=f"larger than {size - 1} bytes"):
        load_catalog_file(str(path), max_bytes=size - 1)

    monkeypatch.setattr(catalog_module, "MAX_CATALOG_FILE_BYTES", size - 1)
    assert main(["catalog", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "larger than" in err
