//! Counters the engine reads to report the LSM tree's share of write amplification.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::version::LEVELS;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes appended to write-ahead logs (record framing included).
    pub wal_bytes_written: u64,
    /// Bytes of L0 tables written by memtable flushes.
    pub flush_bytes_written: u64,
    /// Bytes of tables written by compactions, indexed by output level.
    pub compaction_bytes_written: Vec<u64>,
    /// Bytes of tables read by compactions.
    pub compaction_bytes_read: u64,
    /// Bytes of tables read from files by gets and iterators (block cache misses).
    pub bytes_read: u64,
    /// Bytes appended to manifests (version edits).
    pub manifest_bytes_written: u64,
    pub table_count_per_level: Vec<usize>,
    pub table_bytes_per_level: Vec<u64>,
    /// Writes that waited for compaction (L0 at the stop trigger or memtables full).
    pub write_stalls: u64,
    /// Writes paced because L0 held at least the compaction trigger's tables
    /// (`db/throttle.rs`; the first of a burst may go at once). Counted from the
    /// compaction trigger since 2026-12-02 (was the slowdown trigger), so any L0
    /// compaction's backlog counts, not only one falling behind.
    pub write_slowdowns: u64,
    /// fdatasync calls on WALs; fewer than sync writes when group commit shares them.
    pub wal_syncs: u64,
    pub flushes: u64,
    pub compactions: u64,
    /// Compactions done by moving a table to the next level without rewriting it.
    pub trivial_moves: u64,
    pub block_cache_hits: u64,
    pub block_cache_misses: u64,
    /// Bytes of keys and values submitted by users (puts and deletes).
    pub user_bytes_written: u64,
}

impl Stats {
    /// Every byte the tree wrote to files: WAL, flushes, compactions, manifest.
    pub fn total_bytes_written(&self) -> u64 {
        self.wal_bytes_written
            + self.flush_bytes_written
            + self.compaction_bytes_written.iter().sum::<u64>()
            + self.manifest_bytes_written
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub wal_bytes_written: AtomicU64,
    pub flush_bytes_written: AtomicU64,
    pub compaction_bytes_written: [AtomicU64; LEVELS],
    pub compaction_bytes_read: AtomicU64,
    pub bytes_read: AtomicU64,
    pub manifest_bytes_written: AtomicU64,
    pub write_stalls: AtomicU64,
    pub write_slowdowns: AtomicU64,
    pub wal_syncs: AtomicU64,
    pub flushes: AtomicU64,
    pub compactions: AtomicU64,
    pub trivial_moves: AtomicU64,
    pub block_cache_hits: AtomicU64,
    pub block_cache_misses: AtomicU64,
    pub user_bytes_written: AtomicU64,
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub fn snapshot(&self) -> Stats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            wal_bytes_written: l(&self.wal_bytes_written),
            flush_bytes_written: l(&self.flush_bytes_written),
            compaction_bytes_written: self.compaction_bytes_written.iter().map(l).collect(),
            compaction_bytes_read: l(&self.compaction_bytes_read),
            bytes_read: l(&self.bytes_read),
            manifest_bytes_written: l(&self.manifest_bytes_written),
            table_count_per_level: Vec::new(),
            table_bytes_per_level: Vec::new(),
            write_stalls: l(&self.write_stalls),
            write_slowdowns: l(&self.write_slowdowns),
            wal_syncs: l(&self.wal_syncs),
            flushes: l(&self.flushes),
            compactions: l(&self.compactions),
            trivial_moves: l(&self.trivial_moves),
            block_cache_hits: l(&self.block_cache_hits),
            block_cache_misses: l(&self.block_cache_misses),
            user_bytes_written: l(&self.user_bytes_written),
        }
    }
}
