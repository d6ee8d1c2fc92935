//! One message value -> one validated raw event or a rejection reason
//! (`validation.decode_event` and `store.raw.event_columns` of the reference).
//!
//! The checks run in the reference's order, so a message with several faults
//! gets the same reason code. The detail text of a rejection is not produced
//! here: the caller takes it from the reference for the (rare) dead letters.

use std::borrow::Cow;

use crate::decimal::{numeric_of_string, numeric_text, parse_py_decimal};
use crate::json::{self, Value};
use crate::text::{positional, py_strip, shortest_digits, write_json, FloatStyle};
use crate::timestamp::parse_timestamp;

/// Size limits (`validation.EventLimits`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_properties: usize,
    pub max_key_chars: usize,
    pub max_id_chars: usize,
    pub max_string_value_chars: usize,
}

/// Why a message was rejected: the reference's `InvalidReason` values, plus
/// `empty_message` for a record without a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    EmptyMessage,
    MessageTooLarge,
    InvalidEncoding,
    InvalidJson,
    NotAnObject,
    MissingField,
    WrongType,
    UnknownField,
    InvalidTimestamp,
    PropertiesNotObject,
    TooManyProperties,
    ValueTooLarge,
}

impl Reason {
    /// The dead-letter `reason` code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::EmptyMessage => "empty_message",
            Reason::MessageTooLarge => "message_too_large",
            Reason::InvalidEncoding => "invalid_encoding",
            Reason::InvalidJson => "invalid_json",
            Reason::NotAnObject => "not_an_object",
            Reason::MissingField => "missing_field",
            Reason::WrongType => "wrong_type",
            Reason::UnknownField => "unknown_field",
            Reason::InvalidTimestamp => "invalid_timestamp",
            Reason::PropertiesNotObject => "properties_not_object",
            Reason::TooManyProperties => "too_many_properties",
            Reason::ValueTooLarge => "value_too_large",
        }
    }
}

/// The columns of one `events` row (`ingested_at` is the batch's, not per row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub id: String,
    pub tenant_id: String,
    pub environment_id: String,
    /// Stripped of Python whitespace.
    pub event_name: String,
    pub source: String,
    pub customer_id: String,
    pub external_customer_id: String,
    /// Microseconds since the epoch, UTC.
    pub timestamp_us: i64,
    /// The stored JSON text of `properties` (orjson's spelling).
    pub properties: String,
    /// Canonical value per top-level property (`canonical_json`).
    pub canonical_json: String,
    /// Metered quantity per top-level property (`numeric_json`).
    pub numeric_json: String,
}

/// Identifier fields in the reference's `_STRING_FIELDS` order.
const STRING_FIELDS: [&str; 7] = [
    "id",
    "tenant_id",
    "environment_id",
    "event_name",
    "source",
    "customer_id",
    "external_customer_id",
];
/// `_CHECK_ORDER`: the required fields first.
const CHECK_ORDER: [&str; 7] = [
    "tenant_id",
    "event_name",
    "id",
    "environment_id",
    "source",
    "customer_id",
    "external_customer_id",
];
const OTHER_KNOWN_FIELDS: [&str; 3] = ["timestamp", "properties", "ingested_at"];

/// orjson refuses to write containers nested this deep (counting the
/// properties object itself); the reference then writes with `json.dumps`.
const ORJSON_MAX_WRITE_DEPTH: usize = 255;

/// Decode and validate one message value; see the module docs.
///
/// `fallback_id` makes the id of a message without one (called only then),
/// `fallback_timestamp_us` is the timestamp of a message without one.
pub fn decode_event(
    payload: &[u8],
    fallback_id: impl FnOnce() -> String,
    fallback_timestamp_us: i64,
    limits: &Limits,
) -> Result<RawEvent, Reason> {
    if payload.len() > limits.max_message_bytes {
        return Err(Reason::MessageTooLarge);
    }
    let text = std::str::from_utf8(payload).map_err(|_| Reason::InvalidEncoding)?;
    let document = json::parse(text).map_err(|_| Reason::InvalidJson)?;
    let Value::Object(members) = &document else {
        return Err(Reason::NotAnObject);
    };
    let known = |key: &str| STRING_FIELDS.contains(&key) || OTHER_KNOWN_FIELDS.contains(&key);
    if members.iter().any(|(key, _)| !known(key)) {
        return Err(Reason::UnknownField);
    }
    let mut strings: [&str; 7] = [""; 7];
    for (slot, name) in strings.iter_mut().zip(STRING_FIELDS) {
        match document.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::Str(value)) if value.chars().count() <= limits.max_id_chars => {
                *slot = value
            }
            Some(_) => return Err(string_error(&document, limits)),
        }
    }
    let [event_id, tenant_id, environment_id, event_name, source, customer_id, external_id] =
        strings;
    if tenant_id.is_empty() || event_name.is_empty() {
        return Err(string_error(&document, limits));
    }
    let event_name = py_strip(event_name);
    if event_name.is_empty() || (customer_id.is_empty() && external_id.is_empty()) {
        return Err(Reason::MissingField);
    }
    let empty = Value::Object(Vec::new());
    let properties = match document.get("properties") {
        None | Some(Value::Null) => &empty,
        Some(value @ Value::Object(_)) => value,
        Some(_) => return Err(Reason::PropertiesNotObject),
    };
    let Value::Object(property_members) = properties else {
        unreachable!("properties is an object")
    };
    check_properties(property_members, limits)?;
    let timestamp_us = match document.get("timestamp") {
        None | Some(Value::Null) => fallback_timestamp_us,
        Some(Value::Str(text)) => parse_timestamp(text).map_err(|_| Reason::InvalidTimestamp)?,
        Some(_) => return Err(Reason::InvalidTimestamp),
    };
    let (canonical_json, numeric_json) = derived_properties(property_members);
    Ok(RawEvent {
        id: if event_id.is_empty() {
            fallback_id()
        } else {
            event_id.to_string()
        },
        tenant_id: tenant_id.to_string(),
        environment_id: environment_id.to_string(),
        event_name: event_name.to_string(),
        source: source.to_string(),
        customer_id: customer_id.to_string(),
        external_customer_id: external_id.to_string(),
        timestamp_us,
        properties: properties_text(properties),
        canonical_json,
        numeric_json,
    })
}

/// The first fault among the identifier fields, required ones first.
fn string_error(document: &Value<'_>, limits: &Limits) -> Reason {
    for name in CHECK_ORDER {
        let value = document.get(name);
        let required = name == "tenant_id" || name == "event_name";
        match value {
            None | Some(Value::Null) if required => return Reason::MissingField,
            Some(Value::Str(text)) if required && text.is_empty() => return Reason::MissingField,
            None | Some(Value::Null) => {}
            Some(Value::Str(text)) => {
                if text.chars().count() > limits.max_id_chars {
                    return Reason::ValueTooLarge;
                }
            }
            Some(_) => return Reason::WrongType,
        }
    }
    unreachable!("string_error is called only when a string field is invalid")
}

fn check_properties(members: &[(Cow<'_, str>, Value<'_>)], limits: &Limits) -> Result<(), Reason> {
    if members.len() > limits.max_properties {
        return Err(Reason::TooManyProperties);
    }
    for (key, value) in members {
        if key.chars().count() > limits.max_key_chars {
            return Err(Reason::ValueTooLarge);
        }
        if let Value::Str(text) = value {
            if text.chars().count() > limits.max_string_value_chars {
                return Err(Reason::ValueTooLarge);
            }
        }
    }
    Ok(())
}

/// `store.raw.properties_text`: orjson's text, or `json.dumps`'s where orjson
/// refuses the nesting.
fn properties_text(properties: &Value<'_>) -> String {
    let style = if json::depth(properties) >= ORJSON_MAX_WRITE_DEPTH {
        FloatStyle::PythonRepr
    } else {
        FloatStyle::Orjson
    };
    let mut out = String::new();
    write_json(&mut out, properties, style);
    out
}

/// `store.raw.derived_properties`: the `canonical_json` and `numeric_json` texts.
fn derived_properties(members: &[(Cow<'_, str>, Value<'_>)]) -> (String, String) {
    let mut canonical: Vec<(&str, Cow<'_, str>)> = Vec::new();
    let mut numeric: Vec<(&str, String)> = Vec::new();
    for (key, value) in members {
        let key = key.as_ref();
        match value {
            Value::Str(text) => {
                canonical.push((key, Cow::Borrowed(text.as_ref())));
                if let Some(number) = numeric_of_string(text) {
                    numeric.push((key, number));
                }
            }
            Value::Bool(flag) => {
                canonical.push((key, Cow::Borrowed(if *flag { "true" } else { "false" })))
            }
            Value::Int(number) => {
                canonical.push((key, Cow::Owned(number.to_string())));
                if *number < 1_000_000_000_000_000_000 {
                    let text = if *number > 0 {
                        number.to_string()
                    } else {
                        "0".to_string()
                    };
                    numeric.push((key, text));
                }
            }
            Value::Float(number) => {
                let digits = canonical_float(*number);
                if *number <= 0.0 {
                    numeric.push((key, "0".to_string()));
                } else if *number < 1e18 {
                    let fraction = digits.split_once('.').map_or(0, |(_, f)| f.len());
                    let text = if fraction <= crate::decimal::SCALE {
                        digits.clone()
                    } else {
                        let parsed = parse_py_decimal(&digits).expect("float digits parse");
                        numeric_text(&parsed).expect("below 10^18")
                    };
                    numeric.push((key, text));
                }
                canonical.push((key, Cow::Owned(digits)));
            }
            Value::Null | Value::Array(_) | Value::Object(_) => {}
        }
    }
    (string_map(&canonical), string_map(&numeric))
}

/// `metering.canonical_value` of a float: shortest round-trip digits, no exponent,
/// no fraction when integral.
pub fn canonical_float(value: f64) -> String {
    let (negative, digits, exp) = shortest_digits(value);
    let sign = if negative { "-" } else { "" };
    format!("{sign}{}", positional(&digits, exp, false))
}

/// A JSON object of strings; a key repeated (impossible after decoding) is kept once.
fn string_map<V: AsRef<str>>(pairs: &[(&str, V)]) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        crate::text::write_json_string(&mut out, key);
        out.push(':');
        crate::text::write_json_string(&mut out, value.as_ref());
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_message_bytes: 256 * 1024,
        max_properties: 256,
        max_key_chars: 256,
        max_id_chars: 256,
        max_string_value_chars: 64 * 1024,
    };

    fn decode(text: &str) -> Result<RawEvent, Reason> {
        decode_event(text.as_bytes(), || "t-0-7".to_string(), 42, &LIMITS)
    }

    #[test]
    fn a_valid_event_becomes_its_raw_columns() {
        let event = decode(
            r#"{"tenant_id":"t","event_name":" api ","customer_id":"c",
                "properties":{"n":2.50,"s":" 1_0 ","b":true,"x":null,"f":1e-7}}"#,
        )
        .unwrap();
        assert_eq!(event.id, "t-0-7");
        assert_eq!(event.event_name, "api");
        assert_eq!(event.timestamp_us, 42);
        assert_eq!(
            event.properties,
            r#"{"n":2.5,"s":" 1_0 ","b":true,"x":null,"f":1e-7}"#
        );
        assert_eq!(
            event.canonical_json,
            r#"{"n":"2.5","s":" 1_0 ","b":"true","f":"0.0000001"}"#
        );
        assert_eq!(
            event.numeric_json,
            r#"{"n":"2.5","s":"10.000000000000000","f":"0.0000001"}"#
        );
    }

    #[test]
    fn reasons_follow_the_reference_order() {
        let cases = [
            ("[]", Reason::NotAnObject),
            ("{\"tenant_id\":1,\"zz\":1}", Reason::UnknownField),
            (
                "{\"source\":1,\"event_name\":\"e\",\"customer_id\":\"c\"}",
                Reason::MissingField,
            ),
            (
                "{\"tenant_id\":\"t\",\"event_name\":\"e\",\"source\":1}",
                Reason::WrongType,
            ),
            (
                "{\"tenant_id\":\"t\",\"event_name\":\" \",\"customer_id\":\"c\"}",
                Reason::MissingField,
            ),
            (
                "{\"tenant_id\":\"t\",\"event_name\":\"e\",\"customer_id\":\"c\",\"properties\":[]}",
                Reason::PropertiesNotObject,
            ),
            (
                "{\"tenant_id\":\"t\",\"event_name\":\"e\",\"customer_id\":\"c\",\"timestamp\":1}",
                Reason::InvalidTimestamp,
            ),
            ("{\"a\":", Reason::InvalidJson),
        ];
        for (text, reason) in cases {
            assert_eq!(decode(text), Err(reason), "{text}");
        }
        assert_eq!(
            decode_event(b"\xff", String::new, 0, &LIMITS),
            Err(Reason::InvalidEncoding)
        );
    }
}
