//! One write cache map: its keys and values copied into the chunks of an arena, and a
//! hash table of slots (hash, key, value) that finds them.
//!
//! A map of a `Vec` per key and per value cost two allocations per write, made by the
//! writer and freed by the commit thread when the map was released: malloc and free
//! were a fifth of the 1 KiB load's CPU (`_int_free`, `unlink_chunk`: frees of chunks
//! another thread's arena owns), and with 64 KiB values the heap trimmed after each
//! released map was faulted in again by the next. Here a write copies its key and
//! value into the map's current chunk, and a released map's chunks go back to a pool
//! ([`ChunkPool`]) that the next maps take them from: no allocation per record on the
//! write, flush or commit path, and no fresh pages once the pool is warm.
//!
//! A rewrite of a cached key (the write cache absorbs a Zipf workload's hot keys)
//! overwrites the old value in place when the new one fits its room, as every rewrite
//! of a fixed-size value does; a longer one is copied anew, and the old bytes stay
//! dead in the chunk until the map is released (the cache counts them,
//! [`Insert::added_bytes`]). A value given as a `Vec` (`Db::put_owned`) is kept as it
//! is, so that it is copied once, into the aligned buffer at flush; a borrowed value
//! longer than [`ARENA_VALUE_BYTES_MAX`] is copied into an aligned buffer of its own
//! by its writer, outside the cache's lock ([`AlignedValue`]), which the flush writes
//! to the device from where it is (`record_write.rs`): such a value too is copied
//! once. Those buffers come from the same pool: a released map gives its
//! values' buffers back, and the next large values are copied into them (a fresh
//! buffer per 64 KiB value cost a page fault per 4 KiB, half the writer's copy: 14.6%
//! of the 64 KiB load's CPU).

use crate::key_hash::HashedKey;
use hashbrown::HashTable;
use hashkv_blockdev::{AlignedBuf, BUFFER_ALIGN_BYTES};
use parking_lot::Mutex;
use std::sync::Arc;

/// A cache is cut into about this many chunks: one chunk's unused tail per map is then
/// a sixteenth of the cache, and a 16 MiB cache takes its chunks from the pool 16
/// times per map rather than once per write.
const CHUNKS_PER_CACHE: u64 = 16;
/// Chunk sizes are a power of two within these bounds: small caches (tests, tiny
/// budgets) still hold a few keys per chunk, and no chunk is larger than a device
/// write piece's worth of values.
const CHUNK_BYTES_MIN: usize = 4 << 10;
const CHUNK_BYTES_MAX: usize = 1 << 20;
/// Longest value copied into the arena: a write copies it under the cache's lock, where
/// a 64 KiB value's copy (and the faults of a fresh chunk) made other writers wait (the
/// 64 KiB load's p99.9 rose from 4-9 ms to 9-23 ms in four runs). A longer one is
/// copied into an aligned buffer of its own by its writer before the lock
/// ([`ValueIn::for_cache`]), which the flush writes from (`record_write.rs`). 16 KiB:
/// a copy under the lock a quarter of that, and an aligned buffer's whole pages waste
/// at most a fifth of what a longer value holds (at 4 KiB, up to half: a 4 KiB + 1
/// byte value takes two pages). Other thresholds were not measured.
pub const ARENA_VALUE_BYTES_MAX: usize = 16 << 10;

/// Value buffers are pooled by the log2 of their capacity: one class per bit.
const VALUE_CLASSES: usize = usize::BITS as usize;

/// Caches' worth of memory the pool keeps at most. A map holds up to twice the cache
/// (a writer under backpressure waits only for the frozen map's placement), and the
/// commit thread releases maps in pairs as often as not: with one cache's worth kept,
/// half the next maps' large values took fresh buffers (1,841 misses in 2,880 values
/// of 16 KiB in `tests/allocations.rs`). The pool keeps only what released maps gave,
/// and the next maps take from it before they allocate, so the maps and the pool
/// together never hold more than the maps held before the release.
const POOL_CACHES_KEPT: u64 = 4;

/// Chunks and large values' buffers released maps gave back, for the next maps to
/// take, up to [`POOL_CACHES_KEPT`] caches' worth of both together.
#[derive(Debug)]
pub struct ChunkPool {
    chunk_bytes: usize,
    kept_bytes_max: usize,
    /// Whether a large value's writer takes its crc ([`AlignedValue::crc`]): only a
    /// store that writes values to a value store needs it (not the lsm mode).
    checksum_values: bool,
    free: Mutex<Free>,
}

#[derive(Debug)]
struct Free {
    chunks: Vec<Box<[u8]>>,
    /// Buffers of values longer than [`ARENA_VALUE_BYTES_MAX`], by the log2 of their
    /// capacity, so that a value finds one at least its length with one look. Each
    /// is unshared.
    values: Vec<Vec<Arc<AlignedValue>>>,
    /// The chunks' bytes and the value buffers' capacities.
    held_bytes: usize,
}

/// The pool class a value buffer of `buf_bytes` goes to, and a value looks in for
/// the whole pages it needs (what a new buffer for it would take): buffers there hold
/// at least 2^class bytes, and a value of a fixed size always finds its own size.
fn value_class(buf_bytes: usize) -> usize {
    buf_bytes.max(1).ilog2() as usize
}

/// The bytes a new aligned buffer for a value of `len` bytes takes: whole pages.
fn value_buf_bytes(len: usize) -> usize {
    len.max(1).next_multiple_of(BUFFER_ALIGN_BYTES)
}

impl ChunkPool {
    /// The pool of a write cache of `limit_bytes`; `checksum_values` if the store
    /// writes separated values to a value store, whose flush checksums them.
    pub fn for_cache(limit_bytes: u64, checksum_values: bool) -> Arc<ChunkPool> {
        let chunk_bytes = ((limit_bytes / CHUNKS_PER_CACHE) as usize)
            .next_power_of_two()
            .clamp(CHUNK_BYTES_MIN, CHUNK_BYTES_MAX);
        let kept_chunks = ((POOL_CACHES_KEPT * limit_bytes) as usize).div_ceil(chunk_bytes);
        Arc::new(ChunkPool {
            chunk_bytes,
            kept_bytes_max: kept_chunks * chunk_bytes,
            checksum_values,
            free: Mutex::new(Free {
                chunks: Vec::new(),
                values: (0..VALUE_CLASSES).map(|_| Vec::new()).collect(),
                held_bytes: 0,
            }),
        })
    }

    fn take(&self) -> Box<[u8]> {
        let pooled = {
            let mut free = self.free.lock();
            let chunk = free.chunks.pop();
            if chunk.is_some() {
                free.held_bytes -= self.chunk_bytes;
            }
            chunk
        };
        pooled.unwrap_or_else(|| vec![0u8; self.chunk_bytes].into_boxed_slice())
    }

    /// Keeps what it has room for of `chunks`; a long key's chunk of its own size is
    /// freed (a pooled chunk is always `chunk_bytes` long).
    fn give(&self, chunks: Vec<Box<[u8]>>) {
        let mut free = self.free.lock();
        for chunk in chunks {
            if chunk.len() != self.chunk_bytes
                || free.held_bytes + self.chunk_bytes > self.kept_bytes_max
            {
                continue;
            }
            free.held_bytes += self.chunk_bytes;
            free.chunks.push(chunk);
        }
    }

    /// A copy of `value` in a buffer a released map gave back if one of its class is
    /// free (replaced if shorter than `value`), else in a new one.
    pub fn copy_value(&self, value: &[u8]) -> Arc<AlignedValue> {
        let pooled = {
            let mut free = self.free.lock();
            let buf = free.values[value_class(value_buf_bytes(value.len()))].pop();
            if let Some(b) = &buf {
                free.held_bytes -= b.buf.len();
            }
            buf
        };
        let mut shared = pooled.unwrap_or_else(|| {
            Arc::new(AlignedValue {
                buf: AlignedBuf::new(value.len()),
                len: 0,
                crc: None,
            })
        });
        let v = Arc::get_mut(&mut shared).expect("pooled values are unshared");
        if v.buf.len() < value.len() {
            v.buf = AlignedBuf::new(value.len());
        }
        v.buf[..value.len()].copy_from_slice(value);
        v.len = value.len();
        v.crc = self
            .checksum_values
            .then(|| crc32c::crc32c(&v.buf[..value.len()]));
        shared
    }

    /// Keeps what it has room for of the value buffers `values`; one a device write
    /// still holds (it would not be, by the time its map is released) is left to it.
    fn give_values(&self, values: impl IntoIterator<Item = Arc<AlignedValue>>) {
        let mut values = values.into_iter().peekable();
        if values.peek().is_none() {
            return;
        }
        let mut free = self.free.lock();
        for mut v in values {
            let Some(unshared) = Arc::get_mut(&mut v) else {
                continue;
            };
            let bytes = unshared.buf.len();
            if free.held_bytes + bytes > self.kept_bytes_max {
                continue;
            }
            free.held_bytes += bytes;
            free.values[value_class(bytes)].push(v);
        }
    }

    /// Frees what the pool holds (the write side lends its idle memory,
    /// `memory::Loan`).
    pub fn clear(&self) {
        let (chunks, values) = {
            let mut free = self.free.lock();
            free.held_bytes = 0;
            let values: Vec<_> = free.values.iter_mut().map(std::mem::take).collect();
            (std::mem::take(&mut free.chunks), values)
        };
        drop((chunks, values));
    }

    /// Bytes the pool holds for the next maps.
    pub fn held_bytes(&self) -> u64 {
        self.free.lock().held_bytes as u64
    }
}

/// A value longer than the arena takes, copied by its writer into an aligned buffer
/// of its own: the flush writes it to the device from here, in a vectored write with
/// its record's header, where it starts on a sector (`record_write.rs`), and the map
/// shares it with those writes until they completed.
#[derive(Debug)]
pub struct AlignedValue {
    buf: AlignedBuf,
    len: usize,
    /// crc32c of the value, taken by its writer right after the copy, while the bytes
    /// are in its CPU's cache: the flush's record checksum extends its header's with
    /// it (`record::encode_head_into`) instead of reading the value again from memory
    /// (that pass was a fifth of the 64 KiB load's CPU once the copy was gone).
    /// `None` in the lsm mode, which never writes a value record.
    crc: Option<u32>,
}

impl AlignedValue {
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// crc32c of [`AlignedValue::bytes`], if its writer took it.
    pub fn crc(&self) -> Option<u32> {
        self.crc
    }
}

/// Bytes in the arena: `len` bytes at `offset` of chunk `chunk`.
#[derive(Debug, Clone, Copy)]
struct Span {
    chunk: u32,
    offset: u32,
    len: u32,
}

#[derive(Debug)]
enum Value {
    /// In the arena, with `room` bytes there that a rewrite may overwrite.
    Arena { span: Span, room: u32 },
    /// The writer's own buffer (`put_owned`).
    Owned(Vec<u8>),
    /// A copy too large for the arena, which the flush may write from.
    Aligned(Arc<AlignedValue>),
}

#[derive(Debug)]
struct Slot {
    hash: u64,
    key: Span,
    /// `None` is a delete.
    value: Option<Value>,
}

/// A value as a writer hands it to the cache.
#[derive(Debug)]
pub enum ValueIn<'a> {
    /// Copied into the arena.
    Borrowed(&'a [u8]),
    /// Kept as it is.
    Owned(Vec<u8>),
    /// Copied already, kept as it is.
    Aligned(Arc<AlignedValue>),
}

impl ValueIn<'_> {
    /// The value as the cache takes it: a borrowed one longer than
    /// [`ARENA_VALUE_BYTES_MAX`] copied into a buffer of its own, from `pool` (call
    /// before taking the cache's lock).
    pub fn for_cache(self, pool: &ChunkPool) -> Self {
        match self {
            ValueIn::Borrowed(v) if v.len() > ARENA_VALUE_BYTES_MAX => {
                ValueIn::Aligned(pool.copy_value(v))
            }
            other => other,
        }
    }

    /// The memory the cache holds for the value: an aligned value's whole pages.
    pub fn held_bytes(&self) -> usize {
        match self {
            ValueIn::Aligned(v) => v.buf.len(),
            other => other.as_slice().len(),
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            ValueIn::Borrowed(v) => v,
            ValueIn::Owned(v) => v,
            ValueIn::Aligned(v) => v.bytes(),
        }
    }
}

/// What an insert changed in the memory the map holds: the bytes it took (a new key's
/// key, a value copied into the arena or kept as given, an aligned value's whole pages)
/// and the bytes it gave back (an owned or aligned value it replaced). A value overwritten in place changes neither; one
/// replaced in the arena stays there, dead, until the map is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insert {
    pub new_key: bool,
    pub added_bytes: u64,
    pub freed_bytes: u64,
}

/// The chunks a map's keys and values are copied into.
#[derive(Debug)]
struct Arena {
    chunks: Vec<Box<[u8]>>,
    /// The chunk being filled (`chunks[filling]`), and the bytes used of it.
    filling: Option<usize>,
    filled_bytes: usize,
    pool: Arc<ChunkPool>,
}

impl Drop for Arena {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.chunks));
    }
}

impl Arena {
    fn bytes(&self, span: Span) -> &[u8] {
        let at = span.offset as usize;
        &self.chunks[span.chunk as usize][at..at + span.len as usize]
    }

    fn bytes_mut(&mut self, span: Span) -> &mut [u8] {
        let at = span.offset as usize;
        &mut self.chunks[span.chunk as usize][at..at + span.len as usize]
    }

    fn value_bytes<'m>(&'m self, value: &'m Option<Value>) -> Option<&'m [u8]> {
        value.as_ref().map(|v| match v {
            Value::Arena { span, .. } => self.bytes(*span),
            Value::Owned(v) => &v[..],
            Value::Aligned(v) => v.bytes(),
        })
    }

    /// Copies `bytes` in (`bytes` fit a chunk).
    fn copy_in(&mut self, bytes: &[u8]) -> Span {
        let chunk_bytes = self.pool.chunk_bytes;
        debug_assert!(bytes.len() <= chunk_bytes);
        let fits = self
            .filling
            .is_some_and(|_| self.filled_bytes + bytes.len() <= chunk_bytes);
        if !fits {
            self.chunks.push(self.pool.take());
            self.filling = Some(self.chunks.len() - 1);
            self.filled_bytes = 0;
        }
        let chunk = self.filling.expect("a chunk is being filled");
        let offset = self.filled_bytes;
        self.chunks[chunk][offset..offset + bytes.len()].copy_from_slice(bytes);
        self.filled_bytes += bytes.len();
        Span {
            chunk: chunk as u32,
            offset: offset as u32,
            len: bytes.len() as u32,
        }
    }

    fn store(&mut self, value: ValueIn<'_>) -> Value {
        match value {
            ValueIn::Borrowed(v) if v.len() <= self.pool.chunk_bytes => {
                let span = self.copy_in(v);
                Value::Arena {
                    span,
                    room: span.len,
                }
            }
            ValueIn::Borrowed(v) => Value::Aligned(self.pool.copy_value(v)),
            ValueIn::Owned(v) => Value::Owned(v),
            ValueIn::Aligned(v) => Value::Aligned(v),
        }
    }

    /// The bytes a value replaced or removed gives back (an owned or aligned one's;
    /// arena bytes stay dead in their chunk); an aligned value's buffer goes back to
    /// the pool.
    fn let_go(&self, value: Option<Value>) -> u64 {
        match value {
            Some(Value::Owned(v)) => v.len() as u64,
            Some(Value::Aligned(v)) => {
                let len = v.buf.len() as u64;
                self.pool.give_values([v]);
                len
            }
            _ => 0,
        }
    }

    /// Keys up to a chunk's size are copied in; the rare longer one (a cache smaller
    /// than a few keys) gets a chunk of its own.
    fn store_key(&mut self, key: &[u8]) -> Span {
        if key.len() <= self.pool.chunk_bytes {
            return self.copy_in(key);
        }
        self.chunks.push(key.to_vec().into_boxed_slice());
        Span {
            chunk: (self.chunks.len() - 1) as u32,
            offset: 0,
            len: key.len() as u32,
        }
    }
}

#[derive(Debug)]
pub struct CacheMap {
    slots: HashTable<Slot>,
    arena: Arena,
}

impl Default for CacheMap {
    /// A map with a pool of its own (tests).
    fn default() -> CacheMap {
        CacheMap::new(ChunkPool::for_cache(0, true))
    }
}

impl CacheMap {
    pub fn new(pool: Arc<ChunkPool>) -> CacheMap {
        CacheMap {
            slots: HashTable::new(),
            arena: Arena {
                chunks: Vec::new(),
                filling: None,
                filled_bytes: 0,
                pool,
            },
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// `Some(None)` is a cached delete, `None` not cached.
    pub fn get(&self, key: &HashedKey<'_>) -> Option<Option<&[u8]>> {
        let arena = &self.arena;
        let slot = self.slots.find(key.hash, |s| {
            s.hash == key.hash && arena.bytes(s.key) == key.key
        })?;
        Some(arena.value_bytes(&slot.value))
    }

    /// Every entry, in an order that stays the same while the map is not changed.
    pub fn iter(&self) -> impl Iterator<Item = (HashedKey<'_>, Option<&[u8]>)> + '_ {
        self.slots.iter().map(|s| {
            let key = HashedKey {
                hash: s.hash,
                key: self.arena.bytes(s.key),
            };
            (key, self.arena.value_bytes(&s.value))
        })
    }

    /// Each entry's aligned value, if it has one, in [`CacheMap::iter`]'s order: what
    /// a flush may write from where it is.
    pub fn aligned_values(&self) -> impl Iterator<Item = Option<&Arc<AlignedValue>>> + '_ {
        self.slots.iter().map(|s| match &s.value {
            Some(Value::Aligned(v)) => Some(v),
            _ => None,
        })
    }

    /// Sets `key` to `value` (`None`: a delete): over the old value in place when it
    /// fits the old value's room, found with one probe.
    pub fn insert(&mut self, key: HashedKey<'_>, value: Option<ValueIn<'_>>) -> Insert {
        let new_len = value.as_ref().map_or(0, ValueIn::held_bytes) as u64;
        let arena = &mut self.arena;
        let found = self.slots.find_mut(key.hash, |s| {
            s.hash == key.hash && arena.bytes(s.key) == key.key
        });
        let Some(slot) = found else {
            let slot = Slot {
                hash: key.hash,
                key: arena.store_key(key.key),
                value: value.map(|v| arena.store(v)),
            };
            self.slots.insert_unique(key.hash, slot, |s| s.hash);
            return Insert {
                new_key: true,
                added_bytes: key.key.len() as u64 + new_len,
                freed_bytes: 0,
            };
        };
        if let (Some(Value::Arena { span, room }), Some(ValueIn::Borrowed(v))) =
            (&mut slot.value, &value)
        {
            if v.len() as u32 <= *room {
                span.len = v.len() as u32;
                arena.bytes_mut(*span).copy_from_slice(v);
                return Insert {
                    new_key: false,
                    added_bytes: 0,
                    freed_bytes: 0,
                };
            }
        }
        // Arena bytes of the old value stay dead in their chunk: not given back.
        let freed_bytes = arena.let_go(slot.value.take());
        slot.value = value.map(|v| arena.store(v));
        Insert {
            new_key: false,
            added_bytes: new_len,
            freed_bytes,
        }
    }

    /// Removes `key`; the bytes it gives back (an owned or aligned value's), `None` if
    /// it was not cached. Arena bytes stay dead until the map is released.
    pub fn remove(&mut self, key: &HashedKey<'_>) -> Option<u64> {
        let arena = &self.arena;
        let entry = self
            .slots
            .find_entry(key.hash, |s| {
                s.hash == key.hash && arena.bytes(s.key) == key.key
            })
            .ok()?;
        let (slot, _) = entry.remove();
        Some(arena.let_go(slot.value))
    }
}

impl Drop for CacheMap {
    /// Large values' buffers go back to the pool (the chunks go with the arena).
    fn drop(&mut self) {
        let aligned = self.slots.drain().filter_map(|s| match s.value {
            Some(Value::Aligned(v)) => Some(v),
            _ => None,
        });
        self.arena.pool.give_values(aligned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_with_chunks_of(chunk_bytes: usize) -> CacheMap {
        CacheMap::new(ChunkPool::for_cache(
            chunk_bytes as u64 * CHUNKS_PER_CACHE,
            true,
        ))
    }

    fn put(map: &mut CacheMap, key: &[u8], value: &[u8]) -> Insert {
        map.insert(HashedKey::new(key), Some(ValueIn::Borrowed(value)))
    }

    fn get(map: &CacheMap, key: &[u8]) -> Option<Option<Vec<u8>>> {
        map.get(&HashedKey::new(key)).map(|v| v.map(<[u8]>::to_vec))
    }

    #[test]
    fn keys_and_values_are_copied_into_chunks_and_found_by_their_bytes() {
        let mut map = map_with_chunks_of(4096);
        for i in 0..100u32 {
            let done = put(&mut map, format!("key{i}").as_bytes(), &[i as u8; 100]);
            assert!(done.new_key);
        }
        assert_eq!(map.len(), 100);
        assert_eq!(
            map.arena.chunks.len(),
            3,
            "about 105 bytes a key, 38 a chunk"
        );
        for i in 0..100u32 {
            assert_eq!(
                get(&map, format!("key{i}").as_bytes()),
                Some(Some(vec![i as u8; 100]))
            );
        }
        assert_eq!(get(&map, b"key100"), None);
        map.insert(HashedKey::new(b"gone"), None);
        assert_eq!(get(&map, b"gone"), Some(None), "a cached delete");
        let mut seen: Vec<_> = map.iter().map(|(k, _)| k.key.to_vec()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 101);
    }

    #[test]
    fn a_rewrite_that_fits_is_made_in_place_and_a_longer_one_is_counted_anew() {
        let mut map = map_with_chunks_of(4096);
        let first = put(&mut map, b"k", &[1; 100]);
        assert_eq!((first.added_bytes, first.freed_bytes), (101, 0));
        let used = map.arena.filled_bytes;
        let same = put(&mut map, b"k", &[2; 100]);
        let shorter = put(&mut map, b"k", &[3; 60]);
        assert_eq!((same.added_bytes, shorter.added_bytes), (0, 0));
        assert_eq!(
            map.arena.filled_bytes, used,
            "no new bytes for a rewrite that fits"
        );
        assert_eq!(get(&map, b"k"), Some(Some(vec![3; 60])));
        let refilled = put(&mut map, b"k", &[4; 100]);
        assert_eq!(refilled.added_bytes, 0, "the room is the first value's");
        let longer = put(&mut map, b"k", &[5; 120]);
        assert_eq!(
            (longer.added_bytes, longer.freed_bytes),
            (120, 0),
            "the old room stays dead in its chunk"
        );
        assert_eq!(map.arena.filled_bytes, used + 120);
        assert_eq!(get(&map, b"k"), Some(Some(vec![5; 120])));
        let owned = map.insert(HashedKey::new(b"k"), Some(ValueIn::Owned(vec![5; 10])));
        assert_eq!((owned.added_bytes, owned.freed_bytes), (10, 0));
        let back = put(&mut map, b"k", &[6; 8]);
        assert_eq!(
            (back.added_bytes, back.freed_bytes),
            (8, 10),
            "a replaced owned value is freed"
        );
        assert_eq!(map.remove(&HashedKey::new(b"k")), Some(0));
        assert_eq!(map.remove(&HashedKey::new(b"k")), None);
        assert!(map.is_empty());
    }

    #[test]
    fn owned_and_oversized_values_are_kept_out_of_the_arena() {
        let mut map = map_with_chunks_of(4096);
        let owned = vec![7u8; 300];
        let at = owned.as_ptr();
        map.insert(HashedKey::new(b"owned"), Some(ValueIn::Owned(owned)));
        assert_eq!(
            map.get(&HashedKey::new(b"owned"))
                .unwrap()
                .unwrap()
                .as_ptr(),
            at
        );
        put(&mut map, b"large", &[8; 20_000]);
        assert_eq!(get(&map, b"large"), Some(Some(vec![8; 20_000])));
        let long_key = vec![b'x'; 5000];
        put(&mut map, &long_key, b"v");
        assert_eq!(get(&map, &long_key), Some(Some(b"v".to_vec())));
        assert_eq!(get(&map, b"owned"), Some(Some(vec![7; 300])));
        let pool = map.arena.pool.clone();
        drop(map);
        let pooled = pool.free.lock();
        assert!(
            !pooled.chunks.is_empty() && pooled.chunks.iter().all(|c| c.len() == 4096),
            "only whole chunks are pooled"
        );
        let values: Vec<usize> = pooled
            .values
            .iter()
            .flatten()
            .map(|v| v.buf.len())
            .collect();
        assert_eq!(
            values,
            [20_480],
            "the large value's aligned buffer is pooled, the owned 300 bytes not"
        );
    }

    #[test]
    fn a_released_maps_chunks_serve_the_next_map_up_to_the_pools_caches() {
        let pool = ChunkPool::for_cache(16 * 4096, true);
        assert_eq!(pool.chunk_bytes, 4096);
        let kept = POOL_CACHES_KEPT as usize * 16 * 4096;
        let mut first = CacheMap::new(pool.clone());
        for i in 0..2000u32 {
            put(&mut first, format!("key{i}").as_bytes(), &[0; 200]);
        }
        let taken = first.arena.chunks.len();
        assert!(taken * 4096 > kept, "{taken} chunks");
        let addresses: Vec<*const u8> = first.arena.chunks.iter().map(|c| c.as_ptr()).collect();
        drop(first);
        assert_eq!(pool.held_bytes() as usize, kept, "the pool's caches kept");
        let mut second = CacheMap::new(pool.clone());
        put(&mut second, b"k", b"v");
        assert!(
            addresses.contains(&second.arena.chunks[0].as_ptr()),
            "the next map takes a pooled chunk"
        );
        assert_eq!(pool.held_bytes() as usize, kept - 4096);
        assert_eq!(get(&second, b"k"), Some(Some(b"v".to_vec())));
    }

    #[test]
    fn a_released_maps_large_values_buffers_take_the_next_large_values() {
        let pool = ChunkPool::for_cache(16 * 4096, true);
        let large = |byte: u8| ValueIn::Aligned(pool.copy_value(&[byte; 20_000]));
        let mut first = CacheMap::new(pool.clone());
        let mut addresses = Vec::new();
        for i in 0..4u8 {
            let value = large(i);
            addresses.push(value.as_slice().as_ptr());
            first.insert(HashedKey::new(&[i]), Some(value));
        }
        assert_eq!(pool.held_bytes(), 0);
        put(&mut first, &[0], &[9; 10]);
        // Each value takes five aligned pages.
        assert_eq!(
            pool.held_bytes(),
            20_480,
            "a replaced value's buffer goes back"
        );
        drop(first);
        assert_eq!(
            pool.held_bytes(),
            4 * 20_480 + 4096,
            "four buffers and a chunk"
        );
        let mut second = CacheMap::new(pool.clone());
        for i in 0..5u8 {
            let value = large(i + 10);
            let at = value.as_slice().as_ptr();
            assert_eq!(addresses.contains(&at), i < 4, "value {i} at {at:?}");
            second.insert(HashedKey::new(&[i]), Some(value));
        }
        assert_eq!(get(&second, &[3]), Some(Some(vec![13; 20_000])));
        assert_eq!(pool.held_bytes(), 0, "the keys took the chunk");
        let copied = ValueIn::Borrowed(&[4; 20_000]).for_cache(&pool);
        assert!(
            matches!(copied, ValueIn::Aligned(_)),
            "copied before the lock"
        );
        let small = ValueIn::Borrowed(&[3; ARENA_VALUE_BYTES_MAX]).for_cache(&pool);
        assert!(
            matches!(small, ValueIn::Borrowed(_)),
            "a value the arena takes is copied under the lock, into a chunk"
        );
    }
}
