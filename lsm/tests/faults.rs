//! The I/O-error sweep of the tree: a fixed workload (writes, syncs, flushes, a
//! compaction, reads, a clean reopen, a killed process whose WAL ends in a torn record
//! and its recovery) runs once on a healthy FaultFs to count the calls it makes per
//! site (kind of call x kind of file: WAL, table, manifest, CURRENT, directory...);
//! then once per call, that call fails with EIO, and once per write or create, with
//! ENOSPC; and once per step of a shrinking capacity, writes run out of space. Each
//! time:
//! - the first error the workload sees is an I/O error (`Io`, or `Poisoned` naming one);
//! - if it surfaced in a write, sync, flush or compaction, the tree refuses further
//!   writes (`Poisoned`); a failed read fails only that read (nothing written is at
//!   risk), and a failed open or close leaves no tree to poison;
//! - the kinds of call whose failure is not an error are the removal of a file that
//!   is no longer needed (it is left for the next open to delete) and the advice that
//!   drops a file's pages from the page cache (it costs only cache space);
//! - after the process dies, with or without a machine crash, the tree reopens on
//!   healthy storage and holds every write acknowledged as durable, and a prefix of
//!   the writes made (whole batches, nothing never written); and it takes writes again.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use hashkv_lsm::fault::{Fault, FaultFs, FileClass, Op, Site};
use hashkv_lsm::{Db, Direction, LsmError, Options, WriteBatch, WriteOptions};

const DIR: &str = "/lsm";
const SEED: u64 = 14;
/// Capacities tried, spread evenly below the workload's peak use.
const CAPACITY_STEPS: u64 = 60;

type State = BTreeMap<Vec<u8>, Vec<u8>>;
/// A batch as the test wrote it: keys with their new value, or None for a delete.
type Batch = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Where the workload is when a call fails: decides what must hold after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Open,
    Write,
    Flush,
    Compact,
    Read,
    Close,
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Open,
    /// Writes `n` batches; every `sync_every`-th is a sync write (0: none).
    Writes {
        n: usize,
        sync_every: usize,
    },
    SyncWal,
    Flush,
    CompactAll,
    Reads,
    Close,
    /// Appends a torn record to the WAL and kills the process (no machine crash).
    TearWalAndKill,
}

const WORKLOAD: &[Step] = &[
    Step::Open,
    Step::Writes {
        n: 12,
        sync_every: 4,
    },
    Step::Flush,
    Step::Writes {
        n: 12,
        sync_every: 0,
    },
    Step::SyncWal,
    Step::Flush,
    Step::Writes {
        n: 6,
        sync_every: 1,
    },
    Step::Flush,
    Step::CompactAll,
    Step::Reads,
    Step::Writes {
        n: 8,
        sync_every: 0,
    },
    Step::Close,
    Step::Open,
    Step::Reads,
    Step::Writes {
        n: 6,
        sync_every: 1,
    },
    Step::TearWalAndKill,
    Step::Open,
    Step::Writes {
        n: 4,
        sync_every: 1,
    },
    Step::Reads,
    Step::Close,
];

fn options(fs: &Arc<FaultFs>) -> Options {
    Options {
        // Big enough that only the workload's flushes rotate the memtable, and no
        // compaction starts by itself: the calls come in the same order every run.
        memtable_bytes_max: 1 << 20,
        l0_compaction_trigger: 100,
        l0_slowdown_trigger: 100,
        l0_stop_trigger: 100,
        block_bytes: 256,
        // Every read goes to the file, and table files are reopened.
        block_cache_bytes: 0,
        table_files_open_max: 2,
        // Small enough that flushes and the compaction rewrite the manifest.
        manifest_bytes_max: 200,
        fs: fs.clone(),
        ..Options::default()
    }
}

fn is_io_failure(e: &LsmError) -> bool {
    match e {
        LsmError::Io { .. } => true,
        LsmError::Poisoned { cause } => cause.starts_with("I/O error"),
        _ => false,
    }
}

/// One run of the workload on `fs`, tracking what the tree must hold.
struct Run {
    fs: Arc<FaultFs>,
    db: Option<Db>,
    /// Batches written, in order (the one that failed included: it may be there).
    writes: Vec<Batch>,
    /// Writes known durable: a prefix of `writes`.
    durable: usize,
    /// Peak bytes held by the file system, sampled after each step.
    peak_bytes: u64,
}

impl Run {
    fn new(fs: Arc<FaultFs>) -> Run {
        Run {
            fs,
            db: None,
            writes: Vec::new(),
            durable: 0,
            peak_bytes: 0,
        }
    }

    fn db(&self) -> &Db {
        self.db.as_ref().expect("open")
    }

    fn open(&mut self) -> Result<(), LsmError> {
        self.db = Some(Db::open(Path::new(DIR), options(&self.fs))?);
        Ok(())
    }

    fn write(&mut self, sync: bool) -> Result<(), LsmError> {
        let i = self.writes.len();
        let mut batch = Vec::new();
        let mut b = WriteBatch::new();
        for j in 0..1 + i % 3 {
            let key = format!("key{:03}", (i * 7 + j * 13) % 50).into_bytes();
            if (i + j) % 5 == 4 {
                b.delete(&key);
                batch.push((key, None));
            } else {
                let value = format!("value {i}.{j} {}", "x".repeat(i % 40)).into_bytes();
                b.put(&key, &value);
                batch.push((key, Some(value)));
            }
        }
        self.writes.push(batch);
        self.db().write(&b, &WriteOptions { sync })?;
        if sync {
            self.durable = self.writes.len();
        }
        Ok(())
    }

    fn reads(&self) -> Result<(), LsmError> {
        for i in 0..10 {
            self.db().get(format!("key{:03}", i * 5).as_bytes())?;
        }
        let scan = self
            .db()
            .range(Bound::Unbounded, Bound::Unbounded, Direction::Forward, None)?;
        for entry in scan {
            entry?;
        }
        Ok(())
    }

    fn tear_wal_and_kill(&mut self) {
        let (wal, _) = self.db().wal_durable_point_for_test();
        self.db.take().expect("open").crash_for_test();
        // Half a record header: what a write cut by the kill leaves.
        self.fs.append_raw(&wal, &[0x5a, 0x17, 0x00, 0x42]).unwrap();
    }

    fn step(&mut self, step: Step) -> Result<(), (Stage, LsmError)> {
        let all_durable = |run: &mut Run| run.durable = run.writes.len();
        let r = match step {
            Step::Open => self.open().map_err(|e| (Stage::Open, e)),
            Step::Writes { n, sync_every } => (0..n).try_for_each(|i| {
                let sync = sync_every > 0 && (i + 1) % sync_every == 0;
                self.write(sync).map_err(|e| (Stage::Write, e))
            }),
            Step::SyncWal => self.db().sync_wal().map_err(|e| (Stage::Write, e)),
            Step::Flush => self.db().flush().map_err(|e| (Stage::Flush, e)),
            Step::CompactAll => {
                (self.db().compact_range(None, None)).map_err(|e| (Stage::Compact, e))
            }
            Step::Reads => self.reads().map_err(|e| (Stage::Read, e)),
            Step::Close => (self.db.take().expect("open").close()).map_err(|e| (Stage::Close, e)),
            Step::TearWalAndKill => {
                self.tear_wal_and_kill();
                Ok(())
            }
        };
        if r.is_ok()
            && matches!(
                step,
                Step::SyncWal | Step::Flush | Step::CompactAll | Step::Close
            )
        {
            all_durable(self);
        }
        self.peak_bytes = self.peak_bytes.max(self.fs.used_bytes());
        r
    }

    fn run(&mut self) -> Result<(), (Stage, LsmError)> {
        WORKLOAD.iter().try_for_each(|&s| self.step(s))
    }

    /// The state after the first `n` writes.
    fn state_after(&self, n: usize) -> State {
        let mut state = State::new();
        for batch in &self.writes[..n] {
            for (k, v) in batch {
                match v {
                    Some(v) => state.insert(k.clone(), v.clone()),
                    None => state.remove(k),
                };
            }
        }
        state
    }
}

fn full_state(db: &Db) -> State {
    db.range(Bound::Unbounded, Bound::Unbounded, Direction::Forward, None)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// What one injected failure showed.
enum Seen {
    /// The workload never made the call.
    NotReached,
    Failed(Site),
}

/// Runs the workload with `arm` applied to a fresh FaultFs and checks everything the
/// module documentation promises; `case` names the run in failure messages.
fn check_case(case: &str, crash: bool, arm: impl FnOnce(&FaultFs)) -> Seen {
    let fs = Arc::new(FaultFs::new(SEED));
    arm(&fs);
    let mut run = Run::new(fs.clone());
    let result = run.run();
    let fired = fs.fired();
    let Some(first) = fired.first() else {
        assert!(
            result.is_ok(),
            "{case}: failed with no fault fired: {:?}",
            result.err()
        );
        return Seen::NotReached;
    };
    let site = first.site;
    match &result {
        Ok(()) => assert!(
            matches!(site.op, Op::Remove | Op::Advise),
            "{case}: {site} failed, yet the workload succeeded"
        ),
        Err((stage, e)) => check_failure(case, &mut run, *stage, e),
    }
    if let Some(db) = run.db.take() {
        db.crash_for_test();
    }
    if crash {
        fs.crash();
        fs.restart();
    } else {
        fs.clear_faults();
    }
    check_recovered(case, &run, result.is_ok());
    Seen::Failed(site)
}

/// The first error is an I/O error; writes are refused after one in the write path.
fn check_failure(case: &str, run: &mut Run, stage: Stage, e: &LsmError) {
    assert!(
        is_io_failure(e),
        "{case}: {stage:?} failed with a non-I/O error: {e}"
    );
    let Some(db) = &run.db else {
        assert!(
            matches!(stage, Stage::Open | Stage::Close),
            "{case}: no tree after {stage:?}"
        );
        return;
    };
    let after = db.put(b"after", b"the failure", &WriteOptions { sync: true });
    if stage == Stage::Read {
        // Nothing written is at risk: the tree goes on (the fault fired once).
        assert!(
            after.is_ok(),
            "{case}: a read failure poisoned the tree: {after:?}"
        );
        let mut b = vec![(b"after".to_vec(), Some(b"the failure".to_vec()))];
        run.writes.push(std::mem::take(&mut b));
        run.durable = run.writes.len();
    } else {
        match after {
            Err(LsmError::Poisoned { .. }) => {}
            other => {
                panic!("{case}: after a failed {stage:?} a write gave {other:?}, not Poisoned")
            }
        }
    }
}

/// Reopened on healthy storage, the tree holds a prefix of the writes that contains
/// every durable one, and takes writes again.
fn check_recovered(case: &str, run: &Run, completed: bool) {
    let db = Db::open(Path::new(DIR), options(&run.fs))
        .unwrap_or_else(|e| panic!("{case}: reopen on healthy storage failed: {e}"));
    let found = full_state(&db);
    let lowest = if completed {
        run.writes.len()
    } else {
        run.durable
    };
    let ok = (lowest..=run.writes.len()).any(|n| run.state_after(n) == found);
    assert!(
        ok,
        "{case}: the reopened tree ({} keys) is no prefix of the {} writes holding the {} durable ones",
        found.len(),
        run.writes.len(),
        lowest
    );
    db.put(b"z", b"works", &WriteOptions { sync: true })
        .unwrap_or_else(|e| panic!("{case}: the reopened tree refuses writes: {e}"));
    assert_eq!(db.get(b"z").unwrap().as_deref(), Some(&b"works"[..]));
    db.close().unwrap();
}

/// The healthy run: the calls per site, and the peak bytes used.
fn record() -> (BTreeMap<Site, u64>, u64) {
    let fs = Arc::new(FaultFs::new(SEED));
    let mut run = Run::new(fs.clone());
    run.run()
        .unwrap_or_else(|(stage, e)| panic!("healthy run failed at {stage:?}: {e}"));
    check_recovered("healthy run", &run, true);
    let calls = fs.calls();
    let opens = 1 + WORKLOAD.iter().filter(|s| matches!(s, Step::Open)).count() as u64;
    let manifests = calls[&Site {
        op: Op::Create,
        class: FileClass::Manifest,
    }];
    assert!(
        manifests > opens,
        "{manifests} manifests for {opens} opens: the workload must rewrite the manifest"
    );
    (calls, run.peak_bytes)
}

/// Fails every call of every site in turn with `errno`; returns the sites failed and
/// the number of runs that failed one.
fn sweep(calls: &BTreeMap<Site, u64>, errno: i32, ops: &[Op]) -> (BTreeSet<Site>, u64) {
    let mut sites = BTreeSet::new();
    let mut runs = 0;
    for (&site, &count) in calls.iter().filter(|(s, _)| ops.contains(&s.op)) {
        for n in 0..count {
            let case = format!("errno {errno} at call {n} of {site}");
            let seen = check_case(&case, n % 2 == 0, |fs| {
                fs.inject(Fault {
                    op: site.op,
                    class: Some(site.class),
                    skip: n,
                    errno,
                    times: 1,
                })
            });
            if let Seen::Failed(s) = seen {
                assert_eq!(s, site, "{case}: a different site failed");
                sites.insert(s);
                runs += 1;
            }
        }
    }
    (sites, runs)
}

const ALL_OPS: &[Op] = &[
    Op::CreateDir,
    Op::Stat,
    Op::List,
    Op::Create,
    Op::Open,
    Op::Read,
    Op::Write,
    Op::SetLen,
    Op::Sync,
    Op::Rename,
    Op::Remove,
    Op::RemoveDir,
    Op::SyncDir,
    Op::Lock,
    Op::Advise,
];

#[test]
fn every_call_failing_with_eio_in_turn() {
    let (calls, _) = record();
    let (sites, runs) = sweep(&calls, libc::EIO, ALL_OPS);
    let never: Vec<String> = calls
        .keys()
        .filter(|s| !sites.contains(s))
        .map(|s| s.to_string())
        .collect();
    println!(
        "EIO sweep: {} sites, {runs} runs each failing one call; sites: {}",
        sites.len(),
        sites
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(never.is_empty(), "sites the sweep never failed: {never:?}");
    assert!(
        [
            Op::Write,
            Op::Sync,
            Op::Create,
            Op::Read,
            Op::Rename,
            Op::SyncDir,
            Op::SetLen,
            Op::Advise
        ]
        .iter()
        .all(|op| sites.iter().any(|s| s.op == *op)),
        "the workload must reach WAL, table and manifest writes, syncs, reads, the \
         rename of CURRENT, the cut of a torn WAL and the page-cache advice: {sites:?}"
    );
}

#[test]
fn every_write_and_create_failing_with_enospc_in_turn() {
    let (calls, _) = record();
    let (sites, runs) = sweep(&calls, libc::ENOSPC, &[Op::Write, Op::Create]);
    println!("ENOSPC sweep: {} sites, {runs} runs", sites.len());
    assert!(sites.len() >= 5, "too few sites: {sites:?}");
}

#[test]
fn the_metadata_file_system_filling_up_at_every_point() {
    let (_, peak) = record();
    let mut failed = 0;
    for step in 0..CAPACITY_STEPS {
        let capacity = peak * step / CAPACITY_STEPS;
        let case = format!("capacity {capacity} of peak {peak} bytes");
        if let Seen::Failed(site) = check_case(&case, step % 2 == 0, |fs| {
            fs.set_capacity_bytes(Some(capacity))
        }) {
            assert_eq!(site.op, Op::Write, "{case}: ENOSPC from {site}");
            failed += 1;
        }
    }
    println!("capacity sweep: {failed} of {CAPACITY_STEPS} capacities ran out of space");
    assert!(
        failed >= CAPACITY_STEPS / 2,
        "only {failed} capacities ran out of space"
    );
}
