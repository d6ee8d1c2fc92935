//! A read-only map from catalog keys (bytes) to small records, laid out so
//! that a lookup usually touches one cache line: open addressing, each slot
//! one 64-byte line holding the key's hash, the record and the key itself
//! when it fits ([`INLINE_KEY`] bytes; longer keys live on the heap and cost
//! one more read to compare).
//!
//! Built once per catalog load; only looked up afterwards. Keys are compared
//! byte for byte (the hash only skips slots), so two keys never meet. The
//! contents come from the validated catalog: an event's fields are only
//! looked up, so a hostile key can at worst walk the longest probe run the
//! catalog made (the table is at most half full).

use std::hash::Hasher;

use rustc_hash::FxHasher;

/// Key bytes held in the slot itself.
pub const INLINE_KEY: usize = 27;

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Slot<V> {
    /// The key's hash with the lowest bit set; 0: empty.
    tag: u64,
    record: V,
    /// `u32::MAX`: the key is inline; else its index in `long_keys`.
    long_key: u32,
    key_len: u8,
    key: [u8; INLINE_KEY],
}

/// The bytes a slot of records `V` takes: one cache line when `V` is at
/// most 24 bytes.
pub const fn slot_size<V>() -> usize {
    std::mem::size_of::<Slot<V>>()
}

/// See the module docs. `V` is the record a key maps to.
pub struct KeyTable<V> {
    slots: Vec<Slot<V>>,
    /// `slots.len() - 1` (a power of two minus one).
    mask: usize,
    long_keys: Vec<Box<[u8]>>,
}

impl<V> std::fmt::Debug for KeyTable<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTable")
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl<V: Copy + Default> Default for KeyTable<V> {
    fn default() -> Self {
        KeyTable::new(std::iter::empty())
    }
}

fn tag_of(key: &[u8]) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(key);
    // Spread the bits (Fx leaves the low ones weak), then mark as used.
    hasher.finish().wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

impl<V: Copy + Default> KeyTable<V> {
    /// Build from `(key, record)` pairs; a repeated key keeps its last record.
    pub fn new<'k>(entries: impl IntoIterator<Item = (&'k [u8], V)>) -> KeyTable<V> {
        let entries: Vec<(&[u8], V)> = entries.into_iter().collect();
        let size = (entries.len() * 2).next_power_of_two().max(2);
        let empty = Slot {
            tag: 0,
            record: V::default(),
            long_key: u32::MAX,
            key_len: 0,
            key: [0; INLINE_KEY],
        };
        let mut table = KeyTable {
            slots: vec![empty; size],
            mask: size - 1,
            long_keys: Vec::new(),
        };
        for (key, record) in entries {
            table.insert(key, record);
        }
        table
    }

    fn slot_key<'s>(&'s self, slot: &'s Slot<V>) -> &'s [u8] {
        if slot.long_key == u32::MAX {
            &slot.key[..usize::from(slot.key_len)]
        } else {
            &self.long_keys[slot.long_key as usize]
        }
    }

    /// The index of `key`'s slot, or of the empty slot where it would go.
    fn find(&self, key: &[u8], tag: u64) -> usize {
        // An inline key is compared as its length and its zero-padded bytes
        // (unused key bytes of a slot are 0): fixed-size compares the
        // compiler inlines, where a slice compare calls `memcmp`.
        let inline = (key.len() <= INLINE_KEY).then(|| {
            let mut padded = [0u8; INLINE_KEY];
            padded[..key.len()].copy_from_slice(key);
            (key.len() as u8, padded)
        });
        let mut at = (tag >> 32) as usize & self.mask;
        loop {
            let slot = &self.slots[at];
            if slot.tag == 0 {
                return at;
            }
            if slot.tag == tag {
                let same = match (&inline, slot.long_key == u32::MAX) {
                    (Some((len, padded)), true) => slot.key_len == *len && slot.key == *padded,
                    (None, false) => self.slot_key(slot) == key,
                    // Inline keys are exactly those of at most INLINE_KEY bytes.
                    _ => false,
                };
                if same {
                    return at;
                }
            }
            at = (at + 1) & self.mask;
        }
    }

    fn insert(&mut self, key: &[u8], record: V) {
        let tag = tag_of(key);
        let at = self.find(key, tag);
        let slot = &mut self.slots[at];
        if slot.tag != 0 {
            slot.record = record;
            return;
        }
        slot.tag = tag;
        slot.record = record;
        if key.len() <= INLINE_KEY {
            slot.key_len = key.len() as u8;
            slot.key[..key.len()].copy_from_slice(key);
        } else {
            slot.long_key = self.long_keys.len() as u32;
            self.long_keys.push(key.into());
        }
    }

    /// Start loading the slot a lookup of `key` reads first (a hint: no
    /// effect on any answer).
    pub fn prefetch(&self, key: &[u8]) {
        let at = (tag_of(key) >> 32) as usize & self.mask;
        prefetch_line(self.slots[at..].as_ptr().cast());
    }

    /// The record of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<&V> {
        let slot = &self.slots[self.find(key, tag_of(key))];
        (slot.tag != 0).then_some(&slot.record)
    }
}

/// Ask the CPU to start loading the cache line holding `address` (a hint:
/// nothing is read, an invalid address is harmless).
pub fn prefetch_line(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing and cannot fault; SSE is part of the
    // x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_short_and_long_keys_and_nothing_else() {
        let long = vec![7u8; 100];
        let keys: Vec<Vec<u8>> = (0..1000u32).map(|n| n.to_le_bytes().to_vec()).collect();
        let mut entries: Vec<(&[u8], u32)> = keys
            .iter()
            .enumerate()
            .map(|(n, k)| (k.as_slice(), n as u32))
            .collect();
        entries.push((&long, 5000));
        entries.push((b"", 6000));
        entries.push((&keys[3], 7000)); // a repeated key: the last record
        let table = KeyTable::new(entries);
        for (n, key) in keys.iter().enumerate().skip(4) {
            assert_eq!(table.get(key), Some(&(n as u32)));
        }
        assert_eq!(table.get(&keys[3]), Some(&7000));
        assert_eq!(table.get(&long), Some(&5000));
        assert_eq!(table.get(b""), Some(&6000));
        assert_eq!(table.get(&[7u8; 99]), None);
        assert_eq!(table.get(&1000u32.to_le_bytes()), None);
        assert_eq!(KeyTable::<u32>::default().get(b"x"), None);
        // Inline keys that differ only by trailing zero bytes, and a long
        // key whose first INLINE_KEY bytes are a short one's.
        let zeros = KeyTable::new([(&b"ab"[..], 1u32), (&b"ab\0"[..], 2), (&[0u8; 28][..], 3)]);
        assert_eq!(zeros.get(b"ab"), Some(&1));
        assert_eq!(zeros.get(b"ab\0"), Some(&2));
        assert_eq!(zeros.get(b"ab\0\0"), None);
        assert_eq!(zeros.get(&[0u8; 27]), None);
        assert_eq!(zeros.get(&[0u8; 28]), Some(&3));
        assert_eq!(slot_size::<u32>(), 64);
    }
}
