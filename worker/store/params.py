"""Parameter and result types of the read side (the seed's params / result types).

Frozen dataclasses, validated on construction (``ValueError`` naming the
field): a read never starts from parameters it cannot honour. Every read is
scoped by ``tenant_id`` and ``environment_id`` (required, non-empty); time
ranges are half-open ``[start_time, end_time)`` with aware datetimes.

Property filters are ``{key: [values, ...]}``: an event matches when, for
every key (AND), the key is present and its canonical value
(:func:`worker.domain.metering.canonical_value`, the meter-match form) is one
of the values (OR). A key with no values matches nothing.

Also here: how these parameters are encoded for SQL (:func:`filters_param`,
:func:`window_step`), shared by the read modules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from worker.domain.events import Event, ProcessedEvent
from worker.domain.metering import NEEDS_FIELD, AggregationType, WindowSize
from worker.domain.money import quantize

PropertyFilters = Mapping[str, Sequence[str]]

#: Largest page of :func:`~worker.store.events_reads.get_events`.
MAX_PAGE_SIZE = 1000
#: Largest batch of :func:`~worker.store.events_reads.find_unprocessed_events`.
MAX_BATCH_SIZE = 10_000
#: Largest page of :func:`~worker.store.analytics.get_processed_events`.
MAX_PROCESSED_LIMIT = 10_000
#: Read-side parameters a caller controls are bounded, so that no request can
#: make a query (its parameters, its IN lists, its memory) grow without limit.
MAX_FILTER_KEYS = 64
MAX_FILTER_VALUES = 1_000
"""Values per filter key; also the length of ``feature_ids`` and ``sources`` lists."""
MAX_FILTER_TEXT = 1_024
"""Characters of one filter key or value (event ids and names are far shorter)."""
MAX_FILTER_GROUPS = 100

# -- validation helpers ------------------------------------------------------


def _require_scope(tenant_id: str, environment_id: str) -> None:
    if not tenant_id:
        raise ValueError("tenant_id is required")
    if not environment_id:
        raise ValueError("environment_id is required")


def _require_range(start_time: datetime, end_time: datetime) -> None:
    for name, value in (("start_time", start_time), ("end_time", end_time)):
        if value.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware (UTC), got {value!r}")
    if end_time < start_time:
        raise ValueError(f"end_time {end_time} is before start_time {start_time}")


def _require_between(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


def _require_filters(name: str, filters: PropertyFilters) -> None:
    if len(filters) > MAX_FILTER_KEYS:
        raise ValueError(f"{name} has {len(filters)} keys; at most {MAX_FILTER_KEYS}")
    for key, values in filters.items():
        if not isinstance(key, str) or isinstance(values, str):
            raise ValueError(f"{name} must map property keys to lists of strings")
        _require_strings(f"{name}[{key[:64]!r}]", values)
        if len(key) > MAX_FILTER_TEXT:
            raise ValueError(f"{name} key {key[:64]!r}... is longer than {MAX_FILTER_TEXT}")


def _require_strings(name: str, values: Sequence[str]) -> None:
    """A list of at most :data:`MAX_FILTER_VALUES` strings of bounded length."""
    if isinstance(values, str) or not all(isinstance(value, str) for value in values):
        raise ValueError(f"{name} values must be strings (canonical form)")
    if len(values) > MAX_FILTER_VALUES:
        raise ValueError(f"{name} has {len(values)} values; at most {MAX_FILTER_VALUES}")
    for value in values:
        if len(value) > MAX_FILTER_TEXT:
            raise ValueError(f"{name} value {value[:64]!r}... is longer than {MAX_FILTER_TEXT}")


# -- the scope of ranged reads ------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScopedRange:
    """A tenant and environment (required, non-empty) and the half-open event-time
    range ``[start_time, end_time)`` (aware datetimes, end not before start).

    The base of the ranged reads' parameters: they add their own fields after
    these four and check them in :meth:`_validate`.
    """

    tenant_id: str
    environment_id: str
    start_time: datetime
    end_time: datetime

    def __post_init__(self) -> None:
        _require_scope(self.tenant_id, self.environment_id)
        _require_range(self.start_time, self.end_time)
        self._validate()

    def _validate(self) -> None:
        """Check the fields a subclass adds (``ValueError`` naming the field)."""


@dataclass(frozen=True, slots=True)
class PeriodParams:
    """One customer's subscription in one billing period, in one tenant and
    environment: what ``GetPeriodCost`` and ``GetPeriodFeatureTotals`` read."""

    tenant_id: str
    environment_id: str
    customer_id: str
    subscription_id: str
    period_id: int


# -- usage -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageParams:
    """What :func:`~worker.store.usage.get_usage` aggregates (the seed's ``UsageParams``).

    ``property_name`` is the field read by every aggregation but COUNT.
    ``window_size`` adds per-window results; ``bucket_size`` (MAX only) makes
    MAX the sum over buckets of each bucket's maximum. ``multiplier`` applies
    to SUM_WITH_MULTIPLIER (default 1; at most 15 decimal places, > 0).
    WEIGHTED_SUM weighs each value by ``(end_time - ts) / (end_time - start_time)``:
    the query range is the period.
    """

    tenant_id: str
    environment_id: str
    event_name: str
    aggregation: AggregationType
    start_time: datetime
    end_time: datetime
    property_name: str = ""
    window_size: WindowSize | None = None
    bucket_size: WindowSize | None = None
    customer_id: str = ""
    external_customer_id: str = ""
    filters: PropertyFilters = field(default_factory=dict)
    multiplier: Decimal | None = None

    def __post_init__(self) -> None:
        _require_scope(self.tenant_id, self.environment_id)
        _require_range(self.start_time, self.end_time)
        if not self.event_name.strip():
            raise ValueError("event_name is required")
        if self.aggregation in NEEDS_FIELD and not self.property_name:
            raise ValueError(f"{self.aggregation} needs property_name")
        if self.bucket_size is not None and self.aggregation is not AggregationType.MAX:
            raise ValueError("bucket_size applies to MAX only")
        if self.multiplier is not None:
            if not self.multiplier.is_finite() or self.multiplier <= 0:
                raise ValueError(f"multiplier must be > 0, got {self.multiplier}")
            if quantize(self.multiplier) != self.multiplier:
                raise ValueError("multiplier has more than 15 decimal places")
        _require_filters("filters", self.filters)


@dataclass(frozen=True, slots=True)
class FilterGroup:
    """A named set of property filters; the highest ``priority`` matching group wins.

    ``id`` is the caller's name for the group (the seed uses the price id).
    Empty ``filters`` match every event.
    """

    id: str
    priority: int
    filters: PropertyFilters = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require_filters(f"filter group {self.id!r}", self.filters)


@dataclass(frozen=True, slots=True)
class UsageWithFiltersParams:
    """:class:`UsageParams` split over filter groups (the seed's ``UsageWithFiltersParams``).

    Each event counts in exactly one group: the matching group with the highest
    ``priority``; on equal priority the one listed first. Group ids must be unique.
    """

    usage: UsageParams
    filter_groups: Sequence[FilterGroup]

    def __post_init__(self) -> None:
        if len(self.filter_groups) > MAX_FILTER_GROUPS:
            raise ValueError(
                f"{len(self.filter_groups)} filter groups; at most {MAX_FILTER_GROUPS}"
            )
        ids = [group.id for group in self.filter_groups]
        if len(set(ids)) != len(ids):
            raise ValueError("filter group ids must be unique")

    def by_priority(self) -> list[FilterGroup]:
        """The groups, highest priority first (stable: list order breaks ties)."""
        return sorted(self.filter_groups, key=lambda group: -group.priority)


@dataclass(frozen=True, slots=True)
class UsageResult:
    """The value of one window (``window_start`` as :func:`~worker.domain.windows.window_start`)."""

    window_start: datetime
    value: Decimal


@dataclass(frozen=True, slots=True)
class AggregationResult:
    """An aggregate over ``[start, end)`` and, with a window size, per window.

    ``windows`` holds only windows that have events, in time order.
    ``filter_group_id`` is set by :func:`~worker.store.usage.get_usage_with_filters`.
    """

    event_name: str
    aggregation: AggregationType
    value: Decimal
    windows: tuple[UsageResult, ...] = ()
    filter_group_id: str = ""


# -- raw events --------------------------------------------------------------


class SortOrder(StrEnum):
    ASC = "asc"
    DESC = "desc"


@dataclass(frozen=True, slots=True)
class EventIterator:
    """A keyset cursor: the position of one event in ``(timestamp, id)`` order."""

    timestamp: datetime
    id: str

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            raise ValueError("cursor timestamp must be timezone-aware (UTC)")

    @classmethod
    def of(cls, event: Event) -> EventIterator:
        return cls(event.timestamp, event.id)


@dataclass(frozen=True, slots=True)
class GetEventsParams(ScopedRange):
    """A page of raw events (the seed's ``GetEventsParams``).

    ``iter_first`` returns events after it in ``(timestamp, id)`` order (newer),
    ``iter_last`` events before it (older); the page holds the ``page_size``
    events nearest the cursor, presented in ``order``. With both, events
    strictly between. ``order`` sorts by ``(timestamp, id)``; the only sort key
    is the timestamp (keyset paging needs a total order). ``event_name``,
    ``event_id``, ``external_customer_id`` and ``source`` filter when non-empty.
    ``count_total`` also counts every event the filters match (cursor and offset
    ignored).
    """

    event_name: str = ""
    external_customer_id: str = ""
    event_id: str = ""
    source: str = ""
    property_filters: PropertyFilters = field(default_factory=dict)
    iter_first: EventIterator | None = None
    iter_last: EventIterator | None = None
    page_size: int = 50
    offset: int = 0
    order: SortOrder = SortOrder.DESC
    count_total: bool = False

    def _validate(self) -> None:
        _require_between("page_size", self.page_size, 1, MAX_PAGE_SIZE)
        _require_between("offset", self.offset, 0, 1_000_000)
        _require_filters("property_filters", self.property_filters)
        SortOrder(self.order)


@dataclass(frozen=True, slots=True)
class EventsPage:
    """Events of one page in the requested order; ``total`` when ``count_total`` was asked."""

    events: tuple[Event, ...]
    total: int | None = None


@dataclass(frozen=True, slots=True)
class FindUnprocessedEventsParams(ScopedRange):
    """Raw events in ``[start_time, end_time)`` with no processed row, by ``(timestamp, id)``.

    ``after`` is the last event of the previous batch (None for the first).
    """

    external_customer_id: str = ""
    event_name: str = ""
    batch_size: int = 1000
    after: EventIterator | None = None

    def _validate(self) -> None:
        _require_between("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)


# -- processed events --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetProcessedEventsParams(ScopedRange):
    """Priced rows by event time in ``[start_time, end_time)``, newest first.

    Id filters apply when non-empty; ``offset`` / ``limit`` page; ``count_total``
    also counts every matching row.
    """

    customer_id: str = ""
    subscription_id: str = ""
    meter_id: str = ""
    feature_id: str = ""
    price_id: str = ""
    offset: int = 0
    limit: int = 100
    count_total: bool = False

    def _validate(self) -> None:
        _require_between("limit", self.limit, 1, MAX_PROCESSED_LIMIT)
        _require_between("offset", self.offset, 0, 10_000_000)


@dataclass(frozen=True, slots=True)
class ProcessedEventsPage:
    """Rows of one page; ``total`` when ``count_total`` was asked."""

    rows: tuple[ProcessedEvent, ...]
    total: int | None = None


class AnalyticsGroup(StrEnum):
    """What :func:`~worker.store.analytics.get_detailed_usage_analytics` may group by."""

    SOURCE = "source"
    FEATURE_ID = "feature_id"


@dataclass(frozen=True, slots=True)
class UsageAnalyticsParams(ScopedRange):
    """Detailed usage analytics over priced rows (the seed's ``UsageAnalyticsParams``).

    Rows with event time in ``[start_time, end_time)``; ``feature_ids`` and
    ``sources`` filter when non-empty; ``property_filters`` match the raw
    event's properties. ``group_by`` is a subset of :class:`AnalyticsGroup`
    (empty: one group of everything); ``window_size`` adds time-series points.
    """

    customer_id: str = ""
    external_customer_id: str = ""
    feature_ids: Sequence[str] = ()
    sources: Sequence[str] = ()
    group_by: Sequence[AnalyticsGroup] = (AnalyticsGroup.FEATURE_ID,)
    window_size: WindowSize | None = None
    property_filters: PropertyFilters = field(default_factory=dict)

    def _validate(self) -> None:
        for group in self.group_by:
            AnalyticsGroup(group)  # ValueError for anything else
        _require_filters("property_filters", self.property_filters)
        if isinstance(self.feature_ids, str) or isinstance(self.sources, str):
            raise ValueError("feature_ids and sources are lists of strings")
        _require_strings("feature_ids", self.feature_ids)
        _require_strings("sources", self.sources)


@dataclass(frozen=True, slots=True)
class UsageAnalytic:
    """Usage and cost of one (source, feature) (the seed's ``UsageAnalytic``)."""

    source: str
    feature_id: str
    usage: Decimal
    cost: Decimal


@dataclass(frozen=True, slots=True)
class UsageAnalyticPoint:
    """One window of a time series."""

    window_start: datetime
    usage: Decimal
    cost: Decimal
    event_count: int


@dataclass(frozen=True, slots=True)
class DetailedUsageAnalytic:
    """Usage, cost and time series of one group (the seed's ``DetailedUsageAnalytic``).

    ``feature_id`` / ``source`` are "" when not grouped by. ``meter_id``,
    ``event_name`` and ``currency`` are the group's single value, "" when it
    has several. Feature names and units live in the catalog, not here.
    ``event_count`` counts distinct events.
    """

    feature_id: str
    source: str
    meter_id: str
    event_name: str
    currency: str
    total_usage: Decimal
    total_cost: Decimal
    event_count: int
    points: tuple[UsageAnalyticPoint, ...] = ()


# -- SQL encoding --------------------------------------------------------------

#: Window width in seconds; WEEK (-1) and MONTH (-2) are calendar based; 0 = one window.
_WINDOW_STEP_S: dict[WindowSize, int] = {
    WindowSize.MINUTE: 60,
    WindowSize.MIN15: 15 * 60,
    WindowSize.MIN30: 30 * 60,
    WindowSize.HOUR: 3600,
    WindowSize.HOUR3: 3 * 3600,
    WindowSize.HOUR6: 6 * 3600,
    WindowSize.HOUR12: 12 * 3600,
    WindowSize.DAY: 86_400,
    WindowSize.WEEK: -1,
    WindowSize.MONTH: -2,
}


def window_step(size: WindowSize | None) -> int:
    """The ``{step:Int64}`` the read SQL's window expression takes for ``size``.

    That expression (epoch-aligned seconds, ``toMonday``, ``toStartOfMonth``,
    all in UTC) gives :func:`worker.domain.windows.window_start`.
    """
    return 0 if size is None else _WINDOW_STEP_S[WindowSize(size)]


def filters_param(filters: PropertyFilters) -> list[tuple[str, list[str]]]:
    """Property filters as an ``Array(Tuple(String, Array(String)))`` parameter value."""
    return [(key, list(values)) for key, values in sorted(filters.items())]
