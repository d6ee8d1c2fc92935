//! RFC 3339 timestamps as the reference reads them (`validation.parse_timestamp`).
//!
//! `YYYY-MM-DD(T|t| )HH:MM:SS[.fraction][Z|z|±HH:MM]`, at most 64 characters;
//! naive means UTC; fraction digits past the sixth are truncated; the offset is
//! `HH × 60 + MM` minutes and must stay below a day; the UTC result must lie in
//! `[1970-01-01, 2200-01-01)`. The result is microseconds since the epoch.

use crate::text::decimal_digit;

/// The text is not a timestamp the reference accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidTimestamp;

const MAX_CHARS: usize = 64;
const MICROS_PER_SECOND: i64 = 1_000_000;
/// 2200-01-01T00:00:00Z in seconds.
const END_SECONDS: i64 = 7_258_118_400;

/// Microseconds since the epoch, or `Err` for an invalid timestamp.
pub fn parse_timestamp(text: &str) -> Result<i64, InvalidTimestamp> {
    if let Some(micros) = parse_common(text.as_bytes()) {
        return Ok(micros);
    }
    parse_general(text)
}

/// The ASCII digits `bytes[at..at + count]` as a number, if they all are.
fn ascii_number(bytes: &[u8], at: usize, count: usize) -> Option<i64> {
    bytes.get(at..at + count)?.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

/// The fast path of [`parse_timestamp`]: the grammar spelled with ASCII
/// digits, read byte by byte. Every byte it accepts is the ASCII one the
/// grammar asks for there, so a non-ASCII byte (a digit of another script
/// included) ends it with `None`. `Some` only for a valid timestamp, with the
/// value the general path gives; `None` for anything else (non-ASCII,
/// malformed, out of range), which the general path then decides.
fn parse_common(bytes: &[u8]) -> Option<i64> {
    if bytes.len() < 19 || bytes.len() > MAX_CHARS {
        return None;
    }
    let separators = (bytes[4], bytes[7], bytes[10], bytes[13], bytes[16]);
    if !matches!(separators, (b'-', b'-', b'T' | b't' | b' ', b':', b':')) {
        return None;
    }
    let year = ascii_number(bytes, 0, 4)?;
    let month = ascii_number(bytes, 5, 2)?;
    let day = ascii_number(bytes, 8, 2)?;
    let hour = ascii_number(bytes, 11, 2)?;
    let minute = ascii_number(bytes, 14, 2)?;
    let second = ascii_number(bytes, 17, 2)?;
    let mut pos = 19;
    let mut micros = 0;
    if bytes.get(pos) == Some(&b'.') {
        // The first six digits count, the others are truncated.
        const SCALES: [i64; 7] = [1_000_000, 100_000, 10_000, 1_000, 100, 10, 1];
        let start = pos + 1;
        pos = start;
        while let Some(&digit @ b'0'..=b'9') = bytes.get(pos) {
            if pos - start < 6 {
                micros = micros * 10 + i64::from(digit - b'0');
            }
            pos += 1;
        }
        if pos == start {
            return None;
        }
        micros *= SCALES[(pos - start).min(6)];
    }
    let offset_minutes = match bytes.get(pos) {
        Some(b'Z' | b'z') => {
            pos += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            if bytes.get(pos + 3) != Some(&b':') {
                return None;
            }
            let minutes = ascii_number(bytes, pos + 1, 2)? * 60 + ascii_number(bytes, pos + 4, 2)?;
            pos += 6;
            if sign == b'-' {
                -minutes
            } else {
                minutes
            }
        }
        _ => 0,
    };
    if pos != bytes.len() {
        return None;
    }
    utc_micros(
        (year, month, day),
        (hour, minute, second),
        micros,
        offset_minutes,
    )
    .ok()
}

/// The checks and the arithmetic both paths share: the fields' ranges, the
/// offset below a day, the UTC result in `[1970-01-01, 2200-01-01)`.
fn utc_micros(
    (year, month, day): (i64, i64, i64),
    (hour, minute, second): (i64, i64, i64),
    micros: i64,
    offset_minutes: i64,
) -> Result<i64, InvalidTimestamp> {
    if !(1..=9999).contains(&year) || !(1..=12).contains(&month) {
        return Err(InvalidTimestamp);
    }
    if day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 59 {
        return Err(InvalidTimestamp);
    }
    if offset_minutes.abs() >= 24 * 60 {
        return Err(InvalidTimestamp);
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_minutes * 60;
    if !(0..END_SECONDS).contains(&seconds) {
        return Err(InvalidTimestamp);
    }
    Ok(seconds * MICROS_PER_SECOND + micros)
}

/// [`parse_timestamp`] of any text (digits of any script in the shape).
fn parse_general(text: &str) -> Result<i64, InvalidTimestamp> {
    // The characters on the stack (no allocation per event).
    let mut buffer = ['\0'; MAX_CHARS];
    let mut count = 0;
    for c in text.chars() {
        if count == MAX_CHARS {
            return Err(InvalidTimestamp);
        }
        buffer[count] = c;
        count += 1;
    }
    let chars = &buffer[..count];
    let mut cursor = Cursor { chars, pos: 0 };
    // The shape first (any script's digits, as the reference's regular
    // expression matches them); the values must then be ASCII digits.
    let year = cursor.number(4)?;
    cursor.expect(&['-'])?;
    let month = cursor.number(2)?;
    cursor.expect(&['-'])?;
    let day = cursor.number(2)?;
    cursor.expect(&['T', 't', ' '])?;
    let hour = cursor.number(2)?;
    cursor.expect(&[':'])?;
    let minute = cursor.number(2)?;
    cursor.expect(&[':'])?;
    let second = cursor.number(2)?;
    let mut micros: Option<i64> = Some(0);
    if cursor.peek() == Some('.') {
        cursor.pos += 1;
        let start = cursor.pos;
        while cursor.peek().and_then(decimal_digit).is_some() {
            cursor.pos += 1;
        }
        if cursor.pos == start {
            return Err(InvalidTimestamp);
        }
        let kept = &chars[start..cursor.pos.min(start + 6)];
        micros = ascii_value(kept).map(|v| v * 10i64.pow(6 - kept.len() as u32));
    }
    let mut offset_minutes: Option<i64> = Some(0);
    match cursor.peek() {
        Some('Z' | 'z') => cursor.pos += 1,
        Some(sign @ ('+' | '-')) => {
            cursor.pos += 1;
            let hours = cursor.number(2)?;
            cursor.expect(&[':'])?;
            let minutes = cursor.number(2)?;
            offset_minutes = match (hours, minutes) {
                (Some(h), Some(m)) => Some(if sign == '-' {
                    -(h * 60 + m)
                } else {
                    h * 60 + m
                }),
                _ => None,
            };
        }
        _ => {}
    }
    if cursor.pos != chars.len() {
        return Err(InvalidTimestamp);
    }
    let (year, month, day) = (
        year.ok_or(InvalidTimestamp)?,
        month.ok_or(InvalidTimestamp)?,
        day.ok_or(InvalidTimestamp)?,
    );
    let (hour, minute, second) = (
        hour.ok_or(InvalidTimestamp)?,
        minute.ok_or(InvalidTimestamp)?,
        second.ok_or(InvalidTimestamp)?,
    );
    let (micros, offset_minutes) = (
        micros.ok_or(InvalidTimestamp)?,
        offset_minutes.ok_or(InvalidTimestamp)?,
    );
    utc_micros(
        (year, month, day),
        (hour, minute, second),
        micros,
        offset_minutes,
    )
}

struct Cursor<'a> {
    chars: &'a [char],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn expect(&mut self, allowed: &[char]) -> Result<(), InvalidTimestamp> {
        match self.peek() {
            Some(c) if allowed.contains(&c) => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(InvalidTimestamp),
        }
    }

    /// `count` decimal digits of any script: `Err` if the shape does not match,
    /// `Ok(None)` if it does but a digit is not ASCII (the value is invalid).
    fn number(&mut self, count: usize) -> Result<Option<i64>, InvalidTimestamp> {
        let digits = self
            .chars
            .get(self.pos..self.pos + count)
            .ok_or(InvalidTimestamp)?;
        if digits.iter().any(|c| decimal_digit(*c).is_none()) {
            return Err(InvalidTimestamp);
        }
        self.pos += count;
        Ok(ascii_value(digits))
    }
}

fn ascii_value(digits: &[char]) -> Option<i64> {
    digits.iter().try_fold(0i64, |acc, c| {
        c.is_ascii_digit()
            .then(|| acc * 10 + (*c as i64 - '0' as i64))
    })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_producers_send() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_timestamp("2024-02-29T12:00:00.1234567+01:00"),
            Ok(1_709_204_400_123_456)
        );
        assert_eq!(
            parse_timestamp("2024-01-01 00:00:00"),
            Ok(1_704_067_200_000_000)
        );
        assert_eq!(
            parse_timestamp("2024-01-01t00:00:00+01:60"),
            Ok(1_704_067_200_000_000 - 7_200_000_000)
        );
    }

    #[test]
    fn the_fast_path_agrees_with_the_general_one() {
        // Every variation of each position of a few common shapes: a
        // character swapped for one of each kind the grammar tells apart.
        let shapes = [
            "2026-01-18T04:37:41.334Z",
            "2024-02-29t23:59:59.1234567-01:30",
            "1970-01-01 00:00:00+00:00",
            "2199-12-31T23:59:59.999999",
        ];
        let swaps = ['0', '9', '3', '-', ':', '.', 'T', ' ', 'Z', '+', 'x', '٣'];
        for shape in shapes {
            let chars: Vec<char> = shape.chars().collect();
            let mut texts = vec![shape.to_string(), shape[..shape.len() - 1].to_string()];
            for at in 0..chars.len() {
                for swap in swaps {
                    let mut changed = chars.clone();
                    changed[at] = swap;
                    texts.push(changed.iter().collect());
                }
            }
            for text in &texts {
                assert_eq!(parse_timestamp(text), parse_general(text), "{text}");
            }
            assert!(parse_common(shape.as_bytes()).is_some(), "{shape}");
        }
    }

    #[test]
    fn refuses_what_the_reference_refuses() {
        for bad in [
            "2024-02-30T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:60Z",
            "2200-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T00:00:00.Z",
            "٢٠٢٤-01-01T00:00:00Z",
            "2024-01-01",
        ] {
            assert_eq!(parse_timestamp(bad), Err(InvalidTimestamp), "{bad}");
        }
    }
}
