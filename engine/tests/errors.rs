//! Bad input and failing devices: each case gets a typed `hashkv::Error` with a clear
//! message, and nothing that was acknowledged is lost.

mod common;

use common::{check_value, disk_dir, key, small_options, value, verify, Model, KIB, MIB};
use hashkv::{Db, Error, Options, WriteBatch, KEY_BYTES_MAX};
use hashkv_blockdev::sim::{FaultRule, OpKind, SimConfig, SimDevice};
use hashkv_blockdev::{AlignedBuf, BlockDevice, DeviceError, IoOp};
use hashkv_lsm::LsmError;
use std::ops::Bound;
use std::sync::Arc;

fn sim(size: u64, seed: u64) -> Arc<SimDevice> {
    Arc::new(SimDevice::new(SimConfig::new(size, seed)).unwrap())
}

/// A store formatted with `o` on a fresh simulated device of `size` bytes; the device
/// and directory are returned for faults, crashes and reopening.
fn format_sim(size: u64, seed: u64, o: &Options) -> (Arc<SimDevice>, tempfile::TempDir, Db) {
    let dev = sim(size, seed);
    let dir = tempfile::tempdir().unwrap();
    let db = Db::format_device(dev.clone(), dir.path(), o).unwrap();
    (dev, dir, db)
}

fn write_raw(dev: &SimDevice, offset: u64, data: &[u8]) {
    let mut buf = AlignedBuf::new(data.len().div_ceil(4096) * 4096);
    buf[..data.len()].copy_from_slice(data);
    dev.submit(&mut [IoOp::Write {
        offset,
        buf: &buf,
        fua: false,
    }])
    .unwrap();
    dev.flush().unwrap();
}

/// Puts `n` keys of mixed sizes (some inline), returning the model.
fn load(db: &Db, n: u32) -> Model {
    let mut model = Model::new();
    for i in 0..n {
        let len = [10, 100, 1000, 3000][(i % 4) as usize];
        let v = value(i, 1, len);
        db.put(&key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    model
}

fn msg(e: &Error) -> String {
    let s = e.to_string();
    println!("error: {s}");
    s
}

#[test]
fn empty_and_oversized_keys_are_refused_and_change_nothing() {
    let dev = sim(8 * MIB, 1);
    let dir = tempfile::tempdir().unwrap();
    let db = Db::format_device(dev, dir.path(), &small_options()).unwrap();
    let model = load(&db, 50);
    let long = vec![b'k'; KEY_BYTES_MAX + 1];
    for bad in [&b""[..], &long[..]] {
        for e in [
            db.put(bad, b"some value").unwrap_err(),
            db.delete(bad).unwrap_err(),
            db.get(bad).unwrap_err(),
        ] {
            match &e {
                Error::KeyTooLarge { len, max } => {
                    assert_eq!((*len, *max), (bad.len(), KEY_BYTES_MAX))
                }
                other => panic!("expected KeyTooLarge, got {other:?}"),
            }
            let m = msg(&e);
            assert!(m.contains(&bad.len().to_string()) && m.contains(&KEY_BYTES_MAX.to_string()));
        }
        // A batch with one bad key is refused whole: its good entries do not apply.
        let mut batch = WriteBatch::new();
        batch
            .put(b"good-in-bad-batch", b"v")
            .delete(&key(0))
            .put(bad, b"x");
        assert!(matches!(
            db.write(batch.clone()),
            Err(Error::KeyTooLarge { .. })
        ));
        assert!(matches!(
            db.write_sync(batch),
            Err(Error::KeyTooLarge { .. })
        ));
        assert_eq!(db.get(b"good-in-bad-batch").unwrap(), None);
    }
    verify(&db, &model);
    db.close().unwrap();
}

/// A key of exactly `KEY_BYTES_MAX` bytes is accepted and reads back, inline or
/// separated, through a flush and a reopen.
#[test]
fn key_of_exactly_the_limit_is_accepted() {
    let o = small_options();
    let (dev, dir, db) = format_sim(8 * MIB, 1, &o);
    let mut model = load(&db, 20);
    let max_key = vec![b'm'; KEY_BYTES_MAX];
    let max_key2 = vec![b'n'; KEY_BYTES_MAX];
    db.put(&max_key, b"tiny").unwrap();
    db.put(&max_key2, &value(7, 7, 5000)).unwrap();
    db.flush().unwrap();
    model.insert(max_key.clone(), b"tiny".to_vec());
    model.insert(max_key2.clone(), value(7, 7, 5000));
    verify(&db, &model);
    // Deleting it works too, and it stays deleted.
    db.delete(&max_key).unwrap();
    model.remove(&max_key);
    db.close().unwrap();
    let db = Db::open_device(dev, dir.path(), &o).unwrap();
    verify(&db, &model);
    db.close().unwrap();
}

fn verify_plus(db: &Db, model: &Model, extra: &[(&[u8], &[u8])]) {
    let mut m = model.clone();
    for (k, v) in extra {
        m.insert(k.to_vec(), v.to_vec());
    }
    verify(db, &m);
}

#[test]
fn oversized_value_is_refused_and_the_largest_fits() {
    let dev = sim(8 * MIB, 2);
    let dir = tempfile::tempdir().unwrap();
    for cache in [0, 64 * KIB] {
        let o = small_options()
            .with_write_cache_bytes(cache)
            .with_force_format(true);
        let db = Db::format_device(dev.clone(), dir.path(), &o).unwrap();
        let model = load(&db, 20);
        let k = b"big-value-key";
        // Log segment minus the 20-byte record header minus the key.
        let max = (16 * KIB) as usize - 20 - k.len();
        let e = db.put(k, &vec![1u8; max + 1]).unwrap_err();
        match &e {
            Error::ValueTooLarge { len, max: m } => assert_eq!((*len, *m), (max + 1, max)),
            other => panic!("expected ValueTooLarge, got {other:?}"),
        }
        assert!(msg(&e).contains(&max.to_string()));
        let mut batch = WriteBatch::new();
        batch
            .put(b"other", b"in the same batch")
            .put(k, &vec![1u8; 100 * 1024]);
        assert!(matches!(db.write(batch), Err(Error::ValueTooLarge { .. })));
        assert_eq!(db.get(b"other").unwrap(), None);
        assert_eq!(db.get(k).unwrap(), None);
        // Exactly the limit: a record the size of a whole log segment.
        let biggest = value(99, 1, max);
        db.put(k, &biggest).unwrap();
        db.flush().unwrap();
        verify_plus(&db, &model, &[(k, &biggest)]);
        db.close().unwrap();
        let db = Db::open_device(dev.clone(), dir.path(), &o).unwrap();
        verify_plus(&db, &model, &[(k, &biggest)]);
        db.close().unwrap();
    }
}

#[test]
fn invalid_options_are_refused_before_touching_anything() {
    let dev = sim(8 * MIB, 3);
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta");
    for (o, what) in [
        (
            small_options().with_log_segment_bytes(5000),
            "log_segment_bytes",
        ),
        (
            small_options().with_main_segment_bytes(100 * KIB),
            "main_segment_bytes",
        ),
        (small_options().with_reserved_share(0.0), "reserved_share"),
        (small_options().with_gc_workers(0), "gc_workers"),
    ] {
        let e = Db::format_device(dev.clone(), &meta, &o)
            .err()
            .expect("must fail");
        assert!(matches!(e, Error::InvalidOptions { .. }), "{e:?}");
        assert!(msg(&e).contains(what));
        assert!(!meta.exists(), "metadata dir created by a refused format");
    }
    assert!(dev.peek(0, 4096).unwrap().iter().all(|&b| b == 0));
}

#[test]
fn device_holding_data_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let o = small_options();
    // Arbitrary data (say, a filesystem) in the first blocks.
    let dev = sim(8 * MIB, 4);
    write_raw(&dev, 64 * KIB, b"\x10\x20 some filesystem signature");
    let meta = dir.path().join("a");
    let e = Db::format_device(dev.clone(), &meta, &o).err().unwrap();
    assert!(matches!(e, Error::DeviceNotEmpty { .. }), "{e:?}");
    assert!(msg(&e).contains("force"));
    assert!(!meta.exists(), "metadata dir created by a refused format");
    assert_eq!(
        &dev.peek(64 * KIB, 8).unwrap()[..],
        b"\x10\x20 some ",
        "refused format wrote"
    );
    // With force it works, and the store is usable and reopens.
    let forced = o.clone().with_force_format(true);
    let db = Db::format_device(dev.clone(), &meta, &forced).unwrap();
    let model = load(&db, 100);
    db.close().unwrap();
    // Our own store is data too: formatting it again is refused, and it stays intact.
    let meta_b = dir.path().join("b");
    let e = Db::format_device(dev.clone(), &meta_b, &o).err().unwrap();
    assert!(matches!(e, Error::DeviceNotEmpty { .. }), "{e:?}");
    assert!(msg(&e).contains("hashkv"));
    let db = Db::open_device(dev.clone(), &meta, &o).unwrap();
    verify(&db, &model);
    db.close().unwrap();
    // Data only at the second superblock copy's place counts too.
    let dev2 = sim(8 * MIB, 5);
    write_raw(&dev2, 128 * KIB, b"\x01\x02\x03");
    let e = Db::format_device(dev2, &dir.path().join("c"), &o)
        .err()
        .unwrap();
    assert!(matches!(e, Error::DeviceNotEmpty { .. }), "{e:?}");
}

#[test]
fn formatting_into_a_non_empty_metadata_dir_is_refused() {
    let dev = sim(8 * MIB, 6);
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("precious.txt");
    std::fs::write(&precious, b"do not delete").unwrap();
    let e = Db::format_device(dev.clone(), dir.path(), &small_options())
        .err()
        .unwrap();
    assert!(matches!(e, Error::DeviceNotEmpty { .. }), "{e:?}");
    assert!(msg(&e).contains(&dir.path().display().to_string()));
    assert_eq!(std::fs::read(&precious).unwrap(), b"do not delete");
    // Nothing reached the device either: it is still not a store.
    assert!(dev
        .peek(0, 64 * KIB as usize)
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    let e = Db::open_device(dev, dir.path(), &small_options())
        .err()
        .unwrap();
    assert!(matches!(e, Error::NotOurs { .. }), "{e:?}");
}

#[test]
fn opening_a_device_that_is_not_ours() {
    let dir = tempfile::tempdir().unwrap();
    let o = small_options();
    // All zeros.
    let zeros = sim(8 * MIB, 7);
    let e = Db::open_device(zeros, dir.path(), &o).err().unwrap();
    assert!(matches!(e, Error::NotOurs { .. }), "{e:?}");
    assert!(msg(&e).contains("not a hashkv device"));
    // Random garbage everywhere.
    let garbage = sim(8 * MIB, 8);
    let mut s = 12345u64;
    let mut chunk = vec![0u8; MIB as usize];
    for i in 0..8 {
        for c in chunk.chunks_mut(8) {
            s = common::mix(s);
            c.copy_from_slice(&s.to_le_bytes());
        }
        write_raw(&garbage, i * MIB, &chunk);
    }
    let e = Db::open_device(garbage.clone(), dir.path(), &o)
        .err()
        .unwrap();
    assert!(
        matches!(e, Error::NotOurs { .. } | Error::Corruption { .. }),
        "{e:?}"
    );
    msg(&e);
    // Garbage behind our magic: a damaged superblock, not a usable one.
    let mut block = chunk[..4096].to_vec();
    block[..8].copy_from_slice(b"HASHKVSB");
    write_raw(&garbage, 0, &block);
    let e = Db::open_device(garbage.clone(), dir.path(), &o)
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            Error::NotOurs { .. } | Error::Corruption { .. } | Error::ChecksumMismatch { .. }
        ),
        "{e:?}"
    );
    msg(&e);
}

#[test]
fn not_ours_on_files_through_open_and_probe() {
    let dir = disk_dir();
    let file = dir.path().join("zeros.img");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    let e = Db::open(&[file.clone()], &dir.path().join("meta"), &small_options())
        .err()
        .unwrap();
    assert!(matches!(e, Error::NotOurs { .. }), "{e:?}");
    let e = Db::probe(&[file.clone()]).err().unwrap();
    assert!(matches!(e, Error::NotOurs { .. }), "{e:?}");
    msg(&e);
    // A missing device is a device error naming the path, and nothing is created.
    let missing = dir.path().join("missing.img");
    let e = Db::open(
        &[missing.clone()],
        &dir.path().join("meta"),
        &small_options(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(e, Error::Device(DeviceError::NotFound { .. })),
        "{e:?}"
    );
    assert!(msg(&e).contains("missing.img"));
    assert!(!missing.exists());
}

#[test]
fn other_segment_sizes_are_a_mismatch() {
    let o = small_options();
    let (dev, dir, db) = format_sim(16 * MIB, 9, &o);
    let model = load(&db, 100);
    db.close().unwrap();
    for (other, what) in [
        (o.clone().with_main_segment_bytes(512 * KIB), "main segment"),
        (o.clone().with_log_segment_bytes(32 * KIB), "log segment"),
        (
            o.clone()
                .with_main_segment_bytes(128 * KIB)
                .with_log_segment_bytes(8 * KIB),
            "main segment",
        ),
    ] {
        let e = Db::open_device(dev.clone(), dir.path(), &other)
            .err()
            .unwrap();
        match &e {
            Error::Mismatch {
                what: w,
                on_device,
                requested,
            } => {
                assert!(w.contains(what), "{e:?}");
                assert_ne!(on_device, requested);
            }
            other => panic!("expected Mismatch, got {other:?}"),
        }
        msg(&e);
    }
    // Nothing lost: the right options open it.
    let db = Db::open_device(dev.clone(), dir.path(), &o).unwrap();
    verify(&db, &model);
    db.close().unwrap();
}

#[test]
fn another_stores_metadata_dir_is_a_mismatch() {
    let (dev_a, dev_b) = (sim(8 * MIB, 10), sim(8 * MIB, 11));
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let o = small_options();
    let a = Db::format_device(dev_a.clone(), dir_a.path(), &o).unwrap();
    let model_a = load(&a, 60);
    a.close().unwrap();
    let b = Db::format_device(dev_b.clone(), dir_b.path(), &o).unwrap();
    b.put(b"only-in-b", &value(1, 2, 500)).unwrap();
    b.close().unwrap();
    for (dev, dir) in [(&dev_a, &dir_b), (&dev_b, &dir_a)] {
        let e = Db::open_device((*dev).clone(), dir.path(), &o)
            .err()
            .unwrap();
        assert!(
            matches!(
                e,
                Error::Mismatch {
                    what: "metadata directory",
                    ..
                }
            ),
            "{e:?}"
        );
        msg(&e);
    }
    // An empty directory holds no index for the device.
    let empty = tempfile::tempdir().unwrap();
    let e = Db::open_device(dev_a.clone(), empty.path(), &o)
        .err()
        .unwrap();
    assert!(matches!(e, Error::NotOurs { .. } | Error::Lsm(_)), "{e:?}");
    msg(&e);
    let a = Db::open_device(dev_a, dir_a.path(), &o).unwrap();
    verify(&a, &model_a);
    assert_eq!(a.get(b"only-in-b").unwrap(), None);
    a.close().unwrap();
}

#[test]
fn second_opener_of_a_file_device_is_refused() {
    let dir = disk_dir();
    let file = dir.path().join("dev.img");
    let meta = dir.path().join("meta");
    let o = small_options().with_create_device_bytes(Some(8 * MIB));
    let db = Db::format(&[file.clone()], &meta, &o).unwrap();
    let model = load(&db, 80);
    db.flush().unwrap();
    let meta2 = dir.path().join("meta2");
    for e in [
        Db::open(&[file.clone()], &meta, &o).err().unwrap(),
        Db::open(&[file.clone()], &meta2, &o).err().unwrap(),
        Db::format(&[file.clone()], &meta2, &o.clone().with_force_format(true))
            .err()
            .unwrap(),
        Db::probe(&[file.clone()]).err().unwrap(),
    ] {
        assert!(
            matches!(e, Error::Device(DeviceError::InUse { .. })),
            "{e:?}"
        );
        assert!(msg(&e).contains("dev.img"));
    }
    // The first opener is unharmed.
    verify(&db, &model);
    db.put(b"after", b"the refused openers").unwrap();
    db.close().unwrap();
    let db = Db::open(&[file], &meta, &o).unwrap();
    assert_eq!(
        db.get(b"after").unwrap().as_deref(),
        Some(&b"the refused openers"[..])
    );
    verify_plus(&db, &model, &[(b"after", b"the refused openers")]);
    db.close().unwrap();
}

#[test]
fn second_opener_of_a_metadata_dir_is_refused() {
    let o = small_options();
    let (dev, dir, db) = format_sim(8 * MIB, 12, &o);
    let model = load(&db, 80);
    let e = Db::open_device(dev.clone(), dir.path(), &o).err().unwrap();
    assert!(matches!(e, Error::Lsm(LsmError::Locked { .. })), "{e:?}");
    assert!(msg(&e).contains("locked"));
    verify(&db, &model);
    db.close().unwrap();
    let db = Db::open_device(dev, dir.path(), &o).unwrap();
    verify(&db, &model);
    db.close().unwrap();
}

/// Formatting another device with force into the metadata directory of a store that
/// is open must not delete that store's index from under it.
#[test]
fn forced_format_does_not_delete_an_open_stores_metadata_dir() {
    let (dev_a, dev_b) = (sim(8 * MIB, 13), sim(8 * MIB, 14));
    let dir = tempfile::tempdir().unwrap();
    let o = small_options();
    let a = Db::format_device(dev_a.clone(), dir.path(), &o).unwrap();
    let model = load(&a, 80);
    a.flush().unwrap();
    let forced = o.clone().with_force_format(true);
    let e = Db::format_device(dev_b, dir.path(), &forced).err();
    assert!(
        matches!(e, Some(Error::Lsm(LsmError::Locked { .. }))),
        "forced format into an open store's directory: {e:?}"
    );
    verify(&a, &model);
    a.close().unwrap();
    let a = Db::open_device(dev_a, dir.path(), &o).unwrap();
    verify(&a, &model);
    a.close().unwrap();
}

/// Sets the superblock's format version at both copies, with a valid checksum.
fn patch_version(dev: &SimDevice, main_segment_bytes: u64, version: u32) {
    for at in [0, main_segment_bytes / 2] {
        let mut block = dev.peek(at, 4096).unwrap();
        assert_eq!(&block[..8], b"HASHKVSB");
        block[8..12].copy_from_slice(&version.to_le_bytes());
        let crc = crc32c::crc32c(&block[..92]);
        block[92..96].copy_from_slice(&crc.to_le_bytes());
        write_raw(dev, at, &block);
    }
}

#[test]
fn newer_superblock_format_version_is_refused() {
    let o = small_options();
    let (dev, dir, db) = format_sim(8 * MIB, 15, &o);
    let model = load(&db, 50);
    db.close().unwrap();
    let newer = hashkv::FORMAT_VERSION + 1;
    patch_version(&dev, 256 * KIB, newer);
    let e = Db::open_device(dev.clone(), dir.path(), &o).err().unwrap();
    match &e {
        Error::NewerFormat { found, supported } => {
            assert_eq!((*found, *supported), (newer, newer - 1))
        }
        other => panic!("expected NewerFormat, got {other:?}"),
    }
    assert!(msg(&e).contains('2'));
    // Formatting over it without force is refused too (it holds data).
    let e = Db::format_device(dev.clone(), &dir.path().join("x"), &o)
        .err()
        .unwrap();
    assert!(matches!(e, Error::DeviceNotEmpty { .. }), "{e:?}");
    // Version 1 again: everything is there.
    patch_version(&dev, 256 * KIB, 1);
    let db = Db::open_device(dev, dir.path(), &o).unwrap();
    verify(&db, &model);
    db.close().unwrap();
}

#[test]
fn one_damaged_superblock_copy_is_tolerated() {
    let o = small_options();
    let (dev, dir, db) = format_sim(8 * MIB, 16, &o);
    let model = load(&db, 50);
    db.close().unwrap();
    for at in [0u64, 128 * KIB] {
        dev.corrupt_bit(at + 50, 3).unwrap();
        let db = Db::open_device(dev.clone(), dir.path(), &o).unwrap();
        verify(&db, &model);
        db.close().unwrap();
        dev.corrupt_bit(at + 50, 3).unwrap();
    }
    // Both damaged: refused by checksum, not misread.
    dev.corrupt_bit(50, 3).unwrap();
    dev.corrupt_bit(128 * KIB + 60, 1).unwrap();
    let e = Db::open_device(dev, dir.path(), &o).err().unwrap();
    assert!(
        matches!(e, Error::ChecksumMismatch { .. } | Error::Corruption { .. }),
        "{e:?}"
    );
    msg(&e);
}

#[test]
fn device_too_small() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta");
    // 3 main-segment units: fewer than superblock + group + spare + reserved space.
    for size in [768 * KIB, 256 * KIB, 4 * KIB] {
        let e = Db::format_device(sim(size, 17), &meta, &small_options())
            .err()
            .unwrap();
        assert!(matches!(e, Error::DeviceTooSmall { .. }), "{size}: {e:?}");
        assert!(msg(&e).contains("main segments") || msg(&e).contains("room"));
        assert!(!meta.exists(), "metadata dir created by a refused format");
    }
    // Through a created file as well.
    let ddir = disk_dir();
    let file = ddir.path().join("small.img");
    let o = small_options().with_create_device_bytes(Some(512 * KIB));
    let e = Db::format(&[file], &meta, &o).err().unwrap();
    assert!(matches!(e, Error::DeviceTooSmall { .. }), "{e:?}");
    assert!(!meta.exists());
}

#[test]
fn file_of_unaligned_size_is_refused() {
    let dir = disk_dir();
    let file = dir.path().join("odd.img");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(8 * MIB + 100)
        .unwrap();
    let e = Db::format(&[file], &dir.path().join("meta"), &small_options())
        .err()
        .unwrap();
    assert!(
        matches!(e, Error::Device(DeviceError::SizeUnaligned { .. })),
        "{e:?}"
    );
    assert!(msg(&e).contains("multiple"));
    assert!(!dir.path().join("meta").exists());
}

/// Puts distinct keys of 1000 bytes until the store refuses one with `StoreFull`.
/// Returns the acknowledged keys and the refused key's index.
fn fill_until_full(db: &Db, cache: u64) -> (Model, u32) {
    let capacity = db.layout().value_capacity_bytes();
    let mut model = Model::new();
    for i in 0..10_000u32 {
        let v = value(i, 1, 1000);
        match db.put(&key(i), &v) {
            Ok(()) => {
                model.insert(key(i), v);
            }
            Err(e) => {
                assert!(matches!(e, Error::StoreFull { .. }), "{e:?}");
                assert!(msg(&e).contains("store full"));
                println!(
                    "cache {cache}: full after {i} puts of 1000 bytes (value capacity {capacity})"
                );
                assert!(
                    u64::from(i) * 1000 > capacity / 2,
                    "full too early: {i} keys in {capacity} bytes"
                );
                return (model, i);
            }
        }
    }
    panic!("a {capacity}-byte store never filled up");
}

/// Every model key reads back; a full scan holds the model and at most the `maybe`
/// keys besides (writes that were refused, whose fate the caller does not judge).
fn verify_allowing(db: &Db, model: &Model, maybe: &Model) {
    for (k, v) in model {
        let got = db.get(k).unwrap();
        assert!(
            got.as_deref() == Some(&v[..]),
            "acknowledged key {:?} reads back {:?}",
            String::from_utf8_lossy(k),
            got.map(|g| g.len())
        );
    }
    let mut seen = 0;
    for item in db.scan(Bound::Unbounded, Bound::Unbounded).unwrap() {
        let (k, v) = item.unwrap();
        if let Some(mv) = model.get(&k) {
            assert!(v == *mv, "scan value of {:?}", String::from_utf8_lossy(&k));
            seen += 1;
        } else {
            assert!(
                maybe.get(&k) == Some(&v),
                "scan returned unexpected key {:?}",
                String::from_utf8_lossy(&k)
            );
        }
    }
    assert_eq!(seen, model.len(), "scan missed acknowledged keys");
}

fn full_store(cache: u64) -> (Arc<SimDevice>, tempfile::TempDir, Options) {
    let dev = sim(2 * MIB, 18);
    let dir = tempfile::tempdir().unwrap();
    (dev, dir, small_options().with_write_cache_bytes(cache))
}

/// Fills a small store (2 MiB: superblock, 3 groups, 1 spare, 3 units of log segments)
/// with distinct keys until `StoreFull`: every acknowledged key reads back, the store
/// keeps refusing with the same clear error and is not poisoned; without a write cache
/// (every acknowledged put committed) everything is there after a reopen.
fn store_full(cache: u64) {
    let (dev, dir, o) = full_store(cache);
    let db = Db::format_device(dev.clone(), dir.path(), &o).unwrap();
    let (model, full_at) = fill_until_full(&db, cache);
    let mut refused = Model::new();
    refused.insert(key(full_at), value(full_at, 1, 1000));
    verify_allowing(&db, &model, &refused);
    // A refused put took no space, and groups fill up one by one (a group's chain has
    // a limit), so a key of a group with room left may still fit; soon every group is
    // out of room and puts keep being refused.
    let mut model = model;
    let mut refusals = 0;
    for i in 20_000..20_200u32 {
        let v = value(i, 1, 1000);
        match db.put(&key(i), &v) {
            Ok(()) => {
                model.insert(key(i), v);
            }
            Err(e) => {
                assert!(matches!(e, Error::StoreFull { .. }), "{e:?}");
                refusals += 1;
                refused.insert(key(i), v);
            }
        }
    }
    assert!(
        refusals >= 100,
        "only {refusals} of 200 puts into a full store refused"
    );
    verify_allowing(&db, &model, &refused);
    assert!(db.stats().value_bytes_used > db.layout().value_capacity_bytes() / 2);
    let _ = db.close();
    if cache == 0 {
        let db = Db::open_device(dev, dir.path(), &o).unwrap();
        verify_allowing(&db, &model, &refused);
        let _ = db.close();
    }
}

#[test]
fn store_full_without_write_cache() {
    store_full(0);
}

#[test]
fn store_full_with_write_cache() {
    store_full(32 * KIB);
}

/// After `StoreFull`, deleting half of the keys (after a reopen, so no refused put
/// lingers) and GC make room for as many new ones.
#[test]
fn full_store_recovers_after_deletes() {
    for cache in [0, 32 * KIB] {
        let (dev, dir, o) = full_store(cache);
        let db = Db::format_device(dev.clone(), dir.path(), &o).unwrap();
        let (mut model, full_at) = fill_until_full(&db, cache);
        let _ = db.close();
        let db = Db::open_device(dev.clone(), dir.path(), &o).unwrap();
        // Writes acknowledged only into the write cache may be gone; read what is there.
        model.retain(|k, _| db.get(k).unwrap().is_some());
        let mut refused = Model::new();
        refused.insert(key(full_at), value(full_at, 1, 1000));
        verify_allowing(&db, &model, &refused);
        let victims: Vec<Vec<u8>> = model.keys().step_by(2).cloned().collect();
        for (n, k) in victims.iter().enumerate() {
            db.delete(k).unwrap_or_else(|e| {
                panic!(
                    "cache {cache}: delete {n} of {} in a full store: {e}",
                    victims.len()
                )
            });
            model.remove(k);
        }
        db.flush().unwrap();
        for n in 0..(victims.len() as u32 / 2) {
            let k = 30_000 + n;
            let v = value(k, 1, 1000);
            db.put(&key(k), &v)
                .unwrap_or_else(|e| panic!("cache {cache}: put {n} after deleting half: {e}"));
            model.insert(key(k), v);
        }
        db.flush().unwrap();
        let stats = db.stats();
        assert!(
            stats.gc_runs > 0 && stats.gc_bytes_reclaimed > 0,
            "{stats:?}"
        );
        verify_allowing(&db, &model, &refused);
        db.close().unwrap();
        let db = Db::open_device(dev, dir.path(), &o).unwrap();
        verify_allowing(&db, &model, &refused);
        db.close().unwrap();
    }
}

/// A put refused with `StoreFull` must not take effect: not visible to reads, and not
/// committed later by another write's flush.
#[test]
fn put_refused_with_store_full_does_not_take_effect() {
    for cache in [0, 32 * KIB] {
        let o = small_options().with_write_cache_bytes(cache);
        let (_dev, _dir, db) = format_sim(2 * MIB, 18, &o);
        let (_, full_at) = fill_until_full(&db, cache);
        let got = db.get(&key(full_at)).unwrap();
        assert!(
            got.is_none(),
            "cache {cache}: the refused put of key {full_at} reads back ({} bytes)",
            got.map_or(0, |g| g.len())
        );
    }
}

#[test]
fn eio_on_write_poisons_writes_and_reads_still_work() {
    for cache in [0, 64 * KIB] {
        let o = small_options().with_write_cache_bytes(cache);
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
        assert!(dev.fault_hits(fault) >= 1);
        assert!(
            matches!(first, Error::Device(DeviceError::Io { .. })),
            "{first:?}"
        );
        assert!(msg(&first).contains("Input/output error") || msg(&first).contains("EIO"));
        dev.clear_faults();
        // Every later write is refused, naming the first error.
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
                Error::Poisoned { first_error } => assert!(
                    matches!(**first_error, Error::Device(DeviceError::Io { op, .. }) if op.contains("write")),
                    "{first_error:?}"
                ),
                other => panic!("expected Poisoned, got {other:?}"),
            }
        }
        msg(&db.put(b"k", b"v").unwrap_err());
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
        assert!(db.collect_garbage().is_err(), "GC on a poisoned store");
        let _ = db.close();
        // After a power cycle the flushed data is all there.
        let dev = Arc::new(dev.crash());
        let db = Db::open_device(dev, dir.path(), &o).unwrap();
        verify(&db, &model);
        db.put(b"after-reopen", b"works again").unwrap();
        db.close().unwrap();
    }
}

#[test]
fn eio_on_flush_poisons_writes() {
    let o = small_options().with_write_cache_bytes(0);
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

/// Records that fill their blocks exactly (each written alone, without a write cache):
/// a flipped bit anywhere in a read lands in the record.
fn block_filling_value(i: u32, blocks: usize) -> Vec<u8> {
    value(i, 3, blocks * 4096 - 20 - key(i).len())
}

#[test]
fn bit_flip_on_read_is_an_error_never_a_wrong_value() {
    let o = small_options().with_write_cache_bytes(0);
    let (dev, _dir, db) = format_sim(8 * MIB, 21, &o);
    let mut model = Model::new();
    for i in 0..60 {
        let v = block_filling_value(i, 1 + (i as usize % 3));
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
    // Exactly-filling records: every get fails with a checksum or corruption error.
    for (k, _) in &model {
        match db.get(k) {
            Err(Error::ChecksumMismatch { .. } | Error::Corruption { .. }) => {}
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
            Err(Error::ChecksumMismatch { .. } | Error::Corruption { .. }) => errors += 1,
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
                assert!(
                    matches!(e, Error::ChecksumMismatch { .. } | Error::Corruption { .. }),
                    "{e:?}"
                );
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

#[test]
fn stored_bit_rot_is_an_error_and_gc_refuses_to_spread_it() {
    let o = small_options().with_write_cache_bytes(0);
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
    assert!(
        matches!(e, Error::ChecksumMismatch { .. } | Error::Corruption { .. }),
        "{e:?}"
    );
    msg(&e);
    for (k, mv) in &model {
        if *k != victim {
            assert_eq!(db.get(k).unwrap().as_deref(), Some(&mv[..]));
        }
    }
    // GC of the damaged group must not copy the damage or drop the key (which would
    // read as a delete): it stops with an error.
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
    assert!(
        matches!(e, Error::ChecksumMismatch { .. } | Error::Corruption { .. }),
        "after GC: {e:?}"
    );
    for (k, mv) in &model {
        if *k != victim {
            assert_eq!(db.get(k).unwrap().as_deref(), Some(&mv[..]));
        }
    }
    let _ = db.close();
}

/// An I/O error while GC copies a group: the GC fails with the device error, the
/// store refuses writes from then on, reads keep working, and after a power cycle
/// everything flushed is there (the old chain was never touched).
#[test]
fn eio_during_gc_loses_nothing() {
    let o = small_options().with_write_cache_bytes(16 * KIB);
    let (dev, dir, db) = format_sim(8 * MIB, 23, &o);
    let mut model = Model::new();
    for round in 0..4u32 {
        for i in 0..200u32 {
            let v = value(i, round, 1500);
            db.put(&key(i), &v).unwrap();
            model.insert(key(i), v);
        }
    }
    db.flush().unwrap();
    dev.inject(FaultRule::eio().on(OpKind::Write)).unwrap();
    let e = db.collect_garbage().unwrap_err();
    assert!(matches!(e, Error::Device(_)), "{e:?}");
    msg(&e);
    dev.clear_faults();
    assert!(matches!(
        db.put(b"after", b"gc failure"),
        Err(Error::Poisoned { .. })
    ));
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

/// A put whose flush failed with an I/O error (no write cache) is not acknowledged,
/// and never reads back: not before the reopen, not after.
#[test]
fn failed_put_after_eio_visibility() {
    let o = small_options().with_write_cache_bytes(0);
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

/// Writers racing into a full store, some with sync writes, with and without the write
/// cache: a write refused with `StoreFull` never reads back, whoever's flush ran last.
#[test]
fn concurrent_puts_refused_with_store_full_do_not_take_effect() {
    for round in 0..2u64 {
        let dev = sim(2 * MIB, 30 + round);
        let dir = tempfile::tempdir().unwrap();
        let cache = if round % 2 == 0 { 0 } else { 32 * KIB };
        let o = small_options().with_write_cache_bytes(cache);
        let db = Arc::new(Db::format_device(dev, dir.path(), &o).unwrap());
        let writers: Vec<_> = (0..4u32)
            .map(|t| {
                let db = db.clone();
                std::thread::spawn(move || {
                    let mut refused = Vec::new();
                    for i in 0..700u32 {
                        let k = t * 1_000_000 + i;
                        let v = value(k, 1, 1000);
                        let r = if i % 3 == 0 {
                            let mut b = WriteBatch::new();
                            b.put(&key(k), &v);
                            db.write_sync(b)
                        } else {
                            db.put(&key(k), &v)
                        };
                        match r {
                            Ok(()) => {}
                            Err(Error::StoreFull { .. }) => refused.push(k),
                            Err(e) => panic!("writer {t}: {e:?}"),
                        }
                    }
                    refused
                })
            })
            .collect();
        let refused: Vec<u32> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        assert!(!refused.is_empty(), "round {round}: the store never filled");
        let _ = db.flush();
        let back = refused
            .iter()
            .filter(|k| db.get(&key(**k)).unwrap().is_some())
            .count();
        assert_eq!(
            back,
            0,
            "round {round}: {back} of {} refused puts read back",
            refused.len()
        );
    }
}

/// A full vlog store still takes deletes (they write nothing to the log).
#[test]
fn full_vlog_store_takes_deletes() {
    let dev = sim(2 * MIB, 18);
    let dir = tempfile::tempdir().unwrap();
    let o = small_options()
        .with_mode(hashkv::Mode::VLog)
        .with_write_cache_bytes(0);
    let db = Db::format_device(dev, dir.path(), &o).unwrap();
    let mut n = 0u32;
    loop {
        match db.put(&key(n), &value(n, 1, 1000)) {
            Ok(()) => n += 1,
            Err(e) => {
                assert!(matches!(e, Error::StoreFull { .. }), "{e:?}");
                break;
            }
        }
    }
    assert!(n > 100, "full after {n} puts");
    for _ in 0..30 {
        let _ = db.collect_garbage();
    }
    for i in 0..n {
        db.delete(&key(i))
            .unwrap_or_else(|e| panic!("delete {i} of {n} in a full store: {e}"));
    }
    for i in 0..n / 2 {
        db.put(&key(50_000 + i), &value(50_000 + i, 1, 1000))
            .unwrap_or_else(|e| panic!("put {i} after deleting everything: {e}"));
    }
    db.close().unwrap();
}
