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
//! values gets come back to. And a get fills it only on a value's second miss within
//! the doorkeeper's window (`Doorkeeper`, as TinyLFU's): under a budget a uniform
//! read of a large store hits its value cache almost never (6.4 MiB of 2 GiB), and
//! copying every value read into the cache, and evicting another for it, took 9.7%
//! of the CPU of 4 KiB multi-gets, which are CPU-bound. A value read again soon pays
//! one more device read before it is cached.

use crate::location::{Pointer, Region};
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Doorkeeper slots per value the cache holds (at `VALUE_BYTES_TYPICAL`). The window
/// is probabilistic: a missed value's slot survives k other misses with a probability
/// of about e^(-k / slots), so a value missed again within as many other misses as
/// the cache holds values is admitted with a probability of about 0.6, and within a
/// tenth of that, 0.95. A longer window would admit values whose next read comes
/// after the cache has turned over anyway.
const DOORKEEPER_SLOTS_PER_VALUE: u64 = 2;

pub(crate) struct ValueCache {
    /// None when the cache is off (capacity 0).
    cache: Option<Cache<Key, Arc<[u8]>, ValueWeighter>>,
    doorkeeper: Doorkeeper,
}

/// Which values missed recently: one fingerprint per slot, direct-mapped, so that
/// a miss costs one atomic load and store, and no lock. A value is admitted to the
/// cache when its slot still holds its fingerprint, that is, when it missed before
/// and no other miss has taken the slot since.
struct Doorkeeper {
    /// At least one.
    slots: Box<[AtomicU64]>,
}

impl Doorkeeper {
    fn new(slots: u64) -> Doorkeeper {
        Doorkeeper {
            slots: (0..slots.max(1)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The slots' heap bytes, allocator rounding included.
    fn held_bytes(&self) -> u64 {
        hashkv_lsm::heap_bytes(self.slots.len() * size_of::<AtomicU64>()) as u64
    }

    /// True if `key` missed before within the window (and frees its slot); else
    /// records this miss and returns false.
    fn admit(&self, key: &Key) -> bool {
        let (region, unit, offset, seq) = *key;
        let mut bytes = [0u8; 17];
        bytes[0] = region;
        bytes[1..5].copy_from_slice(&unit.to_le_bytes());
        bytes[5..9].copy_from_slice(&offset.to_le_bytes());
        bytes[9..].copy_from_slice(&seq.to_le_bytes());
        let hash = xxhash_rust::xxh3::xxh3_64(&bytes);
        // The slot from the whole hash (multiply and shift: any slot count), the
        // fingerprint never 0, which marks a free slot.
        let index = ((u128::from(hash) * self.slots.len() as u128) >> 64) as usize;
        let fingerprint = hash | 1;
        let slot = &self.slots[index];
        // Two gets racing on one slot may both record, or both admit: either only
        // shifts when a value is cached, never what a get returns.
        if slot.load(Ordering::Relaxed) == fingerprint {
            slot.store(0, Ordering::Relaxed);
            true
        } else {
            slot.store(fingerprint, Ordering::Relaxed);
            false
        }
    }
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
        let items = (capacity_bytes / (VALUE_BYTES_TYPICAL + ENTRY_OVERHEAD_BYTES)).max(1);
        let doorkeeper = Doorkeeper::new(items * DOORKEEPER_SLOTS_PER_VALUE);
        // The doorkeeper's slots come out of the cache's capacity.
        let values_bytes = capacity_bytes.saturating_sub(doorkeeper.held_bytes());
        let cache = (values_bytes > 0)
            .then(|| Cache::with_weighter(items as usize, values_bytes, ValueWeighter));
        ValueCache { cache, doorkeeper }
    }

    /// The value of the record `p` points at, if cached.
    pub fn get(&self, p: &Pointer) -> Option<Vec<u8>> {
        Some(self.cache.as_ref()?.get(&key_of(p))?.to_vec())
    }

    /// Keeps `value`, read and checked from the record `p` points at, if the
    /// doorkeeper admits it (its second miss within the window).
    pub fn insert(&self, p: &Pointer, value: &[u8]) {
        if let Some(c) = &self.cache {
            let key = key_of(p);
            if self.doorkeeper.admit(&key) {
                c.insert(key, Arc::from(value));
            }
        }
    }

    /// Bytes held, as charged: the values and the doorkeeper.
    pub fn held_bytes(&self) -> u64 {
        self.cache
            .as_ref()
            .map_or(0, |c| c.weight() + self.doorkeeper.held_bytes())
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
        // The second miss is admitted.
        cache.insert(&pointer(3, 4096, 7), b"old value");
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
            cache.insert(&pointer(1, i * 2048, u64::from(i)), &[1u8; 1024]);
            cache.get(&pointer(1, i * 2048, u64::from(i)));
        }
        let held = cache.held_bytes();
        assert!(held <= 1 << 20 && held > 3 << 18, "{held}");
        assert!(ValueCache::new(0).get(&pointer(3, 4096, 7)).is_none());
    }

    #[test]
    fn a_value_is_cached_at_its_second_miss_within_the_window() {
        let cache = ValueCache::new(1 << 20);
        let slots = cache.doorkeeper.slots.len() as u32;
        assert!(slots > 0);
        let p = pointer(2, 0, 1);
        cache.insert(&p, b"v");
        assert_eq!(cache.get(&p), None, "a first miss only marks the value");
        cache.insert(&p, b"v");
        assert_eq!(cache.get(&p).as_deref(), Some(&b"v"[..]));

        // A value missed once, then many others: its slot was taken, so its next
        // miss counts as a first one again.
        let q = pointer(2, 4096, 2);
        cache.insert(&q, b"q");
        for i in 0..slots * 20 {
            cache.insert(&pointer(5, i, u64::from(i) + 100), b"other");
        }
        cache.insert(&q, b"q");
        assert_eq!(cache.get(&q), None, "the window has passed");
        cache.insert(&q, b"q");
        assert_eq!(cache.get(&q).as_deref(), Some(&b"q"[..]));
    }
}
