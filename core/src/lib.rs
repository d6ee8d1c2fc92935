//! `worker._core`: the compiled batch core of events-worker.
//!
//! The pure stages live in their own modules, free of Python types, so that
//! `cargo test` exercises them without an interpreter; this file only binds
//! them to Python. Today the core covers the first stage of the batch:
//! message values -> rejection reasons and the columns of the raw `events`
//! table (see docs/core.md for what is still to come).

pub mod columns;
pub mod decimal;
pub mod event;
pub mod fixed;
pub mod json;
pub mod text;
pub mod timestamp;

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict};

use event::{decode_event, Limits, RawColumns};

/// The version of the core, so Python can check that the built extension matches.
#[pyfunction]
fn core_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Decode and validate a batch of message values.
///
/// Arguments are parallel lists (value, topic, partition, offset, Kafka
/// timestamp in ms or None), the batch time in µs (the timestamp of messages
/// without one and without a positive Kafka timestamp) and the limits as
/// `(max_message_bytes, max_properties, max_key_chars, max_id_chars,
/// max_string_value_chars)`.
///
/// Returns `(accepted, rejected, strings, timestamps)`: the indices of the
/// accepted messages; `(index, reason)` of the others; per string column of
/// `events` its `(offsets, data)` Arrow buffers; the int64 µs timestamps as
/// little-endian bytes. Pure: no state, the GIL released while decoding.
#[pyfunction]
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn decode_batch<'py>(
    py: Python<'py>,
    // Borrowed from the bytes objects: no copy, and no per-byte conversion.
    values: Vec<Option<PyBackedBytes>>,
    topics: Vec<String>,
    partitions: Vec<i64>,
    offsets: Vec<i64>,
    timestamps_ms: Vec<Option<i64>>,
    now_us: i64,
    limits: (usize, usize, usize, usize, usize),
) -> PyResult<(
    Vec<usize>,
    Vec<(usize, &'static str)>,
    Bound<'py, PyDict>,
    Bound<'py, PyBytes>,
)> {
    let count = values.len();
    if [
        topics.len(),
        partitions.len(),
        offsets.len(),
        timestamps_ms.len(),
    ]
    .iter()
    .any(|n| *n != count)
    {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "decode_batch: argument lists differ in length",
        ));
    }
    let limits = Limits {
        max_message_bytes: limits.0,
        max_properties: limits.1,
        max_key_chars: limits.2,
        max_id_chars: limits.3,
        max_string_value_chars: limits.4,
    };
    let (accepted, rejected, columns) = py.detach(|| {
        let mut accepted = Vec::with_capacity(count);
        let mut rejected = Vec::new();
        let mut columns = RawColumns::new();
        for i in 0..count {
            let Some(value) = &values[i] else {
                rejected.push((i, event::Reason::EmptyMessage.code()));
                continue;
            };
            let fallback_id = || format!("{}-{}-{}", topics[i], partitions[i], offsets[i]);
            let fallback_us = match timestamps_ms[i] {
                Some(ms) if ms > 0 => ms * 1000,
                _ => now_us,
            };
            match decode_event(value, fallback_id, fallback_us, &limits, &mut columns) {
                Ok(()) => accepted.push(i),
                Err(reason) => rejected.push((i, reason.code())),
            }
        }
        (accepted, rejected, columns)
    });
    let strings = PyDict::new(py);
    for (name, column) in columns.string_columns() {
        let buffers = (
            PyBytes::new(py, &column.offset_bytes()),
            PyBytes::new(py, column.data()),
        );
        strings.set_item(name, buffers)?;
    }
    let timestamps: Vec<u8> = columns
        .timestamp_us
        .iter()
        .flat_map(|t| t.to_le_bytes())
        .collect();
    Ok((accepted, rejected, strings, PyBytes::new(py, &timestamps)))
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

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(core_version, m)?)?;
    m.add_function(wrap_pyfunction!(decode_batch, m)?)?;
    m.add_function(wrap_pyfunction!(fixed_point_ops, m)?)?;
    Ok(())
}
