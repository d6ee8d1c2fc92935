"""The catalog document format (DESIGN.md §8) and its validation.

A catalog document holds one tenant/environment's customers, meters, features,
prices and subscriptions (with their line items). Documents are parsed into
frozen pydantic models; malformed input raises :class:`CatalogError` with a
readable, located message naming the entity (type and id) and the field.

The format is strict (DESIGN.md §8): an unknown field anywhere is an error (a
``free_unit`` typo must never silently drop free units), statuses, billing
models, tier modes, periods, aggregation types and rounding modes are closed
sets, and a price that cannot be rated (tiers out of order, a missing amount,
bad package settings) is rejected here, where it is written, rather than
skipped at run time. Cross references are checked by
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
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from worker.domain.metering import MAX_EVENT_QUANTITY, AggregationType, WindowSize
from worker.domain.periods import BillingPeriodUnit
from worker.domain.pricing import BillingModel, TierMode


class CatalogError(ValueError):
    """The catalog input is malformed or inconsistent; the message says where."""


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: Price amounts (``amount``, ``unit_amount``, ``flat_amount``, a meter's
#: ``multiplier``) are below this in magnitude; quantities (``up_to``,
#: ``free_units``, ``divide_by``) below :data:`QUANTITY_LIMIT`, the per-event
#: quantity limit. Stored values hold 23 integer digits and 15 decimals
#: (``Decimal(38, 15)``): the bounds catch a mistyped price or tier (a few extra
#: zeros) at load instead of letting it inflate every bill of a period, and
#: keep ordinary period totals far from the stored range. What still crosses
#: it (a huge quantity times a large price) is refused per event at rating
#: time and dead-lettered (``value_out_of_range``), never stored wrong.
AMOUNT_LIMIT = Decimal(10) ** 12
QUANTITY_LIMIT = MAX_EVENT_QUANTITY
#: Decimal places a catalog number may have: the stored scale. More would be
#: rounded away silently when rated.
MAX_PLACES = 15


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _finite(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite number")
    if abs(value) >= AMOUNT_LIMIT:
        raise ValueError(f"must be below {AMOUNT_LIMIT:,.0f} in magnitude (a typo?)")
    if _places(value) > MAX_PLACES:
        raise ValueError(f"must have at most {MAX_PLACES} decimal places")
    return value


def _non_negative(value: Decimal) -> Decimal:
    if not value.is_finite() or value < 0:
        raise ValueError("must be a finite number >= 0")
    if value >= QUANTITY_LIMIT:
        raise ValueError(f"must be below {QUANTITY_LIMIT:,.0f} (the per-event quantity limit)")
    if _places(value) > MAX_PLACES:
        raise ValueError(f"must have at most {MAX_PLACES} decimal places")
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
Amount = Annotated[Decimal, AfterValidator(_finite)]
NonNegative = Annotated[Decimal, AfterValidator(_non_negative)]
Identifier = Annotated[str, Field(min_length=1, max_length=256)]


def _status_text(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


#: Subscription statuses (a closed set); only some of them bill usage (see
#: :class:`~worker.domain.catalog_index.SubscriptionTerms`).
SubscriptionStatus = Annotated[
    Literal[
        "active",
        "trialing",
        "cancelled",
        "canceled",
        "paused",
        "past_due",
        "unpaid",
        "incomplete",
        "incomplete_expired",
        "draft",
    ],
    BeforeValidator(_status_text),
]


class _Doc(BaseModel):
    # forbid: an unknown field is a typo until proven otherwise (module docstring).
    model_config = ConfigDict(frozen=True, extra="forbid")


class CustomerDoc(_Doc):
    id: Identifier
    external_id: str = ""


class AggregationDoc(_Doc):
    type: AggregationType
    field: str | None = None
    multiplier: Amount | None = None
    bucket_size: WindowSize | None = None

    @model_validator(mode="after")
    def _measurable(self) -> AggregationDoc:
        if self.type is not AggregationType.COUNT and not self.field:
            raise ValueError(f"{self.type.value} needs a 'field' to read the quantity from")
        if self.type is AggregationType.SUM_WITH_MULTIPLIER and self.multiplier is None:
            raise ValueError("SUM_WITH_MULTIPLIER needs a 'multiplier'")
        return self


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
    unit_amount: Amount  # required: a tier without a price must not become free
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

    @model_validator(mode="after")
    def _ratable(self) -> PriceDoc:
        """The checks of :class:`~worker.domain.pricing.PriceTable`, with the field named."""
        model = self.billing_model
        if model is BillingModel.TIERED:
            _check_tiers(self.tiers or [])
            for name in ("amount", "transform_quantity"):
                if getattr(self, name) is not None:
                    raise ValueError(f"'{name}' is not used by TIERED prices (set it to null)")
            return self
        if self.amount is None:
            raise ValueError(f"'amount' is required for {model.value} prices")
        if self.tiers is not None or self.tier_mode is not None:
            raise ValueError(f"'tiers' and 'tier_mode' are only for TIERED prices, not {model}")
        if model is BillingModel.PACKAGE:
            if self.transform_quantity is None:
                raise ValueError("'transform_quantity' with 'divide_by' is required for PACKAGE")
            if self.transform_quantity.divide_by <= 0:
                raise ValueError("'transform_quantity.divide_by' must be > 0")
        elif self.transform_quantity is not None:
            raise ValueError("'transform_quantity' is only for PACKAGE prices (set it to null)")
        return self


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
    status: SubscriptionStatus = "active"
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


def _check_tiers(tiers: list[TierDoc]) -> None:
    if not tiers:
        raise ValueError("TIERED needs at least one tier in 'tiers'")
    previous = Decimal(0)
    for position, tier in enumerate(tiers):
        if tier.up_to is None:
            if position != len(tiers) - 1:
                raise ValueError(
                    f"tiers.{position}.up_to: only the last tier may be unbounded (null)"
                )
            continue
        if tier.up_to <= previous:
            raise ValueError(
                f"tiers.{position}.up_to: {tier.up_to} must be greater than "
                f"{'0' if position == 0 else f'the previous tier up_to {previous}'} "
                "(tiers in increasing up_to order)"
            )
        previous = tier.up_to


def parse_documents(data: Any) -> list[CatalogDocument]:
    """Parse decoded JSON: one catalog document or a list of them."""
    items = data if isinstance(data, list) else [data]
    documents = []
    for position, item in enumerate(items):
        try:
            documents.append(CatalogDocument.model_validate(item))
        except ValidationError as exc:
            raise CatalogError(
                _describe(exc, item, position if isinstance(data, list) else None)
            ) from None
    return documents


#: Largest catalog file read (bytes): the whole file is parsed in memory. A
#: catalog beyond it belongs on the catalog topic, one entity per message.
MAX_CATALOG_FILE_BYTES = 256 * 1024 * 1024


def load_catalog_file(path: str, *, max_bytes: int | None = None) -> list[CatalogDocument]:
    """Read, parse and strictly check a catalog file; raises :class:`CatalogError`.

    Files over ``max_bytes`` (default :data:`MAX_CATALOG_FILE_BYTES`) are refused
    before they are parsed.
    """
    max_bytes = MAX_CATALOG_FILE_BYTES if max_bytes is None else max_bytes
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
            if len(raw) > max_bytes:
                raise CatalogError(
                    f"catalog file {path} is larger than {max_bytes} bytes, the limit of one "
                    "catalog file: split it (by tenant or environment) and publish the parts "
                    "to the catalog topic with events-worker catalog publish"
                )
            data = orjson.loads(raw)
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


#: How entity lists are named in messages (list field -> entity type).
_ENTITY_LISTS = {
    "customers": "customer",
    "meters": "meter",
    "features": "feature",
    "prices": "price",
    "subscriptions": "subscription",
    "line_items": "line item",
}


def locate(data: Any, loc: tuple[int | str, ...], *, root: str = "") -> str:
    """Name the entity a validation error location points into: ``price 'p_api'``.

    ``data`` is the raw JSON the location indexes; ``root`` names it when it is
    itself an entity (the catalog topic validates one entity at a time).
    """
    names = [root] if root else []
    if isinstance(data, dict) and not root:
        scope = f"{data.get('tenant_id')}/{data.get('environment_id', '')}"
        names.append(f"tenant/environment {scope}")
    node = data
    for step, following in zip(loc, (*loc[1:], None), strict=False):
        node = _child(node, step)
        if step in _ENTITY_LISTS and isinstance(following, int):
            entity = _child(node, following)
            identifier = entity.get("id") if isinstance(entity, dict) else None
            label = repr(identifier) if isinstance(identifier, str) else f"#{following}"
            names.append(f"{_ENTITY_LISTS[str(step)]} {label}")
    return ", ".join(reversed(names)) if names else "(catalog)"


def _child(node: Any, step: int | str) -> Any:
    if isinstance(node, dict) and isinstance(step, str):
        return node.get(step)
    if isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
        return node[step]
    return None


def explain(item: Any) -> str:
    """One pydantic error as a sentence: what is wrong and what to do."""
    kind, field = item["type"], str(item["loc"][-1]) if item["loc"] else ""
    if kind == "extra_forbidden":
        return f"unknown field {field!r}: fix its spelling or remove it"
    if kind in ("enum", "literal_error"):
        expected = item.get("ctx", {}).get("expected", "")
        return f"{field!r}: unknown value {item['input']!r}, expected one of {expected}"
    if kind == "missing":
        return f"{field!r} is required"
    message = str(item["msg"]).removeprefix("Value error, ")
    return f"{field!r}: {message}" if field and not isinstance(item["loc"][-1], int) else message


def describe_errors(error: ValidationError, data: Any, *, prefix: str = "", root: str = "") -> str:
    """A validation error as one line: every problem (up to 10) located and explained."""
    lines = []
    for item in error.errors()[:10]:
        location = ".".join(str(part) for part in item["loc"]) or (
            "(value)" if root else "(document)"
        )
        entity = locate(data, item["loc"], root=root)
        lines.append(f"{prefix}{location} ({entity}): {explain(item)}")
    more = f" (+{error.error_count() - 10} more)" if error.error_count() > 10 else ""
    return "; ".join(lines) + more


def _describe(error: ValidationError, data: Any, position: int | None) -> str:
    where = f"document {position}: " if position is not None else ""
    return "invalid catalog: " + describe_errors(error, data, prefix=where)
