//! GC under pressure: a store whose live data fits is driven with many times its value
//! capacity in Zipf(0.99) updates. It must never report `StoreFull`, every key must read
//! back its latest value (deleted keys stay deleted), and GC must have run and
//! reclaimed space. Then the same under concurrency: writers on disjoint key sets and
//! readers/scanners while GC runs.

mod common;

use common::{check_value, key, mix, value, Zipf, KIB, MIB};
use hashkv::{Db, Error, Mode, Options};
use hashkv_blockdev::sim::{SimConfig, SimDevice};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

const KEYS: u32 = 2000;
const VALUE_BYTES: usize = 1024;
const DEVICE_BYTES: u64 = 24 * MIB;

fn options(mode: Mode, cache: u64) -> Options {
    let mut lsm = hashkv_lsm::Options::default();
    lsm.memtable_bytes_max = 1 << 20;
    lsm.table_target_bytes = 1 << 20;
    lsm.level1_bytes_max = 4 << 20;
    Options::default()
        .with_mode(mode)
        .with_main_segment_bytes(256 * KIB)
        .with_log_segment_bytes(16 * KIB)
        .with_write_cache_bytes(cache)
        .with_separation_threshold_bytes(128)
        .with_lsm(lsm)
}

fn uniform(s: &mut u64) -> f64 {
    *s = mix(*s);
    (*s >> 11) as f64 / (1u64 << 53) as f64
}

/// Loads every key, then writes `multiple` times the value capacity in Zipf updates
/// (1 in 50 a delete, 1 in 20 a small inline value), checking a sample as it goes.
fn zipf_updates(mode: Mode, keys: u32, cache: u64, multiple: u64, seed: u64) {
    zipf_updates_with(&options(mode, cache), keys, multiple, seed, 0.99);
}

/// `zipf_updates` with the given options and Zipf skew; returns the store's final
/// counters.
fn zipf_updates_with(o: &Options, keys: u32, multiple: u64, seed: u64, skew: f64) -> hashkv::Stats {
    let (mode, cache) = (o.mode, o.write_cache_bytes);
    let dev = Arc::new(SimDevice::new(SimConfig::new(DEVICE_BYTES, seed)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let db = Db::format_device(dev.clone(), dir.path(), o).unwrap();
    let capacity = db.layout().value_capacity_bytes();
    let mut latest: Vec<Option<Vec<u8>>> = vec![None; keys as usize];
    for i in 0..keys {
        let v = value(i, 0, VALUE_BYTES);
        db.put(&key(i), &v).unwrap();
        latest[i as usize] = Some(v);
    }
    db.flush().unwrap();
    let zipf = Zipf::new(keys, skew, seed);
    let mut rng = seed ^ 0x5eed;
    let target = multiple * capacity;
    let mut written = 0u64;
    let mut version = 1u32;
    // (GC runs, buffers allocated) once GC is under way; see the buffer check below.
    let mut warm: Option<(u64, u64)> = None;
    while written < target {
        let k = zipf.sample(uniform(&mut rng));
        version += 1;
        let r = mix(rng ^ u64::from(version)) % 100;
        let result = if r < 2 {
            latest[k as usize] = None;
            db.delete(&key(k))
        } else {
            let len = if r < 7 { 40 } else { VALUE_BYTES };
            let v = value(k, version, len);
            written += v.len() as u64;
            let res = db.put(&key(k), &v);
            latest[k as usize] = Some(v);
            res
        };
        if let Err(e) = result {
            let stats = db.stats();
            panic!(
                "cache {cache}: after {written} of {target} bytes: {e} ({}); {stats:?}",
                matches!(e, Error::StoreFull { .. })
            );
        }
        // Spot checks while GC runs: a hot key and a random one.
        if version.is_multiple_of(997) {
            let stats = db.stats();
            if warm.is_none() && stats.gc_runs >= GC_RUNS_WARM {
                warm = Some((stats.gc_runs, stats.buffer_pool_allocations));
            }
            for k in [
                zipf.sample(0.0),
                (mix(u64::from(version)) % u64::from(keys)) as u32,
            ] {
                let got = db.get(&key(k)).unwrap();
                assert!(
                    got == latest[k as usize],
                    "key {k} at version {version}: got {:?}",
                    got.as_deref().and_then(check_value)
                );
            }
        }
    }
    let check = |db: &Db| {
        for (k, v) in latest.iter().enumerate() {
            let got = db.get(&key(k as u32)).unwrap();
            assert!(
                got == *v,
                "cache {cache}: key {k}: expected {:?}, got {:?}",
                v.as_deref().and_then(check_value),
                got.as_deref().and_then(check_value)
            );
        }
        let live: Vec<(Vec<u8>, Vec<u8>)> = latest
            .iter()
            .enumerate()
            .filter_map(|(k, v)| v.clone().map(|v| (key(k as u32), v)))
            .collect();
        let scanned: Vec<(Vec<u8>, Vec<u8>)> = db
            .scan(Bound::Unbounded, Bound::Unbounded)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(scanned.len(), live.len(), "scan length");
        assert!(scanned == live, "scan differs from the model");
    };
    check(&db);
    let stats = db.stats();
    println!(
        "{}: cache {cache}: {written} bytes of updates on {capacity} bytes of value capacity: \
         gc_runs {} reclaimed {} gc read {} gc written {} free log {}/{} WA {:.2} \
         buffers allocated {}",
        mode.name(),
        stats.gc_runs,
        stats.gc_bytes_reclaimed,
        stats.gc_device_bytes_read,
        stats.gc_device_bytes_written,
        stats.free_log_segments,
        stats.log_segments,
        stats.write_amplification(),
        stats.buffer_pool_allocations
    );
    if mode != Mode::Lsm {
        assert!(stats.gc_runs > 0, "GC never ran: {stats:?}");
        assert!(
            stats.gc_bytes_reclaimed > 0,
            "GC reclaimed nothing: {stats:?}"
        );
    }
    if mode != Mode::Lsm {
        check_buffers_reused(warm, &stats);
    }
    if mode == Mode::VLog {
        assert!(stats.gc_index_lookups > 0, "vlog GC made no lookups");
    } else {
        assert_eq!(stats.gc_index_lookups, 0, "only the vlog GC asks the index");
    }
    assert!(
        stats.value_bytes_used <= capacity,
        "more bytes used than the capacity: {stats:?}"
    );
    db.close().unwrap();
    let db = Db::open_device(dev, dir.path(), o).unwrap();
    check(&db);
    db.close().unwrap();
    stats
}

/// GC runs after which the buffer pool holds what a GC needs (the first GCs and the
/// load's flushes fill it).
const GC_RUNS_WARM: u64 = 10;

/// Every GC reads its segments into buffers from the engine's pool and writes its
/// survivors from others: once GC is under way, those buffers come back and are taken
/// again, so fewer than one buffer per `GCS_PER_ALLOCATION_MIN` later GCs is new. A
/// group GC takes a buffer per segment, some 20-40 of them here (log-sized segments
/// since the pool), so without reuse there would be that many allocations per GC;
/// with it, measured 1 per 7-8 GCs under a loaded test run, the pool now and then
/// dropping a returned buffer while flushes hold more than their share. In session
/// 21's runs of this file: 0-45 over 290-1020 GCs, and once 81 over 278 (1 per 3.4,
/// which failed the earlier bound of 1 per 4) in a full workspace run; 1 per 2 still
/// tells reuse from none by a factor of 40 or more.
fn check_buffers_reused(warm: Option<(u64, u64)>, stats: &hashkv::Stats) {
    const GCS_PER_ALLOCATION_MIN: u64 = 2;
    let (gc_runs, allocations) = warm.expect("GC ran fewer than GC_RUNS_WARM times");
    let later_gcs = stats.gc_runs - gc_runs;
    let later_allocations = stats.buffer_pool_allocations - allocations;
    assert!(
        later_gcs >= 5 * GC_RUNS_WARM,
        "too few GCs after warming up to judge reuse: {stats:?}"
    );
    assert!(
        later_allocations * GCS_PER_ALLOCATION_MIN <= later_gcs,
        "{later_allocations} buffers allocated over {later_gcs} GCs after the first \
         {gc_runs}: GC buffers are not reused"
    );
}

#[test]
fn hashkv_zipf_updates_ten_times_capacity_with_write_cache() {
    zipf_updates(Mode::HashKv, KEYS, 256 * KIB, 10, 1);
}

/// Hot/cold on, a 20% reserve, live data half the capacity: the cold log grows into
/// the pool, and GCs run while free space is short must still make room (demotions
/// took it, and the store reported itself full, before they stopped above the flush
/// floor). Zipf 0.9: many keys go cold, and updates bring many back.
#[test]
fn hashkv_hot_cold_zipf_updates_ten_times_capacity_at_a_20_percent_reserve() {
    let o = options(Mode::HashKv, 256 * KIB)
        .with_hotness(true)
        .with_reserved_share(0.2);
    let stats = zipf_updates_with(&o, 10_000, 10, 5, 0.9);
    assert!(stats.demotions > 0 && stats.promotions > 0, "{stats:?}");
    // The cold log is collected too, not only filled.
    assert!(stats.cold_gc_runs > 0, "{stats:?}");
    // Each GC makes room for about a group's share of writes or more (measured: 0.8
    // GCs per share written); GCs whose demotions spent the room they freed ran 20
    // per share.
    let shares_written = stats.user_bytes_written / o.main_segment_bytes;
    assert!(
        stats.gc_runs <= GC_RUNS_PER_SHARE_WRITTEN_MAX * shares_written,
        "{} GCs for {shares_written} shares written: {stats:?}",
        stats.gc_runs
    );
}

/// See `hashkv_hot_cold_zipf_updates_ten_times_capacity_at_a_20_percent_reserve`.
const GC_RUNS_PER_SHARE_WRITTEN_MAX: u64 = 3;

#[test]
fn hashkv_zipf_updates_ten_times_capacity_without_write_cache() {
    zipf_updates(Mode::HashKv, KEYS, 0, 10, 2);
}

/// Live data near two thirds of the value capacity: GC must find room in groups (or
/// log chunks) that are mostly live.
#[test]
fn hashkv_zipf_updates_with_live_data_two_thirds_of_the_capacity() {
    zipf_updates(Mode::HashKv, 15_000, 256 * KIB, 4, 4);
}

#[test]
fn vlog_zipf_updates_ten_times_capacity_with_write_cache() {
    zipf_updates(Mode::VLog, KEYS, 256 * KIB, 10, 1);
}

#[test]
fn vlog_zipf_updates_ten_times_capacity_without_write_cache() {
    zipf_updates(Mode::VLog, KEYS, 0, 10, 2);
}

/// Live data near two thirds of the value capacity: GC must find room in groups (or
/// log chunks) that are mostly live.
#[test]
fn vlog_zipf_updates_with_live_data_two_thirds_of_the_capacity() {
    zipf_updates(Mode::VLog, 15_000, 256 * KIB, 4, 4);
}

#[test]
fn lsm_zipf_updates_ten_times_capacity_with_write_cache() {
    zipf_updates(Mode::Lsm, KEYS, 256 * KIB, 10, 1);
}

#[test]
fn lsm_zipf_updates_ten_times_capacity_without_write_cache() {
    zipf_updates(Mode::Lsm, KEYS, 0, 10, 2);
}

/// Live data near two thirds of the value capacity: GC must find room in groups (or
/// log chunks) that are mostly live.
#[test]
fn lsm_zipf_updates_with_live_data_two_thirds_of_the_capacity() {
    zipf_updates(Mode::Lsm, 15_000, 256 * KIB, 4, 4);
}

/// 4 writers on disjoint key sets and 2 readers (gets and scans) while GC runs. A
/// reader must never see a value older than one whose put had returned before its read
/// began, nor a damaged one; at the end every key has its last value.
fn concurrent_writers_and_readers_during_gc(mode: Mode) {
    const WRITERS: u32 = 4;
    let dev = Arc::new(SimDevice::new(SimConfig::new(DEVICE_BYTES, 3)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let o = options(mode, 64 * KIB);
    let db = Arc::new(Db::format_device(dev.clone(), dir.path(), &o).unwrap());
    let capacity = db.layout().value_capacity_bytes();
    // Acknowledged version per key (0 = the load).
    let acked: Arc<Vec<AtomicU32>> = Arc::new((0..KEYS).map(|_| AtomicU32::new(0)).collect());
    for i in 0..KEYS {
        db.put(&key(i), &value(i, 0, VALUE_BYTES)).unwrap();
    }
    db.flush().unwrap();
    let per_writer = 3 * capacity / u64::from(WRITERS);
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (db, acked) = (db.clone(), acked.clone());
        writers.push(std::thread::spawn(move || {
            // Keys k with k % WRITERS == w, Zipf-distributed among them.
            let n = KEYS / WRITERS;
            let zipf = Zipf::new(n, 0.99, u64::from(w));
            let mut rng = 77 + u64::from(w);
            let mut written = 0u64;
            let mut version = 0u32;
            while written < per_writer {
                let k = zipf.sample(uniform(&mut rng)) * WRITERS + w;
                version += 1;
                let v = value(k, version, VALUE_BYTES);
                written += v.len() as u64;
                if version.is_multiple_of(500) {
                    let mut b = hashkv::WriteBatch::new();
                    b.put(&key(k), &v);
                    db.write_sync(b).unwrap();
                } else {
                    db.put(&key(k), &v)
                        .unwrap_or_else(|e| panic!("writer {w} after {written} bytes: {e}"));
                }
                acked[k as usize].store(version, Ordering::Release);
            }
        }));
    }
    let mut readers = Vec::new();
    for r in 0..2u64 {
        let (db, acked, done, reads) = (db.clone(), acked.clone(), done.clone(), reads.clone());
        readers.push(std::thread::spawn(move || {
            let mut rng = 1000 + r;
            while !done.load(Ordering::Acquire) {
                rng = mix(rng);
                if r == 0 || rng % 8 != 0 {
                    let k = (rng % u64::from(KEYS)) as u32;
                    let floor = acked[k as usize].load(Ordering::Acquire);
                    let v = db
                        .get(&key(k))
                        .unwrap_or_else(|e| panic!("get {k} during GC: {e}"))
                        .unwrap_or_else(|| panic!("key {k} missing during GC"));
                    let (vk, ver) = check_value(&v).expect("damaged value");
                    assert_eq!(vk, k, "value of another key");
                    assert!(
                        ver >= floor,
                        "key {k}: version {ver} older than acked {floor}"
                    );
                } else {
                    // A scan of 100 keys from a random start.
                    let start = (rng >> 8) as u32 % KEYS;
                    let floors: Vec<u32> = (start..(start + 100).min(KEYS))
                        .map(|k| acked[k as usize].load(Ordering::Acquire))
                        .collect();
                    let (lo, hi) = (key(start), key(start + 100));
                    let mut expect = start;
                    for item in db
                        .scan(Bound::Included(&lo[..]), Bound::Excluded(&hi[..]))
                        .unwrap()
                    {
                        let (k, v) = item.unwrap_or_else(|e| panic!("scan during GC: {e}"));
                        assert_eq!(k, key(expect), "scan order or a missing key");
                        let (vk, ver) = check_value(&v).expect("damaged value in scan");
                        assert_eq!(vk, expect);
                        assert!(
                            ver >= floors[(expect - start) as usize],
                            "scan: old version"
                        );
                        expect += 1;
                    }
                    assert_eq!(expect, (start + 100).min(KEYS), "scan ended early");
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in writers {
        w.join().expect("writer panicked");
    }
    done.store(true, Ordering::Release);
    for r in readers {
        r.join().expect("reader panicked");
    }
    let check = |db: &Db| {
        for k in 0..KEYS {
            let ver = acked[k as usize].load(Ordering::Acquire);
            let got = db.get(&key(k)).unwrap();
            assert!(
                got.as_deref() == Some(&value(k, ver, VALUE_BYTES)[..]),
                "key {k}: expected version {ver}, got {:?}",
                got.as_deref().and_then(check_value)
            );
        }
    };
    check(&db);
    let stats = db.stats();
    println!(
        "{} reads; gc_runs {} reclaimed {}",
        reads.load(Ordering::Relaxed),
        stats.gc_runs,
        stats.gc_bytes_reclaimed
    );
    assert!(
        mode == Mode::Lsm || (stats.gc_runs > 0 && stats.gc_bytes_reclaimed > 0),
        "{stats:?}"
    );
    assert!(reads.load(Ordering::Relaxed) > 0);
    let db = Arc::try_unwrap(db).ok().expect("threads are done");
    db.close().unwrap();
    let db = Db::open_device(dev, dir.path(), &o).unwrap();
    check(&db);
    db.close().unwrap();
}

/// A scan that began before GC moved its values keeps returning exactly the state it
/// began on: the segments it reads are not reused while it runs.
fn long_scan_sees_its_snapshot_across_gc(mode: Mode) {
    let dev = Arc::new(SimDevice::new(SimConfig::new(DEVICE_BYTES, 5)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let o = options(mode, 64 * KIB);
    let db = Db::format_device(dev, dir.path(), &o).unwrap();
    let n = 600u32;
    for i in 0..n {
        db.put(&key(i), &value(i, 1, VALUE_BYTES)).unwrap();
    }
    db.flush().unwrap();
    let mut scan = db.scan(Bound::Unbounded, Bound::Unbounded).unwrap();
    let (k0, v0) = scan.next().unwrap().unwrap();
    assert_eq!((k0, v0), (key(0), value(0, 1, VALUE_BYTES)));
    // Overwrite everything a few times and collect every group we can.
    for version in 2..6u32 {
        for i in 0..n {
            db.put(&key(i), &value(i, version, VALUE_BYTES)).unwrap();
        }
    }
    db.flush().unwrap();
    let mut collected = 0;
    while collected < 200 && db.collect_garbage().unwrap() {
        collected += 1;
    }
    assert!(mode == Mode::Lsm || collected > 0, "no GC ran");
    // More writes land in whatever segments are free now.
    for i in 0..n {
        db.put(&key(i), &value(i, 9, VALUE_BYTES)).unwrap();
    }
    db.flush().unwrap();
    let mut expect = 1;
    for item in scan {
        let (k, v) = item.unwrap();
        assert_eq!(k, key(expect));
        assert!(
            v == value(expect, 1, VALUE_BYTES),
            "key {expect}: scan returned {:?} instead of its snapshot version 1",
            check_value(&v)
        );
        expect += 1;
    }
    assert_eq!(expect, n);
    // With the scan gone, GC proceeds and everything reads its latest version.
    let mut more = 0;
    while more < 200 && db.collect_garbage().unwrap() {
        more += 1;
    }
    for i in 0..n {
        assert_eq!(db.get(&key(i)).unwrap(), Some(value(i, 9, VALUE_BYTES)));
    }
    println!("GCs with the scan open: {collected}, after: {more}");
    db.close().unwrap();
}

#[test]
fn hashkv_concurrent_writers_and_readers_during_gc() {
    concurrent_writers_and_readers_during_gc(Mode::HashKv);
}

#[test]
fn hashkv_long_scan_sees_its_snapshot_across_gc() {
    long_scan_sees_its_snapshot_across_gc(Mode::HashKv);
}

#[test]
fn vlog_concurrent_writers_and_readers_during_gc() {
    concurrent_writers_and_readers_during_gc(Mode::VLog);
}

#[test]
fn vlog_long_scan_sees_its_snapshot_across_gc() {
    long_scan_sees_its_snapshot_across_gc(Mode::VLog);
}

#[test]
fn lsm_concurrent_writers_and_readers_during_gc() {
    concurrent_writers_and_readers_during_gc(Mode::Lsm);
}

#[test]
fn lsm_long_scan_sees_its_snapshot_across_gc() {
    long_scan_sees_its_snapshot_across_gc(Mode::Lsm);
}

/// Free log chunks before the flush that started the store's first GC, writing
/// `FLUSH_CHUNKS` chunks' worth of overwrites per flush and giving the background GC
/// a moment after each. A GC that ends only after the next flush's check is put down
/// to the flush before (it cannot have been started by a flush that had not run).
fn free_chunks_when_gc_starts(low_water_segments: u64) -> u64 {
    const FLUSH_CHUNKS: u64 = 4;
    let o = options(Mode::VLog, 0).with_gc_low_water_segments(low_water_segments);
    let dev = Arc::new(SimDevice::new(SimConfig::new(DEVICE_BYTES, 7)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let db = Db::format_device(dev, dir.path(), &o).unwrap();
    let per_flush = (FLUSH_CHUNKS * 16 * KIB / VALUE_BYTES as u64) as u32;
    let mut free_before_last_flush = None;
    for version in 0..10_000 {
        let before = db.stats();
        if before.gc_runs > 0 {
            return free_before_last_flush.expect("GC ran before any write");
        }
        free_before_last_flush = Some(before.free_log_segments);
        for i in 0..per_flush {
            db.put(&key(i), &value(i, version, VALUE_BYTES)).unwrap();
        }
        db.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        if db.stats().gc_runs > 0 {
            return before.free_log_segments;
        }
    }
    panic!("GC never started");
}

/// The store's first background GC starts at 1.5 times the low-water band
/// (`FIRST_GC_START_HEADROOM`), above where writes begin to be paced, so that its rate
/// is measured before writes are paced by it. Measured as the difference between two
/// bands, so that the reserves below the band cancel out: starting at the band itself,
/// a band wider by 128 chunks starts GC 128 chunks earlier; at 1.5 bands, 192. Each GC
/// seen a flush late (a loaded machine) moves one figure by 4 chunks; the bounds allow
/// 8 such.
#[test]
fn first_background_gc_starts_above_the_band_where_writes_are_paced() {
    let (narrow, wide) = (32, 160);
    let earlier =
        free_chunks_when_gc_starts(wide) as f64 - free_chunks_when_gc_starts(narrow) as f64;
    let band_difference = (wide - narrow) as f64;
    assert!(
        earlier >= 1.25 * band_difference && earlier <= 1.75 * band_difference,
        "GC started {earlier} chunks earlier with a band {band_difference} chunks wider"
    );
}

/// A reserve larger than the groups' chain limits let them hold (0.75): the groups
/// reach their limits before the pool runs low, and about together. Two writers'
/// flushes, refused for the same full group, must not each collect it (a second GC of
/// the fresh group reads and rewrites it to free nothing), and the background GC must
/// begin before the limits are reached (the chain band, which counts the room the
/// fullest groups leave). With live data half the groups' shares, a chain at its limit
/// is a quarter live, so GC needs to read 4/3 of a byte per byte written: measured
/// 1.33-1.35 with the band counting the sum of the groups' rooms, 1.13-1.19 with it
/// counting one group's, and 2.6-2.9 before both fixes (twice the GCs).
#[test]
fn with_a_reserve_past_the_chain_limits_gc_reads_little_more_than_it_frees_and_runs_ahead_of_flushes(
) {
    let o = options(Mode::HashKv, 64 * KIB).with_reserved_share(0.75);
    let dev = Arc::new(SimDevice::new(SimConfig::new(DEVICE_BYTES, 91)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let db = Db::format_device(dev, dir.path(), &o).unwrap();
    let layout = db.layout();
    let shares = u64::from(layout.group_count) * layout.main_segment_bytes;
    let keys = (shares / 2 / (VALUE_BYTES as u64 + 64)) as u32;
    let rounds = 12u32;
    std::thread::scope(|s| {
        for t in 0..2u32 {
            let db = &db;
            s.spawn(move || {
                for round in 0..rounds {
                    for i in (t..keys).step_by(2) {
                        db.put(&key(i), &value(i, round, VALUE_BYTES)).unwrap();
                    }
                }
            });
        }
    });
    let st = db.stats();
    let (read, user) = (st.gc_device_bytes_read, st.user_bytes_written);
    assert!(st.gc_runs > 0, "GC never ran");
    // The groups fill together: counted as the sum of their rooms, the band was
    // reached only when all were near their limits, and flushes ran 72 of 73 GCs
    // (writers waiting for each); counted as one group's, 0-3 of 81-83.
    assert!(
        st.gc_runs_in_flush * 5 < st.gc_runs,
        "{} of {} GCs ran in flushes",
        st.gc_runs_in_flush,
        st.gc_runs
    );
    assert!(
        (read as f64) < 1.6 * user as f64,
        "{} GCs read {read} bytes for {user} bytes written",
        st.gc_runs
    );
    for i in 0..keys {
        let v = db.get(&key(i)).unwrap().expect("every key was written");
        assert_eq!(check_value(&v), Some((i, rounds - 1)), "key {i}");
    }
}
