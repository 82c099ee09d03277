//! A group GC reads the chain of the group the next GC will likely collect while it
//! works (`store/groups/prefetch.rs`). The next GC uses those reads where the chain is
//! as it was, and reads the rest: updates, deletes and appends that came in between
//! must never make a value come back stale, lost or deleted, before or after a reopen.

mod common;

use common::{check_value, key, small_options, value, KIB, MIB};
use hashkv::{Db, Options};
use hashkv_blockdev::sim::{SimConfig, SimDevice};
use std::sync::Arc;

const DEVICE_BYTES: u64 = 16 * MIB;
const VALUE_BYTES: usize = 1000;
const KEYS: u32 = 3000;
const ROUNDS: u32 = 40;

fn options() -> Options {
    small_options().with_write_cache_bytes(16 * KIB)
}

/// Every key reads back as the model says.
fn check(db: &Db, versions: &[Option<u32>], when: &str) {
    for (k, want) in versions.iter().enumerate() {
        let got = db.get(&key(k as u32)).unwrap();
        let got = got
            .as_deref()
            .map(|v| check_value(v).expect("a whole value"));
        assert_eq!(
            got,
            want.map(|v| (k as u32, v)),
            "key {k} {when}: (key, version) read back against the model"
        );
    }
}

/// Writes the next version of key `k`.
fn put(db: &Db, versions: &mut [Option<u32>], k: u32) {
    let v = versions[k as usize].map_or(0, |v| v + 1);
    db.put(&key(k), &value(k, v, VALUE_BYTES)).unwrap();
    versions[k as usize] = Some(v);
}

#[test]
fn the_next_gc_uses_what_was_read_ahead_and_every_change_since() {
    let dev = Arc::new(SimDevice::new(SimConfig::new(DEVICE_BYTES, 7)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let db = Db::format_device(dev.clone(), dir.path(), &options()).unwrap();
    let mut versions: Vec<Option<u32>> = vec![None; KEYS as usize];
    for k in 0..KEYS {
        put(&db, &mut versions, k);
    }
    db.flush().unwrap();
    for round in 0..ROUNDS {
        // Between two GCs: updates of a slice of the keys (appends to chains read
        // ahead), and deletes and re-puts of others.
        let slice = (round * 97) % KEYS;
        for k in (slice..KEYS).chain(0..slice).take(KEYS as usize / 3) {
            put(&db, &mut versions, k);
        }
        for k in (0..KEYS).filter(|k| (k + round) % 53 == 0) {
            match versions[k as usize] {
                Some(_) if round % 2 == 0 => {
                    db.delete(&key(k)).unwrap();
                    versions[k as usize] = None;
                }
                _ => put(&db, &mut versions, k),
            }
        }
        db.flush().unwrap();
        db.collect_garbage().unwrap();
        check(&db, &versions, &format!("after GC round {round}"));
    }
    let stats = db.stats();
    assert!(
        stats.gc_prefetch_bytes_used > 0,
        "no GC used a chain read ahead: {stats:?}"
    );
    let report = db.check().unwrap();
    assert_eq!(report.damage_count, 0, "check: {:?}", report.damage);
    db.close().unwrap();
    let db = Db::open_device(dev, dir.path(), &options()).unwrap();
    check(&db, &versions, "after a reopen");
    db.close().unwrap();
}
