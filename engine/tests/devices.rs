//! One small workload (mixed value sizes with inline ones, overwrites, deletes, write
//! batches, scans with every kind of bound, flush, close, reopen, verify) on each kind
//! of device: a regular file, a loop device, and a stripe over three loop devices,
//! where every member must have received writes, and large values went out in
//! vectored writes from the write cache's buffers.
//!
//! Loop devices need root and losetup; elsewhere those tests print `skipped: <reason>`
//! and return. They are detached by a Drop guard, also when a test panics.

mod common;

use common::{disk_dir, key, loops, value, verify, Model, KIB, MIB};
use hashkv::{Db, Error, Options, Stats, WriteBatch};
use std::ops::Bound;
use std::path::{Path, PathBuf};

fn options() -> Options {
    let mut lsm = hashkv_lsm::Options::default();
    lsm.memtable_bytes_max = 128 << 10;
    lsm.table_target_bytes = 128 << 10;
    Options::default()
        .with_main_segment_bytes(MIB)
        .with_log_segment_bytes(64 * KIB)
        .with_write_cache_bytes(128 * KIB)
        .with_separation_threshold_bytes(100)
        .with_lsm(lsm)
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(&k[..]),
        Bound::Excluded(k) => Bound::Excluded(&k[..]),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn check_scans(db: &Db, model: &Model) {
    let (a, b) = (key(37), key(161));
    let bounds = |k: &Vec<u8>| {
        [
            Bound::Included(k.clone()),
            Bound::Excluded(k.clone()),
            Bound::Unbounded,
        ]
    };
    for lo in bounds(&a) {
        for hi in bounds(&b) {
            let expect: Vec<(Vec<u8>, Vec<u8>)> = model
                .range((lo.clone(), hi.clone()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let got: Vec<(Vec<u8>, Vec<u8>)> = db
                .scan(as_ref(&lo), as_ref(&hi))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            assert_eq!(got.len(), expect.len(), "scan {lo:?}..{hi:?}");
            assert!(got == expect, "scan {lo:?}..{hi:?} differs");
        }
    }
    // Empty ranges.
    assert_eq!(
        db.scan(Bound::Included(&b[..]), Bound::Excluded(&a[..]))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        db.scan(Bound::Included(&a[..]), Bound::Excluded(&a[..]))
            .unwrap()
            .count(),
        0
    );
}

/// The workload: formats `devices`, writes, checks, closes, reopens, checks, writes
/// more, closes and reopens again.
/// Returns the reopened store and the stats of the session before (its device
/// counters count that session's I/O).
fn workload(devices: &[PathBuf], meta: &Path, o: &Options) -> (Db, Stats) {
    let db = Db::format(devices, meta, o).unwrap();
    let layout = db.layout();
    println!("{layout:?}");
    let mut model = Model::new();
    let sizes = [10, 99, 100, 700, 4096, 20_000, 60_000];
    for i in 0..400u32 {
        let v = value(i, 1, sizes[(i as usize) % sizes.len()]);
        db.put(&key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    // Overwrites that change a value's kind (inline <-> separated) too.
    for i in (0..400u32).step_by(3) {
        let v = value(i, 2, sizes[(i as usize + 3) % sizes.len()]);
        db.put(&key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    for i in (0..400u32).step_by(7) {
        db.delete(&key(i)).unwrap();
        model.remove(&key(i));
    }
    // Batches: puts and deletes, including a key put and deleted in one batch.
    for b in 0..10u32 {
        let mut batch = WriteBatch::new();
        for j in 0..20u32 {
            let k = 400 + b * 20 + j;
            let v = value(k, 3, sizes[(k as usize) % sizes.len()]);
            batch.put(&key(k), &v);
            model.insert(key(k), v);
        }
        batch.delete(&key(b * 11 + 1));
        model.remove(&key(b * 11 + 1));
        batch
            .put(&key(900 + b), b"short-lived")
            .delete(&key(900 + b));
        if b % 2 == 0 {
            db.write(batch).unwrap();
        } else {
            db.write_sync(batch).unwrap();
        }
    }
    verify(&db, &model);
    check_scans(&db, &model);
    db.flush().unwrap();
    verify(&db, &model);
    // The 20,000- and 60,000-byte values went out from the write cache's buffers
    // (`record_write.rs`), through the stripe's split of a vectored write too.
    let stats = db.stats();
    assert!(
        stats.flush_value_bytes_spliced > 0,
        "no value spliced: {stats:?}"
    );
    db.close().unwrap();
    let db = Db::open(devices, meta, o).unwrap();
    verify(&db, &model);
    check_scans(&db, &model);
    // More overwrites after the reopen, enough to make GC run, then once more.
    for round in 0..30u32 {
        for i in (0..600u32).filter(|i| i % 5 == 2) {
            let v = value(i, 10 + round, 3000);
            db.put(&key(i), &v).unwrap();
            model.insert(key(i), v);
        }
    }
    db.collect_garbage().unwrap();
    db.flush().unwrap();
    let before = db.stats();
    db.close().unwrap();
    let db = Db::open(devices, meta, o).unwrap();
    verify(&db, &model);
    check_scans(&db, &model);
    println!("session stats: {before:?}");
    (db, before)
}

#[test]
fn workload_on_a_file() {
    let dir = disk_dir();
    let dev = dir.path().join("store.img");
    let o = options().with_create_device_bytes(Some(32 * MIB));
    let (db, stats) = workload(&[dev.clone()], &dir.path().join("meta"), &o);
    assert_eq!(stats.devices.len(), 1);
    assert!(stats.devices[0].write_bytes > 0 && stats.devices[0].flushes > 0);
    db.close().unwrap();
    assert_eq!(std::fs::metadata(&dev).unwrap().len(), 32 * MIB);
    // Probe reads the parameters back for a later open.
    let sb = Db::probe(&[dev.clone()]).unwrap();
    assert_eq!(sb.layout.main_segment_bytes, MIB);
    assert_eq!(sb.member_count, 1);
    let db = Db::open(
        &[dev],
        &dir.path().join("meta"),
        &Options::default().matching(&sb),
    )
    .unwrap();
    assert!(db.get(&key(2)).unwrap().is_some());
    db.close().unwrap();
}

#[test]
fn workload_on_a_loop_device() {
    let l = match loops(1, 64 * MIB) {
        Ok(l) => l,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let (db, stats) = workload(&l.paths(), &l.dir.path().join("meta"), &options());
    assert_eq!(stats.devices.len(), 1);
    assert!(stats.devices[0].write_bytes > 0);
    db.close().unwrap();
}

#[test]
fn workload_on_a_stripe_of_three_loop_devices() {
    let l = match loops(3, 64 * MIB) {
        Ok(l) => l,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let paths = l.paths();
    let meta = l.dir.path().join("meta");
    let o = options();
    let (db, stats) = workload(&paths, &meta, &o);
    assert_eq!(stats.devices.len(), 3, "one counter snapshot per member");
    for (i, d) in stats.devices.iter().enumerate() {
        println!("member {i}: {d:?}");
        assert!(d.write_bytes > 0, "member {i} got no writes: {d:?}");
        assert!(d.read_bytes > 0, "member {i} got no reads: {d:?}");
    }
    let members = db.superblock().member_count;
    assert_eq!(members, 3);
    db.close().unwrap();
    // The members must be given in their stripe order, and all of them.
    let swapped = vec![paths[1].clone(), paths[0].clone(), paths[2].clone()];
    let e = Db::open(&swapped, &meta, &o)
        .err()
        .expect("swapped members");
    println!("swapped members: {e}");
    assert!(
        matches!(
            e,
            Error::Device(_) | Error::Mismatch { .. } | Error::NotOurs { .. }
        ),
        "{e:?}"
    );
    let e = Db::open(&paths[..2], &meta, &o)
        .err()
        .expect("a member missing");
    println!("two of three members: {e}");
    // A single member is not the store either.
    assert!(Db::open(&paths[..1], &meta, &o).is_err());
    // Formatting the members again without force: refused, store intact.
    let e = Db::format(&paths, &l.dir.path().join("meta2"), &o)
        .err()
        .expect("reformat without force");
    assert!(matches!(e, Error::DeviceNotEmpty { .. }), "{e:?}");
    let db = Db::open(&paths, &meta, &o).unwrap();
    assert!(db.get(&key(2)).unwrap().is_some());
    db.close().unwrap();
}
