//! Counters the engine keeps, and the snapshot `Db::stats` returns.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Counters {
    pub user_bytes_written: AtomicU64,
    pub user_ops: AtomicU64,
    pub flush_device_bytes_written: AtomicU64,
    pub flush_value_bytes_spliced: AtomicU64,
    pub gc_device_bytes_written: AtomicU64,
    pub gc_device_bytes_read: AtomicU64,
    pub read_device_bytes: AtomicU64,
    pub gc_runs: AtomicU64,
    pub gc_runs_in_flush: AtomicU64,
    pub gc_records_kept: AtomicU64,
    pub gc_bytes_reclaimed: AtomicU64,
    pub gc_index_lookups: AtomicU64,
    pub gc_prefetch_bytes_used: AtomicU64,
    pub gc_prefetch_bytes_unused: AtomicU64,
    pub demotions: AtomicU64,
    pub promotions: AtomicU64,
    pub cold_gc_runs: AtomicU64,
    pub write_cache_hits: AtomicU64,
    pub value_cache_hits: AtomicU64,
    pub flushes: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
}

/// A point-in-time view of the engine's counters.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Key + value bytes of puts, key bytes of deletes, as the user wrote them.
    pub user_bytes_written: u64,
    pub user_ops: u64,
    /// Value-store bytes written by flushes (records and block padding).
    pub flush_device_bytes_written: u64,
    /// Of those, value bytes written from the write cache's buffers without a copy
    /// into the flush's (`record_write.rs`).
    pub flush_value_bytes_spliced: u64,
    /// Value-store bytes written by GC (survivors copied).
    pub gc_device_bytes_written: u64,
    /// Value-store bytes read by GC (the groups it scanned).
    pub gc_device_bytes_read: u64,
    /// Value-store bytes read by gets and scans.
    pub read_device_bytes: u64,
    pub gc_runs: u64,
    /// Of `gc_runs`, those a flush ran because it found no room: writers waited for
    /// them. The background GC and the pacer are there to keep this at 0.
    pub gc_runs_in_flush: u64,
    pub gc_records_kept: u64,
    /// Bytes of segments GC freed minus bytes it wrote.
    pub gc_bytes_reclaimed: u64,
    /// Index lookups GC made to learn whether a record is live (vlog mode only: the
    /// hashkv mode's GC makes none).
    pub gc_index_lookups: u64,
    /// Bytes of chains a group GC found read ahead by the GC before it (part of
    /// `gc_device_bytes_read`, counted when read), and bytes read ahead that no GC
    /// used (the chain changed, another group was collected, or the store went idle).
    pub gc_prefetch_bytes_used: u64,
    pub gc_prefetch_bytes_unused: u64,
    /// Values group GCs moved to the cold data log (hashkv mode, hotness on).
    pub demotions: u64,
    /// Cold keys an update brought back to their group, as their groups' GCs found.
    pub promotions: u64,
    /// GCs of a cold data log segment.
    pub cold_gc_runs: u64,
    /// Bytes of the cold data log's segments in use, and of its live records.
    pub cold_log_bytes: u64,
    pub cold_live_bytes: u64,
    pub write_cache_hits: u64,
    /// Gets whose value came from the value cache (no device read).
    pub value_cache_hits: u64,
    pub flushes: u64,
    /// Bytes the LSM tree wrote (WAL, flushes, compactions).
    pub lsm_bytes_written: u64,
    /// Per member device: bytes and operations as the device layer counted them.
    pub devices: Vec<hashkv_blockdev::CounterSnapshot>,
    pub free_log_segments: u64,
    pub log_segments: u64,
    pub value_bytes_used: u64,
    /// Aligned I/O buffers allocated because the engine's buffer pool had none of the
    /// size free (flush writes, GC reads and writes): flat once the pool holds what the
    /// work needs, instead of growing with every flush and GC.
    pub buffer_pool_allocations: u64,
    /// The same for value reads' buffers (gets, multi-gets, scans), from their own
    /// pool: flat once the pool holds what the reads in flight need.
    pub read_buffer_allocations: u64,
    /// Writes the pacer slowed while GC freed space or a flush was in flight
    /// (`gc/pacer.rs`), and the time they slept in all, in microseconds.
    pub paced_writes: u64,
    pub paced_micros: u64,
}

impl Stats {
    pub fn device_bytes_written(&self) -> u64 {
        self.devices.iter().map(|d| d.write_bytes).sum()
    }

    pub fn device_bytes_read(&self) -> u64 {
        self.devices.iter().map(|d| d.read_bytes).sum()
    }

    /// (value-store bytes written + LSM bytes written) / user bytes.
    pub fn write_amplification(&self) -> f64 {
        if self.user_bytes_written == 0 {
            return 0.0;
        }
        (self.device_bytes_written() + self.lsm_bytes_written) as f64
            / self.user_bytes_written as f64
    }
}

pub(crate) fn load(c: &AtomicU64) -> u64 {
    c.load(Relaxed)
}
