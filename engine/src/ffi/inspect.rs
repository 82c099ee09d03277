//! Looking at a store: the consistency check (`hashkv fsck`) and the counters.

use super::errors::{guard, Failure, HASHKV_E_CORRUPTION};
use super::open::{db_ref, HashkvDb};
use crate::CheckReport;
use std::ffi::{c_char, c_int};

/// Checks the whole store, as `hashkv fsck` does: every record's checksum, that each
/// record lies in its key's group, and that every index entry names a record that
/// reads back with its key.
///
/// Returns 0 when the store is clean, `HASHKV_E_CORRUPTION` with a report of the
/// damage (up to 100 descriptions) in `*errptr` when it is not, or another negative
/// code when the check itself could not read the store. Threads: any; writers that
/// need a flush wait while it runs.
///
/// # Safety
/// `db` is NULL (refused) or a live handle; `errptr` as for `hashkv_format`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_check(db: *mut HashkvDb, errptr: *mut *mut c_char) -> c_int {
    let body = || {
        // SAFETY: db as this function's caller promised.
        let report = unsafe { db_ref(db) }?.check()?;
        if report.is_clean() {
            return Ok(0);
        }
        Err(Failure {
            code: HASHKV_E_CORRUPTION,
            message: damage_report(&report),
        })
    };
    // SAFETY: errptr as this function's caller promised.
    unsafe { guard(errptr, body) }
}

fn damage_report(r: &CheckReport) -> String {
    let mut s = format!(
        "check found {} damaged items ({} keys, {} records scanned):",
        r.damage_count, r.keys, r.records_scanned
    );
    for d in &r.damage {
        s.push_str("\n  ");
        s.push_str(d);
    }
    if r.damage_count > r.damage.len() as u64 {
        s.push_str(&format!(
            "\n  ... and {} more",
            r.damage_count - r.damage.len() as u64
        ));
    }
    s
}

/// Counters of an open store, since it was opened (the space figures are current).
/// Fields are only ever appended, so a program built against an older header keeps
/// working: it passes its own `sizeof(hashkv_stats)`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct HashkvStats {
    /// Key and value bytes of puts, key bytes of deletes, as written by the user.
    pub user_bytes_written: u64,
    /// Puts and deletes (a batch counts each entry).
    pub user_ops: u64,
    /// Value-store bytes written by flushes (records and block padding).
    pub flush_device_bytes_written: u64,
    /// Value-store bytes written by garbage collection (survivors copied).
    pub gc_device_bytes_written: u64,
    /// Value-store bytes read by garbage collection.
    pub gc_device_bytes_read: u64,
    /// Value-store bytes read by gets and scans.
    pub read_device_bytes: u64,
    /// Garbage collections run.
    pub gc_runs: u64,
    /// Records garbage collection kept (copied forward).
    pub gc_records_kept: u64,
    /// Bytes of segments garbage collection freed, minus the bytes it wrote.
    pub gc_bytes_reclaimed: u64,
    /// Index lookups garbage collection made to learn whether a record is live (the
    /// vlog mode's cost; the hashkv mode makes none).
    pub gc_index_lookups: u64,
    /// Gets answered by the write cache.
    pub write_cache_hits: u64,
    /// Flushes of the write cache.
    pub flushes: u64,
    /// Bytes the index (LSM tree) wrote: log, flushes, compactions.
    pub lsm_bytes_written: u64,
    /// Bytes written to and read from the devices, all members together.
    pub device_bytes_written: u64,
    pub device_bytes_read: u64,
    /// Free and total log segments (the reserved space the mode manages).
    pub free_log_segments: u64,
    pub log_segments: u64,
    /// Bytes of the value space in use.
    pub value_bytes_used: u64,
    /// Gets whose value came from the value cache (no device read).
    pub value_cache_hits: u64,
    /// Values group GCs moved to the cold data log (hashkv mode, hotness on), and cold
    /// keys an update brought back to their group.
    pub demotions: u64,
    pub promotions: u64,
    /// GCs of a cold data log segment.
    pub cold_gc_runs: u64,
    /// Bytes of the cold data log's segments in use, and of its live records.
    pub cold_log_bytes: u64,
    pub cold_live_bytes: u64,
    /// Writes the pacer slowed while GC freed space or a flush was in flight, and the
    /// time they slept in all, in microseconds.
    pub paced_writes: u64,
    pub paced_micros: u64,
    /// Bytes of chains a group GC found read ahead by the GC before it (counted in
    /// `gc_device_bytes_read` when read), and bytes read ahead that no GC used.
    pub gc_prefetch_bytes_used: u64,
    pub gc_prefetch_bytes_unused: u64,
    /// Of `gc_runs`, those a flush ran because it found no room (writers waited).
    pub gc_runs_in_flush: u64,
}

impl From<&crate::Stats> for HashkvStats {
    fn from(s: &crate::Stats) -> HashkvStats {
        HashkvStats {
            user_bytes_written: s.user_bytes_written,
            user_ops: s.user_ops,
            flush_device_bytes_written: s.flush_device_bytes_written,
            gc_device_bytes_written: s.gc_device_bytes_written,
            gc_device_bytes_read: s.gc_device_bytes_read,
            read_device_bytes: s.read_device_bytes,
            gc_runs: s.gc_runs,
            gc_records_kept: s.gc_records_kept,
            gc_bytes_reclaimed: s.gc_bytes_reclaimed,
            gc_index_lookups: s.gc_index_lookups,
            write_cache_hits: s.write_cache_hits,
            flushes: s.flushes,
            lsm_bytes_written: s.lsm_bytes_written,
            device_bytes_written: s.device_bytes_written(),
            device_bytes_read: s.device_bytes_read(),
            free_log_segments: s.free_log_segments,
            log_segments: s.log_segments,
            value_bytes_used: s.value_bytes_used,
            value_cache_hits: s.value_cache_hits,
            demotions: s.demotions,
            promotions: s.promotions,
            cold_gc_runs: s.cold_gc_runs,
            cold_log_bytes: s.cold_log_bytes,
            cold_live_bytes: s.cold_live_bytes,
            paced_writes: s.paced_writes,
            paced_micros: s.paced_micros,
            gc_prefetch_bytes_used: s.gc_prefetch_bytes_used,
            gc_prefetch_bytes_unused: s.gc_prefetch_bytes_unused,
            gc_runs_in_flush: s.gc_runs_in_flush,
        }
    }
}

/// Fills `*stats` with the store's counters. `stats_bytes` is `sizeof(hashkv_stats)`
/// as the caller was compiled: hashkv writes that many bytes at most, and zeroes any
/// the caller knows of that this library does not.
///
/// Returns 0 or a negative code. Threads: any, concurrently with other calls.
///
/// # Safety
/// `db` is NULL (refused) or a live handle; `stats` is NULL (refused) or points to
/// `stats_bytes` writable bytes; `errptr` as for `hashkv_format`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_get_stats(
    db: *mut HashkvDb,
    stats: *mut HashkvStats,
    stats_bytes: usize,
    errptr: *mut *mut c_char,
) -> c_int {
    // SAFETY: db, stats and errptr as this function's caller promised.
    unsafe {
        fill_sized(db, stats, stats_bytes, "stats", errptr, |db| {
            HashkvStats::from(&db.stats())
        })
    }
}

/// What an open store holds in memory by use, in bytes: what
/// `hashkv_options_set_memory_budget_bytes` bounds (README, "Memory"). Fields are only
/// ever appended, as `hashkv_stats`'s.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct HashkvMemoryUsage {
    /// Everything below that the budget covers (all but `read_buffer_bytes`).
    pub total_bytes: u64,
    /// The index's block cache: blocks held, and what it may hold (its share and any
    /// loan, less the pinned index and filter blocks).
    pub block_cache_bytes: u64,
    pub block_cache_capacity_bytes: u64,
    /// Index and filter blocks of the index's live tables, held while they live.
    pub pinned_index_filter_bytes: u64,
    /// The index's active and frozen memtables.
    pub memtable_bytes: u64,
    /// Writes in the write cache.
    pub write_cache_bytes: u64,
    /// Free aligned buffers kept for the next flush or GC.
    pub buffer_pool_bytes: u64,
    /// Free aligned buffers kept for the next value reads (outside the budget).
    pub read_buffer_bytes: u64,
    /// Values in the value cache.
    pub value_cache_bytes: u64,
    /// The write side's unused shares lent to the block cache while writes are idle.
    pub block_cache_loan_bytes: u64,
}

impl From<&crate::MemoryUsage> for HashkvMemoryUsage {
    fn from(m: &crate::MemoryUsage) -> HashkvMemoryUsage {
        HashkvMemoryUsage {
            total_bytes: m.total_bytes(),
            block_cache_bytes: m.index.block_cache_bytes,
            block_cache_capacity_bytes: m.index.block_cache_capacity_bytes,
            pinned_index_filter_bytes: m.index.pinned_index_filter_bytes,
            memtable_bytes: m.index.memtable_bytes,
            write_cache_bytes: m.write_cache_bytes,
            buffer_pool_bytes: m.buffer_pool_bytes,
            read_buffer_bytes: m.read_buffer_bytes,
            value_cache_bytes: m.value_cache_bytes,
            block_cache_loan_bytes: m.block_cache_loan_bytes,
        }
    }
}

/// Fills `*usage` with what the store holds in memory. `usage_bytes` is
/// `sizeof(hashkv_memory_usage)` as the caller was compiled, as for `hashkv_get_stats`.
///
/// Returns 0 or a negative code. Threads: any, concurrently with other calls.
///
/// # Safety
/// `db` is NULL (refused) or a live handle; `usage` is NULL (refused) or points to
/// `usage_bytes` writable bytes; `errptr` as for `hashkv_format`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_get_memory_usage(
    db: *mut HashkvDb,
    usage: *mut HashkvMemoryUsage,
    usage_bytes: usize,
    errptr: *mut *mut c_char,
) -> c_int {
    // SAFETY: db, usage and errptr as this function's caller promised.
    unsafe {
        fill_sized(db, usage, usage_bytes, "usage", errptr, |db| {
            HashkvMemoryUsage::from(&db.memory_usage())
        })
    }
}

/// A struct of `u64` fields only, `repr(C)`: it has no padding, so all its bytes are
/// initialised and may be copied out as they are.
///
/// # Safety
/// Implement only for such structs.
unsafe trait PlainU64s: Copy {}
// SAFETY: repr(C), u64 fields only.
unsafe impl PlainU64s for HashkvStats {}
// SAFETY: repr(C), u64 fields only.
unsafe impl PlainU64s for HashkvMemoryUsage {}

/// Writes `make(db)` to the `out_bytes` at `out`, as much of it as the caller's
/// struct holds, zeroing what the caller's struct has beyond it (a caller built
/// against a newer header).
///
/// # Safety
/// `db` is NULL (refused) or a live handle; `out` is NULL (refused) or points to
/// `out_bytes` writable bytes; `errptr` as for `hashkv_format`.
unsafe fn fill_sized<T: PlainU64s>(
    db: *mut HashkvDb,
    out: *mut T,
    out_bytes: usize,
    what: &'static str,
    errptr: *mut *mut c_char,
    make: impl FnOnce(&crate::Db) -> T,
) -> c_int {
    let body = || {
        // SAFETY: db and out as this function's caller promised.
        let (db, out_slice) = unsafe {
            (
                db_ref(db)?,
                super::args::bytes_mut(out.cast(), out_bytes, what)?,
            )
        };
        if out.is_null() {
            return Err(Failure::invalid(format!("{what} is NULL")));
        }
        let value = make(db);
        // SAFETY: T is PlainU64s: no padding, every byte initialised.
        let mine = unsafe {
            std::slice::from_raw_parts((&value as *const T).cast::<u8>(), size_of::<T>())
        };
        let n = mine.len().min(out_slice.len());
        out_slice[..n].copy_from_slice(&mine[..n]);
        out_slice[n..].fill(0);
        Ok(0)
    };
    // SAFETY: errptr as this function's caller promised.
    unsafe { guard(errptr, body) }
}
