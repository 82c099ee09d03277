//! The memory budget: one option (`Options::memory_budget_bytes`) bounds what the
//! engine keeps in memory, split between its caches and buffers by the shares below.
//! Nothing relies on the OS page cache: values are read with O_DIRECT, and so are the
//! index's tables (hashkv_lsm's `fs` module says how its files stay out of the cache).
//!
//! What the budget does not cover is working memory that does not grow with the data
//! (the documented constant of README "Memory"): the program and its threads, the
//! allocator's slack, a GC's buffers (the collected group's segments and its
//! survivors: at most twice the chain limit of two main segments' worth), a compaction's
//! (readahead of 512 KiB per input table, a 1 MiB write buffer and 8 bytes of filter
//! hash per entry of the table being written) and a flush's.

use crate::options::Options;

/// Share of the budget for the index's reads: the LSM block cache, with the live
/// tables' index and filter blocks pinned inside it. The largest share: every get,
/// scan and (in the vlog mode) GC lookup goes through the index, and a block held
/// saves a device read for each of the ~70 keys (hashkv mode) it holds.
pub const BLOCK_CACHE_SHARE: f64 = 0.40;
/// Share for the index's write buffer: its memtables (the active one and those frozen
/// and waiting for their flush, `hashkv_lsm::MEMTABLES_HELD_MAX` of them). Larger
/// memtables flush less often and so compact less.
pub const MEMTABLES_SHARE: f64 = 0.15;
/// Share for the write cache and its flush (see `WRITE_CACHE_COPIES`). The write cache
/// is what batches each segment group's records into one aligned write: the hashkv
/// design's write path depends on it most, so it gets the second largest share.
pub const WRITE_SHARE: f64 = 0.35;
/// Share for the value cache: values of recent gets, like BlobDB's blob cache. The
/// smallest share: on a store 30x its memory a uniform read rarely hits, but a skewed
/// one (Zipf) does.
pub const VALUE_CACHE_SHARE: f64 = 0.10;
const _: () = assert!(
    (BLOCK_CACHE_SHARE + MEMTABLES_SHARE + WRITE_SHARE + VALUE_CACHE_SHARE - 1.0) < 1e-9
        && (BLOCK_CACHE_SHARE + MEMTABLES_SHARE + WRITE_SHARE + VALUE_CACHE_SHARE - 1.0) > -1e-9
);

/// Copies of the write cache's size the write share pays for: the active cache, the
/// frozen one being flushed, and the flush's records encoded into pooled buffers,
/// whose power-of-two sizes may take up to twice the records' bytes.
pub const WRITE_CACHE_COPIES: u64 = 4;

/// Smallest budget accepted: below it a memtable holds too few index entries to make
/// a table worth writing, and the write cache too few records to batch a group's.
pub const MEMORY_BUDGET_BYTES_MIN: u64 = 8 << 20;

/// Aligned buffers kept for reuse without a budget: at least this much (and at least
/// twice the write cache). A flush of a full cache, and a GC's survivors, take their
/// buffers from the pool.
const BUFFER_POOL_BYTES_MIN: u64 = 16 << 20;

/// What each cache and buffer may hold, in bytes, from the budget or (without one)
/// from the individual options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySplit {
    pub block_cache_bytes: u64,
    /// One memtable; the index holds up to `hashkv_lsm::MEMTABLES_HELD_MAX` of them.
    pub memtable_bytes: u64,
    pub write_cache_bytes: u64,
    /// Free aligned buffers kept for reuse.
    pub buffer_pool_bytes: u64,
    pub value_cache_bytes: u64,
}

impl MemorySplit {
    pub fn of(options: &Options) -> MemorySplit {
        let budget = options.memory_budget_bytes;
        if budget == 0 {
            return MemorySplit {
                block_cache_bytes: options.lsm.block_cache_bytes as u64,
                memtable_bytes: options.lsm.memtable_bytes_max as u64,
                write_cache_bytes: options.write_cache_bytes,
                buffer_pool_bytes: (2 * options.write_cache_bytes).max(BUFFER_POOL_BYTES_MIN),
                value_cache_bytes: options.value_cache_bytes,
            };
        }
        let share = |s: f64| (budget as f64 * s) as u64;
        let write_cache_bytes = share(WRITE_SHARE) / WRITE_CACHE_COPIES;
        MemorySplit {
            block_cache_bytes: share(BLOCK_CACHE_SHARE),
            memtable_bytes: share(MEMTABLES_SHARE) / hashkv_lsm::MEMTABLES_HELD_MAX as u64,
            write_cache_bytes,
            // The flush's encoded records, counted in the write share.
            buffer_pool_bytes: 2 * write_cache_bytes,
            value_cache_bytes: share(VALUE_CACHE_SHARE),
        }
    }
}

/// What the engine holds in memory by use, in bytes (`Db::memory_usage`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// The index: block cache, pinned indexes and filters, memtables.
    pub index: hashkv_lsm::MemoryUsage,
    /// Writes in the write cache (the active map and one being flushed), as the cache
    /// counts them (key, value and 128 bytes per entry: its hash-map slot and the
    /// allocator's headers).
    pub write_cache_bytes: u64,
    /// Free aligned buffers kept for the next flush or GC.
    pub buffer_pool_bytes: u64,
    /// Values in the value cache, with their entries.
    pub value_cache_bytes: u64,
}

impl MemoryUsage {
    /// Everything the budget covers.
    pub fn total_bytes(&self) -> u64 {
        self.index.total_bytes()
            + self.write_cache_bytes
            + self.buffer_pool_bytes
            + self.value_cache_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_split_whole_and_without_it_the_options_rule() {
        let mib = 1u64 << 20;
        let o = Options::default().with_memory_budget_bytes(64 * mib);
        let s = MemorySplit::of(&o);
        let held = s.block_cache_bytes
            + s.memtable_bytes * hashkv_lsm::MEMTABLES_HELD_MAX as u64
            + s.write_cache_bytes * WRITE_CACHE_COPIES
            + s.value_cache_bytes;
        assert!(
            held <= 64 * mib && held > 63 * mib,
            "{held} of {}",
            64 * mib
        );
        let plain = MemorySplit::of(&Options::default());
        assert_eq!(
            plain.write_cache_bytes,
            Options::default().write_cache_bytes
        );
        assert_eq!(plain.value_cache_bytes, 0);
        let w = Options::default().write_cache_bytes;
        assert_eq!(plain.buffer_pool_bytes, (2 * w).max(BUFFER_POOL_BYTES_MIN));
        let small = MemorySplit::of(&Options::default().with_write_cache_bytes(1 << 20));
        assert_eq!(small.buffer_pool_bytes, BUFFER_POOL_BYTES_MIN);
    }
}
