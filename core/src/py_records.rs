//! The consumer runtime's per-batch check of what `consume()` returned, in
//! one call instead of a Python loop over the messages.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PySet, PyTuple};

/// The total bytes of the messages' values when every message is usable as
/// it is: no error, an offset, and its `(topic, partition)` in `assigned`.
/// `None` as soon as one is not: the caller then checks them one by one
/// (`ConsumerRuntime._usable`), which also says why.
///
/// `messages` are Kafka messages as the consumer returns them (methods
/// `error()`, `offset()`, `topic()`, `partition()`, `value()`).
#[pyfunction]
pub(crate) fn usable_bytes(
    messages: &Bound<'_, PyAny>,
    assigned: &Bound<'_, PySet>,
) -> PyResult<Option<usize>> {
    let py = messages.py();
    let mut total = 0usize;
    // Messages come in runs of one partition: look a partition up once per run.
    let mut last: Option<(PyBackedStr, i64)> = None;
    for message in messages.try_iter()? {
        let message = message?;
        if !message.call_method0(intern!(py, "error"))?.is_none()
            || message.call_method0(intern!(py, "offset"))?.is_none()
        {
            return Ok(None);
        }
        let topic_object = message.call_method0(intern!(py, "topic"))?;
        let partition_object = message.call_method0(intern!(py, "partition"))?;
        let (Ok(topic), Ok(partition)) = (
            topic_object.extract::<PyBackedStr>(),
            partition_object.extract::<i64>(),
        ) else {
            return Ok(None); // no position: the caller's check says what it is
        };
        let same = last
            .as_ref()
            .is_some_and(|(t, p)| *p == partition && **t == *topic);
        if !same {
            let key = PyTuple::new(py, [topic_object, partition_object])?;
            if !assigned.contains(key)? {
                return Ok(None);
            }
            last = Some((topic, partition));
        }
        let value = message.call_method0(intern!(py, "value"))?;
        if !value.is_none() {
            total += value.len()?;
        }
    }
    Ok(Some(total))
}
