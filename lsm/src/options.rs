//! Tuning knobs of the tree. Defaults follow LevelDB/RocksDB practice scaled to the
//! engine's use: many small entries (keys -> value locations of 13-16 bytes).

use std::sync::Arc;

use crate::error::{LsmError, Result};
use crate::fs::{Fs, RealFs};

/// A manifest holds the edits of one run; rewriting it as one snapshot edit past 64 MiB
/// bounds its size (and the time to read it at open) in a long run, at the cost of
/// one rewrite per 64 MiB of edits.
pub(crate) const MANIFEST_BYTES_MAX_DEFAULT: u64 = 64 << 20;

#[derive(Clone, Debug)]
pub struct Options {
    /// A memtable larger than this is frozen and flushed to an L0 table. The tree holds
    /// up to [`crate::MEMTABLES_HELD_MAX`] memtables at once (the active one and those
    /// frozen and waiting for their flush): that many times this in memory.
    pub memtable_bytes_max: usize,
    /// Number of L0 tables that triggers an L0 -> L1 compaction. Default 8: each L0 -> L1
    /// compaction rewrites the L1 tables under L0 (all of L1, for random keys), so
    /// twice the L0 tables per compaction halve those rewrites; with 4, 20 M random
    /// inserts wrote 4.88x the user bytes, with 8 3.64x (`lsmbench --entries 20000000`,
    /// 2026-12). A get pays one Bloom filter probe per L0 table for it. From this many
    /// tables on, writes are paced to a share of compaction's drain rate
    /// (`l0_slowdown_trigger`).
    pub l0_compaction_trigger: usize,
    /// Number of L0 tables at which writes get the rate compaction drains L0 (measured;
    /// from the compaction trigger on they are paced to more of it, and to less of it
    /// as L0 grows towards the stop trigger: `db/throttle.rs`), and an L0 compaction
    /// goes before any other. Default 20, as RocksDB's.
    pub l0_slowdown_trigger: usize,
    /// Number of L0 tables at which writes wait until compaction catches up. Default 36,
    /// as RocksDB's: far enough above the trigger that one long L0 -> L1 compaction does
    /// not stop writers.
    pub l0_stop_trigger: usize,
    /// Each level below L1 may hold this many times the bytes of the level above.
    pub level_size_ratio: u64,
    /// Bytes L1 may hold before it is compacted into L2.
    pub level1_bytes_max: u64,
    /// A compaction output table is cut once it reaches this size (at a user key boundary).
    pub table_target_bytes: u64,
    /// Uncompressed size a data block is cut at.
    pub block_bytes: usize,
    /// Bloom filter bits per key; 10 gives about 1% false positives. 0 disables filters.
    pub bloom_bits_per_key: u32,
    /// Memory for reading tables: the block cache, which holds data blocks as read,
    /// plus the index and filter blocks of the live tables, pinned and charged against
    /// it. Tables are read with O_DIRECT, so nothing else caches them: 0 makes every
    /// data block read go to the file.
    pub block_cache_bytes: usize,
    pub create_if_missing: bool,
    pub error_if_exists: bool,
    /// Table files kept open at once (least recently used ones are closed beyond it).
    pub table_files_open_max: usize,
    /// Background threads running compactions (flushes have their own thread).
    pub compaction_threads: usize,
    /// A manifest that grows past this within one run is rewritten as one snapshot
    /// edit (a new manifest, then CURRENT switched to it).
    pub manifest_bytes_max: u64,
    /// The file system the tree's files live on: [`RealFs`] by default; tests put a
    /// `fault::FaultFs` here (feature `fault-injection`) to crash it and inject errors.
    pub fs: Arc<dyn Fs>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            memtable_bytes_max: 64 << 20,
            l0_compaction_trigger: 8,
            l0_slowdown_trigger: 20,
            l0_stop_trigger: 36,
            level_size_ratio: 10,
            level1_bytes_max: 256 << 20,
            table_target_bytes: 64 << 20,
            block_bytes: 4 << 10,
            bloom_bits_per_key: 10,
            block_cache_bytes: 64 << 20,
            create_if_missing: true,
            error_if_exists: false,
            table_files_open_max: 512,
            compaction_threads: 1,
            manifest_bytes_max: MANIFEST_BYTES_MAX_DEFAULT,
            fs: Arc::new(RealFs),
        }
    }
}

impl Options {
    pub(crate) fn validate(&self) -> Result<()> {
        let fail = |what: &str| {
            Err(LsmError::InvalidOptions {
                what: what.to_string(),
            })
        };
        if self.memtable_bytes_max < 1024 {
            return fail("memtable_bytes_max must be at least 1024");
        }
        if self.l0_compaction_trigger == 0 {
            return fail("l0_compaction_trigger must be at least 1");
        }
        if !(self.l0_compaction_trigger <= self.l0_slowdown_trigger
            && self.l0_slowdown_trigger <= self.l0_stop_trigger)
        {
            return fail("need l0_compaction_trigger <= l0_slowdown_trigger <= l0_stop_trigger");
        }
        if self.level_size_ratio < 2 {
            return fail("level_size_ratio must be at least 2");
        }
        if self.level1_bytes_max == 0 || self.table_target_bytes == 0 {
            return fail("level1_bytes_max and table_target_bytes must be positive");
        }
        if self.block_bytes < 64 || self.block_bytes > (1 << 24) {
            return fail("block_bytes must lie in 64..=16 MiB");
        }
        if self.bloom_bits_per_key > 64 {
            return fail("bloom_bits_per_key must be at most 64");
        }
        if self.compaction_threads == 0 {
            return fail("compaction_threads must be at least 1");
        }
        Ok(())
    }
}

/// Options of one write.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Return only once the write is durable (fdatasync of the WAL, shared by concurrent
    /// sync writers: group commit).
    pub sync: bool,
}
