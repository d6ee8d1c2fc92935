//! The fused batch step: decoded events -> routed and measured rows held in
//! the core -> rated with the core's state, without a Python object per row.
//!
//! The two-phase shape of the pipeline's `prepare` stays, because the store
//! reads stay in Python: `prepare` (route and measure, hold the rows), then
//! `missing_states` / `load_states`, `lookup_keys` / `remember`, then `rate`.

use std::collections::{HashMap, HashSet};

use crate::aggregate::Snapshot;
use crate::catalog::{Catalog, EventView, Resolution, Unresolved};
use crate::event::RawColumns;
use crate::json;
use crate::period_rating::{Delta, OutOfRange};
use crate::rater::{Outcomes, Pending, Rater, StateKey, Terms};

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
    pub customers: Vec<String>,
    pub unresolved: Vec<(usize, Unresolved)>,
    pub missing_fields: usize,
}

/// The rows `rate` produced: per held row its delta (None: a redelivery, no
/// row) or its refusal.
pub type Rated = (Vec<Result<Option<Delta>, OutOfRange>>, Outcomes);

/// Catalog tables, line item terms and the rating state of one consumer.
pub struct Engine {
    catalog: Catalog,
    /// Per catalog line item: its price, free units and aggregation.
    terms: Vec<Terms>,
    by_line_item: HashMap<(String, String, String), usize>,
    rater: Rater,
    pending: Vec<Pending>,
    sources: Vec<RowSource>,
}

impl Engine {
    /// `terms` are aligned with the catalog's line items; `owners` names each
    /// line item's (tenant, environment, id) for state loading.
    pub fn new(
        catalog: Catalog,
        terms: Vec<Terms>,
        owners: Vec<(String, String, String)>,
        rater: Rater,
    ) -> Engine {
        let by_line_item = owners
            .into_iter()
            .enumerate()
            .map(|(i, k)| (k, i))
            .collect();
        Engine {
            catalog,
            terms,
            by_line_item,
            rater,
            pending: Vec::new(),
            sources: Vec::new(),
        }
    }

    pub fn catalog_mut(&mut self) -> &mut Catalog {
        &mut self.catalog
    }

    pub fn rater(&self) -> &Rater {
        &self.rater
    }

    /// The held rows and where each comes from.
    pub fn rows(&self) -> (&[Pending], &[RowSource]) {
        (&self.pending, &self.sources)
    }

    /// Route and measure the decoded events; hold their rows for the next steps.
    pub fn prepare(&mut self, columns: &RawColumns) -> Prepared {
        let mut prepared = Prepared::default();
        let (mut pending, mut sources) = (Vec::new(), Vec::new());
        for event in 0..columns.len() {
            let text = columns.properties.get(event);
            let properties = || match json::parse(text) {
                Ok(json::Value::Object(members)) => members,
                _ => Vec::new(),
            };
            let view = EventView {
                id: columns.id.get(event),
                tenant_id: columns.tenant_id.get(event),
                environment_id: columns.environment_id.get(event),
                event_name: columns.event_name.get(event),
                customer_id: columns.customer_id.get(event),
                external_customer_id: columns.external_customer_id.get(event),
                timestamp_us: columns.timestamp_us[event],
                properties: &properties,
            };
            let (customer, resolution) = self.catalog.resolve(&view);
            prepared.customers.push(customer);
            match resolution {
                Resolution::Unresolved(reason) => prepared.unresolved.push((event, reason)),
                Resolution::NeedPeriods(subscriptions) => prepared
                    .need
                    .extend(subscriptions.into_iter().map(|s| (s, view.timestamp_us))),
                Resolution::Matched(matches) => {
                    for m in matches {
                        let period_id = m.period_id();
                        let line_item = m.line_item;
                        prepared.missing_fields += usize::from(m.measurement.field_missing);
                        let key: StateKey = (
                            view.tenant_id.to_string(),
                            view.environment_id.to_string(),
                            self.catalog.line_item(line_item).id.clone(),
                            period_id,
                        );
                        sources.push(RowSource { event, line_item });
                        pending.push(Pending {
                            key,
                            terms: line_item,
                            event_id: view.id.to_string(),
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
        prepared
    }

    pub fn missing_states(&self) -> HashSet<StateKey> {
        self.rater.missing_states(&self.pending)
    }

    pub fn coverable(&self, counts: &[(StateKey, i64)]) -> Vec<StateKey> {
        self.rater.coverable(counts)
    }

    pub fn load_states(
        &mut self,
        snapshots: &[(StateKey, Snapshot)],
        stored_fingerprints: Option<&HashMap<StateKey, Vec<u64>>>,
    ) {
        let (terms, by_line_item) = (&self.terms, &self.by_line_item);
        self.rater
            .load_states(snapshots, stored_fingerprints, |key| {
                let index = by_line_item.get(&(key.0.clone(), key.1.clone(), key.2.clone()))?;
                terms.get(*index).cloned()
            });
    }

    pub fn lookup_keys(&self) -> HashSet<(StateKey, String)> {
        self.rater.lookup_keys(&self.pending)
    }

    pub fn remember(&mut self, owners: &[(StateKey, String, String)]) {
        self.rater.remember(owners);
    }

    /// Rate the held rows in order (they stay held for reading until the next `prepare`).
    pub fn rate(&mut self) -> Rated {
        self.rater.rate(&self.pending, &self.terms)
    }

    pub fn committed(&mut self) {
        self.rater.committed();
    }

    pub fn drop_states(&mut self, keys: &[StateKey]) {
        self.rater.drop_states(keys);
    }
}
