//! The catalog as flat tables, and routing an event to its line items
//! (`CatalogIndex.resolve` + `metering.measure` of the reference).
//!
//! Python loads and validates the catalog and hands the core the tables
//! (`worker/core_catalog.py`) once per load. Billing periods stay Python's
//! (IANA zones, DST, month-end clamping): each subscription carries the periods
//! Python computed, `[start, end)` in epoch µs, over a window around now; an
//! event outside them makes [`Catalog::resolve`] ask for the period
//! ([`Resolution::NeedPeriods`]) and Python adds it with `add_period`.

use std::borrow::Cow;

use crate::decimal::{parse_py_decimal, Decimal};
use crate::fxhash::{FxHashMap, FxHashSet};
use crate::json::Value;
use crate::key_table::{prefetch_line, slot_size, KeyTable};
use crate::measure::{self, canonical_value, Aggregation, EventIds, MeterRule};
use crate::text::same_text;

/// `catalog_index.UnresolvedReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    UnknownCustomer,
    NoActiveSubscription,
    NoMatchingLineItem,
}

impl Unresolved {
    pub fn code(self) -> &'static str {
        match self {
            Unresolved::UnknownCustomer => "unknown_customer",
            Unresolved::NoActiveSubscription => "no_active_subscription",
            Unresolved::NoMatchingLineItem => "no_matching_line_item",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// `active` or `trialing`.
    Active,
    /// `cancelled` or `canceled`: active until `cancelled_at`, if set.
    Cancelled,
    Other,
}

/// What `SubscriptionTerms.active_at` reads of a subscription (copied into
/// each of its routes, so routing does not read the subscription).
#[derive(Debug, Clone, Copy)]
struct Activity {
    status: Status,
    start_us: i64,
    end_us: Option<i64>,
    cancelled_us: Option<i64>,
}

impl Activity {
    /// `SubscriptionTerms.active_at`.
    fn active_at(&self, ts: i64) -> bool {
        if ts < self.start_us || self.end_us.is_some_and(|end| ts >= end) {
            return false;
        }
        match self.status {
            Status::Active => true,
            Status::Cancelled => self.cancelled_us.is_some_and(|at| ts < at),
            Status::Other => false,
        }
    }
}

/// One subscription: its terms and the billing periods Python computed.
#[derive(Debug)]
pub struct Subscription {
    activity: Activity,
    /// Disjoint `[start, end)` periods, sorted by start (the first one starts
    /// at the subscription's start, as `BillingCycle.period_at` clamps it).
    periods: Vec<(i64, i64)>,
    /// Indices into `Catalog::routes` of this subscription's line items.
    routes: Vec<u32>,
}

/// The period of `periods` (sorted, disjoint) containing `ts`: `Ok(None)`
/// before `start_us`, `Err(())` when Python has not computed it yet.
fn period_at(periods: &[(i64, i64)], start_us: i64, ts: i64) -> Result<Option<(i64, i64)>, ()> {
    if ts < start_us {
        return Ok(None);
    }
    let after = periods.partition_point(|(start, _)| *start <= ts);
    match after.checked_sub(1).map(|i| periods[i]) {
        Some((start, end)) if ts < end => Ok(Some((start, end))),
        _ => Err(()),
    }
}

/// A compiled meter (`metering.Meter`).
#[derive(Debug)]
pub struct Meter {
    pub id: String,
    pub event_name: String,
    pub aggregation: Aggregation,
    pub field: String,
    pub multiplier: Decimal,
    /// AND across keys, OR within a key's canonical values.
    pub filters: Vec<(String, FxHashSet<String>)>,
}

/// A usage line item bound to its subscription and meter (`LineItemBinding`).
#[derive(Debug)]
pub struct LineItem {
    pub id: String,
    pub subscription: usize,
    pub start_us: i64,
    pub end_us: Option<i64>,
    pub meter: usize,
}

/// One (event, line item) pair with the event's period and measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub line_item: usize,
    pub period: (i64, i64),
    pub measurement: measure::Measurement,
}

impl Match {
    /// `Period.period_id`: the start in epoch milliseconds, floored.
    pub fn period_id(&self) -> i64 {
        self.period.0.div_euclid(1000)
    }
}

/// What [`Catalog::resolve`] answers for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Matched(Vec<Match>),
    Unresolved(Unresolved),
    /// Subscriptions whose period at the event's time Python must add first.
    NeedPeriods(Vec<usize>),
}

/// An event's customer as [`Catalog::locate`] found it (`None`: unknown),
/// for [`Catalog::resolve_located`].
#[derive(Debug, Clone, Copy)]
pub struct Located(Option<CustomerRecord>);

/// The fields of a decoded event that routing reads.
pub struct EventView<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub environment_id: &'a str,
    pub event_name: &'a str,
    pub customer_id: &'a str,
    pub external_customer_id: &'a str,
    pub timestamp_us: i64,
    /// The `properties` object's members, as decoded.
    pub properties: &'a [(Cow<'a, str>, Value<'a>)],
}

/// A key of several strings that no choice of their contents can confuse
/// (each part's length in LEB128, then its bytes: a prefix-free encoding),
/// written into `out` (reused across lookups: no allocation per event).
fn key_in<'b>(out: &'b mut Vec<u8>, parts: &[&str]) -> &'b [u8] {
    out.clear();
    for part in parts {
        let mut length = part.len();
        while length >= 0x80 {
            out.push((length as u8 & 0x7f) | 0x80);
            length >>= 7;
        }
        out.push(length as u8);
        out.extend_from_slice(part.as_bytes());
    }
    out.as_slice()
}

fn key(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    key_in(&mut out, parts);
    out
}

/// A bad table entry (a bug of the Python side, never of the data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError(pub String);

/// One (tenant, environment, customer id) of the tables (what the rare
/// unresolved path reads; routing reads the key tables' records).
#[derive(Debug, Default)]
struct Customer {
    /// In the catalog's customers (not only named by a subscription).
    listed: bool,
    subscriptions: Vec<usize>,
    /// The customer's line items in catalog order (indices into `routes`,
    /// while building).
    routes: Vec<u32>,
}

/// A customer as the key tables hold it: what routing needs to find it, in
/// the key's cache line.
#[derive(Debug, Clone, Copy, Default)]
struct CustomerRecord {
    /// Index into `Catalog::customers`.
    customer: u32,
    /// Its routes are `routes[first_route..first_route + route_count]`.
    first_route: u32,
    route_count: u32,
    /// Its id is `customer_ids[id_start..id_start + id_len]`.
    id_start: u32,
    id_len: u32,
    listed: bool,
}

const _: () = assert!(slot_size::<CustomerRecord>() == 64);

/// A line item as routing reads it: the line item's window, its
/// subscription's terms and (up to [`INLINE_PERIODS`]) periods, copied
/// here so that a customer's routes are one contiguous run of memory.
#[derive(Debug, Clone, Copy)]
struct Route {
    line_item: u32,
    meter: u32,
    subscription: u32,
    /// The subscription's period count; above [`INLINE_PERIODS`] they are
    /// read from the subscription.
    period_count: u32,
    start_us: i64,
    end_us: Option<i64>,
    activity: Activity,
    periods: [(i64, i64); INLINE_PERIODS],
}

/// Periods copied into each route: the window around now holds one or two
/// of a monthly cycle, plus the ones late events added.
const INLINE_PERIODS: usize = 4;

/// The catalog tables of one or more catalog documents.
#[derive(Debug, Default)]
pub struct Catalog {
    /// (tenant, environment, customer id) -> the customer's record.
    by_id: KeyTable<CustomerRecord>,
    /// (tenant, environment, external id) -> the customer's record.
    by_external_id: KeyTable<CustomerRecord>,
    customers: Vec<Customer>,
    /// The customers' ids, one after the other (`CustomerRecord::d`).
    customer_ids: String,
    /// Every customer's routes, each customer's next to each other.
    routes: Vec<Route>,
    subscriptions: Vec<Subscription>,
    meters: Vec<Meter>,
    line_items: Vec<LineItem>,
}

/// One subscription row of the tables.
pub struct SubscriptionRow<'a> {
    pub tenant_id: &'a str,
    pub environment_id: &'a str,
    pub customer_id: &'a str,
    /// `SubscriptionTerms.status`: already stripped and lower-cased by Python.
    pub status: &'a str,
    pub start_us: i64,
    pub end_us: Option<i64>,
    pub cancelled_us: Option<i64>,
}

/// One meter row of the tables.
pub struct MeterRow<'a> {
    pub id: &'a str,
    pub event_name: &'a str,
    pub aggregation: &'a str,
    pub field: &'a str,
    pub multiplier: &'a str,
    pub filters: Vec<(&'a str, Vec<&'a str>)>,
}

/// One line item row of the tables (indices into the other tables).
pub struct LineItemRow<'a> {
    pub id: &'a str,
    pub subscription: usize,
    pub start_us: i64,
    pub end_us: Option<i64>,
    pub meter: usize,
}

impl Catalog {
    /// Build from the tables; customers are `(tenant, environment, id, external id)`.
    pub fn new(
        customers: &[(&str, &str, &str, &str)],
        subscriptions: &[SubscriptionRow<'_>],
        meters: &[MeterRow<'_>],
        line_items: &[LineItemRow<'_>],
    ) -> Result<Catalog, TableError> {
        let mut catalog = Catalog::default();
        // (tenant, environment, id) -> customer, and each customer's id.
        let mut by_id: FxHashMap<Vec<u8>, u32> = FxHashMap::default();
        let mut ids: Vec<&str> = Vec::new();
        let mut customer_index = |catalog: &mut Catalog, tenant, environment, id| {
            let next = catalog.customers.len() as u32;
            let index = *by_id.entry(key(&[tenant, environment, id])).or_insert(next);
            if index == next {
                catalog.customers.push(Customer::default());
                ids.push(id);
            }
            index
        };
        let mut external: Vec<(Vec<u8>, u32)> = Vec::new();
        for (tenant, environment, id, external_id) in customers {
            let index = customer_index(&mut catalog, tenant, environment, id);
            catalog.customers[index as usize].listed = true;
            if !external_id.is_empty() {
                external.push((key(&[tenant, environment, external_id]), index));
            }
        }
        let mut owners = Vec::new();
        for (index, row) in subscriptions.iter().enumerate() {
            let status = match row.status {
                "active" | "trialing" => Status::Active,
                "cancelled" | "canceled" => Status::Cancelled,
                _ => Status::Other,
            };
            catalog.subscriptions.push(Subscription {
                activity: Activity {
                    status,
                    start_us: row.start_us,
                    end_us: row.end_us,
                    cancelled_us: row.cancelled_us,
                },
                periods: Vec::new(),
                routes: Vec::new(),
            });
            let customer = customer_index(
                &mut catalog,
                row.tenant_id,
                row.environment_id,
                row.customer_id,
            );
            owners.push(customer);
            catalog.customers[customer as usize]
                .subscriptions
                .push(index);
        }
        for row in meters {
            let aggregation = Aggregation::from_code(row.aggregation)
                .ok_or_else(|| TableError(format!("unknown aggregation {}", row.aggregation)))?;
            let multiplier = parse_py_decimal(row.multiplier)
                .ok_or_else(|| TableError(format!("bad multiplier {}", row.multiplier)))?;
            let filters = row
                .filters
                .iter()
                .map(|(k, values)| {
                    (
                        k.to_string(),
                        values.iter().map(|v| v.to_string()).collect(),
                    )
                })
                .collect();
            catalog.meters.push(Meter {
                id: row.id.to_string(),
                event_name: row.event_name.to_string(),
                aggregation,
                field: row.field.to_string(),
                multiplier,
                filters,
            });
        }
        for (index, row) in line_items.iter().enumerate() {
            let (Some(&customer), true) = (
                owners.get(row.subscription),
                row.meter < catalog.meters.len(),
            ) else {
                return Err(TableError(format!("line item {} out of range", row.id)));
            };
            catalog.line_items.push(LineItem {
                id: row.id.to_string(),
                subscription: row.subscription,
                start_us: row.start_us,
                end_us: row.end_us,
                meter: row.meter,
            });
            catalog.customers[customer as usize]
                .routes
                .push(index as u32);
        }
        // Each customer's routes next to each other, in catalog order.
        let mut records = Vec::with_capacity(catalog.customers.len());
        for (index, customer) in catalog.customers.iter_mut().enumerate() {
            let first = catalog.routes.len() as u32;
            for item in std::mem::take(&mut customer.routes) {
                let line_item = &catalog.line_items[item as usize];
                let subscription = &mut catalog.subscriptions[line_item.subscription];
                subscription.routes.push(catalog.routes.len() as u32);
                catalog.routes.push(Route {
                    line_item: item,
                    meter: line_item.meter as u32,
                    subscription: line_item.subscription as u32,
                    period_count: 0,
                    start_us: line_item.start_us,
                    end_us: line_item.end_us,
                    activity: subscription.activity,
                    periods: [(0, 0); INLINE_PERIODS],
                });
            }
            let id_at = catalog.customer_ids.len() as u32;
            catalog.customer_ids.push_str(ids[index]);
            let id_len = u32::try_from(ids[index].len())
                .map_err(|_| TableError("customer id too long".to_string()))?;
            records.push(CustomerRecord {
                customer: index as u32,
                first_route: first,
                route_count: catalog.routes.len() as u32 - first,
                id_start: id_at,
                id_len,
                listed: customer.listed,
            });
        }
        catalog.by_id = KeyTable::new(
            by_id
                .iter()
                .map(|(key, &index)| (key.as_slice(), records[index as usize])),
        );
        catalog.by_external_id = KeyTable::new(
            external
                .iter()
                .map(|(key, index)| (key.as_slice(), records[*index as usize])),
        );
        Ok(catalog)
    }

    pub fn line_item(&self, index: usize) -> &LineItem {
        &self.line_items[index]
    }

    pub fn meter(&self, index: usize) -> &Meter {
        &self.meters[index]
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// Add a period Python computed for `subscription` (ignored when known).
    pub fn add_period(
        &mut self,
        subscription: usize,
        start_us: i64,
        end_us: i64,
    ) -> Result<(), TableError> {
        let record = self
            .subscriptions
            .get_mut(subscription)
            .ok_or_else(|| TableError(format!("subscription {subscription} out of range")))?;
        let periods = &mut record.periods;
        let at = periods.partition_point(|(start, _)| *start < start_us);
        if periods.get(at).is_some_and(|p| p.0 == start_us) {
            return Ok(());
        }
        let overlaps_before = at > 0 && periods[at - 1].1 > start_us;
        let overlaps_after = periods.get(at).is_some_and(|p| p.0 < end_us);
        if end_us <= start_us || overlaps_before || overlaps_after {
            return Err(TableError(format!(
                "period [{start_us}, {end_us}) of subscription {subscription} overlaps"
            )));
        }
        periods.insert(at, (start_us, end_us));
        // The routes' copies follow.
        let mut inline = [(0, 0); INLINE_PERIODS];
        let count = periods.len();
        if count <= INLINE_PERIODS {
            inline[..count].copy_from_slice(periods);
        }
        for &route in &record.routes {
            let route = &mut self.routes[route as usize];
            route.period_count = count as u32;
            route.periods = inline;
        }
        Ok(())
    }

    /// The record of the catalog customer the event refers to
    /// (`customer_id_for`); `key` holds the event's `customer_key` (it may
    /// be overwritten).
    fn customer_of(&self, event: &EventView<'_>, key: &mut Vec<u8>) -> Option<CustomerRecord> {
        if !event.customer_id.is_empty() {
            let found = self.by_id.get(key);
            if let Some(customer) = found.filter(|customer| customer.listed) {
                return Some(*customer);
            }
            let (tenant, environment) = (event.tenant_id, event.environment_id);
            key_in(key, &[tenant, environment, event.external_customer_id]);
        }
        self.by_external_id.get(key).copied()
    }

    /// Write into `key` the key of `event`'s first customer lookup: by id
    /// when it has one, else by external id (what `prefetch_customer` and
    /// `locate` take, so it is written once per event).
    pub fn customer_key(event: &EventView<'_>, key: &mut Vec<u8>) {
        let (tenant, environment) = (event.tenant_id, event.environment_id);
        if event.customer_id.is_empty() {
            key_in(key, &[tenant, environment, event.external_customer_id]);
        } else {
            key_in(key, &[tenant, environment, event.customer_id]);
        }
    }

    /// A hint that `event` will be routed soon (no effect on any answer):
    /// start loading the key table slot its customer lookup reads first.
    /// `key`: the event's `customer_key`.
    pub fn prefetch_customer(&self, event: &EventView<'_>, key: &[u8]) {
        if event.customer_id.is_empty() {
            self.by_external_id.prefetch(key);
        } else {
            self.by_id.prefetch(key);
        }
    }

    /// Find `event`'s customer and start loading its routes and id (best
    /// issued once `prefetch_customer`'s slot has arrived, a few events
    /// before `resolve_located`). `key` holds the event's `customer_key`
    /// (it may be overwritten).
    pub fn locate(&self, event: &EventView<'_>, key: &mut Vec<u8>) -> Located {
        let found = self.customer_of(event, key);
        if let Some(customer) = &found {
            let first = customer.first_route as usize;
            let routes = &self.routes[first..first + customer.route_count as usize];
            let start: *const u8 = routes.as_ptr().cast();
            for offset in (0..std::mem::size_of_val(routes)).step_by(64) {
                prefetch_line(start.wrapping_add(offset));
            }
            let id = self.customer_ids.as_ptr();
            prefetch_line(id.wrapping_add(customer.id_start as usize));
        }
        Located(found)
    }

    /// The id of the customer `record` stands for.
    fn customer_id(&self, record: &CustomerRecord) -> &str {
        let start = record.id_start as usize;
        &self.customer_ids[start..start + record.id_len as usize]
    }

    /// The route's period containing `ts` (see [`period_at`]).
    fn route_period(&self, route: &Route, ts: i64) -> Result<Option<(i64, i64)>, ()> {
        let count = route.period_count as usize;
        let periods = if count <= INLINE_PERIODS {
            &route.periods[..count]
        } else {
            &self.subscriptions[route.subscription as usize].periods
        };
        period_at(periods, route.activity.start_us, ts)
    }

    /// Every active usage line item the event hits, with its period and
    /// measurement; and the event's catalog customer id (`""` when unknown),
    /// borrowed from the catalog. `buffer` is scratch space for lookup keys.
    pub fn resolve<'s>(
        &'s self,
        event: &EventView<'s>,
        buffer: &mut Vec<u8>,
    ) -> (&'s str, Resolution) {
        let mut matches = Vec::new();
        let (customer, resolution) = self.resolve_into(event, buffer, &mut matches);
        match resolution {
            Resolution::Matched(_) => (customer, Resolution::Matched(matches)),
            other => (customer, other),
        }
    }

    /// `resolve` with the matches appended to `matches` (cleared first) and
    /// `Resolution::Matched` left empty: the caller's vectors are reused
    /// across events, so routing allocates nothing per event.
    pub fn resolve_into<'s>(
        &'s self,
        event: &EventView<'s>,
        buffer: &mut Vec<u8>,
        matches: &mut Vec<Match>,
    ) -> (&'s str, Resolution) {
        Catalog::customer_key(event, buffer);
        self.resolve_located(event, self.locate(event, buffer), matches)
    }

    /// `resolve_into` of an event `locate` found the customer of.
    pub fn resolve_located<'s>(
        &'s self,
        event: &EventView<'s>,
        located: Located,
        matches: &mut Vec<Match>,
    ) -> (&'s str, Resolution) {
        matches.clear();
        let Some(customer) = located.0 else {
            return ("", Resolution::Unresolved(Unresolved::UnknownCustomer));
        };
        let customer_id = self.customer_id(&customer);
        let ts = event.timestamp_us;
        let properties = event.properties;
        let ids = EventIds::new(event.tenant_id, event.environment_id, event.id);
        // Measuring is pure: a match measured before a missing period turns
        // up is simply dropped with the others.
        let mut need = Vec::new();
        let first = customer.first_route as usize;
        let routes = &self.routes[first..first + customer.route_count as usize];
        for route in routes {
            let meter = &self.meters[route.meter as usize];
            if !same_text(&meter.event_name, event.event_name) {
                continue;
            }
            let item_active = ts >= route.start_us && route.end_us.is_none_or(|end| ts < end);
            if !(item_active && route.activity.active_at(ts)) {
                continue;
            }
            let period = match self.route_period(route, ts) {
                Ok(Some(period)) => period,
                Ok(None) => continue,
                Err(()) => {
                    need.push(route.subscription as usize);
                    continue;
                }
            };
            if !need.is_empty() {
                continue;
            }
            let passes = meter.filters.iter().all(|(name, values)| {
                let value = properties.iter().find(|(k, _)| same_text(k, name));
                let value = value.map(|(_, v)| v);
                match value {
                    // canonical_value of a string or a bool, without allocating it.
                    Some(Value::Str(text)) => values.contains(text.as_ref()),
                    Some(Value::Bool(flag)) => {
                        values.contains(if *flag { "true" } else { "false" })
                    }
                    other => canonical_value(other).is_some_and(|c| values.contains(&c)),
                }
            });
            if !passes {
                continue;
            }
            let rule = MeterRule {
                id: &meter.id,
                aggregation: meter.aggregation,
                field: &meter.field,
                multiplier: &meter.multiplier,
            };
            let measurement = measure::measure(&rule, &ids, properties, ts, period);
            matches.push(Match {
                line_item: route.line_item as usize,
                period,
                measurement,
            });
        }
        if !need.is_empty() {
            matches.clear();
            need.dedup();
            return (customer_id, Resolution::NeedPeriods(need));
        }
        if matches.is_empty() {
            // The reason only when there is no match (rare).
            let reason = if self.customers[customer.customer as usize]
                .subscriptions
                .iter()
                .any(|&s| self.subscriptions[s].activity.active_at(ts))
            {
                Unresolved::NoMatchingLineItem
            } else {
                Unresolved::NoActiveSubscription
            };
            return (customer_id, Resolution::Unresolved(reason));
        }
        (customer_id, Resolution::Matched(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let subscription = |status| SubscriptionRow {
            tenant_id: "t",
            environment_id: "e",
            customer_id: "c",
            status,
            start_us: 100,
            end_us: None,
            cancelled_us: Some(500),
        };
        let meter = MeterRow {
            id: "m",
            event_name: "api",
            aggregation: "COUNT",
            field: "",
            multiplier: "1",
            filters: vec![("region", vec!["us"])],
        };
        let item = LineItemRow {
            id: "li",
            subscription: 1,
            start_us: 0,
            end_us: None,
            meter: 0,
        };
        let mut catalog = Catalog::new(
            &[("t", "e", "c", "x")],
            &[subscription("paused"), subscription("cancelled")],
            &[meter],
            &[item],
        )
        .unwrap();
        catalog.add_period(1, 100, 300).unwrap();
        catalog
    }

    fn resolve(catalog: &Catalog, customer: &str, ts: i64, properties: &str) -> Resolution {
        let parsed = match crate::json::parse(properties) {
            Ok(Value::Object(members)) => members,
            _ => Vec::new(),
        };
        let event = EventView {
            id: "e1",
            tenant_id: "t",
            environment_id: "e",
            event_name: "api",
            customer_id: "",
            external_customer_id: customer,
            timestamp_us: ts,
            properties: &parsed,
        };
        catalog.resolve(&event, &mut Vec::new()).1
    }

    #[test]
    fn routes_by_customer_status_period_and_filter() {
        let catalog = catalog();
        let us = r#"{"region":"us"}"#;
        let Resolution::Matched(found) = resolve(&catalog, "x", 299, us) else {
            panic!("matched expected")
        };
        assert_eq!((found[0].line_item, found[0].period), (0, (100, 300)));
        assert_eq!(found[0].measurement.quantity, crate::fixed::ONE);
        let unresolved = |reason| Resolution::Unresolved(reason);
        assert_eq!(
            resolve(&catalog, "y", 299, us),
            unresolved(Unresolved::UnknownCustomer)
        );
        assert_eq!(
            resolve(&catalog, "x", 299, r#"{"region":"eu"}"#),
            unresolved(Unresolved::NoMatchingLineItem)
        );
        // Cancelled at 500: inactive from then on; before the start, too.
        assert_eq!(
            resolve(&catalog, "x", 500, us),
            unresolved(Unresolved::NoActiveSubscription)
        );
        assert_eq!(
            resolve(&catalog, "x", 99, us),
            unresolved(Unresolved::NoActiveSubscription)
        );
        // Active, but its period is not in the table yet: Python adds it.
        assert_eq!(
            resolve(&catalog, "x", 300, us),
            Resolution::NeedPeriods(vec![1])
        );
    }

    #[test]
    fn routes_find_every_period_inline_or_on_the_subscription() {
        let mut catalog = catalog();
        let us = r#"{"region":"us"}"#;
        let period_at = |catalog: &Catalog, ts| match resolve(catalog, "x", ts, us) {
            Resolution::Matched(found) => Some(found[0].period),
            _ => None,
        };
        let added = [(300, 400), (400, 450), (450, 480), (480, 500), (500, 600)];
        for (count, &(start, end)) in added.iter().enumerate() {
            // Before: not known yet (inactive from 500 on, cancelled); after:
            // found, as are all before it (inline up to INLINE_PERIODS, then
            // from the subscription).
            let before = if start < 500 {
                Resolution::NeedPeriods(vec![1])
            } else {
                Resolution::Unresolved(Unresolved::NoActiveSubscription)
            };
            assert_eq!(resolve(&catalog, "x", start, us), before, "{count}");
            catalog.add_period(1, start, end).unwrap();
            for &(start, end) in &added[..=count] {
                let expected = (start < 500).then_some((start, end)); // cancelled at 500
                assert_eq!(period_at(&catalog, start), expected);
                assert_eq!(period_at(&catalog, end - 1), expected);
            }
            assert_eq!(period_at(&catalog, 299), Some((100, 300)));
        }
    }

    #[test]
    fn customers_with_long_keys_are_found() {
        let long = "x".repeat(40);
        let catalog = Catalog::new(&[("t", "e", "c", &long)], &[], &[], &[]).unwrap();
        let resolved = resolve(&catalog, &long, 0, "{}");
        assert_eq!(
            resolved,
            Resolution::Unresolved(Unresolved::NoActiveSubscription)
        );
        assert_eq!(
            resolve(&catalog, &long[1..], 0, "{}"),
            Resolution::Unresolved(Unresolved::UnknownCustomer)
        );
    }

    #[test]
    fn periods_must_not_overlap() {
        let mut catalog = catalog();
        assert!(catalog.add_period(1, 100, 300).is_ok()); // already known
        assert!(catalog.add_period(1, 200, 400).is_err());
        assert!(catalog.add_period(1, 300, 300).is_err());
        assert!(catalog.add_period(1, 300, 600).is_ok());
        assert!(catalog.add_period(9, 0, 1).is_err());
    }
}
