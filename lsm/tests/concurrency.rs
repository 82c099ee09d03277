//! Concurrent use: group commit shares syncs, batches stay atomic for concurrent
//! readers while flushes and compactions run, writes slow down and stop when L0 grows
//! and then resume, and obsolete tables are deleted once no reader holds them.

use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hashkv_lsm::{Db, Direction, Options, WriteBatch, WriteOptions};

fn small_options() -> Options {
    Options {
        memtable_bytes_max: 8 << 10,
        l0_compaction_trigger: 2,
        l0_slowdown_trigger: 3,
        l0_stop_trigger: 4,
        level_size_ratio: 4,
        level1_bytes_max: 32 << 10,
        table_target_bytes: 8 << 10,
        block_bytes: 512,
        block_cache_bytes: 64 << 10,
        ..Options::default()
    }
}

#[test]
fn concurrent_sync_writers_share_syncs() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(tmp.path(), Options::default()).unwrap());
    let threads = 8;
    let per_thread = 40;
    // All threads write in lock step, so sync writes overlap even where fsync is fast.
    let barrier = Arc::new(std::sync::Barrier::new(threads));
    std::thread::scope(|s| {
        for t in 0..threads {
            let db = db.clone();
            let barrier = barrier.clone();
            s.spawn(move || {
                for i in 0..per_thread {
                    barrier.wait();
                    let key = format!("t{t}-{i}");
                    db.put(key.as_bytes(), b"v", &WriteOptions { sync: true })
                        .unwrap();
                }
            });
        }
    });
    let st = db.stats();
    let writes = (threads * per_thread) as u64;
    eprintln!("{} WAL syncs for {writes} sync writes", st.wal_syncs);
    assert!(
        st.wal_syncs > 0 && st.wal_syncs < writes,
        "{} syncs for {writes} sync writes",
        st.wal_syncs
    );
    // Everything acknowledged is durable: a crash right now loses nothing.
    let db = Arc::try_unwrap(db).ok().unwrap();
    db.crash_for_test();
    let db = Db::open(tmp.path(), Options::default()).unwrap();
    for t in 0..threads {
        for i in 0..per_thread {
            assert!(
                db.get(format!("t{t}-{i}").as_bytes()).unwrap().is_some(),
                "t{t}-{i} lost"
            );
        }
    }
}

#[test]
fn batches_are_atomic_for_concurrent_readers() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Arc::new(
        Db::open(
            tmp.path(),
            Options {
                compaction_threads: 2,
                ..small_options()
            },
        )
        .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let pairs = 64u32;
    std::thread::scope(|s| {
        for w in 0..2u32 {
            let db = db.clone();
            s.spawn(move || {
                // Each batch sets a_i and b_i to the same value: no reader may see them differ.
                for round in 0..600u32 {
                    let i = (round * 7 + w) % pairs;
                    let v = format!("w{w}-r{round}").into_bytes();
                    let mut b = WriteBatch::new();
                    b.put(format!("a{i:03}").as_bytes(), &v);
                    b.put(format!("b{i:03}").as_bytes(), &v);
                    db.write(&b, &WriteOptions::default()).unwrap();
                }
            });
        }
        for _ in 0..2 {
            let db = db.clone();
            let stop = stop.clone();
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let snap = db.snapshot();
                    let all: Vec<_> = db
                        .range(
                            Bound::Unbounded,
                            Bound::Unbounded,
                            Direction::Backward,
                            Some(&snap),
                        )
                        .unwrap()
                        .collect::<Result<_, _>>()
                        .unwrap();
                    let (a, b): (Vec<_>, Vec<_>) = all.into_iter().partition(|(k, _)| k[0] == b'a');
                    assert_eq!(a.len(), b.len());
                    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
                        assert_eq!(ka[1..], kb[1..]);
                        assert_eq!(
                            va,
                            vb,
                            "batch seen half-applied for {:?}",
                            String::from_utf8_lossy(ka)
                        );
                    }
                    for i in (0..pairs).step_by(9) {
                        let va = db.get_at(format!("a{i:03}").as_bytes(), &snap).unwrap();
                        let vb = db.get_at(format!("b{i:03}").as_bytes(), &snap).unwrap();
                        assert_eq!(va, vb);
                    }
                }
            });
        }
        // Stop the readers once the writers are done.
        let db2 = db.clone();
        s.spawn(move || {
            while db2.latest_sequence() < 2 * 600 * 2 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            stop.store(true, Ordering::Relaxed);
        });
    });
    let st = db.stats();
    assert!(st.flushes > 0 && st.compactions > 0, "{st:?}");
}

#[test]
fn writes_slow_down_stop_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    // Slow down as soon as L0 reaches the compaction trigger: every write arriving
    // while that compaction runs is delayed.
    let options = Options {
        l0_slowdown_trigger: 2,
        l0_stop_trigger: 3,
        ..small_options()
    };
    let db = Arc::new(Db::open(tmp.path(), options).unwrap());
    let value = vec![0x5a; 100];
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let db = db.clone();
            let value = value.clone();
            s.spawn(move || {
                for i in 0..3000u32 {
                    db.put(
                        format!("{t}-{i:06}").as_bytes(),
                        &value,
                        &WriteOptions::default(),
                    )
                    .unwrap();
                }
            });
        }
    });
    let st = db.stats();
    eprintln!(
        "{} slowdowns, {} stalls",
        st.write_slowdowns, st.write_stalls
    );
    assert!(
        st.write_slowdowns + st.write_stalls > 0,
        "L0 never reached its triggers: {st:?}"
    );
    let n = db
        .range(Bound::Unbounded, Bound::Unbounded, Direction::Forward, None)
        .unwrap()
        .count();
    assert_eq!(n, 4 * 3000);
}

fn table_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sst")
        })
        .count()
}

#[test]
fn obsolete_tables_are_deleted_once_unused() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), small_options()).unwrap();
    for i in 0..3000u32 {
        db.put(
            format!("k{i:05}").as_bytes(),
            &[1u8; 40],
            &WriteOptions::default(),
        )
        .unwrap();
    }
    db.flush().unwrap();
    // An open iterator pins the tables of its version.
    let mut it = db
        .range(Bound::Unbounded, Bound::Unbounded, Direction::Forward, None)
        .unwrap();
    let first = it.next().unwrap().unwrap();
    let pinned = db.stats().table_count_per_level.iter().sum::<usize>();
    db.compact_range(None, None).unwrap();
    let live = db.stats().table_count_per_level.iter().sum::<usize>();
    assert!(
        table_files(tmp.path()) >= pinned,
        "tables of a live iterator deleted"
    );
    // The iterator still reads its whole version.
    assert_eq!(1 + it.by_ref().count(), 3000);
    assert_eq!(first.0, b"k00000");
    drop(it);
    assert_eq!(table_files(tmp.path()), live, "obsolete tables left behind");
}
