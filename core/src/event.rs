//! One message value -> one validated raw event or a rejection reason
//! (`validation.decode_event` and `store.raw.event_columns` of the reference).
//!
//! The checks run in the reference's order, so a message with several faults
//! gets the same reason code. The detail text of a rejection is not produced
//! here: the caller takes it from the reference for the (rare) dead letters.

use std::borrow::Cow;
use std::mem::ManuallyDrop;

use crate::columns::StringColumn;
use crate::decimal::{numeric_text, parse_py_decimal, write_numeric_of_string};
use crate::json::{self, Member, Value};
use crate::text::{
    py_strip, shortest_digits, write_int, write_json_object, write_json_string, write_positional,
    FloatStyle,
};
use crate::timestamp::parse_timestamp;

/// `validation.MAX_PROPERTIES_DEPTH`: containers `properties` may nest, itself
/// included (so one of its values at most one fewer).
const MAX_PROPERTIES_DEPTH: usize = 32;

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

/// The columns of accepted events (`ingested_at` is the batch's, not per row).
#[derive(Debug, Default)]
pub struct RawColumns {
    pub id: StringColumn,
    pub tenant_id: StringColumn,
    pub environment_id: StringColumn,
    /// Stripped of Python whitespace.
    pub event_name: StringColumn,
    pub source: StringColumn,
    pub customer_id: StringColumn,
    pub external_customer_id: StringColumn,
    /// Microseconds since the epoch, UTC.
    pub timestamp_us: Vec<i64>,
    /// The stored JSON text of `properties` (orjson's spelling).
    pub properties: StringColumn,
    /// Canonical value per top-level property (`canonical_json`).
    pub canonical_json: StringColumn,
    /// Metered quantity per top-level property (`numeric_json`).
    pub numeric_json: StringColumn,
}

impl RawColumns {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `rows` events (the string columns' offsets; `bytes` of the
    /// messages in all for the `properties` text, which is most of them).
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        let short = || StringColumn::with_capacity(rows, rows * 24);
        RawColumns {
            id: short(),
            tenant_id: short(),
            environment_id: short(),
            event_name: short(),
            source: short(),
            customer_id: short(),
            external_customer_id: short(),
            timestamp_us: Vec::with_capacity(rows),
            properties: StringColumn::with_capacity(rows, bytes),
            canonical_json: StringColumn::with_capacity(rows, bytes / 2),
            numeric_json: StringColumn::with_capacity(rows, bytes / 2),
        }
    }

    /// Empty, keeping the room of the columns (for the next batch).
    pub fn clear(&mut self) {
        for column in self.string_columns_mut() {
            column.clear();
        }
        self.timestamp_us.clear();
    }

    fn string_columns_mut(&mut self) -> [&mut StringColumn; 10] {
        [
            &mut self.id,
            &mut self.tenant_id,
            &mut self.environment_id,
            &mut self.event_name,
            &mut self.source,
            &mut self.customer_id,
            &mut self.external_customer_id,
            &mut self.properties,
            &mut self.canonical_json,
            &mut self.numeric_json,
        ]
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.timestamp_us.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timestamp_us.is_empty()
    }

    /// The string columns by their `events` column name.
    pub fn string_columns(&self) -> [(&'static str, &StringColumn); 10] {
        [
            ("tenant_id", &self.tenant_id),
            ("environment_id", &self.environment_id),
            ("id", &self.id),
            ("event_name", &self.event_name),
            ("external_customer_id", &self.external_customer_id),
            ("customer_id", &self.customer_id),
            ("source", &self.source),
            ("properties", &self.properties),
            ("canonical_json", &self.canonical_json),
            ("numeric_json", &self.numeric_json),
        ]
    }
}

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
/// Every top-level field an event may have: the seven identifier fields in
/// the reference's `_STRING_FIELDS` order, then the others.
const KNOWN_FIELDS: [&str; 10] = [
    "id",
    "tenant_id",
    "environment_id",
    "event_name",
    "source",
    "customer_id",
    "external_customer_id",
    "timestamp",
    "properties",
    "ingested_at",
];
const TIMESTAMP: usize = 7;
const PROPERTIES: usize = 8;

/// orjson refuses to write containers nested this deep (counting the
/// properties object itself); the reference then writes with `json.dumps`.
const ORJSON_MAX_WRITE_DEPTH: usize = 255;

/// The decoded `properties` members of a batch's accepted events, one
/// event's after the other in one vector (no allocation per event).
#[derive(Debug, Default)]
pub struct BatchProperties<'a> {
    members: Vec<Member<'a>>,
    /// Per event, the end of its members in `members`.
    ends: Vec<usize>,
}

impl<'a> BatchProperties<'a> {
    /// Room for `events` events of one member each (grown when they have more).
    pub fn with_capacity(events: usize) -> Self {
        BatchProperties {
            members: Vec::with_capacity(events),
            ends: Vec::with_capacity(events),
        }
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The members of event `event` (in the order it was added).
    pub fn get(&self, event: usize) -> &[Member<'a>] {
        let start = event.checked_sub(1).map_or(0, |before| self.ends[before]);
        &self.members[start..self.ends[event]]
    }

    /// Empty, keeping the room.
    pub fn clear(&mut self) {
        // Most members own nothing (borrowed keys and strings, scalars):
        // only the others are dropped.
        for member in self.members.drain(..) {
            if matches!(member.0, Cow::Borrowed(_)) && nothing_to_free(&member.1) {
                std::mem::forget(member);
            }
        }
        self.ends.clear();
    }
}

impl Drop for BatchProperties<'_> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Decode and validate one message value; see the module docs.
///
/// `fallback_id` makes the id of a message without one (called only then),
/// `fallback_timestamp_us` is the timestamp of a message without one. An
/// accepted event is appended to `out` as one row and its decoded
/// `properties` members to `properties` as one event; a rejected one leaves
/// both as they were.
pub fn decode_event<'a>(
    payload: &'a [u8],
    fallback_id: impl FnOnce() -> String,
    fallback_timestamp_us: i64,
    limits: &Limits,
    out: &mut RawColumns,
    properties: &mut BatchProperties<'a>,
) -> Result<(), Reason> {
    let mark = properties.members.len();
    let decoded = decode_into(
        payload,
        fallback_id,
        fallback_timestamp_us,
        limits,
        out,
        &mut properties.members,
    );
    match decoded {
        Ok(()) => properties.ends.push(properties.members.len()),
        Err(_) => properties.members.truncate(mark),
    }
    decoded
}

/// `decode_event` with the event's `properties` members appended to
/// `members` (some may be left there when it fails).
fn decode_into<'a>(
    payload: &'a [u8],
    fallback_id: impl FnOnce() -> String,
    fallback_timestamp_us: i64,
    limits: &Limits,
    out: &mut RawColumns,
    members: &mut Vec<Member<'a>>,
) -> Result<(), Reason> {
    if payload.len() > limits.max_message_bytes {
        return Err(Reason::MessageTooLarge);
    }
    let text = std::str::from_utf8(payload).map_err(|_| Reason::InvalidEncoding)?;
    // The known fields straight into their slots (a repeated key: its last
    // value, as the reference's dict); no member list of the event itself.
    // The members of an object `properties` go straight to `members`.
    let mark = members.len();
    let mut slots = FieldSlots(ManuallyDrop::new(Default::default()));
    let fields = &mut *slots.0;
    let spill = json::Spill {
        slot: PROPERTIES,
        arena: members,
    };
    let document = json::parse_fields(text, &KNOWN_FIELDS, fields, Some(spill));
    let json::Fields::Object {
        unknown_key,
        spilled_text,
    } = document.map_err(|_| Reason::InvalidJson)?
    else {
        return Err(Reason::NotAnObject);
    };
    if unknown_key {
        return Err(Reason::UnknownField);
    }
    let mut strings: [&str; 7] = [""; 7];
    for (slot, value) in strings.iter_mut().zip(fields.iter()) {
        match value {
            None | Some(Value::Null) => {}
            Some(Value::Str(value)) if within(value, limits.max_id_chars) => *slot = value,
            Some(_) => return Err(string_error(fields, limits)),
        }
    }
    let [event_id, tenant_id, environment_id, event_name, source, customer_id, external_id] =
        strings;
    if tenant_id.is_empty() || event_name.is_empty() {
        return Err(string_error(fields, limits));
    }
    let event_name = py_strip(event_name);
    if event_name.is_empty() || (customer_id.is_empty() && external_id.is_empty()) {
        return Err(Reason::MissingField);
    }
    // An object's members were spilled (the slot holds an empty stand-in);
    // no members or null: `members` holds none of this event's.
    let property_members: &[Member<'a>] = match &fields[PROPERTIES] {
        None | Some(Value::Null) | Some(Value::Object(_)) => &members[mark..],
        Some(_) => return Err(Reason::PropertiesNotObject),
    };
    let properties_depth = check_properties(property_members, limits)?;
    let timestamp_us = match &fields[TIMESTAMP] {
        None | Some(Value::Null) => fallback_timestamp_us,
        Some(Value::Str(text)) => parse_timestamp(text).map_err(|_| Reason::InvalidTimestamp)?,
        Some(_) => return Err(Reason::InvalidTimestamp),
    };
    if event_id.is_empty() {
        out.id.push(&fallback_id());
    } else {
        out.id.push(event_id);
    }
    out.tenant_id.push(tenant_id);
    out.environment_id.push(environment_id);
    out.event_name.push(event_name);
    out.source.push(source);
    out.customer_id.push(customer_id);
    out.external_customer_id.push(external_id);
    out.timestamp_us.push(timestamp_us);
    // The payload's own text of the object when it is already what the
    // writer would write (compact JSON mostly is): copied, not rewritten.
    match spilled_text {
        Some(text) => out.properties.push(text),
        None => out
            .properties
            .push_with(|text| write_properties(text, property_members, properties_depth)),
    }
    derived_properties(
        property_members,
        spilled_text.is_some(),
        &mut out.canonical_json,
        &mut out.numeric_json,
    );
    Ok(())
}

/// The known fields' slots of one event. Most hold nothing to free (scalars,
/// strings borrowed from the payload, the stand-in of spilled `properties`):
/// told apart here, inline, instead of a drop call per slot.
struct FieldSlots<'a>(ManuallyDrop<[Option<Value<'a>>; KNOWN_FIELDS.len()]>);

impl Drop for FieldSlots<'_> {
    fn drop(&mut self) {
        for slot in self.0.iter_mut() {
            if slot.as_ref().is_some_and(|value| !nothing_to_free(value)) {
                drop(slot.take());
            }
        }
    }
}

/// Whether dropping `value` frees nothing (checked inline: the generic drop
/// of a `Value` is an out-of-line call).
fn nothing_to_free(value: &Value<'_>) -> bool {
    match value {
        Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) => true,
        Value::Str(Cow::Borrowed(_)) => true,
        Value::Object(members) => members.capacity() == 0,
        Value::Str(Cow::Owned(_)) | Value::Array(_) => false,
    }
}

/// The first fault among the identifier fields, required ones first.
fn string_error(fields: &[Option<Value<'_>>], limits: &Limits) -> Reason {
    for name in CHECK_ORDER {
        let slot = KNOWN_FIELDS
            .iter()
            .position(|field| *field == name)
            .expect("a string field");
        let value = fields[slot].as_ref();
        let required = name == "tenant_id" || name == "event_name";
        match value {
            None | Some(Value::Null) if required => return Reason::MissingField,
            Some(Value::Str(text)) if required && text.is_empty() => return Reason::MissingField,
            None | Some(Value::Null) => {}
            Some(Value::Str(text)) => {
                if !within(text, limits.max_id_chars) {
                    return Reason::ValueTooLarge;
                }
            }
            Some(_) => return Reason::WrongType,
        }
    }
    unreachable!("string_error is called only when a string field is invalid")
}

/// Whether `text` has at most `limit` code points (its byte length bounds
/// their count, so short texts are not counted).
fn within(text: &str, limit: usize) -> bool {
    text.len() <= limit || text.chars().count() <= limit
}

/// The reference's checks of the `properties` members; `Ok` holds the
/// nesting depth of the `properties` object (`json::depth`).
fn check_properties(members: &[Member<'_>], limits: &Limits) -> Result<usize, Reason> {
    if members.len() > limits.max_properties {
        return Err(Reason::TooManyProperties);
    }
    let mut deepest = 0;
    for (key, value) in members {
        if !within(key, limits.max_key_chars) {
            return Err(Reason::ValueTooLarge);
        }
        if let Value::Str(text) = value {
            if !within(text, limits.max_string_value_chars) {
                return Err(Reason::ValueTooLarge);
            }
        }
        let depth = json::depth(value);
        if depth >= MAX_PROPERTIES_DEPTH {
            return Err(Reason::ValueTooLarge);
        }
        deepest = deepest.max(depth);
    }
    Ok(1 + deepest)
}

/// `store.raw.properties_text`: orjson's text, or `json.dumps`'s where orjson
/// refuses the nesting (`depth`: the object's `json::depth`).
fn write_properties(out: &mut String, members: &[Member<'_>], depth: usize) {
    let style = if depth >= ORJSON_MAX_WRITE_DEPTH {
        FloatStyle::PythonRepr
    } else {
        FloatStyle::Orjson
    };
    write_json_object(out, members, style);
}

/// `store.raw.derived_properties`: the `canonical_json` and `numeric_json` texts,
/// appended to their columns as one row each, written in place (no text
/// per value). `plain`: no key nor string value of `members` holds a byte
/// a JSON string escapes (they are then copied without looking for one).
fn derived_properties(
    members: &[Member<'_>],
    plain: bool,
    canonical: &mut StringColumn,
    numeric: &mut StringColumn,
) {
    let mut canonical_map = JsonStringMap::open(canonical, plain);
    let mut numeric_map = JsonStringMap::open(numeric, plain);
    for (key, value) in members {
        let key = key.as_ref();
        match value {
            Value::Str(text) => {
                canonical_map.entry(key, text);
                numeric_map.entry_if(key, |out| write_numeric_of_string(out, text));
            }
            Value::Bool(flag) => canonical_map.plain_entry(key, |out| {
                out.push_str(if *flag { "true" } else { "false" })
            }),
            Value::Int(number) => {
                canonical_map.plain_entry(key, |out| write_int(out, *number));
                if *number < 1_000_000_000_000_000_000 {
                    numeric_map.plain_entry(key, |out| write_int(out, (*number).max(0)));
                }
            }
            Value::Float(number) => {
                let (negative, digits, exp) = shortest_digits(*number);
                let write_digits = |out: &mut String| {
                    if negative {
                        out.push('-');
                    }
                    write_positional(out, &digits, exp, false);
                };
                canonical_map.plain_entry(key, write_digits);
                if *number <= 0.0 {
                    numeric_map.plain_entry(key, |out| out.push('0'));
                } else if *number < 1e18 {
                    if positional_places(&digits, exp) <= crate::decimal::SCALE {
                        numeric_map.plain_entry(key, write_digits);
                    } else {
                        let text = canonical_float(*number);
                        let parsed = parse_py_decimal(&text).expect("float digits parse");
                        let numeric = numeric_text(&parsed).expect("below 10^18");
                        numeric_map.plain_entry(key, |out| out.push_str(&numeric));
                    }
                }
            }
            Value::Null | Value::Array(_) | Value::Object(_) => {}
        }
    }
    canonical_map.close();
    numeric_map.close();
}

/// The fraction digits `write_positional(digits, exp, false)` writes.
fn positional_places(digits: &str, exp: i32) -> usize {
    let len = digits.len() as i32;
    if exp < 0 {
        (len - exp - 1) as usize
    } else {
        (len - exp - 1).max(0) as usize
    }
}

/// A JSON object of strings written straight into a column's next row.
struct JsonStringMap<'c> {
    column: &'c mut StringColumn,
    empty: bool,
    /// The keys and `entry` values hold nothing to escape.
    plain: bool,
}

impl<'c> JsonStringMap<'c> {
    fn open(column: &'c mut StringColumn, plain: bool) -> Self {
        column.text_mut().push('{');
        JsonStringMap {
            column,
            empty: true,
            plain,
        }
    }

    /// `text` as a JSON string (copied as it is when `plain`).
    fn write_string(out: &mut String, text: &str, plain: bool) {
        if plain {
            out.reserve(text.len() + 2);
            out.push('"');
            out.push_str(text);
            out.push('"');
        } else {
            write_json_string(out, text);
        }
    }

    /// The separator, the key and the colon.
    fn open_entry(&mut self, key: &str) -> &mut String {
        let plain = self.plain;
        let out = self.column.text_mut();
        if !self.empty {
            out.push(',');
        }
        self.empty = false;
        Self::write_string(out, key, plain);
        out.push(':');
        out
    }

    fn entry(&mut self, key: &str, value: &str) {
        let plain = self.plain;
        let out = self.open_entry(key);
        Self::write_string(out, value, plain);
    }

    /// An entry whose value `write` writes in place; it must write nothing
    /// a JSON string escapes (digits, signs and points are fine).
    fn plain_entry(&mut self, key: &str, write: impl FnOnce(&mut String)) {
        let out = self.open_entry(key);
        out.push('"');
        write(out);
        out.push('"');
    }

    /// `plain_entry` when `write` returns true; no entry when it returns
    /// false (whatever it wrote is dropped).
    fn entry_if(&mut self, key: &str, write: impl FnOnce(&mut String) -> bool) {
        let (mark, was_empty) = (self.column.text_mut().len(), self.empty);
        let out = self.open_entry(key);
        out.push('"');
        if write(out) {
            out.push('"');
        } else {
            out.truncate(mark);
            self.empty = was_empty;
        }
    }

    fn close(self) {
        self.column.text_mut().push('}');
        self.column.end_row();
    }
}

/// `metering.canonical_value` of a float: shortest round-trip digits, no exponent,
/// no fraction when integral.
pub fn canonical_float(value: f64) -> String {
    let (negative, digits, exp) = shortest_digits(value);
    let mut out = String::with_capacity(24);
    if negative {
        out.push('-');
    }
    write_positional(&mut out, &digits, exp, false);
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

    fn decode(text: &str) -> Result<RawColumns, Reason> {
        let mut out = RawColumns::new();
        let mut properties = BatchProperties::default();
        let fallback_id = || "t-0-7".to_string();
        decode_event(
            text.as_bytes(),
            fallback_id,
            42,
            &LIMITS,
            &mut out,
            &mut properties,
        )?;
        assert_eq!((out.len(), properties.len()), (1, 1));
        Ok(out)
    }

    #[test]
    fn a_valid_event_becomes_its_raw_columns() {
        let event = decode(
            r#"{"tenant_id":"t","event_name":" api ","customer_id":"c",
                "properties":{"n":2.50,"s":" 1_0 ","b":true,"x":null,"f":1e-7}}"#,
        )
        .unwrap();
        assert_eq!(event.id.get(0), "t-0-7");
        assert_eq!(event.event_name.get(0), "api");
        assert_eq!(event.timestamp_us, vec![42]);
        assert_eq!(
            event.properties.get(0),
            r#"{"n":2.5,"s":" 1_0 ","b":true,"x":null,"f":1e-7}"#
        );
        assert_eq!(
            event.canonical_json.get(0),
            r#"{"n":"2.5","s":" 1_0 ","b":"true","f":"0.0000001"}"#
        );
        assert_eq!(
            event.numeric_json.get(0),
            r#"{"n":"2.5","s":"10.000000000000000","f":"0.0000001"}"#
        );
    }

    #[test]
    fn plain_and_rewritten_properties_give_the_same_texts() {
        let members =
            r#""k":"v","n":"12","b":false,"f":-1.5,"i":7,"z":0.0,"q":null,"a":[1],"o":{"x":"y"}"#;
        let event = |properties: &str| {
            decode(&format!(
                r#"{{"tenant_id":"t","event_name":"a","customer_id":"c","properties":{properties}}}"#
            ))
            .unwrap()
        };
        // Copied and written as they are; spaced out, so rewritten.
        let plain = event(&format!("{{{members}}}"));
        let spaced = event(&format!("{{ {members} }}"));
        assert_eq!(plain.properties.get(0), format!("{{{members}}}"));
        assert_eq!(
            plain.canonical_json.get(0),
            r#"{"k":"v","n":"12","b":"false","f":"-1.5","i":"7","z":"0"}"#
        );
        assert_eq!(
            plain.numeric_json.get(0),
            r#"{"n":"12.000000000000000","f":"0","i":"7","z":"0"}"#
        );
        for ((name, got), (_, want)) in plain.string_columns().iter().zip(spaced.string_columns()) {
            assert_eq!(got.data(), want.data(), "{name}");
        }
        // Escapes: written, never copied.
        let escaped = event(r#"{"k\"":"v\n","\u0041":"\/"}"#);
        assert_eq!(escaped.properties.get(0), r#"{"k\"":"v\n","A":"/"}"#);
        assert_eq!(escaped.canonical_json.get(0), r#"{"k\"":"v\n","A":"/"}"#);
    }

    #[test]
    fn cleared_columns_hold_what_fresh_ones_would() {
        let (first, second) = (
            r#"{"tenant_id":"t","event_name":"a","customer_id":"c","properties":{"n":1.5}}"#,
            r#"{"tenant_id":"u","event_name":"b","external_customer_id":"x"}"#,
        );
        let mut reused = decode(first).unwrap();
        reused.clear();
        assert!(reused.is_empty());
        let fallback_id = || "t-0-7".to_string();
        let mut properties = BatchProperties::default();
        let payload = second.as_bytes();
        decode_event(
            payload,
            fallback_id,
            42,
            &LIMITS,
            &mut reused,
            &mut properties,
        )
        .unwrap();
        let fresh = decode(second).unwrap();
        for ((name, got), (_, want)) in reused.string_columns().iter().zip(fresh.string_columns()) {
            assert_eq!(
                (got.len(), got.data(), got.offset_bytes()),
                (want.len(), want.data(), want.offset_bytes()),
                "{name}"
            );
        }
        assert_eq!(reused.timestamp_us, fresh.timestamp_us);
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
            assert_eq!(decode(text).err(), Some(reason), "{text}");
        }
        let mut out = RawColumns::new();
        let mut properties = BatchProperties::default();
        assert_eq!(
            decode_event(b"\xff", String::new, 0, &LIMITS, &mut out, &mut properties),
            Err(Reason::InvalidEncoding)
        );
        assert!(out.is_empty() && properties.is_empty());
    }

    #[test]
    fn each_accepted_event_keeps_its_own_properties() {
        let texts = [
            r#"{"tenant_id":"t","event_name":"a","customer_id":"c","properties":{"n":1,"s":"x"}}"#,
            // Rejected after its members were read: none of them stay.
            r#"{"tenant_id":"t","event_name":"a","customer_id":"c","properties":{"n":2},"ts":1}"#,
            r#"{"tenant_id":"t","event_name":"a","customer_id":"c","properties":{"n":3},"timestamp":"x"}"#,
            r#"{"tenant_id":"t","event_name":"a","customer_id":"c","properties":{"n":4,}}"#,
            r#"{"tenant_id":"t","event_name":"a","customer_id":"c"}"#,
            r#"{"tenant_id":"t","event_name":"a","customer_id":"c","properties":{"n":5},"properties":null}"#,
            r#"{"tenant_id":"t","event_name":"a","customer_id":"c","properties":{"n":6},"properties":{"m":7,"m":8}}"#,
        ];
        let mut out = RawColumns::new();
        let mut properties = BatchProperties::default();
        let accepted: Vec<bool> = texts
            .iter()
            .map(|text| {
                let payload = text.as_bytes();
                decode_event(payload, String::new, 0, &LIMITS, &mut out, &mut properties).is_ok()
            })
            .collect();
        assert_eq!(accepted, [true, false, false, false, true, true, true]);
        let want: [Vec<Member<'_>>; 4] = [
            vec![
                ("n".into(), Value::Int(1)),
                ("s".into(), Value::Str("x".into())),
            ],
            vec![],
            vec![],
            vec![("m".into(), Value::Int(8))],
        ];
        assert_eq!(properties.len(), want.len());
        for (event, members) in want.iter().enumerate() {
            assert_eq!(properties.get(event), members.as_slice(), "{event}");
        }
        let texts: Vec<&str> = (0..out.len()).map(|row| out.properties.get(row)).collect();
        assert_eq!(texts, [r#"{"n":1,"s":"x"}"#, "{}", "{}", r#"{"m":8}"#]);
    }
}
