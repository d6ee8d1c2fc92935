//! Decimal text as the reference reads and writes it: Python's `Decimal(str)`
//! grammar, the 15-place half-away-from-zero quantization, and plain `f` output.
//!
//! Numbers stay digit strings here: nothing passes through a binary float.

use crate::text::{decimal_digit, is_py_space, py_strip};

/// Decimal places of every stored quantity (`money.SCALE`).
pub const SCALE: usize = 15;

/// Quantities at or above 10^18 are unusable (`metering.MAX_EVENT_QUANTITY`).
const MAX_QUANTITY_DIGITS: i128 = 18;

/// libmpdec's exponent limits (64-bit): `Decimal(str)` refuses values outside them.
const MAX_EMAX: i128 = 999_999_999_999_999_999;
const MIN_ETINY: i128 = -1_999_999_999_999_999_997;

/// A finite decimal: `(-1)^negative × coefficient × 10^exponent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    pub negative: bool,
    /// ASCII digits without leading zeros; `"0"` for zero.
    pub coefficient: String,
    pub exponent: i128,
}

impl Decimal {
    fn is_zero(&self) -> bool {
        self.coefficient == "0"
    }

    /// The exponent of the most significant digit (`adjusted()` in Python).
    fn adjusted(&self) -> i128 {
        self.exponent + self.coefficient.len() as i128 - 1
    }
}

/// `Decimal(text)` of CPython 3.11 for an already stripped `text`, when finite.
///
/// Underscores are ignored anywhere, digits of any script count, infinities and
/// NaNs (and anything unparseable or beyond libmpdec's exponent range) are `None`.
pub fn parse_py_decimal(text: &str) -> Option<Decimal> {
    let mut ascii = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '_' {
            continue;
        }
        if let Some(d) = decimal_digit(c) {
            ascii.push((b'0' + d) as char);
        } else if c.is_ascii() {
            ascii.push(c);
        } else {
            return None;
        }
    }
    let bytes = ascii.as_bytes();
    let mut pos = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            pos = 1;
            true
        }
        Some(b'+') => {
            pos = 1;
            false
        }
        _ => false,
    };
    let int_start = pos;
    while pos < bytes.len() && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    let int_digits = &ascii[int_start..pos];
    let mut frac_digits = "";
    if pos < bytes.len() && bytes[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        frac_digits = &ascii[start..pos];
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return None; // also Infinity, NaN, sNaN: never finite
    }
    let mut exponent: i128 = 0;
    if pos < bytes.len() && (bytes[pos] == b'e' || bytes[pos] == b'E') {
        pos += 1;
        let exp_negative = match bytes.get(pos) {
            Some(b'-') => {
                pos += 1;
                true
            }
            Some(b'+') => {
                pos += 1;
                false
            }
            _ => false,
        };
        let start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if start == pos {
            return None;
        }
        let significant = ascii[start..pos].trim_start_matches('0');
        if significant.len() > 30 {
            return None; // far outside the exponent range either way
        }
        exponent = significant.parse::<i128>().unwrap_or(0);
        if exp_negative {
            exponent = -exponent;
        }
    }
    if pos != bytes.len() {
        return None;
    }
    exponent -= frac_digits.len() as i128;
    let all = format!("{int_digits}{frac_digits}");
    let trimmed = all.trim_start_matches('0');
    let value = Decimal {
        negative,
        coefficient: if trimmed.is_empty() {
            "0".to_string()
        } else {
            trimmed.to_string()
        },
        exponent,
    };
    if value.exponent < MIN_ETINY || value.adjusted() > MAX_EMAX {
        return None;
    }
    Some(value)
}

/// `format(quantize(value), "f")` for `0 < value`: 15 places, half away from zero.
pub fn quantized_text(value: &Decimal) -> String {
    let scale = SCALE as i128;
    let mut digits: Vec<u8> = value.coefficient.bytes().map(|b| b - b'0').collect();
    if value.exponent >= -scale {
        digits.extend(std::iter::repeat_n(0, (value.exponent + scale) as usize));
    } else {
        let drop = (-scale - value.exponent) as usize;
        let (keep, rest) = if drop >= digits.len() {
            (Vec::new(), digits.clone())
        } else {
            let keep_len = digits.len() - drop;
            (digits[..keep_len].to_vec(), digits[keep_len..].to_vec())
        };
        // Half away from zero: the first dropped digit decides (when all of the
        // rest were dropped, the first dropped digit is the one just below the
        // kept ones only if `drop == rest.len()`).
        let round_up = drop == rest.len() && rest.first().is_some_and(|d| *d >= 5);
        digits = keep;
        if round_up {
            let mut i = digits.len();
            loop {
                if i == 0 {
                    digits.insert(0, 1);
                    break;
                }
                i -= 1;
                if digits[i] == 9 {
                    digits[i] = 0;
                } else {
                    digits[i] += 1;
                    break;
                }
            }
        }
    }
    // `digits` is now the value × 10^15.
    while digits.len() <= SCALE {
        digits.insert(0, 0);
    }
    let split = digits.len() - SCALE;
    let int_part: String = digits[..split].iter().map(|d| (b'0' + d) as char).collect();
    let int_part = int_part.trim_start_matches('0');
    let frac: String = digits[split..].iter().map(|d| (b'0' + d) as char).collect();
    format!(
        "{}.{frac}",
        if int_part.is_empty() { "0" } else { int_part }
    )
}

/// The `numeric_properties` text of a parsed value: `"0"` for zero and
/// negatives, the quantized value below 10^18, `None` at or above it.
pub fn numeric_text(value: &Decimal) -> Option<String> {
    if value.is_zero() || value.negative {
        return Some("0".to_string());
    }
    if too_large(value) {
        return None;
    }
    Some(quantized_text(value))
}

/// Whether a positive value is at or above 10^18 (`MAX_EVENT_QUANTITY`),
/// exactly, before any rounding.
pub fn too_large(value: &Decimal) -> bool {
    !value.is_zero() && !value.negative && value.adjusted() >= MAX_QUANTITY_DIGITS
}

/// The numeric text of a string property: what `parse_decimal` and the
/// "starts like a number" shortcut of the reference make of it.
pub fn numeric_of_string(text: &str) -> Option<String> {
    let mut out = String::new();
    write_numeric_of_string(&mut out, text).then_some(out)
}

/// Append `numeric_of_string(text)` to `out`; false (and `out` as it was)
/// when there is none.
pub fn write_numeric_of_string(out: &mut String, text: &str) -> bool {
    if (1..=18).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()) {
        // A plain whole number (most numeric strings): what the general path
        // below writes for it, without parsing it as a decimal first.
        let significant = text.trim_start_matches('0');
        if significant.is_empty() {
            out.push('0');
        } else {
            out.push_str(significant);
            out.push('.');
            out.extend(std::iter::repeat_n('0', SCALE));
        }
        return true;
    }
    match numeric_of_other_string(text) {
        Some(numeric) => {
            out.push_str(&numeric);
            true
        }
        None => false,
    }
}

/// `numeric_of_string` of a text that is not a plain whole number.
fn numeric_of_other_string(text: &str) -> Option<String> {
    let first = text.trim_start_matches(is_py_space).chars().next()?;
    if !(matches!(first, '+' | '-' | '.') || decimal_digit(first).is_some()) {
        return None;
    }
    numeric_text(&parse_py_decimal(py_strip(text))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(text: &str) -> Option<String> {
        numeric_of_string(text)
    }

    #[test]
    fn whole_number_strings_take_the_short_path_to_the_same_text() {
        for text in [
            "0",
            "000",
            "7",
            "007",
            "10",
            "999999999999999999",
            "100000000000000000",
        ] {
            let general = numeric_text(&parse_py_decimal(text).unwrap());
            assert_eq!(numeric(text), general, "{text}");
        }
    }

    #[test]
    fn python_decimal_grammar() {
        assert_eq!(numeric("1_0").as_deref(), Some("10.000000000000000"));
        assert_eq!(numeric(" ١.٥e٢ ").as_deref(), Some("150.000000000000000"));
        assert_eq!(numeric("+.5e-3").as_deref(), Some("0.000500000000000"));
        assert_eq!(numeric("5.").as_deref(), Some("5.000000000000000"));
        assert_eq!(numeric("-3").as_deref(), Some("0"));
        assert_eq!(numeric("1e18"), None);
        assert_eq!(
            numeric("999999999999999999.9999999999999999").as_deref(),
            Some("1000000000000000000.000000000000000")
        );
        for bad in ["_1", "1e", "Infinity", "nan", "1 0", "0x10", "+-1", "", "²"] {
            assert_eq!(numeric(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn quantizes_half_away_from_zero() {
        assert_eq!(
            numeric("0.0000000000000005").as_deref(),
            Some("0.000000000000001")
        );
        assert_eq!(
            numeric("0.00000000000000049").as_deref(),
            Some("0.000000000000000")
        );
        assert_eq!(
            numeric("0.9999999999999999").as_deref(),
            Some("1.000000000000000")
        );
        assert_eq!(numeric("1e-40").as_deref(), Some("0.000000000000000"));
    }

    #[test]
    fn exponent_limits_of_libmpdec() {
        assert!(parse_py_decimal("1e-1999999999999999997").is_some());
        assert!(parse_py_decimal("1e-1999999999999999998").is_none());
        assert!(parse_py_decimal("1e999999999999999999").is_some());
        assert!(parse_py_decimal("1e1000000000000000000").is_none());
    }
}
