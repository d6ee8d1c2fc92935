//! The rating state of the (line item, period) pairs one consumer owns
//! (`engine.UsageRater` of the reference): which states to load, which dedup
//! keys only the store can answer, rating in batch order, and the memory
//! bounds of fingerprints and remembered owners with the reference's rules
//! (see the module docs of `engine.py`).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use crate::aggregate::{Aggregate, Bucket, Snapshot};
use crate::fxhash::FxHashMap;
use crate::key_table::prefetch_line;
use crate::measure::Aggregation;
use crate::period_rating::{Delta, FingerprintSet, OutOfRange, Outcome, PeriodRating};
use crate::pricing::Price;
use crate::sha256::UniqueHash;

/// (tenant, environment, line item id, period id).
pub type StateKey = (String, String, String, i64);

/// What a state key must offer: its order must be the reference's order of
/// the `StateKey` it stands for (ties in `coverable` and `committed`).
pub trait Key: Hash + Eq + Ord + Clone {}
impl<T: Hash + Eq + Ord + Clone> Key for T {}

/// What a state needs from its line item when it is created.
#[derive(Debug, Clone)]
pub struct Terms {
    pub price: Price,
    pub free_units: i128,
    pub aggregation: Aggregation,
    pub bucket: Option<Bucket>,
}

/// One (event, line item) awaiting rating (`PendingRow`).
#[derive(Debug, Clone)]
pub struct Pending<K = StateKey> {
    pub key: K,
    /// Index of the line item's terms (the binding the event resolved to).
    pub terms: usize,
    /// The event's index into the id table `rate` is given.
    pub event: usize,
    pub timestamp_us: i64,
    pub quantity: i128,
    pub unique_hash: UniqueHash,
}

/// One state and what the rater keeps about it: one map lookup per row
/// finds all of it.
struct State {
    rating: PeriodRating,
    price: Price,
    count_unique: bool,
    /// Rated or given owners since its owners were last forgotten (what
    /// `committed` and `forget_hashes` visit; the reference's `_touched`).
    touched: bool,
    /// Covered: (insertion number, fingerprints of its stored and rated
    /// hashes); the insertion number is the reference's dict order, which
    /// breaks ties when trimming.
    covered: Option<(u64, FingerprintSet)>,
    /// The partitions `report` was told about (the fused engine's
    /// `touched`): the first one in the record (`u32::MAX`: none), which is
    /// all most states ever get, the others after it.
    first_reported: u32,
    more_reported: Vec<u32>,
}

impl State {
    /// Record that `partition` touched this state; false when it was recorded before.
    fn report(&mut self, partition: u32) -> bool {
        if self.first_reported == u32::MAX {
            self.first_reported = partition;
            return true;
        }
        if self.first_reported == partition || self.more_reported.contains(&partition) {
            return false;
        }
        self.more_reported.push(partition);
        true
    }
}

/// Outcome counts of one `rate` call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes {
    pub counted: usize,
    pub repeated: usize,
    pub skipped: usize,
}

/// A state's place in the rater (`Rater::slot`): stable until a state is
/// dropped or the keys are renamed (`Rater::epoch` tells).
pub type Slot = u32;

/// A row whose state is not held.
pub const NO_SLOT: Slot = Slot::MAX;

/// How many rows ahead a pass over resolved rows starts loading a state
/// record (states are scattered over far more memory than the caches hold).
pub const STATE_AHEAD: usize = 6;

/// How many rows ahead `rate` starts loading what a row reads past its
/// state record (`Rater::prefetch_owners`).
const OWNERS_AHEAD: usize = 3;

/// How many rows ahead `lookup_rows` starts loading the part of a state
/// record it reads (the coverage), then its fingerprint's slot. It does
/// little per row, so it must start further ahead than `rate` to overlap
/// the loads, and it loads no line of the record it does not read.
const LOOKUP_STATE_AHEAD: usize = 16;
const LOOKUP_FINGERPRINT_AHEAD: usize = 8;

/// How many states a chunk of `Held` holds (a power of two).
const CHUNK_STATES: usize = 1 << 12;

/// The rater's states by slot (`None`: a free slot), in chunks of
/// `CHUNK_STATES` that never move: a new state is written once, where one
/// `Vec` copied every state (and faulted in twice the memory) at each of
/// its doublings.
struct Held<K> {
    chunks: Vec<Vec<Option<(K, State)>>>,
    len: usize,
}

impl<K> Held<K> {
    fn new() -> Held<K> {
        Held {
            chunks: Vec::new(),
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, slot: usize) -> Option<&Option<(K, State)>> {
        self.chunks
            .get(slot / CHUNK_STATES)?
            .get(slot % CHUNK_STATES)
    }

    fn push(&mut self, held: Option<(K, State)>) {
        if self
            .chunks
            .last()
            .is_none_or(|chunk| chunk.len() == CHUNK_STATES)
        {
            self.chunks.push(Vec::with_capacity(CHUNK_STATES));
        }
        self.chunks.last_mut().expect("a chunk").push(held);
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = &Option<(K, State)>> {
        self.chunks.iter().flatten()
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Option<(K, State)>> {
        self.chunks.iter_mut().flatten()
    }
}

impl<K> std::ops::Index<usize> for Held<K> {
    type Output = Option<(K, State)>;

    fn index(&self, slot: usize) -> &Self::Output {
        &self.chunks[slot / CHUNK_STATES][slot % CHUNK_STATES]
    }
}

impl<K> std::ops::IndexMut<usize> for Held<K> {
    fn index_mut(&mut self, slot: usize) -> &mut Self::Output {
        &mut self.chunks[slot / CHUNK_STATES][slot % CHUNK_STATES]
    }
}

/// `UsageRater` without the catalog: `terms` are looked up by the caller.
///
/// States live in a `Vec` indexed by slot, with a key -> slot map: a batch
/// can resolve each row's state once (`resolve`) and every later pass over
/// its rows indexes the `Vec` instead of probing a map.
pub struct Rater<K = StateKey> {
    // Keyed by state (catalog line item and period): the Fx hasher. Sets of
    // event-derived hashes use the keyed `DigestState`.
    slots: FxHashMap<K, Slot>,
    /// Per slot its key and state; `None`: free (reused first, from `free`).
    states: Held<K>,
    free: Vec<Slot>,
    /// Bumped when a slot is freed or keys are renamed (slots resolved before are stale).
    epoch: u64,
    /// States created so far (slots resolved as `NO_SLOT` before may have one now).
    created: u64,
    /// Insertion numbers of coverings so far.
    inserted: u64,
    fingerprint_count: usize,
    max_fingerprints: usize,
    /// Owners of the current generation (COUNT_UNIQUE states' all included),
    /// counted from above as in the reference.
    remembered: usize,
    max_remembered: usize,
    /// Where `State::covered` is in a held slot of `states` (bytes from
    /// its start; the same in every slot), for `prefetch_covered`.
    covered_at: usize,
}

impl<K: Key> Rater<K> {
    pub fn new(max_fingerprints: usize, max_remembered: usize) -> Rater<K> {
        Rater {
            slots: FxHashMap::default(),
            states: Held::new(),
            free: Vec::new(),
            epoch: 0,
            created: 0,
            inserted: 0,
            fingerprint_count: 0,
            max_fingerprints,
            remembered: 0,
            max_remembered,
            covered_at: 0,
        }
    }

    pub fn fingerprint_count(&self) -> usize {
        self.fingerprint_count
    }

    fn new_state(terms: &Terms, snapshot: &Snapshot) -> Result<State, OutOfRange> {
        let aggregate =
            Aggregate::new(terms.aggregation, terms.bucket, snapshot).ok_or(OutOfRange)?;
        Ok(State {
            rating: PeriodRating::new(&terms.price, terms.free_units, aggregate),
            price: terms.price.clone(),
            count_unique: terms.aggregation == Aggregation::CountUnique,
            touched: false,
            covered: None,
            first_reported: u32::MAX,
            more_reported: Vec::new(),
        })
    }

    /// The slot of `key`'s state, if held.
    pub fn slot(&self, key: &K) -> Option<Slot> {
        self.slots.get(key).copied()
    }

    /// Changes when slots resolved before may be stale (see `Slot`); together
    /// with `created`, what a caller holding resolved slots checks.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// How many states were created so far.
    pub fn created(&self) -> u64 {
        self.created
    }

    /// Per row of `rows` its state's slot (`NO_SLOT`: none held), into `slots`.
    pub fn resolve(&self, rows: &[Pending<K>], slots: &mut Vec<Slot>) {
        slots.clear();
        slots.extend(
            rows.iter()
                .map(|row| self.slot(&row.key).unwrap_or(NO_SLOT)),
        );
    }

    /// Resolve again the rows of `slots` (as `resolve` gave them, same epoch)
    /// that had no state.
    pub fn refresh(&self, rows: &[Pending<K>], slots: &mut [Slot]) {
        for (row, slot) in rows.iter().zip(slots.iter_mut()) {
            if *slot == NO_SLOT {
                *slot = self.slot(&row.key).unwrap_or(NO_SLOT);
            }
        }
    }

    /// Start loading the record of the state in `slot` (a hint: `NO_SLOT`
    /// or a stale slot is harmless).
    pub fn prefetch(&self, slot: Slot) {
        if let Some(held) = self.states.get(slot as usize) {
            let start: *const u8 = (held as *const Option<(K, State)>).cast();
            for offset in (0..std::mem::size_of::<Option<(K, State)>>()).step_by(64) {
                prefetch_line(start.wrapping_add(offset));
            }
        }
    }

    /// Start loading the coverage of the state in `slot` and the start of
    /// its record (where `Option`'s tag is kept, which a read checks first)
    /// (a hint, as `prefetch`).
    fn prefetch_covered(&self, slot: Slot) {
        if let Some(held) = self.states.get(slot as usize) {
            let start: *const u8 = (held as *const Option<(K, State)>).cast();
            prefetch_line(start);
            prefetch_line(start.wrapping_add(31));
            let covered = start.wrapping_add(self.covered_at);
            prefetch_line(covered);
            let last = std::mem::size_of::<Option<(u64, FingerprintSet)>>() - 1;
            prefetch_line(covered.wrapping_add(last));
        }
    }

    /// `prefetch` of the state `STATE_AHEAD` rows after `row` of `slots`.
    pub fn prefetch_ahead(&self, slots: &[Slot], row: usize) {
        if let Some(&slot) = slots.get(row + STATE_AHEAD) {
            self.prefetch(slot);
        }
    }

    /// Start loading what rating `rows[row]` reads past its state record
    /// (its owner slot, the end of the owner records, its fingerprint's
    /// slot), once that record is in cache (`prefetch_ahead` asked for it
    /// `STATE_AHEAD - OWNERS_AHEAD` rows before).
    fn prefetch_owners(&self, rows: &[Pending<K>], slots: &[Slot], row: usize) {
        if let Some((row, state)) = self.held_row(rows, slots, row) {
            state.rating.prefetch(&row.unique_hash);
            Self::prefetch_fingerprint_of(row, state);
        }
    }

    /// Start loading the fingerprint slot `lookup_rows` probes for
    /// `rows[row]`, once its state record is in cache (as `prefetch_owners`).
    fn prefetch_fingerprint(&self, rows: &[Pending<K>], slots: &[Slot], row: usize) {
        if let Some((row, state)) = self.held_row(rows, slots, row) {
            Self::prefetch_fingerprint_of(row, state);
        }
    }

    fn prefetch_fingerprint_of(row: &Pending<K>, state: &State) {
        if let Some((_, known)) = &state.covered {
            known.prefetch(row.unique_hash.fingerprint());
        }
    }

    /// `rows[row]` and its state, if it has a row and a held (or stale) slot.
    fn held_row<'r>(
        &'r self,
        rows: &'r [Pending<K>],
        slots: &[Slot],
        row: usize,
    ) -> Option<(&'r Pending<K>, &'r State)> {
        let (row, &slot) = (rows.get(row)?, slots.get(row)?);
        let (_, state) = self.states.get(slot as usize)?.as_ref()?;
        Some((row, state))
    }

    fn state(&self, slot: Slot) -> &State {
        &self.states[slot as usize].as_ref().expect("a held slot").1
    }

    fn state_mut(&mut self, slot: Slot) -> &mut State {
        &mut self.states[slot as usize].as_mut().expect("a held slot").1
    }

    fn state_of(&mut self, key: &K) -> Option<&mut State> {
        let slot = self.slot(key)?;
        Some(self.state_mut(slot))
    }

    /// Hold `state` for `key` (not held yet); its slot.
    fn insert_state(&mut self, key: K, state: State) -> Slot {
        self.created += 1;
        let entry = Some((key.clone(), state));
        let slot = match self.free.pop() {
            Some(slot) => {
                self.states[slot as usize] = entry;
                slot
            }
            None => {
                self.states.push(entry);
                Slot::try_from(self.states.len() - 1).expect("fewer than 2^32 - 1 states")
            }
        };
        self.slots.insert(key, slot);
        let held = &self.states[slot as usize];
        if let Some((_, state)) = held {
            self.covered_at = (&raw const state.covered).addr() - (&raw const *held).addr();
        }
        slot
    }

    fn held(&self) -> impl Iterator<Item = &(K, State)> {
        self.states.iter().flatten()
    }

    fn held_mut(&mut self) -> impl Iterator<Item = &mut (K, State)> {
        self.states.iter_mut().flatten()
    }

    /// State keys of `rows` not in memory (to load from the store).
    pub fn missing_states(&self, rows: &[Pending<K>]) -> HashSet<K> {
        let mut slots = Vec::new();
        self.resolve(rows, &mut slots);
        Self::missing_at(rows, &slots)
    }

    /// `missing_states` of rows resolved to `slots`.
    pub fn missing_at(rows: &[Pending<K>], slots: &[Slot]) -> HashSet<K> {
        rows.iter()
            .zip(slots)
            .filter(|(_, slot)| **slot == NO_SLOT)
            .map(|(row, _)| row.key.clone())
            .collect()
    }

    /// Loaded keys with stored rows whose fingerprints fit the budget, smallest first.
    pub fn coverable(&self, snapshots: &[(K, i64)]) -> Vec<K> {
        let mut room = self.max_fingerprints as i128 - self.fingerprint_count as i128;
        let mut stored: Vec<(i64, &K)> = snapshots
            .iter()
            .filter(|(key, count)| *count > 0 && !self.slots.contains_key(key))
            .map(|(key, count)| (*count, key))
            .collect();
        stored.sort();
        let mut chosen = Vec::new();
        for (count, key) in stored {
            if i128::from(count) > room {
                break;
            }
            room -= i128::from(count);
            chosen.push(key.clone());
        }
        chosen
    }

    /// Install loaded aggregates (`load_states`). `terms` gives the current
    /// catalog's terms of a key's line item (None: skipped). A snapshot that
    /// cannot be held (sums beyond `i128`) is skipped as well.
    pub fn load_states(
        &mut self,
        snapshots: &[(K, Snapshot)],
        stored_fingerprints: Option<&HashMap<K, Vec<u64>>>,
        terms: impl Fn(&K) -> Option<Terms>,
    ) {
        for (key, snapshot) in snapshots {
            if self.slots.contains_key(key) {
                continue;
            }
            let Some(found) = terms(key) else { continue };
            let Ok(state) = Self::new_state(&found, snapshot) else {
                continue;
            };
            self.insert_state(key.clone(), state);
            if snapshot.count == 0 {
                self.cover(key, &[]);
            } else if let Some(stored) = stored_fingerprints.and_then(|all| all.get(key)) {
                self.cover(key, stored);
            }
        }
        self.trim_fingerprints();
    }

    /// The dedup keys of `rows` only the store can answer.
    pub fn lookup_keys(&self, rows: &[Pending<K>]) -> HashSet<(K, UniqueHash)> {
        let mut slots = Vec::new();
        self.resolve(rows, &mut slots);
        let mut keys = HashSet::new();
        for row in self.lookup_rows(rows, &slots) {
            keys.insert((row.key.clone(), row.unique_hash.clone()));
        }
        keys
    }

    /// The rows of `rows` (resolved to `slots`) whose dedup key only the
    /// store can answer (`lookup_keys`; repeats included).
    pub fn lookup_rows<'r>(
        &'r self,
        rows: &'r [Pending<K>],
        slots: &'r [Slot],
    ) -> impl Iterator<Item = &'r Pending<K>> + 'r {
        rows.iter()
            .zip(slots)
            .enumerate()
            .filter_map(move |(i, (row, &slot))| {
                if let Some(&ahead) = slots.get(i + LOOKUP_STATE_AHEAD) {
                    self.prefetch_covered(ahead);
                }
                self.prefetch_fingerprint(rows, slots, i + LOOKUP_FINGERPRINT_AHEAD);
                let state = (slot != NO_SLOT).then(|| self.state(slot));
                let known = state.and_then(|s| s.covered.as_ref());
                if known.is_none_or(|(_, set)| set.contains(row.unique_hash.fingerprint()))
                    && state.is_none_or(|s| !s.rating.knows(&row.unique_hash))
                {
                    Some(row)
                } else {
                    None
                }
            })
    }

    /// Record stored unique hashes and the event ids that counted them.
    pub fn remember(&mut self, owners: &[(K, UniqueHash, String)]) {
        let mut grouped: HashMap<&K, HashMap<&UniqueHash, &str>> = HashMap::new();
        for (key, unique_hash, event_id) in owners {
            grouped
                .entry(key)
                .or_default()
                .insert(unique_hash, event_id.as_str());
        }
        for (key, hashes) in grouped {
            if let Some(state) = self.state_of(key) {
                for (unique_hash, event_id) in &hashes {
                    state.rating.remember(unique_hash, event_id);
                }
                state.touched = true;
                self.remembered += hashes.len();
            }
        }
    }

    /// Rate `rows` in order: per row its delta (None for a redelivery, which
    /// writes no row) or the refusal; and the outcome counts. `event_id`
    /// gives the id of a row's `event`.
    pub fn rate<'a>(
        &mut self,
        rows: &[Pending<K>],
        terms: &[Terms],
        event_id: impl Fn(usize) -> &'a str,
    ) -> (Vec<Result<Option<Delta>, OutOfRange>>, Outcomes) {
        let mut slots = Vec::new();
        self.resolve(rows, &mut slots);
        let mut results = Vec::new();
        let outcomes = self.rate_at(rows, &mut slots, terms, event_id, None, &mut results);
        (results, outcomes)
    }

    /// `rate` of rows resolved to `slots` (as `resolve` gave them, still
    /// current): the states it creates are written into `slots`. With
    /// `reports` = (partition per event, found), each row whose state is held
    /// also `report`s its event's partition to it, while the state is in
    /// cache, and the rows whose report was new are pushed onto `found`.
    /// The rows' results go into `results` (cleared first: a buffer kept
    /// from batch to batch is not allocated and faulted in again).
    pub fn rate_at<'a>(
        &mut self,
        rows: &[Pending<K>],
        slots: &mut [Slot],
        terms: &[Terms],
        event_id: impl Fn(usize) -> &'a str,
        mut reports: Option<(&[u32], &mut Vec<usize>)>,
        results: &mut Vec<Result<Option<Delta>, OutOfRange>>,
    ) -> Outcomes {
        results.clear();
        results.reserve(rows.len());
        let mut outcomes = Outcomes::default();
        let mut added = 0;
        for (i, row) in rows.iter().enumerate() {
            self.prefetch_ahead(slots, i);
            self.prefetch_owners(rows, slots, i + OWNERS_AHEAD);
            let slot = &mut slots[i];
            if *slot == NO_SLOT {
                // A state created for an earlier row of this batch, or a new one.
                *slot = match self.slot(&row.key) {
                    Some(held) => held,
                    None => {
                        let Ok(state) = Self::new_state(&terms[row.terms], &Snapshot::default())
                        else {
                            results.push(Err(OutOfRange));
                            continue;
                        };
                        self.insert_state(row.key.clone(), state)
                    }
                };
            }
            let state = &mut self.states[*slot as usize].as_mut().expect("a held slot").1;
            state.touched = true;
            if let Some((partitions, found)) = &mut reports {
                if state.report(partitions[row.event]) {
                    found.push(i);
                }
            }
            let applied = state.rating.apply(
                &state.price,
                event_id(row.event),
                row.timestamp_us,
                row.quantity,
                &row.unique_hash,
            );
            let delta = match applied {
                Ok(delta) => delta,
                Err(refused) => {
                    results.push(Err(refused));
                    continue;
                }
            };
            match delta.outcome {
                Outcome::Counted => outcomes.counted += 1,
                Outcome::RepeatedValue => outcomes.repeated += 1,
                Outcome::AlreadyProcessed => {
                    outcomes.skipped += 1;
                    results.push(Ok(None));
                    continue;
                }
            }
            if let Some((_, known)) = &mut state.covered {
                if known.insert(row.unique_hash.fingerprint()) {
                    added += 1;
                }
            }
            results.push(Ok(Some(delta)));
        }
        self.fingerprint_count += added;
        self.remembered += outcomes.counted + outcomes.repeated;
        self.trim_fingerprints();
        outcomes
    }

    /// After the rows are durable and committed: bound the remembered owners
    /// in two generations (ADR 0003, `UsageRater.committed`). Once the current
    /// generation (COUNT_UNIQUE owners included) holds more than half of the
    /// bound, the other states age theirs (or forget both generations when the
    /// current one holds more than the whole bound); COUNT_UNIQUE states keep
    /// their own rule.
    pub fn committed(&mut self) {
        if self.remembered <= self.max_remembered / 2 {
            return;
        }
        let beyond_bound = self.remembered > self.max_remembered;
        let mut kept: Vec<(usize, K)> = Vec::new();
        // Each state on its own (the order of visits does not matter).
        for (key, state) in self.held_mut().filter(|(_, state)| state.touched) {
            if state.count_unique {
                kept.push((state.rating.remembered(), key.clone()));
                continue;
            }
            if beyond_bound {
                state.rating.forget_hashes();
            } else {
                state.rating.age_owners();
            }
            if state.rating.remembered() == 0 {
                state.touched = false;
            }
        }
        let mut total: usize = kept.iter().map(|(size, _)| size).sum();
        if total > self.max_remembered / 2 {
            kept.sort();
            while total > self.max_remembered / 4 {
                let Some((size, key)) = kept.pop() else { break };
                if let Some(state) = self.state_of(&key) {
                    state.rating.forget_hashes();
                    state.touched = false;
                }
                total -= size;
            }
        }
        self.remembered = total;
    }

    /// Drop remembered owners of both generations (once durable in the store).
    pub fn forget_hashes(&mut self) {
        self.remembered = 0;
        for (_, state) in self.held_mut().filter(|(_, state)| state.touched) {
            state.rating.forget_hashes();
            state.touched = false;
        }
    }

    /// Every key the rater holds something for (coverings and touches live
    /// in the states).
    pub fn keys(&self) -> HashSet<K> {
        self.slots.keys().cloned().collect()
    }

    /// Rename every key (a new catalog's numbering; `map` must keep keys
    /// distinct and in the same order) and tell each state whether its line
    /// item is COUNT_UNIQUE in the new catalog (false when it is gone), which
    /// is what `committed` asks the catalog in the reference. States keep the
    /// price they were created with.
    pub fn rekey(&mut self, map: impl Fn(&K) -> K, count_unique: impl Fn(&K) -> bool) {
        self.epoch += 1;
        self.slots.clear();
        for (slot, held) in self.states.iter_mut().enumerate() {
            if let Some((key, state)) = held {
                *key = map(key);
                state.count_unique = count_unique(key);
                self.slots.insert(key.clone(), slot as Slot);
            }
        }
    }

    /// Record that `partition` touched the state in `slot` (held); false
    /// when it was recorded before (until the state is dropped or `unreport_all`).
    pub fn report(&mut self, slot: Slot, partition: u32) -> bool {
        self.state_mut(slot).report(partition)
    }

    /// Forget every `report`.
    pub fn unreport_all(&mut self) {
        for (_, state) in self.held_mut() {
            state.first_reported = u32::MAX;
            state.more_reported.clear();
        }
    }

    /// Drop the state of `keys` (on revoke).
    pub fn drop_states(&mut self, keys: &[K]) {
        for key in keys {
            let Some(slot) = self.slots.remove(key) else {
                continue;
            };
            self.epoch += 1;
            let (_, state) = self.states[slot as usize].take().expect("a held slot");
            self.free.push(slot);
            self.fingerprint_count -= state.covered.map_or(0, |(_, known)| known.len());
        }
    }

    /// Cover the state of `key` (which must be held) with `fingerprints`.
    fn cover(&mut self, key: &K, fingerprints: &[u64]) {
        let known: FingerprintSet = fingerprints.iter().copied().collect();
        self.uncover(key);
        self.fingerprint_count += known.len();
        self.inserted += 1;
        let inserted = self.inserted;
        if let Some(state) = self.state_of(key) {
            state.covered = Some((inserted, known));
        }
    }

    fn uncover(&mut self, key: &K) {
        let state = self.state_of(key);
        if let Some((_, known)) = state.and_then(|state| state.covered.take()) {
            self.fingerprint_count -= known.len();
        }
    }

    /// Over budget: uncover the largest states until a quarter of the budget is free.
    fn trim_fingerprints(&mut self) {
        if self.fingerprint_count <= self.max_fingerprints {
            return;
        }
        let target = self.max_fingerprints * 3 / 4;
        let mut by_size: Vec<(usize, u64, K)> = self
            .held()
            .filter_map(|(key, state)| {
                let (order, known) = state.covered.as_ref()?;
                Some((known.len(), *order, key.clone()))
            })
            .collect();
        by_size.sort();
        while self.fingerprint_count > target {
            let Some((_, _, key)) = by_size.pop() else {
                break;
            };
            self.uncover(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(period: i64) -> StateKey {
        ("t".into(), "e".into(), "li".into(), period)
    }

    fn terms() -> Terms {
        Terms {
            price: Price::FlatFee { amount: 2 },
            free_units: 0,
            aggregation: Aggregation::Count,
            bucket: None,
        }
    }

    /// The event ids of the rows below, by index.
    const IDS: [&str; 3] = ["a", "b", "x"];

    fn row(period: i64, event_id: &str, unique_hash: &str) -> Pending {
        Pending {
            key: key(period),
            terms: 0,
            event: IDS.iter().position(|id| *id == event_id).unwrap(),
            timestamp_us: 0,
            quantity: crate::fixed::ONE,
            unique_hash: UniqueHash::parse(unique_hash),
        }
    }

    #[test]
    fn covered_states_ask_only_about_repeats_and_redeliveries_write_no_row() {
        let mut rater = Rater::new(10, 10);
        rater.load_states(&[(key(1), Snapshot::default())], None, |_| Some(terms()));
        let first = [row(1, "a", "00000000000000aa")];
        assert!(rater.lookup_keys(&first).is_empty()); // empty and covered
        let (results, outcomes) = rater.rate(&first, &[terms()], |e| IDS[e]);
        assert_eq!(outcomes.counted, 1);
        assert!(matches!(&results[0], Ok(Some(d)) if d.cost == 2));
        assert_eq!(rater.fingerprint_count(), 1);
        // Answered from memory: no store lookup, and no row.
        assert!(rater.lookup_keys(&first).is_empty());
        let (results, outcomes) = rater.rate(&first, &[terms()], |e| IDS[e]);
        assert_eq!((outcomes.skipped, &results[0]), (1, &Ok(None)));
        // An uncovered state sends every hash to the store.
        assert_eq!(rater.lookup_keys(&[row(2, "b", "bb")]).len(), 1);
    }

    #[test]
    fn the_coverage_prefetched_is_where_each_state_keeps_it() {
        let mut rater = Rater::new(10, 10);
        let loaded: Vec<(StateKey, Snapshot)> =
            (0..3).map(|p| (key(p), Snapshot::default())).collect();
        rater.load_states(&loaded, None, |_| Some(terms()));
        rater.drop_states(&[key(1)]);
        rater.load_states(&[(key(7), Snapshot::default())], None, |_| Some(terms()));
        for held in rater.states.iter() {
            let (_, state) = held.as_ref().expect("all slots held");
            let at = (&raw const state.covered).addr() - (&raw const *held).addr();
            assert_eq!(at, rater.covered_at);
        }
    }

    #[test]
    fn states_past_the_first_chunk_are_held_and_found() {
        let count = CHUNK_STATES as i64 + 100;
        let ids: Vec<String> = (0..2 * count).map(|n| format!("e{n}")).collect();
        let rows = |round: i64| -> Vec<Pending> {
            (0..count)
                .map(|period| Pending {
                    key: key(period),
                    terms: 0,
                    event: (round * count + period) as usize,
                    timestamp_us: 0,
                    quantity: crate::fixed::ONE,
                    unique_hash: UniqueHash::parse(&format!("{round}-{period}")),
                })
                .collect()
        };
        let mut rater = Rater::new(10 * count as usize, 10 * count as usize);
        let (results, outcomes) = rater.rate(&rows(0), &[terms()], |e| ids[e].as_str());
        assert_eq!(
            (outcomes.counted, rater.keys().len()),
            (count as usize, count as usize)
        );
        assert!(results
            .iter()
            .all(|r| matches!(r, Ok(Some(d)) if d.cost == 2)));
        // A state of the second chunk dropped: its slot is reused, the others carry on.
        rater.drop_states(&[key(count - 1)]);
        let (results, _) = rater.rate(&rows(1), &[terms()], |e| ids[e].as_str());
        let last = results.len() - 1;
        assert!(matches!(&results[last], Ok(Some(d)) if d.tier_snapshot == crate::fixed::ONE));
        assert!(results[..last]
            .iter()
            .all(|r| matches!(r, Ok(Some(d)) if d.tier_snapshot == 2 * crate::fixed::ONE)));
        assert_eq!(rater.states.len(), count as usize);
        assert_eq!(rater.slot(&key(count - 1)), Some(count as Slot - 1));
    }

    #[test]
    fn past_the_budget_the_largest_states_are_uncovered() {
        let mut rater = Rater::new(4, 10);
        let stored = HashMap::from([(key(1), vec![1, 2, 3]), (key(2), vec![4])]);
        let snapshot = Snapshot {
            count: 3,
            ..Snapshot::default()
        };
        assert_eq!(
            rater.coverable(&[(key(1), 3), (key(2), 1), (key(3), 0)]),
            vec![key(2), key(1)]
        );
        rater.load_states(
            &[(key(1), snapshot.clone()), (key(2), snapshot)],
            Some(&stored),
            |_| Some(terms()),
        );
        assert_eq!(rater.fingerprint_count(), 4);
        rater.rate(&[row(2, "x", "0000000000000009")], &[terms()], |e| IDS[e]);
        // 5 > 4: uncover the largest (key 1) until at most 3 remain.
        assert_eq!(rater.fingerprint_count(), 2);
    }

    /// Batch `batch` of ten events with ids and hashes of their own, on key 1.
    fn batch_rows(batch: usize) -> Vec<Pending> {
        (batch * 10..batch * 10 + 10)
            .map(|event| Pending {
                key: key(1),
                terms: 0,
                event,
                timestamp_us: 0,
                quantity: crate::fixed::ONE,
                unique_hash: UniqueHash::parse(&format!("{event:016x}{:048}", 0)),
            })
            .collect()
    }

    fn dedup_keys(rows: &[Pending]) -> HashSet<(StateKey, UniqueHash)> {
        rows.iter()
            .map(|row| (row.key.clone(), row.unique_hash.clone()))
            .collect()
    }

    #[test]
    fn owners_of_the_recent_half_of_the_bound_survive_an_aging() {
        let ids: Vec<String> = (0..50).map(|n| format!("e{n}")).collect();
        let id = |event: usize| ids[event].as_str();
        // A bound of 30: the current generation ages at a commit that finds
        // more than 15 owners in it, i.e. at the commits of batches 1 and 3
        // (the half is crossed inside those batches).
        let mut rater = Rater::new(1_000, 30);
        rater.load_states(&[(key(1), Snapshot::default())], None, |_| Some(terms()));
        for batch in 0..4 {
            assert!(rater.lookup_keys(&batch_rows(batch)).is_empty());
            let (_, outcomes) = rater.rate(&batch_rows(batch), &[terms()], id);
            assert_eq!(outcomes.counted, 10);
            rater.committed();
        }
        // Batches 2 and 3 are the previous generation: their repeats are
        // answered in memory. Batches 0 and 1 were two generations back: the
        // store is asked about them.
        let redelivered = [batch_rows(3), batch_rows(2), batch_rows(0)].concat();
        assert_eq!(rater.lookup_keys(&redelivered), dedup_keys(&batch_rows(0)));
        let stored: Vec<(StateKey, UniqueHash, String)> = batch_rows(0)
            .into_iter()
            .map(|row| (row.key, row.unique_hash, ids[row.event].clone()))
            .collect();
        rater.remember(&stored);
        let (results, outcomes) = rater.rate(&redelivered, &[terms()], id);
        // The rows are those of unbounded memory: every redelivery writes nothing.
        assert_eq!(outcomes.skipped, 30);
        assert!(results.iter().all(|result| result == &Ok(None)));
        rater.committed();
        // A new batch goes to the current generation; a revoke drops both.
        rater.rate(&batch_rows(4), &[terms()], id);
        assert!(rater.lookup_keys(&batch_rows(3)).is_empty());
        rater.drop_states(&[key(1)]);
        let both = [batch_rows(3), batch_rows(4)].concat();
        assert_eq!(rater.lookup_keys(&both), dedup_keys(&both));
    }

    #[test]
    fn a_current_generation_beyond_the_bound_is_forgotten() {
        let ids: Vec<String> = (0..20).map(|n| format!("e{n}")).collect();
        let mut rater = Rater::new(1_000, 8);
        rater.load_states(&[(key(1), Snapshot::default())], None, |_| Some(terms()));
        rater.rate(&batch_rows(0), &[terms()], |e| ids[e].as_str());
        rater.committed(); // 10 > 8: nothing of it kept, not even as the previous one
        assert_eq!(
            rater.lookup_keys(&batch_rows(0)),
            dedup_keys(&batch_rows(0))
        );
    }
}
