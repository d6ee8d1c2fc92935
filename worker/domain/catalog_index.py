"""In-memory catalog index: which active line items does an event hit?

Built once per catalog version from :class:`CatalogDocument` objects; immutable
afterwards but for the bounded memo of :meth:`CatalogIndex.resolve`, which never
changes an answer. Lookups are two dict probes keyed by (tenant, environment,
customer[, event name]); no scan of subscriptions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple

from worker.domain.catalog import CatalogDocument, MeterDoc, PriceDoc, SubscriptionDoc
from worker.domain.events import Event
from worker.domain.metering import AggregationType, Meter, MeterFilter
from worker.domain.money import ONE
from worker.domain.periods import BillingCycle, Period
from worker.domain.pricing import (
    BillingModel,
    PackageRounding,
    PriceError,
    PriceTable,
    Tier,
    TierMode,
)
from worker.domain.rating_reads import StateKey

_ACTIVE_STATUSES = frozenset({"active", "trialing"})
_CANCELLED_STATUSES = frozenset({"cancelled", "canceled"})


class UnresolvedReason(StrEnum):
    """Why an event was stored raw without processed rows (metric label)."""

    UNKNOWN_CUSTOMER = "unknown_customer"
    NO_ACTIVE_SUBSCRIPTION = "no_active_subscription"
    NO_MATCHING_LINE_ITEM = "no_matching_line_item"


@dataclass(frozen=True, slots=True)
class SubscriptionTerms:
    """When a subscription bills usage, and its billing cycle."""

    id: str
    customer_id: str
    status: str
    start_date: datetime
    end_date: datetime | None
    cancelled_at: datetime | None
    cycle: BillingCycle

    def edges(self) -> tuple[datetime, ...]:
        """Instants at which :meth:`active_at` may change."""
        dates = (self.start_date, self.end_date, self.cancelled_at)
        return tuple(date for date in dates if date is not None)

    def active_at(self, ts: datetime) -> bool:
        """Active/trialing, or cancelled after ``ts``; and ``start <= ts < end``."""
        if ts < self.start_date or (self.end_date is not None and ts >= self.end_date):
            return False
        if self.status in _ACTIVE_STATUSES:
            return True
        return (
            self.status in _CANCELLED_STATUSES
            and self.cancelled_at is not None
            and ts < self.cancelled_at
        )


@dataclass(frozen=True, slots=True)
class LineItemBinding:
    """A usage line item with everything needed to meter and rate it."""

    tenant_id: str
    environment_id: str
    subscription: SubscriptionTerms
    line_item_id: str
    start_date: datetime
    end_date: datetime | None
    free_units: Decimal
    price: PriceTable
    meter: Meter
    feature_id: str

    def edges(self) -> tuple[datetime, ...]:
        """Instants at which the line item's own activity may change."""
        return (self.start_date,) if self.end_date is None else (self.start_date, self.end_date)

    def active_at(self, ts: datetime) -> bool:
        if ts < self.start_date or (self.end_date is not None and ts >= self.end_date):
            return False
        return self.subscription.active_at(ts)


class Match(NamedTuple):
    """An (event, line item) pair with the event's billing period."""

    binding: LineItemBinding
    period: Period
    state_key: StateKey
    """The rating state it updates (the event's tenant and environment)."""


class _Route(NamedTuple):
    """Memo of a resolution, valid for events of one key in ``[valid_from, valid_until)``.

    Inside the window the set of active line items and their periods cannot
    change: the window is bounded by every date at which a candidate line item,
    subscription or period starts or ends.
    """

    valid_from: datetime
    valid_until: datetime
    matches: tuple[Match, ...]
    no_match_reason: UnresolvedReason
    resolution: Resolution
    """The answer when no meter filter applies (shared, built once per route)."""

    @property
    def filtered(self) -> bool:
        """Whether a meter filter decides which matches apply to an event."""
        return any(match.binding.meter.filters for match in self.matches)


class Resolution(NamedTuple):
    """Result of :meth:`CatalogIndex.resolve`: matches, or why there are none."""

    customer_id: str
    matches: tuple[Match, ...] = ()
    unresolved: UnresolvedReason | None = None


@dataclass(frozen=True, slots=True)
class FeatureInfo:
    id: str
    name: str
    unit: str
    unit_plural: str


_CustomerKey = tuple[str, str, str]
_BindingKey = tuple[str, str, str, str]
_RouteKey = tuple[str, str, str, str, str]
DEFAULT_MAX_ROUTES = 100_000
"""Routes memoised at most (least recently used evicted first). A route holds
event-supplied ids (customer, event name) and its matches: a few hundred bytes
for ordinary ids, and the ids are bounded by the message size limit."""
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


class RoutingTables(NamedTuple):
    """What :meth:`CatalogIndex.resolve` routes by, read-only (for the compiled core).

    ``external_ids`` maps (tenant, environment, external id) to the customer id;
    ``bindings`` is keyed by (tenant, environment, customer id, event name) and
    lists line items in the order :meth:`CatalogIndex.resolve` matches them.
    """

    customers: frozenset[tuple[str, str, str]]
    external_ids: Mapping[tuple[str, str, str], str]
    subscriptions: Mapping[tuple[str, str, str], tuple[SubscriptionTerms, ...]]
    bindings: Mapping[tuple[str, str, str, str], tuple[LineItemBinding, ...]]


class CatalogIndex:
    """Immutable lookup structure over one or more catalog documents."""

    def __init__(
        self, documents: Iterable[CatalogDocument], *, max_routes: int = DEFAULT_MAX_ROUTES
    ) -> None:
        self._max_routes = max(1, max_routes)
        self._customers: set[_CustomerKey] = set()
        self._by_external_id: dict[_CustomerKey, str] = {}
        self._bindings: dict[_BindingKey, tuple[LineItemBinding, ...]] = {}
        self._subscriptions: dict[_CustomerKey, tuple[SubscriptionTerms, ...]] = {}
        self._line_items: dict[tuple[str, str, str], LineItemBinding] = {}
        self.features: dict[tuple[str, str, str], FeatureInfo] = {}
        self.problems: list[str] = []
        self._routes: dict[_RouteKey, _Route] = {}
        bindings: dict[_BindingKey, list[LineItemBinding]] = defaultdict(list)
        subscriptions: dict[_CustomerKey, list[SubscriptionTerms]] = defaultdict(list)
        for document in documents:
            self._add_document(document, bindings, subscriptions)
        self._bindings = {key: tuple(value) for key, value in bindings.items()}
        self._subscriptions = {key: tuple(value) for key, value in subscriptions.items()}

    def routing_tables(self) -> RoutingTables:
        """The lookup tables, for building the compiled core's copy (``worker.core_catalog``)."""
        return RoutingTables(
            frozenset(self._customers), self._by_external_id, self._subscriptions, self._bindings
        )

    @property
    def line_item_count(self) -> int:
        return len(self._line_items)

    @property
    def customer_count(self) -> int:
        return len(self._customers)

    @property
    def memoised_routes(self) -> int:
        """Routes held by the :meth:`resolve` memo (at most ``max_routes``)."""
        return len(self._routes)

    def line_item(
        self, tenant_id: str, environment_id: str, line_item_id: str
    ) -> LineItemBinding | None:
        return self._line_items.get((tenant_id, environment_id, line_item_id))

    def customer_id_for(self, event: Event) -> str | None:
        """The catalog customer id the event refers to, or None when unknown."""
        tenant, environment = event.tenant_id, event.environment_id
        if event.customer_id and (tenant, environment, event.customer_id) in self._customers:
            return event.customer_id
        return self._by_external_id.get((tenant, environment, event.external_customer_id))

    def resolve(self, event: Event) -> Resolution:
        """Every active usage line item the event hits, with the event's period.

        Memoised per (tenant, environment, customer ids, event name) for the
        time window in which the answer cannot change, so the common case is
        one dict probe, two comparisons and the meter filters. At most
        ``max_routes`` are kept, least recently used evicted first: the keys
        are event-supplied, so without a bound they could grow without one.
        """
        ts = event.timestamp
        key = (
            event.tenant_id,
            event.environment_id,
            event.customer_id,
            event.external_customer_id,
            event.event_name,
        )
        route = self._routes.pop(key, None)  # re-inserted below: dict order is recency
        if route is None or not route.valid_from <= ts < route.valid_until:
            route = self._route(event)
            if len(self._routes) >= self._max_routes:
                del self._routes[next(iter(self._routes))]  # the least recently used
        self._routes[key] = route
        if not route.filtered:
            return route.resolution
        matches = tuple(m for m in route.matches if m.binding.meter.matches(event))
        if matches:
            return Resolution(route.resolution.customer_id, matches)
        return Resolution(route.resolution.customer_id, unresolved=route.no_match_reason)

    def _route(self, event: Event) -> _Route:
        customer_id = self.customer_id_for(event)
        if customer_id is None:
            unknown = UnresolvedReason.UNKNOWN_CUSTOMER
            return _Route(
                valid_from=_EARLIEST,
                valid_until=_LATEST,
                matches=(),
                no_match_reason=unknown,
                resolution=Resolution(customer_id="", unresolved=unknown),
            )
        ts = event.timestamp
        tenant, environment = event.tenant_id, event.environment_id
        edges: list[datetime] = []
        subscriptions = self._subscriptions.get((tenant, environment, customer_id), ())
        for subscription in subscriptions:
            edges += subscription.edges()
        matches = []
        for binding in self._bindings.get((tenant, environment, customer_id, event.event_name), ()):
            edges += binding.edges()
            if binding.active_at(ts):
                period = binding.subscription.cycle.period_at(ts)
                if period is not None:
                    edges += (period.start, period.end)
                    key = StateKey(tenant, environment, binding.line_item_id, period.period_id)
                    matches.append(Match(binding=binding, period=period, state_key=key))
        valid_from = max((edge for edge in edges if edge <= ts), default=_EARLIEST)
        valid_until = min((edge for edge in edges if edge > ts), default=_LATEST)
        reason = (
            UnresolvedReason.NO_MATCHING_LINE_ITEM
            if any(subscription.active_at(ts) for subscription in subscriptions)
            else UnresolvedReason.NO_ACTIVE_SUBSCRIPTION
        )
        resolution = (
            Resolution(customer_id, tuple(matches))
            if matches
            else Resolution(customer_id, unresolved=reason)
        )
        return _Route(
            valid_from=valid_from,
            valid_until=valid_until,
            matches=tuple(matches),
            no_match_reason=reason,
            resolution=resolution,
        )

    def _add_document(
        self,
        document: CatalogDocument,
        bindings: dict[_BindingKey, list[LineItemBinding]],
        subscriptions: dict[_CustomerKey, list[SubscriptionTerms]],
    ) -> None:
        tenant, environment = document.tenant_id, document.environment_id
        for customer in document.customers:
            self._customers.add((tenant, environment, customer.id))
            if customer.external_id:
                self._by_external_id[(tenant, environment, customer.external_id)] = customer.id
        meters = {meter.id: compile_meter(meter) for meter in document.meters}
        prices: dict[str, PriceTable] = {}
        for price in document.prices:
            try:
                prices[price.id] = compile_price(price)
            except PriceError as exc:
                self.problems.append(f"{tenant}/{environment}: {exc}")
        feature_by_meter: dict[str, str] = {}
        for feature in document.features:
            self.features[(tenant, environment, feature.id)] = FeatureInfo(
                feature.id, feature.name, feature.unit, feature.unit_plural
            )
            if feature.meter_id:
                feature_by_meter.setdefault(feature.meter_id, feature.id)
        price_meter = {price.id: price.meter_id for price in document.prices}
        for subscription_doc in document.subscriptions:
            terms = _subscription_terms(subscription_doc)
            subscriptions[(tenant, environment, terms.customer_id)].append(terms)
            for item in subscription_doc.line_items:
                price_table = prices.get(item.price_id)
                meter_id = item.meter_id or price_meter.get(item.price_id) or ""
                meter = meters.get(meter_id)
                if price_table is None or meter is None:
                    missing = (
                        f"price {item.price_id!r} unknown or unratable"
                        if price_table is None
                        else f"meter {meter_id!r} unknown"
                    )
                    self.problems.append(
                        f"{tenant}/{environment}: line item {item.id!r} skipped: {missing}"
                    )
                    continue
                binding = LineItemBinding(
                    tenant_id=tenant,
                    environment_id=environment,
                    subscription=terms,
                    line_item_id=item.id,
                    start_date=item.start_date or terms.start_date,
                    end_date=item.end_date,
                    free_units=item.free_units,
                    price=price_table,
                    meter=meter,
                    feature_id=item.feature_id or feature_by_meter.get(meter.id, ""),
                )
                bindings[(tenant, environment, terms.customer_id, meter.event_name)].append(binding)
                self._line_items[(tenant, environment, item.id)] = binding


def compile_meter(doc: MeterDoc) -> Meter:
    aggregation = doc.aggregation
    multiplier = ONE
    if (
        aggregation.type is AggregationType.SUM_WITH_MULTIPLIER
        and aggregation.multiplier is not None
    ):
        multiplier = aggregation.multiplier
    return Meter(
        id=doc.id,
        event_name=doc.event_name,
        aggregation=aggregation.type,
        field=aggregation.field or "",
        multiplier=multiplier,
        bucket_size=aggregation.bucket_size if aggregation.type is AggregationType.MAX else None,
        filters=tuple(MeterFilter(f.key, frozenset(f.values)) for f in doc.filters),
    )


def compile_price(doc: PriceDoc) -> PriceTable:
    """Frozen price table; raises :class:`PriceError` when it cannot be rated."""
    model = doc.billing_model
    if model in (BillingModel.FLAT_FEE, BillingModel.PACKAGE) and doc.amount is None:
        raise PriceError(f"price {doc.id}: {model.value} needs an amount")
    tiers = tuple(
        Tier(up_to=tier.up_to, unit_amount=tier.unit_amount, flat_amount=tier.flat_amount)
        for tier in doc.tiers or ()
    )
    transform = doc.transform_quantity
    if model is BillingModel.PACKAGE and transform is None:
        raise PriceError(f"price {doc.id}: PACKAGE needs transform_quantity.divide_by")
    return PriceTable(
        price_id=doc.id,
        currency=doc.currency.lower(),
        model=model,
        amount=doc.amount if doc.amount is not None else Decimal(0),
        tier_mode=doc.tier_mode or TierMode.VOLUME,
        tiers=tiers,
        package_size=transform.divide_by if transform else Decimal(1),
        package_rounding=PackageRounding(transform.round) if transform else PackageRounding.UP,
    )


def _subscription_terms(doc: SubscriptionDoc) -> SubscriptionTerms:
    cycle = BillingCycle(
        anchor=doc.billing_anchor or doc.start_date,
        unit=doc.billing_period,
        count=doc.billing_period_count,
        timezone=doc.timezone,
        start_date=doc.start_date,
    )
    return SubscriptionTerms(
        id=doc.id,
        customer_id=doc.customer_id,
        status=doc.status.strip().lower(),
        start_date=doc.start_date,
        end_date=doc.end_date,
        cancelled_at=doc.cancelled_at,
        cycle=cycle,
    )
