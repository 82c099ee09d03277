//! `hashkv crashtest`: kill -9 of a process writing to a real store, over and over,
//! and a check after each kill that the store kept its promises.
//!
//! Each cycle the parent writes the cycle's start (`state`: what every key holds, the
//! next op id) and runs a child (`hashkv crashtest-child`, `child.rs`): the child
//! opens the store (formats it in the first cycle) and runs a seeded workload
//! (`workload.rs`), logging each write as pending before it issues it and as
//! acknowledged after, and each durability point after it returns (`oplog.rs`). The
//! parent SIGKILLs it after a seeded random delay (now and then while it is still
//! opening the store, i.e. recovering from the previous kill), reopens the store,
//! reads every key and a full scan, and checks them against the log (`verify.rs`):
//! durable writes and deletes are there, a pending operation and a batch are all or
//! nothing, no value appears that was never written, no deleted key comes back, and
//! the store is a prefix of the operations. Then it runs the store's full check
//! (`Db::check`, what `hashkv fsck` runs), closes the store, and the next cycle's
//! child continues from the state the parent verified.
//!
//! A failure stops the run with the seed, the cycle and the key, and leaves the
//! store, the log, the cycle's start and the child's stderr for inspection.

pub mod child;
mod cycle_log;
mod oplog;
mod state;
mod verify;
mod workload;

use crate::cmd::stress::small_store::{self, SmallStoreArgs};
use crate::cmd::stress::values::{decode, key, key_index, show_key};
use crate::cmd::stress::{engine_error, io_error, StressError, StressResult};
use cycle_log::CycleLog;
use hashkv::Db;
use oplog::{Entry, OpKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use state::CycleStart;
use std::io::BufRead as _;
use std::ops::Bound;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use verify::{KeyStates, Seen, Verified};
use workload::KEY_COUNT;

/// Shortest wait after the child is ready before it is killed: time for at least a
/// few operations.
const KILL_DELAY_MS_MIN: u64 = 10;
/// Default longest wait after the child is ready: long enough for tens of thousands
/// of operations, GCs and index compactions; short enough for hundreds of cycles in
/// minutes.
const KILL_DELAY_MS_MAX_DEFAULT: u64 = 1500;
/// Share of cycles (after the first) whose kill is timed from the child's start, not
/// from its "ready", to land while the store is still opening, i.e. during the
/// recovery from the previous kill.
const EARLY_KILL_PERCENT: u32 = 10;
/// An early kill lands within this multiple of the last cycle's open time from the
/// child's start: two in three during the open, the rest just after it.
const EARLY_KILL_SPAN_OF_OPEN: f64 = 1.5;
/// The open time assumed before one was measured.
const OPEN_TIME_GUESS: Duration = Duration::from_millis(100);
/// How long a child may take to open (or format) the store: recovery of a small
/// store takes well under a second; far more means it hangs.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the parent looks whether the child exited on its own while it waits.
const CHILD_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Write cache of the parent's own open (it only reads, and closes).
const PARENT_WRITE_CACHE_BYTES: u64 = 1 << 20;
/// The running program's executable, as the kernel keeps it.
const PROC_SELF_EXE: &str = "/proc/self/exe";
/// Lines of the child's stderr quoted when it fails.
const STDERR_LINES_QUOTED: usize = 20;

#[derive(Debug, clap::Args)]
pub struct CrashtestArgs {
    /// Device or file of the store (repeat for every member of a stripe, in order).
    /// Paths that do not exist are created as files of --device-mib MiB. The store is
    /// formatted in the first cycle: its contents are lost.
    #[arg(long = "device", value_name = "PATH", required = true)]
    pub devices: Vec<PathBuf>,

    /// Metadata (index) directory of the store.
    #[arg(long, value_name = "DIR")]
    pub metadata: PathBuf,

    /// Kill cycles to run.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub cycles: u32,

    /// Seed of the workload and the kill delays: the same seed runs the same
    /// operations and waits as long before each kill.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,

    /// The operation log. Beside it: FILE.state (the cycle's start) and
    /// FILE.child-stderr. [default: METADATA.oplog, beside the metadata directory]
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// Longest wait, once the child has opened the store, before it is killed.
    #[arg(long, value_name = "MS", default_value_t = KILL_DELAY_MS_MAX_DEFAULT)]
    pub kill_delay_ms_max: u64,

    #[command(flatten)]
    pub store: SmallStoreArgs,

    /// Adds a fault to the last cycle's log before it is checked, so that a test can
    /// see the checker catch it: `lost-write` claims a durable put the store never
    /// saw, `resurrect` a durable delete of a key that holds a value.
    #[arg(long, value_name = "FAULT", hide = true, value_parser = ["lost-write", "resurrect"])]
    pub fake_log_fault: Option<String>,
}

/// Where the run keeps its files.
struct Paths {
    log: PathBuf,
    state: PathBuf,
    child_stderr: PathBuf,
}

impl Paths {
    fn new(args: &CrashtestArgs) -> Paths {
        // Beside the metadata directory, not in it ("meta/" names "meta" too).
        let metadata = args.metadata.components().as_path();
        let log = args
            .log
            .clone()
            .unwrap_or_else(|| with_suffix(metadata, ".oplog"));
        Paths {
            state: with_suffix(&log, ".state"),
            child_stderr: with_suffix(&log, ".child-stderr"),
            log,
        }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Figures over the run, for the summary.
#[derive(Debug, Default)]
struct Totals {
    cycles: u32,
    kills: u32,
    kills_before_ready: u32,
    clean_exits: u32,
    ops_acked: u64,
    ops_durable: u64,
    durable_keys_verified: u64,
    acked_ops_lost: u64,
    torn_log_tails: u32,
    checks_clean: u32,
    child_gc_runs: u64,
}

/// How a cycle's child ended.
struct Ended {
    killed: bool,
    /// From the child's start to the kill.
    ran: Duration,
    /// From the child's start to its "ready": how long opening (recovery) took.
    opened_after: Option<Duration>,
    /// The child's last GC count ("gc N" on its standard output).
    gc_runs: u64,
}

pub fn run(args: &CrashtestArgs) -> StressResult<()> {
    let mut run = Run::new(args)?;
    println!(
        "crashtest: seed {}, mode {}, hotness {}, reserve {}, {} cycle(s), {} key(s), store on \
         {}, log {}",
        args.seed,
        args.store.mode,
        args.store.hotness,
        args.store.reserve,
        args.cycles,
        KEY_COUNT,
        devices_text(&args.devices),
        run.paths.log.display()
    );
    for cycle in 1..=args.cycles {
        run.cycle(cycle)?;
    }
    run.summary();
    Ok(())
}

fn devices_text(devices: &[PathBuf]) -> String {
    devices
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

struct Run<'a> {
    args: &'a CrashtestArgs,
    paths: Paths,
    kill_delays: StdRng,
    /// What every key holds, as verified after the last cycle.
    base: KeyStates,
    next_op: u64,
    /// How long the last cycle's child took to open the store.
    open_time: Duration,
    totals: Totals,
}

impl<'a> Run<'a> {
    fn new(args: &'a CrashtestArgs) -> StressResult<Run<'a>> {
        args.store.mode().map_err(StressError::Usage)?;
        let bytes = args.store.device_bytes().map_err(StressError::Usage)?;
        if args.cycles == 0 {
            return Err(StressError::Usage("--cycles must be at least 1".into()));
        }
        if args.kill_delay_ms_max < KILL_DELAY_MS_MIN {
            return Err(StressError::Usage(format!(
                "--kill-delay-ms-max {} is below the least delay, {KILL_DELAY_MS_MIN} ms",
                args.kill_delay_ms_max
            )));
        }
        let created = small_store::create_missing_files(&args.devices, bytes)
            .map_err(|(path, source)| StressError::CreateDevice { path, source })?;
        for path in created {
            println!("created {} ({} MiB)", path.display(), args.store.device_mib);
        }
        Ok(Run {
            args,
            paths: Paths::new(args),
            kill_delays: StdRng::seed_from_u64(crate::cmd::stress::values::mix(!args.seed)),
            base: vec![None; KEY_COUNT as usize],
            next_op: 0,
            open_time: OPEN_TIME_GUESS,
            totals: Totals::default(),
        })
    }

    /// A check failed: the message names the seed, the cycle, the key, and what is
    /// kept for inspection.
    fn failed(&self, cycle: u32, key: Option<String>, what: impl std::fmt::Display) -> StressError {
        let key = key.map(|k| format!(", key {k}")).unwrap_or_default();
        StressError::Failed(format!(
            "seed {}, cycle {cycle}{key}: {what}\n  kept for inspection: the store (--device {} \
             --metadata {}), the operation log {}, the cycle's start {}, the child's stderr {}; \
             --seed {} runs the same operations and kill delays again",
            self.args.seed,
            devices_text(&self.args.devices),
            self.args.metadata.display(),
            self.paths.log.display(),
            self.paths.state.display(),
            self.paths.child_stderr.display(),
            self.args.seed
        ))
    }

    fn cycle(&mut self, cycle: u32) -> StressResult<()> {
        let start = CycleStart {
            cycle,
            first_op: self.next_op,
            keys: self.base.clone(),
        };
        start
            .write(&self.paths.state)
            .map_err(io_error(&self.paths.state, "writing the cycle's start"))?;
        match std::fs::remove_file(&self.paths.log) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_error(&self.paths.log, "removing the last cycle's log")(
                    e,
                ))
            }
            _ => {}
        }
        let ended = self.run_child(cycle)?;
        let mut log = self.read_log(cycle)?;
        let verified = self.check_store(cycle, &mut log)?;
        self.count(cycle, &ended, &log, &verified);
        self.next_op = log.end_op();
        self.base = verified.state;
        Ok(())
    }

    fn count(&mut self, cycle: u32, ended: &Ended, log: &CycleLog, verified: &Verified) {
        let t = &mut self.totals;
        t.cycles += 1;
        t.kills += u32::from(ended.killed);
        t.kills_before_ready += u32::from(ended.killed && ended.opened_after.is_none());
        t.clean_exits += u32::from(!ended.killed);
        t.ops_acked += log.acked_count();
        t.ops_durable += log.durable_count();
        t.durable_keys_verified += verified.durable_keys_verified;
        t.acked_ops_lost += verified.acked_ops_lost;
        t.torn_log_tails += u32::from(log.torn_tail_bytes > 0);
        t.checks_clean += 1;
        t.child_gc_runs += ended.gc_runs;
        let how = match (ended.killed, ended.opened_after) {
            (true, Some(open)) => format!("opened in {} ms, killed", open.as_millis()),
            (true, None) => "killed while opening".into(),
            (false, _) => "exited by itself".into(),
        };
        let present = verified.state.iter().filter(|s| s.is_some()).count();
        let cache_kib = workload::Workload::new(self.args.seed, cycle).write_cache_bytes() >> 10;
        println!(
            "cycle {cycle:>4}: {how} after {} ms (write cache {cache_kib} KiB); ops acked {}, \
             durable {}, lost {} (not durable); child's GC runs {}; {present} keys hold values; \
             check ok",
            ended.ran.as_millis(),
            log.acked_count(),
            log.durable_count(),
            verified.acked_ops_lost,
            ended.gc_runs
        );
    }

    fn summary(&self) {
        let t = &self.totals;
        println!(
            "crashtest passed: seed {}, mode {}, hotness {}, reserve {}: {} cycles, {} kills ({} \
             while the store was opening), {} clean exits; {} ops acknowledged, {} durable; {} \
             durable key states verified; {} acknowledged but not durable ops lost (allowed); {} torn log \
             tails; {} full checks clean; {} GC runs in the children",
            self.args.seed,
            self.args.store.mode,
            self.args.store.hotness,
            self.args.store.reserve,
            t.cycles,
            t.kills,
            t.kills_before_ready,
            t.clean_exits,
            t.ops_acked,
            t.ops_durable,
            t.durable_keys_verified,
            t.acked_ops_lost,
            t.torn_log_tails,
            t.checks_clean,
            t.child_gc_runs
        );
    }
}

/// Adds `fault` to the log as the operation after its last: a durable put of key 0
/// that the store never saw, or a durable delete of the first key that holds a value.
/// The fake operation's durability covers every operation before it, also those the
/// kill lost (acknowledged, not durable): so the delete also deletes every key before
/// the one that holds a value (they hold none), or a lost put of one of them would be
/// reported first, as a lost durable write.
fn fake_fault(fault: &str, log: &mut CycleLog, seen: &[Seen]) {
    let id = log.end_op();
    let (kind, entries) = match fault {
        "lost-write" => (OpKind::PutSync, vec![Entry { key: 0, put: true }]),
        _ => {
            let key = seen
                .iter()
                .position(|s| matches!(s, Seen::Version(_)))
                .unwrap_or(0) as u32;
            let deletes = (0..=key).map(|key| Entry { key, put: false }).collect();
            (OpKind::DeleteSync, deletes)
        }
    };
    if let Some(last) = log.ops.last_mut() {
        last.acked = true;
    }
    log.ops.push(cycle_log::LoggedOp {
        id,
        kind,
        entries,
        acked: true,
    });
    log.durable_through = Some(id);
}

impl Run<'_> {
    fn spawn_child(&self, cycle: u32) -> StressResult<Child> {
        // This very program even when its file was replaced since it started (a
        // rebuild during a long run): the kernel's link to its executable.
        let exe = match Path::new(PROC_SELF_EXE) {
            p if p.exists() => p.to_path_buf(),
            _ => std::env::current_exe()
                .map_err(io_error(Path::new("hashkv"), "finding this program"))?,
        };
        let stderr = std::fs::File::create(&self.paths.child_stderr)
            .map_err(io_error(&self.paths.child_stderr, "creating"))?;
        let store = &self.args.store;
        let mut cmd = Command::new(&exe);
        cmd.arg("crashtest-child");
        for d in &self.args.devices {
            cmd.arg("--device").arg(d);
        }
        cmd.arg("--metadata").arg(&self.args.metadata);
        cmd.arg("--log").arg(&self.paths.log);
        cmd.arg("--state").arg(&self.paths.state);
        cmd.arg("--seed").arg(self.args.seed.to_string());
        cmd.args(["--mode", &store.mode, "--hotness", &store.hotness]);
        cmd.arg("--reserve").arg(store.reserve.to_string());
        if cycle == 1 {
            cmd.arg("--format");
            if store.force {
                cmd.arg("--force");
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(io_error(&exe, "starting the crashtest child"))
    }

    /// Whether this cycle's kill is early (timed from the child's start), and its
    /// delay.
    fn kill_plan(&mut self, cycle: u32) -> (bool, Duration) {
        let early = cycle > 1 && self.kill_delays.gen_range(0..100) < EARLY_KILL_PERCENT;
        if early {
            let share = self.kill_delays.gen_range(0.0..EARLY_KILL_SPAN_OF_OPEN);
            (true, self.open_time.mul_f64(share))
        } else {
            let ms = self
                .kill_delays
                .gen_range(KILL_DELAY_MS_MIN..=self.args.kill_delay_ms_max);
            (false, Duration::from_millis(ms))
        }
    }

    /// Runs the cycle's child and kills it: `delay` after it said "ready", or for an
    /// early kill `delay` after it started.
    fn run_child(&mut self, cycle: u32) -> StressResult<Ended> {
        let (early, delay) = self.kill_plan(cycle);
        let started = Instant::now();
        let mut child = self.spawn_child(cycle)?;
        let mut watch = StdoutWatch::start(child.stdout.take().expect("piped"));
        if !early {
            match watch.ready.recv_timeout(READY_TIMEOUT) {
                Ok(at) => watch.opened_at = Some(at),
                Err(mpsc::RecvTimeoutError::Disconnected) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(self.failed(
                        cycle,
                        None,
                        format!(
                            "the child did not open the store within {} s",
                            READY_TIMEOUT.as_secs()
                        ),
                    ));
                }
            }
        }
        let exited = wait_or_kill(&mut child, delay).map_err(io_error(
            &self.paths.child_stderr,
            "waiting for the crashtest child",
        ))?;
        let ran = started.elapsed();
        let (opened_at, gc_runs) = watch.finish();
        let opened_after = opened_at.map(|at| at.saturating_duration_since(started));
        if let Some(open) = opened_after.filter(|_| cycle > 1) {
            self.open_time = open;
        }
        let ended = Ended {
            killed: exited.signal() == Some(libc::SIGKILL),
            ran,
            opened_after,
            gc_runs,
        };
        self.judge_exit(cycle, exited, ended)
    }

    fn judge_exit(&self, cycle: u32, status: ExitStatus, ended: Ended) -> StressResult<Ended> {
        let clean_exit = status.success() && ended.opened_after.is_some();
        if !ended.killed && !clean_exit {
            let stderr = tail(&self.paths.child_stderr);
            return Err(self.failed(
                cycle,
                None,
                format!("the child ended by itself ({status}) before it was killed; its stderr ends:\n{stderr}"),
            ));
        }
        Ok(ended)
    }

    fn read_log(&self, cycle: u32) -> StressResult<CycleLog> {
        let bytes = match std::fs::read(&self.paths.log) {
            Ok(b) => b,
            // Killed before it created the log: it wrote nothing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error(&self.paths.log, "reading")(e)),
        };
        let decoded = oplog::decode(&bytes).map_err(|why| {
            self.failed(cycle, None, format!("the operation log is damaged: {why}"))
        })?;
        CycleLog::from_records(
            &decoded.records,
            cycle,
            self.next_op,
            decoded.torn_tail_bytes,
        )
        .map_err(|why| {
            self.failed(
                cycle,
                None,
                format!("the operation log is inconsistent: {why}"),
            )
        })
    }
}

/// Reads the child's standard output: "ready" once the store is open, "gc N" as its
/// GC count grows.
struct StdoutWatch {
    ready: mpsc::Receiver<Instant>,
    /// When "ready" came, once the parent has received it.
    opened_at: Option<Instant>,
    gc_runs: Arc<AtomicU64>,
    reader: std::thread::JoinHandle<()>,
}

impl StdoutWatch {
    fn start(stdout: std::process::ChildStdout) -> StdoutWatch {
        let (ready_tx, ready) = mpsc::channel();
        let gc_runs = Arc::new(AtomicU64::new(0));
        let gc_seen = gc_runs.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if line == "ready" {
                    let _ = ready_tx.send(Instant::now());
                } else if let Some(n) = line.strip_prefix("gc ").and_then(|n| n.parse().ok()) {
                    gc_seen.store(n, Ordering::Relaxed);
                }
            }
        });
        StdoutWatch {
            ready,
            opened_at: None,
            gc_runs,
            reader,
        }
    }

    /// After the child ended: when it said "ready" (if it did), and its last GC count.
    fn finish(self) -> (Option<Instant>, u64) {
        // The reader ends at the end of the child's output, which its death closes.
        let _ = self.reader.join();
        let opened_at = self.opened_at.or_else(|| self.ready.try_recv().ok());
        (opened_at, self.gc_runs.load(Ordering::Relaxed))
    }
}

/// Waits `delay` (returning early if the child exits), then SIGKILLs the child, and
/// returns how it ended.
fn wait_or_kill(child: &mut Child, delay: Duration) -> std::io::Result<ExitStatus> {
    let deadline = Instant::now() + delay;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(
            CHILD_POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now())),
        );
    }
    // SIGKILL; an error means it already exited, which wait() then reports.
    let _ = child.kill();
    child.wait()
}

/// The last lines of a file, for messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(STDERR_LINES_QUOTED);
    lines[from..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Run<'_> {
    /// Reopens the store after the kill, checks it against the log and runs the full
    /// check; returns what every key holds.
    fn check_store(&self, cycle: u32, log: &mut CycleLog) -> StressResult<Verified> {
        let options = self
            .args
            .store
            .options(PARENT_WRITE_CACHE_BYTES)
            .map_err(StressError::Usage)?
            .with_force_format(false);
        let db =
            small_store::open(&self.args.devices, &self.args.metadata, &options).map_err(|e| {
                self.failed(
                    cycle,
                    None,
                    format!("the store does not open after the kill: {e}"),
                )
            })?;
        let seen = observe(&db).map_err(|(key, what)| self.failed(cycle, key, what))?;
        if cycle == self.args.cycles {
            if let Some(fault) = &self.args.fake_log_fault {
                fake_fault(fault, log, &seen);
            }
        }
        let verified = verify::verify(&self.base, log, &seen)
            .map_err(|f| self.failed(cycle, Some(show_key(f.key)), f.what))?;
        let report = db
            .check()
            .map_err(|e| self.failed(cycle, None, format!("the full check (fsck) failed: {e}")))?;
        if !report.is_clean() {
            return Err(self.failed(
                cycle,
                None,
                format!(
                    "the full check (fsck) found {} damaged record(s) or index entries; the \
                     first: {}",
                    report.damage_count,
                    report.damage.first().cloned().unwrap_or_default()
                ),
            ));
        }
        db.close().map_err(engine_error(format!(
            "cycle {cycle}: closing the store after the check"
        )))?;
        Ok(verified)
    }
}

/// Reads every key, then a full scan, which must agree with the reads: what the
/// store holds, one entry per key. An error names the key (if any) and what is wrong.
fn observe(db: &Db) -> Result<Vec<Seen>, (Option<String>, String)> {
    let mut seen = Vec::with_capacity(KEY_COUNT as usize);
    for k in 0..KEY_COUNT {
        let got = db
            .get(&key(k))
            .map_err(|e| (Some(show_key(k)), format!("get failed after the kill: {e}")))?;
        seen.push(seen_of(k, got.as_deref()));
    }
    let scan_error = |e: hashkv::Error| (None, format!("full scan failed after the kill: {e}"));
    let mut listed = vec![false; KEY_COUNT as usize];
    let mut previous: Option<u32> = None;
    for item in db
        .scan(Bound::Unbounded, Bound::Unbounded)
        .map_err(scan_error)?
    {
        let (k, v) = item.map_err(scan_error)?;
        let shown = String::from_utf8_lossy(&k).into_owned();
        let Some(index) = key_index(&k).filter(|&i| i < KEY_COUNT) else {
            return Err((
                Some(shown),
                "the full scan returned a key no operation wrote".into(),
            ));
        };
        if previous.is_some_and(|p| p >= index) {
            return Err((
                Some(shown),
                "the full scan returned keys out of order".into(),
            ));
        }
        previous = Some(index);
        listed[index as usize] = true;
        let by_scan = seen_of(index, Some(&v));
        if by_scan != seen[index as usize] {
            return Err((
                Some(shown),
                format!(
                    "the full scan returned {}, a get {}",
                    by_scan.describe(),
                    seen[index as usize].describe()
                ),
            ));
        }
    }
    if let Some(k) =
        (0..KEY_COUNT).find(|&k| seen[k as usize] != Seen::Absent && !listed[k as usize])
    {
        return Err((
            Some(show_key(k)),
            "a get finds it, the full scan does not".into(),
        ));
    }
    Ok(seen)
}

fn seen_of(k: u32, got: Option<&[u8]>) -> Seen {
    match got.map(|v| decode(k, v)) {
        None => Seen::Absent,
        Some(Ok(version)) => Seen::Version(version),
        Some(Err(why)) => Seen::Foreign(why),
    }
}
