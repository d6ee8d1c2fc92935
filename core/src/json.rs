//! A strict JSON reader with the semantics of the reference decoder (orjson 3.13).
//!
//! What it accepts and how it reads numbers is the contract, not speed tricks:
//! RFC 8259 only (no BOM, no NaN, no trailing commas, no control characters in
//! strings, surrogate escapes must pair), at most [`MAX_DEPTH`] nested
//! containers, integers in `[-2^63, 2^64)` stay integers and every other number
//! is the correctly rounded `f64` (a number whose double is infinite is an
//! error). Duplicate object keys keep the first key's position and the last
//! value, as a Python dict does.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::text::{next_special, same_text};

/// The text is not a JSON document the reference accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidJson;

/// Containers (arrays and objects) that may nest; one more is an error.
pub const MAX_DEPTH: usize = 1024;

/// Objects with more members than this get a hash index for duplicate keys.
const LINEAR_KEY_SCAN: usize = 16;

/// A decoded JSON value; strings without escapes borrow from the input text.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    /// An integer literal within `[-2^63, 2^64)`.
    Int(i128),
    /// Any other number: a fraction, an exponent, or an integer out of that range.
    Float(f64),
    Str(Cow<'a, str>),
    Array(Vec<Value<'a>>),
    /// Members in first-occurrence order; a repeated key replaced the value in place.
    Object(Vec<Member<'a>>),
}

impl<'a> Value<'a> {
    /// The member `key` of an object, if any.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Object(members) => members
                .iter()
                .find(|(k, _)| k.as_ref() == key)
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Parse a whole document. `Err` carries no detail: the caller only needs the reason.
pub fn parse(text: &str) -> Result<Value<'_>, InvalidJson> {
    let mut parser = Parser::new(text);
    parser.skip_ws();
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos != parser.bytes.len() {
        return Err(InvalidJson);
    }
    Ok(value)
}

/// The top level of a document read by [`parse_fields`].
#[derive(Debug, PartialEq, Eq)]
pub enum Fields<'a> {
    /// A valid document that is not an object.
    NotAnObject,
    /// An object (its values are in the slots), and whether a key outside
    /// the names occurred. `spilled_text`: with a [`Spill`] whose slot holds
    /// an object, that object's text when it is exactly what
    /// [`crate::text::write_json_object`] writes for its members in either
    /// float style (see [`Parser::plain`]); `None` otherwise.
    Object {
        unknown_key: bool,
        spilled_text: Option<&'a str>,
    },
}

/// Parse a whole document (exactly as [`parse`] accepts it) whose top level
/// is expected to be an object with members among `names`: their values go
/// straight into their slots of `values` (the last one when a key repeats;
/// `None` when absent), without building the top-level member list (the
/// values of other keys are checked and dropped). The slots are filled in
/// place, so the values are not moved again; their content is meaningful
/// only for `Ok(Fields::Object)`. With `spill`, an object value of its slot
/// goes to its arena instead (see [`Spill`]).
pub fn parse_fields<'a, const N: usize>(
    text: &'a str,
    names: &[&str; N],
    values: &mut [Option<Value<'a>>; N],
    spill: Option<Spill<'_, 'a>>,
) -> Result<Fields<'a>, InvalidJson> {
    let mut parser = Parser::new(text);
    for slot in values.iter_mut() {
        *slot = None;
    }
    parser.skip_ws();
    let fields = if parser.peek() == Some(b'{') {
        let (unknown_key, spilled_text) = parser.fields(names, values, spill)?;
        Fields::Object {
            unknown_key,
            spilled_text,
        }
    } else {
        parser.value(0)?;
        Fields::NotAnObject
    };
    parser.skip_ws();
    if parser.pos != parser.bytes.len() {
        return Err(InvalidJson);
    }
    Ok(fields)
}

/// An object member of an object.
pub type Member<'a> = (Cow<'a, str>, Value<'a>);

/// Where [`parse_fields`] puts the members of an object value of field
/// `slot`: appended to `arena` (which holds other objects' members before
/// them: no allocation per object), the slot holding an empty
/// `Value::Object` in its stead. After `Ok(Fields::Object)` with such a
/// slot, the members are `arena[len before the call..]`, exactly as `parse`
/// would have them (first-occurrence order, a repeated key's last value);
/// otherwise the arena holds none of this document's members. After an
/// `Err` it may hold some: truncate it.
pub struct Spill<'s, 'a> {
    pub slot: usize,
    pub arena: &'s mut Vec<Member<'a>>,
}

struct Parser<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
    /// Cleared when the parser meets what the writer may spell otherwise:
    /// whitespace, an escape, `-0`, a float literal other than those
    /// [`float_written_as_read`] accepts, a repeated object key. Text read
    /// while it stays set is byte for byte the writer's (`text::write_json`,
    /// either float style) of what was read: strings without escapes hold
    /// no byte it escapes, an integer literal (no leading zeros in JSON) is
    /// its value's decimal spelling, and so are those float literals.
    plain: bool,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            bytes: text.as_bytes(),
            text,
            pos: 0,
            plain: true,
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
            self.plain = false;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, InvalidJson> {
        match self.peek().ok_or(InvalidJson)? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => Ok(Value::Str(self.string()?)),
            b't' => self.literal(b"true", Value::Bool(true)),
            b'f' => self.literal(b"false", Value::Bool(false)),
            b'n' => self.literal(b"null", Value::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(InvalidJson),
        }
    }

    fn literal(&mut self, word: &[u8], value: Value<'a>) -> Result<Value<'a>, InvalidJson> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(InvalidJson)
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value<'a>, InvalidJson> {
        if depth > MAX_DEPTH {
            return Err(InvalidJson);
        }
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(InvalidJson),
            }
        }
    }

    /// Read an object (its opening brace at `pos`, `depth` counting it),
    /// handing each key to `member` in document order, which reads its value
    /// (at `pos`, after the colon and any whitespace).
    fn members(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, Cow<'a, str>) -> Result<(), InvalidJson>,
    ) -> Result<(), InvalidJson> {
        if depth > MAX_DEPTH {
            return Err(InvalidJson);
        }
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(InvalidJson);
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(InvalidJson);
            }
            self.pos += 1;
            self.skip_ws();
            member(self, key)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(InvalidJson),
            }
        }
    }

    /// A member's value (at `pos`) in an object at `depth`.
    // Inlined: most members are short strings, and a call returning the
    // value through memory left its first read waiting on the stores.
    #[inline(always)]
    fn member_value(&mut self, depth: usize) -> Result<Value<'a>, InvalidJson> {
        // Most values are strings: read here, without the call.
        if self.peek() == Some(b'"') {
            Ok(Value::Str(self.string()?))
        } else {
            self.value(depth)
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value<'a>, InvalidJson> {
        let mut members = Vec::new();
        self.object_into(depth, &mut members)?;
        Ok(Value::Object(members))
    }

    /// Read an object (as `object`), appending its members to `arena`
    /// after those already there.
    fn object_into(
        &mut self,
        depth: usize,
        arena: &mut Vec<Member<'a>>,
    ) -> Result<(), InvalidJson> {
        let start = arena.len();
        let mut index: Option<HashMap<String, usize>> = None;
        self.members(depth, |parser, key| {
            let value = parser.member_value(depth)?;
            if insert_member(arena, start, &mut index, key, value) {
                parser.plain = false;
            }
            Ok(())
        })
    }

    /// The top-level object of [`parse_fields`] (depth 1, as `object`).
    /// Returns whether a key outside `names` occurred, and the spilled
    /// object's text when it is plain (see [`Fields::Object`]).
    fn fields<const N: usize>(
        &mut self,
        names: &[&str; N],
        values: &mut [Option<Value<'a>>; N],
        mut spill: Option<Spill<'_, 'a>>,
    ) -> Result<(bool, Option<&'a str>), InvalidJson> {
        let mark = spill.as_ref().map_or(0, |spill| spill.arena.len());
        let mut unknown_key = false;
        let mut spilled_text = None;
        self.members(1, |parser, key| {
            let Some(slot) = names.iter().position(|name| same_text(name, &key)) else {
                unknown_key = true;
                parser.member_value(1)?;
                return Ok(());
            };
            values[slot] = Some(match &mut spill {
                Some(spill) if spill.slot == slot => {
                    // A repeated key: only its last value counts.
                    spill.arena.truncate(mark);
                    spilled_text = None;
                    if parser.peek() == Some(b'{') {
                        let (start, plain) = (parser.pos, parser.plain);
                        parser.plain = true;
                        parser.object_into(2, spill.arena)?;
                        if parser.plain {
                            spilled_text = Some(&parser.text[start..parser.pos]);
                        }
                        parser.plain &= plain;
                        Value::Object(Vec::new())
                    } else {
                        parser.member_value(1)?
                    }
                }
                _ => parser.member_value(1)?,
            });
            Ok(())
        })?;
        Ok((unknown_key, spilled_text))
    }

    /// Advance to the next `"`, `\\` or control character (or the end).
    fn skip_plain(&mut self) {
        self.pos = next_special(self.bytes, self.pos);
    }

    // Inlined into its two callers (keys and string values): most strings
    // are a few bytes, so the call itself was a fifth of their cost.
    #[inline(always)]
    fn string(&mut self) -> Result<Cow<'a, str>, InvalidJson> {
        self.pos += 1; // the opening quote
        let mut owned: Option<String> = None;
        loop {
            let start = self.pos;
            self.skip_plain();
            // Runs end at ASCII bytes, so they are whole UTF-8 sequences.
            let run = &self.text[start..self.pos];
            match self.peek().ok_or(InvalidJson)? {
                b'"' => {
                    self.pos += 1;
                    return Ok(match owned {
                        None => Cow::Borrowed(run),
                        Some(mut text) => {
                            text.push_str(run);
                            Cow::Owned(text)
                        }
                    });
                }
                b'\\' => {
                    self.pos += 1;
                    self.plain = false;
                    let text = owned.get_or_insert_with(String::new);
                    text.push_str(run);
                    self.escape(text)?;
                }
                _ => return Err(InvalidJson), // a control character
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), InvalidJson> {
        let code = self.peek().ok_or(InvalidJson)?;
        self.pos += 1;
        let plain = match code {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                let scalar = match unit {
                    0xD800..=0xDBFF => {
                        if !self.bytes[self.pos..].starts_with(b"\\u") {
                            return Err(InvalidJson);
                        }
                        self.pos += 2;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(InvalidJson);
                        }
                        0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(InvalidJson),
                    _ => unit,
                };
                char::from_u32(scalar).ok_or(InvalidJson)?
            }
            _ => return Err(InvalidJson),
        };
        out.push(plain);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, InvalidJson> {
        let digits = self.bytes.get(self.pos..self.pos + 4).ok_or(InvalidJson)?;
        let mut unit = 0u32;
        for &d in digits {
            unit = unit * 16 + (d as char).to_digit(16).ok_or(InvalidJson)?;
        }
        self.pos += 4;
        Ok(unit)
    }

    fn number(&mut self) -> Result<Value<'a>, InvalidJson> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return Err(InvalidJson); // leading zero
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(InvalidJson),
        }
        let mut integral = true;
        let point = self.pos;
        if self.peek() == Some(b'.') {
            integral = false;
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(InvalidJson);
            }
            self.digits();
        }
        let fraction_end = self.pos;
        if let Some(b'e' | b'E') = self.peek() {
            integral = false;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(InvalidJson);
            }
            self.digits();
        }
        let literal = &self.text[start..self.pos];
        // Up to 18 digits fit an i64: read them directly.
        if integral && literal.len() <= 18 {
            if literal == "-0" {
                self.plain = false;
            }
            let (negative, digits) = match literal.strip_prefix('-') {
                Some(digits) => (true, digits),
                None => (false, literal),
            };
            let magnitude = digits
                .bytes()
                .fold(0i128, |n, d| n * 10 + i128::from(d - b'0'));
            return Ok(Value::Int(if negative { -magnitude } else { magnitude }));
        }
        if integral && literal.len() <= 21 {
            let value: i128 = literal.parse().map_err(|_| InvalidJson)?;
            if (-(1i128 << 63)..(1i128 << 64)).contains(&value) {
                return Ok(Value::Int(value));
            }
        }
        // A fraction without exponent may be written as it was read.
        let written_as_read = fraction_end == self.pos
            && point < fraction_end
            && float_written_as_read(
                &self.text[int_start..point],
                &self.text[point + 1..fraction_end],
            );
        self.plain &= written_as_read;
        let float: f64 = literal.parse().map_err(|_| InvalidJson)?;
        if float.is_infinite() {
            return Err(InvalidJson);
        }
        Ok(Value::Float(float))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }
}

/// Whether the double of the JSON number `int.fraction` (no sign, no
/// exponent) is spelled `int.fraction` by `text::write_float` in both float
/// styles, for a cheap and sufficient test: the fraction has no trailing zero
/// (but may be `0`), the decimal exponent is in `-4..16` (both styles write
/// positionally there, integral values with `.0`) and there are at most 15
/// significant digits. Then the double's shortest round-trip digits are
/// these: decimals of at most 15 significant digits read back to distinct
/// doubles (`DBL_DIG`), so no shorter spelling, nor another of this length,
/// reads back to this one.
fn float_written_as_read(int: &str, fraction: &str) -> bool {
    if fraction.len() > 1 && fraction.ends_with('0') {
        return false;
    }
    if int != "0" {
        return int.len() + fraction.len() <= 15;
    }
    if fraction == "0" {
        return true; // 0.0
    }
    let zeros = fraction.bytes().take_while(|&b| b == b'0').count();
    zeros <= 3 && fraction.len() - zeros <= 15
}

/// Add a member to the object whose members are `arena[start..]`; true
/// when its key was there (the value replaced the earlier one).
fn insert_member<'a>(
    arena: &mut Vec<Member<'a>>,
    start: usize,
    index: &mut Option<HashMap<String, usize>>,
    key: Cow<'a, str>,
    value: Value<'a>,
) -> bool {
    let members = &mut arena[start..];
    let existing = match index {
        Some(map) => map.get(key.as_ref()).copied(),
        None => members.iter().position(|(k, _)| *k == key),
    };
    if let Some(at) = existing {
        members[at].1 = value;
        return true;
    }
    if let Some(map) = index {
        map.insert(key.to_string(), members.len());
    } else if members.len() >= LINEAR_KEY_SCAN {
        let mut map: HashMap<String, usize> = members
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.to_string(), i))
            .collect();
        map.insert(key.to_string(), members.len());
        *index = Some(map);
    }
    arena.push((key, value));
    false
}

/// Nesting depth of containers in `value` (a scalar is 0, `[]` is 1).
pub fn depth(value: &Value<'_>) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(members) => 1 + members.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_integers_in_range_and_round_the_rest() {
        assert_eq!(
            parse("18446744073709551615"),
            Ok(Value::Int(u64::MAX as i128))
        );
        assert_eq!(
            parse("18446744073709551616"),
            Ok(Value::Float(18446744073709551616.0))
        );
        assert_eq!(parse("-0"), Ok(Value::Int(0)));
        assert_eq!(parse("-12"), Ok(Value::Int(-12)));
        assert_eq!(
            parse("-999999999999999999"),
            Ok(Value::Int(-999_999_999_999_999_999))
        );
        assert_eq!(
            parse("-9223372036854775808"),
            Ok(Value::Int(i128::from(i64::MIN)))
        );
        assert_eq!(
            parse("-9223372036854775809"),
            Ok(Value::Float(-9223372036854775809.0))
        );
        assert_eq!(parse("1E2"), Ok(Value::Float(100.0)));
        assert_eq!(parse("1e400"), Err(InvalidJson));
        assert_eq!(parse("1e-400"), Ok(Value::Float(0.0)));
        for bad in ["01", "1.", ".5", "+1", "-", "1e", "NaN"] {
            assert_eq!(parse(bad), Err(InvalidJson), "{bad}");
        }
    }

    #[test]
    fn duplicate_keys_keep_first_position_and_last_value() {
        let parsed = parse(r#"{"a":1,"b":2,"a":3}"#).unwrap();
        assert_eq!(
            parsed,
            Value::Object(vec![
                ("a".into(), Value::Int(3)),
                ("b".into(), Value::Int(2))
            ])
        );
    }

    #[test]
    fn strings_are_strict() {
        assert_eq!(parse(r#""\ud83d\ude00""#), Ok(Value::Str("😀".into())));
        assert_eq!(parse(r#""a\"b""#), Ok(Value::Str("a\"b".into())));
        for bad in [
            r#""\ud800""#,
            r#""\udc00""#,
            "\"\u{1}\"",
            r#""\x""#,
            "\u{feff}{}",
        ] {
            assert_eq!(parse(bad), Err(InvalidJson), "{bad:?}");
        }
    }

    #[test]
    fn fields_take_the_last_value_and_flag_other_keys() {
        let names = ["a", "b"];
        let mut values = [None, Some(Value::Null)];
        let parsed = parse_fields(
            r#" {"a":1,"c":[{}],"a":{"x":"y"}} "#,
            &names,
            &mut values,
            None,
        );
        let object = Fields::Object {
            unknown_key: true,
            spilled_text: None,
        };
        assert_eq!(parsed, Ok(object));
        assert_eq!(values[0], parse(r#"{"x":"y"}"#).ok());
        assert_eq!(values[1], None);
        let parsed = parse_fields("[1]", &names, &mut values, None);
        assert_eq!(parsed, Ok(Fields::NotAnObject));
        // Validity is the whole document's, as `parse`'s, whatever the keys.
        for text in [
            r#"{"a":1,"c":01}"#,
            r#"{"a":1}x"#,
            r#"{"a":1,}"#,
            r#"{"c":"\ud800"}"#,
            "",
            "{",
        ] {
            let parsed = parse_fields(text, &names, &mut values, None);
            assert_eq!(parsed, Err(InvalidJson), "{text}");
            assert_eq!(parse(text), Err(InvalidJson), "{text}");
        }
        let deep = format!(
            r#"{{"c":{}{}}}"#,
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert_eq!(
            parse_fields(&deep, &names, &mut values, None),
            Err(InvalidJson)
        );
    }

    /// `parse_fields` of `text` with field `a` spilled into an arena that
    /// already holds a member: the slots, and the spilled members.
    fn spilled(text: &str) -> Result<([Option<Value<'_>>; 2], Vec<Member<'_>>), InvalidJson> {
        let names = ["a", "b"];
        let mut values = [None, None];
        let mut arena = vec![("earlier".into(), Value::Null)];
        let spill = Spill {
            slot: 0,
            arena: &mut arena,
        };
        parse_fields(text, &names, &mut values, Some(spill))?;
        assert_eq!(arena[0], ("earlier".into(), Value::Null));
        Ok((values, arena.split_off(1)))
    }

    #[test]
    fn spilled_objects_are_the_members_parse_reads() {
        let cases = [
            r#"{"a":{"x":1,"y":[2],"x":{"z":"\n"}},"b":{"k":3}}"#,
            r#"{"a":{"x":1},"b":1,"a":{"y":2,"y":3}}"#,
            r#"{"a":{}}"#,
        ];
        for text in cases {
            let (values, members) = spilled(text).unwrap();
            let whole = parse(text).unwrap();
            let Some(Value::Object(want)) = whole.get("a") else {
                panic!("{text}")
            };
            assert_eq!(&members, want, "{text}");
            assert_eq!(values[0], Some(Value::Object(Vec::new())), "{text}");
            assert_eq!(values[1].as_ref(), whole.get("b"), "{text}");
        }
        let many: Vec<String> = (0..40).map(|i| format!(r#""k{}":{i}"#, i % 25)).collect();
        let text = format!(r#"{{"a":{{{}}}}}"#, many.join(","));
        let (_, members) = spilled(&text).unwrap();
        assert_eq!(
            Some(&Value::Object(members)),
            parse(&text).unwrap().get("a")
        );
        // A later value that is not an object leaves no members behind.
        for text in [
            r#"{"a":{"x":1},"a":null}"#,
            r#"{"a":{"x":1},"a":[{"y":2}]}"#,
        ] {
            let (values, members) = spilled(text).unwrap();
            assert!(members.is_empty(), "{text}");
            assert_eq!(values[0].as_ref(), parse(text).unwrap().get("a"), "{text}");
        }
        assert_eq!(spilled(r#"{"a":{"x":1,}}"#).err(), Some(InvalidJson));
    }

    /// `parse_fields` of `text` with field `a` spilled: the spilled text
    /// and the members.
    fn spilled_text(text: &str) -> (Option<&str>, Vec<Member<'_>>) {
        let names = ["a", "b"];
        let mut values = [None, None];
        let mut arena = Vec::new();
        let spill = Spill {
            slot: 0,
            arena: &mut arena,
        };
        match parse_fields(text, &names, &mut values, Some(spill)) {
            Ok(Fields::Object { spilled_text, .. }) => (spilled_text, arena),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn a_plain_spilled_object_is_its_own_written_text() {
        use crate::text::{write_json_object, FloatStyle};
        let plain = [
            "{}",
            r#"{"ms":131}"#,
            r#"{"a":"x y","b":[1,{"c":null},[]],"d":true,"e":false,"f":-5,"g":0}"#,
            r#"{"u":18446744073709551615,"i":-9223372036854775808,"n":1234567890123456789}"#,
            "{\"é\":\"ü\u{7f}\u{2028}😀\",\"\":\"\"}",
            r#"{"a":{"a":{"a":{}}}}"#,
            r#"{"a":1.5,"b":[-0.0,0.0,10.0,-18.77,0.0001,12345678901234.0,0.123456789012345]}"#,
        ];
        for object in plain {
            for text in [
                format!(r#"{{"a":{object}}}"#),
                format!(r#" {{ "b" : 1 , "a" : {object} }} "#),
                format!(r#"{{"a":{{"x" : 1}},"a":{object}}}"#),
            ] {
                let (found, members) = spilled_text(&text);
                assert_eq!(found, Some(object), "{text}");
                for style in [FloatStyle::Orjson, FloatStyle::PythonRepr] {
                    let mut written = String::new();
                    write_json_object(&mut written, &members, style);
                    assert_eq!(written, object, "{text}");
                }
            }
        }
        // What the writer spells otherwise (or may: every float).
        let not_plain = [
            "{ }",
            "{\"a\":1\n}",
            r#"{"a":[1, 2]}"#,
            r#"{"a" :1}"#,
            r#"{"a":1.50}"#,
            r#"{"a":0.00001}"#,
            r#"{"a":1234567890.1234567}"#,
            r#"{"a":0.1234567890123456}"#,
            r#"{"a":1e2}"#,
            r#"{"a":1.5e2}"#,
            r#"{"a":1E2}"#,
            r#"{"a":-0}"#,
            r#"{"a":18446744073709551616}"#,
            r#"{"a":"\n"}"#,
            r#"{"a":"\u0041"}"#,
            r#"{"a":"\/"}"#,
            r#"{"\"":1}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":{"b":1,"b":2}}"#,
            r#"{"a":[{"b":[0.50]}]}"#,
        ];
        for object in not_plain {
            let text = format!(r#"{{"a":{object}}}"#);
            assert_eq!(spilled_text(&text).0, None, "{text}");
        }
        // Only the last value of the field counts.
        for text in [r#"{"a":{"x":1},"a":null}"#, r#"{"a":{"x":1},"a":"{}"}"#] {
            assert_eq!(spilled_text(text).0, None, "{text}");
        }
        // Whatever surrounds a plain object does not matter, nor a plain
        // object elsewhere.
        assert_eq!(spilled_text(r#"{"b":{"x":1}}"#).0, None);
        let text = "{\"b\":[1.5, \"\\n\"],\n\"a\":{\"x\":1}}";
        assert_eq!(spilled_text(text).0, Some(r#"{"x":1}"#));
    }

    #[test]
    fn floats_written_as_read_are_spelled_so_by_the_writer() {
        use crate::text::{format_float, FloatStyle};
        // Every shape of literal around the test's bounds: integer part,
        // leading zeros of the fraction, its length, a trailing zero.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let (mut plain, mut other) = (0, 0);
        for _ in 0..100_000 {
            let digits = |n: u64, next: &mut dyn FnMut(u64) -> u64| -> String {
                (0..n).map(|_| char::from(b'0' + next(10) as u8)).collect()
            };
            let int = match next(3) {
                0 => "0".to_string(),
                _ => {
                    let rest = digits(next(18), &mut next);
                    format!("{}{rest}", 1 + next(9))
                }
            };
            let zeros = "0".repeat(next(7) as usize);
            let fraction = format!("{zeros}{}", digits(next(19), &mut next));
            let fraction = if fraction.is_empty() {
                "0".to_string()
            } else {
                fraction
            };
            let sign = if next(4) == 0 { "-" } else { "" };
            let literal = format!("{sign}{int}.{fraction}");
            let value: f64 = literal.parse().unwrap();
            let written =
                [FloatStyle::Orjson, FloatStyle::PythonRepr].map(|s| format_float(value, s));
            if float_written_as_read(&int, &fraction) {
                plain += 1;
                assert_eq!(written, [literal.clone(), literal.clone()], "{literal}");
            } else {
                other += 1;
            }
            let text = format!(r#"{{"a":{{"x":{literal}}}}}"#);
            let parsed = spilled_text(&text).0;
            assert_eq!(
                parsed.is_some(),
                float_written_as_read(&int, &fraction),
                "{literal}"
            );
        }
        // Both sides of the test were exercised.
        assert!(plain > 10_000 && other > 10_000, "{plain} {other}");
    }

    #[test]
    fn strings_stop_at_each_special_byte_wherever_it_falls() {
        // Every position of a quote, a backslash and a control byte relative
        // to the eight-byte steps of the scanner.
        for at in 0..20 {
            let plain = "é".repeat(at / 2) + &"x".repeat(at % 2);
            let text = format!("\"{plain}\"");
            assert_eq!(parse(&text), Ok(Value::Str(plain.clone().into())));
            let text = format!("\"{plain}\\n{plain}\"");
            assert_eq!(
                parse(&text),
                Ok(Value::Str(format!("{plain}\n{plain}").into()))
            );
            let text = format!("\"{plain}\u{1f}\"");
            assert_eq!(parse(&text), Err(InvalidJson));
            let text = format!("\"{plain}\u{7f}\u{20}\"");
            assert_eq!(
                parse(&text),
                Ok(Value::Str(format!("{plain}\u{7f} ").into()))
            );
        }
    }

    #[test]
    fn depth_is_bounded() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(parse(&ok).is_ok());
        assert_eq!(parse(&deep), Err(InvalidJson));
    }
}
