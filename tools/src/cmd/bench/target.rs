//! What a benchmark phase runs against: the engine in one of its modes, or (in
//! `hashkv compare`) a peer store. The phase driver sees only this interface, so every
//! store gets exactly the same operations, threads and timing.

use super::super::store::{
    dir_disk_bytes, read_kernel_io, sysfs_stat_path, KernelIoBytes, StoreResult,
};
use hashkv::Db;
use std::ops::Bound;
use std::path::PathBuf;

/// A store's cumulative counters, read before and after each phase. What "device" and
/// "LSM" mean is up to the store (see `report.rs` for the engine's and the peers').
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounters {
    pub device_write_bytes: u64,
    pub device_read_bytes: u64,
    pub lsm_write_bytes: u64,
    pub gc_write_bytes: u64,
    pub gc_read_bytes: u64,
    pub gc_runs: u64,
    /// Of `gc_runs`, those a flush ran for want of room (writers waited for them).
    pub gc_runs_in_flush: u64,
    /// Values group GCs moved to the cold data log, and cold keys updates brought back
    /// (hashkv mode with hot/cold on).
    pub demotions: u64,
    pub promotions: u64,
    /// Bytes in the cold data log: a level, not a count (`since` keeps the later one).
    pub cold_log_bytes: u64,
    /// Live bytes in the cold data log: a level.
    pub cold_live_bytes: u64,
    /// GCs of cold log segments.
    pub cold_gc_runs: u64,
    /// Index lookups GC made (the vlog mode's validity checks; 0 in the hashkv mode).
    pub gc_index_lookups: u64,
    /// Kernel counters of the block devices the store runs on, if any.
    pub kernel: Option<KernelIoBytes>,
}

impl StoreCounters {
    /// Counts from `earlier` to `self`; a reading of the kernel's counters that is
    /// missing on either side is missing in the result. Saturating: a peer's count that
    /// is a difference of two counters (RocksDB's LSM bytes = all bytes - blob bytes)
    /// can dip while a flush has written blobs but not yet reported its total.
    pub fn since(&self, earlier: &StoreCounters) -> StoreCounters {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        StoreCounters {
            device_write_bytes: d(self.device_write_bytes, earlier.device_write_bytes),
            device_read_bytes: d(self.device_read_bytes, earlier.device_read_bytes),
            lsm_write_bytes: d(self.lsm_write_bytes, earlier.lsm_write_bytes),
            gc_write_bytes: d(self.gc_write_bytes, earlier.gc_write_bytes),
            gc_read_bytes: d(self.gc_read_bytes, earlier.gc_read_bytes),
            gc_runs: d(self.gc_runs, earlier.gc_runs),
            gc_runs_in_flush: d(self.gc_runs_in_flush, earlier.gc_runs_in_flush),
            demotions: d(self.demotions, earlier.demotions),
            promotions: d(self.promotions, earlier.promotions),
            cold_log_bytes: self.cold_log_bytes,
            cold_live_bytes: self.cold_live_bytes,
            cold_gc_runs: d(self.cold_gc_runs, earlier.cold_gc_runs),
            gc_index_lookups: d(self.gc_index_lookups, earlier.gc_index_lookups),
            kernel: self.kernel.zip(earlier.kernel).map(|(a, b)| KernelIoBytes {
                read_bytes: d(a.read_bytes, b.read_bytes),
                write_bytes: d(a.write_bytes, b.write_bytes),
            }),
        }
    }
}

/// One store under test. Shared by the phase's worker threads.
pub trait BenchTarget: Sync {
    /// The name in rows, plots and progress bars (a mode or a peer).
    fn name(&self) -> &str;
    fn put(&self, key: &[u8], value: &[u8]) -> StoreResult<()>;
    /// The length of the value stored under `key`, if any.
    fn get(&self, key: &[u8]) -> StoreResult<Option<usize>>;
    /// The lengths of the values of `keys`, in order: one batched read where the store
    /// has one, else (the default) a get per key.
    fn multi_get(&self, keys: &[&[u8]]) -> StoreResult<Vec<Option<usize>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }
    /// Reads up to `limit` entries from `from` on; returns their key + value bytes.
    fn scan(&self, from: &[u8], limit: usize) -> StoreResult<u64>;
    /// Makes every earlier write durable; ends every write phase, inside its time.
    fn flush(&self) -> StoreResult<()>;
    fn counters(&self) -> StoreCounters;
    /// Bytes the store occupies now (live values and metadata, or its directory).
    fn space_bytes(&self) -> u64;
}

/// The engine in one mode, on its devices and metadata directory.
pub struct EngineTarget {
    pub name: String,
    pub db: Db,
    pub devices: Vec<PathBuf>,
    pub metadata: PathBuf,
}

impl EngineTarget {
    /// Flushes, stops GC and closes the store.
    pub fn close(self) -> StoreResult<()> {
        Ok(self.db.close()?)
    }
}

/// Sum of the kernel's counters over the members that are block devices; `None` when
/// none is.
pub fn kernel_io(devices: &[PathBuf]) -> Option<KernelIoBytes> {
    let stats: Vec<PathBuf> = devices.iter().filter_map(|d| sysfs_stat_path(d)).collect();
    if stats.is_empty() {
        return None;
    }
    let mut sum = KernelIoBytes::default();
    for s in stats {
        let k = read_kernel_io(&s)?;
        sum.read_bytes += k.read_bytes;
        sum.write_bytes += k.write_bytes;
    }
    Some(sum)
}

impl BenchTarget for EngineTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn put(&self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        Ok(self.db.put(key, value)?)
    }

    fn get(&self, key: &[u8]) -> StoreResult<Option<usize>> {
        Ok(self.db.get(key)?.map(|v| v.len()))
    }

    fn multi_get(&self, keys: &[&[u8]]) -> StoreResult<Vec<Option<usize>>> {
        let values = self.db.multi_get(keys)?;
        Ok(values.into_iter().map(|v| v.map(|v| v.len())).collect())
    }

    fn scan(&self, from: &[u8], limit: usize) -> StoreResult<u64> {
        let mut read = 0u64;
        for item in self
            .db
            .scan(Bound::Included(from), Bound::Unbounded)?
            .limit(limit)
        {
            let (k, v) = item?;
            read += (k.len() + v.len()) as u64;
        }
        Ok(read)
    }

    fn flush(&self) -> StoreResult<()> {
        Ok(self.db.flush()?)
    }

    fn counters(&self) -> StoreCounters {
        let s = self.db.stats();
        StoreCounters {
            device_write_bytes: s.device_bytes_written(),
            device_read_bytes: s.device_bytes_read(),
            lsm_write_bytes: s.lsm_bytes_written,
            gc_write_bytes: s.gc_device_bytes_written,
            gc_read_bytes: s.gc_device_bytes_read,
            gc_runs: s.gc_runs,
            gc_runs_in_flush: s.gc_runs_in_flush,
            demotions: s.demotions,
            promotions: s.promotions,
            cold_log_bytes: s.cold_log_bytes,
            cold_live_bytes: s.cold_live_bytes,
            cold_gc_runs: s.cold_gc_runs,
            gc_index_lookups: s.gc_index_lookups,
            kernel: kernel_io(&self.devices),
        }
    }

    fn space_bytes(&self) -> u64 {
        self.db.stats().value_bytes_used + dir_disk_bytes(&self.metadata)
    }
}
