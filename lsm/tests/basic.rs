//! Basic behaviour of the public API: writes, reads, scans, flush, reopen, snapshots.

use std::ops::Bound;

use hashkv_lsm::{Db, Direction, Options, WriteBatch, WriteOptions};

fn small_options() -> Options {
    Options {
        memtable_bytes_max: 16 << 10,
        l0_compaction_trigger: 2,
        l0_slowdown_trigger: 4,
        l0_stop_trigger: 6,
        level1_bytes_max: 64 << 10,
        table_target_bytes: 16 << 10,
        block_bytes: 512,
        block_cache_bytes: 256 << 10,
        ..Options::default()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:08}").into_bytes()
}

fn scan(db: &Db, dir: Direction) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.range(Bound::Unbounded, Bound::Unbounded, dir, None)
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn put_get_delete_scan_across_flushes_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let wo = WriteOptions::default();
    {
        let db = Db::open(tmp.path(), small_options()).unwrap();
        for i in 0..5000 {
            db.put(&key(i), format!("v{i}").as_bytes(), &wo).unwrap();
        }
        for i in (0..5000).step_by(3) {
            db.delete(&key(i), &wo).unwrap();
        }
        assert_eq!(db.get(&key(1)).unwrap(), Some(b"v1".to_vec()));
        assert_eq!(db.get(&key(3)).unwrap(), None);
        let s = db.stats();
        assert!(s.flushes > 0, "small memtables must have flushed: {s:?}");
        db.close().unwrap();
    }
    let db = Db::open(tmp.path(), small_options()).unwrap();
    let expected: Vec<(Vec<u8>, Vec<u8>)> = (0..5000)
        .filter(|i| i % 3 != 0)
        .map(|i| (key(i), format!("v{i}").into_bytes()))
        .collect();
    assert_eq!(scan(&db, Direction::Forward), expected);
    let mut rev = expected.clone();
    rev.reverse();
    assert_eq!(scan(&db, Direction::Backward), rev);
    db.compact_range(None, None).unwrap();
    assert_eq!(scan(&db, Direction::Forward), expected);
    let s = db.stats();
    assert_eq!(
        s.table_count_per_level[0], 0,
        "compact_range empties L0: {s:?}"
    );
}

#[test]
fn snapshot_sees_old_state_and_batch_is_atomic() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), small_options()).unwrap();
    let wo = WriteOptions { sync: true };
    db.put(b"a", b"1", &wo).unwrap();
    let snap = db.snapshot();
    let mut b = WriteBatch::new();
    b.put(b"a", b"2");
    b.put(b"b", b"3");
    b.delete(b"c");
    db.write(&b, &wo).unwrap();
    assert_eq!(db.get_at(b"a", &snap).unwrap(), Some(b"1".to_vec()));
    assert_eq!(db.get_at(b"b", &snap).unwrap(), None);
    db.flush().unwrap();
    db.compact_range(None, None).unwrap();
    assert_eq!(db.get_at(b"a", &snap).unwrap(), Some(b"1".to_vec()));
    assert_eq!(db.get(b"a").unwrap(), Some(b"2".to_vec()));
    let at_snap: Vec<_> = db
        .range(
            Bound::Unbounded,
            Bound::Unbounded,
            Direction::Forward,
            Some(&snap),
        )
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(at_snap, vec![(b"a".to_vec(), b"1".to_vec())]);
}
