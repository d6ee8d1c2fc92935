//! Fixed-point amounts with the reference's rounding (`money.py`), for the
//! rating stage to come.
//!
//! A value is an `i128` holding `amount × 10^15` (a `Decimal(38, 15)`). A
//! product or quotient is computed exactly in 256 bits and rounded once to 15
//! places, half away from zero: what `quantize(mul(a, b))` and
//! `quantize(div(a, b))` give in Python (their 76-digit truncation cannot flip
//! that rounding, see `money.py`). Results that do not fit are `None`.

/// 10^15: one unit at the stored scale.
pub const ONE: i128 = 1_000_000_000_000_000;

/// An unsigned 256-bit integer as (high, low) halves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct U256 {
    hi: u128,
    lo: u128,
}

impl U256 {
    const ZERO: U256 = U256 { hi: 0, lo: 0 };

    fn from_u128(value: u128) -> U256 {
        U256 { hi: 0, lo: value }
    }

    /// The full product of two `u128`s.
    fn mul(a: u128, b: u128) -> U256 {
        let mask = u64::MAX as u128;
        let (a_hi, a_lo) = (a >> 64, a & mask);
        let (b_hi, b_lo) = (b >> 64, b & mask);
        let lo_lo = a_lo * b_lo;
        let hi_lo = a_hi * b_lo;
        let lo_hi = a_lo * b_hi;
        let hi_hi = a_hi * b_hi;
        let middle = (lo_lo >> 64) + (hi_lo & mask) + (lo_hi & mask);
        let lo = (middle << 64) | (lo_lo & mask);
        let hi = hi_hi + (hi_lo >> 64) + (lo_hi >> 64) + (middle >> 64);
        U256 { hi, lo }
    }

    fn add(self, other: U256) -> U256 {
        let (lo, carry) = self.lo.overflowing_add(other.lo);
        U256 {
            hi: self.hi + other.hi + carry as u128,
            lo,
        }
    }

    fn shl1(self) -> U256 {
        U256 {
            hi: (self.hi << 1) | (self.lo >> 127),
            lo: self.lo << 1,
        }
    }

    fn sub(self, other: U256) -> U256 {
        let (lo, borrow) = self.lo.overflowing_sub(other.lo);
        U256 {
            hi: self.hi - other.hi - borrow as u128,
            lo,
        }
    }

    fn bit(self, i: u32) -> bool {
        if i >= 128 {
            (self.hi >> (i - 128)) & 1 == 1
        } else {
            (self.lo >> i) & 1 == 1
        }
    }

    /// Quotient and remainder by a non-zero `u128` (the quotient must fit in
    /// 128 bits, else `None`): schoolbook binary long division.
    fn div_rem(self, divisor: u128) -> Option<(u128, u128)> {
        let divisor_wide = U256::from_u128(divisor);
        let mut remainder = U256::ZERO;
        let mut quotient = U256::ZERO;
        for i in (0..256).rev() {
            remainder = remainder.shl1();
            if self.bit(i) {
                remainder.lo |= 1;
            }
            quotient = quotient.shl1();
            if remainder >= divisor_wide {
                remainder = remainder.sub(divisor_wide);
                quotient.lo |= 1;
            }
        }
        (quotient.hi == 0).then_some((quotient.lo, remainder.lo))
    }
}

/// `numerator / divisor` rounded half away from zero, for a positive divisor.
fn round_div(numerator: U256, divisor: u128, negative: bool) -> Option<i128> {
    // Most products fit 128 bits: divide natively; else the long division.
    let (quotient, remainder) = if numerator.hi == 0 {
        (numerator.lo / divisor, numerator.lo % divisor)
    } else {
        numerator.div_rem(divisor)?
    };
    // remainder >= divisor / 2, without overflow: remainder >= divisor - remainder.
    let up = remainder >= divisor - remainder;
    let magnitude = quotient.checked_add(up as u128)?;
    let value = i128::try_from(magnitude).ok()?;
    Some(if negative { -value } else { value })
}

/// `quantize(mul(a, b))` of two scaled values.
pub fn mul(a: i128, b: i128) -> Option<i128> {
    let negative = (a < 0) != (b < 0);
    let product = U256::mul(a.unsigned_abs(), b.unsigned_abs());
    round_div(product, ONE as u128, negative)
}

/// `quantize(div(a, b))` of two scaled values; `None` when `b` is zero.
pub fn div(a: i128, b: i128) -> Option<i128> {
    if b == 0 {
        return None;
    }
    let negative = (a < 0) != (b < 0);
    let numerator = U256::mul(a.unsigned_abs(), ONE as u128);
    round_div(numerator, b.unsigned_abs(), negative)
}

/// An exact sum of products of scaled values and of scaled values, rounded
/// once: `quantize(sum(mul(a, b)) + ...)` of the reference, whose 76-digit
/// intermediates are exact for the magnitudes of prices (< 10^12) times
/// quantities (< 10^24).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProductSum {
    positive: U256,
    negative: U256,
}

impl ProductSum {
    /// Add `a × b` (both scaled).
    pub fn add_product(&mut self, a: i128, b: i128) {
        let product = U256::mul(a.unsigned_abs(), b.unsigned_abs());
        if (a < 0) != (b < 0) {
            self.negative = self.negative.add(product);
        } else {
            self.positive = self.positive.add(product);
        }
    }

    /// Add a scaled value.
    pub fn add(&mut self, a: i128) {
        self.add_product(a, ONE);
    }

    /// The sum rounded to 15 places half away from zero; `None` past `i128`.
    pub fn round(&self) -> Option<i128> {
        if self.positive >= self.negative {
            round_div(self.positive.sub(self.negative), ONE as u128, false)
        } else {
            round_div(self.negative.sub(self.positive), ONE as u128, true)
        }
    }
}

/// Plain decimal text with at most 15 places as a scaled value.
pub fn parse_scaled(text: &str) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() || fraction.len() > 15 {
        return None;
    }
    if !whole
        .bytes()
        .chain(fraction.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut value: i128 = whole.parse().ok()?;
    value = value.checked_mul(ONE)?;
    let padded = format!("{fraction:0<15}");
    value = value.checked_add(padded.parse::<i128>().ok()?)?;
    Some(if negative { -value } else { value })
}

/// The value as plain digits with 15 places (`format(Decimal, "f")` of a
/// quantized value).
pub fn format_scaled(value: i128) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let magnitude = value.unsigned_abs();
    let one = ONE as u128;
    format!("{sign}{}.{:015}", magnitude / one, magnitude % one)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fx(text: &str) -> i128 {
        parse_scaled(text).unwrap()
    }

    #[test]
    fn products_round_half_away_from_zero() {
        let half = fx("0.000000000000001");
        assert_eq!(mul(half, fx("0.5")), Some(fx("0.000000000000001")));
        assert_eq!(mul(-half, fx("0.5")), Some(-fx("0.000000000000001")));
        assert_eq!(mul(half, fx("0.4")), Some(0));
        assert_eq!(mul(fx("2.5"), fx("4")), Some(fx("10")));
    }

    #[test]
    fn quotients_are_exactly_rounded() {
        assert_eq!(div(fx("1"), fx("3")), Some(fx("0.333333333333333")));
        assert_eq!(div(fx("2"), fx("3")), Some(fx("0.666666666666667")));
        assert_eq!(div(fx("-2"), fx("3")), Some(fx("-0.666666666666667")));
        assert_eq!(div(fx("1"), 0), None);
    }

    #[test]
    fn product_sums_round_once() {
        let mut sum = ProductSum::default();
        sum.add_product(fx("-0.000000000000001"), fx("0.5"));
        sum.add(fx("0.000000000000001"));
        // -0.0000000000000005 + 0.000000000000001 = +half a unit: away from zero.
        assert_eq!(sum.round(), Some(fx("0.000000000000001")));
        let mut negative = ProductSum::default();
        negative.add_product(fx("-1.5"), fx("2"));
        assert_eq!(negative.round(), Some(fx("-3")));
    }

    #[test]
    fn wide_values_and_overflow() {
        let big = fx("99999999999999999999999.999999999999999");
        assert_eq!(mul(big, fx("1")), Some(big));
        assert_eq!(mul(big, big), None);
        assert_eq!(format_scaled(-fx("1.5")), "-1.500000000000000");
        assert_eq!(
            format_scaled(big),
            "99999999999999999999999.999999999999999"
        );
    }
}
