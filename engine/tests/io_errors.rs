//! A failing device: I/O errors on writes, on device flushes, and on reads and writes
//! while GC runs. The operation that meets the error fails with the device's typed
//! error; from then on the store refuses writes (it is poisoned, naming that first
//! error) while reads keep working; after a power cycle onto healthy storage every
//! write that was durable is there and nothing that failed is.
//!
//! Every test runs in the modes that keep values on the device (hashkv, vlog). The lsm
//! mode is left out: it writes no values to the device and reads none after open (its
//! index, holding every value, lives in files of the metadata directory, which the
//! simulated device does not hold), so no fault injected here can reach it.

mod common;

use common::{check_value, format_sim, key, load, msg, value, verify, Model, KIB, MIB};
use hashkv::{Db, Error, Mode, WriteBatch};
use hashkv_blockdev::sim::{FaultRule, OpKind};
use hashkv_blockdev::DeviceError;
use std::ops::Bound;
use std::sync::Arc;

fn options(mode: Mode, write_cache_bytes: u64) -> hashkv::Options {
    common::small_options()
        .with_mode(mode)
        .with_write_cache_bytes(write_cache_bytes)
}

/// `e` is the device's I/O error on an operation named `op` ("read", "write").
fn is_io_error(e: &Error, op: &str) -> bool {
    matches!(e, Error::Device(DeviceError::Io { op: o, .. }) if o.contains(op))
}

/// Every later write is refused with `Poisoned`, naming a first error that satisfies
/// `first`; GC is refused too.
fn assert_poisoned(db: &Db, first: impl Fn(&Error) -> bool) {
    let mut batch = WriteBatch::new();
    batch.put(b"x", b"y");
    for e in [
        db.put(&key(5000), &value(5000, 1, 3000)).unwrap_err(),
        db.put(b"small", b"v").unwrap_err(),
        db.delete(&key(1)).unwrap_err(),
        db.write(batch.clone()).unwrap_err(),
        db.write_sync(batch).unwrap_err(),
        db.flush().unwrap_err(),
    ] {
        match &e {
            // The typed first error, whole.
            Error::Poisoned { first_error } => assert!(first(first_error), "{first_error:?}"),
            other => panic!("expected Poisoned, got {other:?}"),
        }
    }
    msg(&db.put(b"k", b"v").unwrap_err());
    assert!(db.collect_garbage().is_err(), "GC on a poisoned store");
}

test_in_modes!(eio_on_write_poisons_writes_and_reads_still_work: hashkv, vlog);
fn eio_on_write_poisons_writes_and_reads_still_work(mode: Mode) {
    for cache in [0, 64 * KIB] {
        let o = options(mode, cache);
        let (dev, dir, db) = format_sim(8 * MIB, 19, &o);
        let model = load(&db, 200);
        db.flush().unwrap();
        let fault = dev.inject(FaultRule::eio().on(OpKind::Write)).unwrap();
        // The first write that reaches the device fails with the device's error.
        let mut first = None;
        for i in 1000..1100 {
            if let Err(e) = db.put(&key(i), &value(i, 1, 2000)) {
                first = Some(e);
                break;
            }
        }
        let first = first
            .or_else(|| db.flush().err())
            .expect("EIO never surfaced");
        // A flush in the background thread reports its error to the next write, as the
        // poison's first error.
        let first = match first {
            Error::Poisoned { first_error } => (*first_error).clone(),
            other => other,
        };
        assert!(dev.fault_hits(fault) >= 1);
        assert!(
            matches!(first, Error::Device(DeviceError::Io { .. })),
            "{first:?}"
        );
        assert!(msg(&first).contains("Input/output error") || msg(&first).contains("EIO"));
        dev.clear_faults();
        // Every later write is refused, naming the first error.
        assert_poisoned(&db, |e| is_io_error(e, "write"));
        // Reads of flushed data still work, gets and scans alike.
        for (k, v) in &model {
            assert_eq!(db.get(k).unwrap().as_deref(), Some(&v[..]));
        }
        let scanned: Vec<_> = db
            .scan(Bound::Included(&key(0)[..]), Bound::Excluded(&key(200)[..]))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        for (k, v) in &scanned {
            if let Some(mv) = model.get(k) {
                assert_eq!(v, mv);
            } else {
                // Only a write that failed may show (from the write cache).
                assert!(check_value(v).is_some());
            }
        }
        let _ = db.close();
        // After a power cycle the flushed data is all there.
        let dev = Arc::new(dev.crash());
        let db = Db::open_device(dev, dir.path(), &o).unwrap();
        verify(&db, &model);
        db.put(b"after-reopen", b"works again").unwrap();
        db.close().unwrap();
    }
}

test_in_modes!(eio_on_flush_poisons_writes: hashkv, vlog);
fn eio_on_flush_poisons_writes(mode: Mode) {
    let o = options(mode, 0);
    let (dev, dir, db) = format_sim(8 * MIB, 20, &o);
    let model = load(&db, 100);
    db.flush().unwrap();
    dev.inject(FaultRule::eio().on(OpKind::Flush).max_hits(1))
        .unwrap();
    let e = db.put(&key(900), &value(900, 1, 2000)).unwrap_err();
    assert!(matches!(e, Error::Device(_)), "{e:?}");
    msg(&e);
    assert!(matches!(
        db.put(&key(901), &value(901, 1, 2000)),
        Err(Error::Poisoned { .. })
    ));
    for (k, v) in &model {
        assert_eq!(db.get(k).unwrap().as_deref(), Some(&v[..]));
    }
    let _ = db.close();
    let dev = Arc::new(dev.crash());
    let db = Db::open_device(dev, dir.path(), &o).unwrap();
    verify(&db, &model);
    db.close().unwrap();
}

test_in_modes!(failed_put_after_eio_visibility: hashkv, vlog);
/// A put whose flush failed with an I/O error (no write cache) is not acknowledged,
/// and never reads back: not before the reopen, not after.
fn failed_put_after_eio_visibility(mode: Mode) {
    let o = options(mode, 0);
    let (dev, dir, db) = format_sim(8 * MIB, 24, &o);
    let model = load(&db, 20);
    dev.inject(FaultRule::eio().on(OpKind::Write)).unwrap();
    assert!(db.put(b"failed", &value(1, 9, 500)).is_err());
    // Not acknowledged, so not read back, before the restart either.
    assert_eq!(db.get(b"failed").unwrap(), None, "a failed put reads back");
    verify(&db, &model);
    let _ = db.close();
    let dev = Arc::new(dev.crash());
    let db = Db::open_device(dev, dir.path(), &o).unwrap();
    assert_eq!(db.get(b"failed").unwrap(), None, "never committed");
    verify(&db, &model);
    db.close().unwrap();
}

/// Data on which the first GC both reads garbage and writes survivors: keys written
/// once, then four rounds of overwrites of others. The vlog mode's GC starts at the
/// log's tail, where the keys written once lie (it writes nothing when all it read is
/// dead); the hashkv mode's GC picks a group the overwrites hit.
fn load_garbage_and_survivors(db: &Db) -> Model {
    let mut model = Model::new();
    for i in 10_000..10_100u32 {
        let v = value(i, 0, 1500);
        db.put(&key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    for round in 0..4u32 {
        for i in 0..200u32 {
            let v = value(i, round, 1500);
            db.put(&key(i), &v).unwrap();
            model.insert(key(i), v);
        }
    }
    model
}

/// An I/O error on `op` ("read" or "write") while GC runs: the GC fails with the
/// device error, the store refuses writes from then on, reads keep working, and after
/// a power cycle everything flushed is there (the GC never touched what the index
/// names), and GC works again.
fn io_error_during_gc_loses_nothing(mode: Mode, kind: OpKind, op: &str) {
    let o = options(mode, 16 * KIB);
    let (dev, dir, db) = format_sim(8 * MIB, 23, &o);
    let model = load_garbage_and_survivors(&db);
    db.flush().unwrap();
    let fault = dev.inject(FaultRule::eio().on(kind)).unwrap();
    let e = db.collect_garbage().unwrap_err();
    assert!(matches!(e, Error::Device(_)), "{e:?}");
    assert!(is_io_error(&e, op), "{e:?}");
    assert!(dev.fault_hits(fault) >= 1);
    msg(&e);
    dev.clear_faults();
    assert!(matches!(
        db.put(b"after", b"gc failure"),
        Err(Error::Poisoned { .. })
    ));
    assert_poisoned(&db, |first| is_io_error(first, op));
    for (k, v) in &model {
        assert_eq!(db.get(k).unwrap().as_deref(), Some(&v[..]));
    }
    let _ = db.close();
    let dev = Arc::new(dev.crash());
    let db = Db::open_device(dev, dir.path(), &o).unwrap();
    verify(&db, &model);
    assert!(db.collect_garbage().unwrap());
    verify(&db, &model);
    db.close().unwrap();
}

test_in_modes!(eio_on_write_during_gc_loses_nothing: hashkv, vlog);
fn eio_on_write_during_gc_loses_nothing(mode: Mode) {
    io_error_during_gc_loses_nothing(mode, OpKind::Write, "write");
}

test_in_modes!(eio_on_read_during_gc_loses_nothing: hashkv, vlog);
fn eio_on_read_during_gc_loses_nothing(mode: Mode) {
    io_error_during_gc_loses_nothing(mode, OpKind::Read, "read");
}
