//! Damaged data: bits flipped on the way from the device, bits rotted on the device,
//! a damaged superblock copy. A damaged record is an error, never a wrong value, and
//! GC does not spread the damage; one damaged superblock copy is tolerated.
//!
//! The record tests run in the modes that keep values on the device (hashkv, vlog):
//! the lsm mode keeps every value in the index, in files of the metadata directory,
//! and reads nothing from the device after open. The superblock test runs in every
//! mode.

mod common;

use common::{
    format_sim, is_corruption, key, load, msg, small_options, small_superblock_offsets, value,
    verify, Model, MIB,
};
use hashkv::{Db, Mode};
use hashkv_blockdev::sim::{FaultRule, SimConfig, SimDevice};
use std::ops::Bound;
use std::sync::Arc;

/// Values of whole sectors: placed on a sector boundary (`align.rs`) and read alone
/// (a get reads the value's sectors, not its record's header), so a flipped bit
/// anywhere in a get's read lands in the value.
fn sector_filling_value(i: u32, sectors: usize) -> Vec<u8> {
    value(i, 3, sectors * 512)
}

test_in_modes!(bit_flip_on_read_is_an_error_never_a_wrong_value: hashkv, vlog);
fn bit_flip_on_read_is_an_error_never_a_wrong_value(mode: Mode) {
    let o = small_options().with_mode(mode).with_write_cache_bytes(0);
    let mut config = SimConfig::new(8 * MIB, 21);
    config.logical_block_bytes = 512;
    let dev = Arc::new(SimDevice::new(config).unwrap());
    let _dir = tempfile::tempdir().unwrap();
    let db = Db::format_device(dev.clone(), _dir.path(), &o).unwrap();
    let mut model = Model::new();
    for i in 0..60 {
        let v = sector_filling_value(i, 8 * (1 + i as usize % 3));
        db.put(&key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    let mut mixed = Model::new();
    for i in 100..300u32 {
        let v = value(i, 1, [70, 300, 1500, 5000][(i % 4) as usize]);
        db.put(&key(i), &v).unwrap();
        mixed.insert(key(i), v);
    }
    db.flush().unwrap();
    let fault = dev.inject(FaultRule::bit_flip_on_read()).unwrap();
    // Values read exactly: every get fails with a checksum or corruption error.
    for k in model.keys() {
        match db.get(k) {
            Err(e) if is_corruption(&e) => {}
            Ok(v) => panic!(
                "get with a flipped bit returned a value ({:?})",
                v.map(|v| v.len())
            ),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    msg(&db.get(&key(0)).unwrap_err());
    // Mixed records share blocks: a flip may miss the record, but never yields a wrong value.
    let mut errors = 0;
    for (k, v) in &mixed {
        match db.get(k) {
            Ok(got) => assert_eq!(got.as_deref(), Some(&v[..]), "wrong value"),
            Err(e) if is_corruption(&e) => errors += 1,
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    println!("{errors} of {} mixed gets failed", mixed.len());
    assert!(errors > 0);
    // A scan stops at the first damaged value with an error.
    let mut all = model.clone();
    all.extend(mixed.clone());
    let mut n = 0;
    let mut scan_failed = false;
    for item in db.scan(Bound::Unbounded, Bound::Unbounded).unwrap() {
        match item {
            Ok((k, v)) => {
                assert_eq!(all.get(&k), Some(&v), "scan returned a wrong value");
                n += 1;
            }
            Err(e) => {
                assert!(is_corruption(&e), "{e:?}");
                scan_failed = true;
            }
        }
    }
    assert!(
        scan_failed,
        "scan over damaged reads returned {n} items and no error"
    );
    assert!(dev.fault_hits(fault) > 0);
    // The flips were transient: without them everything reads back, and writes work
    // (a damaged read is not a reason to refuse writes).
    dev.clear_faults();
    verify(&db, &all);
    db.put(b"still", b"writable").unwrap();
    db.close().unwrap();
}

test_in_modes!(stored_bit_rot_is_an_error_and_gc_refuses_to_spread_it: hashkv, vlog);
fn stored_bit_rot_is_an_error_and_gc_refuses_to_spread_it(mode: Mode) {
    let o = small_options().with_mode(mode).with_write_cache_bytes(0);
    let (dev, _dir, db) = format_sim(8 * MIB, 22, &o);
    let model = load(&db, 100);
    let victim = key(7);
    let v = model[&victim].clone();
    db.flush().unwrap();
    // Find the record on the device by its value bytes and flip one bit of the value.
    let image = dev.peek(0, 8 * MIB as usize).unwrap();
    let at = image
        .windows(64)
        .position(|w| w == &v[..64])
        .expect("value on the device") as u64;
    dev.corrupt_bit(at + 100, 5).unwrap();
    let e = db.get(&victim).unwrap_err();
    assert!(is_corruption(&e), "{e:?}");
    msg(&e);
    for (k, mv) in &model {
        if *k != victim {
            assert_eq!(db.get(k).unwrap().as_deref(), Some(&mv[..]));
        }
    }
    // GC of the damaged group (hashkv) or of the log's tail holding the damaged record
    // (vlog) must not copy the damage or drop the key (which would read as a delete):
    // it stops with an error.
    // (A GC that reclaims nothing returns false; the next one picks another group.)
    let mut gc_error = None;
    for _ in 0..100 {
        match db.collect_garbage() {
            Ok(_) => {}
            Err(e) => {
                gc_error = Some(e);
                break;
            }
        }
    }
    let gc_error = gc_error.expect("GC over a damaged record succeeded");
    assert!(gc_error.is_integrity(), "{gc_error:?}");
    msg(&gc_error);
    let e = db.get(&victim).unwrap_err();
    assert!(is_corruption(&e), "after GC: {e:?}");
    for (k, mv) in &model {
        if *k != victim {
            assert_eq!(db.get(k).unwrap().as_deref(), Some(&mv[..]));
        }
    }
    let _ = db.close();
}

test_in_modes!(one_damaged_superblock_copy_is_tolerated);
fn one_damaged_superblock_copy_is_tolerated(mode: Mode) {
    let o = small_options().with_mode(mode);
    let (dev, dir, db) = format_sim(8 * MIB, 16, &o);
    let model = load(&db, 50);
    db.close().unwrap();
    let [first, second] = small_superblock_offsets();
    for at in [first, second] {
        dev.corrupt_bit(at + 50, 3).unwrap();
        let db = Db::open_device(dev.clone(), dir.path(), &o).unwrap();
        verify(&db, &model);
        db.close().unwrap();
        dev.corrupt_bit(at + 50, 3).unwrap();
    }
    // Both damaged: refused by checksum, not misread.
    dev.corrupt_bit(first + 50, 3).unwrap();
    dev.corrupt_bit(second + 60, 1).unwrap();
    let e = Db::open_device(dev, dir.path(), &o).err().unwrap();
    assert!(is_corruption(&e), "{e:?}");
    msg(&e);
}
