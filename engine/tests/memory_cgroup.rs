//! The memory budget, measured where it matters: in a memory cgroup (cgroup v1), which
//! counts a process's resident memory and the page cache its I/O fills, and kills the
//! process when they exceed the cgroup's limit.
//!
//! The test re-runs its own binary as a child (the ignored test `child_workload`),
//! moves it into a new cgroup below its own with a limit of the budget plus
//! `OVERHEAD_BYTES`, and lets it run a workload on a store several times the budget
//! in every mode: load, random updates (GC runs), random gets and 100-key scans, with
//! `Options::memory_budget_bytes` = `BUDGET_BYTES`. It must not be OOM-killed, and the
//! cgroup's usage must never reach the limit (`memory.failcnt` 0: the kernel never had
//! to reclaim or kill to keep it there). The child checks that what the engine counts
//! (`Db::memory_usage`) stays within the budget, and both print where the memory goes,
//! per stored key.
//!
//! Needs root and the cgroup v1 memory controller at /sys/fs/cgroup/memory (CI has
//! both); elsewhere it prints `skipped: <reason>` and passes.

mod common;

use common::{check_value, disk_dir, mix, value};
use hashkv::{Db, Mode, Options};
use std::io::{BufRead, BufReader, Read, Write};
use std::ops::Bound;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// The engine's memory budget in the child: 64 MiB, the issue's `--memory-mib 64`.
const BUDGET_BYTES: u64 = 64 * MIB;
/// What the process may hold beyond the budget (README, "Memory"): the test program
/// (3 MiB resident), thread stacks and per-thread malloc arenas, the allocator's slack,
/// and working memory that does not grow with the data: a GC's buffers (the group's
/// segments read whole and its survivors, about twice `MAIN_SEGMENT_BYTES` plus the
/// log segments of its chain), a compaction's (512 KiB of readahead per input table,
/// a 1 MiB write buffer, 8 bytes of filter hash per entry of the table being written),
/// a flush's copies of the batch it commits (in the lsm mode the whole write cache
/// goes into the index as one batch), and the page cache of files being written that
/// the disk has not yet written back (hashkv_lsm's `fs` module). Measured: the
/// cgroup's peak usage was 102-116 MiB (the lsm mode's) until 2026-12-01's write-path
/// changes (hash-map write cache, proportional L0 slowdown), then 126-141 MiB in three
/// runs (lsm mode, resident 114-126 MiB, page cache 13-15 MiB); the constant was raised
/// from 80 to 96 MiB to keep a margin; since the flusher pacing (2026-12-02) 133-148
/// MiB in six runs (README "Memory"). The rise is glibc's dynamic mmap threshold
/// keeping freed large buffers resident in its heaps: with MALLOC_MMAP_THRESHOLD_=131072
/// the peak was 82.5 MiB (README "Memory"). The test keeps the allocator's defaults.
const OVERHEAD_BYTES: u64 = 96 * MIB;
/// Main segments of the child's store: a GC reads a whole group at once, so its
/// buffers scale with this (the paper's 64 MiB would take ~130 MiB per GC).
const MAIN_SEGMENT_BYTES: u64 = 4 * MIB;
const LOG_SEGMENT_BYTES: u64 = 256 << 10;
/// Keys stored; with `VALUE_BYTES` values the data is ~3x the budget.
const KEYS: u32 = 200_000;
const VALUE_BYTES: usize = 1024;
/// Device size: the data with headroom for GC and the 30% reserve.
const DEVICE_BYTES: u64 = 384 * MIB;
const UPDATES: u32 = 100_000;
const GETS: u32 = 20_000;
const SCANS: u32 = 200;
const SCAN_KEYS: usize = 100;
/// How often the parent samples the cgroup's resident and page-cache bytes.
const SAMPLE_PERIOD: Duration = Duration::from_millis(20);
/// Environment variable that tells the child where to put its store.
const CHILD_DIR_VAR: &str = "HASHKV_MEMORY_CGROUP_DIR";
const CGROUP_ROOT: &str = "/sys/fs/cgroup/memory";

fn key(i: u32) -> Vec<u8> {
    // 24 bytes, like the paper's YCSB keys.
    format!("user{:020}", mix(u64::from(i)) % 10u64.pow(20)).into_bytes()
}

/// Why the test cannot run here, if it cannot.
fn unsupported() -> Option<String> {
    match std::fs::metadata("/proc/self") {
        // /proc/self belongs to the process's effective user.
        Ok(m) if m.uid() == 0 => {}
        Ok(_) => return Some("not root: cannot create a memory cgroup".into()),
        Err(e) => return Some(format!("no /proc/self: {e}")),
    }
    let limit = Path::new(CGROUP_ROOT).join("memory.limit_in_bytes");
    if !limit.exists() {
        return Some(format!(
            "no cgroup v1 memory controller ({} is missing)",
            limit.display()
        ));
    }
    None
}

/// Our own memory cgroup's directory (the new one goes below it, so that any limit
/// on ours still applies).
fn own_cgroup() -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
    let path = text
        .lines()
        .filter_map(|l| {
            // hierarchy-id:controllers:path
            let (_, rest) = l.split_once(':')?;
            rest.split_once(':')
        })
        .find(|(controllers, _)| controllers.split(',').any(|c| c == "memory"))
        .map(|(_, p)| p.trim_start_matches('/').to_string())
        .expect("a memory line in /proc/self/cgroup");
    Path::new(CGROUP_ROOT).join(path)
}

/// A memory cgroup made for the test, removed (with its child killed) when dropped.
struct Cgroup {
    dir: PathBuf,
    child: Option<Child>,
}

impl Cgroup {
    fn create(limit_bytes: u64) -> Cgroup {
        let dir = own_cgroup().join(format!("hashkv-memory-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let cg = Cgroup { dir, child: None };
        cg.write("memory.limit_in_bytes", &limit_bytes.to_string());
        cg
    }

    fn write(&self, file: &str, value: &str) {
        let path = self.dir.join(file);
        std::fs::write(&path, value)
            .unwrap_or_else(|e| panic!("writing {value} to {}: {e}", path.display()));
    }

    fn read(&self, file: &str) -> String {
        let path = self.dir.join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    fn read_u64(&self, file: &str) -> u64 {
        self.read(file).trim().parse().expect("a number")
    }

    /// A field of memory.stat (or memory.oom_control), if the kernel has it.
    fn field(&self, file: &str, name: &str) -> Option<u64> {
        self.read(file).lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse().ok()).flatten()
        })
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Empty once the child is gone; the kernel may need a moment to let go.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

/// Peaks the parent saw while sampling the cgroup.
#[derive(Default)]
struct Peaks {
    rss_bytes: u64,
    cache_bytes: u64,
}

#[test]
fn memory_stays_within_the_budget_in_a_memory_cgroup() {
    if let Some(reason) = unsupported() {
        println!("skipped: {reason}");
        return;
    }
    let limit = BUDGET_BYTES + OVERHEAD_BYTES;
    let store = disk_dir();
    let mut cg = Cgroup::create(limit);
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = Command::new(exe)
        .args(["child_workload", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_DIR_VAR, store.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning the child");
    // Into the cgroup before it allocates anything: it waits for a line on stdin.
    cg.write("cgroup.procs", &child.id().to_string());
    let mut stdin = child.stdin.take().expect("piped");
    writeln!(stdin, "go").expect("starting the child");
    drop(stdin);
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        BufReader::new(stdout).read_to_string(&mut out).map(|_| out)
    });
    cg.child = Some(child);
    let mut peaks = Peaks::default();
    let started = Instant::now();
    let status = loop {
        let c = cg.child.as_mut().expect("set");
        if let Some(status) = c.try_wait().expect("waiting for the child") {
            break status;
        }
        peaks.rss_bytes = peaks
            .rss_bytes
            .max(cg.field("memory.stat", "rss").unwrap_or(0));
        peaks.cache_bytes = peaks
            .cache_bytes
            .max(cg.field("memory.stat", "cache").unwrap_or(0));
        std::thread::sleep(SAMPLE_PERIOD);
    };
    cg.child = None;
    let out = reader.join().expect("reader").expect("child output");
    print!("{out}");
    let max_usage = cg.read_u64("memory.max_usage_in_bytes");
    let failcnt = cg.read_u64("memory.failcnt");
    let oom_kills = cg.field("memory.oom_control", "oom_kill");
    println!(
        "cgroup: limit {} MiB (budget {} + overhead {}), peak usage {:.1} MiB (resident {:.1} \
         + page cache {:.1} at their sampled peaks), {:.0} bytes per key, failcnt {failcnt}, \
         oom kills {oom_kills:?}, {:.0} s",
        limit / MIB,
        BUDGET_BYTES / MIB,
        OVERHEAD_BYTES / MIB,
        max_usage as f64 / MIB as f64,
        peaks.rss_bytes as f64 / MIB as f64,
        peaks.cache_bytes as f64 / MIB as f64,
        max_usage as f64 / f64::from(KEYS),
        started.elapsed().as_secs_f64(),
    );
    assert_eq!(
        status.signal(),
        None,
        "the child was killed (signal {:?}; oom kills {oom_kills:?})",
        status.signal()
    );
    assert!(status.success(), "the child failed: {status}");
    assert_eq!(
        oom_kills.unwrap_or(0),
        0,
        "the OOM killer ran in the cgroup"
    );
    assert_eq!(
        failcnt, 0,
        "the cgroup's usage reached its limit of {limit} bytes {failcnt} times (peak {max_usage})"
    );
    assert!(max_usage < limit);
}

/// The child's side: runs only when the parent test starts it.
#[test]
#[ignore = "the child process of memory_stays_within_the_budget_in_a_memory_cgroup"]
fn child_workload() {
    let dir = std::env::var_os(CHILD_DIR_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("run by the cgroup test, which sets {CHILD_DIR_VAR}"));
    let mut go = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut go)
        .expect("the parent's go");
    assert_eq!(go.trim(), "go", "the parent moved us into the cgroup");
    println!(
        "child: resident {:.1} MiB before opening a store (the test program)",
        status_bytes("VmRSS:") as f64 / MIB as f64
    );
    for &mode in Mode::ALL {
        run_mode(mode, &dir.join(mode.name()));
    }
}

fn run_mode(mode: Mode, dir: &Path) {
    let options = Options::default()
        .with_mode(mode)
        .with_memory_budget_bytes(BUDGET_BYTES)
        .with_main_segment_bytes(MAIN_SEGMENT_BYTES)
        .with_log_segment_bytes(LOG_SEGMENT_BYTES)
        .with_create_device_bytes(Some(DEVICE_BYTES));
    std::fs::create_dir_all(dir).expect("store dir");
    let device = dir.join("device");
    let db = Db::format(std::slice::from_ref(&device), &dir.join("meta"), &options)
        .unwrap_or_else(|e| panic!("{}: format: {e}", mode.name()));
    let mut versions = vec![0u32; KEYS as usize];
    for i in 0..KEYS {
        db.put(&key(i), &value(i, 0, VALUE_BYTES)).expect("load");
    }
    let mut peak_usage = db.memory_usage().total_bytes();
    for n in 0..UPDATES {
        let i = (mix(u64::from(n) ^ 0xabcd) % u64::from(KEYS)) as u32;
        versions[i as usize] += 1;
        db.put(&key(i), &value(i, versions[i as usize], VALUE_BYTES))
            .expect("update");
        if n % 10_000 == 0 {
            peak_usage = peak_usage.max(db.memory_usage().total_bytes());
        }
    }
    // Idle writes: the write side's unused shares go to the block cache for the reads
    // (`memory::Loan`), still within the budget.
    let lent = wait_for_loan(&db);
    assert!(
        lent > 0,
        "{}: no loan after the writes went idle",
        mode.name()
    );
    for n in 0..GETS {
        if n % 5_000 == 0 {
            peak_usage = peak_usage.max(db.memory_usage().total_bytes());
        }
        let i = (mix(u64::from(n) ^ 0x1234) % u64::from(KEYS)) as u32;
        let v = db.get(&key(i)).expect("get").expect("a loaded key");
        assert_eq!(
            check_value(&v),
            Some((i, versions[i as usize])),
            "get of key {i}"
        );
    }
    for n in 0..SCANS {
        let from = key((mix(u64::from(n) ^ 0x5678) % u64::from(KEYS)) as u32);
        let got = db
            .scan(Bound::Included(&from), Bound::Unbounded)
            .expect("scan")
            .take(SCAN_KEYS)
            .map(|r| r.map(|(_, v)| check_value(&v).is_some()))
            .collect::<Result<Vec<bool>, _>>()
            .expect("scan");
        assert!(got.iter().all(|ok| *ok), "a scanned value is damaged");
    }
    let usage = db.memory_usage();
    peak_usage = peak_usage.max(usage.total_bytes());
    report(mode, &db, &usage, peak_usage);
    // The next write takes the loan back before it adds to the write cache; so does a
    // flush, which takes buffers and grows the memtables.
    db.put(&key(0), &value(0, versions[0], VALUE_BYTES))
        .expect("a write after the reads");
    assert_loan_back(&db, mode, "a write");
    assert!(wait_for_loan(&db) > 0, "{}: no second loan", mode.name());
    db.flush().expect("flush");
    assert_loan_back(&db, mode, "a flush");
    db.close().expect("close");
    std::fs::remove_dir_all(dir).expect("removing the store");
}

/// After `what`, nothing is lent and the engine's count is within the budget.
fn assert_loan_back(db: &Db, mode: Mode, what: &str) {
    let after = db.memory_usage();
    let name = mode.name();
    assert_eq!(
        after.block_cache_loan_bytes, 0,
        "{name}: {what} kept the loan"
    );
    assert!(after.total_bytes() <= BUDGET_BYTES, "{name}: {after:?}");
}

/// Waits (a few idle periods at most) for the engine to lend its write side's unused
/// memory to the block cache; returns the bytes lent (0 if it never did).
fn wait_for_loan(db: &Db) -> u64 {
    let deadline = Instant::now() + 5 * hashkv::LOAN_IDLE;
    loop {
        let lent = db.memory_usage().block_cache_loan_bytes;
        if lent > 0 || Instant::now() > deadline {
            println!("loan: {:.1} MiB", lent as f64 / MIB as f64);
            return lent;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A size field of /proc/self/status (given in kB there), in bytes.
fn status_bytes(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
        * 1024
}

/// Prints where the memory goes, per stored key, and checks the engine's own count.
fn report(mode: Mode, db: &Db, u: &hashkv::MemoryUsage, peak_counted: u64) {
    let (rss, hwm) = (status_bytes("VmRSS:"), status_bytes("VmHWM:"));
    let per_key = |b: u64| b as f64 / f64::from(KEYS);
    let counted = u.total_bytes();
    println!(
        "{}: {KEYS} keys; resident {:.1} MiB now ({:.0} B/key), {:.1} MiB at peak; per key: \
         block cache {:.1}, index+filters {:.1}, memtables {:.1}, write cache {:.1}, flush \
         buffers {:.1}, value cache {:.1}, other {:.1} (program, threads, GC and compaction \
         buffers, allocator); value-cache hits {}",
        mode.name(),
        rss as f64 / MIB as f64,
        per_key(rss),
        hwm as f64 / MIB as f64,
        per_key(u.index.block_cache_bytes),
        per_key(u.index.pinned_index_filter_bytes),
        per_key(u.index.memtable_bytes),
        per_key(u.write_cache_bytes),
        per_key(u.buffer_pool_bytes),
        per_key(u.value_cache_bytes),
        per_key(rss.saturating_sub(counted)),
        db.stats().value_cache_hits,
    );
    assert!(
        peak_counted <= BUDGET_BYTES,
        "{}: the engine counted {peak_counted} bytes, over its budget of {BUDGET_BYTES}",
        mode.name()
    );
}
