//! One hasher for the engine's in-memory maps keyed by byte strings (the write cache,
//! a GC's survey of a group): xxh3 of the whole key in one call. Std's SipHash costs
//! several times more per short key, and xxh3's streaming `Hasher` keeps a large
//! state and buffers every `write`; a key is hashed once, whole, so neither is needed.
//! No random seed: iteration order is the same in every run (tests and crash runs
//! reproduce). The cost: whoever chooses the keys can choose colliding ones and slow
//! the maps down (hash flooding); an engine exposed to untrusted keys would want a
//! per-process seed here.

use std::hash::{BuildHasherDefault, Hasher};

/// Hashes what is written to it: the bytes of each `write` with xxh3, seeded by what
/// came before (a `[u8]`'s length prefix, then its bytes).
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    fn write_usize(&mut self, n: usize) {
        // The length prefix of a slice: mixed in cheaply, the bytes follow.
        self.0 = (self.0 ^ n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The `BuildHasher` of maps keyed by byte strings.
pub type KeyHash = BuildHasherDefault<KeyHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::hash::BuildHasher;

    #[test]
    fn equal_keys_hash_alike_and_different_keys_apart() {
        let h = KeyHash::default();
        let a = h.hash_one(b"key-1".as_slice());
        assert_eq!(a, h.hash_one(b"key-1".to_vec().as_slice()));
        assert_ne!(a, h.hash_one(b"key-2".as_slice()));
        // The length prefix takes part: "ab" + "c" differs from "a" + "bc".
        assert_ne!(
            h.hash_one((b"ab".as_slice(), b"c".as_slice())),
            h.hash_one((b"a".as_slice(), b"bc".as_slice()))
        );
        let mut m: HashMap<Vec<u8>, u32, KeyHash> = HashMap::default();
        for i in 0..10_000u32 {
            m.insert(i.to_be_bytes().to_vec(), i);
        }
        assert!((0..10_000u32).all(|i| m[&i.to_be_bytes()[..]] == i));
    }
}
