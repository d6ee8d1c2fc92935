//! The fused batch step: decoded events -> routed and measured rows held in
//! the core -> rated with the core's state, without a Python object per row.
//!
//! The two-phase shape of the pipeline's `prepare` stays, because the store
//! reads stay in Python: `prepare` (route and measure, hold the rows), then
//! `missing_states` / `load_states`, `lookup_keys` / `remember`, then `rate`.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::mem::take;

use crate::aggregate::Snapshot;
use crate::catalog::{Catalog, EventView, Located, Resolution, Unresolved};
use crate::columns::StringColumn;
use crate::event::{BatchProperties, RawColumns};
use crate::fxhash::FxHashMap;
use crate::json::Value;
use crate::key_table::prefetch_line;
use crate::measure::Aggregation;
use crate::period_rating::{Delta, OutOfRange};
use crate::rater::{Outcomes, Pending, Rater, Slot, StateKey, Terms, NO_SLOT};
use crate::sha256::UniqueHash;

/// How many events ahead `prepare` starts loading a customer's key table
/// slot, and (once that has arrived) looks the customer up and starts
/// loading its routes.
const SLOT_AHEAD: usize = 8;
const LOCATE_AHEAD: usize = 4;
/// The events `Engine::prepare` holds ahead (`SLOT_AHEAD + 1`, rounded up
/// to a power of two for the index arithmetic).
const WINDOW: usize = (SLOT_AHEAD + 1).next_power_of_two();

/// One event of `Engine::prepare`'s lookahead window: its view and
/// customer key once staged, its customer once located.
struct Ahead<'a> {
    view: Option<EventView<'a>>,
    key: Vec<u8>,
    located: Option<Located>,
}

impl<'a> Ahead<'a> {
    /// Hold `view` and its customer key.
    fn stage(&mut self, view: EventView<'a>) {
        Catalog::customer_key(&view, &mut self.key);
        self.view = Some(view);
    }
}

/// A hint that `properties` will be read soon (no effect on any answer):
/// start loading the text of their first keys. Their keys mostly borrow from
/// the payload, which decoding last touched a whole batch ago; filters and
/// measuring compare them.
fn prefetch_property_keys(properties: &[(Cow<'_, str>, Value<'_>)]) {
    for (key, _) in properties.iter().take(PREFETCHED_KEYS) {
        prefetch_line(key.as_ptr());
    }
}

/// The keys `prefetch_property_keys` starts loading (an event has a few).
const PREFETCHED_KEYS: usize = 4;

/// Where a held row comes from (parallel to the held `Pending` rows).
#[derive(Debug, Clone, Copy)]
pub struct RowSource {
    /// Index of the event among the batch's decoded (accepted) events.
    pub event: usize,
    pub line_item: usize,
}

/// What `prepare` found besides the held rows.
#[derive(Debug, Default)]
pub struct Prepared {
    /// `(subscription, timestamp µs)` whose period Python must add first; when
    /// not empty nothing is held (call `prepare` again after adding them).
    pub need: Vec<(usize, i64)>,
    /// The catalog customer id per decoded event (`""` when unknown).
    pub customers: StringColumn,
    pub unresolved: Vec<(usize, Unresolved)>,
    pub missing_fields: usize,
}

/// The rows `rate` produced: per held row its delta (None: a redelivery, no
/// row) or its refusal.
pub type Rated = (Vec<Result<Option<Delta>, OutOfRange>>, Outcomes);

/// A state key inside the engine: the rank of the line item's (tenant,
/// environment, id) among all of them in `StateKey` order, and the period id.
/// Same order as the `StateKey` it stands for, without a string to hash or
/// allocate per row.
type RankKey = (u32, i64);

/// Per rank, the (tenant, environment, id) and the line item whose terms a
/// loaded state takes (`usize::MAX`: none, a line item only `held` names);
/// the rank of each name; the rank of each of `owners`' line items. Ranks
/// follow the names' order, which is the `StateKey` order.
#[allow(clippy::type_complexity)]
fn rank_tables(
    owners: &[(String, String, String)],
    held: HashSet<(String, String, String)>,
) -> (
    Vec<((String, String, String), usize)>,
    HashMap<(String, String, String), u32>,
    Vec<u32>,
) {
    let mut last: HashMap<(String, String, String), usize> =
        held.into_iter().map(|name| (name, usize::MAX)).collect();
    for (item, owner) in owners.iter().enumerate() {
        last.insert(owner.clone(), item);
    }
    let mut names: Vec<((String, String, String), usize)> = last.into_iter().collect();
    names.sort();
    let rank_of: HashMap<(String, String, String), u32> = names
        .iter()
        .enumerate()
        .map(|(rank, (name, _))| (name.clone(), rank as u32))
        .collect();
    let ranks = owners.iter().map(|owner| rank_of[owner]).collect();
    (names, rank_of, ranks)
}

/// Catalog tables, line item terms and the rating state of one consumer.
pub struct Engine {
    catalog: Catalog,
    /// Per catalog line item: its price, free units and aggregation.
    terms: Vec<Terms>,
    /// Per catalog line item: the rank of its (tenant, environment, id).
    ranks: Vec<u32>,
    /// Per rank: the (tenant, environment, id) and the line item whose terms
    /// a loaded state takes (the last one, as `CatalogIndex.line_item`).
    names: Vec<((String, String, String), usize)>,
    rank_of: HashMap<(String, String, String), u32>,
    rater: Rater<RankKey>,
    pending: Vec<Pending<RankKey>>,
    sources: Vec<RowSource>,
    /// Per decoded event of the prepared batch: its partition (the caller's numbering).
    event_partitions: Vec<u32>,
    /// Per held row its state's slot in the rater (`NO_SLOT`: none held), as
    /// of the rater's `(epoch, created)` in `resolved_at` (None: not resolved
    /// since `prepare`). Resolved once per batch: the passes after it index
    /// the rater's states instead of probing its map per row.
    slots: Vec<Slot>,
    resolved_at: Option<(u64, u64)>,
    /// The held rows (ascending) whose (partition, state) `rate` reported
    /// new, when it made `touched`'s reports (None: `touched` makes them).
    reported_in_rate: Option<Vec<usize>>,
    /// The states `missing` last answered, in its order: what `coverable_at`
    /// and `load_at` name by position; and the position of each.
    missing: Vec<RankKey>,
    missing_positions: FxHashMap<RankKey, usize>,
    /// Per state without a held state (a `touched` before `rate`): the
    /// partitions `touched` reported it for; a held state keeps its own
    /// (`Rater::report`), until it is dropped.
    reported: FxHashMap<RankKey, Vec<u32>>,
}

impl Engine {
    /// `terms` are aligned with the catalog's line items; `owners` names each
    /// line item's (tenant, environment, id) for state loading.
    pub fn new(
        catalog: Catalog,
        terms: Vec<Terms>,
        owners: Vec<(String, String, String)>,
        rater: Rater<RankKey>,
    ) -> Engine {
        let (names, rank_of, ranks) = rank_tables(&owners, HashSet::new());
        Engine {
            catalog,
            terms,
            ranks,
            names,
            rank_of,
            rater,
            pending: Vec::new(),
            sources: Vec::new(),
            event_partitions: Vec::new(),
            slots: Vec::new(),
            resolved_at: None,
            missing: Vec::new(),
            missing_positions: FxHashMap::default(),
            reported_in_rate: None,
            reported: FxHashMap::default(),
        }
    }

    /// Use a new catalog version (arguments as `new`) from the next `prepare`
    /// on, keeping the rating state: states keep the price they were created
    /// with and stay keyed by (tenant, environment, line item id, period), as
    /// the reference's `UsageRater.replace_index`. Call between batches.
    pub fn replace_catalog(
        &mut self,
        catalog: Catalog,
        terms: Vec<Terms>,
        owners: Vec<(String, String, String)>,
    ) {
        let held: HashSet<(String, String, String)> = self
            .rater
            .keys()
            .iter()
            .map(|key| self.names[key.0 as usize].0.clone())
            .collect();
        let (names, rank_of, ranks) = rank_tables(&owners, held);
        let old = std::mem::replace(&mut self.names, names);
        let names = &self.names;
        self.rater.rekey(
            |key: &RankKey| (rank_of[&old[key.0 as usize].0], key.1),
            |key: &RankKey| {
                terms
                    .get(names[key.0 as usize].1)
                    .is_some_and(|t| t.aggregation == Aggregation::CountUnique)
            },
        );
        (self.catalog, self.terms, self.ranks, self.rank_of) = (catalog, terms, ranks, rank_of);
        self.pending.clear();
        self.sources.clear();
        self.resolved_at = None;
        self.missing.clear();
        self.missing_positions.clear();
        // Ranks changed: report every state again (reporting twice is harmless).
        self.reported.clear();
        self.rater.unreport_all();
    }

    fn state_key(&self, key: &RankKey) -> StateKey {
        let ((tenant, environment, id), _) = &self.names[key.0 as usize];
        (tenant.clone(), environment.clone(), id.clone(), key.1)
    }

    fn rank_key(&self, key: &StateKey) -> Option<RankKey> {
        let name = (key.0.clone(), key.1.clone(), key.2.clone());
        Some((*self.rank_of.get(&name)?, key.3))
    }

    pub fn catalog_mut(&mut self) -> &mut Catalog {
        &mut self.catalog
    }

    pub fn rater(&self) -> &Rater<RankKey> {
        &self.rater
    }

    /// The held rows' period ids and unique hashes, and where each comes from.
    pub fn rows(&self) -> (Vec<(i64, &UniqueHash)>, &[RowSource]) {
        let rows = self
            .pending
            .iter()
            .map(|row| (row.key.1, &row.unique_hash))
            .collect();
        (rows, &self.sources)
    }

    /// Route and measure the decoded events; hold their rows for the next steps.
    /// `properties` are the decoded events' (`decode_event`'s, in the same order),
    /// `event_partitions` their partitions (any numbering; see `touched`).
    pub fn prepare(
        &mut self,
        columns: &RawColumns,
        properties: &BatchProperties<'_>,
        event_partitions: Vec<u32>,
    ) -> Prepared {
        let events = columns.len();
        let mut prepared = Prepared {
            customers: StringColumn::with_capacity(events, events * columns.customer_id.mean_len()),
            ..Prepared::default()
        };
        // The last batch's rows are done with: their room is reused (no fresh
        // pages per batch). Most events match one line item: room for that,
        // grown when more do.
        let (mut pending, mut sources) = (take(&mut self.pending), take(&mut self.sources));
        pending.clear();
        sources.clear();
        pending.reserve(events);
        sources.reserve(events);
        let mut matches = Vec::new();
        let count = properties.len().min(columns.len());
        let view = |event: usize| EventView {
            id: columns.id.get(event),
            tenant_id: columns.tenant_id.get(event),
            environment_id: columns.environment_id.get(event),
            event_name: columns.event_name.get(event),
            customer_id: columns.customer_id.get(event),
            external_customer_id: columns.external_customer_id.get(event),
            timestamp_us: columns.timestamp_us[event],
            properties: properties.get(event),
        };
        // Routing an event waits on memory (the customer's slot, then its
        // routes): those loads start a few events ahead. While `event` is
        // routed, `window` holds the events `event..=event + SLOT_AHEAD`
        // (each at its index modulo WINDOW): their views and customer keys,
        // and the customers of those up to `event + LOCATE_AHEAD`.
        let mut window: [Ahead<'_>; WINDOW] = std::array::from_fn(|_| Ahead {
            view: None,
            key: Vec::with_capacity(96),
            located: None,
        });
        for first in 0..count.min(SLOT_AHEAD) {
            window[first % WINDOW].stage(view(first));
        }
        for event in 0..count {
            if event + SLOT_AHEAD < count {
                let slot = &mut window[(event + SLOT_AHEAD) % WINDOW];
                slot.stage(view(event + SLOT_AHEAD));
                let next = slot.view.as_ref().expect("a staged event");
                self.catalog.prefetch_customer(next, &slot.key);
                prefetch_line(next.properties.as_ptr().cast());
            }
            let first = if event == 0 { 0 } else { event + LOCATE_AHEAD };
            for next in first..count.min(event + LOCATE_AHEAD + 1) {
                let Ahead { view, key, located } = &mut window[next % WINDOW];
                let next = view.as_ref().expect("a staged event");
                *located = Some(self.catalog.locate(next, key));
                prefetch_property_keys(next.properties);
            }
            let Ahead { view, located, .. } = &mut window[event % WINDOW];
            let view = view.take().expect("the view of this event");
            let customer = located.take().expect("the customer of this event");
            let (customer, resolution) =
                self.catalog.resolve_located(&view, customer, &mut matches);
            prepared.customers.push(customer);
            match resolution {
                Resolution::Unresolved(reason) => prepared.unresolved.push((event, reason)),
                Resolution::NeedPeriods(subscriptions) => prepared
                    .need
                    .extend(subscriptions.into_iter().map(|s| (s, view.timestamp_us))),
                Resolution::Matched(_) => {
                    for m in matches.drain(..) {
                        let period_id = m.period_id();
                        let line_item = m.line_item;
                        prepared.missing_fields += usize::from(m.measurement.field_missing);
                        let key: RankKey = (self.ranks[line_item], period_id);
                        sources.push(RowSource { event, line_item });
                        pending.push(Pending {
                            key,
                            terms: line_item,
                            event,
                            timestamp_us: view.timestamp_us,
                            quantity: m.measurement.quantity,
                            unique_hash: m.measurement.unique_hash,
                        });
                    }
                }
            }
        }
        if !prepared.need.is_empty() {
            pending.clear();
            sources.clear();
        }
        (self.pending, self.sources) = (pending, sources);
        self.event_partitions = event_partitions;
        self.resolved_at = None;
        prepared
    }

    /// The (partition, line item, period id) of the held rows whose (partition,
    /// state) was not reported before, each once, in row order. A pair stays
    /// reported until `drop_states` drops its state (or a catalog change
    /// renumbers the states): the caller keeps what it was told per partition
    /// and drops those states when it gives a partition up, so a batch costs
    /// Python work per *new* pair only.
    pub fn touched(&mut self) -> Vec<(u32, usize, i64)> {
        self.resolve_slots();
        let mut found = Vec::new();
        // Reports `rate` made: only the rows without a state are left here.
        let mut in_rate = self.reported_in_rate.take().map(Vec::into_iter);
        let mut next_in_rate = in_rate.as_mut().and_then(Iterator::next);
        let rows = self.pending.iter().zip(&self.sources).zip(&self.slots);
        for (i, ((row, source), &slot)) in rows.enumerate() {
            let new_in_rate = next_in_rate == Some(i);
            if new_in_rate {
                next_in_rate = in_rate.as_mut().and_then(Iterator::next);
            }
            // (A state dropped since `rate` leaves its rows without a slot:
            // they are reported below, as rows without a state are.)
            if in_rate.is_some() && slot != NO_SLOT {
                if new_in_rate {
                    found.push((
                        self.event_partitions[source.event],
                        source.line_item,
                        row.key.1,
                    ));
                }
                continue;
            }
            self.rater.prefetch_ahead(&self.slots, i);
            let partition = self.event_partitions[source.event];
            let new = if slot == NO_SLOT {
                let seen = self.reported.entry(row.key).or_default();
                !seen.contains(&partition) && {
                    seen.push(partition);
                    true
                }
            } else {
                // What was reported while the state was not held moves into it.
                if !self.reported.is_empty() {
                    for earlier in self.reported.remove(&row.key).unwrap_or_default() {
                        self.rater.report(slot, earlier);
                    }
                }
                self.rater.report(slot, partition)
            };
            if new {
                found.push((partition, source.line_item, row.key.1));
            }
        }
        found
    }

    /// Resolve the held rows' state slots (`slots`) unless they are current:
    /// after a drop or a catalog change all of them, after new states only
    /// the rows that had none.
    fn resolve_slots(&mut self) {
        if self.resolved_at.is_none() {
            // New rows since the last `rate`: its reports are not theirs.
            self.reported_in_rate = None;
        }
        let now = (self.rater.epoch(), self.rater.created());
        match self.resolved_at {
            Some(at) if at == now => {}
            Some((epoch, _)) if epoch == now.0 => {
                self.rater.refresh(&self.pending, &mut self.slots)
            }
            _ => self.rater.resolve(&self.pending, &mut self.slots),
        }
        self.resolved_at = Some(now);
    }

    pub fn missing_states(&mut self) -> HashSet<StateKey> {
        self.resolve_slots();
        let missing = Rater::missing_at(&self.pending, &self.slots);
        missing.iter().map(|key| self.state_key(key)).collect()
    }

    /// `missing_states`, each state once, in the order of the rows that
    /// first name them, which `coverable_at` and `load_at` refer to by
    /// position (until the next call). Per state: the line item of that row
    /// (whose (tenant, environment, id) the state key has), the period id,
    /// and the catalog line item whose terms a loaded state takes (None: no
    /// line item of the catalog has its name, so it is not loaded).
    pub fn missing(&mut self) -> Vec<(usize, i64, Option<usize>)> {
        self.resolve_slots();
        let mut found = Vec::new();
        self.missing.clear();
        self.missing_positions.clear();
        let rows = self.pending.iter().zip(&self.sources).zip(&self.slots);
        for ((row, source), &slot) in rows {
            if slot != NO_SLOT {
                continue;
            }
            if let Entry::Vacant(vacant) = self.missing_positions.entry(row.key) {
                vacant.insert(self.missing.len());
                self.missing.push(row.key);
                let terms = self.names[row.key.0 as usize].1;
                found.push((
                    source.line_item,
                    row.key.1,
                    Some(terms).filter(|&t| t != usize::MAX),
                ));
            }
        }
        found
    }

    /// The position `missing` last answered the state of `line_item` (a
    /// catalog line item) and `period_id` at, if it did (until a catalog change).
    pub fn missing_position(&self, line_item: usize, period_id: i64) -> Option<usize> {
        let rank = *self.ranks.get(line_item)?;
        self.missing_positions.get(&(rank, period_id)).copied()
    }

    /// The state `missing` answered at `position`.
    fn missing_key(&self, position: usize) -> Result<RankKey, String> {
        self.missing
            .get(position)
            .copied()
            .ok_or_else(|| format!("no missing state at position {position}: call `missing` first"))
    }

    /// `coverable` of the states `missing` answered, by position.
    pub fn coverable_at(&self, counts: &[(usize, i64)]) -> Result<Vec<usize>, String> {
        let mut position_of: FxHashMap<RankKey, usize> = FxHashMap::default();
        let mut keyed = Vec::with_capacity(counts.len());
        for &(position, count) in counts {
            let key = self.missing_key(position)?;
            position_of.insert(key, position);
            keyed.push((key, count));
        }
        let chosen = self.rater.coverable(&keyed);
        Ok(chosen.iter().map(|key| position_of[key]).collect())
    }

    /// `load_states` of the states `missing` answered, by position.
    pub fn load_at(
        &mut self,
        snapshots: Vec<(usize, Snapshot)>,
        stored_fingerprints: Option<Vec<(usize, Vec<u64>)>>,
    ) -> Result<(), String> {
        let snapshots = snapshots
            .into_iter()
            .map(|(position, snapshot)| Ok((self.missing_key(position)?, snapshot)))
            .collect::<Result<Vec<_>, String>>()?;
        let fingerprints = stored_fingerprints
            .map(|all| {
                all.into_iter()
                    .map(|(position, values)| Ok((self.missing_key(position)?, values)))
                    .collect::<Result<HashMap<_, _>, String>>()
            })
            .transpose()?;
        self.load_ranked(snapshots, fingerprints.as_ref());
        Ok(())
    }

    pub fn coverable(&self, counts: &[(StateKey, i64)]) -> Vec<StateKey> {
        let counts: Vec<(RankKey, i64)> = counts
            .iter()
            .filter_map(|(key, count)| Some((self.rank_key(key)?, *count)))
            .collect();
        let chosen = self.rater.coverable(&counts);
        chosen.iter().map(|key| self.state_key(key)).collect()
    }

    pub fn load_states(
        &mut self,
        snapshots: Vec<(StateKey, Snapshot)>,
        stored_fingerprints: Option<&HashMap<StateKey, Vec<u64>>>,
    ) {
        let snapshots: Vec<(RankKey, Snapshot)> = snapshots
            .into_iter()
            .filter_map(|(key, snapshot)| Some((self.rank_key(&key)?, snapshot)))
            .collect();
        let fingerprints: Option<HashMap<RankKey, Vec<u64>>> = stored_fingerprints.map(|all| {
            all.iter()
                .filter_map(|(key, values)| Some((self.rank_key(key)?, values.clone())))
                .collect()
        });
        self.load_ranked(snapshots, fingerprints.as_ref());
    }

    fn load_ranked(
        &mut self,
        snapshots: Vec<(RankKey, Snapshot)>,
        fingerprints: Option<&HashMap<RankKey, Vec<u64>>>,
    ) {
        let (terms, names) = (&self.terms, &self.names);
        self.rater
            .load_states(&snapshots, fingerprints, |key: &RankKey| {
                terms.get(names[key.0 as usize].1).cloned()
            });
    }

    /// The held rows' dedup keys only the store can answer, grouped by
    /// state: each state key once, with its unique hashes (each once).
    pub fn lookup_keys(&mut self) -> Vec<(StateKey, Vec<String>)> {
        self.resolve_slots();
        let mut unique: HashSet<(RankKey, &UniqueHash)> = HashSet::new();
        let mut by_state: FxHashMap<RankKey, Vec<String>> = FxHashMap::default();
        for row in self.rater.lookup_rows(&self.pending, &self.slots) {
            if unique.insert((row.key, &row.unique_hash)) {
                by_state
                    .entry(row.key)
                    .or_default()
                    .push(row.unique_hash.to_string());
            }
        }
        by_state
            .into_iter()
            .map(|(key, hashes)| (self.state_key(&key), hashes))
            .collect()
    }

    pub fn remember(&mut self, owners: &[(StateKey, UniqueHash, String)]) {
        let owners: Vec<(RankKey, UniqueHash, String)> = owners
            .iter()
            .filter_map(|(key, unique_hash, event_id)| {
                Some((self.rank_key(key)?, unique_hash.clone(), event_id.clone()))
            })
            .collect();
        self.rater.remember(&owners);
    }

    /// Rate the held rows in order (they stay held for reading until the next
    /// `prepare`). `ids` is the prepared batch's event id column.
    pub fn rate(&mut self, ids: &StringColumn) -> Rated {
        let mut results = Vec::new();
        let outcomes = self.rate_into(ids, &mut results);
        (results, outcomes)
    }

    /// `rate`, its per-row results into `results` (cleared first; see `Rater::rate_at`).
    pub fn rate_into(
        &mut self,
        ids: &StringColumn,
        results: &mut Vec<Result<Option<Delta>, OutOfRange>>,
    ) -> Outcomes {
        self.resolve_slots();
        // `touched`'s reports are made here while each state is in cache,
        // unless some were made while their state was not held (they move
        // into the state in `touched`'s own pass).
        let mut found = Vec::new();
        let reports = self
            .reported
            .is_empty()
            .then_some((self.event_partitions.as_slice(), &mut found));
        let outcomes = self.rater.rate_at(
            &self.pending,
            &mut self.slots,
            &self.terms,
            |event| ids.get(event),
            reports,
            results,
        );
        self.reported_in_rate = self.reported.is_empty().then_some(found);
        // `rate_at` wrote the slots of the states it created.
        self.resolved_at = Some((self.rater.epoch(), self.rater.created()));
        outcomes
    }

    pub fn committed(&mut self) {
        self.rater.committed();
    }

    pub fn drop_states(&mut self, keys: &[StateKey]) {
        let keys: Vec<RankKey> = keys.iter().filter_map(|key| self.rank_key(key)).collect();
        for key in &keys {
            self.reported.remove(key);
        }
        self.rater.drop_states(&keys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{LineItemRow, MeterRow, SubscriptionRow};
    use crate::event::{decode_event, Limits};
    use crate::pricing::Price;

    const LIMITS: Limits = Limits {
        max_message_bytes: 4096,
        max_properties: 16,
        max_key_chars: 64,
        max_id_chars: 64,
        max_string_value_chars: 64,
    };

    /// One customer `c` with a COUNT line item `li` on event `api`, one period.
    fn engine() -> Engine {
        let mut catalog = Catalog::new(
            &[("t", "e", "c", "")],
            &[SubscriptionRow {
                tenant_id: "t",
                environment_id: "e",
                customer_id: "c",
                status: "active",
                start_us: 0,
                end_us: None,
                cancelled_us: None,
            }],
            &[MeterRow {
                id: "m",
                event_name: "api",
                aggregation: "COUNT",
                field: "",
                multiplier: "1",
                filters: vec![],
            }],
            &[LineItemRow {
                id: "li",
                subscription: 0,
                start_us: 0,
                end_us: None,
                meter: 0,
            }],
        )
        .unwrap();
        catalog.add_period(0, 0, 1_000_000).unwrap();
        let terms = vec![Terms {
            price: Price::FlatFee { amount: 2 },
            free_units: 0,
            aggregation: Aggregation::Count,
            bucket: None,
        }];
        let owners = vec![("t".to_string(), "e".to_string(), "li".to_string())];
        Engine::new(catalog, terms, owners, Rater::new(10, 10))
    }

    /// Prepare one event per id of `ids`, on `partitions` (one each); the raw columns.
    fn prepare_ids(engine: &mut Engine, ids: &[String], partitions: Vec<u32>) -> RawColumns {
        let payloads: Vec<String> = ids
            .iter()
            .map(|id| format!(r#"{{"id":"{id}","tenant_id":"t","environment_id":"e","event_name":"api","customer_id":"c"}}"#))
            .collect();
        let mut columns = RawColumns::new();
        let mut properties = BatchProperties::default();
        for payload in &payloads {
            let fallback_id = String::new;
            decode_event(
                payload.as_bytes(),
                fallback_id,
                5,
                &LIMITS,
                &mut columns,
                &mut properties,
            )
            .unwrap();
        }
        let prepared = engine.prepare(&columns, &properties, partitions);
        assert!(prepared.need.is_empty() && prepared.unresolved.is_empty());
        assert_eq!(prepared.customers.get(0), "c");
        columns
    }

    /// Prepare one event per partition number in `partitions` and rate them.
    fn touched_by(engine: &mut Engine, partitions: &[u32]) -> Vec<(u32, usize, i64)> {
        let ids: Vec<String> = (0..partitions.len()).map(|i| format!("e{i}")).collect();
        let columns = prepare_ids(engine, &ids, partitions.to_vec());
        engine.rate(&columns.id);
        engine.touched()
    }

    /// Prepare events `ids` on partition 0.
    fn prepare_on_0(engine: &mut Engine, ids: &[&str]) -> RawColumns {
        let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        let partitions = vec![0; ids.len()];
        prepare_ids(engine, &ids, partitions)
    }

    /// The period's billable quantity after each rated row (scaled).
    fn tier_snapshots(rated: &Rated) -> Vec<i128> {
        let rows = rated.0.iter();
        rows.map(|row| row.as_ref().unwrap().as_ref().unwrap().tier_snapshot)
            .collect()
    }

    #[test]
    fn rows_resolved_before_a_drop_are_resolved_again() {
        let one = crate::fixed::ONE;
        let mut engine = engine();
        let columns = prepare_on_0(&mut engine, &["a"]);
        assert_eq!(engine.missing_states().len(), 1);
        assert_eq!(tier_snapshots(&engine.rate(&columns.id)), vec![one]);
        // Resolved to the held state, which carries on.
        let columns = prepare_on_0(&mut engine, &["b"]);
        assert!(engine.missing_states().is_empty());
        assert_eq!(tier_snapshots(&engine.rate(&columns.id)), vec![2 * one]);
        // Resolved, then dropped (a revoke between the phases): a new state.
        let columns = prepare_on_0(&mut engine, &["c", "d"]);
        assert!(engine.missing_states().is_empty());
        engine.drop_states(&[("t".into(), "e".into(), "li".into(), 0)]);
        assert_eq!(engine.missing_states().len(), 1);
        let rated = engine.rate(&columns.id);
        assert_eq!(tier_snapshots(&rated), vec![one, 2 * one]);
        assert_eq!(engine.rater().keys().len(), 1);
    }

    #[test]
    fn a_results_buffer_is_cleared_before_each_rate() {
        let one = crate::fixed::ONE;
        let mut engine = engine();
        let mut results = Vec::new();
        let columns = prepare_on_0(&mut engine, &["a", "b"]);
        let outcomes = engine.rate_into(&columns.id, &mut results);
        assert_eq!(
            tier_snapshots(&(results.clone(), outcomes)),
            vec![one, 2 * one]
        );
        // A redelivery and a new event: two rows, not four.
        let columns = prepare_on_0(&mut engine, &["b", "c"]);
        let outcomes = engine.rate_into(&columns.id, &mut results);
        assert_eq!((outcomes.skipped, outcomes.counted), (1, 1));
        assert_eq!(results.len(), 2);
        assert_eq!(results[0], Ok(None));
        assert!(matches!(&results[1], Ok(Some(d)) if d.tier_snapshot == 3 * one));
    }

    #[test]
    fn touched_reports_each_partition_and_state_once_until_dropped() {
        let mut engine = engine();
        assert_eq!(
            touched_by(&mut engine, &[3, 3, 4]),
            vec![(3, 0, 0), (4, 0, 0)]
        );
        assert_eq!(touched_by(&mut engine, &[3, 4]), vec![]);
        assert_eq!(touched_by(&mut engine, &[5]), vec![(5, 0, 0)]);
        // Revoking drops the state: every partition that touches it again is told.
        engine.drop_states(&[("t".into(), "e".into(), "li".into(), 0)]);
        assert_eq!(touched_by(&mut engine, &[4, 3]), vec![(4, 0, 0), (3, 0, 0)]);
    }

    #[test]
    fn a_state_dropped_between_rate_and_touched_is_reported_once() {
        let mut engine = engine();
        let columns = prepare_ids(&mut engine, &["a".into(), "b".into()], vec![3, 4]);
        engine.rate(&columns.id);
        engine.drop_states(&[("t".into(), "e".into(), "li".into(), 0)]);
        assert_eq!(engine.touched(), vec![(3, 0, 0), (4, 0, 0)]);
        // Told while it was not held: the new state knows both partitions.
        assert_eq!(touched_by(&mut engine, &[4, 5, 3]), vec![(5, 0, 0)]);
        assert_eq!(touched_by(&mut engine, &[5, 6]), vec![(6, 0, 0)]);
    }
}
