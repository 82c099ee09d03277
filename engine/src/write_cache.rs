//! The write cache: recent writes buffered in memory, a repeated key updated in place.
//! A flush freezes the active map and commits it as one unit, so a write batch is
//! always wholly in one flush (atomic). Frozen maps stay readable until their flush's
//! index batch is in the index: one being placed and written, and up to
//! [`UNCOMMITTED_FLUSHES_MAX`] waiting for their commit.

use crate::cache_map::ChunkPool;
pub use crate::cache_map::{CacheMap, ValueIn};
use crate::commit::pipeline::UNCOMMITTED_FLUSHES_MAX;
use crate::key_hash::HashedKey;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// A cached value as a reader gets it: `None` is a delete.
pub type CachedValue = Option<Vec<u8>>;

/// One write as it enters the cache: `value` `None` deletes the key.
#[derive(Debug)]
pub struct Entry<'a> {
    pub key: &'a [u8],
    pub value: Option<ValueIn<'a>>,
}

impl<'a> Entry<'a> {
    pub fn put(key: &'a [u8], value: ValueIn<'a>) -> Entry<'a> {
        Entry {
            key,
            value: Some(value),
        }
    }

    pub fn delete(key: &'a [u8]) -> Entry<'a> {
        Entry { key, value: None }
    }

    pub fn value_slice(&self) -> Option<&[u8]> {
        self.value.as_ref().map(ValueIn::as_slice)
    }
}

#[derive(Debug)]
pub struct WriteCache {
    pub active: CacheMap,
    /// Where every map takes its chunks and a released one gives them back.
    pool: Arc<ChunkPool>,
    pub active_bytes: u64,
    /// Number of the flush that will commit `active`. Numbers only grow: a flush
    /// that could not commit leaves its number unused ([`WriteCache::unfreeze`]).
    pub active_flush: u64,
    /// Frozen by flushes not yet committed, oldest first; served to readers, newest
    /// first, until committed.
    pub frozen: VecDeque<FrozenMap>,
    /// When the last committed maps were released: the pipeline's work on the oldest
    /// frozen map began then, or when it froze if later.
    last_release_at: Option<Instant>,
}

/// A map frozen by a flush.
#[derive(Debug)]
pub struct FrozenMap {
    pub map: Arc<CacheMap>,
    /// What the map counted for when it was active.
    pub bytes: u64,
    /// When it was frozen.
    pub at: Instant,
    /// Its records are written and its commit is queued: the active map may be frozen
    /// next.
    pub placed: bool,
}

/// The cache's state as the pacer sees it: room left in the active map before it is
/// full, what the active map's freeze would wait for, and the cache's size.
#[derive(Clone, Copy, Debug)]
pub struct CacheFill {
    pub room_bytes: u64,
    pub waits_for: Option<FreezeWait>,
    pub limit_bytes: u64,
}

/// What a full active map waits for before it is frozen (`needs_writer_flush`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FreezeWait {
    /// The newest frozen map's placement, which began `at`, of `bytes`.
    Placement { at: Instant, bytes: u64 },
    /// The pipeline is full: the oldest frozen map's commit. The pipeline began
    /// working on it `at`, and `bytes` are every frozen map's: the maps in the
    /// pipeline are written side by side and commit about together (the newer's
    /// writes complete after the older's), so the oldest's own bytes would promise
    /// its commit too early.
    Commit { at: Instant, bytes: u64 },
}

/// Committed maps let go of, and how long the pipeline worked on them: from when the
/// first froze, or when the maps before it were released if later, until now.
pub struct Released {
    pub maps: Vec<Arc<CacheMap>>,
    pub bytes: u64,
    pub service: std::time::Duration,
}

/// What an entry costs the cache beyond its key and value, so that many tiny entries
/// still fill the cache: its slot in the hash table (hash, key place, value place or
/// owned vector: 56 bytes, and a control byte) at the table's lowest load after it
/// grows (7/16), rounded up.
const ENTRY_OVERHEAD_BYTES: u64 = 128;

/// Bytes `entries` count for in the cache when none replaces a cached entry (an upper
/// bound of what inserting them adds).
pub fn growth_bytes(entries: &[Entry<'_>]) -> u64 {
    entries
        .iter()
        .map(|e| {
            (e.key.len() + e.value.as_ref().map_or(0, ValueIn::held_bytes)) as u64
                + ENTRY_OVERHEAD_BYTES
        })
        .sum()
}

/// What a write replaced, per key, so that it can be taken back if the store refuses
/// it: (key, the value this write left, what the cache held before).
pub type Undo = Vec<(Vec<u8>, CachedValue, Option<CachedValue>)>;

impl WriteCache {
    /// An empty cache whose maps hold about `limit_bytes` each, with a pool of its own
    /// (tests).
    #[cfg(test)]
    pub fn new(limit_bytes: u64) -> WriteCache {
        WriteCache::with_pool(ChunkPool::for_cache(limit_bytes, true))
    }

    /// An empty cache whose maps take their memory from `pool`, which writers also
    /// copy large values into before they take the cache's lock.
    pub fn with_pool(pool: Arc<ChunkPool>) -> WriteCache {
        WriteCache {
            active: CacheMap::new(pool.clone()),
            pool,
            active_bytes: 0,
            active_flush: 0,
            frozen: VecDeque::new(),
            last_release_at: None,
        }
    }

    /// Copies the key (and a borrowed value) into the active map's arena; an owned
    /// value is kept as it is.
    pub fn insert(&mut self, key: HashedKey<'_>, value: Option<ValueIn<'_>>) {
        let done = self.active.insert(key, value);
        let overhead = if done.new_key {
            ENTRY_OVERHEAD_BYTES
        } else {
            0
        };
        self.active_bytes = self.active_bytes + overhead + done.added_bytes - done.freed_bytes;
    }

    /// Whether inserting entries of `growth_bytes` (their [`growth_bytes`], an upper
    /// bound: replaced entries give bytes back) may leave the writer to flush in its
    /// own thread ([`WriteCache::needs_writer_flush`] after them; nothing else changes
    /// the answer while the caller holds the cache). Only such a write can be refused
    /// (`StoreFull`) and taken back, so only it records what it replaces: a write that
    /// merely fills the cache, or lands in it while the flusher is about to freeze it,
    /// returns at once and records nothing (it did, one allocation per record, until
    /// the flusher froze the map).
    pub fn may_need_writer_flush(&self, growth_bytes: u64, limit_bytes: u64) -> bool {
        let after = self.active_bytes + growth_bytes;
        after >= limit_bytes
            && (self.placing().is_some()
                || self.pipeline_full()
                || after >= limit_bytes.saturating_mul(2))
    }

    /// More maps wait for their commit than a flush may place beside: the next freeze
    /// waits for the oldest's commit.
    fn pipeline_full(&self) -> bool {
        self.frozen.len() as u64 > UNCOMMITTED_FLUSHES_MAX
    }

    /// The active map is full while the previous one is still being placed, or while
    /// the pipeline is full (the next flush waits for a commit), or holds twice the
    /// limit (the flusher has not frozen it yet): the writer flushes in its own thread,
    /// and waits. A flush so holds at most about twice the limit, as before the
    /// background flusher: a larger one needs more room in a group than its chain may
    /// take, and a store with room would refuse it.
    pub fn needs_writer_flush(&self, limit_bytes: u64) -> bool {
        self.may_need_writer_flush(0, limit_bytes)
    }

    /// The frozen map whose flush is placing it, if any (always the newest).
    pub fn placing(&self) -> Option<&FrozenMap> {
        self.frozen.back().filter(|f| !f.placed)
    }

    /// Records, before `entries` are inserted, what taking them back needs: per key,
    /// the last value the batch writes and what the cache held before, active or
    /// frozen (a frozen earlier write must come back if a failed flush handed its key
    /// to this write).
    pub fn undo_for(&self, entries: &[Entry<'_>]) -> Undo {
        let mut seen = std::collections::HashSet::new();
        entries
            .iter()
            .rev()
            .filter(|e| seen.insert(e.key))
            .map(|e| {
                (
                    e.key.to_vec(),
                    e.value_slice().map(<[u8]>::to_vec),
                    self.get(e.key),
                )
            })
            .collect()
    }

    /// Takes back a refused write: where the active map still holds what the write
    /// left, puts back what it held before (or removes the key). A newer write of a
    /// key by someone else is left alone.
    pub fn take_back(&mut self, undo: Undo) {
        for (key, written, previous) in undo {
            let hashed = HashedKey::new(&key);
            if self.active.get(&hashed) != Some(written.as_deref()) {
                continue;
            }
            match previous {
                Some(v) => self.insert(hashed, v.map(ValueIn::Owned)),
                None => {
                    let freed = self.active.remove(&hashed).expect("found above");
                    self.active_bytes -= freed + ENTRY_OVERHEAD_BYTES;
                }
            }
        }
    }

    /// Looks a key up: `Some(None)` is a cached delete, `None` not cached.
    pub fn get(&self, key: &[u8]) -> Option<CachedValue> {
        let key = HashedKey::new(key);
        if let Some(v) = self.active.get(&key) {
            return Some(v.map(<[u8]>::to_vec));
        }
        self.frozen
            .iter()
            .rev()
            .find_map(|f| f.map.get(&key).map(|v| v.map(<[u8]>::to_vec)))
    }

    /// What the pacer needs to know after a write went in (`gc/pacer.rs`).
    pub fn fill(&self, limit_bytes: u64) -> CacheFill {
        let waits_for = match (self.frozen.front(), self.placing()) {
            (Some(oldest), _) if self.pipeline_full() => Some(FreezeWait::Commit {
                at: self.service_began(oldest),
                bytes: self.frozen.iter().map(|f| f.bytes).sum(),
            }),
            (_, Some(newest)) => Some(FreezeWait::Placement {
                at: newest.at,
                bytes: newest.bytes,
            }),
            _ => None,
        };
        CacheFill {
            room_bytes: limit_bytes.saturating_sub(self.active_bytes),
            waits_for,
            limit_bytes,
        }
    }

    /// When the pipeline began working on `f`: when it froze, or when the maps
    /// before it were released if later.
    fn service_began(&self, f: &FrozenMap) -> Instant {
        self.last_release_at.map_or(f.at, |r| r.max(f.at))
    }

    /// Every map's bytes and the memory pooled for the next maps: what the cache
    /// holds in memory.
    pub fn held_bytes(&self) -> u64 {
        self.active_bytes
            + self.frozen.iter().map(|f| f.bytes).sum::<u64>()
            + self.pool.held_bytes()
    }

    /// Frees the chunks and value buffers pooled for the next maps: the write side is
    /// idle and lends what it does not hold (`memory::Loan`).
    pub fn let_go_of_pooled_memory(&self) {
        self.pool.clear();
    }

    /// The newest frozen map's flush placed it and queued its commit. Returns its
    /// bytes and how long its placement took since it froze.
    pub fn mark_placed(&mut self) -> (u64, std::time::Duration) {
        let newest = self.frozen.back_mut().expect("a flush placed a frozen map");
        newest.placed = true;
        (newest.bytes, newest.at.elapsed())
    }

    /// The oldest frozen map is committed (or its commit failed: the store is
    /// poisoned, and reads must not return what a restart would not).
    pub fn release_committed(&mut self, count: u64) -> Released {
        let now = Instant::now();
        let began = self.frozen.front().map(|f| self.service_began(f));
        let (mut maps, mut bytes) = (Vec::new(), 0);
        for _ in 0..count {
            let oldest = self
                .frozen
                .pop_front()
                .expect("a committed flush froze a map");
            debug_assert!(oldest.placed, "committed maps were placed");
            bytes += oldest.bytes;
            maps.push(oldest.map);
        }
        self.last_release_at = Some(now);
        Released {
            maps,
            bytes,
            service: began.map_or(std::time::Duration::ZERO, |b| now - b),
        }
    }

    /// The newest frozen map's flush failed while placing it, and the store is
    /// poisoned: dropped, for the same reason.
    pub fn drop_placing(&mut self) {
        let newest = self.frozen.pop_back().expect("a failed flush froze a map");
        debug_assert!(!newest.placed);
    }

    /// A flush could not commit and wrote nothing: its map's entries go back into the
    /// active map, under any newer ones. The active map keeps its own number, so its
    /// commit covers the writes of both: a writer that joined while the flush was in
    /// flight waits for that number, and taking the number back would let it count its
    /// write uncommitted (and take it back after a refusal) once the merged map
    /// committed under the lower number.
    pub fn unfreeze(&mut self, map: Arc<CacheMap>) {
        let newest = self.frozen.pop_back().expect("a refused flush froze a map");
        debug_assert!(Arc::ptr_eq(&newest.map, &map) && !newest.placed);
        drop(newest);
        for (k, v) in map.iter() {
            if self.active.get(&k).is_none() {
                self.insert(k, v.map(ValueIn::Borrowed));
            }
        }
    }

    /// Freezes the active map for a flush; returns it with its flush number.
    pub fn freeze(&mut self) -> (Arc<CacheMap>, u64) {
        assert!(self.placing().is_none(), "one flush places at a time");
        // The next map grows from empty: one sized in advance would hold memory that
        // no entry counts for while the frozen one is flushed.
        let next = CacheMap::new(self.pool.clone());
        let map = Arc::new(std::mem::replace(&mut self.active, next));
        let bytes = std::mem::take(&mut self.active_bytes);
        let n = self.active_flush;
        self.active_flush += 1;
        self.frozen.push_back(FrozenMap {
            map: map.clone(),
            bytes,
            at: Instant::now(),
            placed: false,
        });
        (map, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(cache: &mut WriteCache, key: &[u8], value: &[u8]) -> u64 {
        cache.insert(HashedKey::new(key), Some(ValueIn::Borrowed(value)));
        cache.active_flush
    }

    #[test]
    fn a_cached_key_is_found_by_its_bytes_and_carries_the_hash_of_its_group() {
        let mut cache = WriteCache::new(1 << 20);
        put(&mut cache, b"apple", b"1");
        let (frozen, _) = cache.freeze();
        put(&mut cache, b"pear", b"2");
        assert_eq!(cache.get(b"apple"), Some(Some(b"1".to_vec())));
        assert_eq!(cache.get(b"pear"), Some(Some(b"2".to_vec())));
        assert_eq!(cache.get(b"plum"), None);
        let (key, _) = frozen.iter().next().unwrap();
        assert_eq!(key.key, b"apple");
        for groups in [1, 7, 1024] {
            assert_eq!(
                crate::store::groups::group_of_hash(key.hash, groups),
                crate::store::groups::group_of(b"apple", groups)
            );
        }
    }

    #[test]
    fn frozen_maps_are_read_newest_first_and_released_oldest_first() {
        // The 2000-byte value fills it once, not twice.
        let limit = 1500;
        let mut cache = WriteCache::new(1 << 20);
        put(&mut cache, b"a", b"1");
        put(&mut cache, b"b", b"1");
        let (first, ..) = cache.freeze();
        cache.mark_placed();
        put(&mut cache, b"a", b"2");
        let (second, ..) = cache.freeze();
        assert!(cache.placing().is_some(), "the second is being placed");
        put(&mut cache, b"c", &[0u8; 2000]);
        assert!(
            cache.needs_writer_flush(limit),
            "full while a map is being placed"
        );
        cache.mark_placed();
        assert_eq!(cache.get(b"a"), Some(Some(b"2".to_vec())), "newest first");
        assert_eq!(cache.get(b"b"), Some(Some(b"1".to_vec())));
        // Two maps wait for their commits: the pipeline is full, a full cache waits.
        assert!(cache.placing().is_none());
        assert!(cache.needs_writer_flush(limit));
        assert!(Arc::ptr_eq(&cache.release_committed(1).maps[0], &first));
        assert!(
            !cache.needs_writer_flush(limit),
            "one placed map waiting: the flusher may place the next"
        );
        assert_eq!(cache.get(b"b"), None, "committed: the index serves it now");
        assert!(Arc::ptr_eq(&cache.release_committed(1).maps[0], &second));
        assert_eq!(cache.held_bytes(), cache.active_bytes);
    }

    #[test]
    fn a_map_that_could_not_commit_goes_back_under_a_number_its_writers_wait_for() {
        let mut cache = WriteCache::new(1 << 20);
        let first = put(&mut cache, b"a", b"1");
        let (frozen, n) = cache.freeze();
        assert_eq!(n, first);
        // Written while the flush is in flight: this writer waits for a later flush.
        let joined = put(&mut cache, b"b", b"2");
        put(&mut cache, b"a", b"3");
        assert!(joined > n);
        cache.unfreeze(frozen);
        assert!(cache.frozen.is_empty());
        assert_eq!(
            cache.held_bytes(),
            cache.active_bytes + cache.pool.held_bytes(),
            "the unfrozen map's chunks went back to the pool"
        );
        assert_eq!(
            cache.get(b"a"),
            Some(Some(b"3".to_vec())),
            "the newer write wins"
        );
        assert_eq!(cache.get(b"b"), Some(Some(b"2".to_vec())));
        // The next flush commits both writers' entries, so its number must be one each
        // of them waits for: a commit of it marks both committed.
        let (merged, m) = cache.freeze();
        assert_eq!(merged.len(), 2);
        assert!(
            m >= joined && m >= first,
            "merged map numbered {m}, writers wait for {first} and {joined}"
        );
        assert_eq!(cache.active_flush, m + 1);
    }
}
