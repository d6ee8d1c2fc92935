//! Text rules of the reference: Python's whitespace and decimal digits, the JSON
//! text orjson writes, and the float spellings of Python's `repr` and orjson.

use crate::json::{Member, Value};

/// `str.isspace()` of CPython 3.11 (Unicode 14): what `str.strip()` removes.
pub fn is_py_space(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | '\u{1c}'..='\u{20}'
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// `a == b`, without a call to `memcmp` for texts up to 16 bytes (keys,
/// event names and field names compared per event are that short).
#[inline]
pub fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // Two overlapping words cover every byte of a text of one to two words.
    let u64_at = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8"));
    let u32_at = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("4"));
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => u32_at(a, 0) == u32_at(b, 0) && u32_at(a, n - 4) == u32_at(b, n - 4),
        8..=16 => u64_at(a, 0) == u64_at(b, 0) && u64_at(a, n - 8) == u64_at(b, n - 8),
        _ => a == b,
    }
}

/// `text.strip()` as Python does it.
pub fn py_strip(text: &str) -> &str {
    // Most texts start and end with a printable ASCII byte: nothing to strip,
    // known without decoding a character at either end.
    let kept = |byte: &u8| (b'!'..0x80).contains(byte);
    let bytes = text.as_bytes();
    if bytes.first().is_some_and(kept) && bytes.last().is_some_and(kept) {
        return text;
    }
    text.trim_matches(is_py_space)
}

/// The first code point of each run of ten Unicode decimal digits (category Nd,
/// Unicode 14, as CPython 3.11's `Decimal` and `re`'s `\d` read them).
const DECIMAL_ZEROS: [u32; 66] = [
    0x30, 0x660, 0x6f0, 0x7c0, 0x966, 0x9e6, 0xa66, 0xae6, 0xb66, 0xbe6, 0xc66, 0xce6, 0xd66,
    0xde6, 0xe50, 0xed0, 0xf20, 0x1040, 0x1090, 0x17e0, 0x1810, 0x1946, 0x19d0, 0x1a80, 0x1a90,
    0x1b50, 0x1bb0, 0x1c40, 0x1c50, 0xa620, 0xa8d0, 0xa900, 0xa9d0, 0xa9f0, 0xaa50, 0xabf0, 0xff10,
    0x104a0, 0x10d30, 0x11066, 0x110f0, 0x11136, 0x111d0, 0x112f0, 0x11450, 0x114d0, 0x11650,
    0x116c0, 0x11730, 0x118e0, 0x11950, 0x11c50, 0x11d50, 0x11da0, 0x16a60, 0x16ac0, 0x16b50,
    0x1d7ce, 0x1d7d8, 0x1d7e2, 0x1d7ec, 0x1d7f6, 0x1e140, 0x1e2f0, 0x1e950, 0x1fbf0,
];

/// The value of a Unicode decimal digit (any script), as Python's `Decimal` reads it.
pub fn decimal_digit(c: char) -> Option<u8> {
    let code = c as u32;
    if c.is_ascii() {
        return c.to_digit(10).map(|d| d as u8);
    }
    let at = DECIMAL_ZEROS.partition_point(|&zero| zero <= code);
    if at == 0 {
        return None;
    }
    let offset = code - DECIMAL_ZEROS[at - 1];
    (offset < 10).then_some(offset as u8)
}

/// The index of the first byte at or after `from` that a JSON string
/// cannot hold as it is (`"`, `\` or a control byte below 0x20), or the
/// length when there is none. Such bytes are ASCII, so the text before one
/// is whole UTF-8 sequences.
pub fn next_special(bytes: &[u8], from: usize) -> usize {
    // Eight bytes at a time while none of them is special.
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut at = from;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let special = has_zero(word ^ (ONES * u64::from(b'"')))
            | has_zero(word ^ (ONES * u64::from(b'\\')))
            // A byte below 0x20: (b & 0xE0) == 0.
            | has_zero(word & (ONES * 0xE0));
        if special != 0 {
            // The lowest flagged byte is the first special one (a false
            // flag can only follow a true one, through the borrow).
            return at + (special.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while let Some(&b) = bytes.get(at) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        at += 1;
    }
    at
}

/// Append `text` as a JSON string the way orjson and `json.dumps(ensure_ascii=False)`
/// write it: only `"`, `\` and control characters below U+0020 are escaped.
pub fn write_json_string(out: &mut String, text: &str) {
    out.push('"');
    let bytes = text.as_bytes();
    let mut start = 0;
    loop {
        let at = next_special(bytes, start);
        out.push_str(&text[start..at]);
        let Some(&byte) = bytes.get(at) else {
            break;
        };
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            _ => "",
        };
        if escaped.is_empty() {
            out.push_str(&format!("\\u{byte:04x}"));
        } else {
            out.push_str(escaped);
        }
        start = at + 1;
    }
    out.push('"');
}

/// The significant digits of a float's shortest spelling (at most 17), on
/// the stack: spelling a float allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digits {
    bytes: [u8; 20],
    len: u8,
}

impl Digits {
    fn from_ascii(text: &[u8]) -> Digits {
        let mut bytes = [0u8; 20];
        bytes[..text.len()].copy_from_slice(text);
        Digits {
            bytes,
            len: text.len() as u8,
        }
    }
}

impl std::ops::Deref for Digits {
    type Target = str;

    fn deref(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).expect("ASCII digits")
    }
}

/// 10^0 ... 10^15, each exact as a double.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];
/// 2^52: below it, distinct multiples of 10^-p never read back to one double.
const TWO_52: f64 = 4_503_599_627_370_496.0;

/// The shortest round-trip spelling of `|value|` as `n / 10^p` with at most
/// 15 places, when `n < 2^52`; `None` otherwise (then only `fmt` knows).
///
/// Why this is the shortest spelling, exactly as Python's `repr` picks it:
/// `n / 10^p` with `n < 2^53` and `10^p <= 10^15` both exact is one correctly
/// rounded division, i.e. what reading the text `n e-p` gives, so the test
/// below is "this spelling reads back". Below `|value| × 10^p < 2^52` a
/// double's rounding interval is narrower than 10^-p, so at most one `n`
/// reads back per `p`, and it is `round(|value| × 10^p)` or a neighbour (the
/// product is off by less than one). The number of significant digits grows
/// with `p`, so the first `p` that has one is the shortest spelling, and
/// being the only one of that length there is no tie for `repr` to break.
pub fn short_fixed(value: f64) -> Option<(u64, u32)> {
    let magnitude = value.abs();
    for (places, scale) in POW10.iter().enumerate() {
        let scaled = magnitude * scale;
        if !scaled.is_finite() || scaled >= TWO_52 {
            return None;
        }
        let near = scaled.round() as u64;
        for n in [near, near.wrapping_sub(1), near + 1] {
            if (n as f64) < TWO_52 && n as f64 / scale == magnitude {
                return Some((n, places as u32));
            }
        }
    }
    None
}

/// The shortest round-trip digits of a finite `f64` and its decimal exponent:
/// `value = ±d1.d2...dn × 10^exp`, as (negative, digits, exp).
pub fn shortest_digits(value: f64) -> (bool, Digits, i32) {
    let negative = value.is_sign_negative();
    if let Some((n, places)) = short_fixed(value) {
        let buffer = itoa_u64(n);
        let text = buffer.as_bytes();
        let exp = text.len() as i32 - 1 - places as i32;
        let significant = match text.iter().rposition(|&d| d != b'0') {
            Some(last) => &text[..=last],
            None => &text[..1], // zero
        };
        return (negative, Digits::from_ascii(significant), exp);
    }
    // Rare spellings (more than 15 places, 16-17 digits, huge or tiny
    // values): `fmt`, remembering the last few answers (a pure function of
    // the bits; an event's float is spelled up to four times).
    const SLOTS: usize = 16;
    type Spelled = Option<(u64, bool, Digits, i32)>;
    thread_local! {
        static RECENT: std::cell::RefCell<[Spelled; SLOTS]> =
            const { std::cell::RefCell::new([None; SLOTS]) };
    }
    let bits = value.to_bits();
    let slot = (bits ^ (bits >> 29) ^ (bits >> 47)) as usize % SLOTS;
    let known = RECENT.with_borrow(|recent| match recent[slot] {
        Some((b, negative, digits, exp)) if b == bits => Some((negative, digits, exp)),
        _ => None,
    });
    if let Some(found) = known {
        return found;
    }
    let found = spell_shortest(value);
    RECENT.with_borrow_mut(|recent| {
        recent[slot] = Some((bits, found.0, found.1, found.2));
    });
    found
}

/// A `u64`'s decimal digits without `fmt`.
struct U64Text {
    bytes: [u8; 20],
    start: usize,
}

impl U64Text {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

fn itoa_u64(mut n: u64) -> U64Text {
    let mut bytes = [0u8; 20];
    let mut start = bytes.len();
    loop {
        start -= 1;
        bytes[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    U64Text { bytes, start }
}

/// `shortest_digits` through `fmt` (any finite value).
fn spell_shortest(value: f64) -> (bool, Digits, i32) {
    // Rust's `{:e}` writes the shortest digits that read back to the same double
    // and the nearest of them, as Python's repr does, except on an exact tie
    // (562949953421312.25 has `.2` and `.3`): Rust rounds it up, Python (and
    // orjson) to even. The exact `{:.N$e}` rounds ties to even, so when that
    // spelling of the same length also reads back, it is the one Python writes.
    let magnitude = value.abs();
    let mut text = format!("{magnitude:e}");
    let (mantissa, _) = text.split_once('e').expect("LowerExp has an exponent");
    let places = mantissa.len().saturating_sub(2);
    let even = format!("{magnitude:.places$e}");
    if even != text && even.parse::<f64>() == Ok(magnitude) {
        text = even;
    }
    let (mantissa, exponent) = text.split_once('e').expect("LowerExp has an exponent");
    let digits: Vec<u8> = mantissa.bytes().filter(|c| *c != b'.').collect();
    (
        value.is_sign_negative(),
        Digits::from_ascii(&digits),
        exponent.parse().expect("integer exponent"),
    )
}

/// Which spelling of a float to write: orjson's or Python's `repr`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FloatStyle {
    Orjson,
    PythonRepr,
}

/// A finite float as orjson (`e-7`, positional from 1e-5) or Python `repr`
/// (`e-07`, positional from 1e-4) writes it; both use an exponent from 1e16 up.
pub fn format_float(value: f64, style: FloatStyle) -> String {
    let mut out = String::new();
    write_float(&mut out, value, style);
    out
}

/// Append `format_float(value, style)` to `out`.
pub fn write_float(out: &mut String, value: f64, style: FloatStyle) {
    let (negative, digits, exp) = shortest_digits(value);
    if negative {
        out.push('-');
    }
    let low = match style {
        FloatStyle::Orjson => -5,
        FloatStyle::PythonRepr => -4,
    };
    if exp >= 16 || exp < low {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        if style == FloatStyle::PythonRepr && exp.abs() < 10 {
            out.push('0');
        }
        write_int(out, i128::from(exp.abs()));
        return;
    }
    write_positional(out, &digits, exp, true);
}

/// Append `digits × 10^(exp - len + 1)` written without exponent; integral
/// values get `.0` when `point_zero`, else no fraction at all.
pub fn write_positional(out: &mut String, digits: &str, exp: i32, point_zero: bool) {
    let len = digits.len() as i32;
    if exp < 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        out.push_str(digits);
    } else if exp + 1 >= len {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', (exp + 1 - len) as usize));
        if point_zero {
            out.push_str(".0");
        }
    } else {
        let split = (exp + 1) as usize;
        out.push_str(&digits[..split]);
        out.push('.');
        out.push_str(&digits[split..]);
    }
}

/// Append an integer's decimal digits (as `to_string` writes them).
pub fn write_int(out: &mut String, number: i128) {
    if number < 0 {
        out.push('-');
    }
    let magnitude = number.unsigned_abs();
    match u64::try_from(magnitude) {
        Ok(small) => {
            let text = itoa_u64(small);
            out.push_str(std::str::from_utf8(text.as_bytes()).expect("ASCII digits"));
        }
        Err(_) => {
            use std::fmt::Write as _;
            write!(out, "{magnitude}").expect("writing to a String");
        }
    }
}

/// Write `value` as compact JSON (`separators=(",", ":")`) with the given float style.
pub fn write_json(out: &mut String, value: &Value<'_>, style: FloatStyle) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Int(number) => write_int(out, *number),
        Value::Float(number) => write_float(out, *number, style),
        Value::Str(text) => write_json_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item, style);
            }
            out.push(']');
        }
        Value::Object(members) => write_json_object(out, members, style),
    }
}

/// `write_json` of an object with `members`.
pub fn write_json_object(out: &mut String, members: &[Member<'_>], style: FloatStyle) {
    out.push('{');
    for (i, (key, item)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, key);
        out.push(':');
        write_json(out, item, style);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_spellings_are_the_spellings() {
        // Many values share the 16 slots: every answer must still be its own.
        let values: Vec<f64> = (1..200).map(|i| f64::from(i) * 0.37 - 11.0).collect();
        for _ in 0..2 {
            for &value in &values {
                assert_eq!(shortest_digits(value), spell_shortest(value));
            }
        }
        assert!(shortest_digits(-0.0).0);
        assert!(!shortest_digits(0.0).0);
    }

    #[test]
    fn the_fixed_point_spelling_is_the_shortest_one() {
        // Against `fmt` (the exact shortest spelling): decimals of every
        // length, neighbours of round values, values near the 2^52 bound,
        // and arbitrary bit patterns (most of which take the `fmt` path).
        let mut values = vec![0.0, -0.0, 0.1, 0.2 + 0.1, 1e-15, 1.5e-15, 123.456, 1e15];
        values.extend([
            2f64.powi(49) + 0.25,
            2f64.powi(50) + 0.75,
            4503599627370495.0,
        ]);
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let places = (next() % 16) as i32;
            let n = next() % 10u64.pow((next() % 17) as u32).max(1);
            let value = n as f64 / 10f64.powi(places);
            values.extend([value, -value, f64::from_bits(value.to_bits() + 1)]);
            values.push(f64::from_bits(next() >> 2));
        }
        for value in values {
            assert_eq!(shortest_digits(value), spell_shortest(value), "{value:e}");
        }
    }

    #[test]
    fn floats_are_spelled_like_the_reference() {
        let cases = [
            (1e16, "1e+16", "1e+16"),
            (1e15, "1000000000000000.0", "1000000000000000.0"),
            (1e-5, "0.00001", "1e-05"),
            (2.5e-7, "2.5e-7", "2.5e-07"),
            (0.0001, "0.0001", "0.0001"),
            (-0.0, "-0.0", "-0.0"),
            (1.5e300, "1.5e+300", "1.5e+300"),
            (123.456, "123.456", "123.456"),
            // Exact ties between two shortest spellings go to the even digit.
            (
                2f64.powi(49) + 0.25,
                "562949953421312.2",
                "562949953421312.2",
            ),
            (
                2f64.powi(50) + 0.75,
                "1125899906842624.8",
                "1125899906842624.8",
            ),
        ];
        for (value, orjson, repr) in cases {
            assert_eq!(format_float(value, FloatStyle::Orjson), orjson);
            assert_eq!(format_float(value, FloatStyle::PythonRepr), repr);
        }
    }

    #[test]
    fn integers_are_written_like_to_string() {
        for number in [
            0,
            7,
            -7,
            10,
            i128::from(u64::MAX),
            i128::from(i64::MIN),
            -(1i128 << 64),
        ] {
            let mut out = String::new();
            write_int(&mut out, number);
            assert_eq!(out, number.to_string());
        }
    }

    #[test]
    fn same_text_is_equality() {
        let texts = [
            "", "a", "b", "ab", "abc", "abd", "xbc", "abcd", "abcdefg", "abcdefh",
        ];
        let longer = [
            "abcdefgh",
            "abcdefgi",
            "bbcdefgh",
            "abcdefghijklmnop",
            "abcdefghijklmnoq",
        ];
        let all: Vec<String> = texts
            .iter()
            .chain(&longer)
            .map(|t| t.to_string())
            .chain([
                "x".repeat(17),
                format!("{}y", "x".repeat(16)),
                "é".repeat(3),
            ])
            .collect();
        for a in &all {
            for b in &all {
                assert_eq!(same_text(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn python_whitespace_and_digits() {
        assert_eq!(py_strip("\u{1f} x\u{3000}"), "x");
        // Every ASCII byte at either end, against the general rule.
        for byte in 0..0x80u8 {
            let c = char::from(byte);
            for text in [
                format!("{c}"),
                format!("{c}ab"),
                format!("ab{c}"),
                format!("{c}{c}"),
            ] {
                assert_eq!(py_strip(&text), text.trim_matches(is_py_space), "{text:?}");
            }
        }
        assert_eq!(py_strip("a\u{85}"), "a");
        assert_eq!(py_strip("\u{a0}a"), "a");
        assert_eq!(py_strip(""), "");
        assert_eq!(decimal_digit('٣'), Some(3));
        assert_eq!(decimal_digit('²'), None);
        assert_eq!(decimal_digit('7'), Some(7));
    }

    #[test]
    fn strings_escape_only_what_orjson_escapes() {
        let mut out = String::new();
        write_json_string(&mut out, "a\"\\\n\u{1}\u{7f}é");
        assert_eq!(out, "\"a\\\"\\\\\\n\\u0001\u{7f}é\"");
    }
}
