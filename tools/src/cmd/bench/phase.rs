//! One phase of the benchmark: its operations split over worker threads that share one
//! store, per-operation latencies in a histogram, operations counted per 1-second window
//! of the phase (for its slowest window, see `report::slowest_window`), and a sampler on
//! the calling thread that drives the progress bar and records ops/s once per second for
//! the plot.

use super::super::store::{StoreCmdError, StoreResult};
use super::target::BenchTarget;
use crate::workload::{self, ScrambledZipf, KEY_BYTES};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Keys returned by each scan operation (the paper's scan test reads 100-key ranges).
pub const SCAN_KEYS: usize = 100;

/// How often the sampler wakes to redraw the progress bar.
const SAMPLER_TICK: Duration = Duration::from_millis(100);
/// A worker adds its operations to the shared count the progress bar and the plot read
/// once per this many: one shared counter added to by every operation of two threads
/// moved its cache line between the cores at every operation, a cost the engine's
/// figures then carried.
const OPS_DONE_BATCH: u64 = 64;
/// How often a throughput sample is kept for the plot.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Length of the windows a phase's operations are counted in for its slowest window:
/// the span the "no stalls" goal is stated over.
pub const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseKind {
    Load,
    /// Update phase number, from 1.
    Update(u32),
    Read,
    Scan,
}

impl PhaseKind {
    pub fn name(self) -> String {
        match self {
            PhaseKind::Load => "load".into(),
            PhaseKind::Update(n) => format!("update{n}"),
            PhaseKind::Read => "read".into(),
            PhaseKind::Scan => "scan".into(),
        }
    }

    pub fn writes(self) -> bool {
        matches!(self, PhaseKind::Load | PhaseKind::Update(_))
    }

    /// Distinguishes the random streams of different phases under one --seed.
    fn seed_salt(self) -> u64 {
        match self {
            PhaseKind::Load => 0,
            PhaseKind::Update(n) => u64::from(n),
            PhaseKind::Read => 1 << 32,
            PhaseKind::Scan => 2 << 32,
        }
    }
}

/// What every phase of one run shares.
pub struct Workload {
    /// Keys loaded: key(0) .. key(items - 1).
    pub items: u64,
    pub value_bytes: usize,
    pub zipf: ScrambledZipf,
    pub seed: u64,
    /// Keys per read of the read phase (1: get; more: one multi_get).
    pub read_batch: usize,
}

/// One throughput sample: seconds since the mode's first phase began, and the ops/s
/// over the interval that ended then.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at_seconds: f64,
    pub ops_per_sec: f64,
}

pub struct PhaseOutcome {
    pub ops: u64,
    pub seconds: f64,
    /// Seconds from the mode's first phase start to this phase's start.
    pub began_at_seconds: f64,
    /// Operations completed in each 1-second window from the phase's start: entry k
    /// counts those that completed in [k s, k+1 s).
    pub ops_per_window: Vec<u64>,
    /// Whole 1-second windows that ended before the phase's last operation completed:
    /// `ops_per_window[..full_windows]` covers whole seconds of operations; the entry
    /// after them (if any) counts a partial window.
    pub full_windows: usize,
    /// Key + value bytes the phase wrote (load, updates) as the user sees them.
    pub user_write_bytes: u64,
    /// Key + value bytes returned to the user (read, scan).
    pub user_read_bytes: u64,
    /// Per-operation latency in nanoseconds.
    pub latency_ns: Histogram<u64>,
    pub interrupted: bool,
}

/// Runs `ops_total` operations of `kind` over `threads` workers. Returns early (with
/// `interrupted`) once `stop` is set. Write phases end with the store's flush (a
/// durability point), inside the timed interval, so that the phase's throughput counts
/// data that reached the devices and the counters read afterwards hold all of the
/// phase's writes.
#[allow(clippy::too_many_arguments)]
pub fn run_phase(
    target: &dyn BenchTarget,
    kind: PhaseKind,
    ops_total: u64,
    threads: usize,
    workload: &Workload,
    stop: &AtomicBool,
    bar: &ProgressBar,
    mode_start: Instant,
    samples: &mut Vec<Sample>,
) -> StoreResult<PhaseOutcome> {
    let ops_done = AtomicU64::new(0);
    let user_write_bytes = AtomicU64::new(0);
    let user_read_bytes = AtomicU64::new(0);
    let first_error = FirstError::default();
    let started = Instant::now();
    let threads = threads.max(1) as u64;
    let tallies: Vec<WorkerTally> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|worker| {
                // Worker w does ops [start, end) of the phase: contiguous shares, so
                // the load inserts every key exactly once.
                let start = ops_total * worker / threads;
                let end = ops_total * (worker + 1) / threads;
                let ctx = WorkerCtx {
                    target,
                    kind,
                    phase_started: started,
                    workload,
                    stop,
                    first_error: &first_error,
                    ops_done: &ops_done,
                    user_write_bytes: &user_write_bytes,
                    user_read_bytes: &user_read_bytes,
                };
                scope.spawn(move || ctx.run(worker, start, end))
            })
            .collect();
        let all_done = || handles.iter().all(|h| h.is_finished());
        sample_until(all_done, &ops_done, bar, mode_start, samples);
        handles
            .into_iter()
            .map(|h| h.join().expect("benchmark worker panicked"))
            .collect()
    });
    if let Some(e) = first_error.take() {
        return Err(e);
    }
    if kind.writes() {
        target.flush()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let merged = WorkerTally::merge(&tallies);
    let ops = ops_done.load(Ordering::Relaxed);
    bar.set_position(ops);
    Ok(PhaseOutcome {
        ops,
        seconds,
        began_at_seconds: started.duration_since(mode_start).as_secs_f64(),
        full_windows: (merged.last_op_done.as_secs_f64() / WINDOW.as_secs_f64()) as usize,
        ops_per_window: merged.ops_per_window,
        user_write_bytes: user_write_bytes.load(Ordering::Relaxed),
        user_read_bytes: user_read_bytes.load(Ordering::Relaxed),
        latency_ns: merged.latency_ns,
        interrupted: stop.load(Ordering::Relaxed) && ops < ops_total,
    })
}

/// Until `all_done`, every `SAMPLER_TICK`: moves the progress bar, shows the rate over
/// the last second, and keeps a throughput sample every `SAMPLE_INTERVAL` for the plot.
fn sample_until(
    all_done: impl Fn() -> bool,
    ops_done: &AtomicU64,
    bar: &ProgressBar,
    mode_start: Instant,
    samples: &mut Vec<Sample>,
) {
    let mut last_sample = (Instant::now(), 0u64);
    // (time, ops done) at the ticks of the last second: the bar shows the rate over
    // that window, updated every tick.
    let mut window: std::collections::VecDeque<(Instant, u64)> =
        std::collections::VecDeque::from([(Instant::now(), 0)]);
    while !all_done() {
        std::thread::sleep(SAMPLER_TICK);
        let done = ops_done.load(Ordering::Relaxed);
        let now = Instant::now();
        bar.set_position(done);
        window.push_back((now, done));
        while window.len() > 2 && now.duration_since(window[0].0) > SAMPLE_INTERVAL {
            window.pop_front();
        }
        let (t0, done0) = window[0];
        let window_secs = now.duration_since(t0).as_secs_f64();
        if window_secs > 0.0 {
            let rate = (done - done0) as f64 / window_secs;
            bar.set_message(format!("{:.1} kops/s", rate / 1000.0));
        }
        let since = last_sample.0.elapsed();
        if since >= SAMPLE_INTERVAL {
            let ops_per_sec = (done - last_sample.1) as f64 / since.as_secs_f64();
            samples.push(Sample {
                at_seconds: mode_start.elapsed().as_secs_f64(),
                ops_per_sec,
            });
            last_sample = (Instant::now(), done);
        }
    }
    // The phase's last, partial interval, so that phases shorter than a second
    // still show in the plot.
    let since = last_sample.0.elapsed();
    if since >= SAMPLER_TICK {
        let done = ops_done.load(Ordering::Relaxed);
        samples.push(Sample {
            at_seconds: mode_start.elapsed().as_secs_f64(),
            ops_per_sec: (done - last_sample.1) as f64 / since.as_secs_f64(),
        });
    }
}

fn new_histogram() -> Histogram<u64> {
    // 3 significant digits, auto-resizing: latencies from ns to minutes fit.
    Histogram::new(3).expect("3 significant figures is a valid histogram precision")
}

/// What one worker measured.
struct WorkerTally {
    /// Latency of each operation, in nanoseconds.
    latency_ns: Histogram<u64>,
    /// Operations that completed in each `WINDOW` from the phase's start.
    ops_per_window: Vec<u64>,
    /// When its last operation completed, from the phase's start.
    last_op_done: Duration,
}

struct WorkerCtx<'a> {
    target: &'a dyn BenchTarget,
    kind: PhaseKind,
    /// Where the phase's windows are counted from.
    phase_started: Instant,
    workload: &'a Workload,
    stop: &'a AtomicBool,
    first_error: &'a FirstError,
    ops_done: &'a AtomicU64,
    user_write_bytes: &'a AtomicU64,
    user_read_bytes: &'a AtomicU64,
}

impl WorkerCtx<'_> {
    fn run(&self, worker: u64, start: u64, end: u64) -> WorkerTally {
        let mut tally = WorkerTally::empty();
        let mut rng =
            StdRng::seed_from_u64(self.workload.seed ^ self.kind.seed_salt() ^ (worker << 48));
        // Incompressible value bytes; the first 8 change with every op so that no two
        // versions of a key are alike.
        let mut value = vec![0u8; self.workload.value_bytes];
        rng.fill_bytes(&mut value);
        let (mut written, mut read) = (0u64, 0u64);
        let mut not_counted = 0u64;
        let mut op = start;
        while op < end {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            // A read of a batch covers that many ops (keys); everything else one.
            let keys = match self.kind {
                PhaseKind::Read => (self.workload.read_batch as u64).min(end - op),
                _ => 1,
            };
            let began = Instant::now();
            let result = match self.kind {
                PhaseKind::Load => self.put(op, op, &mut value, &mut written),
                PhaseKind::Update(_) => {
                    let index = self.workload.zipf.next(&mut rng);
                    self.put(index, op, &mut value, &mut written)
                }
                PhaseKind::Read if keys > 1 => self.multi_get(keys, &mut rng, &mut read),
                PhaseKind::Read => self.get(rng.gen_range(0..self.workload.items), &mut read),
                PhaseKind::Scan => self.scan(rng.gen_range(0..self.workload.items), &mut read),
            };
            if let Err(e) = result {
                self.first_error.set(e);
                self.stop.store(true, Ordering::Relaxed);
                break;
            }
            let done = Instant::now();
            let _ = tally
                .latency_ns
                .record(done.duration_since(began).as_nanos() as u64);
            tally.count(done.duration_since(self.phase_started), keys);
            not_counted += keys;
            if not_counted >= OPS_DONE_BATCH {
                self.ops_done.fetch_add(not_counted, Ordering::Relaxed);
                not_counted = 0;
            }
            op += keys;
        }
        self.ops_done.fetch_add(not_counted, Ordering::Relaxed);
        self.user_write_bytes.fetch_add(written, Ordering::Relaxed);
        self.user_read_bytes.fetch_add(read, Ordering::Relaxed);
        tally
    }

    /// Puts a new version of key `index` as the phase's operation `op` (each worker
    /// numbers its own range of them).
    fn put(&self, index: u64, op: u64, value: &mut [u8], written: &mut u64) -> StoreResult<()> {
        let key = workload::key(index);
        // No two versions of a key alike: the operation (unique in the phase) and the
        // phase, not a count shared by the workers (read at every operation, it moved
        // between the cores as the shared count did).
        let stamp = op ^ index.rotate_left(32) ^ self.kind.seed_salt().rotate_left(48);
        let n = value.len().min(8);
        value[..n].copy_from_slice(&stamp.to_le_bytes()[..n]);
        self.target.put(&key, value)?;
        *written += (key.len() + value.len()) as u64;
        Ok(())
    }

    fn get(&self, index: u64, read: &mut u64) -> StoreResult<()> {
        let key = workload::key(index);
        match self.target.get(&key)? {
            Some(value_len) => {
                *read += (key.len() + value_len) as u64;
                Ok(())
            }
            // Every key in 0..items was loaded and none deleted: a miss is a lost write.
            None => Err(StoreCmdError::LostWrite {
                store: self.target.name().to_string(),
                key: String::from_utf8_lossy(&key).into_owned(),
            }),
        }
    }

    /// One multi_get of `count` keys uniform over the loaded keys.
    fn multi_get(&self, count: u64, rng: &mut StdRng, read: &mut u64) -> StoreResult<()> {
        let keys: Vec<[u8; KEY_BYTES]> = (0..count)
            .map(|_| workload::key(rng.gen_range(0..self.workload.items)))
            .collect();
        let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        let lens = self.target.multi_get(&refs)?;
        for (key, len) in keys.iter().zip(lens) {
            let Some(value_len) = len else {
                return Err(StoreCmdError::LostWrite {
                    store: self.target.name().to_string(),
                    key: String::from_utf8_lossy(key).into_owned(),
                });
            };
            *read += (key.len() + value_len) as u64;
        }
        Ok(())
    }

    fn scan(&self, index: u64, read: &mut u64) -> StoreResult<()> {
        let key = workload::key(index);
        *read += self.target.scan(&key, SCAN_KEYS)?;
        Ok(())
    }
}

impl WorkerTally {
    fn empty() -> WorkerTally {
        WorkerTally {
            latency_ns: new_histogram(),
            ops_per_window: Vec::new(),
            last_op_done: Duration::ZERO,
        }
    }

    /// The workers' tallies as one: latencies and per-window counts summed, the last
    /// operation the latest of theirs.
    fn merge(tallies: &[WorkerTally]) -> WorkerTally {
        let mut all = WorkerTally::empty();
        for tally in tallies {
            all.latency_ns
                .add(&tally.latency_ns)
                .expect("histograms of one shape add up");
            if all.ops_per_window.len() < tally.ops_per_window.len() {
                all.ops_per_window.resize(tally.ops_per_window.len(), 0);
            }
            for (sum, n) in all.ops_per_window.iter_mut().zip(&tally.ops_per_window) {
                *sum += n;
            }
            all.last_op_done = all.last_op_done.max(tally.last_op_done);
        }
        all
    }

    /// Counts one operation that completed `since_start` after the phase began.
    /// `ops` completed `since_start` (a read of a batch counts its keys).
    fn count(&mut self, since_start: Duration, ops: u64) {
        let window = (since_start.as_nanos() / WINDOW.as_nanos()) as usize;
        if self.ops_per_window.len() <= window {
            self.ops_per_window.resize(window + 1, 0);
        }
        self.ops_per_window[window] += ops;
        self.last_op_done = since_start;
    }
}

/// The first error any worker hit; later ones are consequences (the others stop).
#[derive(Default)]
struct FirstError(std::sync::Mutex<Option<StoreCmdError>>);

impl FirstError {
    fn set(&self, e: StoreCmdError) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    fn take(&self) -> Option<StoreCmdError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[cfg(test)]
mod tests {
    use super::super::target::StoreCounters;
    use super::*;
    use std::sync::Mutex;

    /// A store of `items` loaded keys with 100-byte values, missing `lost` if set,
    /// that records the reads it serves.
    struct Recorder {
        items: u64,
        lost: Option<[u8; KEY_BYTES]>,
        gets: AtomicU64,
        multi_gets: Mutex<Vec<usize>>,
    }

    impl Recorder {
        fn new(items: u64, lost: Option<u64>) -> Recorder {
            Recorder {
                items,
                lost: lost.map(workload::key),
                gets: AtomicU64::new(0),
                multi_gets: Mutex::new(Vec::new()),
            }
        }

        fn value_len(&self, key: &[u8]) -> Option<usize> {
            (self.lost.as_ref().map(|k| &k[..]) != Some(key)).then_some(100)
        }
    }

    impl BenchTarget for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn put(&self, _: &[u8], _: &[u8]) -> StoreResult<()> {
            unreachable!("a read phase writes nothing")
        }
        fn get(&self, key: &[u8]) -> StoreResult<Option<usize>> {
            self.gets.fetch_add(1, Ordering::Relaxed);
            Ok(self.value_len(key))
        }
        fn multi_get(&self, keys: &[&[u8]]) -> StoreResult<Vec<Option<usize>>> {
            self.multi_gets.lock().unwrap().push(keys.len());
            Ok(keys.iter().map(|k| self.value_len(k)).collect())
        }
        fn scan(&self, _: &[u8], _: usize) -> StoreResult<u64> {
            unreachable!("a read phase scans nothing")
        }
        fn flush(&self) -> StoreResult<()> {
            Ok(())
        }
        fn counters(&self) -> StoreCounters {
            StoreCounters::default()
        }
        fn space_bytes(&self) -> u64 {
            self.items
        }
    }

    /// Sleeps `op_sleep` per put, and `stall` on the put of `stalled_key`.
    struct SlowTarget {
        op_sleep: Duration,
        stalled_key: [u8; crate::workload::KEY_BYTES],
        stall: Duration,
    }

    impl BenchTarget for SlowTarget {
        fn name(&self) -> &str {
            "slow"
        }
        fn put(&self, key: &[u8], _value: &[u8]) -> StoreResult<()> {
            let pause = if key == self.stalled_key {
                self.stall
            } else {
                self.op_sleep
            };
            std::thread::sleep(pause);
            Ok(())
        }
        fn get(&self, _key: &[u8]) -> StoreResult<Option<usize>> {
            unreachable!("the test runs a load phase only")
        }
        fn scan(&self, _from: &[u8], _limit: usize) -> StoreResult<u64> {
            unreachable!("the test runs a load phase only")
        }
        fn flush(&self) -> StoreResult<()> {
            Ok(())
        }
        fn counters(&self) -> StoreCounters {
            StoreCounters::default()
        }
        fn space_bytes(&self) -> u64 {
            0
        }
    }

    /// An operation that blocks for longer than 2 s covers at least one whole window
    /// in which nothing completes: the slowest window is 0 ops whatever the timing.
    #[test]
    fn a_stall_longer_than_a_window_is_a_window_with_no_operations() {
        const OPS: u64 = 20;
        let target = SlowTarget {
            op_sleep: Duration::from_millis(10),
            stalled_key: workload::key(OPS / 2),
            stall: Duration::from_millis(2200),
        };
        let workload = Workload {
            items: OPS,
            value_bytes: 16,
            zipf: ScrambledZipf::new(OPS, 0.99),
            seed: 1,
            read_batch: 1,
        };
        let mode_start = Instant::now();
        let mut samples = Vec::new();
        let outcome = run_phase(
            &target,
            PhaseKind::Load,
            OPS,
            1,
            &workload,
            &AtomicBool::new(false),
            &ProgressBar::hidden(),
            mode_start,
            &mut samples,
        )
        .unwrap();
        assert_eq!(outcome.ops, OPS);
        assert_eq!(outcome.ops_per_window.iter().sum::<u64>(), OPS);
        assert!(outcome.full_windows >= 2, "{:?}", outcome.ops_per_window);
        assert!(outcome.full_windows <= outcome.seconds as usize);
        assert!(outcome.ops_per_window.len() <= outcome.full_windows + 1);
        let slowest =
            super::super::report::slowest_window(&outcome.ops_per_window, outcome.full_windows)
                .unwrap();
        assert_eq!(slowest.ops_per_sec, 0.0, "{:?}", outcome.ops_per_window);
        assert_eq!(slowest.share, 0.0);
        assert!(outcome.latency_ns.max() >= 2_200_000_000);
        assert!(outcome.began_at_seconds >= 0.0 && outcome.began_at_seconds < 1.0);
    }

    fn read_phase(
        target: &Recorder,
        ops: u64,
        threads: usize,
        batch: usize,
    ) -> StoreResult<PhaseOutcome> {
        let workload = Workload {
            items: target.items,
            value_bytes: 100,
            zipf: ScrambledZipf::new(target.items, 0.99),
            seed: 1,
            read_batch: batch,
        };
        let stop = AtomicBool::new(false);
        let mut samples = Vec::new();
        run_phase(
            target,
            PhaseKind::Read,
            ops,
            threads,
            &workload,
            &stop,
            &ProgressBar::hidden(),
            Instant::now(),
            &mut samples,
        )
    }

    #[test]
    fn a_read_phase_with_a_batch_reads_every_key_in_multi_gets_of_at_most_that_many() {
        let target = Recorder::new(1000, None);
        let outcome = read_phase(&target, 1003, 3, 32).unwrap();
        assert_eq!(outcome.ops, 1003, "ops count keys");
        assert_eq!(outcome.user_read_bytes, 1003 * (KEY_BYTES as u64 + 100));
        assert_eq!(target.gets.load(Ordering::Relaxed), 0);
        let calls = target.multi_gets.lock().unwrap().clone();
        assert_eq!(calls.iter().sum::<usize>(), 1003);
        assert!(calls.iter().all(|&n| (1..=32).contains(&n)), "{calls:?}");
        // Each thread's share ends with one short batch at most.
        assert!(calls.iter().filter(|&&n| n < 32).count() <= 3, "{calls:?}");
        assert_eq!(
            outcome.latency_ns.len(),
            calls.len() as u64,
            "a latency per call"
        );
    }

    #[test]
    fn a_read_phase_of_batch_one_uses_get() {
        let target = Recorder::new(1000, None);
        let outcome = read_phase(&target, 500, 2, 1).unwrap();
        assert_eq!(outcome.ops, 500);
        assert_eq!(target.gets.load(Ordering::Relaxed), 500);
        assert!(target.multi_gets.lock().unwrap().is_empty());
    }

    #[test]
    fn a_key_missing_from_a_multi_get_is_a_lost_write() {
        // Two loaded keys, one of them lost: some batch asks for it.
        let target = Recorder::new(2, Some(1));
        let e = read_phase(&target, 64, 1, 8)
            .err()
            .expect("the lost key is noticed");
        assert!(matches!(e, StoreCmdError::LostWrite { .. }), "{e}");
    }
}
