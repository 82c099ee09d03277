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

/// Records written in the counted stretch: enough for a dozen flushes of the cache.
const RECORDS: u32 = 24_000;
const WRITE_CACHE_BYTES: u64 = 512 * KIB;
/// Entries per batch.
const BATCH_ENTRIES: u32 = 100;
/// The most allocations, frees and reallocations the counted stretch may make per
/// record: a write path that allocated once per record would make two (with the
/// free). Measured: 0.2-0.4 (per flush and per group of a flush, a batch's buffer
/// growing, each map's hash table growing).
const ALLOCATIONS_PER_RECORD_MAX: f64 = 1.0;

fn key(round: u32, i: u32) -> Vec<u8> {
    format!("key{round}-{i:08}").into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    // Separated in the modes that separate (`small_options`: 64 bytes and more).
    vec![(i % 251) as u8; 200]
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
        if batch.len() as u32 == BATCH_ENTRIES {
            db.write(std::mem::take(&mut batch)).unwrap();
        }
    }
    db.write(batch).unwrap();
    db.flush().unwrap();
}

#[test]
fn the_write_path_allocates_per_flush_not_per_record_in_every_mode() {
    for (seed, mode) in Mode::ALL.iter().copied().enumerate() {
        // Segment groups of 4 MiB on 64 MiB: a flush allocates per group it writes
        // (its writes and placements, its segment-table entry), and a flush of a
        // full cache has tens of records per group.
        let mut o = small_options()
            .with_mode(mode)
            .with_main_segment_bytes(4 << 20)
            .with_log_segment_bytes(256 * KIB)
            .with_write_cache_bytes(WRITE_CACHE_BYTES);
        // The index's memtable holds every record written, so that no table is
        // written while counting: building tables is the index's background work,
        // not the write path.
        o.lsm.memtable_bytes_max = 64 << 20;
        let (_dev, _dir, db) = format_sim(64 << 20, seed as u64, &o);
        let v = value(seed as u32);
        // A first round fills the pools (cache chunks, aligned buffers, the
        // memtable's runs) that later flushes reuse.
        let warm: Vec<_> = (0..RECORDS).map(|i| key(0, i)).collect();
        write_round(&db, &warm, &v);
        let keys: Vec<_> = (0..RECORDS).map(|i| key(1, i)).collect();
        let flushes_before = db.stats().flushes;
        let region = Region::new(GLOBAL);
        write_round(&db, &keys, &v);
        let change = region.change();
        let flushes = db.stats().flushes - flushes_before;
        let counted = change.allocations + change.deallocations + change.reallocations;
        let per_record = counted as f64 / RECORDS as f64;
        eprintln!(
            "{mode:?}: {} allocations, {} frees, {} reallocations for {RECORDS} records \
             in {flushes} flushes ({per_record:.3} a record)",
            change.allocations, change.deallocations, change.reallocations
        );
        assert!(flushes >= 8, "{mode:?}: only {flushes} flushes");
        assert!(
            per_record <= ALLOCATIONS_PER_RECORD_MAX,
            "{mode:?}: {counted} allocations and frees for {RECORDS} records"
        );
        db.close().unwrap();
    }
}
