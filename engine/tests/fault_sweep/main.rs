//! The engine's I/O-error sweep. A fixed workload (`workload.rs`: format, writes with
//! sync points, GCs with hot/cold moves and a cold-log GC, deletes and batches, reads,
//! a clean close and reopen, more of the same) runs once on healthy simulated storage
//! to count its I/O per site: on the value device (`sites.rs`: superblock, flush
//! writes and device flushes, GC reads, writes and flushes in the groups, the value log
//! and the cold log, reads), and in the index's file system (`FaultFs`: each kind of
//! call on each kind of file: WAL, tables, manifest, CURRENT, the directory). Then once
//! per operation of each site (or a few spread over it, see below), that operation
//! fails: with EIO on the device and in the index, with ENOSPC on the index's writes
//! and creates; and the index's file system fills up at a series of capacities. Each
//! time:
//! - the first error the workload sees is an I/O error (the device's, the index's, the
//!   metadata directory's, or `Poisoned` naming one): not a panic, not a wrong value
//!   (reads before the fault are checked against the model);
//! - if it failed a write, a flush or a GC, the store refuses further writes: a sync
//!   write fails and later writes get `Poisoned`. A failed read of the index fails only
//!   that read (as in the index itself: nothing written is at risk); a failed read of
//!   the device poisons the device and so the next write. A failed format, open or
//!   close leaves no store to refuse writes;
//! - the failures that are no error: the removal of an index file no longer needed
//!   (the index deletes it at the next open), the index's page-cache advice (it costs
//!   only cache space), and the index failing in format after
//!   the commit point (deleting the marker entry, closing: the open that follows
//!   redoes both, on a whole store);
//! - after the process dies (with, in every other run, a crash of the index's file
//!   system that drops what it had not synced), the store reopens on healthy storage
//!   and holds a prefix of the writes that contains every write acknowledged as
//!   durable, passes the full check, and takes writes again. A failed format leaves
//!   either a whole store or what format recognises as unfinished and redoes without
//!   force.
//!
//! Every mode runs the same sweep. By default a site's operations are sampled
//! (`SAMPLED_CALLS_PER_SITE`, spread from the first to the last); HASHKV_SWEEP_FULL=1
//! fails every one of them in turn. The sites and runs per mode are printed. A failure
//! names its case; HASHKV_SWEEP_CASE=<part of the name> runs only the cases that match,
//! and HASHKV_SWEEP_TRACE=1 prints the index's calls around the failed one.

#[path = "../common/mod.rs"]
mod common;
mod sites;
mod workload;

use hashkv::{Db, Error, Mode};
use hashkv_blockdev::DeviceError;
use hashkv_lsm::fault::{Fault, Op, Site};
use hashkv_lsm::LsmError;
use sites::{DeviceSite, IoKind, Region, Stage};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::path::Path;
use std::sync::Arc;
use workload::{options, Run, DIR};

/// Operations failed per site in a default run, spread from the site's first to its
/// last: enough to reach each stage a site occurs in, and the sweep of every mode
/// stays within about a minute.
const SAMPLED_CALLS_PER_SITE: u64 = 8;
/// Capacities of the index's file system tried, spread evenly below the workload's
/// peak use.
const CAPACITY_STEPS: u64 = 24;
/// The same, with HASHKV_SWEEP_FULL=1.
const CAPACITY_STEPS_FULL: u64 = 240;

/// HASHKV_SWEEP_CASE: run only the cases whose name contains it (and check no
/// coverage).
fn case_filter() -> Option<String> {
    std::env::var("HASHKV_SWEEP_CASE").ok()
}

fn full_sweep() -> bool {
    std::env::var("HASHKV_SWEEP_FULL").is_ok_and(|v| v == "1")
}

/// Which operations of a site with `count` of them to fail.
fn picks(count: u64) -> Vec<u64> {
    let n = SAMPLED_CALLS_PER_SITE;
    if full_sweep() || count <= n {
        return (0..count).collect();
    }
    let mut ks: Vec<u64> = (0..n).map(|i| i * (count - 1) / (n - 1)).collect();
    ks.dedup();
    ks
}

/// An I/O error of the device, the index or the metadata directory, or `Poisoned`
/// naming one.
fn is_io_failure(e: &Error) -> bool {
    match e {
        Error::Device(DeviceError::Io { .. } | DeviceError::Poisoned { .. }) => true,
        Error::Lsm(LsmError::Io { .. }) => true,
        Error::Lsm(LsmError::Poisoned { cause }) => cause.starts_with("I/O error"),
        Error::MetadataDir { .. } => true,
        Error::Poisoned { first_error } => is_io_failure(first_error),
        Error::At { source, .. } => is_io_failure(source),
        _ => false,
    }
}

/// Where a run's fault is aimed.
enum Aim {
    Device(DeviceSite, u64),
    Index(Fault),
    Capacity(u64),
}

/// Runs the workload with `aim` armed and checks everything the module documentation
/// promises; returns the site that failed, if the fault was reached. Runs with
/// `crash` crash the index's file system before the reopen.
fn check_case(mode: Mode, case: &str, crash: bool, aim: &Aim) -> Option<String> {
    let mut run = Run::new(mode);
    match aim {
        Aim::Device(site, skip) => run.sites.arm(*site, *skip),
        Aim::Index(fault) => run.fs.inject(fault.clone()),
        Aim::Capacity(bytes) => run.fs.set_capacity_bytes(Some(*bytes)),
    }
    let trace = std::env::var("HASHKV_SWEEP_TRACE").is_ok_and(|v| v == "1");
    run.fs.trace_calls(trace);
    let result = run.run();
    if trace {
        print_index_calls(&run);
    }
    let index_fired = run.fs.fired().first().map(|f| f.site);
    let fired = match (run.sites.fired(), index_fired) {
        (Some(d), _) => d.to_string(),
        (None, Some(s)) => s.to_string(),
        (None, None) => {
            assert!(
                result.is_ok(),
                "{case}: failed with no fault fired: {result:?}"
            );
            return None;
        }
    };
    match &result {
        Ok(()) => assert!(
            // A removal of a file no longer needed, or page-cache advice, may fail
            // harmlessly (hashkv_lsm's fs module).
            index_fired.is_some_and(|s| matches!(s.op, Op::Remove | Op::Advise))
                || failed_after_commit(&run),
            "{case}: {fired} failed, yet the workload succeeded"
        ),
        Err((stage, e)) => check_failure(case, &mut run, *stage, e),
    }
    if crash {
        run.fs.crash();
    }
    if let Some(db) = run.db.take() {
        db.crash_for_test();
    }
    if crash {
        run.fs.restart();
    } else {
        run.fs.clear_faults();
    }
    check_recovered(case, &run, result.is_ok());
    Some(fired)
}

/// Index calls around its first failed one: what the index was doing (for
/// HASHKV_SWEEP_TRACE=1, with HASHKV_SWEEP_CASE naming one case).
fn print_index_calls(run: &Run) {
    /// Calls shown before and after the failed one.
    const CALLS_BEFORE: usize = 5;
    const CALLS_AFTER: usize = 40;
    let calls = run.fs.traced_calls();
    if let Some(i) = calls.iter().position(|c| !c.ends_with("-> ok")) {
        let shown = i.saturating_sub(CALLS_BEFORE)..(i + CALLS_AFTER).min(calls.len());
        for c in &calls[shown] {
            println!("index call: {c}");
        }
    }
}

/// The index failed in format after its commit: deleting the marker entry or closing
/// the index, which the open that follows redoes. Format succeeds: the store is whole.
fn failed_after_commit(run: &Run) -> bool {
    run.sites.index_faults_at_commit() == Some(0) && run.index_faults_in_format > 0
}

/// The first error is an I/O error; a store that saw it refuses writes from then on,
/// unless it was a read of the index.
fn check_failure(case: &str, run: &mut Run, stage: Stage, e: &Error) {
    assert!(
        is_io_failure(e),
        "{case}: {stage:?} failed with an error that is not an I/O error: {e:?}"
    );
    let Some(db) = &run.db else {
        assert!(
            matches!(stage, Stage::Format | Stage::Open | Stage::Close),
            "{case}: no store after a failed {stage:?}"
        );
        return;
    };
    // Recorded first: a write that fails may still be there after the reopen.
    run.history.push(vec![(
        b"probe".to_vec(),
        Some(b"after the failure".to_vec()),
    )]);
    match db.put_sync(b"probe", b"after the failure") {
        Ok(()) => {
            assert_eq!(
                stage,
                Stage::Read,
                "{case}: after a failed {stage:?} ({e}) a sync write succeeded"
            );
            run.history.all_durable();
        }
        Err(refused) => {
            assert!(is_io_failure(&refused), "{case}: {refused:?}");
            match db.put(b"probe 2", b"refused") {
                Err(Error::Poisoned { first_error }) => assert!(
                    is_io_failure(&first_error),
                    "{case}: poisoned by {first_error:?}"
                ),
                other => panic!("{case}: after a failed {stage:?} a write gave {other:?}"),
            }
            // The lsm mode's GC writes nothing (the index's compactions reclaim).
            if run.mode != Mode::Lsm {
                assert!(
                    db.collect_garbage().is_err(),
                    "{case}: GC on a poisoned store"
                );
            }
        }
    }
}

/// Reopened on healthy storage (the device power-cycled), the store holds a prefix of
/// the writes holding every durable one, passes the full check and takes writes.
fn check_recovered(case: &str, run: &Run, completed: bool) {
    let dev = Arc::new(run.dev.crash());
    let o = options(run.mode, run.fs.clone());
    let dir = Path::new(DIR);
    let db = if run.formatted {
        Db::open_device(dev, dir, &o)
            .unwrap_or_else(|e| panic!("{case}: the reopen on healthy storage failed: {e}"))
    } else {
        // The format failed: it committed first (the store opens), or it left what a
        // format recognises as unfinished.
        Db::open_device(dev.clone(), dir, &o).unwrap_or_else(|open_error| {
            Db::format_device(dev, dir, &o).unwrap_or_else(|e| {
                panic!(
                    "{case}: after a failed format the store neither opens on healthy \
                     storage ({open_error}) nor formats again without force: {e}"
                )
            })
        })
    };
    let got = run
        .history
        .read_all(&db)
        .unwrap_or_else(|e| panic!("{case}: reading the reopened store: {e}"));
    let lowest = if completed {
        run.history.batches.len()
    } else {
        run.history.durable
    };
    if let Err(e) = run.history.matching_prefix(&got, lowest) {
        panic!("{case}: {e}");
    }
    let report = db.check().unwrap_or_else(|e| panic!("{case}: check: {e}"));
    assert!(report.is_clean(), "{case}: check found {:?}", report.damage);
    db.put_sync(b"z", b"works")
        .unwrap_or_else(|e| panic!("{case}: the reopened store refuses writes: {e}"));
    assert_eq!(db.get(b"z").unwrap().as_deref(), Some(&b"works"[..]));
    db.close().unwrap();
}

/// What the healthy run did: its I/O per site on the device and in the index, and the
/// index's peak bytes.
struct Recorded {
    device: BTreeMap<DeviceSite, u64>,
    index: BTreeMap<Site, u64>,
    peak_fs_bytes: u64,
}

fn record(mode: Mode) -> Recorded {
    let mut run = Run::new(mode);
    if let Err((stage, e)) = run.run() {
        panic!("the healthy run failed at {stage:?}: {e}");
    }
    // Counted before the check reopens the store on the same file system.
    let recorded = Recorded {
        device: run.sites.calls(),
        index: run.fs.calls(),
        peak_fs_bytes: run.peak_fs_bytes,
    };
    check_recovered("the healthy run", &run, true);
    if mode == Mode::HashKv {
        assert!(
            run.demotions > 0 && run.cold_gcs > 0,
            "the workload must move values to the cold log and collect it: {} demotions, \
             {} cold GCs",
            run.demotions,
            run.cold_gcs
        );
    }
    recorded
}

/// Fails each picked operation of each site in `calls` in turn (`aim` arms it);
/// returns the sites that failed and the runs that reached their fault. Every site
/// must have failed at least once.
fn sweep<S: Copy + Ord + Display>(
    mode: Mode,
    what: &str,
    calls: &BTreeMap<S, u64>,
    aim: impl Fn(S, u64) -> Aim,
) -> (BTreeSet<S>, u64) {
    let mut failed = BTreeSet::new();
    let mut runs = 0;
    let only = case_filter();
    for (&site, &count) in calls {
        for k in picks(count) {
            let case = format!("mode {}, {what} at operation {k} of {site}", mode.name());
            if only.as_ref().is_some_and(|o| !case.contains(o.as_str())) {
                continue;
            }
            if check_case(mode, &case, k % 2 == 0, &aim(site, k)).is_some() {
                failed.insert(site);
                runs += 1;
            }
        }
    }
    let never: Vec<String> = calls
        .keys()
        .filter(|s| !failed.contains(s))
        .map(|s| s.to_string())
        .collect();
    if only.is_some() {
        return (failed, runs);
    }
    assert!(
        never.is_empty(),
        "mode {}: {what}: sites never failed: {never:?}",
        mode.name()
    );
    let total: u64 = calls.values().sum();
    println!(
        "mode {}: {what}: {} sites, {runs} runs (of {total} operations{}): {}",
        mode.name(),
        failed.len(),
        if full_sweep() { ", all" } else { ", sampled" },
        failed
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    );
    (failed, runs)
}

test_in_modes!(every_device_io_site_failing_with_eio);
fn every_device_io_site_failing_with_eio(mode: Mode) {
    let recorded = record(mode);
    let (sites, _) = sweep(mode, "device EIO", &recorded.device, Aim::Device);
    if case_filter().is_some() {
        return;
    }
    let has = |stage, kind| sites.iter().any(|s| s.stage == stage && s.kind == kind);
    let sb = |stage, kind| DeviceSite {
        stage,
        kind,
        region: Region::Superblock,
    };
    assert!(
        sites.contains(&sb(Stage::Format, IoKind::Write))
            && sites.contains(&sb(Stage::Open, IoKind::Read)),
        "the superblock's writes at format and reads at open: {sites:?}"
    );
    let mut wanted = vec![];
    if mode != Mode::Lsm {
        wanted.extend([
            (Stage::Write, IoKind::Write),
            (Stage::Write, IoKind::Flush),
            (Stage::Gc, IoKind::Read),
            (Stage::Gc, IoKind::Write),
            (Stage::Gc, IoKind::Flush),
            (Stage::Read, IoKind::Read),
        ]);
    }
    if mode == Mode::HashKv {
        wanted.extend([
            (Stage::ColdGc, IoKind::Read),
            (Stage::ColdGc, IoKind::Write),
        ]);
    }
    for (stage, kind) in wanted {
        assert!(
            has(stage, kind),
            "no {kind:?} failed in {stage:?}: {sites:?}"
        );
    }
}

test_in_modes!(every_index_call_failing_with_eio);
fn every_index_call_failing_with_eio(mode: Mode) {
    let recorded = record(mode);
    let (sites, _) = sweep(mode, "index EIO", &recorded.index, |site, k| {
        Aim::Index(fault(site, k, libc::EIO))
    });
    if case_filter().is_some() {
        return;
    }
    for op in [
        Op::Write,
        Op::Sync,
        Op::Create,
        Op::Read,
        Op::Rename,
        Op::SyncDir,
    ] {
        assert!(
            sites.iter().any(|s| s.op == op),
            "the workload must reach {op:?} in the index: {sites:?}"
        );
    }
}

test_in_modes!(every_index_write_failing_with_enospc);
fn every_index_write_failing_with_enospc(mode: Mode) {
    let recorded = record(mode);
    let writes: BTreeMap<Site, u64> = (recorded.index.into_iter())
        .filter(|(s, _)| matches!(s.op, Op::Write | Op::Create))
        .collect();
    let (sites, _) = sweep(mode, "index ENOSPC", &writes, |site, k| {
        Aim::Index(fault(site, k, libc::ENOSPC))
    });
    if case_filter().is_some() {
        return;
    }
    assert!(sites.len() >= 4, "too few sites: {sites:?}");
}

fn fault(site: Site, skip: u64, errno: i32) -> Fault {
    Fault {
        op: site.op,
        class: Some(site.class),
        skip,
        errno,
        times: 1,
    }
}

test_in_modes!(the_metadata_file_system_filling_up);
fn the_metadata_file_system_filling_up(mode: Mode) {
    let peak = record(mode).peak_fs_bytes;
    let steps = if full_sweep() {
        CAPACITY_STEPS_FULL
    } else {
        CAPACITY_STEPS
    };
    let only = case_filter();
    let mut full = 0;
    for step in 0..steps {
        let capacity = peak * step / steps;
        let case = format!(
            "mode {}, capacity {capacity} of peak {peak} bytes",
            mode.name()
        );
        if only.as_ref().is_some_and(|o| !case.contains(o.as_str())) {
            continue;
        }
        if check_case(mode, &case, step % 2 == 0, &Aim::Capacity(capacity)).is_some() {
            full += 1;
        }
    }
    println!(
        "mode {}: capacity sweep: {full} of {steps} capacities ran out of space",
        mode.name()
    );
    assert!(
        only.is_some() || full >= steps / 2,
        "only {full} capacities ran out of space"
    );
}
