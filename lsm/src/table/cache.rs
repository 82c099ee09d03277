//! The block cache: data blocks as read (checksum verified, searched in place) keyed
//! by (table number, block offset). Table files are read with O_DIRECT, so this cache
//! is the only copy of a table's blocks in memory: its capacity is the tree's read
//! memory, and it charges each block what the allocator really gave it.
//!
//! Built on `quick_cache` (sharded, weighted by bytes, S3-FIFO eviction) rather than
//! our own CLOCK cache: a new block enters a small probation queue and must be hit
//! again to reach the main one, so a scan walking many blocks once does not evict
//! the blocks that gets keep hitting; its shards lock briefly; its `memory_used`
//! reports the cache's own structures, which lets a test check the per-entry charge
//! below. `moka` was the other candidate: more machinery (timers, async, a
//! frequency sketch), more memory per entry, and more dependencies, for nothing the
//! tree needs.
//!
//! Index and filter blocks are not in it: each table's are decoded at open and
//! pinned for the table's life, so a get costs at most one data-block read per table
//! it probes, even on a cold cache. They are charged against the cache's capacity
//! (`pin`, `unpin`): the cache shrinks as they grow, and what the tree holds for reads
//! stays within `Options::block_cache_bytes` as long as the indexes and filters fit in
//! it (`Db::memory_usage` reports both).
//!
//! A program with one memory budget may lend the cache memory its write buffers do not
//! use for now (`Db::set_block_cache_loan`): the capacity grows by the loan, and taking
//! the loan back evicts down to the capacity at once, before the program spends that
//! memory elsewhere.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::Weighter;

use super::block::RawBlock as Block;

type Key = (u64, u64);

/// What one entry costs the cache besides its block: the key (16 bytes) and the
/// `Arc` (8) in the cache's entry slab with its queue links and hash (~32), its slot
/// in the hash table, and its share of the ghost queue (hashes of recently evicted
/// keys). Checked against `quick_cache`'s own count by a test below.
const ENTRY_OVERHEAD_BYTES: u64 = 96;

/// The smallest capacity the cache is shrunk to when pinned indexes and filters fill
/// its share: it then holds next to nothing. Not 0: `quick_cache` cannot grow the
/// queue of recently evicted keys back from a capacity of 0.
const CAPACITY_BYTES_MIN: u64 = 1;

#[derive(Clone)]
struct BlockWeighter;

impl Weighter<Key, Arc<Block>> for BlockWeighter {
    fn weight(&self, _key: &Key, block: &Arc<Block>) -> u64 {
        block.charge_bytes() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

pub(crate) struct BlockCache {
    /// None when the capacity is 0: every block read goes to the file.
    cache: Option<Cache<Key, Arc<Block>, BlockWeighter>>,
    capacity_bytes: u64,
    pinned_bytes: AtomicU64,
    /// Lent on top of the capacity for now (`set_loan`).
    loan_bytes: AtomicU64,
}

impl BlockCache {
    /// A cache of `capacity_bytes`; `block_bytes` (the tables' block size) sizes its
    /// tables for the number of blocks it will hold.
    pub fn new(capacity_bytes: usize, block_bytes: usize) -> BlockCache {
        let capacity_bytes = capacity_bytes as u64;
        let cache = (capacity_bytes > 0).then(|| {
            let per_block = block_bytes as u64 + ENTRY_OVERHEAD_BYTES;
            let blocks = (capacity_bytes / per_block).max(1);
            Cache::with_weighter(blocks as usize, capacity_bytes, BlockWeighter)
        });
        BlockCache {
            cache,
            capacity_bytes,
            pinned_bytes: AtomicU64::new(0),
            loan_bytes: AtomicU64::new(0),
        }
    }

    /// False when the cache was made with no capacity: nothing stays in it.
    pub fn is_enabled(&self) -> bool {
        self.cache.is_some()
    }

    pub fn get(&self, table: u64, offset: u64) -> Option<Arc<Block>> {
        self.cache.as_ref()?.get(&(table, offset))
    }

    pub fn insert(&self, table: u64, offset: u64, block: Arc<Block>) {
        if let Some(c) = &self.cache {
            c.insert((table, offset), block);
        }
    }

    /// Drops the blocks of a deleted table (its number is never reused, so this only
    /// frees memory early). Walks every entry: paid once per deleted table.
    pub fn evict_table(&self, table: u64) {
        if let Some(c) = &self.cache {
            c.retain(|k, _| k.0 != table);
        }
    }

    /// Charges `bytes` of pinned index and filter blocks against the capacity.
    pub fn pin(&self, bytes: u64) {
        let pinned = self.pinned_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.resize(pinned);
    }

    /// Gives back what `pin` charged for a table that is gone.
    pub fn unpin(&self, bytes: u64) {
        let pinned = self.pinned_bytes.fetch_sub(bytes, Ordering::AcqRel) - bytes;
        self.resize(pinned);
    }

    /// Lets the cache hold `bytes` more than its capacity until the next call; a
    /// smaller loan evicts down to the new capacity before returning.
    pub fn set_loan(&self, bytes: u64) {
        self.loan_bytes.store(bytes, Ordering::Release);
        self.resize(self.pinned_bytes.load(Ordering::Acquire));
    }

    fn resize(&self, pinned: u64) {
        if let Some(c) = &self.cache {
            // Concurrent pins may resize out of order for a moment; the next one
            // corrects it, and `pinned_bytes` itself is exact.
            let loan = self.loan_bytes.load(Ordering::Acquire);
            let cap = (self.capacity_bytes + loan).saturating_sub(pinned);
            c.set_capacity(cap.max(CAPACITY_BYTES_MIN));
        }
    }

    /// (bytes held, bytes it may hold now, pinned index and filter bytes).
    pub fn usage(&self) -> (u64, u64, u64) {
        let pinned = self.pinned_bytes.load(Ordering::Acquire);
        let (held, cap) = self
            .cache
            .as_ref()
            .map_or((0, 0), |c| (c.weight(), c.capacity()));
        (held, cap, pinned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(payload_bytes: usize) -> Arc<Block> {
        // One entry of a valid block, padded: a value of payload_bytes - 40 bytes.
        let mut b = super::super::block::BlockBuilder::new();
        let key = crate::ikey::encode(b"k", 1, crate::ikey::Kind::Put);
        b.add(&key, &vec![7u8; payload_bytes.saturating_sub(40)]);
        Arc::new(Block::new(b.finish()).unwrap())
    }

    #[test]
    fn holds_its_capacity_in_real_bytes_and_no_more() {
        let cache = BlockCache::new(1 << 20, 4096);
        for i in 0..1000 {
            cache.insert(1, i * 4096, block(4096));
            // Hit once: blocks that gets come back to are what the cache keeps.
            assert!(cache.get(1, i * 4096).is_some());
        }
        let (held, cap, _) = cache.usage();
        assert!(held <= cap && cap == 1 << 20, "{held} of {cap}");
        assert!(held > cap * 3 / 4, "the cache fills: {held} of {cap}");
        // The per-entry charge covers what quick_cache's structures really take.
        let c = cache.cache.as_ref().unwrap();
        let used = c.memory_used();
        let structures = (used.entries + used.map) as u64;
        let charged = c.len() as u64 * ENTRY_OVERHEAD_BYTES;
        assert!(
            structures <= charged,
            "cache structures {structures} bytes, charged {charged} for {} entries",
            c.len()
        );
    }

    #[test]
    fn pinned_bytes_shrink_the_capacity_and_come_back() {
        let cache = BlockCache::new(1 << 20, 4096);
        for i in 0..1000 {
            cache.insert(1, i * 4096, block(4096));
            cache.get(1, i * 4096);
        }
        cache.pin(768 << 10);
        let (held, cap, pinned) = cache.usage();
        assert_eq!((cap, pinned), (256 << 10, 768 << 10));
        assert!(held <= cap, "evicted down to the new capacity: {held}");
        cache.pin(1 << 20);
        let (_, cap, _) = cache.usage();
        assert!(cap < 4096, "no room for a block: {cap}");
        cache.unpin(1 << 20);
        cache.unpin(768 << 10);
        assert_eq!(cache.usage().1, 1 << 20);
        cache.evict_table(1);
        assert_eq!(cache.usage().0, 0);
    }

    #[test]
    fn a_loan_grows_the_capacity_and_taking_it_back_evicts_at_once() {
        let cache = BlockCache::new(1 << 20, 4096);
        cache.pin(256 << 10);
        cache.set_loan(1 << 20);
        assert_eq!(cache.usage().1, (2 << 20) - (256 << 10));
        for i in 0..1000 {
            cache.insert(1, i * 4096, block(4096));
            cache.get(1, i * 4096);
        }
        let (held, cap, _) = cache.usage();
        assert!(held > 1 << 20, "the loan is used: {held} of {cap}");
        cache.set_loan(0);
        let (held, cap, _) = cache.usage();
        assert_eq!(cap, (1 << 20) - (256 << 10));
        assert!(held <= cap, "back within the capacity: {held} of {cap}");
    }
}
