//! The crashtest child (`hashkv crashtest-child`, run only by `hashkv crashtest`):
//! opens the store (formats it on the first cycle), says "ready" on standard output,
//! and runs the cycle's workload until it is killed, logging every write before and
//! after it (`oplog`) and checking every get and scan against what it has written
//! (read-your-writes). It also reports the store's GC count on standard output as it
//! grows ("gc N"), so the parent can show that GC ran.

use super::oplog::{Entry, LogWriter, OpKind, Record};
use super::state::CycleStart;
use super::verify::KeyStates;
use super::workload::{Step, Workload};
use crate::cmd::stress::small_store::{self, SmallStoreArgs};
use crate::cmd::stress::values::{decode, key, key_index, show_key, value};
use crate::cmd::stress::{engine_error, io_error, StressError, StressResult};
use hashkv::{Db, WriteBatch};
use std::io::Write as _;
use std::ops::Bound;
use std::path::PathBuf;

/// Steps after which a child that was never killed closes the store and exits: far
/// more than fit in the parent's longest kill delay, so only a stuck parent lets a
/// child get there.
const CHILD_STEPS_MAX: u64 = 50_000_000;
/// Steps between looks at the GC count.
const GC_REPORT_EVERY_STEPS: u64 = 256;

#[derive(Debug, clap::Args)]
pub struct ChildArgs {
    #[arg(long = "device", value_name = "PATH", required = true)]
    pub devices: Vec<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub metadata: PathBuf,
    /// The operation log to write (created afresh).
    #[arg(long, value_name = "FILE")]
    pub log: PathBuf,
    /// The cycle's start, written by the parent.
    #[arg(long, value_name = "FILE")]
    pub state: PathBuf,
    #[arg(long)]
    pub seed: u64,
    /// Format the store instead of opening it (the first cycle).
    #[arg(long)]
    pub format: bool,
    #[command(flatten)]
    pub store: SmallStoreArgs,
}

pub fn run(args: &ChildArgs) -> StressResult<()> {
    let start = CycleStart::read(&args.state).map_err(StressError::Usage)?;
    let mut workload = Workload::new(args.seed, start.cycle);
    let options = args
        .store
        .options(workload.write_cache_bytes())
        .map_err(StressError::Usage)?;
    let db = if args.format {
        small_store::format(&args.devices, &args.metadata, &options)?
    } else {
        small_store::open(&args.devices, &args.metadata, &options)
            .map_err(engine_error("opening the store"))?
    };
    let mut log = LogWriter::create(&args.log).map_err(io_error(&args.log, "creating the log"))?;
    let begin = Record::Begin {
        cycle: start.cycle,
        first_op: start.first_op,
    };
    log.append(&begin)
        .map_err(io_error(&args.log, "appending"))?;
    say("ready");
    let mut child = Child {
        db,
        log,
        model: start.keys,
        next_op: start.first_op,
        cycle: start.cycle,
        gc_runs_reported: 0,
    };
    for step in 0..CHILD_STEPS_MAX {
        child.step(workload.next_step())?;
        if step % GC_REPORT_EVERY_STEPS == 0 {
            child.report_gc();
        }
    }
    child.finish()
}

/// One line on standard output, at once (the parent waits for it).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // The parent may have stopped listening; the child goes on regardless.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

struct Child {
    db: Db,
    log: LogWriter,
    /// What every key holds: the start's state and every write acknowledged since.
    model: KeyStates,
    next_op: u64,
    cycle: u32,
    gc_runs_reported: u64,
}

impl Child {
    fn step(&mut self, step: Step) -> StressResult<()> {
        match step {
            Step::Write { kind, entries } => self.write(kind, entries),
            Step::Get { key } => self.check_get(key),
            Step::Scan { first, count } => self.check_scan(first, count),
        }
    }

    fn append(&mut self, record: &Record) -> StressResult<()> {
        let path = self.log.path().to_path_buf();
        self.log
            .append(record)
            .map_err(io_error(&path, "appending"))
    }

    /// Logs the operation as pending, issues it, logs it as acknowledged; after a
    /// durability point, logs that and fsyncs the log.
    fn write(&mut self, kind: OpKind, entries: Vec<Entry>) -> StressResult<()> {
        let op = self.next_op;
        self.next_op += 1;
        self.append(&Record::Pending {
            op,
            kind,
            entries: entries.clone(),
        })?;
        issue(&self.db, kind, &entries, op).map_err(engine_error(format!(
            "cycle {}: op #{op} ({})",
            self.cycle,
            kind.name()
        )))?;
        self.append(&Record::Acked { op })?;
        for e in &entries {
            self.model[e.key as usize] = e.put.then_some(op);
        }
        if kind.is_durability_point() {
            self.append(&Record::Durable { through_op: op })?;
            let path = self.log.path().to_path_buf();
            self.log.sync().map_err(io_error(&path, "syncing"))?;
        }
        Ok(())
    }

    fn mismatch(&self, what: String) -> StressError {
        StressError::Failed(format!(
            "cycle {}, after op #{}: read-your-writes: {what}",
            self.cycle,
            self.next_op.saturating_sub(1)
        ))
    }

    fn check_get(&self, k: u32) -> StressResult<()> {
        let got = self.db.get(&key(k)).map_err(engine_error(format!(
            "cycle {}: get {}",
            self.cycle,
            show_key(k)
        )))?;
        let expected = self.model[k as usize];
        let seen = got.as_deref().map(|v| decode(k, v));
        if seen != expected.map(Ok) {
            return Err(self.mismatch(format!(
                "get {} returned {seen:?}, expected {expected:?} (versions)",
                show_key(k)
            )));
        }
        Ok(())
    }

    fn check_scan(&self, first: u32, count: u32) -> StressResult<()> {
        let end = first.saturating_add(count).min(self.model.len() as u32);
        let (lo, hi) = (key(first), key(end));
        let scan = self
            .db
            .scan(Bound::Included(&lo), Bound::Excluded(&hi))
            .map_err(engine_error(format!("cycle {}: scan", self.cycle)))?;
        let mut expected = (first..end).filter(|&k| self.model[k as usize].is_some());
        for item in scan {
            let (k, v) = item.map_err(engine_error(format!("cycle {}: scan", self.cycle)))?;
            let got = key_index(&k).map(|i| (i, decode(i, &v)));
            let want = expected.next();
            let wanted = want.map(|w| (w, Ok(self.model[w as usize].expect("present"))));
            if got != wanted {
                return Err(self.mismatch(format!(
                    "scan of {}..{} returned key {:?} ({got:?}), expected {wanted:?}",
                    show_key(first),
                    show_key(end),
                    String::from_utf8_lossy(&k),
                )));
            }
        }
        if let Some(missing) = expected.next() {
            return Err(self.mismatch(format!(
                "scan of {}..{} ended before key {}",
                show_key(first),
                show_key(end),
                show_key(missing)
            )));
        }
        Ok(())
    }

    fn report_gc(&mut self) {
        let s = self.db.stats();
        let runs = s.gc_runs + s.cold_gc_runs;
        if runs != self.gc_runs_reported {
            self.gc_runs_reported = runs;
            say(&format!("gc {runs}"));
        }
    }

    /// Closes the store (a durability point for everything) and logs that.
    fn finish(self) -> StressResult<()> {
        let Child {
            db,
            mut log,
            next_op,
            cycle,
            ..
        } = self;
        db.close()
            .map_err(engine_error(format!("cycle {cycle}: closing the store")))?;
        if let Some(last) = next_op.checked_sub(1) {
            let path = log.path().to_path_buf();
            log.append(&Record::Durable { through_op: last })
                .map_err(io_error(&path, "appending"))?;
            log.sync().map_err(io_error(&path, "syncing"))?;
        }
        Ok(())
    }
}

/// Issues one logged operation; every put writes version `op`.
fn issue(db: &Db, kind: OpKind, entries: &[Entry], op: u64) -> hashkv::Result<()> {
    let batch = || {
        let mut b = WriteBatch::new();
        for e in entries {
            if e.put {
                b.put(&key(e.key), &value(e.key, op));
            } else {
                b.delete(&key(e.key));
            }
        }
        b
    };
    let one = || {
        entries
            .first()
            .expect("a single-key operation names its key")
    };
    match kind {
        OpKind::Put => db.put(&key(one().key), &value(one().key, op)),
        OpKind::PutSync => db.put_sync(&key(one().key), &value(one().key, op)),
        OpKind::Delete => db.delete(&key(one().key)),
        OpKind::DeleteSync => db.delete_sync(&key(one().key)),
        OpKind::Batch => db.write(batch()),
        OpKind::WriteSync => db.write_sync(batch()),
        OpKind::Flush => db.flush(),
        OpKind::Sync => db.sync(),
    }
}
