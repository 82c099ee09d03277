//! Seeded crash test of the tree alone, on the fault-injecting file system: random
//! writes (puts, deletes, batches; some synced), WAL syncs, flushes, manual
//! compactions and clean reopens, with background flushes and compactions running
//! throughout; and at random moments a simulated crash that keeps only what was synced
//! plus a random prefix of the rest (torn appends, and unsynced creates, renames and
//! removes in the directory), sometimes armed to hit in the middle of an operation, a
//! background job or recovery itself; or an injected EIO/ENOSPC, after which the
//! process dies with or without the machine crashing. After each reopen the tree must
//! equal the model after a prefix of the writes made (no write that was never made,
//! batches whole) that includes every write acknowledged as durable.
//!
//! `LSM_CRASH_SEEDS` seeds (default 64) of `LSM_CRASH_OPS` operations (default 1500);
//! `LSM_CRASH_SEED=<n>` runs one. A failure prints its seed and the last events.
//! Background threads make the interleaving differ between runs of a seed, so a seed
//! reproduces the workload and the crash choices, not always the exact failure.
//! `LSM_CRASH_TRACE=1` prints the last file system calls before a failure.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use hashkv_lsm::fault::{Fault, FaultFs, Op};
use hashkv_lsm::{Db, Direction, LsmError, Options, WriteBatch, WriteOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIR: &str = "/lsm";
const SEEDS_DEFAULT: u64 = 64;
const OPS_DEFAULT: usize = 3000;
/// Keys drawn from this many, so that overwrites and deletes of live keys are common.
const KEY_SPACE: u32 = 400;
/// Recovery may itself be crashed; after this many crashed opens in a row the next one
/// runs unharmed, so a seed always makes progress.
const CRASHED_OPENS_MAX: u32 = 3;
/// Events kept for a failure message.
const LOG_TAIL: usize = 40;

type State = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Clone, Debug)]
enum Mutation {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

fn apply(state: &mut State, muts: &[Mutation]) {
    for m in muts {
        match m {
            Mutation::Put(k, v) => {
                state.insert(k.clone(), v.clone());
            }
            Mutation::Delete(k) => {
                state.remove(k);
            }
        }
    }
}

/// What the tree must hold: `base` (the state found at the last open) changed by a
/// prefix of `writes` that is at least `durable` long.
#[derive(Default)]
struct Model {
    base: State,
    writes: Vec<Vec<Mutation>>,
    durable: usize,
}

impl Model {
    fn all_durable(&mut self) {
        self.durable = self.writes.len();
    }

    /// The length of the prefix of `writes` that turns `base` into `found`, if one of
    /// at least `durable` writes does.
    fn matching_prefix(&self, found: &State) -> Option<usize> {
        let mut state = self.base.clone();
        for w in &self.writes[..self.durable] {
            apply(&mut state, w);
        }
        if &state == found {
            return Some(self.durable);
        }
        for (i, w) in self.writes.iter().enumerate().skip(self.durable) {
            apply(&mut state, w);
            if &state == found {
                return Some(i + 1);
            }
        }
        None
    }

    /// Where `found` first differs from the durable state, for a failure message.
    fn first_difference(&self, found: &State) -> String {
        let mut state = self.base.clone();
        for w in &self.writes[..self.durable] {
            apply(&mut state, w);
        }
        let keys: std::collections::BTreeSet<&Vec<u8>> = state.keys().chain(found.keys()).collect();
        for k in keys {
            if state.get(k) != found.get(k) {
                return format!(
                    "key {:?}: durable state has {:?}, tree has {:?}",
                    String::from_utf8_lossy(k),
                    state
                        .get(k)
                        .map(|v| String::from_utf8_lossy(v).into_owned()),
                    found
                        .get(k)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                );
            }
        }
        "no difference to the durable state".into()
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

fn options(rng: &mut StdRng, fs: &Arc<FaultFs>) -> Options {
    let trigger = rng.gen_range(2..5);
    Options {
        memtable_bytes_max: rng.gen_range(4..24) << 10,
        l0_compaction_trigger: trigger,
        l0_slowdown_trigger: trigger + 2,
        l0_stop_trigger: trigger + 4,
        level_size_ratio: rng.gen_range(2..5),
        level1_bytes_max: rng.gen_range(16..64) << 10,
        table_target_bytes: rng.gen_range(4..16) << 10,
        block_bytes: rng.gen_range(128..1024),
        block_cache_bytes: [0, 64 << 10][rng.gen_range(0..2)],
        table_files_open_max: [2, 512][rng.gen_range(0..2)],
        compaction_threads: rng.gen_range(1..3),
        manifest_bytes_max: [1 << 10, 4 << 10, 1 << 20][rng.gen_range(0..3)],
        fs: fs.clone(),
        ..Options::default()
    }
}

/// Opens in a row that may fail before the test gives up: each failure must come from
/// a crash or a fault of ours, and after a few the faults are disarmed.
const FAILED_OPENS_MAX: u32 = 8;

/// The I/O failures a crash or an injected fault may surface as.
fn is_io_failure(e: &LsmError) -> bool {
    match e {
        LsmError::Io { .. } => true,
        LsmError::Poisoned { cause } => cause.starts_with("I/O error"),
        _ => false,
    }
}

struct Run {
    seed: u64,
    rng: StdRng,
    fs: Arc<FaultFs>,
    options: Options,
    db: Option<Db>,
    model: Model,
    /// Writes made in this seed, to make every value unique.
    write_count: u64,
    log: Vec<String>,
    crashes: u64,
    faults: u64,
    /// Background work done, summed over every open (counters restart at open).
    flushes: u64,
    compactions: u64,
    keys_max: usize,
    /// Faults fired before the last successful open began.
    fired_at_open: usize,
}

impl Run {
    fn new(seed: u64) -> Run {
        let mut rng = StdRng::seed_from_u64(seed);
        let fs = Arc::new(FaultFs::new(seed));
        fs.trace_calls(std::env::var("LSM_CRASH_TRACE").is_ok());
        let options = options(&mut rng, &fs);
        let db = Db::open(Path::new(DIR), options.clone()).expect("a fresh tree opens");
        Run {
            seed,
            rng,
            fs,
            options,
            db: Some(db),
            model: Model::default(),
            write_count: 0,
            log: Vec::new(),
            crashes: 0,
            faults: 0,
            flushes: 0,
            compactions: 0,
            keys_max: 0,
            fired_at_open: 0,
        }
    }

    fn event(&mut self, e: String) {
        self.log.push(e);
        if self.log.len() > 4 * LOG_TAIL {
            self.log.drain(..self.log.len() - LOG_TAIL);
        }
    }

    fn fail(&self, what: &str) -> ! {
        let tail = &self.log[self.log.len().saturating_sub(LOG_TAIL)..];
        let reports = self.fs.crash_reports();
        let calls = self.fs.traced_calls();
        if !calls.is_empty() {
            eprintln!("last file system calls:\n  {}", calls.join("\n  "));
        }
        panic!(
            "seed {}: {what}\nlast events:\n  {}\nlast crash kept:\n{}\n\
             rerun with LSM_CRASH_SEED={} (and LSM_CRASH_TRACE=1 for the last calls)",
            self.seed,
            tail.join("\n  "),
            reports.last().map(String::as_str).unwrap_or("(no crash)"),
            self.seed
        );
    }

    fn count_work(&mut self, db: &Db) {
        let s = db.stats();
        self.flushes += s.flushes;
        self.compactions += s.compactions;
    }

    fn db(&self) -> &Db {
        self.db.as_ref().expect("open")
    }

    fn random_batch(&mut self) -> Vec<Mutation> {
        let n = if self.rng.gen_bool(0.2) {
            self.rng.gen_range(2..6)
        } else {
            1
        };
        (0..n)
            .map(|i| {
                let key = format!("key{:05}", self.rng.gen_range(0..KEY_SPACE)).into_bytes();
                if self.rng.gen_bool(0.2) {
                    Mutation::Delete(key)
                } else {
                    let pad = "v".repeat(self.rng.gen_range(0..200));
                    let v = format!("{}-{}-{i}-{pad}", self.seed, self.write_count);
                    Mutation::Put(key, v.into_bytes())
                }
            })
            .collect()
    }

    /// One write; Err only for an I/O failure (anything else fails the test).
    fn write(&mut self) -> Result<(), LsmError> {
        let muts = self.random_batch();
        self.write_count += 1;
        let sync = self.rng.gen_bool(0.25);
        let mut b = WriteBatch::new();
        for m in &muts {
            match m {
                Mutation::Put(k, v) => b.put(k, v),
                Mutation::Delete(k) => b.delete(k),
            }
        }
        self.model.writes.push(muts);
        let r = self.db().write(&b, &WriteOptions { sync });
        if r.is_ok() && sync {
            self.model.all_durable();
        }
        r
    }

    /// One random operation of the workload.
    fn step(&mut self) -> Result<(), LsmError> {
        let dice = self.rng.gen_range(0..1000);
        match dice {
            0..=899 => self.write(),
            900..=949 => {
                self.event("sync_wal".into());
                self.db().sync_wal().map(|_| self.model.all_durable())
            }
            950..=979 => {
                self.event("flush".into());
                self.db().flush().map(|_| self.model.all_durable())
            }
            980..=989 => {
                let a = format!("key{:05}", self.rng.gen_range(0..KEY_SPACE));
                self.event(format!("compact_range from {a}"));
                let r = self.db().compact_range(Some(a.as_bytes()), None);
                r.map(|_| self.model.all_durable())
            }
            _ => self.clean_reopen(),
        }
    }

    fn clean_reopen(&mut self) -> Result<(), LsmError> {
        self.event("close and reopen".into());
        let db = self.db.take().expect("open");
        self.count_work(&db);
        db.close()?;
        self.model.all_durable();
        self.reopen_and_check()
    }

    /// Arms a crash, a fault or a full disk at random, for a later operation to meet.
    fn maybe_arm_trouble(&mut self) {
        let dice = self.rng.gen_range(0..1000);
        match dice {
            0..=3 => {
                self.event(format!("crash now ({} writes)", self.model.writes.len()));
                self.fs.crash();
            }
            4..=6 => {
                let n = self.rng.gen_range(0..300);
                self.event(format!("crash armed after {n} calls"));
                self.fs.crash_after_calls(n);
            }
            7..=8 => {
                let ops = [
                    Op::Write,
                    Op::Sync,
                    Op::Create,
                    Op::SyncDir,
                    Op::Rename,
                    Op::Read,
                ];
                let op = ops[self.rng.gen_range(0..ops.len())];
                let errno = [libc::EIO, libc::ENOSPC][self.rng.gen_range(0..2)];
                let skip = self.rng.gen_range(0..20);
                self.event(format!("fault armed: {op:?} errno {errno} after {skip}"));
                self.fs.inject(Fault {
                    op,
                    class: None,
                    skip,
                    errno,
                    times: 1,
                });
            }
            9 => {
                let room = self.rng.gen_range(0..64 << 10);
                let cap = self.fs.used_bytes() + room;
                self.event(format!("capacity set to {cap} bytes ({room} free)"));
                self.fs.set_capacity_bytes(Some(cap));
            }
            _ => {}
        }
    }

    /// Whether the file system failed a call since `fired_before` faults had fired, or
    /// crashed: an I/O error without one of these is a bug of the tree (a lost file).
    /// Writes check from the last open on, as a background job's failure reaches the
    /// writer as a poisoned tree later.
    fn we_caused_it(&self, fired_before: usize) -> bool {
        self.fs.is_down() || self.fs.fired().len() > fired_before
    }

    /// After an I/O failure: the process dies, and the machine too if it crashed or, at
    /// random, now; then the tree is reopened on healthy storage and checked.
    fn die_and_recover(&mut self, e: &LsmError, fired_before: usize) {
        if !is_io_failure(e) || !self.we_caused_it(fired_before) {
            self.fail(&format!(
                "expected an I/O failure caused by a crash or an injected fault, got: {e}"
            ));
        }
        let was_down = self.fs.is_down();
        let crashed = was_down || self.rng.gen_bool(0.5);
        let how = if crashed {
            "machine crash"
        } else {
            "process dies"
        };
        self.event(format!("failed ({e}); {how}"));
        if crashed && !was_down {
            self.fs.crash();
        }
        if crashed {
            self.crashes += 1;
        } else {
            self.faults += 1;
        }
        if let Some(db) = self.db.take() {
            self.count_work(&db);
            db.crash_for_test();
        }
        if crashed {
            self.fs.restart();
        } else {
            self.fs.clear_faults();
        }
        if let Err(e) = self.reopen_and_check() {
            self.fail(&format!("reopen on healthy storage failed: {e}"));
        }
    }

    /// Opens the tree (through crashes of recovery itself, at random) and checks it
    /// against the model; the state found becomes the model's new base.
    fn reopen_and_check(&mut self) -> Result<(), LsmError> {
        let mut crashed_opens = 0;
        let mut failed_opens = 0;
        let db = loop {
            let arm = crashed_opens < CRASHED_OPENS_MAX && self.rng.gen_bool(0.2);
            if arm {
                let n = self.rng.gen_range(0..60);
                self.fs.crash_after_calls(n);
            }
            let fired_before = self.fs.fired().len();
            match Db::open(Path::new(DIR), self.options.clone()) {
                Ok(db) if !self.fs.is_down() => {
                    self.fs.clear_faults();
                    // Counted from before the open: its background jobs may have met
                    // a fault before it was disarmed.
                    self.fired_at_open = fired_before;
                    break db;
                }
                Ok(db) => {
                    // The crash hit a background thread right after the open.
                    db.crash_for_test();
                }
                Err(e) if is_io_failure(&e) && self.we_caused_it(fired_before) => {}
                Err(e) => self.fail(&format!("open failed: {e}")),
            }
            failed_opens += 1;
            if failed_opens > FAILED_OPENS_MAX {
                self.fail("the tree does not open on healthy storage");
            }
            if self.fs.is_down() {
                crashed_opens += 1;
                self.crashes += 1;
                self.event(format!("recovery crashed ({crashed_opens} in a row)"));
                self.fs.restart();
            } else {
                // A fault armed before a clean reopen failed it: the process gives up.
                self.faults += 1;
                self.event("recovery failed on an injected fault".into());
                self.fs.clear_faults();
            }
        };
        let found: State = db
            .range(Bound::Unbounded, Bound::Unbounded, Direction::Forward, None)?
            .collect::<Result<_, _>>()?;
        match self.model.matching_prefix(&found) {
            Some(p) => self.event(format!(
                "reopened: {p} of {} writes since the last open ({} durable)",
                self.model.writes.len(),
                self.model.durable
            )),
            None => self.fail(&format!(
                "after reopen the tree ({} keys) is no prefix of the {} writes with at least the {} durable ones; {}",
                found.len(),
                self.model.writes.len(),
                self.model.durable,
                self.model.first_difference(&found)
            )),
        }
        self.keys_max = self.keys_max.max(found.len());
        self.model = Model {
            base: found,
            ..Model::default()
        };
        self.db = Some(db);
        Ok(())
    }
}

/// What a seed did, summed over seeds for the report line.
#[derive(Default)]
struct Tally {
    crashes: u64,
    faults: u64,
    flushes: u64,
    compactions: u64,
    keys_max: usize,
}

fn run_seed(seed: u64, ops: usize) -> Tally {
    let mut run = Run::new(seed);
    for _ in 0..ops {
        run.maybe_arm_trouble();
        if let Err(e) = run.step() {
            let fired_before = run.fired_at_open;
            run.die_and_recover(&e, fired_before);
        }
    }
    // The end is a crash too, so every seed checks at least one.
    run.fs.crash();
    let e = LsmError::Io {
        context: "the final crash".into(),
        source: std::io::Error::from_raw_os_error(libc::EIO),
    };
    run.die_and_recover(&e, 0);
    Tally {
        crashes: run.crashes,
        faults: run.faults,
        flushes: run.flushes,
        compactions: run.compactions,
        keys_max: run.keys_max,
    }
}

fn run_seeds(parity: u64) {
    let ops = env_u64("LSM_CRASH_OPS").map_or(OPS_DEFAULT, |n| n as usize);
    let seeds: Vec<u64> = match env_u64("LSM_CRASH_SEED") {
        Some(s) if s % 2 == parity => vec![s],
        Some(_) => vec![],
        None => {
            let n = env_u64("LSM_CRASH_SEEDS").unwrap_or(SEEDS_DEFAULT);
            (0..n).filter(|s| s % 2 == parity).collect()
        }
    };
    let mut all = Tally::default();
    let start = std::time::Instant::now();
    for &seed in &seeds {
        let t = run_seed(seed, ops);
        all.crashes += t.crashes;
        all.faults += t.faults;
        all.flushes += t.flushes;
        all.compactions += t.compactions;
        all.keys_max = all.keys_max.max(t.keys_max);
    }
    println!(
        "{} seeds x {ops} ops: {} crashes and {} process deaths after I/O faults recovered \
         and checked; {} flushes, {} compactions; up to {} keys; {:.1} s",
        seeds.len(),
        all.crashes,
        all.faults,
        all.flushes,
        all.compactions,
        all.keys_max,
        start.elapsed().as_secs_f64()
    );
    assert!(
        seeds.is_empty() || (all.crashes > 0 && all.flushes > 0 && all.compactions > 0),
        "the workload must crash, flush and compact to test anything"
    );
}

#[test]
fn crash_even_seeds() {
    run_seeds(0);
}

#[test]
fn crash_odd_seeds() {
    run_seeds(1);
}
