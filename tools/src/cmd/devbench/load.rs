//! devbench's own load generator: keeps a shape's requests in flight on any
//! [`BlockDevice`] and measures throughput and latency.
//!
//! "QD32" means 32 requests in flight at every instant, as fio's `iodepth=32`, not
//! batches of 32 that drain to zero: `submitters` threads each keep a batch of
//! `batch_ops` requests in flight (`submitters * batch_ops = queue depth`). With one
//! request per thread the depth is exactly constant; with larger batches each thread's
//! share drains before it refills, which costs depth but saves wake-ups per request.

use super::shape::Pattern;
use crate::error::{CliError, CliResult};
use hashkv_blockdev::{BlockDevice, DeviceError, IoOp};
use hdrhistogram::Histogram;
use std::ops::DerefMut;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

/// Latencies above this are clamped into the histogram's last bucket: a request
/// taking more than a minute means the device is broken, not slow.
const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// hdrhistogram precision: 3 significant digits is what fio reports.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// A mixed shape's read share is given in percent.
const PERCENT: u64 = 100;

/// When a load ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this long (the time-based runs).
    After(Duration),
    /// After one pass over the region (the prefill); only for sequential writes.
    OnePass,
}

#[derive(Debug, Clone, Copy)]
pub struct LoadSpec {
    pub pattern: Pattern,
    pub block_bytes: usize,
    pub submitters: usize,
    pub batch_ops: usize,
    /// Requests address `[0, region_bytes)`; a multiple of `block_bytes`.
    pub region_bytes: u64,
    pub stop: Stop,
    /// Seeds the offsets and the written data.
    pub seed: u64,
}

/// Requests of one direction.
#[derive(Debug, Clone)]
pub struct DirectionStats {
    pub ops: u64,
    pub bytes: u64,
    /// From submit to completion of the batch the request was in.
    pub latency_ns: Histogram<u64>,
}

impl DirectionStats {
    fn new() -> DirectionStats {
        DirectionStats {
            ops: 0,
            bytes: 0,
            latency_ns: Histogram::new_with_max(LATENCY_NS_MAX, LATENCY_SIGNIFICANT_DIGITS)
                .expect("valid histogram bounds"),
        }
    }

    /// One request of `bytes` that took `latency_ns` (clamped to the histogram's range).
    fn record(&mut self, bytes: u64, latency_ns: u64) {
        self.ops += 1;
        self.bytes += bytes;
        self.latency_ns
            .record(latency_ns.clamp(1, LATENCY_NS_MAX))
            .expect("clamped to the histogram's range");
    }

    fn merge(&mut self, other: &DirectionStats) {
        self.ops += other.ops;
        self.bytes += other.bytes;
        self.latency_ns
            .add(&other.latency_ns)
            .expect("same histogram bounds");
    }
}

#[derive(Debug, Clone)]
pub struct LoadResult {
    /// From the moment every submitter started to the moment the last one finished
    /// (summed over runs that were added together).
    pub elapsed: Duration,
    pub read: DirectionStats,
    pub write: DirectionStats,
}

impl LoadResult {
    /// Adds another run of the same shape (its time and its requests).
    pub fn add(&mut self, other: &LoadResult) {
        self.elapsed += other.elapsed;
        self.read.merge(&other.read);
        self.write.merge(&other.write);
    }

    pub fn bytes_per_s(&self) -> f64 {
        (self.read.bytes + self.write.bytes) as f64 / self.elapsed.as_secs_f64()
    }

    pub fn ops_per_s(&self) -> f64 {
        (self.read.ops + self.write.ops) as f64 / self.elapsed.as_secs_f64()
    }
}

/// xorshift64*: offsets and data need speed and a seed, not statistical perfection.
struct FastRng(u64);

impl FastRng {
    fn new(seed: u64) -> FastRng {
        // Never 0, which xorshift cannot leave.
        FastRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// What a load's submitters share.
struct Shared {
    /// Next block of a sequential pattern, shared so that all submitters together write
    /// one sequential stream, as fio's single job does.
    next_block: AtomicU64,
    /// Set on the first failed request: every submitter stops.
    failed: AtomicBool,
    first_error: Mutex<Option<DeviceError>>,
    /// Releases the submitters and the timer together.
    start_barrier: Barrier,
    results: Mutex<Vec<SubmitterResult>>,
}

/// One submitter's requests, and when it stopped.
struct SubmitterResult {
    finished_at: Instant,
    read: DirectionStats,
    write: DirectionStats,
}

/// The next request of a submitter's batch.
struct NextRequest {
    block: u64,
    is_read: bool,
}

/// Runs `spec` on `device`, with buffers from `alloc` (so the io_uring device can hand
/// out registered buffers). Returns the first device error if any request fails.
pub fn run_load<D, B, A>(device: &D, alloc: A, spec: &LoadSpec) -> CliResult<LoadResult>
where
    D: BlockDevice + ?Sized,
    B: DerefMut<Target = [u8]> + Send,
    A: Fn(usize) -> B + Sync,
{
    assert!(spec.submitters > 0 && spec.batch_ops > 0);
    assert!(spec.region_bytes >= spec.block_bytes as u64);
    assert_eq!(spec.region_bytes % spec.block_bytes as u64, 0);
    if matches!(spec.stop, Stop::OnePass) {
        assert_eq!(
            spec.pattern,
            Pattern::SeqWrite,
            "one pass is for sequential writes"
        );
    }
    let shared = Shared {
        next_block: AtomicU64::new(0),
        failed: AtomicBool::new(false),
        first_error: Mutex::new(None),
        start_barrier: Barrier::new(spec.submitters + 1),
        results: Mutex::new(Vec::with_capacity(spec.submitters)),
    };

    let start = std::thread::scope(|scope| {
        for submitter in 0..spec.submitters {
            let (shared, alloc) = (&shared, &alloc);
            scope.spawn(move || {
                let result = submit_until_stopped(device, alloc, spec, submitter, shared);
                shared.results.lock().unwrap().push(result);
            });
        }
        shared.start_barrier.wait();
        Instant::now()
    });

    if let Some(e) = shared.first_error.into_inner().unwrap() {
        return Err(CliError::Device(e));
    }
    let mut read = DirectionStats::new();
    let mut write = DirectionStats::new();
    let mut end = start;
    for result in shared.results.into_inner().unwrap() {
        end = end.max(result.finished_at);
        read.merge(&result.read);
        write.merge(&result.write);
    }
    Ok(LoadResult {
        elapsed: end - start,
        read,
        write,
    })
}

/// One submitter: fills its buffers, waits for the start, then keeps a batch of
/// `spec.batch_ops` requests in flight until the load stops or a request fails.
fn submit_until_stopped<D, B, A>(
    device: &D,
    alloc: &A,
    spec: &LoadSpec,
    submitter: usize,
    shared: &Shared,
) -> SubmitterResult
where
    D: BlockDevice + ?Sized,
    B: DerefMut<Target = [u8]> + Send,
    A: Fn(usize) -> B + Sync,
{
    let region_blocks = spec.region_bytes / spec.block_bytes as u64;
    // The submitter's number in the seed's high half: every submitter draws its own
    // offsets and data.
    let mut rng = FastRng::new(spec.seed ^ ((submitter as u64 + 1) << 32));
    let mut bufs = random_buffers(alloc, spec, &mut rng);
    let mut read = DirectionStats::new();
    let mut write = DirectionStats::new();
    let mut is_read = vec![false; spec.batch_ops];
    shared.start_barrier.wait();
    let deadline = match spec.stop {
        Stop::After(d) => Some(Instant::now() + d),
        Stop::OnePass => None,
    };
    loop {
        if shared.failed.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let mut ops: Vec<IoOp<'_>> = Vec::with_capacity(spec.batch_ops);
        for (i, buf) in bufs.iter_mut().enumerate() {
            let Some(next) = next_request(spec, &mut rng, &shared.next_block, region_blocks) else {
                break;
            };
            let offset = next.block * spec.block_bytes as u64;
            let buf = &mut buf[..spec.block_bytes];
            is_read[i] = next.is_read;
            ops.push(if next.is_read {
                IoOp::Read { offset, buf }
            } else {
                IoOp::Write {
                    offset,
                    buf,
                    fua: false,
                }
            });
        }
        if ops.is_empty() {
            break;
        }
        let submitted_at = Instant::now();
        let result = device.submit(&mut ops);
        let latency_ns = (submitted_at.elapsed().as_nanos() as u64).min(LATENCY_NS_MAX);
        if let Err(e) = result {
            shared.failed.store(true, Ordering::Relaxed);
            shared.first_error.lock().unwrap().get_or_insert(e);
            break;
        }
        for &read_op in &is_read[..ops.len()] {
            let stats = if read_op { &mut read } else { &mut write };
            stats.record(spec.block_bytes as u64, latency_ns);
        }
    }
    SubmitterResult {
        finished_at: Instant::now(),
        read,
        write,
    }
}

/// A submitter's `spec.batch_ops` buffers of `spec.block_bytes`, filled with
/// incompressible data, so that no layer below gets a cheap write.
fn random_buffers<B, A>(alloc: &A, spec: &LoadSpec, rng: &mut FastRng) -> Vec<B>
where
    B: DerefMut<Target = [u8]>,
    A: Fn(usize) -> B,
{
    let mut bufs: Vec<B> = (0..spec.batch_ops)
        .map(|_| alloc(spec.block_bytes))
        .collect();
    for buf in bufs.iter_mut() {
        for word in buf.chunks_exact_mut(size_of::<u64>()) {
            word.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
    }
    bufs
}

/// The block and direction of a submitter's next request; `None` once a one-pass load
/// has handed out the whole region.
fn next_request(
    spec: &LoadSpec,
    rng: &mut FastRng,
    next_block: &AtomicU64,
    region_blocks: u64,
) -> Option<NextRequest> {
    Some(match spec.pattern {
        Pattern::SeqWrite => {
            let block = next_block.fetch_add(1, Ordering::Relaxed);
            if matches!(spec.stop, Stop::OnePass) && block >= region_blocks {
                return None;
            }
            NextRequest {
                block: block % region_blocks,
                is_read: false,
            }
        }
        Pattern::RandWrite => NextRequest {
            block: rng.below(region_blocks),
            is_read: false,
        },
        Pattern::RandRead => NextRequest {
            block: rng.below(region_blocks),
            is_read: true,
        },
        // Block first, then direction: the order the draws are made in.
        Pattern::RandMixed { read_percent } => NextRequest {
            block: rng.below(region_blocks),
            is_read: rng.below(PERCENT) < u64::from(read_percent),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hashkv_blockdev::sim::{SimConfig, SimDevice};
    use hashkv_blockdev::AlignedBuf;

    fn spec(pattern: Pattern, stop: Stop) -> LoadSpec {
        LoadSpec {
            pattern,
            block_bytes: 64 << 10,
            submitters: 4,
            batch_ops: 2,
            region_bytes: 4 << 20,
            stop,
            seed: 1,
        }
    }

    #[test]
    fn one_pass_writes_every_block_once() {
        let dev = SimDevice::new(SimConfig::new(8 << 20, 1)).unwrap();
        let result = run_load(
            &dev,
            AlignedBuf::new,
            &spec(Pattern::SeqWrite, Stop::OnePass),
        )
        .unwrap();
        assert_eq!(result.write.bytes, 4 << 20);
        assert_eq!(result.write.ops, 64);
        assert_eq!(result.read.ops, 0);
        // Every block of the region holds data now (random data is never all zero);
        // nothing beyond the region was touched.
        for block in 0..64u64 {
            let data = dev.peek(block * (64 << 10), 64 << 10).unwrap();
            assert!(data.iter().any(|&b| b != 0), "block {block} not written");
        }
        assert!(dev.peek(4 << 20, 4 << 20).unwrap().iter().all(|&b| b == 0));
    }

    #[test]
    fn mixed_load_splits_reads_and_writes() {
        let dev = SimDevice::new(SimConfig::new(8 << 20, 1)).unwrap();
        let s = LoadSpec {
            block_bytes: 4096,
            ..spec(
                Pattern::RandMixed { read_percent: 70 },
                Stop::After(Duration::from_millis(200)),
            )
        };
        let result = run_load(&dev, AlignedBuf::new, &s).unwrap();
        let total = result.read.ops + result.write.ops;
        assert!(total > 1000, "{total} ops");
        let read_share = result.read.ops as f64 / total as f64;
        assert!((0.6..0.8).contains(&read_share), "{read_share}");
        assert_eq!(result.read.latency_ns.len(), result.read.ops);
        assert!(result.elapsed >= Duration::from_millis(200));
        let counters = dev.counters()[0];
        assert_eq!(
            (counters.read_ops, counters.write_ops),
            (result.read.ops, result.write.ops)
        );
    }

    #[test]
    fn added_runs_sum_time_and_requests() {
        let dev = SimDevice::new(SimConfig::new(8 << 20, 1)).unwrap();
        let s = spec(Pattern::RandWrite, Stop::After(Duration::from_millis(50)));
        let mut total = run_load(&dev, AlignedBuf::new, &s).unwrap();
        let second = run_load(&dev, AlignedBuf::new, &s).unwrap();
        let (first_ops, first_elapsed) = (total.write.ops, total.elapsed);
        total.add(&second);
        assert_eq!(total.write.ops, first_ops + second.write.ops);
        assert_eq!(total.write.latency_ns.len(), total.write.ops);
        assert_eq!(total.elapsed, first_elapsed + second.elapsed);
        assert_eq!(dev.counters()[0].write_ops, total.write.ops);
    }

    #[test]
    fn device_errors_stop_the_load_and_surface() {
        let dev = SimDevice::new(SimConfig::new(8 << 20, 1)).unwrap();
        dev.inject(hashkv_blockdev::sim::FaultRule::eio().at_op(50))
            .unwrap();
        let result = run_load(
            &dev,
            AlignedBuf::new,
            &spec(Pattern::RandRead, Stop::After(Duration::from_secs(30))),
        );
        assert!(matches!(
            result,
            Err(CliError::Device(hashkv_blockdev::DeviceError::Io { .. }))
        ));
    }
}
