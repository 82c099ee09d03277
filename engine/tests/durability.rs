//! Every statement of `Db`'s "Durability" docs, checked: kill -9 of a process writing
//! to a store on a file (a child process running this test binary), and power cuts on
//! the simulated device (the device loses what was not flushed, the index's log loses
//! what was not synced). Atomicity of batches and the prefix property under power cuts
//! at every instant are the subject of crash.rs; here the prefix is checked after
//! kill -9.

mod common;

use common::{disk_dir, small_options, KIB, MIB};
use hashkv::{Db, Error, Mode, Options, WriteBatch};
use hashkv_blockdev::sim::{FaultRule, OpKind, SimConfig, SimDevice};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

fn key(i: u64) -> Vec<u8> {
    format!("key{i:08}").into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    // Large enough to live in the value store in the modes that separate values.
    format!("value {i} {}", "x".repeat(200 + (i % 7) as usize * 100)).into_bytes()
}

fn options(mode: Mode, write_cache_bytes: u64) -> Options {
    small_options()
        .with_mode(mode)
        .with_write_cache_bytes(write_cache_bytes)
}

// ---- power cuts on the simulated device ----

fn sim(seed: u64) -> Arc<SimDevice> {
    Arc::new(SimDevice::new(SimConfig::new(8 * MIB, seed)).unwrap())
}

/// Stops the store as a power cut would: the write cache is lost, the index's log is
/// cut at its last sync, the device keeps only flushed writes. Returns the reopened
/// store.
fn power_cut(db: Db, dev: &SimDevice, dir: &Path, o: &Options) -> (Db, Arc<SimDevice>) {
    let (wal, durable_bytes) = db.crash_for_test();
    if let Ok(meta) = std::fs::metadata(&wal) {
        if meta.len() > durable_bytes {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&wal)
                .unwrap()
                .set_len(durable_bytes)
                .unwrap();
        }
    }
    let crashed = Arc::new(dev.crash());
    let db = Db::open_device(crashed.clone(), dir, o).unwrap();
    (db, crashed)
}

fn formatted(
    mode: Mode,
    cache: u64,
    seed: u64,
) -> (Arc<SimDevice>, tempfile::TempDir, Options, Db) {
    let o = options(mode, cache);
    let dev = sim(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = Db::format_device(dev.clone(), dir.path(), &o).unwrap();
    (dev, dir, o, db)
}

#[test]
fn sync_writes_and_everything_before_them_survive_a_power_cut() {
    for (seed, mode) in Mode::ALL.iter().copied().enumerate() {
        let seed = seed as u64 * 10;
        // put_sync, and the non-sync puts before it.
        let (dev, dir, o, db) = formatted(mode, 64 * KIB, seed);
        db.put(&key(1), &value(1)).unwrap();
        db.put(&key(2), &value(2)).unwrap();
        db.put_sync(&key(3), &value(3)).unwrap();
        let (db, dev) = power_cut(db, &dev, dir.path(), &o);
        for i in 1..=3 {
            assert_eq!(db.get(&key(i)).unwrap(), Some(value(i)), "{mode:?} key {i}");
        }
        // delete_sync, and a non-sync delete before it.
        db.delete(&key(1)).unwrap();
        db.delete_sync(&key(2)).unwrap();
        let (db, dev) = power_cut(db, &dev, dir.path(), &o);
        assert_eq!(db.get(&key(1)).unwrap(), None, "{mode:?}");
        assert_eq!(db.get(&key(2)).unwrap(), None, "{mode:?}");
        assert_eq!(db.get(&key(3)).unwrap(), Some(value(3)), "{mode:?}");
        // write_sync makes the earlier non-sync put durable as well.
        db.put(&key(4), &value(4)).unwrap();
        let mut batch = WriteBatch::new();
        batch.put(&key(5), &value(5)).delete(&key(3));
        db.write_sync(batch).unwrap();
        let (db, _dev) = power_cut(db, &dev, dir.path(), &o);
        assert_eq!(db.get(&key(4)).unwrap(), Some(value(4)), "{mode:?}");
        assert_eq!(db.get(&key(5)).unwrap(), Some(value(5)), "{mode:?}");
        assert_eq!(db.get(&key(3)).unwrap(), None, "{mode:?}");
        db.close().unwrap();
    }
}

#[test]
fn flush_and_sync_are_the_same_durability_point() {
    for (seed, mode) in Mode::ALL.iter().copied().enumerate() {
        for use_sync in [false, true] {
            let (dev, dir, o, db) = formatted(mode, 64 * KIB, 100 + seed as u64);
            for i in 0..20 {
                db.put(&key(i), &value(i)).unwrap();
            }
            db.delete(&key(0)).unwrap();
            if use_sync {
                db.sync().unwrap();
            } else {
                db.flush().unwrap();
            }
            let (db, _) = power_cut(db, &dev, dir.path(), &o);
            assert_eq!(db.get(&key(0)).unwrap(), None);
            for i in 1..20 {
                assert_eq!(
                    db.get(&key(i)).unwrap(),
                    Some(value(i)),
                    "{mode:?} sync={use_sync}"
                );
            }
            db.close().unwrap();
        }
    }
}

#[test]
fn the_sync_writes_option_makes_every_write_durable() {
    let (dev, dir, _, db) = formatted(Mode::HashKv, 64 * KIB, 200);
    db.close().unwrap();
    let o = options(Mode::HashKv, 64 * KIB).with_sync_writes(true);
    let db = Db::open_device(dev.clone(), dir.path(), &o).unwrap();
    db.put(&key(1), &value(1)).unwrap();
    db.delete(&key(2)).unwrap();
    let (db, _) = power_cut(db, &dev, dir.path(), &o);
    assert_eq!(db.get(&key(1)).unwrap(), Some(value(1)));
    db.close().unwrap();
}

/// A committed but unsynced write is in the index's log in the kernel, not on the
/// disk: a power cut that keeps nothing unsynced loses it.
#[test]
fn a_committed_write_is_not_durable_until_synced() {
    let (dev, dir, o, db) = formatted(Mode::HashKv, 0, 300);
    db.put_sync(&key(1), &value(1)).unwrap();
    // Without a write cache, the put commits before it returns.
    db.put(&key(2), &value(2)).unwrap();
    assert_eq!(db.stats().flushes, 2);
    let (db, _) = power_cut(db, &dev, dir.path(), &o);
    assert_eq!(db.get(&key(1)).unwrap(), Some(value(1)));
    assert_eq!(
        db.get(&key(2)).unwrap(),
        None,
        "a power cut keeps no unsynced commit"
    );
    db.close().unwrap();
}

#[test]
fn close_and_drop_flush() {
    for by_drop in [false, true] {
        let (dev, dir, o, db) = formatted(Mode::HashKv, MIB, 400);
        db.put(&key(1), &value(1)).unwrap();
        assert_eq!(db.stats().flushes, 0, "the write is only cached");
        if by_drop {
            drop(db);
        } else {
            db.close().unwrap();
        }
        let crashed = Arc::new(dev.crash());
        let db = Db::open_device(crashed, dir.path(), &o).unwrap();
        assert_eq!(db.get(&key(1)).unwrap(), Some(value(1)), "drop={by_drop}");
        db.close().unwrap();
    }
}

/// A flush that fails returns its error; later writes are refused as poisoned; what
/// was durable before stays durable.
#[test]
fn a_failed_flush_poisons_and_keeps_what_was_durable() {
    let (dev, dir, o, db) = formatted(Mode::HashKv, MIB, 500);
    db.put_sync(&key(1), &value(1)).unwrap();
    db.put(&key(2), &value(2)).unwrap();
    dev.inject(FaultRule::eio().on(OpKind::Write)).unwrap();
    let e = db.flush().expect_err("the flush fails");
    assert!(matches!(e, Error::Device(_) | Error::Lsm(_)), "{e:?}");
    let e = db.put(&key(3), &value(3)).expect_err("refused");
    assert!(matches!(e, Error::Poisoned { .. }), "{e:?}");
    let e = db.put_sync(&key(3), &value(3)).expect_err("refused");
    assert!(matches!(e, Error::Poisoned { .. }), "{e:?}");
    dev.clear_faults();
    let (db, _) = power_cut(db, &dev, dir.path(), &o);
    assert_eq!(db.get(&key(1)).unwrap(), Some(value(1)));
    db.close().unwrap();
}

// ---- kill -9 of a writing process ----

const CHILD_ENV: &str = "HASHKV_DURABILITY_CHILD";

/// Run in a child process by the kill tests: opens the store named by the
/// environment and writes, printing what it has acknowledged, until killed.
#[test]
#[ignore = "a helper process of the kill -9 tests, not a test of its own"]
fn durability_child() {
    let spec = std::env::var(CHILD_ENV).expect("run only by the kill -9 tests");
    let mut parts = spec.split(';');
    let (device, metadata, mode, cache, scenario) = (
        PathBuf::from(parts.next().unwrap()),
        PathBuf::from(parts.next().unwrap()),
        Mode::from_name(parts.next().unwrap()).unwrap(),
        parts.next().unwrap().parse::<u64>().unwrap(),
        parts.next().unwrap().to_string(),
    );
    let db = Db::open(&[device], &metadata, &options(mode, cache)).unwrap();
    if scenario == "cached" {
        db.put_sync(b"base", b"durable").unwrap();
        for i in 0..100 {
            db.put(&key(i), &value(i)).unwrap();
        }
        assert_eq!(
            db.get(&key(99)).unwrap(),
            Some(value(99)),
            "readers see it at once"
        );
        println!("acked 99");
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
    let mut flushes = db.stats().flushes;
    for i in 0.. {
        db.put(&key(i), &value(i)).unwrap();
        let now = db.stats().flushes;
        if now > flushes {
            flushes = now;
            println!("committed {i}");
        }
    }
}

/// Formats a store on a file, runs the child on it until it has printed what
/// `enough` accepts, kills it with SIGKILL, and reopens the store. Returns the last
/// number the child printed in a line starting with `tag`.
fn kill_child(
    mode: Mode,
    cache: u64,
    scenario: &str,
    tag: &str,
    enough: u64,
) -> (Db, u64, tempfile::TempDir) {
    let dir = disk_dir();
    let device = dir.path().join("dev.img");
    let metadata = dir.path().join("meta");
    let o = options(mode, cache).with_create_device_bytes(Some(16 * MIB));
    Db::format(&[device.clone()], &metadata, &o)
        .unwrap()
        .close()
        .unwrap();
    let spec = format!(
        "{};{};{};{cache};{scenario}",
        device.display(),
        metadata.display(),
        mode.name()
    );
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "durability_child", "--nocapture"])
        .env(CHILD_ENV, spec)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut last = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(n) = line
            .strip_prefix(tag)
            .and_then(|r| r.trim().parse::<u64>().ok())
        {
            last = Some(n);
            if n >= enough {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let last = last.unwrap_or_else(|| panic!("{mode:?}: the child printed no {tag:?} line"));
    let db = Db::open(&[device], &metadata, &options(mode, cache)).unwrap();
    (db, last, dir)
}

/// What survived is keys 0..n for some n: a prefix of the writes, in order.
fn surviving_prefix(db: &Db, upto: u64) -> u64 {
    let mut n = 0;
    while n < upto + 1000 && db.get(&key(n)).unwrap().is_some() {
        assert_eq!(db.get(&key(n)).unwrap(), Some(value(n)));
        n += 1;
    }
    for i in n..n + 200 {
        assert_eq!(
            db.get(&key(i)).unwrap(),
            None,
            "key {i} survived without key {n}"
        );
    }
    n
}

#[test]
fn without_a_write_cache_every_acknowledged_write_survives_kill_9() {
    for mode in Mode::ALL.iter().copied() {
        let (db, last, _dir) = kill_child(mode, 0, "stream", "committed", 300);
        let n = surviving_prefix(&db, last);
        assert!(
            n > last,
            "{mode:?}: write {last} was acknowledged, {n} survived"
        );
        db.close().unwrap();
    }
}

#[test]
fn writes_a_full_cache_committed_survive_kill_9() {
    for mode in Mode::ALL.iter().copied() {
        let (db, last, _dir) = kill_child(mode, 32 * KIB, "stream", "committed", 1000);
        // The flush count rose after write `last`: the flush the background thread
        // committed holds the map frozen when it filled, at most two caches' worth of
        // writes (the smallest value is 200 bytes) before `last`.
        let slack = 2 * 32 * KIB / 200;
        let n = surviving_prefix(&db, last);
        assert!(
            n + slack > last,
            "{mode:?}: write {last} came after a committed flush, only {n} survived"
        );
        db.close().unwrap();
    }
}

#[test]
fn writes_still_in_the_write_cache_are_lost_by_kill_9() {
    for mode in Mode::ALL.iter().copied() {
        let (db, _, _dir) = kill_child(mode, MIB, "cached", "acked", 99);
        assert_eq!(db.get(b"base").unwrap().as_deref(), Some(&b"durable"[..]));
        assert_eq!(surviving_prefix(&db, 99), 0, "{mode:?}");
        db.close().unwrap();
    }
}
