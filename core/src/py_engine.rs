//! `worker._core.CoreEngine`: the fused batch step (`engine.rs`) bound to
//! Python. Rows stay in the core; `rate` hands back Arrow buffers.

use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict};

use crate::catalog::Catalog;
use crate::columns::StringColumn;
use crate::engine::Engine;
use crate::period_rating::Outcome;
use crate::rater::{Rater, Terms};
use crate::{
    catalog_of, decode_all, raw_buffers, snapshot_of, table_error, terms_of, CustomerTuple,
    KeyTuple, LineItemTuple, MeterTuple, SnapshotTuple, SubscriptionTuple, TermsTuple,
};

/// What `prepare` returns: accepted and rejected messages, periods to add,
/// customers per event, unresolved `(event, reason)`, missing fields, and
/// the raw `events` columns' buffers (as `decode_batch`'s).
type PrepareResult<'py> = (
    Vec<usize>,
    Vec<(usize, &'static str)>,
    Vec<(usize, i64)>,
    Vec<String>,
    Vec<(usize, &'static str)>,
    usize,
    (Bound<'py, PyDict>, Bound<'py, PyBytes>),
);

#[pyclass(module = "worker._core")]
pub struct CoreEngine {
    engine: Engine,
}

fn le_bytes<T: Copy, const N: usize>(values: &[T], to: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|v| to(*v)).collect()
}

/// The engine's catalog, terms and line item owners from the Python tables.
#[allow(clippy::type_complexity)]
fn engine_tables(
    customers: &[CustomerTuple],
    subscriptions: &[SubscriptionTuple],
    meters: &[MeterTuple],
    line_items: &[LineItemTuple],
    terms: &[TermsTuple],
) -> PyResult<(Catalog, Vec<Terms>, Vec<(String, String, String)>)> {
    if terms.len() != line_items.len() {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "CoreEngine: one terms entry per line item",
        ));
    }
    let catalog = catalog_of(customers, subscriptions, meters, line_items)?;
    let owners = line_items
        .iter()
        .map(|l| {
            let s = &subscriptions[l.1];
            (s.0.clone(), s.1.clone(), l.0.clone())
        })
        .collect();
    let terms = terms.iter().map(terms_of).collect::<PyResult<Vec<_>>>()?;
    Ok((catalog, terms, owners))
}

/// Sets the `event`, `line_item` (int32) and `period_id` (int64) buffers of rows.
fn set_row_sources(
    columns: &Bound<'_, PyDict>,
    events: &[i32],
    line_items: &[i32],
    periods: &[i64],
) -> PyResult<()> {
    let py = columns.py();
    columns.set_item(
        "event",
        PyBytes::new(py, &le_bytes(events, i32::to_le_bytes)),
    )?;
    columns.set_item(
        "line_item",
        PyBytes::new(py, &le_bytes(line_items, i32::to_le_bytes)),
    )?;
    columns.set_item(
        "period_id",
        PyBytes::new(py, &le_bytes(periods, i64::to_le_bytes)),
    )
}

#[pymethods]
impl CoreEngine {
    /// Catalog tables as `CoreCatalog`'s, `terms` aligned with `line_items`.
    #[new]
    fn new(
        customers: Vec<CustomerTuple>,
        subscriptions: Vec<SubscriptionTuple>,
        meters: Vec<MeterTuple>,
        line_items: Vec<LineItemTuple>,
        terms: Vec<TermsTuple>,
        max_fingerprints: usize,
        max_remembered_owners: usize,
    ) -> PyResult<Self> {
        let (catalog, terms, owners) =
            engine_tables(&customers, &subscriptions, &meters, &line_items, &terms)?;
        let rater = Rater::new(max_fingerprints, max_remembered_owners);
        Ok(CoreEngine {
            engine: Engine::new(catalog, terms, owners, rater),
        })
    }

    /// A new catalog version (tables as `__init__`'s), keeping the rating
    /// state (`Engine::replace_catalog`). Periods must be added again.
    fn replace_catalog(
        &mut self,
        customers: Vec<CustomerTuple>,
        subscriptions: Vec<SubscriptionTuple>,
        meters: Vec<MeterTuple>,
        line_items: Vec<LineItemTuple>,
        terms: Vec<TermsTuple>,
    ) -> PyResult<()> {
        let (catalog, terms, owners) =
            engine_tables(&customers, &subscriptions, &meters, &line_items, &terms)?;
        self.engine.replace_catalog(catalog, terms, owners);
        Ok(())
    }

    fn add_periods(&mut self, subscription: usize, periods: Vec<(i64, i64)>) -> PyResult<()> {
        for (start, end) in periods {
            self.engine
                .catalog_mut()
                .add_period(subscription, start, end)
                .map_err(table_error)?;
        }
        Ok(())
    }

    #[getter]
    fn fingerprint_count(&self) -> usize {
        self.engine.rater().fingerprint_count()
    }

    /// Decode, route and measure a batch (arguments as `decode_batch`) and
    /// hold its rows. When `need` is not empty nothing is held: add those
    /// periods and call again.
    #[allow(clippy::too_many_arguments)]
    fn prepare<'py>(
        &mut self,
        py: Python<'py>,
        values: Vec<Option<PyBackedBytes>>,
        topics: Vec<String>,
        partitions: Vec<i64>,
        offsets: Vec<i64>,
        timestamps_ms: Vec<Option<i64>>,
        now_us: i64,
        limits: (usize, usize, usize, usize, usize),
    ) -> PyResult<PrepareResult<'py>> {
        let engine = &mut self.engine;
        let (accepted, rejected, need, customers, unresolved, missing, columns) =
            py.detach(|| {
                let mut properties = Vec::new();
                let (accepted, rejected, columns) = decode_all(
                    &values,
                    &topics,
                    &partitions,
                    &offsets,
                    &timestamps_ms,
                    now_us,
                    limits,
                    Some(&mut properties),
                )?;
                let prepared = engine.prepare(&columns, &properties);
                let unresolved = prepared
                    .unresolved
                    .iter()
                    .map(|(event, reason)| (*event, reason.code()))
                    .collect();
                Ok::<_, PyErr>((
                    accepted,
                    rejected,
                    prepared.need,
                    prepared.customers,
                    unresolved,
                    prepared.missing_fields,
                    columns,
                ))
            })?;
        let buffers = raw_buffers(py, &columns)?;
        Ok((
            accepted, rejected, need, customers, unresolved, missing, buffers,
        ))
    }

    /// The held rows (every routed match of the prepared batch, refused and
    /// redelivered ones included) as Arrow buffers: `event` and `line_item`
    /// int32, `period_id` int64; and their count.
    fn held_rows<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyDict>, usize)> {
        let (pending, sources) = self.engine.rows();
        let events: Vec<i32> = sources.iter().map(|s| s.event as i32).collect();
        let line_items: Vec<i32> = sources.iter().map(|s| s.line_item as i32).collect();
        let periods: Vec<i64> = pending.iter().map(|row| row.0).collect();
        let columns = PyDict::new(py);
        set_row_sources(&columns, &events, &line_items, &periods)?;
        Ok((columns, events.len()))
    }

    fn missing_states(&self) -> Vec<KeyTuple> {
        self.engine.missing_states().into_iter().collect()
    }

    fn coverable(&self, counts: Vec<(KeyTuple, i64)>) -> Vec<KeyTuple> {
        self.engine.coverable(&counts)
    }

    #[pyo3(signature = (snapshots, stored_fingerprints=None))]
    fn load_states(
        &mut self,
        snapshots: Vec<(KeyTuple, SnapshotTuple)>,
        stored_fingerprints: Option<HashMap<KeyTuple, Vec<u64>>>,
    ) -> PyResult<()> {
        let snapshots = snapshots
            .iter()
            .map(|(key, snapshot)| Ok((key.clone(), snapshot_of(snapshot)?)))
            .collect::<PyResult<Vec<_>>>()?;
        self.engine
            .load_states(&snapshots, stored_fingerprints.as_ref());
        Ok(())
    }

    fn lookup_keys(&self) -> Vec<(KeyTuple, String)> {
        self.engine.lookup_keys().into_iter().collect()
    }

    fn remember(&mut self, owners: Vec<(KeyTuple, String, String)>) {
        self.engine.remember(&owners);
    }

    /// Rate the held rows. Returns the written rows' columns as Arrow buffers
    /// (`row`, `event`, `line_item`: int32; `period_id`: int64; `outcome`:
    /// int8, 0 counted and 1 repeated value; `unique_hash`: utf8 offsets and
    /// data; the six deltas: decimal128(38, 15)), the counts of counted,
    /// repeated and skipped rows, and `(event, line item, period id)` of
    /// refused rows (`value_out_of_range`).
    #[allow(clippy::type_complexity)]
    fn rate<'py>(
        &mut self,
        py: Python<'py>,
    ) -> PyResult<(
        Bound<'py, PyDict>,
        usize,
        (usize, usize, usize),
        Vec<(usize, usize, i64)>,
    )> {
        let engine = &mut self.engine;
        let (results, outcomes) = py.detach(|| engine.rate());
        let (pending, sources) = engine.rows();
        let mut row_index = Vec::new();
        let mut events = Vec::new();
        let mut line_items = Vec::new();
        let mut periods = Vec::new();
        let mut outcome_codes = Vec::new();
        let mut hashes = StringColumn::new();
        let mut deltas: [Vec<i128>; 6] = Default::default();
        let mut refused = Vec::new();
        for (i, result) in results.iter().enumerate() {
            let delta = match result {
                Ok(Some(delta)) => delta,
                Ok(None) => continue,
                Err(_) => {
                    refused.push((sources[i].event, sources[i].line_item, pending[i].0));
                    continue;
                }
            };
            row_index.push(i as i32);
            events.push(sources[i].event as i32);
            line_items.push(sources[i].line_item as i32);
            periods.push(pending[i].0);
            outcome_codes.push(i8::from(delta.outcome == Outcome::RepeatedValue));
            hashes.push(pending[i].1);
            let values = [
                delta.qty_total,
                delta.qty_billable,
                delta.qty_free_applied,
                delta.tier_snapshot,
                delta.unit_cost,
                delta.cost,
            ];
            for (column, value) in deltas.iter_mut().zip(values) {
                column.push(value);
            }
        }
        let columns = PyDict::new(py);
        columns.set_item(
            "row",
            PyBytes::new(py, &le_bytes(&row_index, i32::to_le_bytes)),
        )?;
        set_row_sources(&columns, &events, &line_items, &periods)?;
        columns.set_item(
            "outcome",
            PyBytes::new(py, &le_bytes(&outcome_codes, i8::to_le_bytes)),
        )?;
        columns.set_item(
            "unique_hash",
            (
                PyBytes::new(py, &hashes.offset_bytes()),
                PyBytes::new(py, hashes.data()),
            ),
        )?;
        let names = [
            "qty_total",
            "qty_billable",
            "qty_free_applied",
            "tier_snapshot",
            "unit_cost",
            "cost",
        ];
        for (name, column) in names.iter().zip(&deltas) {
            columns.set_item(
                *name,
                PyBytes::new(py, &le_bytes(column, i128::to_le_bytes)),
            )?;
        }
        let counts = (outcomes.counted, outcomes.repeated, outcomes.skipped);
        Ok((columns, row_index.len(), counts, refused))
    }

    fn committed(&mut self) {
        self.engine.committed();
    }

    fn drop_states(&mut self, keys: Vec<KeyTuple>) {
        self.engine.drop_states(&keys);
    }
}
