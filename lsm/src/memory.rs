//! What the tree's memory goes to, counted as the allocator hands it out, so that the
//! engine's memory budget can be checked against what the process really holds.

/// Bytes glibc's malloc takes for a request of `requested` bytes: the request plus its
/// 8-byte chunk header, rounded up to 16 bytes, 32 at least (x86-64 and aarch64). Larger
/// requests than the mmap threshold (128 KiB and up) are rounded to pages instead,
/// which this undercounts by less than a page in 32.
pub fn heap_bytes(requested: usize) -> usize {
    if requested == 0 {
        return 0;
    }
    (requested + MALLOC_HEADER_BYTES)
        .next_multiple_of(MALLOC_ALIGN_BYTES)
        .max(MALLOC_CHUNK_BYTES_MIN)
}

/// glibc's chunk header (the size field) on 64-bit targets.
const MALLOC_HEADER_BYTES: usize = 8;
/// glibc's chunk alignment on 64-bit targets.
const MALLOC_ALIGN_BYTES: usize = 16;
/// glibc's smallest chunk on 64-bit targets.
const MALLOC_CHUNK_BYTES_MIN: usize = 32;

/// The tree's memory by use, in bytes (`Db::memory_usage`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Blocks in the block cache, with their cache entries, as charged against it.
    pub block_cache_bytes: u64,
    /// What the block cache may hold: `Options::block_cache_bytes` and any loan
    /// (`Db::set_block_cache_loan`) less the pinned indexes and filters (never below
    /// 0).
    pub block_cache_capacity_bytes: u64,
    /// Index and filter blocks of the live tables, decoded and held for as long as
    /// their table lives (so a get costs at most one data-block read per table it
    /// probes). Charged against the block cache's capacity.
    pub pinned_index_filter_bytes: u64,
    /// The active and frozen memtables (heap bytes of their runs).
    pub memtable_bytes: u64,
}

impl MemoryUsage {
    /// Everything above: the tree's share of the engine's memory budget.
    pub fn total_bytes(&self) -> u64 {
        self.block_cache_bytes + self.pinned_index_filter_bytes + self.memtable_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_bytes_rounds_as_glibc_does() {
        assert_eq!(heap_bytes(0), 0);
        assert_eq!(heap_bytes(1), 32);
        assert_eq!(heap_bytes(24), 32);
        assert_eq!(heap_bytes(25), 48);
        assert_eq!(heap_bytes(4096), 4112);
    }
}
