//! Incremental rating of one (line item, period) (`rating.LineItemPeriodRating`):
//! the per-event deltas of free, billable and rated amounts that telescope to
//! the invoice (DESIGN.md §4), with the dedup of unique hashes.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use crate::aggregate::Aggregate;
use crate::fixed;
use crate::pricing::Price;
use crate::sha256::UniqueHash;

/// `money.STORED_LIMIT` (10^23) at the stored scale.
pub const STORED_LIMIT: i128 = 100_000_000_000_000_000_000_000 * fixed::ONE;

/// `rating.Outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Counted,
    RepeatedValue,
    AlreadyProcessed,
}

impl Outcome {
    pub fn code(self) -> &'static str {
        match self {
            Outcome::Counted => "counted",
            Outcome::RepeatedValue => "repeated_value",
            Outcome::AlreadyProcessed => "already_processed",
        }
    }
}

/// `rating.RatedDelta` (scaled values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub outcome: Outcome,
    pub qty_total: i128,
    pub qty_free_applied: i128,
    pub qty_billable: i128,
    pub cost: i128,
    pub unit_cost: i128,
    pub tier_snapshot: i128,
}

impl Delta {
    fn snapshot_only(outcome: Outcome, tier_snapshot: i128) -> Delta {
        Delta {
            outcome,
            qty_total: 0,
            qty_free_applied: 0,
            qty_billable: 0,
            cost: 0,
            unit_cost: 0,
            tier_snapshot,
        }
    }
}

/// The event would not fit the stored columns (`ValueOutOfRange`): the state
/// is unchanged and the pipeline dead-letters it (`value_out_of_range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange;

/// The hasher of maps and sets keyed by event-derived digests (unique
/// hashes, their fingerprints): a folded multiply (as `foldhash` does) under
/// two keys drawn at random once per process. SHA-256 output is random
/// already, so one multiply spreads it over a table's buckets; the secret
/// keys keep an event producer from choosing digests that share a bucket
/// (the reason std's SipHash was used here before, at several times the cost).
#[derive(Debug, Clone, Copy)]
pub struct DigestState {
    keys: (u64, u64),
}

impl Default for DigestState {
    fn default() -> Self {
        static KEYS: OnceLock<(u64, u64)> = OnceLock::new();
        let keys = *KEYS.get_or_init(|| {
            let random = RandomState::new();
            (random.hash_one(1u64), random.hash_one(2u64) | 1)
        });
        DigestState { keys }
    }
}

impl BuildHasher for DigestState {
    type Hasher = DigestHasher;

    fn build_hasher(&self) -> DigestHasher {
        DigestHasher {
            keys: self.keys,
            state: self.keys.0,
        }
    }
}

/// See `DigestState`.
#[derive(Debug, Clone)]
pub struct DigestHasher {
    keys: (u64, u64),
    state: u64,
}

/// The high and low halves of the 128-bit product, folded.
fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

impl Hasher for DigestHasher {
    fn write_u64(&mut self, value: u64) {
        self.state = folded_multiply(self.state ^ value, self.keys.1);
    }

    /// Any other input (a unique hash kept as text) in 8-byte words.
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        self.write_u64(bytes.len() as u64);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

/// A set of digest fingerprints (`UniqueHash::fingerprint`).
pub type FingerprintSet = HashSet<u64, DigestState>;

/// One generation of remembered owners (ADR 0003).
#[derive(Debug, Clone, Default)]
struct Owners {
    /// Unique hash -> the event id that counted it, as a range of `ids`.
    known: HashMap<UniqueHash, (u32, u32), DigestState>,
    /// The owners' event ids, one after the other: one growing buffer per
    /// generation instead of a `String` per counted row (and per free).
    ids: String,
    /// Event ids that already got a zero row for a repeated COUNT_UNIQUE value.
    repeat_rows: HashSet<String>,
}

impl Owners {
    fn owner(&self, unique_hash: &UniqueHash) -> Option<&str> {
        Some(Self::id_at(&self.ids, *self.known.get(unique_hash)?))
    }

    /// The event id at `range` of `ids`.
    fn id_at(ids: &str, (start, end): (u32, u32)) -> &str {
        &ids[start as usize..end as usize]
    }

    /// Append `event_id` to `ids`; its range there.
    fn push_id(ids: &mut String, event_id: &str) -> (u32, u32) {
        let start = ids.len();
        ids.push_str(event_id);
        (
            u32::try_from(start).expect("owners under 4 GiB"),
            u32::try_from(ids.len()).expect("owners under 4 GiB"),
        )
    }

    fn len(&self) -> usize {
        self.known.len() + self.repeat_rows.len()
    }

    /// Record `event_id` as the owner of `unique_hash` (replacing any).
    fn insert(&mut self, unique_hash: &UniqueHash, event_id: &str) {
        let range = Self::push_id(&mut self.ids, event_id);
        self.known.insert(unique_hash.clone(), range);
    }
}

/// The rating state of one (line item, period).
#[derive(Debug, Clone)]
pub struct PeriodRating {
    free_units: i128,
    aggregate: Aggregate,
    /// Remembered owners: new ones go to `current`, lookups see both.
    current: Owners,
    previous: Owners,
    free: i128,
    billable: i128,
    /// `None`: the amount of a loaded state is beyond `i128` (far out of range).
    rated: Option<i128>,
}

impl PeriodRating {
    /// `free_units` is at the stored scale already (catalog numbers have <= 15 places).
    pub fn new(price: &Price, free_units: i128, aggregate: Aggregate) -> PeriodRating {
        let quantity = aggregate.quantity().unwrap_or(i128::MAX);
        let free = quantity.min(free_units);
        let billable = quantity - free;
        PeriodRating {
            free_units,
            aggregate,
            current: Owners::default(),
            previous: Owners::default(),
            free,
            billable,
            rated: price.rate(billable),
        }
    }

    pub fn quantity(&self) -> i128 {
        self.free + self.billable
    }

    pub fn billable(&self) -> i128 {
        self.billable
    }

    pub fn knows(&self, unique_hash: &UniqueHash) -> bool {
        self.current.known.contains_key(unique_hash)
            || self.previous.known.contains_key(unique_hash)
    }

    /// Hashes and repeat-row event ids held in both generations (`remembered`).
    pub fn remembered(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Record a stored hash and the event id that counted it (first one wins),
    /// in the current generation.
    pub fn remember(&mut self, unique_hash: &UniqueHash, event_id: &str) {
        if !self.knows(unique_hash) {
            self.current.insert(unique_hash, event_id);
        }
    }

    /// Start a new generation (`age_owners`): the previous one is dropped,
    /// the current one becomes the previous one.
    pub fn age_owners(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }

    /// Drop remembered hashes and repeat rows of both generations (`forget_hashes`).
    pub fn forget_hashes(&mut self) {
        self.current = Owners::default();
        self.previous = Owners::default();
    }

    /// Apply one event (`LineItemPeriodRating.apply`).
    ///
    /// The unique hash is looked up in the current generation once: a new
    /// owner goes into the slot that lookup found.
    pub fn apply(
        &mut self,
        price: &Price,
        event_id: &str,
        ts: i64,
        quantity: i128,
        unique_hash: &UniqueHash,
    ) -> Result<Delta, OutOfRange> {
        let PeriodRating {
            free_units,
            aggregate,
            current,
            previous,
            free: old_free,
            billable: old_billable,
            rated: old_rated,
        } = self;
        let Owners {
            known,
            ids,
            repeat_rows,
        } = current;
        let entry = known.entry(unique_hash.clone());
        let owner = match &entry {
            Entry::Occupied(found) => Some(Owners::id_at(ids, *found.get())),
            Entry::Vacant(_) => previous.owner(unique_hash),
        };
        if let Some(owner) = owner {
            if owner == event_id
                || repeat_rows.contains(event_id)
                || previous.repeat_rows.contains(event_id)
            {
                return Ok(Delta::snapshot_only(
                    Outcome::AlreadyProcessed,
                    *old_billable,
                ));
            }
            repeat_rows.insert(event_id.to_string());
            return Ok(Delta::snapshot_only(Outcome::RepeatedValue, *old_billable));
        }
        let Entry::Vacant(slot) = entry else {
            unreachable!("an owner in the current generation was answered above")
        };
        let value = quantity;
        let period_quantity = aggregate.peek(value, ts, event_id).ok_or(OutOfRange)?;
        if !(period_quantity < STORED_LIMIT && value < STORED_LIMIT) {
            return Err(OutOfRange);
        }
        let free = period_quantity.min(*free_units);
        let billable = period_quantity - free;
        if billable == *old_billable {
            let delta = Delta {
                outcome: Outcome::Counted,
                qty_total: value,
                qty_free_applied: free - *old_free,
                qty_billable: 0,
                cost: 0,
                unit_cost: 0,
                tier_snapshot: billable,
            };
            slot.insert(Owners::push_id(ids, event_id));
            aggregate.add(value, ts, event_id);
            *old_free = free;
            return Ok(delta);
        }
        let rated = price.rate(billable).ok_or(OutOfRange)?;
        let qty_billable = billable - *old_billable;
        let cost = rated
            .checked_sub(old_rated.ok_or(OutOfRange)?)
            .ok_or(OutOfRange)?;
        let unit_cost = fixed::div(cost, qty_billable).ok_or(OutOfRange)?;
        let in_range = |v: i128| -STORED_LIMIT < v && v < STORED_LIMIT;
        if !(in_range(rated) && in_range(cost) && in_range(unit_cost)) {
            return Err(OutOfRange);
        }
        slot.insert(Owners::push_id(ids, event_id));
        aggregate.add(value, ts, event_id);
        let delta = Delta {
            outcome: Outcome::Counted,
            qty_total: value,
            qty_free_applied: free - *old_free,
            qty_billable,
            cost,
            unit_cost,
            tier_snapshot: billable,
        };
        *old_free = free;
        *old_billable = billable;
        *old_rated = Some(rated);
        Ok(delta)
    }
}
