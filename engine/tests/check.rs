//! `Db::check` (what `hashkv fsck` runs), in every mode: a healthy store after
//! overwrites, deletes and GC checks clean; a bit flipped in a live record is reported
//! with its key; a bit flipped in a dead record the value store still counts as written
//! is reported too (the record walk reads every record, not only the live ones).

mod common;

use common::{key, small_options, value, MIB};
use hashkv::{Db, Mode};
use hashkv_blockdev::sim::{SimConfig, SimDevice};
use std::sync::Arc;

/// Flips a bit in the middle of every copy of `needle` on the device (GC may have left
/// stale copies); returns how many it damaged.
fn corrupt_all(dev: &SimDevice, needle: &[u8]) -> usize {
    let image = dev.peek(0, (8 * MIB) as usize).unwrap();
    let mut n = 0;
    let mut from = 0;
    while let Some(p) = image[from..]
        .windows(needle.len())
        .position(|w| w == needle)
    {
        let at = from + p;
        dev.corrupt_bit((at + needle.len() / 2) as u64, 3).unwrap();
        n += 1;
        from = at + needle.len();
    }
    n
}

fn check_mode(mode: Mode) {
    let dev = Arc::new(SimDevice::new(SimConfig::new(8 * MIB, 31)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let o = small_options().with_mode(mode);
    let db = Db::format_device(dev.clone(), dir.path(), &o).unwrap();
    for round in 0..3u32 {
        for i in 0..300u32 {
            db.put(&key(i), &value(i, round, 900)).unwrap();
        }
    }
    for i in (0..300u32).step_by(7) {
        db.delete(&key(i)).unwrap();
    }
    db.put(b"small", b"inline").unwrap();
    db.put(b"dead", &value(9999, 1, 900)).unwrap();
    // A live value to damage.
    let live = vec![b'L'; 3000];
    db.put(b"live", &live).unwrap();
    db.flush().unwrap();
    while db.collect_garbage().unwrap() {}
    db.flush().unwrap();

    let report = db.check().unwrap();
    assert!(report.is_clean(), "{mode:?}: {report:?}");
    let live_keys = 300 - (0..300u32).step_by(7).count() as u64 + 3;
    assert_eq!(report.keys, live_keys, "{mode:?}: {report:?}");
    if mode == Mode::Lsm {
        assert_eq!(report.inline_values, live_keys);
        assert_eq!(report.records_scanned, 0);
        db.close().unwrap();
        return;
    }
    assert_eq!(report.inline_values, 1);
    assert_eq!(report.pointers, live_keys - 1);
    assert!(report.records_scanned >= report.pointers);

    assert!(corrupt_all(&dev, &live) >= 1, "live value on the device");
    let report = db.check().unwrap();
    assert!(!report.is_clean());
    assert!(
        report.damage.iter().any(|d| d.contains("\"live\"")),
        "{mode:?}: damage does not name the key: {:?}",
        report.damage
    );
    // Every other key still checks.
    assert_eq!(report.pointers, live_keys - 2, "{report:?}");

    // A dead record inside the written part (no GC since): only the walk over the
    // value store's records can see it.
    let dead = vec![b'E'; 2000];
    db.put(b"dead", &dead).unwrap();
    db.flush().unwrap();
    db.put(b"dead", &value(9999, 2, 900)).unwrap();
    db.flush().unwrap();
    let before = db.check().unwrap().damage_count;
    assert!(corrupt_all(&dev, &dead) >= 1);
    let after = db.check().unwrap();
    assert_eq!(
        after.damage_count,
        before + 1,
        "{mode:?}: {:?}",
        after.damage
    );
    assert_eq!(after.pointers, report.pointers, "{after:?}");
    let _ = db.close();
}

#[test]
fn check_hashkv_mode() {
    check_mode(Mode::HashKv);
}

#[test]
fn check_vlog_mode() {
    check_mode(Mode::VLog);
}

#[test]
fn check_lsm_mode() {
    check_mode(Mode::Lsm);
}
