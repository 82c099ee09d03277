//! Large values a flush writes from the write cache's buffers (`record_write.rs`): the
//! record's header and key in the flush's buffer, the value's whole sectors straight
//! from where its writer copied it, its last partial sector copied after them. What
//! is read back, before and after a flush, through GC, after a reopen and after a
//! power cut, must be what a copying flush would have stored, and `check` must find
//! every record's checksum right, in both modes that separate values.

mod common;

use common::{key, value, verify, Model, KIB};
use hashkv::{Db, Mode, Options};
use hashkv_blockdev::sim::{SimConfig, SimDevice};
use std::sync::Arc;

const KEYS: u32 = 120;
/// Spliced (at least 16 KiB: whole sectors, which a value is padded onto a sector
/// for, or whole sectors and a tail, which it is padded for where that saves a
/// sector of its reads: a tail of 500 bytes, most of the time), copied (shorter), and
/// inline.
const VALUE_LENS: [usize; 6] = [
    16 * 1024,
    16 * 1024 + 500,
    64 * 1024,
    64 * 1024 + 490,
    3_000,
    20,
];

fn value_len(i: u32, version: u32) -> usize {
    VALUE_LENS[((i * 7 + version) % VALUE_LENS.len() as u32) as usize]
}

fn options(mode: Mode) -> Options {
    let lsm = hashkv_lsm::Options {
        memtable_bytes_max: 1 << 20,
        ..hashkv_lsm::Options::default()
    };
    Options::default()
        .with_mode(mode)
        .with_main_segment_bytes(1 << 20)
        .with_log_segment_bytes(128 * KIB)
        .with_write_cache_bytes(512 * KIB)
        .with_separation_threshold_bytes(64)
        .with_lsm(lsm)
}

/// Version `version` of every key, half through `put`, half through batches of
/// copying puts.
fn write_version(db: &Db, model: &mut Model, version: u32) {
    let mut batch = hashkv::WriteBatch::new();
    for i in 0..KEYS {
        let v = value(i, version, value_len(i, version));
        if i % 2 == 0 {
            db.put(&key(i), &v).unwrap();
        } else {
            batch.put(&key(i), &v);
        }
        model.insert(key(i), v);
        if batch.len() == 8 {
            db.write(std::mem::take(&mut batch)).unwrap();
        }
    }
    db.write(batch).unwrap();
}

fn check_clean(db: &Db) {
    let report = db.check().unwrap();
    assert_eq!(report.damage_count, 0, "{:?}", report.damage);
    assert!(report.pointers > 0);
}

/// On 512-byte sectors every value of 16 KiB or more starts on one (its padding
/// saves a sector of its reads) and is spliced; on 4 KiB sectors only those whose
/// padding pays for itself.
#[test]
fn spliced_values_read_back_through_flush_gc_reopen_and_a_power_cut() {
    for mode in [Mode::HashKv, Mode::VLog] {
        for (sector_bytes, spliced_min) in [(512, 2 << 20), (4096, 64 * KIB)] {
            write_gc_reopen_and_cut_power(mode, sector_bytes, spliced_min);
        }
    }
}

fn write_gc_reopen_and_cut_power(mode: Mode, sector_bytes: u32, spliced_min: u64) {
    let o = options(mode);
    let mut config = SimConfig::new(24 << 20, 21);
    config.logical_block_bytes = sector_bytes;
    config.sector_bytes = 512;
    let dev = Arc::new(SimDevice::new(config).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let db = Db::format_device(dev.clone(), dir.path(), &o).unwrap();
    let mut model = Model::new();
    write_version(&db, &mut model, 1);
    verify(&db, &model);
    db.flush().unwrap();
    verify(&db, &model);
    let spliced = db.stats().flush_value_bytes_spliced;
    assert!(
        spliced >= spliced_min,
        "{mode:?}, {sector_bytes} B sectors: only {spliced} bytes spliced"
    );
    // Enough versions that the groups' GC reads spliced records and rewrites them.
    for version in 2..10 {
        write_version(&db, &mut model, version);
    }
    db.flush().unwrap();
    verify(&db, &model);
    assert!(db.stats().gc_runs > 0, "{mode:?}: GC never ran");
    check_clean(&db);
    db.close().unwrap();
    let db = Db::open_device(dev.clone(), dir.path(), &o).unwrap();
    verify(&db, &model);
    check_clean(&db);
    // Flushed versions survive a power cut; the store opens clean after it.
    write_version(&db, &mut model, 10);
    db.flush().unwrap();
    let (wal, durable_bytes) = db.crash_for_test();
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > durable_bytes) {
        let f = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
        f.set_len(durable_bytes).unwrap();
    }
    let crashed = Arc::new(dev.crash());
    let db = Db::open_device(crashed, dir.path(), &o).unwrap();
    verify(&db, &model);
    check_clean(&db);
    db.close().unwrap();
}
