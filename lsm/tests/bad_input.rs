//! Bad input gets a clear error and changes nothing on disk: oversized keys and values,
//! a locked directory, a directory holding something else, a newer format version;
//! damaged files are reported, never read as wrong answers; an I/O error poisons.

use std::collections::BTreeMap;
use std::path::Path;

use hashkv_lsm::decoders::reversion;
use hashkv_lsm::{Db, LsmError, Options, WriteBatch, WriteOptions, KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// Every file of the directory with its content.
fn dir_state(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn files_named(dir: &Path, pred: impl Fn(&str) -> bool) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| pred(&p.file_name().unwrap().to_string_lossy()))
        .collect();
    v.sort();
    v
}

/// A closed tree with tables and a WAL holding unflushed writes.
/// Every entry, in order, at the latest write.
fn everything(db: &Db) -> hashkv_lsm::RangeIter {
    db.range(
        std::ops::Bound::Unbounded,
        std::ops::Bound::Unbounded,
        hashkv_lsm::Direction::Forward,
        None,
    )
    .unwrap()
}

fn populated(dir: &Path) {
    let db = Db::open(dir, Options::default()).unwrap();
    for i in 0..100u32 {
        db.put(
            format!("k{i:03}").as_bytes(),
            b"value",
            &WriteOptions::default(),
        )
        .unwrap();
    }
    db.flush().unwrap();
    db.put(b"unflushed", b"x", &WriteOptions::default())
        .unwrap();
    db.close().unwrap();
}

#[test]
fn key_and_value_limits_are_enforced_and_nothing_is_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), Options::default()).unwrap();
    let wo = WriteOptions::default();
    let big_key = vec![b'k'; KEY_BYTES_MAX + 1];
    match db.put(&big_key, b"v", &wo) {
        Err(LsmError::KeyTooLarge { len, max }) => {
            assert_eq!((len, max), (KEY_BYTES_MAX + 1, KEY_BYTES_MAX))
        }
        other => panic!("expected KeyTooLarge, got {other:?}"),
    }
    let msg = db.put(&big_key, b"v", &wo).unwrap_err().to_string();
    assert!(
        msg.contains("1025") && msg.contains("1024"),
        "message names sizes: {msg}"
    );
    db.put(&vec![b'k'; KEY_BYTES_MAX], b"v", &wo).unwrap();
    assert!(matches!(
        db.delete(&big_key, &wo),
        Err(LsmError::KeyTooLarge { .. })
    ));
    assert!(matches!(db.put(b"", b"v", &wo), Err(LsmError::KeyEmpty)));
    assert!(matches!(
        db.put(b"k", &vec![0u8; VALUE_BYTES_MAX + 1], &wo),
        Err(LsmError::ValueTooLarge { .. })
    ));
    // A batch with one bad entry applies none of its entries.
    let mut b = WriteBatch::new();
    b.put(b"good", b"1");
    b.put(&big_key, b"2");
    assert!(matches!(
        db.write(&b, &wo),
        Err(LsmError::KeyTooLarge { .. })
    ));
    assert_eq!(db.get(b"good").unwrap(), None);
    let seq = db.latest_sequence();
    assert_eq!(seq, 1, "only the one valid put took a sequence number");
}

#[test]
fn second_opener_is_refused_without_changes() {
    let tmp = tempfile::tempdir().unwrap();
    populated(tmp.path());
    let db = Db::open(tmp.path(), Options::default()).unwrap();
    let before = dir_state(tmp.path());
    match Db::open(tmp.path(), Options::default()) {
        Err(LsmError::Locked { dir }) => assert_eq!(dir, tmp.path()),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    assert_eq!(dir_state(tmp.path()), before);
    drop(db);
    // Once closed, it opens again.
    Db::open(tmp.path(), Options::default())
        .unwrap()
        .close()
        .unwrap();
}

#[test]
fn foreign_directory_is_refused_without_changes() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("photo.jpg"), b"not ours").unwrap();
    std::fs::write(tmp.path().join("000001.sst"), b"not ours either").unwrap();
    let before = dir_state(tmp.path());
    match Db::open(tmp.path(), Options::default()) {
        Err(LsmError::NotAnLsmDirectory { found, .. }) => {
            assert!(found.contains("photo.jpg"), "{found}")
        }
        other => panic!("expected NotAnLsmDirectory, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        dir_state(tmp.path()),
        before,
        "not even a LOCK file may appear"
    );

    let file = tmp.path().join("photo.jpg");
    assert!(matches!(
        Db::open(&file, Options::default()),
        Err(LsmError::NotAnLsmDirectory { .. })
    ));
    assert_eq!(dir_state(tmp.path()), before);
}

#[test]
fn create_and_exists_options_are_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let no_create = Options {
        create_if_missing: false,
        ..Options::default()
    };
    assert!(matches!(
        Db::open(&missing, no_create),
        Err(LsmError::NotFound { .. })
    ));
    assert!(!missing.exists());
    populated(&missing);
    let before = dir_state(&missing);
    let exclusive = Options {
        error_if_exists: true,
        ..Options::default()
    };
    assert!(matches!(
        Db::open(&missing, exclusive),
        Err(LsmError::AlreadyExists { .. })
    ));
    assert_eq!(dir_state(&missing), before);
    let bad = Options {
        l0_slowdown_trigger: 1,
        l0_compaction_trigger: 4,
        ..Options::default()
    };
    assert!(matches!(
        Db::open(&missing, bad),
        Err(LsmError::InvalidOptions { .. })
    ));
}

fn expect_newer_format(dir: &Path, what: &str, current: u32) {
    let before = dir_state(dir);
    match Db::open(dir, Options::default()) {
        Err(LsmError::NewerFormat {
            found,
            supported,
            file,
        }) => {
            assert_eq!((found, supported), (current + 1, current), "{what}");
            assert!(
                file.starts_with(dir),
                "{what}: error names the file: {file:?}"
            );
        }
        other => panic!("{what}: expected NewerFormat, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        dir_state(dir),
        before,
        "{what}: refused open changed the directory"
    );
}

#[test]
fn newer_format_versions_are_refused_without_changes() {
    for target in ["manifest", "table", "wal"] {
        let tmp = tempfile::tempdir().unwrap();
        populated(tmp.path());
        let path = match target {
            "manifest" => files_named(tmp.path(), |n| n.starts_with("MANIFEST-")).remove(0),
            "table" => files_named(tmp.path(), |n| n.ends_with(".sst")).remove(0),
            _ => files_named(tmp.path(), |n| n.ends_with(".wal"))
                .pop()
                .unwrap(),
        };
        let mut data = std::fs::read(&path).unwrap();
        let current = match target {
            "table" => reversion::table_version(&data),
            _ => reversion::header_version(&data),
        };
        match target {
            "table" => reversion::table_footer(&mut data, current + 1),
            _ => reversion::header(&mut data, current + 1),
        }
        std::fs::write(&path, &data).unwrap();
        expect_newer_format(tmp.path(), target, current);
    }
}

/// Tables of format 1 (flat filters; format 2's are blocked) are still read: a tree
/// whose tables are all rewritten as format 1 wrote them answers every get and scan
/// as before, and says absent keys are absent.
#[test]
fn tables_of_format_1_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let key = |i: u32| format!("k{i:06}").into_bytes();
    {
        let db = Db::open(tmp.path(), Options::default()).unwrap();
        for i in 0..5000u32 {
            db.put(&key(i * 2), &i.to_le_bytes(), &WriteOptions::default())
                .unwrap();
        }
        db.flush().unwrap();
        db.close().unwrap();
    }
    let tables = files_named(tmp.path(), |n| n.ends_with(".sst"));
    assert!(!tables.is_empty());
    for path in &tables {
        let data = std::fs::read(path).unwrap();
        assert_eq!(reversion::table_version(&data), 2);
        let old = reversion::table_as_format_1(&data).unwrap();
        assert_eq!(reversion::table_version(&old), 1);
        // A flat filter that does its work: absent keys mostly ruled out (a filter
        // admitting everything, or one read as blocked, would not).
        let filter = reversion::table_filter(&old).unwrap();
        let may = |k: &[u8]| hashkv_lsm::decoders::filter_may_contain(&filter, 1, k).unwrap();
        let absent_passed = (0..5000u32).filter(|&i| may(&key(i * 2 + 1))).count();
        assert!(absent_passed < 500, "{absent_passed} absent keys passed");
        std::fs::write(path, &old).unwrap();
    }
    let db = Db::open(tmp.path(), Options::default()).unwrap();
    for i in 0..5000u32 {
        assert_eq!(db.get(&key(i * 2)).unwrap(), Some(i.to_le_bytes().to_vec()));
        assert_eq!(db.get(&key(i * 2 + 1)).unwrap(), None);
    }
    assert_eq!(everything(&db).count(), 5000);
    db.close().unwrap();
}

#[test]
fn damaged_table_block_is_an_error_not_a_wrong_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options {
        block_cache_bytes: 0,
        block_bytes: 256,
        ..Options::default()
    };
    {
        let db = Db::open(tmp.path(), opts.clone()).unwrap();
        for i in 0..2000u32 {
            db.put(
                format!("k{i:05}").as_bytes(),
                format!("value{i}").as_bytes(),
                &WriteOptions::default(),
            )
            .unwrap();
        }
        db.flush().unwrap();
        db.close().unwrap();
    }
    let table = files_named(tmp.path(), |n| n.ends_with(".sst")).remove(0);
    let mut data = std::fs::read(&table).unwrap();
    // Flip a bit in the first data block (the start of the file).
    data[100] ^= 0x08;
    std::fs::write(&table, &data).unwrap();
    let db = Db::open(tmp.path(), opts).unwrap();
    let mut errors = 0;
    for i in 0..2000u32 {
        match db.get(format!("k{i:05}").as_bytes()) {
            Ok(Some(v)) => assert_eq!(
                v,
                format!("value{i}").into_bytes(),
                "wrong value for k{i:05}"
            ),
            Ok(None) => panic!("k{i:05} silently missing"),
            Err(LsmError::ChecksumMismatch { file, .. }) => {
                assert_eq!(file, table);
                errors += 1;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(errors > 0, "the damaged block was never read");
    let scan: Result<Vec<_>, _> = everything(&db).collect();
    assert!(matches!(scan, Err(LsmError::ChecksumMismatch { .. })));
}

#[test]
fn damaged_manifest_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    populated(tmp.path());
    let m = files_named(tmp.path(), |n| n.starts_with("MANIFEST-")).remove(0);
    let mut data = std::fs::read(&m).unwrap();
    // Inside the payload of the first edit (header 16 bytes, record header 8), which is
    // followed by the flush's edit. (Damage to the last record looks like a torn
    // append and is ignored, as in LevelDB: see manifest/mod.rs.)
    data[26] ^= 0x01;
    std::fs::write(&m, &data).unwrap();
    let before = dir_state(tmp.path());
    assert!(matches!(
        Db::open(tmp.path(), Options::default()),
        Err(LsmError::ChecksumMismatch { .. } | LsmError::Corruption { .. })
    ));
    assert_eq!(dir_state(tmp.path()), before);
}

#[test]
fn io_error_poisons_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let db = Db::open(&dir, Options::default()).unwrap();
    db.put(b"a", b"1", &WriteOptions::default()).unwrap();
    // With the directory gone, the flush cannot create its table (nor the next WAL).
    std::fs::remove_dir_all(&dir).unwrap();
    let err = db.flush().unwrap_err();
    assert!(
        matches!(err, LsmError::Io { .. } | LsmError::Poisoned { .. }),
        "{err:?}"
    );
    match db.put(b"b", b"2", &WriteOptions::default()) {
        Err(LsmError::Poisoned { cause }) => assert!(!cause.is_empty()),
        other => panic!("expected Poisoned, got {other:?}"),
    }
    // Reads of what is in memory still work.
    assert_eq!(db.get(b"a").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn damage_in_an_older_wal_followed_by_records_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let db = Db::open(tmp.path(), Options::default()).unwrap();
        for i in 0..200u32 {
            db.put(
                format!("k{i:03}").as_bytes(),
                &[9u8; 40],
                &WriteOptions::default(),
            )
            .unwrap();
        }
        db.close().unwrap();
    }
    // Two WALs with records (the second a copy with the next file number), the first
    // damaged in the middle: a synced WAL cannot be torn, so this is corruption.
    let wal = files_named(tmp.path(), |n| n.ends_with(".wal"))
        .pop()
        .unwrap();
    let number: u64 = wal.file_stem().unwrap().to_string_lossy().parse().unwrap();
    let mut data = std::fs::read(&wal).unwrap();
    std::fs::write(tmp.path().join(format!("{:06}.wal", number + 1)), &data).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x20;
    std::fs::write(&wal, &data).unwrap();
    let before = dir_state(tmp.path());
    match Db::open(tmp.path(), Options::default()) {
        Err(LsmError::Corruption { file, .. }) => assert_eq!(file, wal),
        other => panic!("expected Corruption, got {:?}", other.map(|_| ())),
    }
    assert_eq!(dir_state(tmp.path()), before);
}

#[test]
fn torn_tail_of_the_last_wal_is_cut_and_the_rest_recovered() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), Options::default()).unwrap();
    for i in 0..100u32 {
        db.put(
            format!("k{i:03}").as_bytes(),
            b"v",
            &WriteOptions { sync: i == 49 },
        )
        .unwrap();
    }
    let (wal, durable) = db.wal_durable_point_for_test();
    db.sync_wal().unwrap();
    db.crash_for_test();
    let len = std::fs::metadata(&wal).unwrap().len();
    assert!(len > durable);
    // Tear the last record in half.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let db = Db::open(tmp.path(), Options::default()).unwrap();
    assert_eq!(
        db.get(b"k049").unwrap(),
        Some(b"v".to_vec()),
        "durable write lost"
    );
    assert_eq!(db.get(b"k098").unwrap(), Some(b"v".to_vec()));
    assert_eq!(db.get(b"k099").unwrap(), None, "torn record replayed");
    assert_eq!(db.latest_sequence(), 99);
}
