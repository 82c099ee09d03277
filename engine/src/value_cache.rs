//! The value cache: values of recent gets, kept in memory (like RocksDB BlobDB's blob
//! cache), so a key read again costs no device read. Its share of the memory budget
//! is `memory::VALUE_CACHE_SHARE`.
//!
//! Keyed by where the record lies and which write it is: (region, unit, offset,
//! sequence). No invalidation is needed. A location is immutable until GC frees its
//! segment (or log chunk) and the space is written again; the sequence number is
//! unique to one write within a run of the process (every flush takes fresh ones),
//! and a GC that moves a record keeps its sequence. So a reused location holds a
//! record with another sequence, whose key the cache has never seen, unless it is the
//! very same record copied back by a GC, whose value is the same. The index hands a
//! get the pointer of the key's current version, so a get finds only that version's
//! value. The cache lives in memory only: a sequence reused after a crash meets an
//! empty cache.
//!
//! Only gets fill it: a scan reads many values once, which would only push out the
//! values gets come back to.

use crate::location::{Pointer, Region};
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use std::sync::Arc;

/// (region code, unit, offset in the unit, sequence number of the record).
type Key = (u8, u32, u32, u64);

/// What an entry costs besides its value's allocation: the key (24 bytes) and the
/// `Arc<[u8]>` (16) in the cache's entry slab with its links (~32), its hash table
/// slot and its share of the ghost queue; as the LSM block cache counts it.
const ENTRY_OVERHEAD_BYTES: u64 = 96;

/// Values the cache is sized for at first (its tables grow as needed): 1 KiB, the
/// paper's value size.
const VALUE_BYTES_TYPICAL: u64 = 1024;

/// The strong and weak counts in front of an `Arc`'s value.
const ARC_COUNTS_BYTES: usize = 2 * size_of::<usize>();

#[derive(Clone)]
struct ValueWeighter;

impl Weighter<Key, Arc<[u8]>> for ValueWeighter {
    fn weight(&self, _key: &Key, value: &Arc<[u8]>) -> u64 {
        hashkv_lsm::heap_bytes(value.len() + ARC_COUNTS_BYTES) as u64 + ENTRY_OVERHEAD_BYTES
    }
}

pub(crate) struct ValueCache {
    /// None when the cache is off (capacity 0).
    cache: Option<Cache<Key, Arc<[u8]>, ValueWeighter>>,
}

fn key_of(p: &Pointer) -> Key {
    let region = match p.region {
        Region::Segments => 0,
        Region::Log => 1,
        Region::Cold => 2,
    };
    (region, p.unit, p.offset, p.seq)
}

impl ValueCache {
    pub fn new(capacity_bytes: u64) -> ValueCache {
        let cache = (capacity_bytes > 0).then(|| {
            let items = capacity_bytes / (VALUE_BYTES_TYPICAL + ENTRY_OVERHEAD_BYTES);
            Cache::with_weighter(items.max(1) as usize, capacity_bytes, ValueWeighter)
        });
        ValueCache { cache }
    }

    /// The value of the record `p` points at, if cached.
    pub fn get(&self, p: &Pointer) -> Option<Vec<u8>> {
        Some(self.cache.as_ref()?.get(&key_of(p))?.to_vec())
    }

    /// Keeps `value`, read and checked from the record `p` points at.
    pub fn insert(&self, p: &Pointer, value: &[u8]) {
        if let Some(c) = &self.cache {
            c.insert(key_of(p), Arc::from(value));
        }
    }

    /// Bytes held, as charged.
    pub fn held_bytes(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.weight())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer(unit: u32, offset: u32, seq: u64) -> Pointer {
        Pointer {
            region: Region::Segments,
            unit,
            offset,
            record_bytes: 1100,
            seq,
            crc: 5,
        }
    }

    #[test]
    fn a_reused_location_is_a_miss_and_the_capacity_holds() {
        let cache = ValueCache::new(1 << 20);
        cache.insert(&pointer(3, 4096, 7), b"old value");
        assert_eq!(
            cache.get(&pointer(3, 4096, 7)).as_deref(),
            Some(&b"old value"[..])
        );
        // GC freed segment 3 and a later write with another sequence landed there.
        assert_eq!(cache.get(&pointer(3, 4096, 8)), None);
        let cold = Pointer {
            region: Region::Cold,
            ..pointer(3, 4096, 7)
        };
        assert_eq!(cache.get(&cold), None, "another region, another record");
        for i in 0..10_000 {
            cache.insert(&pointer(1, i * 2048, u64::from(i)), &[1u8; 1024]);
            cache.get(&pointer(1, i * 2048, u64::from(i)));
        }
        let held = cache.held_bytes();
        assert!(held <= 1 << 20 && held > 3 << 18, "{held}");
        assert!(ValueCache::new(0).get(&pointer(3, 4096, 7)).is_none());
    }
}
