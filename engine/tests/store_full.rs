//! A full store: a write that finds no room even after GC is refused with `StoreFull`,
//! takes no effect (not read back, not committed by a later flush), and poisons
//! nothing: acknowledged writes stay, deletes are taken, and room made by deletes and
//! GC is used again.
//!
//! Every test runs in the modes whose values fill a bounded space on the device
//! (hashkv, vlog). The lsm mode is left out: it keeps every value in the index, in
//! files of the metadata directory that grow as far as their filesystem allows, and
//! writes nothing to the device but the superblock, so it never reports `StoreFull`.

mod common;

use common::{format_sim, key, msg, sim, small_options, value, verify_allowing, Model, KIB, MIB};
use hashkv::{Db, Error, Mode, Options, WriteBatch};
use hashkv_blockdev::sim::SimDevice;
use std::sync::Arc;

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

/// A small store (2 MiB: superblock, 3 groups, 1 spare, 3 units of log segments in
/// the hashkv mode; the same space as one log in the vlog mode), not yet formatted.
fn full_store(mode: Mode, cache: u64) -> (Arc<SimDevice>, tempfile::TempDir, Options) {
    let dev = sim(2 * MIB, 18);
    let dir = tempfile::tempdir().unwrap();
    let o = small_options()
        .with_mode(mode)
        .with_write_cache_bytes(cache);
    (dev, dir, o)
}

/// Fills a small store with distinct keys until `StoreFull`: every acknowledged key
/// reads back, the store keeps refusing with the same clear error and is not poisoned;
/// without a write cache (every acknowledged put committed) everything is there after
/// a reopen.
fn store_full(mode: Mode, cache: u64) {
    let (dev, dir, o) = full_store(mode, cache);
    let db = Db::format_device(dev.clone(), dir.path(), &o).unwrap();
    let (model, full_at) = fill_until_full(&db, cache);
    let mut refused = Model::new();
    refused.insert(key(full_at), value(full_at, 1, 1000));
    verify_allowing(&db, &model, &refused);
    // A refused put took no space, and groups fill up one by one (a group's chain has
    // a limit), so a key of a group with room left may still fit; soon every group is
    // out of room and puts keep being refused: at least 100 of the next 200. The loop
    // stops at the 100th refusal, since each one costs many GCs of a full store.
    let mut model = model;
    let mut refusals = 0;
    for i in 20_000..20_200u32 {
        if refusals == 100 {
            break;
        }
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

test_in_modes!(store_full_without_write_cache: hashkv, vlog);
fn store_full_without_write_cache(mode: Mode) {
    store_full(mode, 0);
}

test_in_modes!(store_full_with_write_cache: hashkv, vlog);
fn store_full_with_write_cache(mode: Mode) {
    store_full(mode, 32 * KIB);
}

test_in_modes!(full_store_recovers_after_deletes: hashkv, vlog);
/// After `StoreFull`, deleting half of the keys (after a reopen, so no refused put
/// lingers) and GC make room for as many new ones.
fn full_store_recovers_after_deletes(mode: Mode) {
    for cache in [0, 32 * KIB] {
        let (dev, dir, o) = full_store(mode, cache);
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

test_in_modes!(put_refused_with_store_full_does_not_take_effect: hashkv, vlog);
/// A put refused with `StoreFull` must not take effect: not visible to reads, and not
/// committed later by another write's flush.
fn put_refused_with_store_full_does_not_take_effect(mode: Mode) {
    for cache in [0, 32 * KIB] {
        let o = small_options()
            .with_mode(mode)
            .with_write_cache_bytes(cache);
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

test_in_modes!(concurrent_puts_refused_with_store_full_do_not_take_effect: hashkv, vlog);
/// Writers racing into a full store, some with sync writes, with and without the write
/// cache: a write refused with `StoreFull` never reads back, whoever's flush ran last.
fn concurrent_puts_refused_with_store_full_do_not_take_effect(mode: Mode) {
    for round in 0..2u64 {
        let cache = if round % 2 == 0 { 0 } else { 32 * KIB };
        let o = small_options()
            .with_mode(mode)
            .with_write_cache_bytes(cache);
        let (_dev, _dir, db) = format_sim(2 * MIB, 30 + round, &o);
        let db = Arc::new(db);
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

test_in_modes!(full_store_takes_deletes: hashkv, vlog);
/// A full store still takes deletes (the vlog mode's write nothing to the log, the
/// hashkv mode's a tombstone into the key's group), and once everything is deleted, new
/// puts fit.
fn full_store_takes_deletes(mode: Mode) {
    let o = small_options().with_mode(mode).with_write_cache_bytes(0);
    let (_dev, _dir, db) = format_sim(2 * MIB, 18, &o);
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

/// With a reserve past what the groups' chains may hold (0.75, hot/cold off), the
/// chains end the room before the pool does: a full store reports what they can hold
/// as its capacity, and holds most of it. It reported the whole pool, about twice
/// what was in use when it filled.
#[test]
fn a_full_store_past_the_chain_limits_reports_what_the_chains_can_hold() {
    let dev = sim(8 * MIB, 19);
    let dir = tempfile::tempdir().unwrap();
    let o = small_options()
        .with_mode(Mode::HashKv)
        .with_write_cache_bytes(0)
        .with_reserved_share(0.75);
    let db = Db::format_device(dev, dir.path(), &o).unwrap();
    let pool_bytes = db.layout().value_capacity_bytes();
    for i in 0..100_000u32 {
        match db.put(&key(i), &value(i, 1, 1000)) {
            Ok(()) => {}
            Err(Error::StoreFull {
                used_bytes,
                capacity_bytes,
            }) => {
                println!("full after {i} puts: {used_bytes} of {capacity_bytes} bytes (pool {pool_bytes})");
                assert!(
                    capacity_bytes < pool_bytes,
                    "the chains hold less than the pool"
                );
                assert!(
                    used_bytes * 10 > capacity_bytes * 7,
                    "{used_bytes} of {capacity_bytes} bytes in use"
                );
                assert!(used_bytes <= capacity_bytes);
                assert_eq!(db.value_capacity_bytes(), capacity_bytes);
                return;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    panic!("an 8 MiB store never filled up");
}
