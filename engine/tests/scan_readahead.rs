//! Scans with the next batch's reads in flight (on a file: io_uring, read-ahead rings)
//! return exactly what they did without: every key in order with its value, for any
//! batch size, with the write cache merged in; a scan that lives across many GCs
//! returns the state it began on while other scans stop early with reads in flight.

mod common;

use common::{check_value, disk_dir, key, mix, small_options, value, verify, Model, MIB};
use hashkv::{Db, Mode, Options};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

const DEVICE_BYTES: u64 = 24 * MIB;
const VALUE_BYTES: usize = 1000;

fn file_store(dir: &Path, o: &Options) -> (Vec<PathBuf>, PathBuf, Db) {
    let devs = vec![dir.join("dev.img")];
    let meta = dir.join("meta");
    let o = o.clone().with_create_device_bytes(Some(DEVICE_BYTES));
    let db = Db::format(&devs, &meta, &o).unwrap();
    (devs, meta, db)
}

/// The pairs of `model` in `[lo, hi)`.
fn model_range(model: &Model, lo: &[u8], hi: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    if lo >= hi {
        return Vec::new();
    }
    model
        .range(lo.to_vec()..hi.to_vec())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn scan_range(db: &Db, lo: &[u8], hi: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.scan(Bound::Included(lo), Bound::Excluded(hi))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// Inline and stored values, deletes, and writes only the write cache holds: every
/// batch size returns the model, whole and in ranges, and so do partly consumed
/// scans dropped with reads in flight.
fn scans_match_the_model_for_every_batch_size(mode: Mode) {
    let dir = disk_dir();
    let o = small_options().with_mode(mode);
    let (devs, meta, db) = file_store(dir.path(), &o);
    let mut model = common::load(&db, 800);
    for i in (0..800u32).step_by(9) {
        db.delete(&key(i)).unwrap();
        model.remove(&key(i));
    }
    db.close().unwrap();
    for readahead in [1, 2, 7, 64, 1000] {
        let o = o.clone().with_scan_readahead_max(readahead);
        let db = Db::open(&devs, &meta, &o).unwrap();
        // Writes and deletes that stay in the write cache, between stored keys.
        for i in (5..800u32).step_by(41) {
            let v = value(i, readahead as u32, 300);
            db.put(&key(i), &v).unwrap();
            model.insert(key(i), v);
        }
        db.delete(&key(1)).unwrap();
        model.remove(&key(1));
        verify(&db, &model);
        for (lo, hi) in [(0, 800), (13, 14), (100, 371), (799, 900), (400, 300)] {
            assert_eq!(
                scan_range(&db, &key(lo), &key(hi)),
                model_range(&model, &key(lo), &key(hi)),
                "readahead {readahead}: [{lo}, {hi})"
            );
        }
        for take in [0, 1, readahead, readahead + 1, 3 * readahead] {
            let mut scan = db.scan(Bound::Unbounded, Bound::Unbounded).unwrap();
            let got: Vec<_> = scan.by_ref().take(take).map(|r| r.unwrap()).collect();
            let want: Vec<_> = model.clone().into_iter().take(take).collect();
            assert_eq!(got, want, "readahead {readahead}: the first {take}");
            drop(scan);
        }
        db.flush().unwrap();
        for limit in [0, 1, readahead, readahead + 1, 3 * readahead] {
            let read_before = db.stats().read_device_bytes;
            let scan = db
                .scan(Bound::Included(&key(200)), Bound::Unbounded)
                .unwrap();
            let got: Vec<_> = scan.limit(limit).map(|r| r.unwrap()).collect();
            let want: Vec<_> = model
                .range(key(200)..)
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(got, want, "readahead {readahead}: limit {limit}");
            // No value past the last one returned is read: at most a record's blocks
            // (its size rounded up to a block at each end) per pair.
            let read = db.stats().read_device_bytes - read_before;
            let per_pair_max = (VALUE_BYTES + 4096).next_multiple_of(4096) as u64;
            assert!(
                read <= limit as u64 * per_pair_max,
                "readahead {readahead}: limit {limit} read {read} bytes"
            );
        }
        db.close().unwrap();
    }
}

test_in_modes!(scans_match_the_model_for_every_batch_size);

/// A scan consumed slowly while its values are overwritten and collected again and
/// again returns the version it began on; meanwhile another thread runs short scans
/// it drops early. Afterwards, and after a reopen, everything reads its newest value.
fn long_scan_across_gc_returns_its_snapshot(mode: Mode) {
    const KEYS: u32 = 1500;
    const STEP: usize = 100;
    let dir = disk_dir();
    let o = small_options()
        .with_mode(mode)
        .with_separation_threshold_bytes(128)
        .with_scan_readahead_max(16);
    let (devs, meta, db) = file_store(dir.path(), &o);
    let db = Arc::new(db);
    for i in 0..KEYS {
        db.put(&key(i), &value(i, 1, VALUE_BYTES)).unwrap();
    }
    db.flush().unwrap();
    let floor: Arc<Vec<AtomicU32>> = Arc::new((0..KEYS).map(|_| AtomicU32::new(1)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let short_scans = {
        let (db, floor, done) = (db.clone(), floor.clone(), done.clone());
        std::thread::spawn(move || short_scans_until(&db, &floor, &done, KEYS))
    };
    let mut scan = db.scan(Bound::Unbounded, Bound::Unbounded).unwrap();
    let (mut expect, mut version, mut collected) = (0u32, 1u32, 0u32);
    loop {
        let step: Vec<_> = scan.by_ref().take(STEP).map(|r| r.unwrap()).collect();
        for (k, v) in &step {
            assert_eq!(*k, key(expect), "scan order or a missing key");
            assert!(
                *v == value(expect, 1, VALUE_BYTES),
                "key {expect}: {:?} instead of the snapshot's version 1",
                check_value(v)
            );
            expect += 1;
        }
        if step.len() < STEP {
            break;
        }
        // Overwrite a tenth of the keys and collect once: the space GC frees is not
        // reused while the scan runs, so all the rounds' writes and GC copies must fit
        // in the free space together.
        version += 1;
        for i in (0..KEYS).filter(|i| i % 10 == version % 10) {
            db.put(&key(i), &value(i, version, VALUE_BYTES)).unwrap();
            floor[i as usize].store(version, Ordering::Release);
        }
        db.flush().unwrap();
        collected += u32::from(db.collect_garbage().unwrap());
    }
    drop(scan);
    done.store(true, Ordering::Release);
    let short = short_scans.join().expect("short scans panicked");
    assert_eq!(expect, KEYS);
    println!("{version} versions, {collected} GCs under the scan, {short} short scans");
    assert!(short > 0);
    assert!(
        mode == Mode::Lsm || collected > 0,
        "no GC ran under the scan"
    );
    let model: Model = (0..KEYS)
        .map(|i| {
            let v = floor[i as usize].load(Ordering::Acquire);
            (key(i), value(i, v, VALUE_BYTES))
        })
        .collect();
    while db.collect_garbage().unwrap() {}
    verify(&db, &model);
    Arc::try_unwrap(db)
        .ok()
        .expect("threads are done")
        .close()
        .unwrap();
    let db = Db::open(&devs, &meta, &o).unwrap();
    verify(&db, &model);
    db.close().unwrap();
}

test_in_modes!(long_scan_across_gc_returns_its_snapshot);

/// Scans of up to 100 keys from random starts, most dropped part way (reads of the
/// next batch in flight), until `done`; each value is its key's, undamaged, and no
/// older than the version written before the scan began. Returns the scans run.
fn short_scans_until(db: &Db, floor: &[AtomicU32], done: &AtomicBool, keys: u32) -> u32 {
    let (mut rng, mut scans) = (17u64, 0u32);
    while !done.load(Ordering::Acquire) || scans == 0 {
        rng = mix(rng);
        let start = (rng % u64::from(keys)) as u32;
        let take = (rng >> 32) as usize % 100;
        let floors: Vec<u32> = (start..keys)
            .take(take)
            .map(|k| floor[k as usize].load(Ordering::Acquire))
            .collect();
        let lo = key(start);
        let scan = db.scan(Bound::Included(&lo[..]), Bound::Unbounded).unwrap();
        for (n, item) in scan.take(take).enumerate() {
            let (k, v) = item.unwrap_or_else(|e| panic!("scan during GC: {e}"));
            let want = start + n as u32;
            assert_eq!(k, key(want), "scan order or a missing key");
            let (vk, ver) = check_value(&v).expect("damaged value in a scan");
            assert_eq!(vk, want, "value of another key");
            assert!(
                ver >= floors[n],
                "key {want}: version {ver} below {}",
                floors[n]
            );
        }
        scans += 1;
    }
    scans
}
