//! A fast hasher for the integer keys of the hot paths (pair keys, exposure
//! identities). `std`'s SipHash costs more than the lookups themselves there.
//!
//! Every map that uses it is only ever iterated after sorting (outputs are in
//! a fixed order), so its iteration order never reaches a result. Keys come
//! from users' logs; the per-process random seed keeps a crafted log from
//! forcing collisions.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

use crate::counters::mix64;

/// Hashes the `u64` words written to it with a SplitMix64 round each.
#[derive(Clone, Copy)]
pub struct MixHasher {
    h: u64,
}

impl Hasher for MixHasher {
    #[inline]
    fn finish(&self) -> u64 {
        mix64(self.h)
    }
    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.h = mix64(self.h ^ x).wrapping_add(0x9E37_79B9_7F4A_7C15);
    }
    #[inline]
    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }
    #[inline]
    fn write_i64(&mut self, x: i64) {
        self.write_u64(x as u64);
    }
    #[inline]
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w) ^ ((c.len() as u64) << 59));
        }
    }
}

/// Builds [`MixHasher`]s from a seed drawn once per map.
#[derive(Clone, Copy)]
pub struct MixState {
    seed: u64,
}

impl Default for MixState {
    fn default() -> Self {
        // RandomState is seeded from the OS once per thread, then incremented.
        let seed = std::collections::hash_map::RandomState::new().hash_one(0u64);
        MixState { seed }
    }
}

impl BuildHasher for MixState {
    type Hasher = MixHasher;
    #[inline]
    fn build_hasher(&self) -> MixHasher {
        MixHasher { h: self.seed }
    }
}

pub type FastMap<K, V> = HashMap<K, V, MixState>;
pub type FastSet<K> = HashSet<K, MixState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_small_keys_spread_over_buckets() {
        // Sequential pair keys must not collide in the low bits (the bucket index).
        let s = MixState::default();
        let mut low: FastSet<u64> = FastSet::default();
        for u in 0..64u64 {
            for a in 0..64u64 {
                low.insert(s.hash_one((u, a)) & 0xFFFF);
            }
        }
        // 4096 keys into 65536 buckets: a good hash leaves few collisions.
        assert!(
            low.len() > 3900,
            "only {} distinct low-16-bit hashes",
            low.len()
        );
    }

    #[test]
    fn same_map_hashes_equal_keys_equally() {
        let mut m: FastMap<(u64, u64), u32> = FastMap::default();
        m.insert((1, 2), 7);
        m.insert((2, 1), 8);
        assert_eq!(m.get(&(1, 2)), Some(&7));
        assert_eq!(m.get(&(2, 1)), Some(&8));
        assert_eq!(m.len(), 2);
    }
}
