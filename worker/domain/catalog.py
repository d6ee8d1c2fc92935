"""The catalog document format (DESIGN.md §8) and its validation.

A catalog document holds one tenant/environment's customers, meters, features,
prices and subscriptions (with their line items). Documents are parsed into
frozen pydantic models; malformed input raises :class:`CatalogError` with a
readable, located message. Cross references are checked by
:func:`reference_problems` (the file loader is strict; the topic source
tolerates entities that arrive out of order).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from worker.domain.metering import AggregationType, WindowSize
from worker.domain.periods import BillingPeriodUnit
from worker.domain.pricing import BillingModel, TierMode


class CatalogError(ValueError):
    """The catalog input is malformed or inconsistent; the message says where."""


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _finite(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite number")
    return value


def _non_negative(value: Decimal) -> Decimal:
    if not value.is_finite() or value < 0:
        raise ValueError("must be a finite number >= 0")
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
Amount = Annotated[Decimal, AfterValidator(_finite)]
NonNegative = Annotated[Decimal, AfterValidator(_non_negative)]
Identifier = Annotated[str, Field(min_length=1, max_length=256)]


class _Doc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class CustomerDoc(_Doc):
    id: Identifier
    external_id: str = ""


class AggregationDoc(_Doc):
    type: AggregationType
    field: str | None = None
    multiplier: Amount | None = None
    bucket_size: WindowSize | None = None


class FilterDoc(_Doc):
    key: Identifier
    values: list[str] = Field(min_length=1)


class MeterDoc(_Doc):
    id: Identifier
    event_name: Identifier
    aggregation: AggregationDoc
    filters: list[FilterDoc] = Field(default_factory=list)

    @field_validator("event_name")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


class FeatureDoc(_Doc):
    id: Identifier
    meter_id: str | None = None
    name: str = ""
    unit: str = ""
    unit_plural: str = ""


class TierDoc(_Doc):
    up_to: NonNegative | None = None
    unit_amount: Amount = Decimal(0)
    flat_amount: Amount = Decimal(0)


class TransformQuantityDoc(_Doc):
    divide_by: NonNegative
    round: Literal["up", "down"] = "up"


class PriceDoc(_Doc):
    id: Identifier
    meter_id: str | None = None
    currency: Annotated[str, Field(min_length=3, max_length=3)]
    billing_model: BillingModel
    tier_mode: TierMode | None = None
    amount: Amount | None = None
    transform_quantity: TransformQuantityDoc | None = None
    tiers: list[TierDoc] | None = None


class LineItemDoc(_Doc):
    id: Identifier
    price_id: Identifier
    meter_id: str | None = None
    feature_id: str | None = None
    start_date: UtcDatetime | None = None
    end_date: UtcDatetime | None = None
    free_units: NonNegative = Decimal(0)


class SubscriptionDoc(_Doc):
    id: Identifier
    customer_id: Identifier
    status: str = "active"
    start_date: UtcDatetime
    end_date: UtcDatetime | None = None
    cancelled_at: UtcDatetime | None = None
    billing_anchor: UtcDatetime | None = None
    billing_period: BillingPeriodUnit = BillingPeriodUnit.MONTHLY
    billing_period_count: int = Field(default=1, ge=1, le=1000)
    timezone: str = "UTC"
    line_items: list[LineItemDoc] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown IANA timezone {value!r}") from None
        return value


class CatalogDocument(_Doc):
    """One tenant/environment's catalog."""

    tenant_id: Identifier
    environment_id: str = ""
    customers: list[CustomerDoc] = Field(default_factory=list)
    meters: list[MeterDoc] = Field(default_factory=list)
    features: list[FeatureDoc] = Field(default_factory=list)
    prices: list[PriceDoc] = Field(default_factory=list)
    subscriptions: list[SubscriptionDoc] = Field(default_factory=list)


def parse_documents(data: Any) -> list[CatalogDocument]:
    """Parse decoded JSON: one catalog document or a list of them."""
    items = data if isinstance(data, list) else [data]
    documents = []
    for position, item in enumerate(items):
        try:
            documents.append(CatalogDocument.model_validate(item))
        except ValidationError as exc:
            raise CatalogError(
                _describe(exc, position if isinstance(data, list) else None)
            ) from None
    return documents


def load_catalog_file(path: str) -> list[CatalogDocument]:
    """Read, parse and strictly check a catalog file; raises :class:`CatalogError`."""
    try:
        with open(path, "rb") as handle:
            data = orjson.loads(handle.read())
    except OSError as exc:
        raise CatalogError(f"cannot read catalog file {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise CatalogError(f"catalog file {path} is not valid JSON: {exc}") from None
    documents = parse_documents(data)
    problems = [problem for document in documents for problem in reference_problems(document)]
    if problems:
        shown = "; ".join(problems[:10])
        more = f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""
        raise CatalogError(f"catalog file {path} is inconsistent: {shown}{more}")
    return documents


def reference_problems(document: CatalogDocument) -> list[str]:
    """Dangling references and duplicate ids within one document."""
    scope = f"{document.tenant_id}/{document.environment_id}"
    problems: list[str] = []
    meters = {meter.id for meter in document.meters}
    prices = {price.id: price for price in document.prices}
    customers = {customer.id for customer in document.customers}
    features = {feature.id for feature in document.features}
    for kind, ids in (
        ("customer", [c.id for c in document.customers]),
        ("meter", [m.id for m in document.meters]),
        ("feature", [f.id for f in document.features]),
        ("customer external_id", [c.external_id for c in document.customers if c.external_id]),
        ("price", [p.id for p in document.prices]),
        ("subscription", [s.id for s in document.subscriptions]),
        ("line item", [li.id for s in document.subscriptions for li in s.line_items]),
    ):
        problems += [f"{scope}: duplicate {kind} id {i!r}" for i in _duplicates(ids)]
    for feature in document.features:
        if feature.meter_id and feature.meter_id not in meters:
            problems.append(f"{scope}: feature {feature.id!r} references unknown meter")
    for price in document.prices:
        if price.meter_id and price.meter_id not in meters:
            problems.append(f"{scope}: price {price.id!r} references unknown meter")
    for subscription in document.subscriptions:
        if subscription.customer_id not in customers:
            problems.append(
                f"{scope}: subscription {subscription.id!r} references unknown customer "
                f"{subscription.customer_id!r}"
            )
        for item in subscription.line_items:
            item_price = prices.get(item.price_id)
            if item_price is None:
                problems.append(f"{scope}: line item {item.id!r} references unknown price")
                continue
            meter_id = item.meter_id or item_price.meter_id
            if not meter_id or meter_id not in meters:
                problems.append(f"{scope}: line item {item.id!r} has no known meter")
            if item.feature_id and item.feature_id not in features:
                problems.append(f"{scope}: line item {item.id!r} references unknown feature")
    return problems


def _duplicates(ids: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    repeated: list[str] = []
    for identifier in ids:
        if identifier in seen:
            repeated.append(identifier)
        seen.add(identifier)
    return repeated


def _describe(error: ValidationError, position: int | None) -> str:
    where = f"document {position}: " if position is not None else ""
    lines = []
    for item in error.errors()[:10]:
        location = ".".join(str(part) for part in item["loc"]) or "(document)"
        lines.append(f"{where}{location}: {item['msg']}")
    more = f" (+{error.error_count() - 10} more)" if error.error_count() > 10 else ""
    return "invalid catalog: " + "; ".join(lines) + more
