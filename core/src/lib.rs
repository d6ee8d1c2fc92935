//! `worker._core`: the compiled batch core of events-worker.
//!
//! The pure stages live in their own modules, free of Python types, so that
//! `cargo test` exercises them without an interpreter; this file only binds
//! them to Python. Today the core covers the first stage of the batch:
//! message values -> rejection reasons and the columns of the raw `events`
//! table (see docs/core.md for what is still to come).

pub mod aggregate;
pub mod catalog;
pub mod columns;
pub mod decimal;
pub mod engine;
pub mod event;
pub mod fixed;
pub mod fxhash;
pub mod json;
pub mod key_table;
pub mod measure;
pub mod period_rating;
pub mod pricing;
mod py_engine;
mod py_records;
pub mod rater;
pub mod sha256;
pub mod text;
pub mod timestamp;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyBytes, PyDict, PyString, PyType};

use catalog::{Catalog, EventView, LineItemRow, MeterRow, Resolution, SubscriptionRow};
use event::{decode_event, BatchProperties, Limits, RawColumns};
use sha256::UniqueHash;

/// Hash owners `(state, unique hash, event id)` with the hash as the core holds it.
pub(crate) fn parsed_owners<K>(owners: Vec<(K, String, String)>) -> Vec<(K, UniqueHash, String)> {
    owners
        .into_iter()
        .map(|(key, unique_hash, event_id)| (key, UniqueHash::parse(&unique_hash), event_id))
        .collect()
}

/// The version of the core, so Python can check that the built extension matches.
#[pyfunction]
fn core_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Rows of a decoded batch: accepted indices, `(index, reason)` of the others,
/// and the raw columns of the accepted ones.
type Decoded = (Vec<usize>, Vec<(usize, &'static str)>, RawColumns);

/// One batch as the core reads it: the messages' fields, read through the C
/// API from the message objects (`worker.core_decode.Message`: `value`,
/// `topic`, `partition`, `offset`, `timestamp_ms`), so Python builds no list
/// per field; the batch time in µs (the timestamp of messages without one and
/// without a positive Kafka timestamp); the event limits.
pub(crate) struct Batch {
    // Borrowed from the bytes and str objects: no copy.
    values: Vec<Option<PyBackedBytes>>,
    /// One entry per run of messages sharing one topic object (a batch's
    /// messages mostly share one), so a topic is read once per run.
    topics: Vec<PyBackedStr>,
    /// Per message the index of its topic in `topics`.
    topic_of: Vec<u32>,
    /// The last message's topic object: records of one batch mostly share
    /// one, so its text is read once.
    last_topic: Option<Py<PyAny>>,
    partitions: Vec<i64>,
    offsets: Vec<i64>,
    timestamps_ms: Vec<Option<i64>>,
    now_us: i64,
    limits: Limits,
}

/// The limits tuple Python passes: `(max_message_bytes, max_properties,
/// max_key_chars, max_id_chars, max_string_value_chars)`.
type LimitsTuple = (usize, usize, usize, usize, usize);

impl Batch {
    /// Read `messages` (any sized iterable of message objects). Raises when a
    /// field is missing or of the wrong type.
    ///
    /// The messages are either all records as the pipeline hands them
    /// (`worker.core_decode.Message`: attributes `value`, `topic`,
    /// `partition`, `offset`, `timestamp_ms`) or all Kafka messages as the
    /// consumer returns them (`confluent_kafka.Message` and its in-memory
    /// stand-in: methods `value()`, `topic()`, `partition()`, `offset()`,
    /// `timestamp()`); the first message decides. Reading Kafka messages
    /// directly spares the consumer a Python object per message.
    pub(crate) fn read(
        messages: &Bound<'_, PyAny>,
        now_us: i64,
        limits: LimitsTuple,
    ) -> PyResult<Batch> {
        let py = messages.py();
        let count = messages.len().unwrap_or(0);
        let mut batch = Batch {
            values: Vec::with_capacity(count),
            topics: Vec::new(),
            topic_of: Vec::with_capacity(count),
            last_topic: None,
            partitions: Vec::with_capacity(count),
            offsets: Vec::with_capacity(count),
            timestamps_ms: Vec::with_capacity(count),
            now_us,
            limits: Limits {
                max_message_bytes: limits.0,
                max_properties: limits.1,
                max_key_chars: limits.2,
                max_id_chars: limits.3,
                max_string_value_chars: limits.4,
            },
        };
        let messages = messages.try_iter()?.collect::<PyResult<Vec<_>>>()?;
        let Some(first) = messages.first() else {
            return Ok(batch);
        };
        // The first message decides the kind, and its type's fields are
        // resolved once for the messages of that type.
        let kafka = !first.hasattr(intern!(py, "timestamp_ms")).unwrap_or(false);
        let resolved = FieldReader::resolve(&first.get_type(), kafka);
        let fields_of = |message: &Bound<'_, PyAny>| {
            let ty = message.get_type_ptr();
            resolved.as_ref().filter(|f| ty == f.ty.as_type_ptr())
        };
        // Every value object first: each is cold (built when its message
        // was), and this short loop lets the loads of several overlap
        // instead of stalling on one per message among the other fields.
        let values = messages
            .iter()
            .map(|message| read_field(message, kafka, fields_of(message), 0))
            .collect::<PyResult<Vec<_>>>()?;
        for (message, value) in messages.iter().zip(values) {
            batch.push(message, kafka, fields_of(message), value)?;
        }
        Ok(batch)
    }

    /// One message, whose field 0 (`value`) was read as `value`: a record
    /// read by attribute or, with `kafka`, a Kafka message read by method,
    /// whose timestamp is None when its type is `TIMESTAMP_NOT_AVAILABLE`
    /// (0), as `usage_batch.source_message` has it. `fields`: the resolved
    /// fields of the message's type, if any.
    fn push<'py>(
        &mut self,
        message: &Bound<'py, PyAny>,
        kafka: bool,
        fields: Option<&FieldReader<'py>>,
        value: Bound<'py, PyAny>,
    ) -> PyResult<()> {
        let field = |index: usize| read_field(message, kafka, fields, index);
        self.values.push(value.extract()?);
        self.push_topic(field(1)?)?;
        self.partitions.push(field(2)?.extract()?);
        self.offsets.push(field(3)?.extract()?);
        let timestamp_ms = if kafka {
            let (kind, timestamp): (i64, i64) = field(4)?.extract()?;
            (kind != 0).then_some(timestamp)
        } else {
            field(4)?.extract()?
        };
        self.timestamps_ms.push(timestamp_ms);
        Ok(())
    }

    /// The message's topic: a new entry only when it differs from the last
    /// message's (Kafka messages carry a topic object each, so compare text).
    fn push_topic(&mut self, topic: Bound<'_, PyAny>) -> PyResult<()> {
        let same_object = self.last_topic.as_ref().is_some_and(|last| last.is(&topic));
        if !same_object {
            let text: PyBackedStr = topic.extract()?;
            if self.topics.last().is_none_or(|last| **last != *text) {
                self.topics.push(text);
            }
            self.last_topic = Some(topic.unbind());
        }
        self.topic_of.push(self.topics.len() as u32 - 1);
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }

    /// Message `i`'s (topic, partition).
    pub(crate) fn partition(&self, i: usize) -> (&str, i64) {
        (self.topic(i), self.partitions[i])
    }

    /// Message `i`'s topic.
    fn topic(&self, i: usize) -> &str {
        &self.topics[self.topic_of[i] as usize]
    }

    /// Whether messages `i` and `j` have the same (topic, partition); false
    /// may also mean that their topics are equal but not the same object.
    pub(crate) fn same_partition(&self, i: usize, j: usize) -> bool {
        self.topic_of[i] == self.topic_of[j] && self.partitions[i] == self.partitions[j]
    }

    /// Message `i`'s offset.
    pub(crate) fn offset(&self, i: usize) -> i64 {
        self.offsets[i]
    }
}

/// Field `index` (in `field_names` order) of `message`: through `fields`
/// (its type's resolved fields) when given, else by name.
fn read_field<'py>(
    message: &Bound<'py, PyAny>,
    kafka: bool,
    fields: Option<&FieldReader<'py>>,
    index: usize,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some(fields) = fields {
        return fields.read(message, index);
    }
    let name = field_names(message.py(), kafka)[index];
    if kafka {
        message.call_method0(name)
    } else {
        message.getattr(name)
    }
}

/// The names `Batch::push` reads, in its order: a record's attributes, or
/// with `kafka` a Kafka message's methods.
fn field_names(py: Python<'_>, kafka: bool) -> [&Bound<'_, PyString>; 5] {
    if kafka {
        [
            intern!(py, "value"),
            intern!(py, "topic"),
            intern!(py, "partition"),
            intern!(py, "offset"),
            intern!(py, "timestamp"),
        ]
    } else {
        [
            intern!(py, "value"),
            intern!(py, "topic"),
            intern!(py, "partition"),
            intern!(py, "offset"),
            intern!(py, "timestamp_ms"),
        ]
    }
}

/// The five fields of messages of one type, looked up once on the type
/// instead of once per message and field (`getattr` and method calls look
/// the name up along the type's MRO, then check the instance).
///
/// Only where the lookup's answer cannot depend on the instance and reading
/// runs no Python code: the type uses the generic attribute lookup, and each
/// name resolves to a C-level data descriptor of the type (`__slots__`
/// members, getset attributes: what a getattr then returns, whatever the
/// instance holds) or, for Kafka messages, to a C-level method of a type
/// without an instance `__dict__` (what a method call then calls, with the
/// message as `self`). The descriptors are held, so a class changed while a
/// batch is read would be read as it was when the batch started.
struct FieldReader<'py> {
    ty: Bound<'py, PyType>,
    fields: [ResolvedField<'py>; 5],
}

enum ResolvedField<'py> {
    /// A data descriptor and its type's `tp_descr_get`.
    Data(Bound<'py, PyAny>, pyo3::ffi::descrgetfunc),
    /// A method descriptor, called with the message as its argument.
    Method(Bound<'py, PyAny>),
}

impl<'py> FieldReader<'py> {
    /// The fields of messages of type `ty`, or None when a field's lookup
    /// cannot be resolved on the type (see the type docs).
    fn resolve(ty: &Bound<'py, PyType>, kafka: bool) -> Option<FieldReader<'py>> {
        use pyo3::ffi;
        let py = ty.py();
        let slot = |ty: &Bound<'py, PyType>, slot| {
            // SAFETY: `ty` is a live type object; PyType_GetSlot reads any
            // type's slots (static types too, since Python 3.10).
            unsafe { ffi::PyType_GetSlot(ty.as_type_ptr(), slot) }
        };
        let generic = ffi::PyObject_GenericGetAttr as *mut std::ffi::c_void;
        if slot(ty, ffi::Py_tp_getattro) != generic {
            return None;
        }
        if kafka && ty.getattr("__dictoffset__").ok()?.extract::<isize>().ok()? != 0 {
            return None;
        }
        let mro = ty.getattr(intern!(py, "__mro__")).ok()?;
        let lookup = |name: &Bound<'py, PyString>| -> Option<Bound<'py, PyAny>> {
            for class in mro.try_iter().ok()? {
                let namespace = class.ok()?.getattr(intern!(py, "__dict__")).ok()?;
                if namespace.contains(name).ok()? {
                    return namespace.get_item(name).ok();
                }
            }
            None
        };
        let resolve_one = |name: &Bound<'py, PyString>| -> Option<ResolvedField<'py>> {
            let descriptor = lookup(name)?;
            let kind = descriptor.get_type();
            let builtin = kind.module().ok()?.to_str().ok()? == "builtins";
            let kind_name = kind.name().ok()?;
            let kind_name = kind_name.to_str().ok()?;
            if !builtin {
                return None;
            }
            if kafka {
                return (kind_name == "method_descriptor")
                    .then_some(ResolvedField::Method(descriptor));
            }
            if kind_name != "member_descriptor" && kind_name != "getset_descriptor" {
                return None;
            }
            let get = slot(&kind, ffi::Py_tp_descr_get);
            if get.is_null() || slot(&kind, ffi::Py_tp_descr_set).is_null() {
                return None;
            }
            // SAFETY: a type's `Py_tp_descr_get` slot holds a `descrgetfunc`.
            let get: ffi::descrgetfunc = unsafe { std::mem::transmute(get) };
            Some(ResolvedField::Data(descriptor, get))
        };
        let names = field_names(py, kafka);
        let fields = [
            resolve_one(names[0])?,
            resolve_one(names[1])?,
            resolve_one(names[2])?,
            resolve_one(names[3])?,
            resolve_one(names[4])?,
        ];
        Some(FieldReader {
            ty: ty.clone(),
            fields,
        })
    }

    /// Field `index` (in `field_names` order) of `message`, whose type is `ty`.
    fn read(&self, message: &Bound<'py, PyAny>, index: usize) -> PyResult<Bound<'py, PyAny>> {
        match &self.fields[index] {
            ResolvedField::Data(descriptor, get) => {
                // SAFETY: `get` is the descriptor type's `tp_descr_get`,
                // called as the generic getattr calls it (descriptor,
                // instance, instance type); it returns a new reference or
                // NULL with an exception set.
                unsafe {
                    let value = get(descriptor.as_ptr(), message.as_ptr(), self.ty.as_ptr());
                    Bound::from_owned_ptr_or_err(message.py(), value)
                }
            }
            // SAFETY: a call of a live callable with one live argument (the
            // list ends with NULL); it returns a new reference or NULL with
            // an exception set. (No argument tuple, unlike `call1`.)
            ResolvedField::Method(descriptor) => unsafe {
                let no_more = std::ptr::null_mut::<pyo3::ffi::PyObject>();
                let value = pyo3::ffi::PyObject_CallFunctionObjArgs(
                    descriptor.as_ptr(),
                    message.as_ptr(),
                    no_more,
                );
                Bound::from_owned_ptr_or_err(message.py(), value)
            },
        }
    }
}

/// Decoding a payload first waits on memory (`Batch::read` touched only the
/// bytes object's first line): its loads start this many messages ahead
/// (8 measured about 2 % faster than 4 on the bench; 16 no better than 8).
const PAYLOAD_AHEAD: usize = 8;

/// A hint that `payload` will be decoded soon (no effect on any answer):
/// start loading its first cache lines (all of a typical event).
fn prefetch_payload(payload: &[u8]) {
    let start = payload.as_ptr();
    for offset in (0..payload.len().min(1024)).step_by(64) {
        key_table::prefetch_line(start.wrapping_add(offset));
    }
}

/// The decode loop shared by `decode_batch`, `CoreCatalog.resolve_batch` and
/// `CoreEngine.prepare`; `keep` collects the accepted events' properties.
/// The columns are written into `recycled` (emptied first) when given: the
/// room of an earlier batch's columns, so no fresh pages per batch.
fn decode_all<'a>(
    batch: &'a Batch,
    keep: Option<&mut BatchProperties<'a>>,
    recycled: Option<RawColumns>,
) -> Decoded {
    let count = batch.len();
    let mut accepted = Vec::with_capacity(count);
    let mut rejected = Vec::new();
    let mut columns = match recycled {
        Some(mut columns) => {
            columns.clear();
            columns
        }
        None => {
            let bytes = batch.values.iter().flatten().map(|v| v.len()).sum();
            RawColumns::with_capacity(count, bytes)
        }
    };
    // Without `keep`, one event's properties at a time.
    let mut scratch = BatchProperties::default();
    let dropped = keep.is_none();
    let properties = keep.unwrap_or(&mut scratch);
    for i in 0..count {
        if dropped {
            properties.clear();
        }
        if let Some(Some(next)) = batch.values.get(i + PAYLOAD_AHEAD) {
            prefetch_payload(next);
        }
        let Some(value) = &batch.values[i] else {
            rejected.push((i, event::Reason::EmptyMessage.code()));
            continue;
        };
        let fallback_id = || {
            let topic = batch.topic(i);
            format!("{}-{}-{}", topic, batch.partitions[i], batch.offsets[i])
        };
        let fallback_us = match batch.timestamps_ms[i] {
            Some(ms) if ms > 0 => ms * 1000,
            _ => batch.now_us,
        };
        let limits = &batch.limits;
        match decode_event(
            value,
            fallback_id,
            fallback_us,
            limits,
            &mut columns,
            properties,
        ) {
            Ok(()) => accepted.push(i),
            Err(reason) => rejected.push((i, reason.code())),
        }
    }
    (accepted, rejected, columns)
}

fn table_error(error: catalog::TableError) -> PyErr {
    pyo3::exceptions::PyValueError::new_err(error.0)
}

/// Customers `(tenant, environment, id, external id)`.
type CustomerTuple = (String, String, String, String);
/// Subscriptions `(tenant, environment, customer, status, start µs, end µs, cancelled µs)`.
type SubscriptionTuple = (
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);
/// Meters `(id, event name, aggregation, field, multiplier, [(key, [values])])`.
type MeterTuple = (
    String,
    String,
    String,
    String,
    String,
    Vec<(String, Vec<String>)>,
);
/// Line items `(id, subscription index, start µs, end µs, meter index)`.
type LineItemTuple = (String, usize, i64, Option<i64>, usize);
/// A catalog version's tables as Python hands them over, in this order.
type CatalogTables = (
    Vec<CustomerTuple>,
    Vec<SubscriptionTuple>,
    Vec<MeterTuple>,
    Vec<LineItemTuple>,
);
/// One routed (event, line item): `(row, line item, period id, period start µs,
/// period end µs, quantity × 10^15 as text, unique hash, field missing)`.
type MatchTuple = (usize, usize, i64, i64, i64, String, String, bool);

/// The catalog of the tables Python passes (`CoreCatalog`, `CoreEngine`).
fn catalog_of(tables: &CatalogTables) -> PyResult<Catalog> {
    let (customers, subscriptions, meters, line_items) = tables;
    let customers: Vec<(&str, &str, &str, &str)> = customers
        .iter()
        .map(|(t, e, c, x)| (t.as_str(), e.as_str(), c.as_str(), x.as_str()))
        .collect();
    let subscriptions: Vec<SubscriptionRow<'_>> = subscriptions
        .iter()
        .map(|s| SubscriptionRow {
            tenant_id: &s.0,
            environment_id: &s.1,
            customer_id: &s.2,
            status: &s.3,
            start_us: s.4,
            end_us: s.5,
            cancelled_us: s.6,
        })
        .collect();
    let meters: Vec<MeterRow<'_>> = meters
        .iter()
        .map(|m| MeterRow {
            id: &m.0,
            event_name: &m.1,
            aggregation: &m.2,
            field: &m.3,
            multiplier: &m.4,
            filters: m
                .5
                .iter()
                .map(|(k, vs)| (k.as_str(), vs.iter().map(String::as_str).collect()))
                .collect(),
        })
        .collect();
    let line_items: Vec<LineItemRow<'_>> = line_items
        .iter()
        .map(|l| LineItemRow {
            id: &l.0,
            subscription: l.1,
            start_us: l.2,
            end_us: l.3,
            meter: l.4,
        })
        .collect();
    Catalog::new(&customers, &subscriptions, &meters, &line_items).map_err(table_error)
}

/// The catalog tables held by the core (`worker/core_catalog.py` builds them).
#[pyclass(module = "worker._core")]
struct CoreCatalog {
    catalog: Catalog,
}

#[pymethods]
impl CoreCatalog {
    #[new]
    fn new(tables: CatalogTables) -> PyResult<Self> {
        Ok(CoreCatalog {
            catalog: catalog_of(&tables)?,
        })
    }

    /// Add billing periods `[start µs, end µs)` Python computed for a subscription.
    fn add_periods(&mut self, subscription: usize, periods: Vec<(i64, i64)>) -> PyResult<()> {
        for (start, end) in periods {
            self.catalog
                .add_period(subscription, start, end)
                .map_err(table_error)?;
        }
        Ok(())
    }

    /// Decode, resolve and measure a batch (arguments as `decode_batch`).
    ///
    /// Returns `(accepted, rejected, need, customers, unresolved, matches)`:
    /// `need` lists `(subscription, timestamp µs)` whose period Python must add
    /// (then call again; nothing else is meaningful in that answer); per
    /// accepted row its catalog customer id (`""` when unknown); `(row,
    /// reason)` of unresolved rows; the matches in row order.
    #[allow(clippy::type_complexity)]
    fn resolve_batch(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        now_us: i64,
        limits: LimitsTuple,
    ) -> PyResult<(
        Vec<usize>,
        Vec<(usize, &'static str)>,
        Vec<(usize, i64)>,
        Vec<String>,
        Vec<(usize, &'static str)>,
        Vec<MatchTuple>,
    )> {
        let batch = Batch::read(messages, now_us, limits)?;
        let catalog = &self.catalog;
        Ok(py.detach(|| {
            let mut decoded = BatchProperties::with_capacity(batch.len());
            let (accepted, rejected, columns) = decode_all(&batch, Some(&mut decoded), None);
            let mut need = Vec::new();
            let mut customers = Vec::with_capacity(accepted.len());
            let mut unresolved = Vec::new();
            let mut matches = Vec::new();
            let mut buffer = Vec::new();
            for row in 0..decoded.len() {
                let event = EventView {
                    id: columns.id.get(row),
                    tenant_id: columns.tenant_id.get(row),
                    environment_id: columns.environment_id.get(row),
                    event_name: columns.event_name.get(row),
                    customer_id: columns.customer_id.get(row),
                    external_customer_id: columns.external_customer_id.get(row),
                    timestamp_us: columns.timestamp_us[row],
                    properties: decoded.get(row),
                };
                let (customer, resolution) = catalog.resolve(&event, &mut buffer);
                customers.push(customer.to_string());
                match resolution {
                    Resolution::Matched(found) => {
                        for m in found {
                            matches.push((
                                row,
                                m.line_item,
                                m.period_id(),
                                m.period.0,
                                m.period.1,
                                fixed::format_scaled(m.measurement.quantity),
                                m.measurement.unique_hash.to_string(),
                                m.measurement.field_missing,
                            ));
                        }
                    }
                    Resolution::Unresolved(reason) => unresolved.push((row, reason.code())),
                    Resolution::NeedPeriods(subscriptions) => {
                        for subscription in subscriptions {
                            need.push((subscription, event.timestamp_us));
                        }
                    }
                }
            }
            (accepted, rejected, need, customers, unresolved, matches)
        }))
    }
}

/// Decode and validate a batch of messages.
///
/// `messages` are message objects (`value`, `topic`, `partition`, `offset`,
/// `timestamp_ms`: Kafka timestamp in ms or None), read through the C API;
/// `now_us` is the batch time in µs (the timestamp of messages without one and
/// without a positive Kafka timestamp); `limits` are `(max_message_bytes,
/// max_properties, max_key_chars, max_id_chars, max_string_value_chars)`.
///
/// Returns `(accepted, rejected, strings, timestamps)`: the indices of the
/// accepted messages; `(index, reason)` of the others; per string column of
/// `events` its `(offsets, data)` Arrow buffers; the int64 µs timestamps as
/// little-endian bytes. Pure: no state, the GIL released while decoding.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn decode_batch<'py>(
    py: Python<'py>,
    messages: &Bound<'py, PyAny>,
    now_us: i64,
    limits: LimitsTuple,
) -> PyResult<(
    Vec<usize>,
    Vec<(usize, &'static str)>,
    Bound<'py, PyDict>,
    Bound<'py, PyBytes>,
)> {
    let batch = Batch::read(messages, now_us, limits)?;
    let (accepted, rejected, columns) = py.detach(|| decode_all(&batch, None, None));
    let (strings, timestamps) = raw_buffers(py, &columns)?;
    Ok((accepted, rejected, strings, timestamps))
}

/// The raw `events` columns as Arrow buffers: `{name: (offsets, data)}` of
/// the string columns, and the timestamps as little-endian int64 µs.
/// A utf8 column's Arrow buffers for Python: `(offsets, data)`.
pub(crate) fn string_buffers<'py>(
    py: Python<'py>,
    column: &columns::StringColumn,
) -> (Bound<'py, PyBytes>, Bound<'py, PyBytes>) {
    let offsets = PyBytes::new_with(py, column.offset_bytes_len(), |out| {
        column.write_offset_bytes(out);
        Ok(())
    })
    .expect("bytes of this length");
    (offsets, PyBytes::new(py, column.data()))
}

fn raw_buffers<'py>(
    py: Python<'py>,
    columns: &RawColumns,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyBytes>)> {
    let strings = PyDict::new(py);
    for (name, column) in columns.string_columns() {
        strings.set_item(name, string_buffers(py, column))?;
    }
    let timestamps: Vec<u8> = columns
        .timestamp_us
        .iter()
        .flat_map(|t| t.to_le_bytes())
        .collect();
    Ok((strings, PyBytes::new(py, &timestamps)))
}

/// Test hook of the fixed-point arithmetic (`fixed.rs`) the rating stage will
/// use: each `(op, a, b)` with op `mul` or `div` and plain decimal operands
/// (at most 15 places) gives the 15-place result, or None when an operand
/// does not parse or the result does not fit.
#[pyfunction]
fn fixed_point_ops(ops: Vec<(String, String, String)>) -> Vec<Option<String>> {
    ops.iter()
        .map(|(op, a, b)| {
            let (a, b) = (fixed::parse_scaled(a)?, fixed::parse_scaled(b)?);
            let result = match op.as_str() {
                "mul" => fixed::mul(a, b),
                "div" => fixed::div(a, b),
                _ => None,
            }?;
            Some(fixed::format_scaled(result))
        })
        .collect()
}

/// A price as Python describes it: `(model, tier mode, amount, [(up_to or
/// None, unit amount, flat amount)], package size, package rounding)`.
type PriceTuple = (
    String,
    String,
    String,
    Vec<(Option<String>, String, String)>,
    String,
    String,
);
/// `(total, count, maximum, (ts µs, event id, value) or None, [(bucket µs, max)])`.
type SnapshotTuple = (
    String,
    i64,
    String,
    Option<(i64, String, String)>,
    Vec<(i64, String)>,
);
/// `(outcome, qty_total, qty_free_applied, qty_billable, cost, unit_cost, tier_snapshot)`.
type DeltaTuple = (&'static str, String, String, String, String, String, String);

fn scaled(text: &str) -> PyResult<i128> {
    fixed::parse_scaled(text).ok_or_else(|| {
        pyo3::exceptions::PyValueError::new_err(format!("not a 15-place decimal: {text}"))
    })
}

fn price_of(price: &PriceTuple) -> PyResult<pricing::Price> {
    let (model, mode, amount, tiers, size, rounding) = price;
    let tiers = tiers
        .iter()
        .map(|(up_to, unit, flat)| {
            Ok(pricing::Tier {
                up_to: up_to.as_deref().map(scaled).transpose()?,
                unit_amount: scaled(unit)?,
                flat_amount: scaled(flat)?,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let bad = || pyo3::exceptions::PyValueError::new_err(format!("unratable price {model}"));
    Ok(match (model.as_str(), mode.as_str()) {
        ("FLAT_FEE", _) => pricing::Price::FlatFee {
            amount: scaled(amount)?,
        },
        ("PACKAGE", _) if scaled(size)? > 0 => pricing::Price::Package {
            amount: scaled(amount)?,
            size: scaled(size)?,
            round_up: rounding == "up",
        },
        ("TIERED", "VOLUME") if !tiers.is_empty() => pricing::Price::Volume { tiers },
        ("TIERED", "SLAB") if !tiers.is_empty() => pricing::Price::Slab { tiers },
        _ => return Err(bad()),
    })
}

/// Test hook of the period rating (`period_rating.rs`, `pricing.rs`,
/// `aggregate.rs`): one (line item, period) state built from `snapshot` and
/// `known` hash owners, then each `(event id, ts µs, quantity, unique hash)`
/// applied in order. Per event its delta, or None when refused
/// (`value_out_of_range`). Decimals travel as plain text with <= 15 places.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn rate_period(
    price: PriceTuple,
    aggregation: String,
    bucket: Option<String>,
    free_units: String,
    snapshot: SnapshotTuple,
    known: Vec<(String, String)>,
    events: Vec<(String, i64, String, String)>,
) -> PyResult<Vec<Option<DeltaTuple>>> {
    let price = price_of(&price)?;
    let bad = |what: &str| pyo3::exceptions::PyValueError::new_err(format!("bad {what}"));
    let kind = measure::Aggregation::from_code(&aggregation).ok_or_else(|| bad("aggregation"))?;
    let bucket = bucket
        .map(|code| aggregate::Bucket::from_code(&code).ok_or_else(|| bad("bucket")))
        .transpose()?;
    let snapshot = snapshot_of(&snapshot)?;
    let aggregate =
        aggregate::Aggregate::new(kind, bucket, &snapshot).ok_or_else(|| bad("snapshot"))?;
    let mut state = period_rating::PeriodRating::new(&price, scaled(&free_units)?, aggregate);
    for (unique_hash, event_id) in &known {
        state.remember(&UniqueHash::parse(unique_hash), event_id);
    }
    let mut out = Vec::with_capacity(events.len());
    for (event_id, ts, quantity, unique_hash) in &events {
        let unique_hash = UniqueHash::parse(unique_hash);
        let result = state.apply(&price, event_id, *ts, scaled(quantity)?, &unique_hash);
        out.push(result.ok().map(|d| delta_tuple(&d)));
    }
    Ok(out)
}

/// A state key `(tenant, environment, line item id, period id)`.
type KeyTuple = (String, String, String, i64);
/// A pending row: `(state key, terms index, event id, ts µs, quantity, unique hash)`.
type PendingTuple = (KeyTuple, usize, String, i64, String, String);
/// Line item terms: `(price, free units, aggregation, bucket size or None)`.
type TermsTuple = (PriceTuple, String, String, Option<String>);

fn terms_of(terms: &TermsTuple) -> PyResult<rater::Terms> {
    let (price, free_units, aggregation, bucket) = terms;
    let bad = |what: &str| pyo3::exceptions::PyValueError::new_err(format!("bad {what}"));
    Ok(rater::Terms {
        price: price_of(price)?,
        free_units: scaled(free_units)?,
        aggregation: measure::Aggregation::from_code(aggregation)
            .ok_or_else(|| bad("aggregation"))?,
        bucket: bucket
            .as_deref()
            .map(|code| aggregate::Bucket::from_code(code).ok_or_else(|| bad("bucket")))
            .transpose()?,
    })
}

/// Loaded states' snapshots, each named by `K` (a key or a position): `None`
/// is an empty one (a state's first load, which most loads are), so Python
/// need not spell it out.
fn loaded_snapshots<K>(
    snapshots: Vec<(K, Option<SnapshotTuple>)>,
) -> PyResult<Vec<(K, aggregate::Snapshot)>> {
    snapshots
        .into_iter()
        .map(|(key, snapshot)| {
            let snapshot = snapshot.as_ref().map(snapshot_of).transpose()?;
            Ok((key, snapshot.unwrap_or_default()))
        })
        .collect()
}

fn snapshot_of(snapshot: &SnapshotTuple) -> PyResult<aggregate::Snapshot> {
    let (total, count, maximum, latest, maxima) = snapshot;
    Ok(aggregate::Snapshot {
        total: scaled(total)?,
        count: *count,
        maximum: scaled(maximum)?,
        latest: latest
            .as_ref()
            .map(|(ts, id, value)| Ok::<_, PyErr>((*ts, id.clone(), scaled(value)?)))
            .transpose()?,
        bucket_maxima: maxima
            .iter()
            .map(|(ts, value)| Ok((*ts, scaled(value)?)))
            .collect::<PyResult<Vec<_>>>()?,
    })
}

fn delta_tuple(d: &period_rating::Delta) -> DeltaTuple {
    (
        d.outcome.code(),
        fixed::format_scaled(d.qty_total),
        fixed::format_scaled(d.qty_free_applied),
        fixed::format_scaled(d.qty_billable),
        fixed::format_scaled(d.cost),
        fixed::format_scaled(d.unit_cost),
        fixed::format_scaled(d.tier_snapshot),
    )
}

/// The rating state held by the core (`engine.UsageRater`'s state rules);
/// `worker/core_rating.py` drives it. Terms are indexed; `line_items` maps
/// `(tenant, environment, line item id)` to the current catalog's terms.
#[pyclass(module = "worker._core")]
struct CoreRater {
    rater: rater::Rater,
    terms: Vec<rater::Terms>,
    line_items: std::collections::HashMap<(String, String, String), usize>,
}

impl CoreRater {
    /// The rows as the rater holds them (a row's `event` is its index: its
    /// id is `rows[event].2`).
    fn pending(rows: &[PendingTuple]) -> PyResult<Vec<rater::Pending>> {
        rows.iter()
            .enumerate()
            .map(|(event, (key, terms, _, ts, quantity, unique_hash))| {
                Ok(rater::Pending {
                    key: key.clone(),
                    terms: *terms,
                    event,
                    timestamp_us: *ts,
                    quantity: scaled(quantity)?,
                    unique_hash: UniqueHash::parse(unique_hash),
                })
            })
            .collect()
    }
}

#[pymethods]
impl CoreRater {
    #[new]
    fn new(max_fingerprints: usize, max_remembered_owners: usize) -> Self {
        CoreRater {
            rater: rater::Rater::new(max_fingerprints, max_remembered_owners),
            terms: Vec::new(),
            line_items: std::collections::HashMap::new(),
        }
    }

    /// Replace the terms table (a catalog load): `(tenant, environment, line
    /// item id, terms)` per line item, indexed in this order.
    fn set_terms(&mut self, items: Vec<(String, String, String, TermsTuple)>) -> PyResult<()> {
        let mut terms = Vec::with_capacity(items.len());
        let mut line_items = std::collections::HashMap::new();
        for (index, (tenant, environment, id, item)) in items.into_iter().enumerate() {
            terms.push(terms_of(&item)?);
            line_items.insert((tenant, environment, id), index);
        }
        self.terms = terms;
        self.line_items = line_items;
        Ok(())
    }

    #[getter]
    fn fingerprint_count(&self) -> usize {
        self.rater.fingerprint_count()
    }

    fn missing_states(&self, rows: Vec<PendingTuple>) -> PyResult<Vec<KeyTuple>> {
        Ok(self
            .rater
            .missing_states(&Self::pending(&rows)?)
            .into_iter()
            .collect())
    }

    fn coverable(&self, counts: Vec<(KeyTuple, i64)>) -> Vec<KeyTuple> {
        self.rater.coverable(&counts)
    }

    #[pyo3(signature = (snapshots, stored_fingerprints=None))]
    fn load_states(
        &mut self,
        snapshots: Vec<(KeyTuple, Option<SnapshotTuple>)>,
        stored_fingerprints: Option<std::collections::HashMap<KeyTuple, Vec<u64>>>,
    ) -> PyResult<()> {
        let snapshots = loaded_snapshots(snapshots)?;
        let (terms, line_items) = (&self.terms, &self.line_items);
        self.rater
            .load_states(&snapshots, stored_fingerprints.as_ref(), |key| {
                let index = line_items.get(&(key.0.clone(), key.1.clone(), key.2.clone()))?;
                terms.get(*index).cloned()
            });
        Ok(())
    }

    fn lookup_keys(&self, rows: Vec<PendingTuple>) -> PyResult<Vec<(KeyTuple, String)>> {
        Ok(self
            .rater
            .lookup_keys(&Self::pending(&rows)?)
            .into_iter()
            .map(|(key, unique_hash)| (key, unique_hash.to_string()))
            .collect())
    }

    fn remember(&mut self, owners: Vec<(KeyTuple, String, String)>) {
        self.rater.remember(&parsed_owners(owners));
    }

    /// Per row `("rated", delta)`, `("skipped", None)` (a redelivery: no row)
    /// or `("refused", None)` (`value_out_of_range`); and the counts of
    /// counted, repeated and skipped rows.
    #[allow(clippy::type_complexity)]
    fn rate(
        &mut self,
        rows: Vec<PendingTuple>,
    ) -> PyResult<(
        Vec<(&'static str, Option<DeltaTuple>)>,
        (usize, usize, usize),
    )> {
        let pending = Self::pending(&rows)?;
        if pending.iter().any(|row| row.terms >= self.terms.len()) {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "rate: terms index out of range",
            ));
        }
        let (results, outcomes) = self
            .rater
            .rate(&pending, &self.terms, |event| rows[event].2.as_str());
        let rows = results
            .iter()
            .map(|result| match result {
                Ok(Some(delta)) => ("rated", Some(delta_tuple(delta))),
                Ok(None) => ("skipped", None),
                Err(_) => ("refused", None),
            })
            .collect();
        Ok((
            rows,
            (outcomes.counted, outcomes.repeated, outcomes.skipped),
        ))
    }

    fn committed(&mut self) {
        self.rater.committed();
    }

    fn forget_hashes(&mut self) {
        self.rater.forget_hashes();
    }

    fn drop_states(&mut self, keys: Vec<KeyTuple>) {
        self.rater.drop_states(&keys);
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(core_version, m)?)?;
    m.add_function(wrap_pyfunction!(decode_batch, m)?)?;
    m.add_function(wrap_pyfunction!(fixed_point_ops, m)?)?;
    m.add_function(wrap_pyfunction!(rate_period, m)?)?;
    m.add_function(wrap_pyfunction!(py_records::usable_bytes, m)?)?;
    m.add_class::<CoreCatalog>()?;
    m.add_class::<CoreRater>()?;
    m.add_class::<py_engine::CoreEngine>()?;
    Ok(())
}
