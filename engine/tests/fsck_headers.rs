//! `Db::check_headers` (the first part of `hashkv fsck`): a damaged or missing
//! superblock copy or stripe member header is found even though the store still opens
//! (or cannot), and `repair` rewrites it from what is intact.

mod common;

use common::{disk_dir, key, small_options, value, verify, Model, KIB, MIB};
use hashkv::Db;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const TWIN_AT: u64 = 128 * KIB;

fn load(db: &Db, n: u32) -> Model {
    let mut model = Model::new();
    for i in 0..n {
        let v = value(i, 3, [30, 900, 2000][(i % 3) as usize]);
        db.put(&key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    model
}

/// Overwrites `len` bytes at `offset` of a device file with a byte pattern.
fn scribble(path: &Path, offset: u64, len: usize, byte: u8) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&vec![byte; len]).unwrap();
    f.sync_all().unwrap();
}

fn read_block(path: &Path, offset: u64) -> Vec<u8> {
    let image = std::fs::read(path).unwrap();
    image[offset as usize..offset as usize + 4096].to_vec()
}

fn single_store() -> (tempfile::TempDir, PathBuf, PathBuf, Model) {
    let dir = disk_dir();
    let dev = dir.path().join("dev.img");
    let meta = dir.path().join("meta");
    let o = small_options().with_create_device_bytes(Some(8 * MIB));
    let db = Db::format(&[dev.clone()], &meta, &o).unwrap();
    let model = load(&db, 40);
    db.close().unwrap();
    (dir, dev, meta, model)
}

#[test]
fn a_healthy_store_has_clean_headers() {
    let (_dir, dev, _meta, _) = single_store();
    let report = Db::check_headers(&[dev], false).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn a_damaged_superblock_copy_is_found_and_rewritten_from_its_twin() {
    for (damaged_at, twin_at) in [(0, TWIN_AT), (TWIN_AT, 0)] {
        let (_dir, dev, meta, model) = single_store();
        let good = read_block(&dev, twin_at);
        scribble(&dev, damaged_at + 16, 40, 0xA5);
        // The store still opens from the other copy: only a check finds the damage.
        Db::open_formatted(&[dev.clone()], &meta, &small_options())
            .unwrap()
            .close()
            .unwrap();
        let report = Db::check_headers(&[dev.clone()], false).unwrap();
        assert_eq!(report.damage.len(), 1, "{report:?}");
        assert!(
            report.damage[0].contains(&format!("superblock copy at offset {damaged_at}")),
            "{report:?}"
        );
        assert!(report.repaired.is_empty());
        let report = Db::check_headers(&[dev.clone()], true).unwrap();
        assert!(
            report.all_repaired() && report.repaired.len() == 1,
            "{report:?}"
        );
        assert_eq!(
            read_block(&dev, damaged_at),
            good,
            "rewritten from the twin"
        );
        assert!(Db::check_headers(&[dev.clone()], false).unwrap().is_clean());
        let db = Db::open_formatted(&[dev], &meta, &small_options()).unwrap();
        verify(&db, &model);
        db.close().unwrap();
    }
}

#[test]
fn a_wiped_copy_is_missing_and_rewritten() {
    let (_dir, dev, _meta, _) = single_store();
    scribble(&dev, 0, 4096, 0);
    let report = Db::check_headers(&[dev.clone()], true).unwrap();
    assert!(report.damage[0].contains("missing"), "{report:?}");
    assert_eq!(&read_block(&dev, 0)[..8], b"HASHKVSB");
}

#[test]
fn a_damaged_member_header_is_found_and_rewritten() {
    let dir = disk_dir();
    let members: Vec<PathBuf> = (0..3)
        .map(|i| {
            let p = dir.path().join(format!("m{i}.img"));
            std::fs::File::create(&p)
                .unwrap()
                .set_len(4 * MIB + 4 * KIB)
                .unwrap();
            p
        })
        .collect();
    let meta = dir.path().join("meta");
    let o = small_options();
    let db = Db::format(&members, &meta, &o).unwrap();
    let model = load(&db, 60);
    db.close().unwrap();
    let header = read_block(&members[1], 0);
    scribble(&members[1], 100, 8, 0x3C);
    // A damaged header keeps the store from opening.
    assert!(Db::open(&members, &meta, &o).is_err());
    let report = Db::check_headers(&members, false).unwrap();
    assert_eq!(report.damage.len(), 1, "{report:?}");
    assert!(
        report.damage[0].contains("member header")
            && report.damage[0].contains(&members[1].display().to_string()),
        "{report:?}"
    );
    let report = Db::check_headers(&members, true).unwrap();
    assert!(report.all_repaired(), "{report:?}");
    assert_eq!(read_block(&members[1], 0), header);
    let db = Db::open(&members, &meta, &o).unwrap();
    verify(&db, &model);
    db.close().unwrap();
    // A superblock copy of a stripe (on member 0, after its header) likewise.
    scribble(&members[0], 4096 + 20, 10, 0x77);
    let report = Db::check_headers(&members, true).unwrap();
    assert!(
        report.damage.len() == 1 && report.all_repaired(),
        "{report:?}"
    );
    assert!(Db::check_headers(&members, false).unwrap().is_clean());
    // Members given in the wrong order are reported, and nothing is rewritten.
    let swapped = vec![members[1].clone(), members[0].clone(), members[2].clone()];
    let report = Db::check_headers(&swapped, true).unwrap();
    let misplaced = report
        .damage
        .iter()
        .filter(|d| d.contains("names member"))
        .count();
    assert_eq!(misplaced, 2, "{report:?}");
    assert!(report.repaired.is_empty(), "{report:?}");
    let db = Db::open(&members, &meta, &o).unwrap();
    verify(&db, &model);
    db.close().unwrap();
}
