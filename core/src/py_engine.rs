//! `worker._core.CoreEngine`: the fused batch step (`engine.rs`) bound to
//! Python. Rows stay in the core; `rate` hands back Arrow buffers.

use std::collections::HashMap;
use std::mem::MaybeUninit;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple, PyType};

use crate::catalog::{Catalog, Unresolved};
use crate::columns::{runs_of, StringColumn};
use crate::engine::Engine;
use crate::event::RawColumns;
use crate::period_rating::{Delta, OutOfRange, Outcome};
use crate::rater::{Rater, Terms};
use crate::sha256::UniqueHash;
use crate::{
    catalog_of, decode_all, loaded_snapshots, raw_buffers, string_buffers, table_error, terms_of,
    Batch, CatalogTables, KeyTuple, LimitsTuple, SnapshotTuple, TermsTuple,
};

/// What `prepare` returns: accepted and rejected messages, periods to add,
/// the customers column's buffers (one per accepted event), the count of
/// unresolved events per reason, missing fields, the raw `events` columns' buffers (as
/// `decode_batch`'s), and per partition of the batch `(topic, partition,
/// first offset, last offset + 1)`.
type PrepareResult<'py> = (
    Vec<usize>,
    Vec<(usize, &'static str)>,
    Vec<(usize, i64)>,
    (Bound<'py, PyBytes>, Bound<'py, PyBytes>),
    Vec<(&'static str, usize)>,
    usize,
    (Bound<'py, PyDict>, Bound<'py, PyBytes>),
    Vec<(String, i64, i64, i64)>,
);

/// Makes the state keys `missing` and `touched` hand to Python: instances
/// of a `tuple` subclass (`StateKey`) made by `tuple.__new__`, as the
/// subclass's own constructor makes them, without running Python code.
struct StateKeys<'py> {
    key_type: &'py Bound<'py, PyType>,
    names: &'py Bound<'py, PyList>,
    new: Bound<'py, PyAny>,
}

impl<'py> StateKeys<'py> {
    fn new(key_type: &'py Bound<'py, PyType>, names: &'py Bound<'py, PyList>) -> PyResult<Self> {
        let py = key_type.py();
        if !key_type.is_subclass_of::<PyTuple>()? {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "the state key type must be a tuple subclass",
            ));
        }
        let new = py
            .get_type::<PyTuple>()
            .getattr(pyo3::intern!(py, "__new__"))?;
        Ok(StateKeys {
            key_type,
            names,
            new,
        })
    }

    /// The key of the state of `line_item` (an index into `names`) and `period_id`.
    fn key(&self, line_item: usize, period_id: i64) -> PyResult<Bound<'py, PyAny>> {
        let py = self.key_type.py();
        let name = self.names.get_item(line_item)?;
        let name = name.cast::<PyTuple>()?;
        let [tenant, environment, item] = [0, 1, 2].map(|i| name.get_item(i));
        let period = period_id.into_pyobject(py)?.into_any();
        let fields = PyTuple::new(py, [tenant?, environment?, item?, period])?;
        self.new.call1((self.key_type, fields))
    }
}

#[pyclass(module = "worker._core")]
pub struct CoreEngine {
    engine: Engine,
    /// The partitions seen so far, numbered in order of first sight (what
    /// `touched` names by number).
    partitions: Vec<(String, i64)>,
    partition_numbers: HashMap<(String, i64), u32>,
    /// The prepared batch's raw columns and catalog customers (per accepted
    /// event), which `rate` copies into the written rows' columns.
    held_columns: Option<(RawColumns, StringColumn)>,
    /// Per stored `events_processed` column of a line item
    /// (`LINE_ITEM_FIELDS` of them) its value per catalog line item, set by
    /// `set_line_item_columns`: one buffer per column, so that a column's
    /// few hundred kilobytes stay in cache while `rate` copies its values
    /// per written row (a `String` per value was a cache miss each).
    line_item_columns: [StringColumn; LINE_ITEM_FIELDS],
    /// The last `rate`'s per-row results, kept as a buffer for the next one.
    results: Vec<Result<Option<Delta>, OutOfRange>>,
    /// The state keys `missing` last made (by position) and the key type
    /// and names list it made them with: `touched` hands the same key
    /// objects back for those states instead of making new ones.
    missing_keys: Option<MadeKeys>,
}

/// See `CoreEngine::missing_keys`.
struct MadeKeys {
    key_type: Py<PyType>,
    names: Py<PyList>,
    keys: Vec<Py<PyAny>>,
}

/// How many stored columns a line item has (`set_line_item_columns`).
const LINE_ITEM_FIELDS: usize = 6;

/// The written rows' `events_processed` columns copied from their event (the
/// raw column of the same name) and from its catalog customer.
fn event_columns(raw: &RawColumns) -> [(&'static str, &StringColumn); 7] {
    [
        ("id", &raw.id),
        ("event_name", &raw.event_name),
        ("external_customer_id", &raw.external_customer_id),
        ("source", &raw.source),
        ("tenant_id", &raw.tenant_id),
        ("environment_id", &raw.environment_id),
        ("properties", &raw.properties),
    ]
}

/// Python bytes of `len` bytes that `fill` writes, each of them (checked):
/// `PyBytes::new_with` without its zeroing pass over the buffer first.
fn written_pybytes<'py>(
    py: Python<'py>,
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<u8>]) -> usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let size = pyo3::ffi::Py_ssize_t::try_from(len).expect("a buffer under isize::MAX");
    // SAFETY: `PyBytes_FromStringAndSize(NULL, len)` returns a new bytes
    // object (or NULL with an exception set) whose `len` bytes are not
    // initialised; nothing else refers to it until it is returned, so its
    // buffer is ours to write, as `MaybeUninit` bytes.
    unsafe {
        let bytes = Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size),
        )?
        .cast_into_unchecked::<PyBytes>();
        let buffer: *mut MaybeUninit<u8> = pyo3::ffi::PyBytes_AsString(bytes.as_ptr()).cast();
        let written = fill(std::slice::from_raw_parts_mut(buffer, len));
        assert_eq!(written, len, "every byte of the buffer written");
        Ok(bytes)
    }
}

/// `values` as Python bytes of their little-endian bytes, written in place
/// (no buffer in between).
fn le_pybytes<'py, T: Copy, const N: usize>(
    py: Python<'py>,
    values: &[T],
    to: impl Fn(T) -> [u8; N],
) -> PyResult<Bound<'py, PyBytes>> {
    gathered_le(py, values.len(), |i| to(values[i]))
}

/// Python bytes of `value(i)` for `i` in `0..count`, written in place.
fn gathered_le<'py, const N: usize>(
    py: Python<'py>,
    count: usize,
    value: impl Fn(usize) -> [u8; N],
) -> PyResult<Bound<'py, PyBytes>> {
    written_pybytes(py, count * N, |buffer| {
        for (i, chunk) in buffer.chunks_exact_mut(N).enumerate() {
            chunk.write_copy_of_slice(&value(i));
        }
        count * N
    })
}

/// `out.write_copy_of_slice(text)` (the same lengths), without a call to
/// `memcpy` for texts of up to 64 bytes: two overlapping moves of a fixed
/// size. The written columns copy short texts per row (ids, hashes), where
/// the call was most of the cost of a copy.
fn copy_text(out: &mut [MaybeUninit<u8>], text: &[u8]) {
    /// `N..=2N` bytes: the first `N` and the last `N` (overlapping).
    fn halves<const N: usize>(out: &mut [MaybeUninit<u8>], text: &[u8]) {
        let len = text.len();
        let head: [u8; N] = text[..N].try_into().expect("N bytes");
        let tail: [u8; N] = text[len - N..].try_into().expect("N bytes");
        out[..N].write_copy_of_slice(&head);
        out[len - N..len].write_copy_of_slice(&tail);
    }
    assert_eq!(out.len(), text.len(), "a copy of the same length");
    match text.len() {
        0 => {}
        1..=3 => {
            let len = text.len();
            out[0].write(text[0]);
            out[len / 2].write(text[len / 2]);
            out[len - 1].write(text[len - 1]);
        }
        4..=7 => halves::<4>(out, text),
        8..=15 => halves::<8>(out, text),
        16..=31 => halves::<16>(out, text),
        32..=64 => halves::<32>(out, text),
        _ => {
            out.write_copy_of_slice(text);
        }
    }
}

/// The utf8 buffers (int32 offsets, data) of `count` values, written
/// straight into Python bytes: `len(i)` bytes each, which `write(i, out)`
/// writes into `out`. Panics past 2 GiB of text (an Arrow `utf8` limit; a
/// batch is far smaller).
fn utf8_buffers<'py>(
    py: Python<'py>,
    count: usize,
    len: impl Fn(usize) -> usize,
    write: impl Fn(usize, &mut [MaybeUninit<u8>]),
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let mut end = 0usize;
    let offsets_len = (count + 1) * 4;
    let offsets = written_pybytes(py, offsets_len, |buffer| {
        let (first, rest) = buffer.split_at_mut(4);
        first.write_copy_of_slice(&0i32.to_le_bytes());
        for (i, chunk) in rest.chunks_exact_mut(4).enumerate() {
            end += len(i);
            let offset = i32::try_from(end).expect("string column under 2 GiB");
            chunk.write_copy_of_slice(&offset.to_le_bytes());
        }
        offsets_len
    })?;
    let data = written_pybytes(py, end, |buffer| {
        let mut at = 0;
        for i in 0..count {
            let next = at + len(i);
            write(i, &mut buffer[at..next]);
            at = next;
        }
        at
    })?;
    Ok((offsets, data))
}

/// The utf8 buffers (int32 offsets, data) of `column`'s values at the rows
/// of `runs` (`columns::runs_of`: `rows` of them), straight into Python bytes.
fn gathered_runs<'py>(
    py: Python<'py>,
    column: &StringColumn,
    runs: &[(usize, usize)],
    rows: usize,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let (offsets_len, data_len) = ((rows + 1) * 4, column.runs_len(runs));
    let mut data = Ok(PyBytes::new(py, b""));
    let offsets = written_pybytes(py, offsets_len, |offsets| {
        data = written_pybytes(py, data_len, |data| {
            column.gather_runs(runs, offsets, data);
            data_len
        });
        offsets_len
    })?;
    Ok((offsets, data?))
}

/// The utf8 buffers (int32 offsets, data) of the text of `hashes`, written
/// straight into Python bytes.
fn hash_buffers<'py>(
    py: Python<'py>,
    hashes: &[&UniqueHash],
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let len = |i: usize| match hashes[i] {
        UniqueHash::Digest(_) => 64,
        UniqueHash::Text(text) => text.len(),
    };
    let write = |i: usize, out: &mut [MaybeUninit<u8>]| {
        hashes[i].with_text(|text| copy_text(out, text));
    };
    utf8_buffers(py, hashes.len(), len, write)
}

impl CoreEngine {
    /// The number of `(topic, partition)`, given one when new.
    fn partition_number(&mut self, topic: &str, partition: i64) -> u32 {
        if let Some(number) = self.partition_numbers.get(&(topic.to_string(), partition)) {
            return *number;
        }
        let number = self.partitions.len() as u32;
        self.partitions.push((topic.to_string(), partition));
        self.partition_numbers
            .insert((topic.to_string(), partition), number);
        number
    }

    /// Copies the written rows' `events_processed` columns from their event
    /// (raw columns, `customer_id`, `timestamp` as int64 µs, `final_lag_ms`
    /// at `processed_at_us` as uint32) and line item
    /// (a list `line_item_columns`, in `set_line_item_columns`' order) into
    /// `columns`: no Arrow `take` in Python.
    /// Without a `prepare` the event columns are left out; rows of a line
    /// item without `set_line_item_columns` raise.
    fn set_processed_columns(
        &self,
        columns: &Bound<'_, PyDict>,
        events: &[i32],
        line_items: &[i32],
        processed_at_us: i64,
    ) -> PyResult<()> {
        let py = columns.py();
        if let Some((raw, customers)) = &self.held_columns {
            let mut sources = event_columns(raw).to_vec();
            sources.push(("customer_id", customers));
            let runs = runs_of(events);
            for (name, source) in sources {
                columns.set_item(name, gathered_runs(py, source, &runs, events.len())?)?;
            }
            let timestamps = gathered_le(py, events.len(), |row| {
                raw.timestamp_us[events[row] as usize].to_le_bytes()
            })?;
            columns.set_item("timestamp", timestamps)?;
            let lags = gathered_le(py, events.len(), |row| {
                final_lag_ms(processed_at_us, raw.timestamp_us[events[row] as usize]).to_le_bytes()
            })?;
            columns.set_item("final_lag_ms", lags)?;
        }
        let items = self.line_item_columns[0].len();
        if line_items.iter().any(|&item| item as usize >= items) {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "CoreEngine.rate: set_line_item_columns was not called for this catalog",
            ));
        }
        let item_columns = pyo3::types::PyList::empty(py);
        for field in &self.line_item_columns {
            let buffers = utf8_buffers(
                py,
                line_items.len(),
                |row| field.bytes(line_items[row] as usize).len(),
                |row, out| copy_text(out, field.bytes(line_items[row] as usize)),
            )?;
            item_columns.append(buffers)?;
        }
        columns.set_item("line_item_columns", item_columns)
    }

    /// Per message its partition's number, and per partition of the batch
    /// `(number, first offset, last offset + 1)` in order of first sight.
    fn batch_partitions(&mut self, batch: &Batch) -> (Vec<u32>, Vec<(u32, i64, i64)>) {
        let mut numbers = Vec::with_capacity(batch.len());
        let mut offsets: Vec<(u32, i64, i64)> = Vec::new();
        // The previous message's partition and its entry in `offsets`: runs of
        // one partition look nothing up.
        let mut last: Option<(usize, u32, usize)> = None;
        for i in 0..batch.len() {
            let offset = batch.offset(i);
            let (number, entry) = match last {
                Some((previous, n, e)) if batch.same_partition(previous, i) => (n, e),
                _ => {
                    let (topic, partition) = batch.partition(i);
                    let number = self.partition_number(topic, partition);
                    match offsets.iter().position(|(n, _, _)| *n == number) {
                        Some(entry) => (number, entry),
                        None => {
                            offsets.push((number, offset, offset));
                            (number, offsets.len() - 1)
                        }
                    }
                }
            };
            last = Some((i, number, entry));
            numbers.push(number);
            offsets[entry].2 = offset + 1;
        }
        (numbers, offsets)
    }
}

/// How many times `CoreEngine::prepare` routes a batch at most (each round
/// after the first adds every period the one before asked for).
const PERIOD_ROUNDS: usize = 3;

/// The count of unresolved events per reason code, in order of first sight.
fn unresolved_counts(unresolved: &[(usize, Unresolved)]) -> Vec<(&'static str, usize)> {
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for (_, reason) in unresolved {
        match counts.iter_mut().find(|(code, _)| *code == reason.code()) {
            Some(entry) => entry.1 += 1,
            None => counts.push((reason.code(), 1)),
        }
    }
    counts
}

/// The engine's catalog, terms and line item owners from the Python tables.
#[allow(clippy::type_complexity)]
fn engine_tables(
    tables: &CatalogTables,
    terms: &[TermsTuple],
) -> PyResult<(Catalog, Vec<Terms>, Vec<(String, String, String)>)> {
    let (_, subscriptions, _, line_items) = tables;
    if terms.len() != line_items.len() {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "CoreEngine: one terms entry per line item",
        ));
    }
    let catalog = catalog_of(tables)?;
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
/// A row's `final_lag_ms` (`store.processed.rated_columns`): the whole
/// milliseconds from its event time to `processed_at_us`, 0 for an event
/// from the future, at most `u32::MAX`.
fn final_lag_ms(processed_at_us: i64, timestamp_us: i64) -> u32 {
    let lag_ms = (i128::from(processed_at_us) - i128::from(timestamp_us)).max(0) / 1000;
    u32::try_from(lag_ms).unwrap_or(u32::MAX)
}

fn set_row_sources(
    columns: &Bound<'_, PyDict>,
    events: &[i32],
    line_items: &[i32],
    periods: &[i64],
) -> PyResult<()> {
    let py = columns.py();
    columns.set_item("event", le_pybytes(py, events, i32::to_le_bytes)?)?;
    columns.set_item("line_item", le_pybytes(py, line_items, i32::to_le_bytes)?)?;
    columns.set_item("period_id", le_pybytes(py, periods, i64::to_le_bytes)?)
}

#[pymethods]
impl CoreEngine {
    /// Catalog tables as `CoreCatalog`'s, `terms` aligned with their line items.
    #[new]
    fn new(
        tables: CatalogTables,
        terms: Vec<TermsTuple>,
        max_fingerprints: usize,
        max_remembered_owners: usize,
    ) -> PyResult<Self> {
        let (catalog, terms, owners) = engine_tables(&tables, &terms)?;
        let rater = Rater::new(max_fingerprints, max_remembered_owners);
        Ok(CoreEngine {
            engine: Engine::new(catalog, terms, owners, rater),
            partitions: Vec::new(),
            partition_numbers: HashMap::new(),
            held_columns: None,
            line_item_columns: Default::default(),
            results: Vec::new(),
            missing_keys: None,
        })
    }

    /// A new catalog version (tables as `__init__`'s), keeping the rating
    /// state (`Engine::replace_catalog`). Periods must be added again.
    fn replace_catalog(&mut self, tables: CatalogTables, terms: Vec<TermsTuple>) -> PyResult<()> {
        let (catalog, terms, owners) = engine_tables(&tables, &terms)?;
        self.engine.replace_catalog(catalog, terms, owners);
        self.missing_keys = None;
        self.held_columns = None;
        self.line_item_columns = Default::default();
        Ok(())
    }

    /// Per catalog line item (aligned with the tables' `line_items`) its
    /// stored columns: sub line item id, subscription id, price id, feature
    /// id, meter id, currency. Call after `__init__` and `replace_catalog`.
    fn set_line_item_columns(&mut self, columns: Vec<[String; LINE_ITEM_FIELDS]>) {
        self.line_item_columns = Default::default();
        for item in &columns {
            for (field, value) in self.line_item_columns.iter_mut().zip(item) {
                field.push(value);
            }
        }
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
    /// hold its rows. When routing finds events in billing periods the
    /// catalog lacks, `periods_for` (if given) is called with the `need`
    /// list `[(subscription, timestamp µs)]` and returns the periods to add
    /// `[(subscription, start µs, end µs)]`; the batch is then routed again
    /// (up to `PERIOD_ROUNDS` times) without decoding it again. When the
    /// returned `need` is not empty nothing is held: add those periods and
    /// call again.
    #[pyo3(signature = (messages, now_us, limits, periods_for=None))]
    fn prepare<'py>(
        &mut self,
        py: Python<'py>,
        messages: &Bound<'py, PyAny>,
        now_us: i64,
        limits: LimitsTuple,
        periods_for: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<PrepareResult<'py>> {
        let batch = Batch::read(messages, now_us, limits)?;
        let (message_partitions, offsets) = self.batch_partitions(&batch);
        // The last batch's columns are done with (`rate` copied them): their room is reused.
        let recycled = self.held_columns.take().map(|(raw, _)| raw);
        let (accepted, rejected, columns, properties) = py.detach(|| {
            let mut properties = crate::event::BatchProperties::with_capacity(batch.len());
            let (accepted, rejected, columns) = decode_all(&batch, Some(&mut properties), recycled);
            (accepted, rejected, columns, properties)
        });
        let mut round = 1;
        let prepared = loop {
            let event_partitions = accepted.iter().map(|&m| message_partitions[m]).collect();
            let engine = &mut self.engine;
            let prepared = py.detach(|| engine.prepare(&columns, &properties, event_partitions));
            let Some(periods_for) = periods_for.filter(|_| !prepared.need.is_empty()) else {
                break prepared;
            };
            if round == PERIOD_ROUNDS {
                break prepared;
            }
            round += 1;
            let periods: Vec<(usize, i64, i64)> =
                periods_for.call1((&prepared.need,))?.extract()?;
            let catalog = self.engine.catalog_mut();
            for (subscription, start, end) in periods {
                catalog
                    .add_period(subscription, start, end)
                    .map_err(table_error)?;
            }
        };
        let unresolved = unresolved_counts(&prepared.unresolved);
        let customers = string_buffers(py, &prepared.customers);
        let buffers = raw_buffers(py, &columns)?;
        self.held_columns = Some((columns, prepared.customers));
        let offsets = offsets
            .into_iter()
            .map(|(number, first, next)| {
                let (topic, partition) = &self.partitions[number as usize];
                (topic.clone(), *partition, first, next)
            })
            .collect();
        Ok((
            accepted,
            rejected,
            prepared.need,
            customers,
            unresolved,
            prepared.missing_fields,
            buffers,
            offsets,
        ))
    }

    /// The `(topic, partition, line item, period id)` of the held rows whose
    /// (partition, state) was not reported before, each once (see
    /// `Engine::touched`: a pair stays reported until `drop_states` drops the
    /// state). Call once per batch, after `rate`, and keep the answer.
    ///
    /// Each pair is `((topic, partition), state key)`: the state key is made
    /// as `key_type` (a `tuple` subclass) of `names[line item]` (a tuple of
    /// its state's (tenant, environment, line item id)) and the period id.
    fn touched<'py>(
        &mut self,
        key_type: &Bound<'py, PyType>,
        names: &Bound<'py, PyList>,
    ) -> PyResult<Bound<'py, PyList>> {
        let py = key_type.py();
        let found = self.engine.touched();
        let keys = StateKeys::new(key_type, names)?;
        // The keys `missing` made, if made as these would be.
        let made = self
            .missing_keys
            .as_ref()
            .filter(|made| made.key_type.is(key_type) && made.names.is(names));
        let mut partitions: Vec<Option<Bound<'py, PyTuple>>> = vec![None; self.partitions.len()];
        let pairs = PyList::empty(py);
        for (number, line_item, period_id) in found {
            let partition = match &partitions[number as usize] {
                Some(partition) => partition.clone(),
                None => {
                    let (topic, partition) = &self.partitions[number as usize];
                    let made = (topic.as_str(), *partition).into_pyobject(py)?;
                    partitions[number as usize] = Some(made.clone());
                    made
                }
            };
            let position = made.and_then(|_| self.engine.missing_position(line_item, period_id));
            let key = match (made, position) {
                (Some(made), Some(position)) => made.keys[position].bind(py).clone(),
                _ => keys.key(line_item, period_id)?,
            };
            pairs.append((partition, key))?;
        }
        Ok(pairs)
    }

    fn missing_states(&mut self) -> Vec<KeyTuple> {
        self.engine.missing_states().into_iter().collect()
    }

    /// The held rows' states not in memory, each once (`Engine::missing`),
    /// as two lists: their state keys (made as `touched` makes them) and the
    /// `windows` entry of the line item whose terms each loads with (None
    /// when no line item of the catalog has its name, so it is not loaded).
    /// `coverable_at` and `load_at` name them by position in these lists
    /// (until the next call): the first touch crosses back without keys.
    fn missing<'py>(
        &mut self,
        key_type: &Bound<'py, PyType>,
        names: &Bound<'py, PyList>,
        windows: &Bound<'py, PyList>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
        let py = key_type.py();
        let keys = StateKeys::new(key_type, names)?;
        let states = PyList::empty(py);
        let loads_with = PyList::empty(py);
        self.missing_keys = None;
        let mut made = Vec::new();
        for (line_item, period_id, terms) in self.engine.missing() {
            let key = keys.key(line_item, period_id)?;
            states.append(&key)?;
            made.push(key.unbind());
            match terms {
                Some(terms) => loads_with.append(windows.get_item(terms)?)?,
                None => loads_with.append(py.None())?,
            }
        }
        self.missing_keys = Some(MadeKeys {
            key_type: key_type.clone().unbind(),
            names: names.clone().unbind(),
            keys: made,
        });
        Ok((states, loads_with))
    }

    /// `coverable` of the states `missing` answered, by position.
    fn coverable_at(&self, counts: Vec<(usize, i64)>) -> PyResult<Vec<usize>> {
        self.engine
            .coverable_at(&counts)
            .map_err(pyo3::exceptions::PyValueError::new_err)
    }

    /// `load_states` of the states `missing` answered, by position.
    #[pyo3(signature = (snapshots, stored_fingerprints=None))]
    fn load_at(
        &mut self,
        snapshots: Vec<(usize, Option<SnapshotTuple>)>,
        stored_fingerprints: Option<Vec<(usize, Vec<u64>)>>,
    ) -> PyResult<()> {
        let snapshots = loaded_snapshots(snapshots)?;
        self.engine
            .load_at(snapshots, stored_fingerprints)
            .map_err(pyo3::exceptions::PyValueError::new_err)
    }

    fn coverable(&self, counts: Vec<(KeyTuple, i64)>) -> Vec<KeyTuple> {
        self.engine.coverable(&counts)
    }

    #[pyo3(signature = (snapshots, stored_fingerprints=None))]
    fn load_states(
        &mut self,
        snapshots: Vec<(KeyTuple, Option<SnapshotTuple>)>,
        stored_fingerprints: Option<HashMap<KeyTuple, Vec<u64>>>,
    ) -> PyResult<()> {
        let snapshots = loaded_snapshots(snapshots)?;
        self.engine
            .load_states(snapshots, stored_fingerprints.as_ref());
        Ok(())
    }

    /// The dedup keys only the store can answer, by state: `(state key, unique hashes)`.
    fn lookup_keys(&mut self) -> Vec<(KeyTuple, Vec<String>)> {
        self.engine.lookup_keys()
    }

    fn remember(&mut self, owners: Vec<(KeyTuple, String, String)>) {
        self.engine.remember(&crate::parsed_owners(owners));
    }

    /// Rate the held rows. Returns the written rows' columns as Arrow buffers
    /// (`row`, `event`, `line_item`: int32; `period_id`: int64; `outcome`:
    /// int8, 0 counted and 1 repeated value; `unique_hash`: utf8 offsets and
    /// data; the six deltas: decimal128(38, 15)), the counts of counted,
    /// repeated and skipped rows, and `(event, line item, period id)` of
    /// refused rows (`value_out_of_range`). With the held event columns the
    /// rows' `final_lag_ms` too (uint32, `final_lag_ms` of the rows' event
    /// times at `processed_at_us`).
    #[allow(clippy::type_complexity)]
    fn rate<'py>(
        &mut self,
        py: Python<'py>,
        processed_at_us: i64,
    ) -> PyResult<(
        Bound<'py, PyDict>,
        usize,
        (usize, usize, usize),
        Vec<(usize, usize, i64)>,
    )> {
        let engine = &mut self.engine;
        let results = &mut self.results;
        let no_ids = StringColumn::new();
        let ids = self
            .held_columns
            .as_ref()
            .map_or(&no_ids, |(raw, _)| &raw.id);
        let outcomes = py.detach(|| engine.rate_into(ids, results));
        let (pending, sources) = engine.rows();
        let rows = results.len();
        let mut row_index = Vec::with_capacity(rows);
        let mut events = Vec::with_capacity(rows);
        let mut line_items = Vec::with_capacity(rows);
        let mut periods = Vec::with_capacity(rows);
        let mut outcome_codes = Vec::with_capacity(rows);
        let mut hashes: Vec<&UniqueHash> = Vec::with_capacity(rows);
        let mut written: Vec<&Delta> = Vec::with_capacity(rows);
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
            written.push(delta);
        }
        let columns = PyDict::new(py);
        columns.set_item("row", le_pybytes(py, &row_index, i32::to_le_bytes)?)?;
        set_row_sources(&columns, &events, &line_items, &periods)?;
        columns.set_item("outcome", le_pybytes(py, &outcome_codes, i8::to_le_bytes)?)?;
        columns.set_item("unique_hash", hash_buffers(py, &hashes)?)?;
        // Each delta column straight from the deltas (no column in between).
        let fields: [(&str, fn(&Delta) -> i128); 6] = [
            ("qty_total", |d| d.qty_total),
            ("qty_billable", |d| d.qty_billable),
            ("qty_free_applied", |d| d.qty_free_applied),
            ("tier_snapshot", |d| d.tier_snapshot),
            ("unit_cost", |d| d.unit_cost),
            ("cost", |d| d.cost),
        ];
        for (name, field) in fields {
            let column = gathered_le(py, written.len(), |k| field(written[k]).to_le_bytes())?;
            columns.set_item(name, column)?;
        }
        self.set_processed_columns(&columns, &events, &line_items, processed_at_us)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_lags_are_whole_milliseconds_clamped_to_u32() {
        let at = 1_767_225_600_000_000;
        assert_eq!(final_lag_ms(at, at), 0);
        assert_eq!(final_lag_ms(at, at - 999), 0);
        assert_eq!(final_lag_ms(at, at - 1000), 1);
        assert_eq!(final_lag_ms(at, at - 2_500_999), 2500);
        // From the future: 0, however far.
        assert_eq!(final_lag_ms(at, at + 1), 0);
        assert_eq!(final_lag_ms(at, i64::MAX), 0);
        // Beyond u32::MAX ms (~49.7 days): the largest u32.
        let most = i64::from(u32::MAX) * 1000;
        assert_eq!(final_lag_ms(at, at - most), u32::MAX);
        assert_eq!(final_lag_ms(at, at - most - 1000), u32::MAX);
        assert_eq!(final_lag_ms(i64::MAX, i64::MIN), u32::MAX);
    }

    #[test]
    fn line_item_texts_are_read_back_as_pushed() {
        let mut field = StringColumn::default();
        let values = ["sub-1", "", "é€", "sub-22"];
        for value in values {
            field.push(value);
        }
        assert_eq!(field.len(), values.len());
        for (item, value) in values.iter().enumerate() {
            assert_eq!(field.get(item), *value);
            assert_eq!(field.bytes(item), value.as_bytes());
        }
    }

    #[test]
    fn short_and_long_texts_are_copied_whole() {
        let source: Vec<u8> = (0..100u8).map(|n| n.wrapping_mul(37) | 1).collect();
        for len in 0..=source.len() {
            let mut out = vec![MaybeUninit::new(0u8); len];
            copy_text(&mut out, &source[..len]);
            // SAFETY: every byte was initialised (to 0) before the copy.
            let copied: Vec<u8> = out.iter().map(|b| unsafe { b.assume_init() }).collect();
            assert_eq!(copied, &source[..len], "{len} bytes");
        }
    }

    #[test]
    fn hashes_are_written_as_their_strings() {
        let digest = UniqueHash::parse(&crate::sha256::hex_of_parts(&["t", "e", "id"]));
        for hash in [digest, UniqueHash::parse("h1"), UniqueHash::parse("")] {
            let text = hash.with_text(|text| String::from_utf8(text.to_vec()).unwrap());
            assert_eq!(text, hash.to_string());
        }
    }
}
