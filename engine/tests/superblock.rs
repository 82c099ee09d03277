//! The superblock's copies: a store opens from either copy whatever its main segment
//! size, and stores formatted before the twin moved to its fixed offset still open.

mod common;

use common::{key, sim, small_options, value, verify, write_raw, Model, KIB, MIB};
use hashkv::{Db, Error};

/// Offset of the superblock's twin copy: FORMAT.md, "Where things live".
const TWIN_AT: u64 = 128 * KIB;

fn load(db: &Db, n: u32) -> Model {
    let mut model = Model::new();
    for i in 0..n {
        let v = value(i, 1, [20, 500, 3000][(i % 3) as usize]);
        db.put(&key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    model
}

/// Issue 10: a main segment size that is not a power of two (96 MiB, as
/// `--main-segment-mib 96` gives) with the first copy damaged must still open.
#[test]
fn a_store_with_96_mib_main_segments_opens_from_its_twin() {
    let o = small_options()
        .with_main_segment_bytes(96 * MIB)
        .with_log_segment_bytes(MIB);
    let dev = sim(4 * 96 * MIB, 1);
    let dir = tempfile::tempdir().unwrap();
    let db = Db::format_device(dev.clone(), dir.path(), &o).unwrap();
    let model = load(&db, 60);
    db.close().unwrap();
    dev.corrupt_bit(50, 3).unwrap();
    let db = Db::open_device(dev.clone(), dir.path(), &o).unwrap();
    verify(&db, &model);
    db.close().unwrap();
    // The first copy wiped out entirely (not just damaged) reads the same.
    write_raw(&dev, 0, &[0u8; 4096]);
    let probed = Db::open_device(dev.clone(), dir.path(), &o).unwrap();
    assert_eq!(probed.superblock().layout.main_segment_bytes, 96 * MIB);
    probed.close().unwrap();
}

/// The twin lies at the same offset whatever the segment sizes.
#[test]
fn the_twin_lies_at_a_fixed_offset() {
    for main in [256 * KIB, MIB, 3 * MIB, 64 * MIB] {
        let o = small_options().with_main_segment_bytes(main);
        let dev = sim(8 * main, 2);
        let dir = tempfile::tempdir().unwrap();
        Db::format_device(dev.clone(), dir.path(), &o)
            .unwrap()
            .close()
            .unwrap();
        let first = dev.peek(0, 4096).unwrap();
        assert_eq!(&first[..8], b"HASHKVSB");
        assert!(
            dev.peek(TWIN_AT, 4096).unwrap() == first,
            "main {main}: no twin at {TWIN_AT}"
        );
    }
}

/// Main segments too small to hold the twin in the superblock's unit are refused at
/// format, by name.
#[test]
fn main_segments_below_the_minimum_are_refused() {
    let o = small_options()
        .with_main_segment_bytes(128 * KIB)
        .with_log_segment_bytes(16 * KIB);
    let dir = tempfile::tempdir().unwrap();
    let e = Db::format_device(sim(8 * MIB, 3), &dir.path().join("m"), &o)
        .err()
        .unwrap();
    assert!(matches!(e, Error::InvalidOptions { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("main_segment_bytes") && text.contains("262144"),
        "{text}"
    );
}

/// A store formatted before the twin moved keeps its twin at half a main segment: it
/// opens with its first copy intact or damaged (found among the power-of-two sizes
/// that format accepted by default).
#[test]
fn stores_with_the_twin_at_half_a_main_segment_still_open() {
    let main = 4 * MIB;
    let o = small_options().with_main_segment_bytes(main);
    let dev = sim(16 * MIB, 4);
    let dir = tempfile::tempdir().unwrap();
    let db = Db::format_device(dev.clone(), dir.path(), &o).unwrap();
    let model = load(&db, 40);
    db.close().unwrap();
    // Rewrite the image as the old format left it: the twin at main / 2 only.
    let copy = dev.peek(0, 4096).unwrap();
    write_raw(&dev, TWIN_AT, &[0u8; 4096]);
    write_raw(&dev, main / 2, &copy);
    let db = Db::open_device(dev.clone(), dir.path(), &o).unwrap();
    verify(&db, &model);
    db.close().unwrap();
    dev.corrupt_bit(60, 1).unwrap();
    let db = Db::open_device(dev.clone(), dir.path(), &o).unwrap();
    verify(&db, &model);
    db.close().unwrap();
}

/// Two valid copies that disagree are refused rather than one picked.
#[test]
fn copies_that_disagree_are_refused() {
    let o = small_options();
    let dev = sim(8 * MIB, 5);
    let dir = tempfile::tempdir().unwrap();
    Db::format_device(dev.clone(), dir.path(), &o)
        .unwrap()
        .close()
        .unwrap();
    // Another valid superblock (another stripe uuid) in the twin's place.
    let mut other = dev.peek(0, 4096).unwrap();
    other[16] ^= 0xff;
    let crc = crc32c::crc32c(&other[..92]);
    other[92..96].copy_from_slice(&crc.to_le_bytes());
    write_raw(&dev, TWIN_AT, &other);
    let e = Db::open_device(dev, dir.path(), &o).err().unwrap();
    assert!(e.to_string().contains("disagree"), "{e}");
}
