//! Incremental rating of one (line item, period) (`rating.LineItemPeriodRating`):
//! the per-event deltas of free, billable and rated amounts that telescope to
//! the invoice (DESIGN.md §4), with the dedup of unique hashes.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use crate::aggregate::Aggregate;
use crate::fixed;
use crate::key_table::prefetch_line;
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

/// A set of digest fingerprints (`UniqueHash::fingerprint`): an
/// open-addressing table (linear probing, a power of two long, at most 3/4
/// full) of the values themselves, placed by their keyed hash
/// (`DigestState`). 0 marks an empty slot, so the fingerprint 0 is a flag.
/// Unlike a `HashSet`, its slot for a value can be prefetched (`prefetch`).
#[derive(Debug, Clone, Default)]
pub struct FingerprintSet {
    slots: Vec<u64>,
    /// Values in `slots`.
    held: usize,
    zero: bool,
}

impl FingerprintSet {
    pub fn len(&self) -> usize {
        self.held + usize::from(self.zero)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where `value` (not 0) is or would be looked for first (slots not empty).
    fn home(&self, value: u64) -> usize {
        DigestState::default().hash_one(value) as usize & (self.slots.len() - 1)
    }

    /// The slot holding `value` (not 0), or the empty one it would go to.
    fn position(&self, value: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut at = self.home(value);
        while self.slots[at] != 0 && self.slots[at] != value {
            at = (at + 1) & mask;
        }
        at
    }

    pub fn contains(&self, value: u64) -> bool {
        if value == 0 {
            return self.zero;
        }
        !self.slots.is_empty() && self.slots[self.position(value)] == value
    }

    /// Add `value`; false when it was there already.
    pub fn insert(&mut self, value: u64) -> bool {
        if value == 0 {
            return !std::mem::replace(&mut self.zero, true);
        }
        if (self.held + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let at = self.position(value);
        if self.slots[at] == value {
            return false;
        }
        self.slots[at] = value;
        self.held += 1;
        true
    }

    /// Double the table (8 slots at first).
    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(8);
        let old = std::mem::replace(&mut self.slots, vec![0; size]);
        for value in old.into_iter().filter(|&value| value != 0) {
            let at = self.position(value);
            self.slots[at] = value;
        }
    }

    /// Start loading the slot where `value` would be looked for (a hint).
    pub fn prefetch(&self, value: u64) {
        if !self.slots.is_empty() {
            prefetch_line((&raw const self.slots[self.home(value)]).cast());
        }
    }
}

impl FromIterator<u64> for FingerprintSet {
    fn from_iter<I: IntoIterator<Item = u64>>(values: I) -> Self {
        let mut set = FingerprintSet::default();
        for value in values {
            set.insert(value);
        }
        set
    }
}

/// An event id as an owner record holds it (`Owners::records`): a
/// canonical UUID (36 lowercase hex digits and hyphens, what producers
/// mostly send) as a 0 byte and its 16 bytes; any other id as its length
/// (1 to 254: one byte; else 255 and four bytes, little-endian) and its
/// bytes. Each id has exactly one code, so two ids are equal exactly when
/// their codes are.
mod id_code {
    const UUID: u8 = 0;
    const LONG: u8 = 255;
    /// Where the hyphens of a canonical UUID are.
    const HYPHENS: [usize; 4] = [8, 13, 18, 23];

    /// The 16 bytes of `id` if it is a canonical (lowercase) UUID.
    pub fn uuid(id: &str) -> Option<[u8; 16]> {
        let text = id.as_bytes();
        if text.len() != 36 || HYPHENS.iter().any(|&at| text[at] != b'-') {
            return None;
        }
        let nibble = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        };
        let mut digits = text.iter().copied().filter(|&b| b != b'-');
        let mut out = [0u8; 16];
        for byte in &mut out {
            let high = nibble(digits.next()?)?;
            let low = nibble(digits.next()?)?;
            *byte = high << 4 | low;
        }
        Some(out)
    }

    /// Append the code of `id` (whose `uuid` is `uuid`) to `out`.
    pub fn push(out: &mut Vec<u8>, id: &str, uuid: Option<[u8; 16]>) {
        if let Some(bytes) = uuid {
            out.push(UUID);
            out.extend_from_slice(&bytes);
            return;
        }
        match u8::try_from(id.len()) {
            Ok(len) if (1..LONG).contains(&len) => out.push(len),
            _ => {
                out.push(LONG);
                let len = u32::try_from(id.len()).expect("an event id under 4 GiB");
                out.extend_from_slice(&len.to_le_bytes());
            }
        }
        out.extend_from_slice(id.as_bytes());
    }

    /// The length of the code of `id` (whose `uuid` is `uuid`).
    pub fn len(id: &str, uuid: Option<[u8; 16]>) -> usize {
        match uuid {
            Some(_) => 17,
            None if (1..usize::from(LONG)).contains(&id.len()) => 1 + id.len(),
            None => 5 + id.len(),
        }
    }

    /// Whether the code at the start of `code` is that of `id` (whose `uuid` is `uuid`).
    pub fn matches(code: &[u8], id: &str, uuid: Option<[u8; 16]>) -> bool {
        match code[0] {
            UUID => uuid.is_some_and(|bytes| code[1..17] == bytes),
            _ if uuid.is_some() => false,
            LONG => {
                let len = u32::from_le_bytes(code[1..5].try_into().expect("4 bytes")) as usize;
                &code[5..5 + len] == id.as_bytes()
            }
            len => &code[1..1 + usize::from(len)] == id.as_bytes(),
        }
    }
}

/// Where a unique hash is, or would go, in one generation (`Owners::find`).
enum Found<'a> {
    /// Its owner's id code (`id_code`), at the start of the slice.
    Owner(&'a [u8]),
    /// Not there; a digest would go into this slot of `Owners::index`.
    Vacant(usize),
}

/// One generation of remembered owners (ADR 0003).
///
/// Digest owners (nearly all) live in one byte buffer, `records`: per owner
/// its 32-byte digest and its event id's code (`id_code`: 17 bytes for a
/// UUID). `index` finds them: an open-addressing table (linear probing, a
/// power of two long, at most 3/4 full) of 8-byte slots, each 0 (empty) or
/// 32 bits of the digest's keyed hash (`DigestState`) above 1 + the record's
/// offset. The hash bits place the slot and screen a probe (a mismatch
/// reads no record), and growing moves slots without reading records. That
/// is ~70 bytes per UUID owner instead of a 48-byte map entry plus the id.
/// `records` grows with `index` (room for as many owners as the index
/// takes), not by doublings of its own: a state's owners cost an allocation
/// per doubling of the index instead of one per doubling of the bytes.
#[derive(Debug, Clone, Default)]
struct Owners {
    index: Vec<u64>,
    records: Vec<u8>,
    /// Digest owners held.
    digests: usize,
    /// What few generations hold (None: nothing of it, no allocation).
    rare: Option<Box<RareOwners>>,
}

/// The rarely held part of `Owners`.
#[derive(Debug, Clone, Default)]
struct RareOwners {
    /// Owners of unique hashes held as text: hash -> id code.
    text: HashMap<Box<str>, Box<[u8]>, DigestState>,
    /// Event ids that already got a zero row for a repeated COUNT_UNIQUE value.
    repeat_rows: HashSet<String>,
}

/// The owners `Owners::records` has room for at its first insert.
const FIRST_RECORDS: usize = 3;

/// The 32 hash bits `Owners::index` keeps of a digest.
fn digest_tag(state: &DigestState, digest: &[u8; 32]) -> u32 {
    let head = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    (state.hash_one(head) >> 32) as u32
}

/// The record offset a non-empty `Owners::index` slot points at.
fn slot_offset(slot: u64) -> usize {
    (slot as u32 - 1) as usize
}

impl Owners {
    /// Where `unique_hash` is; `tag` is its `digest_tag` (unused for text).
    fn find(&self, unique_hash: &UniqueHash, tag: u32) -> Found<'_> {
        let digest = match unique_hash {
            UniqueHash::Digest(digest) => digest,
            UniqueHash::Text(text) => {
                return match self.rare.as_ref().and_then(|rare| rare.text.get(text)) {
                    Some(code) => Found::Owner(code),
                    None => Found::Vacant(usize::MAX),
                }
            }
        };
        if self.index.is_empty() {
            return Found::Vacant(usize::MAX);
        }
        let mask = self.index.len() - 1;
        let mut at = tag as usize & mask;
        loop {
            let slot = self.index[at];
            if slot == 0 {
                return Found::Vacant(at);
            }
            if (slot >> 32) as u32 == tag {
                let record = &self.records[slot_offset(slot)..];
                if record[..32] == digest[..] {
                    return Found::Owner(&record[32..]);
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// Whether `unique_hash` has an owner here.
    fn knows(&self, unique_hash: &UniqueHash) -> bool {
        let tag = match unique_hash {
            UniqueHash::Digest(digest) => digest_tag(&DigestState::default(), digest),
            UniqueHash::Text(_) => 0,
        };
        matches!(self.find(unique_hash, tag), Found::Owner(_))
    }

    fn len(&self) -> usize {
        self.digests
            + self
                .rare
                .as_ref()
                .map_or(0, |rare| rare.text.len() + rare.repeat_rows.len())
    }

    /// Whether `event_id` got a zero row for a repeated value here.
    fn repeat_row(&self, event_id: &str) -> bool {
        self.rare
            .as_ref()
            .is_some_and(|rare| rare.repeat_rows.contains(event_id))
    }

    fn rare_mut(&mut self) -> &mut RareOwners {
        self.rare.get_or_insert_default()
    }

    /// Record `event_id` (whose `id_code::uuid` is `uuid`) as the owner of
    /// `unique_hash`, which has none here; `tag` and `vacant` are what
    /// `find` used and answered.
    fn insert(
        &mut self,
        unique_hash: &UniqueHash,
        tag: u32,
        vacant: usize,
        event_id: &str,
        uuid: Option<[u8; 16]>,
    ) {
        let digest = match unique_hash {
            UniqueHash::Digest(digest) => digest,
            UniqueHash::Text(text) => {
                let mut code = Vec::new();
                id_code::push(&mut code, event_id, uuid);
                self.rare_mut()
                    .text
                    .insert(text.clone(), code.into_boxed_slice());
                return;
            }
        };
        let mut vacant = vacant;
        if (self.digests + 1) * 4 > self.index.len() * 3 {
            self.grow();
            vacant = usize::MAX;
            // Room for the owners the index takes now (the first time a few
            // only), at this record's size.
            let owners = match self.digests {
                0 => FIRST_RECORDS,
                _ => self.index.len() * 3 / 4,
            };
            let record = 32 + id_code::len(event_id, uuid);
            let room = (owners * record).saturating_sub(self.records.len());
            self.records.reserve_exact(room);
        }
        let mask = self.index.len() - 1;
        if vacant == usize::MAX {
            vacant = tag as usize & mask;
            while self.index[vacant] != 0 {
                vacant = (vacant + 1) & mask;
            }
        }
        let offset = u32::try_from(self.records.len() + 1)
            .ok()
            .filter(|&offset| offset != u32::MAX)
            .expect("owners under 4 GiB");
        self.records.extend_from_slice(digest);
        id_code::push(&mut self.records, event_id, uuid);
        self.index[vacant] = u64::from(tag) << 32 | u64::from(offset);
        self.digests += 1;
    }

    /// Start loading what `find` and `insert` of a digest with `tag` read
    /// first: its index slot and the end of `records` (a hint).
    fn prefetch(&self, tag: u32) {
        if !self.index.is_empty() {
            let at = tag as usize & (self.index.len() - 1);
            prefetch_line((&raw const self.index[at]).cast());
            prefetch_line(self.records.as_ptr().wrapping_add(self.records.len()));
        }
    }

    /// Double `index` (8 slots at first), moving each slot by its hash bits.
    fn grow(&mut self) {
        let size = (self.index.len() * 2).max(8);
        let mut index = vec![0u64; size];
        let mask = size - 1;
        for &slot in self.index.iter().filter(|&&slot| slot != 0) {
            let mut at = (slot >> 32) as usize & mask;
            while index[at] != 0 {
                at = (at + 1) & mask;
            }
            index[at] = slot;
        }
        self.index = index;
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
        self.current.knows(unique_hash) || self.previous.knows(unique_hash)
    }

    /// Start loading what `apply` of `unique_hash` reads first in the
    /// current generation (a hint).
    pub fn prefetch(&self, unique_hash: &UniqueHash) {
        if let UniqueHash::Digest(_) = unique_hash {
            self.current.prefetch(Self::tag(unique_hash));
        }
    }

    /// Hashes and repeat-row event ids held in both generations (`remembered`).
    pub fn remembered(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Record a stored hash and the event id that counted it (first one wins),
    /// in the current generation.
    pub fn remember(&mut self, unique_hash: &UniqueHash, event_id: &str) {
        let tag = Self::tag(unique_hash);
        if let Found::Vacant(vacant) = self.current.find(unique_hash, tag) {
            if !self.previous.knows(unique_hash) {
                let uuid = id_code::uuid(event_id);
                self.current
                    .insert(unique_hash, tag, vacant, event_id, uuid);
            }
        }
    }

    /// The `digest_tag` of a digest (0 for text).
    fn tag(unique_hash: &UniqueHash) -> u32 {
        match unique_hash {
            UniqueHash::Digest(digest) => digest_tag(&DigestState::default(), digest),
            UniqueHash::Text(_) => 0,
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
    /// owner goes into the index slot that lookup found.
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
        let tag = Self::tag(unique_hash);
        let uuid = id_code::uuid(event_id);
        let found = match current.find(unique_hash, tag) {
            Found::Owner(owner) => Ok(owner),
            Found::Vacant(vacant) => match previous.find(unique_hash, tag) {
                Found::Owner(owner) => Ok(owner),
                Found::Vacant(_) => Err(vacant),
            },
        };
        let vacant = match found {
            Ok(owner) => {
                if id_code::matches(owner, event_id, uuid)
                    || current.repeat_row(event_id)
                    || previous.repeat_row(event_id)
                {
                    return Ok(Delta::snapshot_only(
                        Outcome::AlreadyProcessed,
                        *old_billable,
                    ));
                }
                current.rare_mut().repeat_rows.insert(event_id.to_string());
                return Ok(Delta::snapshot_only(Outcome::RepeatedValue, *old_billable));
            }
            Err(vacant) => vacant,
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
            current.insert(unique_hash, tag, vacant, event_id, uuid);
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
        current.insert(unique_hash, tag, vacant, event_id, uuid);
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

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0f8e2a4c-1b3d-4e5f-a6b7-c8d9e0f1a2b3";

    #[test]
    fn only_canonical_uuids_are_packed_and_codes_match_their_id_only() {
        assert!(id_code::uuid(UUID).is_some());
        let upper = UUID.to_uppercase();
        let long = "x".repeat(300);
        let not_packed = [
            upper.as_str(),
            &UUID[..35],
            "0f8e2a4c-1b3d-4e5f-a6b7_c8d9e0f1a2b3",
            "0f8e2a4c11b3d-4e5f-a6b7-c8d9e0f1a2b3",
            "0f8e2a4c-1b3d-4e5f-a6b7-c8d9e0f1a2bg",
        ];
        for id in not_packed {
            assert_eq!(id_code::uuid(id), None, "{id}");
        }
        let ids = [
            UUID,
            upper.as_str(),
            "",
            "e1",
            "e10",
            long.as_str(),
            &long[1..],
        ];
        for id in ids {
            let mut code = Vec::new();
            id_code::push(&mut code, id, id_code::uuid(id));
            assert_eq!(code.len(), id_code::len(id, id_code::uuid(id)));
            assert_eq!(
                code.len(),
                if id == UUID {
                    17
                } else {
                    id.len() + 1 + usize::from(id.len() >= 255 || id.is_empty()) * 4
                }
            );
            for other in ids {
                assert_eq!(
                    id_code::matches(&code, other, id_code::uuid(other)),
                    id == other,
                    "{id} {other}"
                );
            }
        }
    }

    fn digest(n: u64) -> UniqueHash {
        UniqueHash::parse(&crate::sha256::hex_of_parts(&[&n.to_string()]))
    }

    #[test]
    fn owners_are_found_after_growing_and_hashes_equal_only_when_their_text_is() {
        let mut owners = Owners::default();
        let id = |n: u64| {
            if n.is_multiple_of(2) {
                format!("{UUID:.30}{n:06}")
            } else {
                format!("e{n}")
            }
        };
        for n in 0..1000 {
            let hash = digest(n);
            let tag = PeriodRating::tag(&hash);
            let Found::Vacant(vacant) = owners.find(&hash, tag) else {
                panic!("{n} found")
            };
            let event = id(n);
            owners.insert(&hash, tag, vacant, &event, id_code::uuid(&event));
        }
        // The digest of a number as text: the same hash, held as text.
        let hex = digest(5).to_string().to_uppercase();
        owners.insert(&UniqueHash::parse(&hex), 0, usize::MAX, "t", None);
        assert_eq!(owners.len(), 1001);
        assert!(
            owners.index.len().is_power_of_two() && owners.digests * 4 <= owners.index.len() * 3
        );
        for n in 0..1000 {
            let hash = digest(n);
            let Found::Owner(code) = owners.find(&hash, PeriodRating::tag(&hash)) else {
                panic!("{n} lost")
            };
            assert!(id_code::matches(code, &id(n), id_code::uuid(&id(n))));
            assert!(!id_code::matches(
                code,
                &id(n + 1),
                id_code::uuid(&id(n + 1))
            ));
        }
        assert!(!owners.knows(&digest(1000)));
        assert!(owners.knows(&UniqueHash::parse(&hex)));
        assert!(!owners.knows(&UniqueHash::parse(&hex.to_lowercase()[..63])));
    }

    #[test]
    fn owner_records_grow_with_the_index_and_rare_parts_only_when_used() {
        let mut owners = Owners::default();
        let mut capacities = vec![owners.records.capacity()];
        for n in 0..24 {
            let hash = digest(n);
            let tag = PeriodRating::tag(&hash);
            let event = format!("tenant-evt-11-{n:06}");
            owners.insert(&hash, tag, usize::MAX, &event, None);
            if capacities.last() != Some(&owners.records.capacity()) {
                capacities.push(owners.records.capacity());
            }
        }
        // Room for 3 records of 53 bytes, doubled once, then the index's 12 and 24.
        assert_eq!(capacities, vec![0, 159, 318, 636, 1272]);
        assert!(owners.rare.is_none());
        assert_eq!(owners.len(), 24);
        owners.insert(&UniqueHash::parse("text"), 0, usize::MAX, "t", None);
        assert!(owners.rare.is_some() && owners.knows(&UniqueHash::parse("text")));
        assert_eq!(owners.len(), 25);
    }

    #[test]
    fn redeliveries_and_repeats_of_uuid_ids_are_told_apart() {
        let price = Price::FlatFee { amount: 2 };
        let aggregate = Aggregate::new(
            crate::measure::Aggregation::Count,
            None,
            &crate::aggregate::Snapshot::default(),
        )
        .unwrap();
        let mut state = PeriodRating::new(&price, 0, aggregate);
        let one = fixed::ONE;
        let outcome = |state: &mut PeriodRating, id: &str, hash: u64| {
            state
                .apply(&price, id, 0, one, &digest(hash))
                .unwrap()
                .outcome
        };
        assert_eq!(outcome(&mut state, UUID, 1), Outcome::Counted);
        assert_eq!(outcome(&mut state, UUID, 1), Outcome::AlreadyProcessed);
        // The same UUID in capitals is another event id.
        assert_eq!(
            outcome(&mut state, &UUID.to_uppercase(), 1),
            Outcome::RepeatedValue
        );
        state.age_owners();
        assert_eq!(outcome(&mut state, UUID, 1), Outcome::AlreadyProcessed);
        state.remember(&digest(2), "e2");
        assert_eq!(outcome(&mut state, "e2", 2), Outcome::AlreadyProcessed);
        assert_eq!(outcome(&mut state, UUID, 2), Outcome::RepeatedValue);
        assert_eq!(state.quantity(), one);
    }

    #[test]
    fn fingerprint_sets_hold_each_value_once_zero_included() {
        let mut set = FingerprintSet::default();
        assert!(set.is_empty() && !set.contains(0) && !set.contains(7));
        // Spread values, small ones and zero, each once.
        let mut values: Vec<u64> = (0..2000u64)
            .map(|n| n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .chain(1..50)
            .collect();
        values.sort_unstable();
        values.dedup();
        for &value in &values {
            assert!(set.insert(value));
            assert!(!set.insert(value));
        }
        assert_eq!(set.len(), values.len());
        assert!(values.iter().all(|&value| set.contains(value)));
        assert!(!set.contains(50) && !set.contains(u64::MAX));
        let copy: FingerprintSet = values.iter().copied().chain([0, 5]).collect();
        assert_eq!(copy.len(), values.len());
    }
}
