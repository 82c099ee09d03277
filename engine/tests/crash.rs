//! Crash tests of the value device and the index together: the values on the
//! simulated device, the index on the fault-injecting file system (`FaultFs`), both
//! behind one power switch (`common::power`). A random workload (puts, overwrites,
//! deletes, batches, scans, flushes, sync writes, forced GC and cold-log GC on a small
//! store, hot/cold separation in three seeds of four) is cut off by a power failure at
//! a random device operation or a random file call of the index, in the middle of a
//! flush, a GC or an index compaction as much as anywhere. At that instant the device
//! loses or tears its unflushed writes, and the file system its unsynced data and
//! directory changes (seeded, torn tails included). The store is reopened on healthy
//! storage holding the two images that survived. Then:
//! - every write acknowledged as durable reads back exactly;
//! - the state is exactly the state after some prefix of the batches (each batch
//!   wholly present or wholly absent, none out of order), no shorter than the durable
//!   prefix: deleted keys never come back, and no stale or wrong value is ever
//!   returned, cold-tagged keys included;
//! - the full check (`Db::check`, what fsck runs) finds no damage, after recovery and
//!   again after more writes, a GC and a clean reopen.
//!
//! The same test runs in every mode (hashkv, vlog, lsm).
//!
//! A failure prints its mode and seed; HASHKV_CRASH_SEEDS=N runs more seeds,
//! HASHKV_CRASH_SEED=S runs one.

mod common;

use common::history::{Batch, History, State};
use common::power::Power;
use hashkv::{Db, Mode, Options, WriteBatch};
use hashkv_blockdev::sim::{SimConfig, SimDevice};
use hashkv_lsm::fault::FaultFs;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

const KEYS: u32 = 150;

/// Where the index lives, on its simulated file system.
const METADATA_DIR: &str = "/hashkv-crash/metadata";
/// Mixed into the seed for the file system's crash decisions, so they are not the
/// device's.
const FS_SEED_STREAM: u64 = 0x6d65_7461_6673_0001;
/// The crash instant, among the device's operations or the index's file calls. A run's
/// workload (up to 3000 operations) makes up to about 8000 device operations and
/// 3000 file calls of the index in the hashkv and vlog modes (10000 file calls in the
/// lsm mode), fewer in most runs: with these bounds about two runs in three crash in
/// mid-workload, the others after it (the test prints how many of each).
const CRASH_AFTER_OPS: std::ops::Range<u64> = 20..4000;
const CRASH_AFTER_FS_CALLS: std::ops::Range<u64> = 20..1500;

fn options(rng: &mut StdRng, mode: Mode) -> Options {
    let lsm = hashkv_lsm::Options {
        memtable_bytes_max: [16 << 10, 64 << 10, 1 << 20][rng.gen_range(0..3)],
        l0_compaction_trigger: 2,
        table_target_bytes: 64 << 10,
        level1_bytes_max: 256 << 10,
        ..hashkv_lsm::Options::default()
    };
    Options::default()
        .with_mode(mode)
        .with_main_segment_bytes(256 << 10)
        .with_log_segment_bytes(16 << 10)
        .with_write_cache_bytes([0, 8 << 10, 64 << 10][rng.gen_range(0..3)])
        .with_separation_threshold_bytes(48)
        // Hot/cold separation in three seeds of four, so crashes land among cold
        // moves too (it is off by default).
        .with_hotness(rng.gen_range(0..4) != 0)
        .with_lsm(lsm)
}

fn value(rng: &mut StdRng, key: u32, version: u64) -> Vec<u8> {
    let len = match rng.gen_range(0..10) {
        0 => rng.gen_range(1..48),       // inline
        1 => rng.gen_range(4000..12000), // large
        _ => rng.gen_range(48..2000),
    };
    let mut v = format!("{key}:{version}:").into_bytes();
    while v.len() < len {
        v.push(b'a' + (v.len() % 26) as u8);
    }
    v.truncate(len.max(1));
    v
}

fn key(k: u32) -> Vec<u8> {
    format!("key{k:04}").into_bytes()
}

/// What a seed's run did: GCs and the records they kept (after recovery), and the
/// demotions and cold GCs before the crash.
#[derive(Default)]
struct Ran {
    gc_runs: u64,
    gc_kept: u64,
    demotions: u64,
    cold_gcs: u64,
    /// Seeds whose power failed in mid-workload at a device operation, at a file call
    /// of the index; and after the workload.
    cut_at_device_op: u64,
    cut_at_index_call: u64,
    cut_after_workload: u64,
}

impl Ran {
    fn add(&mut self, r: &Ran) {
        self.gc_runs += r.gc_runs;
        self.gc_kept += r.gc_kept;
        self.demotions += r.demotions;
        self.cold_gcs += r.cold_gcs;
        self.cut_at_device_op += r.cut_at_device_op;
        self.cut_at_index_call += r.cut_at_index_call;
        self.cut_after_workload += r.cut_after_workload;
    }
}

/// Arms the crash: at a random device operation in half the seeds, at a random file
/// call of the index in the other half (in every seed in the lsm mode, which writes no
/// values to the device). Returns where, for a failure message, and whether on the
/// device.
fn arm_crash(rng: &mut StdRng, mode: Mode, dev: &SimDevice, power: &Power) -> (String, bool) {
    if rng.gen_bool(0.5) && mode != Mode::Lsm {
        let ops = rng.gen_range(CRASH_AFTER_OPS);
        dev.arm_crash_after_ops(ops);
        (format!("crash after {ops} device operations"), true)
    } else {
        let calls = rng.gen_range(CRASH_AFTER_FS_CALLS);
        power.arm_after_fs_calls(calls);
        (
            format!("crash after {calls} file calls of the index"),
            false,
        )
    }
}

/// One random operation, recorded in `history` before it is issued. The outer error
/// is the test's (a read disagreeing with the model), the inner one the store's.
fn one_op(
    db: &Db,
    rng: &mut StdRng,
    history: &mut History,
    version: u64,
) -> Result<hashkv::Result<()>, String> {
    Ok(match rng.gen_range(0..100) {
        0..=49 => {
            let k = rng.gen_range(0..KEYS);
            let v = value(rng, k, version);
            history.push(vec![(key(k), Some(v.clone()))]);
            db.put(&key(k), &v)
        }
        50..=61 => {
            let k = rng.gen_range(0..KEYS);
            history.push(vec![(key(k), None)]);
            db.delete(&key(k))
        }
        62..=74 => {
            let mut b = WriteBatch::new();
            let mut entries = Batch::new();
            for _ in 0..rng.gen_range(2..8) {
                let k = rng.gen_range(0..KEYS);
                if rng.gen_bool(0.8) {
                    let v = value(rng, k, version);
                    b.put(&key(k), &v);
                    entries.push((key(k), Some(v)));
                } else {
                    b.delete(&key(k));
                    entries.push((key(k), None));
                }
            }
            history.push(entries);
            if rng.gen_bool(0.3) {
                db.write_sync(b).map(|()| history.all_durable())
            } else {
                db.write(b)
            }
        }
        75..=84 => {
            // Reads before the crash must see the latest writes.
            let k = rng.gen_range(0..KEYS);
            match db.get(&key(k)) {
                Ok(got) if got.as_ref() != history.latest.get(&key(k)) => poisoned_meanwhile(db)
                    .ok_or_else(|| {
                        format!("before the crash, get {k} returned a stale or wrong value")
                    })?,
                other => other.map(|_| ()),
            }
        }
        85..=88 => scan_matches(db, rng, &history.latest)?,
        89..=94 => db.flush().map(|()| history.all_durable()),
        95..=97 => db.collect_garbage().map(|_| ()),
        // A GC of the cold data log (hashkv mode; nothing elsewhere).
        _ => db.collect_cold_garbage(None).map(|_| ()),
    })
}

/// A read that disagrees with the model is allowed in one case: the background flusher
/// failed at the power cut just before it, and a failed flush's writes leave the cache
/// (they were never committed, and reads must not show what a restart would not); the
/// store is poisoned then, which the next write reports. Returns that error as the
/// store's, ending the workload, or `None` for a store that is healthy (a real
/// disagreement).
fn poisoned_meanwhile(db: &Db) -> Option<hashkv::Result<()>> {
    match db.flush() {
        Err(e) => Some(Err(e)),
        Ok(()) => None,
    }
}

/// A random range scan, checked against the latest state.
fn scan_matches(db: &Db, rng: &mut StdRng, latest: &State) -> Result<hashkv::Result<()>, String> {
    let lo = key(rng.gen_range(0..KEYS));
    let hi = key(rng.gen_range(0..KEYS));
    let got = match db.scan(Bound::Included(&lo), Bound::Excluded(&hi)) {
        Ok(it) => match it.collect::<Result<Vec<_>, _>>() {
            Ok(got) => got,
            Err(e) => return Ok(Err(e)),
        },
        Err(e) => return Ok(Err(e)),
    };
    let want: Vec<_> = latest
        .range(lo.clone()..)
        .take_while(|(k, _)| **k < hi)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if got != want {
        return poisoned_meanwhile(db)
            .ok_or_else(|| "before the crash, a scan disagreed with the model".into());
    }
    Ok(Ok(()))
}

/// Runs random operations until the power fails or the operations run out. An error
/// of the store is fine only once the power is off.
fn run_workload(
    db: &Db,
    rng: &mut StdRng,
    history: &mut History,
    power: &Power,
) -> Result<(), String> {
    let ops = rng.gen_range(200..3000);
    for version in 1..=ops {
        if let Err(e) = one_op(db, rng, history, version)? {
            if !power.is_cut() {
                return Err(format!("error without a crash: {e}"));
            }
            break;
        }
    }
    Ok(())
}

/// The full check finds no damage.
fn check_clean(db: &Db, when: &str) -> Result<(), String> {
    let report = db.check().map_err(|e| format!("check {when}: {e}"))?;
    if !report.is_clean() {
        return Err(format!(
            "check {when}: {} damaged: {:?}",
            report.damage_count, report.damage
        ));
    }
    Ok(())
}

/// Reopens the crashed store on healthy storage and checks it: a prefix of the
/// history holding every durable batch, a clean full check; then more writes, a GC,
/// a clean close and reopen.
fn recover_and_check(
    device: Arc<SimDevice>,
    o: &Options,
    rng: &mut StdRng,
    history: &History,
) -> Result<Ran, String> {
    let dir = Path::new(METADATA_DIR);
    let db = Db::open_device(device.clone(), dir, o).map_err(|e| format!("reopen: {e}"))?;
    let got = history.read_all(&db)?;
    history.matching_prefix(&got, history.durable)?;
    check_clean(&db, "after recovery")?;
    // The recovered store keeps working: more writes, GC, a clean reopen.
    let mut after = History {
        keys: history.keys.clone(),
        latest: got,
        ..History::default()
    };
    for i in 0..300u32 {
        let k = rng.gen_range(0..KEYS);
        let v = value(rng, k, 1_000_000 + u64::from(i));
        db.put(&key(k), &v)
            .map_err(|e| format!("after recovery: {e}"))?;
        after.push(vec![(key(k), Some(v))]);
    }
    db.collect_garbage()
        .map_err(|e| format!("GC after recovery: {e}"))?;
    let stats = db.stats();
    db.close().map_err(|e| format!("close: {e}"))?;
    let db = Db::open_device(device, dir, o).map_err(|e| format!("second reopen: {e}"))?;
    if after.read_all(&db)? != after.latest {
        return Err("after recovery, writes and a clean reopen, the state differs".into());
    }
    check_clean(&db, "after the second reopen")?;
    db.close().map_err(|e| format!("close: {e}"))?;
    Ok(Ran {
        gc_runs: stats.gc_runs,
        gc_kept: stats.gc_records_kept,
        ..Ran::default()
    })
}

/// Runs one seed; returns a description of the failure, or what the run did so the
/// caller can check that GC and cold moves really ran.
fn run_seed(mode: Mode, seed: u64) -> Result<Ran, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let size_bytes = [6u64 << 20, 8 << 20][rng.gen_range(0..2)];
    let dev =
        Arc::new(SimDevice::new(SimConfig::new(size_bytes, seed)).map_err(|e| e.to_string())?);
    let fs = Arc::new(FaultFs::new(seed ^ FS_SEED_STREAM));
    let power = Power::new(fs.clone(), dev.clone());
    let mut o = options(&mut rng, mode);
    o.lsm.fs = power.fs();
    let db = Db::format_device(dev.clone(), Path::new(METADATA_DIR), &o)
        .map_err(|e| format!("format: {e}"))?;
    let (crash_at, on_device) = arm_crash(&mut rng, mode, &dev, &power);
    let mut history = History::default();
    run_workload(&db, &mut rng, &mut history, &power)?;
    let mid_workload = power.is_cut();
    let before_crash = db.stats();
    // Power cut: the device loses or tears its unflushed writes, the index's file
    // system its unsynced data and directory changes, at the same instant.
    power.cut();
    db.crash_for_test();
    fs.restart();
    let crashed = Arc::new(dev.crash());
    o.lsm.fs = fs.clone();
    let ran = recover_and_check(crashed, &o, &mut rng, &history).map_err(|e| {
        format!(
            "{e} ({crash_at}; {} batches, {} durable)",
            history.batches.len(),
            history.durable
        )
    })?;
    Ok(Ran {
        demotions: before_crash.demotions,
        cold_gcs: before_crash.cold_gc_runs,
        cut_at_device_op: u64::from(mid_workload && on_device),
        cut_at_index_call: u64::from(mid_workload && !on_device),
        cut_after_workload: u64::from(!mid_workload),
        ..ran
    })
}

fn crash_at_random_points_recovers_a_prefix(mode: Mode) {
    let seeds: Vec<u64> = match std::env::var("HASHKV_CRASH_SEED") {
        Ok(s) => vec![s.parse().expect("HASHKV_CRASH_SEED is a number")],
        Err(_) => {
            let n: u64 = std::env::var("HASHKV_CRASH_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(40);
            (1..=n).collect()
        }
    };
    let mut failures = Vec::new();
    let mut total = Ran::default();
    let several = seeds.len() > 4;
    for seed in seeds {
        match run_seed(mode, seed) {
            Ok(ran) => total.add(&ran),
            Err(e) => {
                eprintln!("mode {} seed {seed} FAILED: {e}", mode.name());
                failures.push(seed);
            }
        }
    }
    eprintln!(
        "mode {}: power cut in mid-workload at a device operation in {} seeds, at a file \
         call of the index in {}, after the workload in {}; {} GCs after recovery",
        mode.name(),
        total.cut_at_device_op,
        total.cut_at_index_call,
        total.cut_after_workload,
        total.gc_runs
    );
    if several {
        assert!(
            total.cut_at_index_call > 0 && (mode == Mode::Lsm || total.cut_at_device_op > 0),
            "mode {}: the crashes must land among the index's file calls and the device's \
             operations alike",
            mode.name()
        );
    }
    if several && mode != Mode::Lsm {
        assert!(
            total.gc_runs > 0 && total.gc_kept > 0,
            "mode {}: GC never ran or never kept a record ({} runs, {} kept)",
            mode.name(),
            total.gc_runs,
            total.gc_kept
        );
    }
    if several && mode == Mode::HashKv {
        // The crashes must land among cold moves too.
        assert!(
            total.demotions > 0 && total.cold_gcs > 0,
            "hashkv mode: {} demotions, {} cold GCs before the crashes",
            total.demotions,
            total.cold_gcs
        );
        eprintln!(
            "hashkv mode: {} demotions and {} cold GCs before the crashes",
            total.demotions, total.cold_gcs
        );
    }
    assert!(
        failures.is_empty(),
        "crash test in mode {} failed for seeds {failures:?}; rerun one with HASHKV_CRASH_SEED=<seed>",
        mode.name()
    );
}

#[test]
fn crash_hashkv_mode() {
    crash_at_random_points_recovers_a_prefix(Mode::HashKv);
}

#[test]
fn crash_vlog_mode() {
    crash_at_random_points_recovers_a_prefix(Mode::VLog);
}

#[test]
fn crash_lsm_mode() {
    crash_at_random_points_recovers_a_prefix(Mode::Lsm);
}
