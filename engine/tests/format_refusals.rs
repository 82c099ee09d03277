//! Formats that must be refused: a device that holds data (without force), a metadata
//! directory that holds files or belongs to an open store, a device too small or of an
//! unaligned size. A refused format writes nothing to the device and creates no
//! metadata directory. Every test runs in every mode (the mode is part of the format).

mod common;

use common::{
    disk_dir, format_sim, load, msg, sim, small_options, small_superblock_offsets, verify,
    write_raw, KIB, MIB,
};
use hashkv::{Db, Error, Mode};
use hashkv_blockdev::DeviceError;
use hashkv_lsm::LsmError;

test_in_modes!(device_holding_data_needs_force);
fn device_holding_data_needs_force(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let o = small_options().with_mode(mode);
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
    write_raw(&dev2, small_superblock_offsets()[1], b"\x01\x02\x03");
    let e = Db::format_device(dev2, &dir.path().join("c"), &o)
        .err()
        .unwrap();
    assert!(matches!(e, Error::DeviceNotEmpty { .. }), "{e:?}");
}

test_in_modes!(formatting_into_a_non_empty_metadata_dir_is_refused);
fn formatting_into_a_non_empty_metadata_dir_is_refused(mode: Mode) {
    let o = small_options().with_mode(mode);
    let dev = sim(8 * MIB, 6);
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("precious.txt");
    std::fs::write(&precious, b"do not delete").unwrap();
    let e = Db::format_device(dev.clone(), dir.path(), &o)
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
    let e = Db::open_device(dev, dir.path(), &o).err().unwrap();
    assert!(matches!(e, Error::NotOurs { .. }), "{e:?}");
}

test_in_modes!(forced_format_does_not_delete_an_open_stores_metadata_dir);
/// Formatting another device with force into the metadata directory of a store that
/// is open must not delete that store's index from under it.
fn forced_format_does_not_delete_an_open_stores_metadata_dir(mode: Mode) {
    let o = small_options().with_mode(mode);
    let (dev_a, dir, a) = format_sim(8 * MIB, 13, &o);
    let model = load(&a, 80);
    a.flush().unwrap();
    let forced = o.clone().with_force_format(true);
    let e = Db::format_device(sim(8 * MIB, 14), dir.path(), &forced).err();
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

test_in_modes!(device_too_small);
fn device_too_small(mode: Mode) {
    let o = small_options().with_mode(mode);
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta");
    // 3 main-segment units: fewer than superblock + group + spare + reserved space.
    for size in [768 * KIB, 256 * KIB, 4 * KIB] {
        let e = Db::format_device(sim(size, 17), &meta, &o).err().unwrap();
        assert!(matches!(e, Error::DeviceTooSmall { .. }), "{size}: {e:?}");
        assert!(msg(&e).contains("main segments") || msg(&e).contains("room"));
        assert!(!meta.exists(), "metadata dir created by a refused format");
    }
    // Through a created file as well.
    let ddir = disk_dir();
    let file = ddir.path().join("small.img");
    let created = o.clone().with_create_device_bytes(Some(512 * KIB));
    let e = Db::format(&[file], &meta, &created).err().unwrap();
    assert!(matches!(e, Error::DeviceTooSmall { .. }), "{e:?}");
    assert!(!meta.exists());
}

test_in_modes!(file_of_unaligned_size_is_refused);
fn file_of_unaligned_size_is_refused(mode: Mode) {
    let dir = disk_dir();
    let file = dir.path().join("odd.img");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(8 * MIB + 100)
        .unwrap();
    let o = small_options().with_mode(mode);
    let e = Db::format(&[file], &dir.path().join("meta"), &o)
        .err()
        .unwrap();
    assert!(
        matches!(e, Error::Device(DeviceError::SizeUnaligned { .. })),
        "{e:?}"
    );
    assert!(msg(&e).contains("multiple"));
    assert!(!dir.path().join("meta").exists());
}
