//! A fast, non-cryptographic hasher for the core's internal maps (the
//! Firefox/rustc "Fx" hash: rotate, xor, multiply per 8-byte word).
//!
//! Only for maps whose *contents* the producer of events cannot choose: the
//! catalog's tables (filled from the validated catalog; an event's fields are
//! only looked up in them, so a hostile key can at worst walk the longest
//! probe sequence the catalog made) and the engine's integer state keys. Maps
//! filled from event data (hash owners, fingerprints) keep std's SipHash.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    #[inline]
    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    #[inline]
    fn write_i64(&mut self, value: i64) {
        self.add(value as u64);
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

pub type FxBuild = BuildHasherDefault<FxHasher>;
pub type FxHashMap<K, V> = HashMap<K, V, FxBuild>;
pub type FxHashSet<K> = HashSet<K, FxBuild>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn equal_keys_hash_equal_and_neighbours_differ() {
        let build = FxBuild::default();
        assert_eq!(build.hash_one("abc"), build.hash_one("abc"));
        assert_ne!(build.hash_one("abc"), build.hash_one("abd"));
        assert_ne!(build.hash_one((1u32, 2i64)), build.hash_one((2u32, 1i64)));
        // The str terminator keeps "a" + "bc" apart from "ab" + "c".
        assert_ne!(build.hash_one(("a", "bc")), build.hash_one(("ab", "c")));
    }

    #[test]
    fn maps_work_with_it() {
        let mut map: FxHashMap<String, usize> = FxHashMap::default();
        for i in 0..1000 {
            map.insert(format!("key-{i}"), i);
        }
        assert!((0..1000).all(|i| map[&format!("key-{i}")] == i));
    }
}
