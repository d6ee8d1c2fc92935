//! What one event contributes to a meter (`metering.measure` of the reference):
//! the quantity at the stored scale, the unique hash, and whether the field was
//! missing.
//!
//! Quantities are exact: a property value is read as Python's `Decimal` reads
//! it (digit strings, never a binary float), products with the multiplier and
//! with the `WEIGHTED_SUM` weight are exact digit products, rounded once to 15
//! places half away from zero. The reference truncates products at 76
//! significant digits before that rounding; for values below 10^18 that
//! truncation happens far beyond the 16th decimal place and cannot move the
//! rounding (see `money.py`). The weight itself is the reference's: the
//! quotient of integer microseconds truncated to 76 significant digits.

use crate::decimal::{numeric_text, parse_py_decimal, too_large, Decimal};
use crate::event::canonical_float;
use crate::fixed;
use crate::json::Value;
use crate::sha256::{self, UniqueHash};
use crate::text::{py_strip, same_text, short_fixed, shortest_digits};

/// `metering.AggregationType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    Count,
    Sum,
    Avg,
    Max,
    Latest,
    SumWithMultiplier,
    CountUnique,
    WeightedSum,
}

impl Aggregation {
    /// The catalog's spelling (`AggregationType` values).
    pub fn from_code(code: &str) -> Option<Aggregation> {
        Some(match code {
            "COUNT" => Aggregation::Count,
            "SUM" => Aggregation::Sum,
            "AVG" => Aggregation::Avg,
            "MAX" => Aggregation::Max,
            "LATEST" => Aggregation::Latest,
            "SUM_WITH_MULTIPLIER" => Aggregation::SumWithMultiplier,
            "COUNT_UNIQUE" => Aggregation::CountUnique,
            "WEIGHTED_SUM" => Aggregation::WeightedSum,
            _ => return None,
        })
    }
}

/// `metering.Measurement`: `quantity` is scaled by 10^15.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    pub quantity: i128,
    pub unique_hash: UniqueHash,
    pub field_missing: bool,
}

/// The identity parts of an event that its hashes read.
pub struct EventIds<'a> {
    pub tenant_id: &'a str,
    pub environment_id: &'a str,
    pub id: &'a str,
    /// The event hash, computed once for all the event's matches.
    hash: std::cell::OnceCell<[u8; 32]>,
}

impl<'a> EventIds<'a> {
    pub fn new(tenant_id: &'a str, environment_id: &'a str, id: &'a str) -> Self {
        EventIds {
            tenant_id,
            environment_id,
            id,
            hash: std::cell::OnceCell::new(),
        }
    }

    /// `metering.event_hash`.
    pub fn event_hash(&self) -> UniqueHash {
        UniqueHash::Digest(*self.hash.get_or_init(|| {
            sha256::digest_of_parts(&[self.tenant_id, self.environment_id, self.id])
        }))
    }
}

/// The meter fields measuring reads.
pub struct MeterRule<'a> {
    pub id: &'a str,
    pub aggregation: Aggregation,
    pub field: &'a str,
    /// `multiplier` of `SUM_WITH_MULTIPLIER` (1 otherwise).
    pub multiplier: &'a Decimal,
}

/// `metering.canonical_value`: the string a filter or `COUNT_UNIQUE` compares.
pub fn canonical_value(value: Option<&Value<'_>>) -> Option<String> {
    match value? {
        Value::Str(text) => Some(text.to_string()),
        Value::Bool(flag) => Some(if *flag { "true" } else { "false" }.to_string()),
        Value::Int(number) => Some(number.to_string()),
        Value::Float(number) => Some(canonical_float(*number)),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// `money.parse_decimal` of a JSON value.
pub fn parse_value(value: Option<&Value<'_>>) -> Option<Decimal> {
    match value? {
        Value::Int(number) => parse_py_decimal(&number.to_string()),
        Value::Float(number) => {
            let (negative, digits, exp) = shortest_digits(*number);
            let exponent = i128::from(exp) - (digits.len() as i128 - 1);
            let trimmed = digits.trim_start_matches('0');
            Some(Decimal {
                negative,
                coefficient: if trimmed.is_empty() { "0" } else { trimmed }.to_string(),
                exponent,
            })
        }
        Value::Str(text) => parse_py_decimal(py_strip(text)),
        Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_) => None,
    }
}

/// `metering.measure` for one event in the period `[period_start_us, period_end_us)`.
pub fn measure(
    meter: &MeterRule<'_>,
    event: &EventIds<'_>,
    properties: &[(std::borrow::Cow<'_, str>, Value<'_>)],
    timestamp_us: i64,
    period: (i64, i64),
) -> Measurement {
    let missing = |event: &EventIds<'_>| Measurement {
        quantity: 0,
        unique_hash: event.event_hash(),
        field_missing: true,
    };
    let raw = || {
        properties
            .iter()
            .find(|(key, _)| same_text(key, meter.field))
            .map(|(_, value)| value)
    };
    match meter.aggregation {
        Aggregation::Count => {
            return Measurement {
                quantity: fixed::ONE,
                unique_hash: event.event_hash(),
                field_missing: false,
            }
        }
        Aggregation::CountUnique => {
            let Some(canonical) = canonical_value(raw()) else {
                return missing(event);
            };
            let unique_hash = UniqueHash::Digest(sha256::digest_of_parts(&[
                event.tenant_id,
                event.environment_id,
                meter.id,
                &canonical,
            ]));
            return Measurement {
                quantity: fixed::ONE,
                unique_hash,
                field_missing: false,
            };
        }
        _ => {}
    }
    let plain = !matches!(
        meter.aggregation,
        Aggregation::SumWithMultiplier | Aggregation::WeightedSum
    );
    if let Some(quantity) = plain.then(|| direct_quantity(raw())).flatten() {
        return Measurement {
            quantity,
            unique_hash: event.event_hash(),
            field_missing: false,
        };
    }
    let short = match meter.aggregation {
        Aggregation::SumWithMultiplier => scaled_product(raw(), meter.multiplier),
        Aggregation::WeightedSum => weighted_quantity(raw(), timestamp_us, period),
        _ => None,
    };
    if let Some(quantity) = short {
        return match quantity {
            Some(quantity) => Measurement {
                quantity,
                unique_hash: event.event_hash(),
                field_missing: false,
            },
            None => missing(event),
        };
    }
    let Some(mut value) = parse_value(raw()) else {
        return missing(event);
    };
    if meter.aggregation == Aggregation::SumWithMultiplier {
        value = mul_exact(&value, meter.multiplier);
    }
    if meter.aggregation == Aggregation::WeightedSum && !value.negative && !is_zero(&value) {
        // The reference checks the range before weighting: 10^18 weighted
        // down below it is still a missing field.
        if too_large(&value) {
            return missing(event);
        }
        value = mul_exact(&value, &time_weight(timestamp_us, period.0, period.1));
    }
    // numeric_text: None at or above 10^18, 0 for negatives, else quantized.
    let Some(text) = numeric_text(&value) else {
        return missing(event);
    };
    Measurement {
        quantity: fixed::parse_scaled(&text).expect("a quantized value below 10^18"),
        unique_hash: event.event_hash(),
        field_missing: false,
    }
}

/// The quantity of a whole number below 10^18 (an integer, or a string of at
/// most 18 ASCII digits) or of a float whose shortest spelling has at most 15
/// places and is below 2^52 / 10^places (`text::short_fixed`), scaled;
/// negatives are 0. `None`: take the general path (`parse_value`), which
/// gives the same answer for these, only slower.
fn direct_quantity(value: Option<&Value<'_>>) -> Option<i128> {
    const LIMIT: i128 = 1_000_000_000_000_000_000;
    match value? {
        Value::Float(number) => {
            let (n, places) = short_fixed(*number)?;
            if number.is_sign_negative() {
                return Some(0);
            }
            Some(i128::from(n) * 10i128.pow(crate::decimal::SCALE as u32 - places))
        }
        Value::Int(number) if *number < LIMIT => Some((*number).max(0) * fixed::ONE),
        Value::Str(text)
            if (1..=18).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some(text.parse::<i128>().ok()? * fixed::ONE)
        }
        _ => None,
    }
}

/// A value `direct_quantity` knows as `(negative, n, places)`: `±n / 10^places`.
fn small_value(value: Option<&Value<'_>>) -> Option<(bool, u64, u32)> {
    match value? {
        Value::Int(number) => Some((*number < 0, u64::try_from(number.unsigned_abs()).ok()?, 0)),
        Value::Float(number) => {
            let (n, places) = short_fixed(*number)?;
            Some((number.is_sign_negative(), n, places))
        }
        Value::Str(text)
            if (1..=18).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some((false, text.parse().ok()?, 0))
        }
        _ => None,
    }
}

/// `SUM_WITH_MULTIPLIER`'s quantity in integers: the exact product of a
/// value `small_value` knows and a multiplier of at most 19 digits, then
/// `numeric_text`'s rules (0 for zero and negatives; `None` inside - a
/// missing field - at or above 10^18, checked exactly before rounding;
/// else 15 places, half away from zero), scaled. The outer `None`: take the
/// general path (digit strings), which gives the same answers.
fn scaled_product(value: Option<&Value<'_>>, multiplier: &Decimal) -> Option<Option<i128>> {
    let (negative, n, places) = small_value(value)?;
    if multiplier.coefficient.len() > 19 {
        return None;
    }
    let m: u64 = multiplier.coefficient.parse().ok()?;
    let exponent = i32::try_from(multiplier.exponent).ok()? - places as i32;
    let product = u128::from(n) * u128::from(m);
    if product == 0 || negative != multiplier.negative {
        return Some(Some(0));
    }
    // product × 10^exponent >= 10^18 ?
    let digits_needed = 18 - i64::from(exponent);
    let too_large = digits_needed <= 0
        || 10u128
            .checked_pow(u32::try_from(digits_needed).ok()?)
            .is_some_and(|limit| product >= limit);
    if too_large {
        return Some(None);
    }
    let shift = i64::from(exponent) + crate::decimal::SCALE as i64;
    let scaled = if shift >= 0 {
        // Below 10^18 × 10^15: fits.
        product * 10u128.pow(shift as u32)
    } else {
        match 10u128.checked_pow((-shift) as u32) {
            Some(unit) => product / unit + u128::from(product % unit >= unit.div_ceil(2)),
            None => 0, // the product is below 10^38 / 2: rounds to 0
        }
    };
    Some(Some(i128::try_from(scaled).ok()?))
}

/// `WEIGHTED_SUM`'s quantity in integers for a value `small_value` knows,
/// strictly inside the period: `value × remaining / length`, exactly, rounded
/// once to 15 places half away from zero; 0 for zero and negatives; `None`
/// inside (a missing field) when the value is at or above 10^18, checked
/// before weighting as the reference does. The outer `None`: take the general
/// path (digit strings), which gives the same answers.
///
/// The general path multiplies by the weight truncated to 76 significant
/// digits (`time_weight`). That truncation moves the product by less than
/// `value × 10^-76` (below 10^-58), while an exact quotient that is not a tie
/// lies at least `1 / (2 × length × 10^places)` (above 10^-34, a length being
/// below 2^63 µs and places at most 15) from the nearest rounding boundary:
/// so both round alike, except at an exact tie, where the truncated weight
/// rounds down unless it was exact. Ties take the general path.
fn weighted_quantity(
    value: Option<&Value<'_>>,
    timestamp_us: i64,
    (start_us, end_us): (i64, i64),
) -> Option<Option<i128>> {
    let (negative, n, places) = small_value(value)?;
    if negative || n == 0 {
        return Some(Some(0));
    }
    let unit = 10u128.checked_pow(places)?;
    if u128::from(n) >= 1_000_000_000_000_000_000 * unit {
        return Some(None);
    }
    let length = i128::from(end_us) - i128::from(start_us);
    let remaining = i128::from(end_us) - i128::from(timestamp_us);
    if !(0 < remaining && remaining < length) {
        return None; // weight 0 or 1: rare, the general path
    }
    let scaled = u128::from(n)
        .checked_mul(remaining as u128)?
        .checked_mul(fixed::ONE as u128)?;
    let divisor = (length as u128).checked_mul(unit)?;
    let (quotient, rest) = (scaled / divisor, scaled % divisor);
    match (2 * rest).cmp(&divisor) {
        std::cmp::Ordering::Less => Some(Some(quotient as i128)),
        std::cmp::Ordering::Greater => Some(Some(quotient as i128 + 1)),
        std::cmp::Ordering::Equal => None,
    }
}

fn is_zero(value: &Decimal) -> bool {
    value.coefficient == "0"
}

/// The exact product of two decimals.
pub fn mul_exact(a: &Decimal, b: &Decimal) -> Decimal {
    let negative = a.negative != b.negative;
    if is_zero(a) || is_zero(b) {
        return Decimal {
            negative,
            coefficient: "0".to_string(),
            exponent: a.exponent + b.exponent,
        };
    }
    let x: Vec<u32> = a
        .coefficient
        .bytes()
        .rev()
        .map(|d| u32::from(d - b'0'))
        .collect();
    let y: Vec<u32> = b
        .coefficient
        .bytes()
        .rev()
        .map(|d| u32::from(d - b'0'))
        .collect();
    let mut product = vec![0u64; x.len() + y.len()];
    for (i, xi) in x.iter().enumerate() {
        for (j, yj) in y.iter().enumerate() {
            product[i + j] += u64::from(xi * yj);
        }
    }
    let mut carry = 0u64;
    for slot in product.iter_mut() {
        let total = *slot + carry;
        *slot = total % 10;
        carry = total / 10;
    }
    debug_assert_eq!(carry, 0);
    let digits: String = product
        .iter()
        .rev()
        .map(|d| char::from(b'0' + *d as u8))
        .collect();
    let trimmed = digits.trim_start_matches('0');
    Decimal {
        negative,
        coefficient: if trimmed.is_empty() { "0" } else { trimmed }.to_string(),
        exponent: a.exponent + b.exponent,
    }
}

/// `metering.time_weight`: `min(end - ts, end - start) / (end - start)` truncated
/// to 76 significant digits (the reference's `div`), 0 when either is <= 0.
pub fn time_weight(timestamp_us: i64, start_us: i64, end_us: i64) -> Decimal {
    let length = i128::from(end_us) - i128::from(start_us);
    let remaining = i128::from(end_us) - i128::from(timestamp_us);
    let zero = Decimal {
        negative: false,
        coefficient: "0".to_string(),
        exponent: 0,
    };
    if length <= 0 || remaining <= 0 {
        return zero;
    }
    if remaining >= length {
        return Decimal {
            negative: false,
            coefficient: "1".to_string(),
            exponent: 0,
        };
    }
    let mut rest = remaining;
    let mut digits = String::new();
    let mut places: i128 = 0;
    let mut significant = 0;
    while rest != 0 && significant < 76 {
        rest *= 10;
        let digit = rest / length;
        rest %= length;
        places += 1;
        if digit != 0 || significant > 0 {
            digits.push(char::from(b'0' + digit as u8));
            significant += 1;
        }
    }
    Decimal {
        negative: false,
        coefficient: digits,
        exponent: -places,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(text: &str) -> Decimal {
        parse_py_decimal(text).unwrap()
    }

    #[test]
    fn whole_numbers_and_short_floats_take_the_short_path_to_the_same_answer() {
        let mut values: Vec<Value<'static>> = ["61", "007", "999999999999999999", "0"]
            .into_iter()
            .map(|text| Value::Str(text.into()))
            .collect();
        for float in [12.34, 0.1, 1e-15, 4503.599627370495, 0.0, 49.99, 7.0] {
            values.push(Value::Float(float));
        }
        for value in values {
            let text = format!("{value:?}");
            let general = numeric_text(&parse_value(Some(&value)).unwrap()).unwrap();
            assert_eq!(
                direct_quantity(Some(&value)),
                fixed::parse_scaled(&general),
                "{text}"
            );
        }
        assert_eq!(direct_quantity(Some(&Value::Int(-5))), Some(0));
        assert_eq!(direct_quantity(Some(&Value::Float(-2.5))), Some(0));
        assert_eq!(direct_quantity(Some(&Value::Float(-0.0))), Some(0));
        // More than 15 places, or too many digits: the general path rounds.
        assert_eq!(direct_quantity(Some(&Value::Float(1.5e-16))), None);
        assert_eq!(direct_quantity(Some(&Value::Float(1e17))), None);
        assert_eq!(direct_quantity(Some(&Value::Str(" 1".into()))), None);
        assert_eq!(
            direct_quantity(Some(&Value::Int(1_000_000_000_000_000_000))),
            None
        );
    }

    #[test]
    fn a_weighted_value_out_of_range_is_missing_before_weighting() {
        // Found by the resolve differential test: 1e18 one µs before the end
        // of a one-second period weighs 1e12, but the reference reads 1e18
        // as out of range first (a missing field, quantity 0).
        let rule = MeterRule {
            id: "m",
            aggregation: Aggregation::WeightedSum,
            field: "n",
            multiplier: &dec("1"),
        };
        let ids = EventIds::new("t", "e", "e1");
        let measured = |value: Value<'static>| {
            let properties = vec![(std::borrow::Cow::Borrowed("n"), value)];
            measure(&rule, &ids, &properties, 999_999, (0, 1_000_000))
        };
        let out = measured(Value::Float(1e18));
        assert!(out.field_missing);
        assert_eq!(out.quantity, 0);
        let below = measured(Value::Float(9e17));
        assert!(!below.field_missing);
        assert_eq!(below.quantity, 900_000_000_000 * fixed::ONE);
    }

    #[test]
    fn multiplied_short_values_take_the_short_path_to_the_same_answer() {
        let values = [
            Value::Int(7),
            Value::Int(-7),
            Value::Int(0),
            Value::Int(i128::from(u64::MAX)),
            Value::Float(12.34),
            Value::Float(-0.0),
            Value::Float(0.000000000000005),
            Value::Str("999999999999999999".into()),
            Value::Str("42".into()),
        ];
        let multipliers = [
            "0.001",
            "1",
            "2.5",
            "-3",
            "0",
            "1e20",
            "1e-30",
            "0.5",
            "1E+3",
            "1234567890123456789",
            "0.0000000000000005",
        ];
        for value in &values {
            for multiplier in multipliers {
                let multiplier = dec(multiplier);
                let general = parse_value(Some(value))
                    .and_then(|v| numeric_text(&mul_exact(&v, &multiplier)))
                    .map(|text| fixed::parse_scaled(&text).unwrap());
                assert_eq!(
                    scaled_product(Some(value), &multiplier),
                    Some(general),
                    "{value:?} × {multiplier:?}"
                );
            }
        }
        // Beyond 19 digits, or a value the short path does not know: general path.
        assert_eq!(
            scaled_product(Some(&Value::Int(1)), &dec("12345678901234567890")),
            None
        );
        assert_eq!(
            scaled_product(Some(&Value::Str(" 1".into())), &dec("1")),
            None
        );
    }

    #[test]
    fn weighted_short_values_take_the_short_path_to_the_same_answer() {
        let general = |value: &Value<'_>, ts: i64, period: (i64, i64)| {
            let value = parse_value(Some(value)).unwrap();
            if value.negative || is_zero(&value) {
                return Some(0);
            }
            if too_large(&value) {
                return None;
            }
            let weighted = mul_exact(&value, &time_weight(ts, period.0, period.1));
            numeric_text(&weighted).map(|text| fixed::parse_scaled(&text).unwrap())
        };
        let values = [
            Value::Int(7),
            Value::Int(-7),
            Value::Int(0),
            Value::Int(999_999_999_999_999_999),
            Value::Int(1_000_000_000_000_000_000),
            Value::Int(i128::from(u64::MAX)),
            Value::Float(12.34),
            Value::Float(-0.0),
            Value::Float(0.000000000000005),
            Value::Float(0.0000000000000015),
            Value::Float(4503.599627370495),
            Value::Str("999999999999999999".into()),
            Value::Str("42".into()),
        ];
        let periods = [
            (0, 3),
            (0, 4),
            (0, 7),
            (0, 1_000_000),
            (-5, 2_678_400_000_000),
        ];
        let mut taken = 0;
        for value in &values {
            for period in periods {
                for ts in [period.0, period.0 + 1, period.1 / 3, period.1 - 1, period.1] {
                    // None: the general path (weight 0 or 1, a tie, or a
                    // product beyond 128 bits).
                    if let Some(short) = weighted_quantity(Some(value), ts, period) {
                        taken += 1;
                        assert_eq!(short, general(value, ts, period), "{value:?} {ts}");
                    }
                }
            }
        }
        assert!(taken > 150, "{taken} of 325");
        // Exact ties take the general path: 9e-15 × 1/6 is 1.5 units, which
        // the truncated sixth rounds down; 3e-15 × 1/2 (an exact weight)
        // rounds up.
        let (nine, three) = (Value::Float(9e-15), Value::Float(3e-15));
        assert_eq!(weighted_quantity(Some(&nine), 5, (0, 6)), None);
        assert_eq!(general(&nine, 5, (0, 6)), Some(1));
        assert_eq!(weighted_quantity(Some(&three), 2, (0, 4)), None);
        assert_eq!(general(&three, 2, (0, 4)), Some(2));
        // 3e-15 × 1/4 = 0.75 units is no tie: rounds up.
        assert_eq!(weighted_quantity(Some(&three), 3, (0, 4)), Some(Some(1)));
    }

    #[test]
    fn products_are_exact() {
        assert_eq!(mul_exact(&dec("1.5"), &dec("-2.25")), dec("-3.375"));
        assert_eq!(
            mul_exact(&dec("999999999999"), &dec("999999999999")),
            dec("999999999998000000000001")
        );
    }

    #[test]
    fn the_weight_is_truncated_like_the_reference() {
        let third = time_weight(2, 0, 3);
        assert_eq!(third.exponent, -76);
        assert_eq!(third.coefficient, "3".repeat(76));
        assert_eq!(time_weight(0, 0, 4), dec("1"));
        assert_eq!(time_weight(3, 0, 4), dec("0.25"));
        assert_eq!(time_weight(4, 0, 4).coefficient, "0");
        // 1.5e-15 × 1/3 is exactly half a unit, but the truncated third makes it less.
        let value = mul_exact(&dec("0.0000000000000015"), &third);
        assert_eq!(numeric_text(&value).unwrap(), "0.000000000000000");
    }
}
