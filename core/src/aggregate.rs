//! Running aggregates of one (line item, period) (`aggregates.py`): `peek`
//! gives the period quantity an event would make, `add` applies it. Values are
//! scaled `i128`s, timestamps epoch µs.

use std::collections::HashMap;

use crate::fixed;
use crate::measure::Aggregation;
use crate::period_rating::DigestState;

/// Bucket start (epoch µs) -> the bucket's maximum. Keyed by event
/// timestamps: the keyed `DigestState`, which also spreads starts that are
/// multiples of a large power of two (what the Fx hash would not).
pub type BucketMaxima = HashMap<i64, i128, DigestState>;

/// `metering.WindowSize` of a bucketed `MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// A fixed number of minutes (MINUTE ... DAY).
    Minutes(i64),
    Week,
    Month,
}

impl Bucket {
    pub fn from_code(code: &str) -> Option<Bucket> {
        Some(match code {
            "MINUTE" => Bucket::Minutes(1),
            "15MIN" => Bucket::Minutes(15),
            "30MIN" => Bucket::Minutes(30),
            "HOUR" => Bucket::Minutes(60),
            "3HOUR" => Bucket::Minutes(180),
            "6HOUR" => Bucket::Minutes(360),
            "12HOUR" => Bucket::Minutes(720),
            "DAY" => Bucket::Minutes(1440),
            "WEEK" => Bucket::Week,
            "MONTH" => Bucket::Month,
            _ => return None,
        })
    }

    /// `windows.window_start` in epoch µs (UTC).
    pub fn start(self, ts: i64) -> i64 {
        const DAY: i64 = 86_400_000_000;
        match self {
            Bucket::Minutes(minutes) => {
                let step = minutes * 60_000_000;
                ts.div_euclid(step) * step
            }
            Bucket::Week => {
                let day = ts.div_euclid(DAY);
                // 1970-01-01 was a Thursday (weekday 3, Monday = 0).
                (day - (day + 3).rem_euclid(7)) * DAY
            }
            Bucket::Month => {
                let (year, month, _) = civil_from_days(ts.div_euclid(DAY));
                days_from_civil(year, month, 1) * DAY
            }
        }
    }
}

/// Proleptic Gregorian date of a day number (days since 1970-01-01).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Day number of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What the store returns to rebuild an aggregate (`AggregateSnapshot`).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub total: i128,
    pub count: i64,
    pub maximum: i128,
    pub latest: Option<(i64, String, i128)>,
    pub bucket_maxima: Vec<(i64, i128)>,
}

/// One aggregate's state.
#[derive(Debug, Clone)]
pub enum Aggregate {
    /// COUNT, SUM, SUM_WITH_MULTIPLIER, COUNT_UNIQUE, WEIGHTED_SUM.
    Sum {
        total: i128,
    },
    Average {
        total: i128,
        count: i64,
    },
    Max {
        maximum: i128,
    },
    BucketedMax {
        bucket: Bucket,
        maxima: BucketMaxima,
        sum: i128,
    },
    Latest {
        key: Option<(i64, String)>,
        value: i128,
    },
}

impl Aggregate {
    /// `new_aggregate(kind, bucket_size, snapshot)`; `None` when a sum does not fit.
    pub fn new(kind: Aggregation, bucket: Option<Bucket>, snapshot: &Snapshot) -> Option<Self> {
        Some(match (kind, bucket) {
            (Aggregation::Avg, _) => Aggregate::Average {
                total: snapshot.total,
                count: snapshot.count,
            },
            (Aggregation::Max, Some(bucket)) => {
                let maxima: BucketMaxima = snapshot.bucket_maxima.iter().copied().collect();
                let mut sum: i128 = 0;
                for value in maxima.values() {
                    sum = sum.checked_add(*value)?;
                }
                Aggregate::BucketedMax {
                    bucket,
                    maxima,
                    sum,
                }
            }
            (Aggregation::Max, None) => Aggregate::Max {
                maximum: snapshot.maximum,
            },
            (Aggregation::Latest, _) => match &snapshot.latest {
                None => Aggregate::Latest {
                    key: None,
                    value: 0,
                },
                Some((ts, id, value)) => Aggregate::Latest {
                    key: Some((*ts, id.clone())),
                    value: *value,
                },
            },
            _ => Aggregate::Sum {
                total: snapshot.total,
            },
        })
    }

    /// `q(A)`; `None` only for an average of values beyond `i128`.
    pub fn quantity(&self) -> Option<i128> {
        match self {
            Aggregate::Sum { total } => Some(*total),
            Aggregate::Average { total, count } => {
                if *count == 0 {
                    Some(0)
                } else {
                    fixed::div(*total, i128::from(*count).checked_mul(fixed::ONE)?)
                }
            }
            Aggregate::Max { maximum } => Some(*maximum),
            Aggregate::BucketedMax { sum, .. } => Some(*sum),
            Aggregate::Latest { value, .. } => Some(*value),
        }
    }

    /// `q(A + event)` without applying it; `None` past `i128` (out of range).
    pub fn peek(&self, value: i128, ts: i64, event_id: &str) -> Option<i128> {
        match self {
            Aggregate::Sum { total } => total.checked_add(value),
            Aggregate::Average { total, count } => fixed::div(
                total.checked_add(value)?,
                i128::from(count.checked_add(1)?).checked_mul(fixed::ONE)?,
            ),
            Aggregate::Max { maximum } => Some(value.max(*maximum)),
            Aggregate::BucketedMax {
                bucket,
                maxima,
                sum,
            } => match maxima.get(&bucket.start(ts)) {
                None => sum.checked_add(value),
                Some(previous) if value > *previous => sum.checked_add(value - previous),
                Some(_) => Some(*sum),
            },
            Aggregate::Latest { key, value: latest } => Some(match key {
                Some((key_ts, key_id)) if (ts, event_id) <= (*key_ts, key_id.as_str()) => *latest,
                _ => value,
            }),
        }
    }

    /// Apply one (deduplicated) event; call only after `peek` gave `Some`.
    pub fn add(&mut self, value: i128, ts: i64, event_id: &str) {
        match self {
            Aggregate::Sum { total } => *total += value,
            Aggregate::Average { total, count } => {
                *total += value;
                *count += 1;
            }
            Aggregate::Max { maximum } => *maximum = value.max(*maximum),
            Aggregate::BucketedMax {
                bucket,
                maxima,
                sum,
            } => match maxima.get_mut(&bucket.start(ts)) {
                None => {
                    maxima.insert(bucket.start(ts), value);
                    *sum += value;
                }
                Some(previous) if value > *previous => {
                    *sum += value - *previous;
                    *previous = value;
                }
                Some(_) => {}
            },
            Aggregate::Latest { key, value: latest } => {
                let newer = match key {
                    Some((key_ts, key_id)) => (ts, event_id) > (*key_ts, key_id.as_str()),
                    None => true,
                };
                if newer {
                    // The id's buffer is reused: no allocation per event.
                    match key {
                        Some((key_ts, key_id)) => {
                            *key_ts = ts;
                            key_id.clear();
                            key_id.push_str(event_id);
                        }
                        None => *key = Some((ts, event_id.to_string())),
                    }
                    *latest = value;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts_match_the_calendar() {
        // 2026-03-29T01:30:00Z, a Sunday.
        let ts = 1_774_747_800_000_000;
        assert_eq!(Bucket::Minutes(60).start(ts), 1_774_746_000_000_000);
        assert_eq!(Bucket::Week.start(ts), 1_774_224_000_000_000); // Monday 03-23
        assert_eq!(Bucket::Month.start(ts), 1_772_323_200_000_000); // 03-01
        assert_eq!(Bucket::Month.start(-1), -2_678_400_000_000); // 1969-12-01
    }

    #[test]
    fn latest_keeps_the_greatest_timestamp_and_id() {
        let mut latest = Aggregate::new(Aggregation::Latest, None, &Snapshot::default()).unwrap();
        latest.add(5, 10, "b");
        assert_eq!(latest.peek(7, 10, "a"), Some(5));
        assert_eq!(latest.peek(7, 10, "c"), Some(7));
        latest.add(7, 9, "z");
        assert_eq!(latest.quantity(), Some(5));
        // A newer event with a shorter id takes the key whole (its buffer is reused).
        latest.add(6, 11, "a");
        assert_eq!(latest.quantity(), Some(6));
        assert_eq!(latest.peek(8, 11, "a"), Some(6));
        assert_eq!(latest.peek(8, 11, "aa"), Some(8));
        assert_eq!(latest.peek(8, 11, "B"), Some(6));
    }

    #[test]
    fn bucketed_maxima_keep_one_maximum_per_bucket() {
        let hour = Bucket::Minutes(60);
        let mut max = Aggregate::new(Aggregation::Max, Some(hour), &Snapshot::default()).unwrap();
        let step = 3_600_000_000;
        // Many buckets (their starts are multiples of a large power of two), each twice.
        for n in 0..500 {
            max.add(n, n as i64 * step, "e");
            max.add(n / 2, n as i64 * step + 1, "e");
        }
        assert_eq!(max.quantity(), Some((0..500).sum()));
        assert_eq!(
            max.peek(1000, 7 * step, "e"),
            Some((0..500).sum::<i128>() + 1000 - 7)
        );
        assert_eq!(max.peek(3, 7 * step, "e"), Some((0..500).sum()));
    }
}
