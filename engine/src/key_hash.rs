//! One hash for the engine's in-memory maps keyed by byte strings (the write cache,
//! a GC's survey of a group, the keys written during a GC): xxh3 of the whole key in
//! one call, computed once per key and carried with it (`HashedKey`), so that a map
//! never hashes a key again. Std's SipHash costs several times more per short key, and
//! xxh3's streaming `Hasher` keeps a large state and buffers every `write`. It is also
//! the hash that chooses a key's group (`store::groups::group_of_hash`). No random
//! seed: iteration order is the same in every run (tests and crash runs reproduce).
//! The cost: whoever chooses the keys can choose colliding ones and slow the maps down
//! (hash flooding); an engine exposed to untrusted keys would want a per-process seed
//! for its maps (the groups' hash is on the device and cannot change).

use std::hash::{BuildHasherDefault, Hash, Hasher};

/// A key and its xxh3, computed once. Maps keyed by it (with `HashedKeys`) never hash
/// a key again: not when they grow, when the keys may have left the CPU's caches (a
/// GC's survey of a group reads 100 MB of records; rehashing its map read each key
/// again, 15% of the GC's CPU), and not for a second lookup of the same key.
#[derive(Debug, Clone, Copy)]
pub struct HashedKey<'a> {
    pub hash: u64,
    pub key: &'a [u8],
}

impl<'a> HashedKey<'a> {
    pub fn new(key: &'a [u8]) -> HashedKey<'a> {
        HashedKey {
            hash: xxhash_rust::xxh3::xxh3_64(key),
            key,
        }
    }
}

impl Hash for HashedKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for HashedKey<'_> {
    /// Keys compare only when their hashes are equal: a probe that meets another key
    /// does not read it.
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.key == other.key
    }
}

impl Eq for HashedKey<'_> {}

/// Passes on the one `u64` written to it: for maps whose keys are hashes already
/// (`HashedKey`, or a hash itself).
#[derive(Debug, Default, Clone, Copy)]
pub struct PassHasher(u64);

impl Hasher for PassHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not used by the keys above; hashed properly should anything else come.
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The `BuildHasher` of maps keyed by `HashedKey` or by key hashes.
pub type HashedKeys = BuildHasherDefault<PassHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn hashed_keys_find_their_entries_and_only_theirs() {
        let keys: Vec<[u8; 4]> = (0..10_000u32).map(|i| i.to_be_bytes()).collect();
        let mut m: HashMap<HashedKey<'_>, u32, HashedKeys> = HashMap::default();
        for (i, k) in keys.iter().enumerate() {
            m.insert(HashedKey::new(k), i as u32);
        }
        assert_eq!(m.len(), keys.len());
        assert!(keys
            .iter()
            .enumerate()
            .all(|(i, k)| m[&HashedKey::new(k)] == i as u32));
        assert!(!m.contains_key(&HashedKey::new(b"absent")));
        // Equal hashes alone do not make keys equal.
        let forged = HashedKey {
            hash: HashedKey::new(&keys[7]).hash,
            key: b"other",
        };
        assert!(!m.contains_key(&forged));
    }
}
