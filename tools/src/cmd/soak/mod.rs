//! `hashkv soak`: threads run mixed, checked operations on a small store for a set
//! time while GC runs. Each thread owns a disjoint range of keys and keeps a model of
//! it (`worker.rs`), so every get and scan is checked as it returns. At the end the
//! whole store is checked against the models (every key, a full scan, the store's full
//! check), then closed, reopened and read again. Prints operations, duration, GC runs
//! and the peak resident memory, which must stay under `PEAK_RESIDENT_BYTES_MAX`.

mod worker;

use crate::cmd::stress::small_store::{self, SmallStoreArgs};
use crate::cmd::stress::values::{key, key_index, show_key};
use crate::cmd::stress::{engine_error, io_error, StressError, StressResult};
use hashkv::Db;
use std::ops::{Bound, Range};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use worker::{check_read, Counts, Owned, Worker, KINDS};

/// Threads by default: the soak.
const THREADS_DEFAULT: usize = 8;
/// Most threads: each needs a range of at least `KEYS_PER_THREAD_MIN` keys.
const THREADS_MAX: usize = 64;
/// Keys shared out among the threads: about 10 MiB of live values at 2.5 KiB on
/// average (`stress::values`), a third of the default 32 MiB store, so GC always finds
/// garbage and the store never fills.
const SOAK_KEYS_TOTAL: u32 = 4096;
const KEYS_PER_THREAD_MIN: u32 = SOAK_KEYS_TOTAL / THREADS_MAX as u32;
const _: () = assert!(KEYS_PER_THREAD_MIN >= 32);
/// Write cache: several flushes a second under the soak's writes, each with
/// writes of several threads in it.
const WRITE_CACHE_BYTES: u64 = 4 << 20;
/// Peak resident memory allowed. What the engine may hold is bounded by its options:
/// the write cache (4 MiB), the flush/GC buffer pool (16 MiB at least), the index's
/// block cache (8 MiB) and memtables (under 1 MiB), plus per-thread scratch; the rest
/// is the program itself, thread stacks and io_uring rings. Measured with 8 threads
/// (2026-12-01): 36-58 MiB in every mode, the same after 15 s as after 60 s. The bound
/// is under three times the highest: room for allocator slack and a slower machine's
/// longer queues, while a per-operation leak or a cache that ignores its bound crosses
/// it within a minute.
pub const PEAK_RESIDENT_BYTES_MAX: u64 = 160 << 20;
/// How often a line of progress is printed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// How often the main thread looks at the clock and the stop flag.
const WAIT_STEP: Duration = Duration::from_millis(50);
/// Where the peak resident memory is read.
const PROC_SELF_STATUS: &str = "/proc/self/status";

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// How long the threads run, in seconds.
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub seconds: u64,

    /// Threads, each on its own range of keys.
    #[arg(long, value_name = "T", default_value_t = THREADS_DEFAULT)]
    pub threads: usize,

    /// Device or file of the store (repeat for every member of a stripe, in order);
    /// paths that do not exist are created as files of --device-mib MiB. FORMATTED.
    /// [default: a file in a temporary directory, removed afterwards]
    #[arg(long = "device", value_name = "PATH")]
    pub devices: Vec<PathBuf>,

    /// Metadata (index) directory of the store (needed with --device).
    #[arg(long, value_name = "DIR")]
    pub metadata: Option<PathBuf>,

    /// Seed of the threads' operations.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,

    #[command(flatten)]
    pub store: SmallStoreArgs,
}

/// Where the store lives; a temporary one is removed when this is dropped, unless
/// `keep` was called.
struct Placement {
    devices: Vec<PathBuf>,
    metadata: PathBuf,
    temp: Option<tempfile::TempDir>,
}

impl Placement {
    fn new(args: &SoakArgs) -> StressResult<Placement> {
        match (&args.devices[..], &args.metadata) {
            ([], None) => {
                let base = crate::cmd::bench::scratch_base()
                    .map_err(|e| StressError::Usage(e.to_string()))?;
                let temp = tempfile::Builder::new()
                    .prefix("hashkv-soak-")
                    .tempdir_in(&base)
                    .map_err(io_error(&base, "creating a temporary directory"))?;
                Ok(Placement {
                    devices: vec![temp.path().join("device")],
                    metadata: temp.path().join("metadata"),
                    temp: Some(temp),
                })
            }
            ([], Some(_)) => Err(StressError::Usage(
                "--metadata without --device: name the store's devices too".into(),
            )),
            (_, None) => Err(StressError::Usage(
                "--device needs --metadata: the directory of the store's index".into(),
            )),
            (devices, Some(metadata)) => Ok(Placement {
                devices: devices.to_vec(),
                metadata: metadata.clone(),
                temp: None,
            }),
        }
    }

    /// Keeps a temporary store (for inspection after a failure); returns where.
    fn keep(&mut self) -> String {
        match self.temp.take() {
            Some(t) => format!("kept for inspection in {}", t.keep().display()),
            None => format!(
                "kept for inspection: --device {} --metadata {}",
                self.devices[0].display(),
                self.metadata.display()
            ),
        }
    }
}

fn check_args(args: &SoakArgs) -> StressResult<()> {
    let usage = |m: String| Err(StressError::Usage(m));
    args.store.mode().map_err(StressError::Usage)?;
    args.store.device_bytes().map_err(StressError::Usage)?;
    if !(1..=THREADS_MAX).contains(&args.threads) {
        return usage(format!(
            "--threads {} must lie in 1..={THREADS_MAX} (each thread owns at least \
             {KEYS_PER_THREAD_MIN} of the {SOAK_KEYS_TOTAL} keys)",
            args.threads
        ));
    }
    if args.seconds == 0 {
        return usage("--seconds must be at least 1".into());
    }
    Ok(())
}

/// The keys thread `t` of `threads` owns.
fn key_range(t: usize, threads: usize) -> Range<u32> {
    let per = SOAK_KEYS_TOTAL / threads as u32;
    let start = t as u32 * per;
    start..start + per
}

pub fn run(args: &SoakArgs) -> StressResult<()> {
    check_args(args)?;
    let mut place = Placement::new(args)?;
    let result = soak(args, &place);
    if let Err(StressError::Failed(what)) = result {
        return Err(StressError::Failed(format!(
            "seed {}: {what}\n  the store is {}",
            args.seed,
            place.keep()
        )));
    }
    result
}

fn soak(args: &SoakArgs, place: &Placement) -> StressResult<()> {
    let bytes = args.store.device_bytes().map_err(StressError::Usage)?;
    small_store::create_missing_files(&place.devices, bytes)
        .map_err(|(path, source)| StressError::CreateDevice { path, source })?;
    let options = args
        .store
        .options(WRITE_CACHE_BYTES)
        .map_err(StressError::Usage)?;
    let db = small_store::format(&place.devices, &place.metadata, &options)?;
    println!(
        "soak: {} thread(s) for {} s, mode {}, hotness {}, reserve {}, seed {}, {} keys, store \
         on {}",
        args.threads,
        args.seconds,
        args.store.mode,
        args.store.hotness,
        args.store.reserve,
        args.seed,
        SOAK_KEYS_TOTAL,
        place.devices[0].display()
    );
    let started = Instant::now();
    let (workers, counts) = run_threads(&db, args)?;
    let ran = started.elapsed();
    let stats = db.stats();
    check_all(&db, &workers, "at the end")?;
    db.close().map_err(engine_error("closing the store"))?;
    let db = small_store::open(
        &place.devices,
        &place.metadata,
        &options.with_force_format(false),
    )
    .map_err(engine_error("reopening the store"))?;
    check_all(&db, &workers, "after closing and reopening")?;
    db.close().map_err(engine_error("closing the store"))?;
    let peak = peak_resident_bytes()?;
    report(&counts, ran, &stats, peak);
    if peak > PEAK_RESIDENT_BYTES_MAX {
        return Err(StressError::Failed(format!(
            "peak resident memory {} MiB exceeds the bound of {} MiB (PEAK_RESIDENT_BYTES_MAX)",
            peak >> 20,
            PEAK_RESIDENT_BYTES_MAX >> 20
        )));
    }
    Ok(())
}

/// Runs the threads for the set time (or until one finds a wrong result); returns
/// their models and their counts of operations.
fn run_threads(db: &Db, args: &SoakArgs) -> StressResult<(Vec<Owned>, Vec<Counts>)> {
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let workers = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.threads)
            .map(|t| {
                let (stop, first_error) = (&stop, &first_error);
                s.spawn(move || {
                    let mut w = Worker::new(t as u32, db, key_range(t, args.threads), args.seed);
                    if let Err(e) = w.run(stop) {
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                    (w.owned, w.counts)
                })
            })
            .collect();
        wait_and_report(db, deadline, &stop);
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect::<Vec<_>>()
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(StressError::Failed(e)),
        None => Ok(workers.into_iter().unzip()),
    }
}

/// Waits until `deadline` or until a thread stops the run, printing progress.
fn wait_and_report(db: &Db, deadline: Instant, stop: &AtomicBool) {
    let started = Instant::now();
    let mut next_report = started + PROGRESS_INTERVAL;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(WAIT_STEP);
        if Instant::now() >= next_report {
            next_report += PROGRESS_INTERVAL;
            let s = db.stats();
            println!(
                "  {:>4} s: {} writes, {} GC runs",
                started.elapsed().as_secs(),
                s.user_ops,
                s.gc_runs + s.cold_gc_runs
            );
        }
    }
}

/// Every key of every thread reads back as its model says, a full scan returns
/// exactly the keys that hold values, and the store's full check finds no damage.
fn check_all(db: &Db, workers: &[Owned], when: &str) -> StressResult<()> {
    let fail = |what: String| StressError::Failed(format!("final check {when}: {what}"));
    let owner = |k: u32| workers.iter().find(|w| w.owns(k));
    for w in workers {
        for k in w.keys() {
            let got = db
                .get(&key(k))
                .map_err(|e| fail(format!("get {}: {e}", show_key(k))))?;
            check_read(k, got.as_deref(), w.expected(k))
                .map_err(|why| fail(format!("thread {}: {why}", w.thread)))?;
        }
    }
    let mut listed = 0u64;
    let scan = db
        .scan(Bound::Unbounded, Bound::Unbounded)
        .map_err(|e| fail(format!("full scan: {e}")))?;
    for item in scan {
        let (k, v) = item.map_err(|e| fail(format!("full scan: {e}")))?;
        let index = key_index(&k);
        let Some((i, w)) = index.and_then(|i| Some((i, owner(i)?))) else {
            return Err(fail(format!(
                "the full scan returned key {:?}, which no thread wrote",
                String::from_utf8_lossy(&k)
            )));
        };
        check_read(i, Some(&v), w.expected(i)).map_err(|why| fail(format!("full scan: {why}")))?;
        listed += 1;
    }
    let present: u64 = workers.iter().map(|w| w.present()).sum();
    if listed != present {
        return Err(fail(format!(
            "the full scan returned {listed} keys; the models hold {present}"
        )));
    }
    let report = db.check().map_err(|e| fail(format!("full check: {e}")))?;
    if !report.is_clean() {
        return Err(fail(format!(
            "the full check found {} damaged record(s) or index entries; the first: {}",
            report.damage_count,
            report.damage.first().cloned().unwrap_or_default()
        )));
    }
    Ok(())
}

fn report(counts: &[Counts], ran: Duration, stats: &hashkv::Stats, peak: u64) {
    let mut per_kind: Counts = [0; KINDS.len()];
    for c in counts {
        for (total, n) in per_kind.iter_mut().zip(c) {
            *total += n;
        }
    }
    let ops: u64 = per_kind.iter().sum();
    let kinds: Vec<String> = KINDS
        .iter()
        .zip(per_kind)
        .map(|(k, n)| format!("{} {n}", k.name()))
        .collect();
    println!(
        "soak passed: {ops} operations in {:.1} s ({:.0} ops/s): {}",
        ran.as_secs_f64(),
        ops as f64 / ran.as_secs_f64(),
        kinds.join(", ")
    );
    println!(
        "GC runs {} (cold log {}), {} flushes, {:.1} MiB written by GC",
        stats.gc_runs + stats.cold_gc_runs,
        stats.cold_gc_runs,
        stats.flushes,
        stats.gc_device_bytes_written as f64 / (1 << 20) as f64
    );
    println!(
        "peak resident memory {:.1} MiB (bound {} MiB)",
        peak as f64 / (1 << 20) as f64,
        PEAK_RESIDENT_BYTES_MAX >> 20
    );
}

/// The process's peak resident set (VmHWM), in bytes.
fn peak_resident_bytes() -> StressResult<u64> {
    let path = Path::new(PROC_SELF_STATUS);
    let text = std::fs::read_to_string(path).map_err(io_error(path, "reading"))?;
    parse_vm_hwm(&text).ok_or_else(|| StressError::Io {
        path: path.to_path_buf(),
        action: "reading VmHWM",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no \"VmHWM: N kB\" line"),
    })
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status =
            "Name:\thashkv\nVmPeak:\t  300000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(51234 * 1024));
        assert_eq!(parse_vm_hwm("VmRSS: 4 kB\n"), None);
        assert!(peak_resident_bytes().unwrap() > 0);
    }

    #[test]
    fn key_ranges_are_disjoint_and_inside_the_key_space() {
        for threads in [1, 3, 8, THREADS_MAX] {
            let ranges: Vec<_> = (0..threads).map(|t| key_range(t, threads)).collect();
            assert!(ranges.windows(2).all(|w| w[0].end <= w[1].start));
            assert!(ranges.iter().all(|r| r.len() as u32 >= KEYS_PER_THREAD_MIN));
            assert!(ranges.last().unwrap().end <= SOAK_KEYS_TOTAL);
        }
    }
}
