//! Text rules of the reference: Python's whitespace and decimal digits, the JSON
//! text orjson writes, and the float spellings of Python's `repr` and orjson.

use crate::json::Value;

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

/// `text.strip()` as Python does it.
pub fn py_strip(text: &str) -> &str {
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

/// Append `text` as a JSON string the way orjson and `json.dumps(ensure_ascii=False)`
/// write it: only `"`, `\` and control characters below U+0020 are escaped.
pub fn write_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut start = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[start..at]);
        if escaped.is_empty() {
            out.push_str(&format!("\\u{byte:04x}"));
        } else {
            out.push_str(escaped);
        }
        start = at + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

/// The shortest round-trip digits of a finite `f64` and its decimal exponent:
/// `value = ±0.d1d2...dn × 10^point`... expressed as (negative, digits, exp) with
/// `value = ±d1.d2...dn × 10^exp`.
pub fn shortest_digits(value: f64) -> (bool, String, i32) {
    // An event's float is spelled up to four times (properties text,
    // canonical and numeric JSON, metering): remember the last few answers
    // (a pure function of the bits) instead of formatting it again.
    const SLOTS: usize = 16;
    /// The bits of a float and its `shortest_digits`.
    type Spelled = Option<(u64, bool, String, i32)>;
    thread_local! {
        static RECENT: std::cell::RefCell<[Spelled; SLOTS]> =
            const { std::cell::RefCell::new([const { None }; SLOTS]) };
    }
    let bits = value.to_bits();
    let slot = (bits ^ (bits >> 29) ^ (bits >> 47)) as usize % SLOTS;
    let known = RECENT.with_borrow(|recent| match &recent[slot] {
        Some((b, negative, digits, exp)) if *b == bits => Some((*negative, digits.clone(), *exp)),
        _ => None,
    });
    if let Some(found) = known {
        return found;
    }
    let found = spell_shortest(value);
    RECENT.with_borrow_mut(|recent| {
        recent[slot] = Some((bits, found.0, found.1.clone(), found.2));
    });
    found
}

/// `shortest_digits` without the memo.
fn spell_shortest(value: f64) -> (bool, String, i32) {
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
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    (
        value.is_sign_negative(),
        digits,
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
    let (negative, digits, exp) = shortest_digits(value);
    let sign = if negative { "-" } else { "" };
    let low = match style {
        FloatStyle::Orjson => -5,
        FloatStyle::PythonRepr => -4,
    };
    if exp >= 16 || exp < low {
        let fraction = if digits.len() > 1 {
            format!(".{}", &digits[1..])
        } else {
            String::new()
        };
        let exponent = match style {
            FloatStyle::PythonRepr => {
                format!("{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
            }
            FloatStyle::Orjson if exp < 0 => format!("-{}", exp.abs()),
            FloatStyle::Orjson => format!("+{exp}"),
        };
        return format!("{sign}{}{fraction}e{exponent}", &digits[..1]);
    }
    format!("{sign}{}", positional(&digits, exp, true))
}

/// `digits × 10^(exp - len + 1)` written without exponent; integral values get
/// `.0` when `point_zero`, else no fraction at all.
pub fn positional(digits: &str, exp: i32, point_zero: bool) -> String {
    let len = digits.len() as i32;
    if exp < 0 {
        return format!("0.{}{digits}", "0".repeat((-exp - 1) as usize));
    }
    if exp + 1 >= len {
        let zeros = "0".repeat((exp + 1 - len) as usize);
        return if point_zero {
            format!("{digits}{zeros}.0")
        } else {
            format!("{digits}{zeros}")
        };
    }
    let split = (exp + 1) as usize;
    format!("{}.{}", &digits[..split], &digits[split..])
}

/// Write `value` as compact JSON (`separators=(",", ":")`) with the given float style.
pub fn write_json(out: &mut String, value: &Value<'_>, style: FloatStyle) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Int(number) => out.push_str(&number.to_string()),
        Value::Float(number) => out.push_str(&format_float(*number, style)),
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
        Value::Object(members) => {
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
    }
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
    fn python_whitespace_and_digits() {
        assert_eq!(py_strip("\u{1f} x\u{3000}"), "x");
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
