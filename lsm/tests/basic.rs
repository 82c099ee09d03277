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

#[test]
fn public_types_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    fn clone<T: Clone>() {}
    send_sync::<Db>();
    send_sync::<hashkv_lsm::Snapshot>();
    clone::<hashkv_lsm::Snapshot>();
    send::<hashkv_lsm::RangeIter>();
    send_sync::<hashkv_lsm::LsmError>();
}

#[test]
fn leftovers_of_a_crash_are_removed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let wo = WriteOptions::default();
    let db = Db::open(tmp.path(), small_options()).unwrap();
    for i in 0..500 {
        db.put(&key(i), b"v", &wo).unwrap();
    }
    db.sync_wal().unwrap();
    db.crash_for_test();
    // What a crash in the middle of a flush or a manifest switch leaves behind.
    std::fs::write(tmp.path().join("999999.sst"), b"half a table").unwrap();
    std::fs::write(tmp.path().join("CURRENT.tmp"), b"MANIFEST-9").unwrap();
    let db = Db::open(tmp.path(), small_options()).unwrap();
    assert!(!tmp.path().join("999999.sst").exists());
    assert!(!tmp.path().join("CURRENT.tmp").exists());
    assert_eq!(scan(&db, Direction::Forward).len(), 500);
    // New files never reuse the orphan's number range (numbers only grow).
    db.put(&key(9999), b"v", &wo).unwrap();
    db.flush().unwrap();
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let newest_table = names
        .iter()
        .filter_map(|n| n.strip_suffix(".sst")?.parse::<u64>().ok())
        .max()
        .unwrap();
    assert!(newest_table > 999_999, "{names:?}");
}

#[test]
fn range_bounds_and_directions() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), small_options()).unwrap();
    let wo = WriteOptions::default();
    for i in 0..100 {
        db.put(&key(i), b"v", &wo).unwrap();
    }
    db.flush().unwrap();
    for i in (0..100).step_by(2) {
        db.delete(&key(i), &wo).unwrap();
    }
    let keys = |lo: Bound<&[u8]>, hi: Bound<&[u8]>, d: Direction| -> Vec<u32> {
        db.range(lo, hi, d, None)
            .unwrap()
            .map(|r| {
                String::from_utf8(r.unwrap().0).unwrap()[3..]
                    .parse()
                    .unwrap()
            })
            .collect()
    };
    let (k10, k20) = (key(11), key(21));
    assert_eq!(
        keys(
            Bound::Included(&k10),
            Bound::Included(&k20),
            Direction::Forward
        ),
        vec![11, 13, 15, 17, 19, 21]
    );
    assert_eq!(
        keys(
            Bound::Excluded(&k10),
            Bound::Excluded(&k20),
            Direction::Forward
        ),
        vec![13, 15, 17, 19]
    );
    assert_eq!(
        keys(
            Bound::Included(&k10),
            Bound::Included(&k20),
            Direction::Backward
        ),
        vec![21, 19, 17, 15, 13, 11]
    );
    assert_eq!(
        keys(
            Bound::Excluded(&k10),
            Bound::Excluded(&k20),
            Direction::Backward
        ),
        vec![19, 17, 15, 13]
    );
    assert_eq!(
        keys(
            Bound::Excluded(&k20),
            Bound::Excluded(&k10),
            Direction::Forward
        ),
        Vec::<u32>::new()
    );
    assert_eq!(
        keys(
            Bound::Unbounded,
            Bound::Excluded(&key(5)),
            Direction::Backward
        ),
        vec![3, 1]
    );
    // Streaming: a scan sees the state at its start even while writes continue.
    let mut it = db
        .range(Bound::Unbounded, Bound::Unbounded, Direction::Forward, None)
        .unwrap();
    assert_eq!(it.next().unwrap().unwrap().0, key(1));
    db.put(&key(2), b"new", &wo).unwrap();
    db.delete(&key(3), &wo).unwrap();
    assert_eq!(it.next().unwrap().unwrap().0, key(3));
}

#[test]
fn tombstones_are_dropped_at_the_bottom_unless_a_snapshot_needs_them() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), small_options()).unwrap();
    let wo = WriteOptions::default();
    for i in 0..2000 {
        db.put(&key(i), &[7u8; 32], &wo).unwrap();
    }
    db.compact_range(None, None).unwrap();
    let snap = db.snapshot();
    for i in 0..2000 {
        db.delete(&key(i), &wo).unwrap();
    }
    db.compact_range(None, None).unwrap();
    // The snapshot still reads every value, so values and tombstones are kept.
    assert_eq!(db.get_at(&key(1234), &snap).unwrap(), Some(vec![7u8; 32]));
    let held = db.stats().table_bytes_per_level.iter().sum::<u64>();
    assert!(
        held > 2000 * 32,
        "data needed by the snapshot was dropped: {held} bytes left"
    );
    assert_eq!(scan(&db, Direction::Forward), vec![]);
    drop(snap);
    db.compact_range(None, None).unwrap();
    let st = db.stats();
    assert_eq!(
        st.table_count_per_level.iter().sum::<usize>(),
        0,
        "tombstones and shadowed values remain: {st:?}"
    );
    assert_eq!(scan(&db, Direction::Backward), vec![]);
    assert_eq!(db.get(&key(1234)).unwrap(), None);
}

/// A prefetch reads the blocks gets of its keys need, so the gets after it all hit
/// the block cache; it changes nothing they return (deleted keys, keys only in the
/// memtable and keys never written included).
#[test]
fn prefetch_reads_what_gets_need_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let wo = WriteOptions::default();
    let expected =
        |i: u32| (i < 5000 && !i.is_multiple_of(7)).then(|| format!("v{i}").into_bytes());
    {
        let db = Db::open(tmp.path(), small_options()).unwrap();
        for i in 0..5000 {
            db.put(&key(i), format!("v{i}").as_bytes(), &wo).unwrap();
        }
        for i in (0..5000).step_by(7) {
            db.delete(&key(i), &wo).unwrap();
        }
        db.flush().unwrap();
        db.close().unwrap();
    }
    // Reopened: the block cache is empty. With triggers no level reaches, so that the
    // tree keeps its shape (tables in L0, L1 and L2): a compaction started by the
    // reopen and running between the prefetch and the gets would replace the tables
    // whose blocks it read.
    let quiet = Options {
        l0_compaction_trigger: 100,
        l0_slowdown_trigger: 200,
        l0_stop_trigger: 300,
        level1_bytes_max: 1 << 30,
        ..small_options()
    };
    let db = Db::open(tmp.path(), quiet).unwrap();
    db.put(&key(10_001), b"in the memtable", &wo).unwrap();
    let asked: Vec<u32> = (0..5000).step_by(37).chain([10_001, 20_000]).collect();
    let keys: Vec<Vec<u8>> = asked.iter().map(|&i| key(i)).collect();
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    let before = db.stats();
    db.prefetch(&refs).unwrap();
    let fetched = db.stats();
    assert!(
        fetched.block_cache_misses > before.block_cache_misses,
        "the prefetch read blocks"
    );
    for (&i, k) in asked.iter().zip(&keys) {
        let want = match i {
            10_001 => Some(b"in the memtable".to_vec()),
            _ => expected(i),
        };
        assert_eq!(db.get(k).unwrap(), want, "key {i}");
    }
    assert_eq!(
        db.stats().block_cache_misses,
        fetched.block_cache_misses,
        "every get found its blocks cached"
    );
}
