//! Opens that must be refused: a device that is not ours, a store opened with other
//! parameters or another store's metadata directory, a second opener, a format version
//! newer than this build. Each refusal is a typed error that names what is wrong, and
//! the store opens as before with the right arguments. Tests of a formatted store run
//! in every mode (the mode is part of the format); the two that never format a store
//! run once, since no mode is involved before a superblock is found.

mod common;

use common::{
    disk_dir, format_sim, is_corruption, load, msg, sim, small_options, small_superblock_offsets,
    value, verify, verify_plus, write_raw, KIB, MIB,
};
use hashkv::{Db, Error, Mode};
use hashkv_blockdev::sim::SimDevice;
use hashkv_blockdev::DeviceError;
use hashkv_lsm::LsmError;

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
        matches!(e, Error::NotOurs { .. }) || is_corruption(&e),
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
        matches!(e, Error::NotOurs { .. }) || is_corruption(&e),
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

test_in_modes!(other_parameters_are_a_mismatch);
/// Other segment sizes, or another mode, than the store was formatted with.
fn other_parameters_are_a_mismatch(mode: Mode) {
    let o = small_options().with_mode(mode);
    let (dev, dir, db) = format_sim(16 * MIB, 9, &o);
    let model = load(&db, 100);
    db.close().unwrap();
    let mut others = vec![
        (o.clone().with_main_segment_bytes(512 * KIB), "main segment"),
        (o.clone().with_log_segment_bytes(32 * KIB), "log segment"),
        (
            o.clone()
                .with_main_segment_bytes(128 * KIB)
                .with_log_segment_bytes(8 * KIB),
            "main segment",
        ),
    ];
    for &other_mode in Mode::ALL.iter().filter(|&&m| m != mode) {
        others.push((o.clone().with_mode(other_mode), "mode"));
    }
    for (other, what) in others {
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

test_in_modes!(another_stores_metadata_dir_is_a_mismatch);
fn another_stores_metadata_dir_is_a_mismatch(mode: Mode) {
    let o = small_options().with_mode(mode);
    let (dev_a, dir_a, a) = format_sim(8 * MIB, 10, &o);
    let model_a = load(&a, 60);
    a.close().unwrap();
    let (dev_b, dir_b, b) = format_sim(8 * MIB, 11, &o);
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

test_in_modes!(second_opener_of_a_file_device_is_refused);
fn second_opener_of_a_file_device_is_refused(mode: Mode) {
    let dir = disk_dir();
    let file = dir.path().join("dev.img");
    let meta = dir.path().join("meta");
    let o = small_options()
        .with_mode(mode)
        .with_create_device_bytes(Some(8 * MIB));
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

test_in_modes!(second_opener_of_a_metadata_dir_is_refused);
fn second_opener_of_a_metadata_dir_is_refused(mode: Mode) {
    let o = small_options().with_mode(mode);
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

/// Sets the superblock's format version at both copies, with a valid checksum.
fn patch_version(dev: &SimDevice, version: u32) {
    for at in small_superblock_offsets() {
        let mut block = dev.peek(at, 4096).unwrap();
        assert_eq!(&block[..8], b"HASHKVSB");
        block[8..12].copy_from_slice(&version.to_le_bytes());
        let crc = crc32c::crc32c(&block[..92]);
        block[92..96].copy_from_slice(&crc.to_le_bytes());
        write_raw(dev, at, &block);
    }
}

test_in_modes!(newer_superblock_format_version_is_refused);
fn newer_superblock_format_version_is_refused(mode: Mode) {
    let o = small_options().with_mode(mode);
    let (dev, dir, db) = format_sim(8 * MIB, 15, &o);
    let model = load(&db, 50);
    db.close().unwrap();
    let newer = hashkv::FORMAT_VERSION + 1;
    patch_version(&dev, newer);
    let e = Db::open_device(dev.clone(), dir.path(), &o).err().unwrap();
    match &e {
        Error::NewerFormat { found, supported } => {
            assert_eq!((*found, *supported), (newer, newer - 1))
        }
        other => panic!("expected NewerFormat, got {other:?}"),
    }
    assert!(msg(&e).contains(&newer.to_string()));
    assert!(msg(&e).contains(&hashkv::FORMAT_VERSION.to_string()));
    // Formatting over it without force is refused too (it holds data).
    let e = Db::format_device(dev.clone(), &dir.path().join("x"), &o)
        .err()
        .unwrap();
    assert!(matches!(e, Error::DeviceNotEmpty { .. }), "{e:?}");
    // Versions 1 (the first format) and 3 (the one before pointers carried their
    // record's checksum) still open as lsm stores, with everything there; hashkv and
    // vlog stores of those versions are refused and must be formatted again.
    for old in [1, 3] {
        patch_version(&dev, old);
        match Db::open_device(dev.clone(), dir.path(), &o) {
            Ok(db) => {
                assert_eq!(mode, Mode::Lsm, "a version {old} {mode:?} store opened");
                verify(&db, &model);
                db.close().unwrap();
            }
            Err(e) => {
                assert_ne!(mode, Mode::Lsm, "{e:?}");
                assert!(
                    matches!(
                        e,
                        Error::Mismatch {
                            what: "format version of a store with a value store",
                            ..
                        }
                    ),
                    "{e:?}"
                );
                assert!(msg(&e).contains("checksum"), "{}", msg(&e));
            }
        }
    }
    // This build's version again: everything is there.
    patch_version(&dev, hashkv::FORMAT_VERSION);
    let db = Db::open_device(dev, dir.path(), &o).unwrap();
    verify(&db, &model);
    db.close().unwrap();
}

/// A hashkv store formatted before version 3 (a fixed main segment per group ahead of
/// the log segments) is refused by name, as every hashkv store before version 4 is.
#[test]
fn a_hashkv_store_with_fixed_main_segments_is_refused() {
    let o = small_options().with_mode(Mode::HashKv);
    let (dev, dir, db) = format_sim(8 * MIB, 16, &o);
    db.close().unwrap();
    for at in small_superblock_offsets() {
        let block = dev.peek(at, 4096).unwrap();
        let mut sb = hashkv::Superblock::decode(&block).unwrap().unwrap();
        let l = &mut sb.layout;
        l.main_slot_count = l.group_count + 1;
        l.log_region_offset = (1 + u64::from(l.main_slot_count)) * l.main_segment_bytes;
        l.log_segment_count =
            ((sb.device_bytes - l.log_region_offset) / l.log_segment_bytes) as u32;
        sb.format_version = 2;
        write_raw(&dev, at, &sb.encode(4096));
    }
    let e = Db::open_device(dev.clone(), dir.path(), &o).err().unwrap();
    assert!(matches!(e, Error::Mismatch { .. }), "{e:?}");
    assert!(msg(&e).contains("on device 2"), "{}", msg(&e));
    assert!(msg(&e).contains("reformat"), "{}", msg(&e));
}
