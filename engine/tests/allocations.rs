//! No heap allocation per record on the write path (issue "the write path"): a put
//! goes into the write cache's arena from an entry on the writer's stack, a batch
//! keeps its keys and copied values in one buffer, and a flush and its commit allocate
//! per flush (vectors of its records, its writes, its index batch), not per record.
//! Counted over the whole process, every thread, in every mode.

mod common;

use common::{format_sim, small_options, KIB};
use hashkv::{Db, Mode, WriteBatch};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A write path that allocated once per record would make two (with the free) per
/// record; measured: 0.2-0.4 for small values (per flush and per group of a flush, a
/// batch's buffer growing, each map's hash table growing).
const ALLOCATIONS_PER_RECORD_MAX: f64 = 1.0;
/// Entries per batch.
const BATCH_ENTRIES: usize = 100;

/// What one case writes: enough records for a dozen flushes of the cache or more.
struct Case {
    records: u32,
    value_bytes: usize,
    write_cache_bytes: u64,
    device_bytes: u64,
    /// A segment group's share of the device: a flush allocates per group it writes
    /// (its writes and placements, its segment-table entry), so a case keeps tens of
    /// records per group in a flush.
    main_segment_bytes: u64,
}

/// Small values go into the write cache's arena chunks.
const SMALL_VALUES: Case = Case {
    records: 24_000,
    value_bytes: 200,
    write_cache_bytes: 512 * KIB,
    device_bytes: 64 << 20,
    main_segment_bytes: 4 << 20,
};

fn key(round: u32, i: u32) -> Vec<u8> {
    format!("key{round}-{i:08}").into_bytes()
}

fn value(seed: u32, len: usize) -> Vec<u8> {
    // Separated in the modes that separate (`small_options`: 64 bytes and more).
    vec![(seed % 251) as u8; len]
}

/// Half the records through `put`, the rest through batches of copying puts and
/// deletes; then a durable flush.
fn write_round(db: &Db, keys: &[Vec<u8>], value: &[u8]) {
    let half = keys.len() / 2;
    for k in &keys[..half] {
        db.put(k, value).unwrap();
    }
    let mut batch = WriteBatch::new();
    for (n, k) in keys[half..].iter().enumerate() {
        if n % 10 == 9 {
            batch.delete(k);
        } else {
            batch.put(k, value);
        }
        if batch.len() == BATCH_ENTRIES {
            db.write(std::mem::take(&mut batch)).unwrap();
        }
    }
    db.write(batch).unwrap();
    db.flush().unwrap();
}

/// Writes a warm-up round, then counts every allocation, free and reallocation of
/// the process over a second round, in every mode.
fn count_per_record(case: &Case) {
    for (seed, mode) in Mode::ALL.iter().copied().enumerate() {
        let mut o = small_options()
            .with_mode(mode)
            .with_main_segment_bytes(case.main_segment_bytes)
            .with_log_segment_bytes(256 * KIB)
            .with_write_cache_bytes(case.write_cache_bytes);
        // The index's memtable holds every record written, so that no table is
        // written while counting: building tables is the index's background work,
        // not the write path.
        o.lsm.memtable_bytes_max = 256 << 20;
        let (_dev, _dir, db) = format_sim(case.device_bytes, seed as u64, &o);
        let v = value(seed as u32, case.value_bytes);
        // A first round fills the pools (cache chunks and value buffers, aligned
        // buffers, the memtable's runs) that later flushes reuse.
        let warm: Vec<_> = (0..case.records).map(|i| key(0, i)).collect();
        write_round(&db, &warm, &v);
        let keys: Vec<_> = (0..case.records).map(|i| key(1, i)).collect();
        let flushes_before = db.stats().flushes;
        let region = Region::new(GLOBAL);
        write_round(&db, &keys, &v);
        let change = region.change();
        let flushes = db.stats().flushes - flushes_before;
        let counted = change.allocations + change.deallocations + change.reallocations;
        let per_record = counted as f64 / case.records as f64;
        eprintln!(
            "{mode:?}, {} B values: {} allocations, {} frees, {} reallocations for {} \
             records in {flushes} flushes ({per_record:.3} a record), {} bytes allocated",
            case.value_bytes,
            change.allocations,
            change.deallocations,
            change.reallocations,
            case.records,
            change.bytes_allocated,
        );
        assert!(flushes >= 8, "{mode:?}: only {flushes} flushes");
        assert!(
            per_record <= ALLOCATIONS_PER_RECORD_MAX,
            "{mode:?}, {} B values: {counted} allocations and frees for {} records",
            case.value_bytes,
            case.records
        );
        db.close().unwrap();
    }
}

/// One test: the counts are the whole process's, so no other test may run beside it.
/// (Values longer than the arena takes are copied into aligned buffers the maps pool:
/// `cache_map.rs`'s tests.)
#[test]
fn the_write_path_allocates_per_flush_not_per_record_in_every_mode() {
    count_per_record(&SMALL_VALUES);
}
