"""Catalog documents, the file loader, price compilation and event resolution (DESIGN.md §3, §8)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydantic
import pytest

from tests.catalog_cases import (
    UNKNOWN_FIELDS,
    UNKNOWN_VALUES,
    UNRATABLE_PRICES,
)
from tests.catalog_cases import document as _document
from tests.catalog_cases import line_item as _line_item
from tests.catalog_cases import meter as _meter
from tests.catalog_cases import price as _price
from tests.catalog_cases import subscription as _subscription
from worker.domain.catalog import (
    CatalogError,
    PriceDoc,
    TierDoc,
    load_catalog_file,
    parse_documents,
)
from worker.domain.catalog_index import (
    CatalogIndex,
    Resolution,
    UnresolvedReason,
    compile_price,
)
from worker.domain.events import Event
from worker.domain.pricing import BillingModel, PackageRounding, PriceError, TierMode

# The example document of DESIGN.md §8, verbatim.
DESIGN_EXAMPLE = """
{"tenant_id": "t1", "environment_id": "prod",
 "customers": [{"id": "cus_1", "external_id": "acme"}],
 "meters": [{"id": "m_api", "event_name": "api_call",
             "aggregation": {"type": "SUM", "field": "calls", "multiplier": null, "bucket_size": null},
             "filters": [{"key": "region", "values": ["us", "eu"]}]}],
 "features": [{"id": "f_api", "meter_id": "m_api", "name": "API calls", "unit": "call", "unit_plural": "calls"}],
 "prices": [{"id": "p_api", "meter_id": "m_api", "currency": "usd",
             "billing_model": "TIERED", "tier_mode": "SLAB", "amount": null,
             "transform_quantity": null,
             "tiers": [{"up_to": "1000", "unit_amount": "0.01", "flat_amount": "0"},
                       {"up_to": null, "unit_amount": "0.005", "flat_amount": "0"}]}],
 "subscriptions": [{"id": "sub_1", "customer_id": "cus_1", "status": "active",
                    "start_date": "2026-01-01T00:00:00Z", "end_date": null, "cancelled_at": null,
                    "billing_anchor": "2026-01-01T00:00:00Z", "billing_period": "MONTHLY",
                    "billing_period_count": 1, "timezone": "UTC",
                    "line_items": [{"id": "li_1", "price_id": "p_api", "meter_id": "m_api",
                                    "start_date": "2026-01-01T00:00:00Z", "end_date": null,
                                    "free_units": "100"}]}]}
"""  # noqa: E501


def _index(*documents: dict[str, Any]) -> CatalogIndex:
    return CatalogIndex(parse_documents(list(documents)))


def _event(timestamp: datetime | None = None, **overrides: Any) -> Event:
    fields: dict[str, Any] = {
        "id": "evt_1",
        "tenant_id": "t1",
        "environment_id": "prod",
        "event_name": "api_call",
        "timestamp": timestamp or datetime(2026, 2, 10, 12, tzinfo=UTC),
        "properties": {"calls": 1, "region": "us"},
        "external_customer_id": "acme",
    }
    fields.update(overrides)
    return Event(**fields)


def _line_item_ids(resolution: Resolution) -> list[str]:
    return sorted(match.binding.line_item_id for match in resolution.matches)


def _write(tmp_path: Path, content: object) -> str:
    path = tmp_path / "catalog.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


# --- parse_documents ------------------------------------------------------------------------


def test_parse_documents_accepts_one_document() -> None:
    documents = parse_documents(_document())
    assert [d.tenant_id for d in documents] == ["t1"]


def test_parse_documents_accepts_a_list_of_documents() -> None:
    documents = parse_documents([_document("t1"), _document("t2", "staging")])
    assert [(d.tenant_id, d.environment_id) for d in documents] == [
        ("t1", "prod"),
        ("t2", "staging"),
    ]


def test_parse_documents_of_empty_list_is_empty() -> None:
    assert parse_documents([]) == []


def test_parsed_decimals_are_decimals_and_datetimes_are_utc() -> None:
    (document,) = parse_documents(json.loads(DESIGN_EXAMPLE))
    price = document.prices[0]
    assert price.tiers is not None
    assert price.tiers[0].up_to == Decimal("1000")
    assert price.tiers[1].up_to is None
    assert price.tiers[1].unit_amount == Decimal("0.005")
    item = document.subscriptions[0].line_items[0]
    assert item.free_units == Decimal(100)
    assert item.start_date == datetime(2026, 1, 1, tzinfo=UTC)


def test_naive_and_offset_catalog_datetimes_become_utc() -> None:
    (document,) = parse_documents(
        _document(
            subscriptions=[
                _subscription(
                    start_date="2026-01-01T00:00:00",
                    end_date="2026-07-01T02:00:00+02:00",
                )
            ]
        )
    )
    subscription = document.subscriptions[0]
    assert subscription.start_date == datetime(2026, 1, 1, tzinfo=UTC)
    assert subscription.start_date.utcoffset() is not None
    assert subscription.end_date == datetime(2026, 7, 1, tzinfo=UTC)


def test_meter_event_name_is_trimmed() -> None:
    (document,) = parse_documents(_document(meters=[_meter(event_name="  api_call ")]))
    assert document.meters[0].event_name == "api_call"


def test_parse_documents_top_level_not_an_object_is_a_catalog_error() -> None:
    with pytest.raises(CatalogError):
        parse_documents("t1")


def _parse_error(data: object) -> CatalogError:
    with pytest.raises(CatalogError) as caught:
        parse_documents(data)
    return caught.value


def test_missing_required_field_names_its_location() -> None:
    subscription = _subscription()
    del subscription["start_date"]
    error = _parse_error(_document(subscriptions=[subscription]))
    assert "subscriptions.0.start_date" in str(error)


def test_missing_field_in_a_list_names_the_document_position() -> None:
    second = _document("t2")
    del second["tenant_id"]
    error = _parse_error([_document("t1"), second])
    assert "document 1" in str(error)
    assert "tenant_id" in str(error)


@pytest.mark.parametrize(
    ("document", "location"),
    [
        pytest.param(
            _document(prices=[_price(billing_model="HOURLY")]),
            "prices.0.billing_model",
            id="unknown-billing-model",
        ),
        pytest.param(
            _document(prices=[_price(amount="abc")]), "prices.0.amount", id="amount-not-decimal"
        ),
        pytest.param(_document(prices=[_price(amount="NaN")]), "prices.0.amount", id="amount-nan"),
        pytest.param(
            _document(subscriptions=[_subscription(line_items=[_line_item(free_units="-1")])]),
            "subscriptions.0.line_items.0.free_units",
            id="negative-free-units",
        ),
        pytest.param(
            _document(subscriptions=[_subscription(billing_period_count=0)]),
            "subscriptions.0.billing_period_count",
            id="zero-period-count",
        ),
        pytest.param(
            _document(subscriptions=[_subscription(billing_period="HOURLY")]),
            "subscriptions.0.billing_period",
            id="unknown-period-unit",
        ),
        pytest.param(
            _document(meters=[_meter(aggregation={"type": "MEDIAN", "field": "calls"})]),
            "meters.0.aggregation.type",
            id="unknown-aggregation",
        ),
        pytest.param(_document(customers=[{"id": ""}]), "customers.0.id", id="empty-customer-id"),
        pytest.param(
            _document(meters=[_meter(filters=[{"key": "region", "values": []}])]),
            "meters.0.filters.0.values",
            id="filter-without-values",
        ),
    ],
)
def test_invalid_value_is_a_located_catalog_error(document: dict[str, Any], location: str) -> None:
    assert location in str(_parse_error(document))


def test_catalog_error_is_not_a_pydantic_traceback() -> None:
    subscription = _subscription()
    del subscription["start_date"]
    error = _parse_error(_document(subscriptions=[subscription]))
    assert isinstance(error, ValueError)
    assert not isinstance(error, pydantic.ValidationError)
    assert error.__cause__ is None
    assert error.__suppress_context__
    assert "pydantic" not in str(error)
    assert "\n" not in str(error)


def test_unknown_timezone_is_a_catalog_error() -> None:
    error = _parse_error(_document(subscriptions=[_subscription(timezone="Mars/Olympus_Mons")]))
    assert "subscriptions.0.timezone" in str(error)
    assert "Mars/Olympus_Mons" in str(error)


def test_timezone_naming_a_tz_directory_is_a_catalog_error() -> None:
    # "Europe" is a directory of the tz database, not a zone.
    error = _parse_error(_document(subscriptions=[_subscription(timezone="Europe")]))
    assert "subscriptions.0.timezone" in str(error)


# --- load_catalog_file ----------------------------------------------------------------------


def test_load_catalog_file_reads_the_design_example(tmp_path: Path) -> None:
    (document,) = load_catalog_file(_write(tmp_path, DESIGN_EXAMPLE))
    assert document.tenant_id == "t1"
    assert document.environment_id == "prod"
    assert [c.external_id for c in document.customers] == ["acme"]
    assert [li.id for s in document.subscriptions for li in s.line_items] == ["li_1"]


def test_load_catalog_file_reads_a_list_of_documents(tmp_path: Path) -> None:
    documents = load_catalog_file(_write(tmp_path, [_document("t1"), _document("t2")]))
    assert [d.tenant_id for d in documents] == ["t1", "t2"]


def _load_error(tmp_path: Path, content: object) -> str:
    path = _write(tmp_path, content)
    with pytest.raises(CatalogError) as caught:
        load_catalog_file(path)
    return str(caught.value)


def test_invalid_json_file_is_a_catalog_error_naming_the_file(tmp_path: Path) -> None:
    message = _load_error(tmp_path, '{"tenant_id": "t1",')
    assert "not valid JSON" in message
    assert str(tmp_path / "catalog.json") in message


def test_missing_file_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog_file(str(tmp_path / "absent.json"))


def test_load_missing_required_field_names_the_location(tmp_path: Path) -> None:
    document = _document()
    del document["customers"][0]["id"]
    assert "customers.0.id" in _load_error(tmp_path, document)


def test_line_item_with_unknown_price_is_rejected(tmp_path: Path) -> None:
    document = _document(subscriptions=[_subscription(line_items=[_line_item(price_id="p_x")])])
    message = _load_error(tmp_path, document)
    assert "t1/prod" in message
    assert "'li_1' references unknown price" in message


def test_price_with_unknown_meter_is_rejected(tmp_path: Path) -> None:
    document = _document(prices=[_price(meter_id="m_x")])
    assert "price 'p_api' references unknown meter" in _load_error(tmp_path, document)


def test_line_item_without_any_meter_is_rejected(tmp_path: Path) -> None:
    document = _document(prices=[_price(meter_id=None)])
    assert "line item 'li_1' has no known meter" in _load_error(tmp_path, document)


def test_line_item_with_unknown_meter_is_rejected(tmp_path: Path) -> None:
    document = _document(subscriptions=[_subscription(line_items=[_line_item(meter_id="m_x")])])
    assert "line item 'li_1' has no known meter" in _load_error(tmp_path, document)


def test_subscription_with_unknown_customer_is_rejected(tmp_path: Path) -> None:
    document = _document(subscriptions=[_subscription(customer_id="cus_x")])
    message = _load_error(tmp_path, document)
    assert "subscription 'sub_1' references unknown customer 'cus_x'" in message


def test_line_item_with_unknown_feature_is_rejected(tmp_path: Path) -> None:
    document = _document(subscriptions=[_subscription(line_items=[_line_item(feature_id="f_x")])])
    assert "line item 'li_1' references unknown feature" in _load_error(tmp_path, document)


def test_feature_with_unknown_meter_is_rejected(tmp_path: Path) -> None:
    document = _document(features=[{"id": "f_api", "meter_id": "m_x", "name": "API"}])
    message = _load_error(tmp_path, document)
    assert "f_api" in message


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param(
            _document(customers=[{"id": "cus_1"}, {"id": "cus_1"}]),
            "duplicate customer id 'cus_1'",
            id="customer",
        ),
        pytest.param(
            _document(meters=[_meter(), _meter()]), "duplicate meter id 'm_api'", id="meter"
        ),
        pytest.param(
            _document(prices=[_price(), _price()]), "duplicate price id 'p_api'", id="price"
        ),
        pytest.param(
            _document(
                subscriptions=[
                    _subscription(line_items=[_line_item("li_1")]),
                    _subscription(line_items=[_line_item("li_2")]),
                ]
            ),
            "duplicate subscription id 'sub_1'",
            id="subscription",
        ),
        pytest.param(
            _document(
                subscriptions=[
                    _subscription("sub_1", line_items=[_line_item("li_1")]),
                    _subscription("sub_2", line_items=[_line_item("li_1")]),
                ]
            ),
            "duplicate line item id 'li_1'",
            id="line-item-across-subscriptions",
        ),
    ],
)
def test_duplicate_ids_are_rejected(
    tmp_path: Path, document: dict[str, Any], expected: str
) -> None:
    assert expected in _load_error(tmp_path, document)


def test_duplicate_feature_ids_are_rejected(tmp_path: Path) -> None:
    document = _document(
        features=[
            {"id": "f_api", "meter_id": "m_api", "name": "API calls"},
            {"id": "f_api", "meter_id": "m_api", "name": "API calls again"},
        ]
    )
    assert "f_api" in _load_error(tmp_path, document)


def test_two_customers_with_one_external_id_are_rejected(tmp_path: Path) -> None:
    # Events are routed by external_customer_id; two customers sharing it are ambiguous.
    document = _document(
        customers=[{"id": "cus_1", "external_id": "acme"}, {"id": "cus_2", "external_id": "acme"}]
    )
    assert "acme" in _load_error(tmp_path, document)


def test_every_problem_of_a_file_is_reported_together(tmp_path: Path) -> None:
    document = _document(
        prices=[_price(meter_id="m_x")],
        subscriptions=[_subscription(customer_id="cus_x")],
    )
    message = _load_error(tmp_path, document)
    assert "references unknown meter" in message
    assert "references unknown customer" in message


# --- compile_price --------------------------------------------------------------------------


def _price_doc(**fields: Any) -> PriceDoc:
    return PriceDoc.model_validate(_price(**fields))


@pytest.mark.parametrize(("fields", "message"), UNRATABLE_PRICES)
def test_unratable_price_is_a_located_catalog_error(fields: dict[str, Any], message: str) -> None:
    error = str(_parse_error(_document(prices=[_price(**fields)])))
    assert "price 'p_api'" in error
    assert message in error
    assert "\n" not in error


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"billing_model": BillingModel.FLAT_FEE}, id="flat-fee-without-amount"),
        pytest.param(
            {"billing_model": BillingModel.PACKAGE, "amount": Decimal(5)},
            id="package-without-transform",
        ),
        pytest.param(
            {
                "billing_model": BillingModel.TIERED,
                "tiers": [
                    TierDoc.model_construct(up_to=Decimal(10), unit_amount=Decimal(1)),
                    TierDoc.model_construct(up_to=Decimal(5), unit_amount=Decimal(1)),
                ],
            },
            id="tiered-decreasing-up-to",
        ),
    ],
)
def test_compile_price_still_refuses_an_unvalidated_unratable_price(
    fields: dict[str, Any],
) -> None:
    # compile_price is the second line of defence for documents built without validation.
    doc = PriceDoc.model_construct(id="p_api", currency="usd", **fields)
    with pytest.raises(PriceError, match="p_api"):
        compile_price(doc)


def test_compile_flat_fee() -> None:
    table = compile_price(_price_doc(currency="USD", amount="0.25"))
    assert table.model is BillingModel.FLAT_FEE
    assert table.amount == Decimal("0.25")
    assert table.currency == "usd"


def test_compile_package() -> None:
    table = compile_price(
        _price_doc(
            billing_model="PACKAGE",
            amount="5",
            transform_quantity={"divide_by": 10, "round": "down"},
        )
    )
    assert table.package_size == Decimal(10)
    assert table.package_rounding is PackageRounding.DOWN


def test_compile_tiered_defaults_to_volume_mode() -> None:
    table = compile_price(
        _price_doc(
            billing_model="TIERED",
            amount=None,
            tiers=[{"up_to": "10", "unit_amount": "1"}, {"up_to": None, "unit_amount": "0.5"}],
        )
    )
    assert table.tier_mode is TierMode.VOLUME
    assert [tier.up_to for tier in table.tiers] == [Decimal(10), None]


def test_clean_catalog_has_no_problems() -> None:
    assert _index(_document()).problems == []


# --- CatalogIndex.resolve: customers --------------------------------------------------------


def test_resolves_by_external_customer_id() -> None:
    resolution = _index(_document()).resolve(_event())
    assert resolution.unresolved is None
    assert resolution.customer_id == "cus_1"
    assert _line_item_ids(resolution) == ["li_1"]


def test_resolves_by_customer_id() -> None:
    event = _event(external_customer_id="", customer_id="cus_1")
    resolution = _index(_document()).resolve(event)
    assert resolution.customer_id == "cus_1"
    assert _line_item_ids(resolution) == ["li_1"]


@pytest.mark.parametrize(
    "customer",
    [
        pytest.param({"external_customer_id": "globex"}, id="unknown-external-id"),
        pytest.param({"external_customer_id": "", "customer_id": "cus_9"}, id="unknown-id"),
        pytest.param(
            {"external_customer_id": "", "customer_id": "acme"}, id="external-id-as-customer-id"
        ),
    ],
)
def test_unknown_customer(customer: dict[str, Any]) -> None:
    resolution = _index(_document()).resolve(_event(**customer))
    assert resolution.unresolved is UnresolvedReason.UNKNOWN_CUSTOMER
    assert resolution.matches == ()


def test_customer_without_subscriptions_has_no_active_subscription() -> None:
    index = _index(_document(subscriptions=[]))
    assert index.resolve(_event()).unresolved is UnresolvedReason.NO_ACTIVE_SUBSCRIPTION


# --- CatalogIndex.resolve: subscription activity --------------------------------------------


def _resolve_with_subscription(ts: datetime, **subscription: Any) -> Resolution:
    index = _index(_document(subscriptions=[_subscription(**subscription)]))
    return index.resolve(_event(ts))


INACTIVE = [
    pytest.param(datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), {}, id="before-start-date"),
    pytest.param(
        datetime(2026, 3, 1, tzinfo=UTC),
        {"end_date": "2026-03-01T00:00:00Z"},
        id="at-end-date-half-open",
    ),
    pytest.param(
        datetime(2026, 4, 2, tzinfo=UTC),
        {"end_date": "2026-03-01T00:00:00Z"},
        id="after-end-date",
    ),
    pytest.param(datetime(2026, 2, 10, tzinfo=UTC), {"status": "paused"}, id="paused"),
    pytest.param(datetime(2026, 2, 10, tzinfo=UTC), {"status": "incomplete"}, id="incomplete"),
    pytest.param(
        datetime(2026, 2, 10, tzinfo=UTC),
        {"status": "cancelled", "cancelled_at": "2026-02-01T00:00:00Z"},
        id="cancelled-before-event",
    ),
    pytest.param(
        datetime(2026, 2, 10, tzinfo=UTC),
        {"status": "cancelled", "cancelled_at": "2026-02-10T00:00:00Z"},
        id="cancelled-at-event",
    ),
    pytest.param(
        datetime(2026, 2, 10, tzinfo=UTC),
        {"status": "cancelled", "cancelled_at": None},
        id="cancelled-without-date",
    ),
]


@pytest.mark.parametrize(("ts", "subscription"), INACTIVE)
def test_inactive_subscription(ts: datetime, subscription: dict[str, Any]) -> None:
    resolution = _resolve_with_subscription(ts, **subscription)
    assert resolution.unresolved is UnresolvedReason.NO_ACTIVE_SUBSCRIPTION
    assert resolution.customer_id == "cus_1"
    assert resolution.matches == ()


ACTIVE = [
    pytest.param(datetime(2026, 1, 1, tzinfo=UTC), {}, id="at-start-date"),
    pytest.param(
        datetime(2026, 2, 28, 23, 59, 59, 999999, tzinfo=UTC),
        {"end_date": "2026-03-01T00:00:00Z"},
        id="just-before-end-date",
    ),
    pytest.param(datetime(2026, 2, 10, tzinfo=UTC), {"status": "trialing"}, id="trialing"),
    pytest.param(
        datetime(2026, 2, 10, tzinfo=UTC),
        {"status": "cancelled", "cancelled_at": "2026-02-20T00:00:00Z"},
        id="cancelled-after-event",
    ),
]


@pytest.mark.parametrize(("ts", "subscription"), ACTIVE)
def test_active_subscription(ts: datetime, subscription: dict[str, Any]) -> None:
    resolution = _resolve_with_subscription(ts, **subscription)
    assert resolution.unresolved is None
    assert _line_item_ids(resolution) == ["li_1"]


# --- CatalogIndex.resolve: line items -------------------------------------------------------


def test_unmetered_event_name_has_no_matching_line_item() -> None:
    resolution = _index(_document()).resolve(_event(event_name="storage_gb"))
    assert resolution.unresolved is UnresolvedReason.NO_MATCHING_LINE_ITEM
    assert resolution.customer_id == "cus_1"


def test_failing_meter_filter_has_no_matching_line_item() -> None:
    event = _event(properties={"calls": 1, "region": "apac"})
    resolution = _index(_document()).resolve(event)
    assert resolution.unresolved is UnresolvedReason.NO_MATCHING_LINE_ITEM


def test_missing_filter_property_has_no_matching_line_item() -> None:
    resolution = _index(_document()).resolve(_event(properties={"calls": 1}))
    assert resolution.unresolved is UnresolvedReason.NO_MATCHING_LINE_ITEM


def _resolve_with_line_item(ts: datetime, **line_item: Any) -> Resolution:
    document = _document(subscriptions=[_subscription(line_items=[_line_item(**line_item)])])
    return _index(document).resolve(_event(ts))


def test_line_item_before_its_start_does_not_match() -> None:
    resolution = _resolve_with_line_item(
        datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC), start_date="2026-02-01T00:00:00Z"
    )
    assert resolution.unresolved is UnresolvedReason.NO_MATCHING_LINE_ITEM


def test_line_item_matches_at_its_start() -> None:
    resolution = _resolve_with_line_item(
        datetime(2026, 2, 1, tzinfo=UTC), start_date="2026-02-01T00:00:00Z"
    )
    assert _line_item_ids(resolution) == ["li_1"]


def test_line_item_does_not_match_at_its_end() -> None:
    resolution = _resolve_with_line_item(
        datetime(2026, 3, 1, tzinfo=UTC), end_date="2026-03-01T00:00:00Z"
    )
    assert resolution.unresolved is UnresolvedReason.NO_MATCHING_LINE_ITEM


def test_line_item_matches_just_before_its_end() -> None:
    resolution = _resolve_with_line_item(
        datetime(2026, 2, 28, 23, 59, 59, 999999, tzinfo=UTC), end_date="2026-03-01T00:00:00Z"
    )
    assert _line_item_ids(resolution) == ["li_1"]


def test_two_subscriptions_sharing_a_price_give_two_matches() -> None:
    document = _document(
        subscriptions=[
            _subscription("sub_1", line_items=[_line_item("li_1")]),
            _subscription("sub_2", line_items=[_line_item("li_2")]),
        ]
    )
    resolution = _index(document).resolve(_event())
    assert _line_item_ids(resolution) == ["li_1", "li_2"]
    assert sorted(m.binding.subscription.id for m in resolution.matches) == ["sub_1", "sub_2"]
    assert {m.binding.price.price_id for m in resolution.matches} == {"p_api"}


def test_two_line_items_on_one_meter_give_two_matches() -> None:
    document = _document(
        prices=[_price("p_a"), _price("p_b", amount="0.02")],
        subscriptions=[
            _subscription(line_items=[_line_item("li_a", "p_a"), _line_item("li_b", "p_b")])
        ],
    )
    resolution = _index(document).resolve(_event())
    assert _line_item_ids(resolution) == ["li_a", "li_b"]
    assert {m.binding.meter.id for m in resolution.matches} == {"m_api"}


def test_two_line_items_on_the_same_price_give_two_matches() -> None:
    document = _document(
        subscriptions=[_subscription(line_items=[_line_item("li_a"), _line_item("li_b")])]
    )
    resolution = _index(document).resolve(_event())
    assert _line_item_ids(resolution) == ["li_a", "li_b"]


def test_only_matching_meters_are_hit() -> None:
    document = _document(
        meters=[_meter("m_api"), _meter("m_storage", event_name="storage_gb")],
        prices=[_price("p_api", "m_api"), _price("p_storage", "m_storage")],
        subscriptions=[
            _subscription(
                line_items=[_line_item("li_api", "p_api"), _line_item("li_st", "p_storage")]
            )
        ],
    )
    resolution = _index(document).resolve(_event())
    assert _line_item_ids(resolution) == ["li_api"]


def test_line_item_meter_overrides_the_price_meter() -> None:
    document = _document(
        meters=[_meter("m_api"), _meter("m_storage", event_name="storage_gb", filters=[])],
        subscriptions=[_subscription(line_items=[_line_item(meter_id="m_storage")])],
    )
    index = _index(document)
    assert _line_item_ids(index.resolve(_event(event_name="storage_gb"))) == ["li_1"]
    assert index.resolve(_event()).unresolved is UnresolvedReason.NO_MATCHING_LINE_ITEM


# --- CatalogIndex.resolve: isolation --------------------------------------------------------


def _two_scopes_index() -> CatalogIndex:
    return _index(
        _document(
            "t1", "prod", subscriptions=[_subscription(line_items=[_line_item("li_t1_prod")])]
        ),
        _document(
            "t2", "prod", subscriptions=[_subscription(line_items=[_line_item("li_t2_prod")])]
        ),
        _document(
            "t1",
            "staging",
            subscriptions=[_subscription(line_items=[_line_item("li_t1_staging")])],
        ),
    )


@pytest.mark.parametrize(
    ("tenant", "environment", "expected"),
    [
        ("t1", "prod", ["li_t1_prod"]),
        ("t2", "prod", ["li_t2_prod"]),
        ("t1", "staging", ["li_t1_staging"]),
    ],
)
def test_tenants_and_environments_are_isolated(
    tenant: str, environment: str, expected: list[str]
) -> None:
    event = _event(tenant_id=tenant, environment_id=environment)
    assert _line_item_ids(_two_scopes_index().resolve(event)) == expected


def test_unknown_environment_is_an_unknown_customer() -> None:
    event = _event(environment_id="dev")
    assert _two_scopes_index().resolve(event).unresolved is UnresolvedReason.UNKNOWN_CUSTOMER


def test_customer_id_of_another_tenant_is_unknown() -> None:
    index = _index(_document("t2"))
    event = _event(tenant_id="t1", external_customer_id="", customer_id="cus_1")
    assert index.resolve(event).unresolved is UnresolvedReason.UNKNOWN_CUSTOMER


# --- CatalogIndex.resolve: features and periods ---------------------------------------------


def test_feature_id_comes_from_the_line_item() -> None:
    document = _document(
        features=[
            {"id": "f_api", "meter_id": "m_api", "name": "API calls"},
            {"id": "f_premium", "name": "Premium API calls"},
        ],
        subscriptions=[_subscription(line_items=[_line_item(feature_id="f_premium")])],
    )
    (match,) = _index(document).resolve(_event()).matches
    assert match.binding.feature_id == "f_premium"


def test_feature_id_falls_back_to_the_feature_of_the_meter() -> None:
    document = _document(
        features=[
            {"id": "f_other", "name": "Other"},
            {"id": "f_api", "meter_id": "m_api", "name": "API calls"},
        ]
    )
    (match,) = _index(document).resolve(_event()).matches
    assert match.binding.feature_id == "f_api"


def test_feature_id_is_empty_without_a_feature() -> None:
    (match,) = _index(_document()).resolve(_event()).matches
    assert match.binding.feature_id == ""


def test_match_period_is_the_monthly_period_of_the_event() -> None:
    (match,) = _index(_document()).resolve(_event(datetime(2026, 2, 10, 12, tzinfo=UTC))).matches
    assert match.period.start == datetime(2026, 2, 1, tzinfo=UTC)
    assert match.period.end == datetime(2026, 3, 1, tzinfo=UTC)
    # 2026-02-01T00:00:00Z = 20485 days after the epoch = 1769904000 s.
    assert match.period.period_id == 1_769_904_000_000


def test_match_period_at_a_boundary_starts_there() -> None:
    (match,) = _index(_document()).resolve(_event(datetime(2026, 3, 1, tzinfo=UTC))).matches
    assert match.period.start == datetime(2026, 3, 1, tzinfo=UTC)
    assert match.period.end == datetime(2026, 4, 1, tzinfo=UTC)


def test_first_period_starts_at_the_subscription_start() -> None:
    document = _document(
        subscriptions=[
            _subscription(start_date="2026-01-15T00:00:00Z", billing_anchor="2026-01-01T00:00:00Z")
        ]
    )
    (match,) = _index(document).resolve(_event(datetime(2026, 1, 20, tzinfo=UTC))).matches
    assert match.period.start == datetime(2026, 1, 15, tzinfo=UTC)
    assert match.period.end == datetime(2026, 2, 1, tzinfo=UTC)
    assert match.period.period_id == 1_768_435_200_000


def test_anchor_defaults_to_the_start_date() -> None:
    document = _document(
        subscriptions=[_subscription(start_date="2026-01-15T00:00:00Z", billing_anchor=None)]
    )
    (match,) = _index(document).resolve(_event(datetime(2026, 2, 20, tzinfo=UTC))).matches
    assert match.period.start == datetime(2026, 2, 15, tzinfo=UTC)
    assert match.period.end == datetime(2026, 3, 15, tzinfo=UTC)


def test_two_subscriptions_get_their_own_periods() -> None:
    document = _document(
        subscriptions=[
            _subscription("sub_1", line_items=[_line_item("li_1")]),
            _subscription(
                "sub_2",
                start_date="2026-01-10T00:00:00Z",
                billing_anchor="2026-01-10T00:00:00Z",
                line_items=[_line_item("li_2")],
            ),
        ]
    )
    matches = _index(document).resolve(_event(datetime(2026, 2, 5, tzinfo=UTC))).matches
    periods = {m.binding.line_item_id: (m.period.start, m.period.end) for m in matches}
    assert periods == {
        "li_1": (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
        "li_2": (datetime(2026, 1, 10, tzinfo=UTC), datetime(2026, 2, 10, tzinfo=UTC)),
    }


def test_binding_carries_free_units_and_price() -> None:
    document = _document(subscriptions=[_subscription(line_items=[_line_item(free_units="100")])])
    (match,) = _index(document).resolve(_event()).matches
    assert match.binding.free_units == Decimal(100)
    assert match.binding.price.amount == Decimal("0.01")
    assert match.binding.tenant_id == "t1"
    assert match.binding.environment_id == "prod"


# --- strictness: unknown fields and closed sets (issue 15) ----------------------------------


@pytest.mark.parametrize(("document", "location", "entity"), UNKNOWN_FIELDS)
def test_unknown_field_is_a_located_error(
    document: dict[str, Any], location: str, entity: str
) -> None:
    error = str(_parse_error(document))
    field = location.rsplit(".", 1)[-1]
    assert f"{location} (" in error
    assert entity in error
    assert f"unknown field {field!r}: fix its spelling or remove it" in error


@pytest.mark.parametrize(("document", "location", "value"), UNKNOWN_VALUES)
def test_unknown_value_of_a_closed_set_is_a_located_error(
    document: dict[str, Any], location: str, value: str
) -> None:
    error = str(_parse_error(document))
    assert f"{location} (" in error
    assert f"unknown value {value!r}, expected one of" in error


@pytest.mark.parametrize("status", ["active", "Trialing ", "cancelled", "canceled", "paused"])
def test_known_statuses_are_accepted_case_insensitively(status: str) -> None:
    (document,) = parse_documents(_document(subscriptions=[_subscription(status=status)]))
    assert document.subscriptions[0].status == status.strip().lower()


@pytest.mark.parametrize(
    ("aggregation", "message"),
    [
        pytest.param({"type": "SUM"}, "SUM needs a 'field'", id="sum-without-field"),
        pytest.param(
            {"type": "SUM_WITH_MULTIPLIER", "field": "x"},
            "SUM_WITH_MULTIPLIER needs a 'multiplier'",
            id="multiplier-missing",
        ),
    ],
)
def test_unmeasurable_meter_is_a_located_error(aggregation: dict[str, Any], message: str) -> None:
    error = str(_parse_error(_document(meters=[_meter(aggregation=aggregation)])))
    assert "meters.0.aggregation (meter 'm_api'" in error
    assert message in error


def test_count_meter_needs_no_field() -> None:
    (document,) = parse_documents(_document(meters=[_meter(aggregation={"type": "COUNT"})]))
    assert document.meters[0].aggregation.field is None
