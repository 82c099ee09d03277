//! The memtable under the engine's load: ns per insert (one at a time, and in write
//! batches of 4096 as the write path applies them), ns per point get (hit and miss), and
//! a full ordered scan, both as range iterators walk it (`step`) and as a flush does
//! (`for_each`).
//!
//! Keys are the engine's index keys: a 1-byte namespace + a 24-byte YCSB key ("user" +
//! 20 digits of a hashed index), 25 bytes; values are 21 bytes, the size of a value
//! pointer. A memtable is filled to `FILL_ENTRIES`, about the size at which the default
//! 64 MiB memtable rotates, then replaced.
//!
//! Times are the benchmark thread's CPU time (see `ThreadCpu`).
//!
//! cargo bench -p hashkv-lsm --bench memtable
//!
//! The memtable and internal-key modules are compiled into this benchmark from the
//! crate's sources (they are private to the crate), so it measures exactly their code.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nix::time::{clock_gettime, ClockId};

// Test modules compile here too when cargo builds benches in test mode (cargo test
// --benches, clippy --tests), without their #[test] functions: hence unused_imports.
#[allow(dead_code, unused_imports)]
#[path = "../src/ikey.rs"]
mod ikey;
#[allow(dead_code, unused_imports)]
#[path = "../src/memtable/mod.rs"]
mod memtable;
// The memtable's runs use the tables' filter: its source too, with what it takes
// from the crate (a decode error type, the allocator's rounding).
#[allow(dead_code, unused_imports)]
#[path = "../src/table/filter.rs"]
mod table_filter;
mod table {
    pub(crate) use super::table_filter as filter;
    /// The filter's tests (compiled, not run, in test-mode builds of this benchmark)
    /// name the current table format.
    #[cfg(test)]
    pub mod footer {
        pub const TABLE_FORMAT_VERSION: u32 = 2;
    }
}
#[allow(dead_code)]
mod error {
    #[derive(Debug)]
    pub struct LsmError(String);
    impl LsmError {
        pub fn corrupt(what: impl Into<String>) -> LsmError {
            LsmError(what.into())
        }
    }
    pub type Result<T, E = LsmError> = std::result::Result<T, E>;
}
mod memory {
    pub use hashkv_lsm::heap_bytes;
}
// What those modules take from the crate root.
use hashkv_lsm::{KEY_BYTES_MAX, VALUE_BYTES_MAX};

use ikey::Kind;
use memtable::{MemIter, Memtable};

/// Entries per memtable: at ~150 accounted bytes per entry this is about where the
/// default 64 MiB memtable rotates, so inserts see the depths the engine sees.
const FILL_ENTRIES: usize = 400_000;
/// Entries in one write batch: an engine flush commits thousands of locations at once.
const BATCH_ENTRIES: usize = 4096;
const VALUE_BYTES: usize = 21;
const KEY_BYTES: usize = 25;
/// The engine's namespace byte for value locations.
const NAMESPACE: u8 = 1;

/// FNV-1a 64, as YCSB (and tools/src/workload.rs) hashes key numbers.
fn fnv64(mut x: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for _ in 0..8 {
        h ^= x & 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        x >>= 8;
    }
    h
}

fn key(index: u64) -> [u8; KEY_BYTES] {
    let mut k = [0u8; KEY_BYTES];
    k[0] = NAMESPACE;
    k[1..5].copy_from_slice(b"user");
    k[5..].copy_from_slice(format!("{:020}", fnv64(index)).as_bytes());
    k
}

fn keys(range: std::ops::Range<u64>) -> Vec<[u8; KEY_BYTES]> {
    range.map(key).collect()
}

fn value(i: usize) -> [u8; VALUE_BYTES] {
    let mut v = [0u8; VALUE_BYTES];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v
}

/// Criterion's clock here: this thread's CPU time, not wall time. The machine is shared
/// by several builds and benchmarks (load 10 on 2 cores is common), so wall time mostly
/// measures the scheduler; CPU time still includes our page faults and cache misses.
struct ThreadCpu;

/// Only its formatter is used: ThreadCpu's values are durations too.
static WALL_TIME: WallTime = WallTime;

impl Measurement for ThreadCpu {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        let t =
            clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("Linux has a thread CPU clock");
        Duration::from(t)
    }
    fn end(&self, start: Duration) -> Duration {
        self.start() - start
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WALL_TIME.formatter()
    }
}

// The memtable's interface, as the write path, gets, iterators and flushes call it.

/// One entry as a write batch of its own, as a single put applies it.
fn insert_one(mem: &Memtable, key: &[u8], seq: u64, value: &[u8]) {
    mem.writer().insert(key, seq, Kind::Put, value);
}

/// One write batch, as db/write.rs applies it: consecutive sequences from `first_seq`.
fn insert_batch(mem: &Memtable, keys: &[[u8; KEY_BYTES]], first_seq: u64) {
    let mut writer = mem.writer();
    for (i, k) in keys.iter().enumerate() {
        writer.insert(k, first_seq + i as u64, Kind::Put, &value(i));
    }
}

fn get(mem: &Memtable, key: &[u8]) -> bool {
    mem.get(key, ikey::SEQ_MAX).is_some()
}

/// A full scan as iter.rs's MemIter walks the memtable: entries are copied out.
fn scan_step(mem: &Arc<Memtable>) -> usize {
    let mut n = 0;
    let mut it = MemIter::new(mem.clone(), true, None);
    while let Some(entry) = it.step() {
        black_box(&entry);
        n += 1;
    }
    n
}

/// A full scan as a flush walks the memtable: entries are borrowed.
fn scan_for_each(mem: &Memtable) -> usize {
    let mut n = 0;
    mem.for_each(|k, v| {
        black_box((k, v));
        n += 1;
    });
    n
}

/// A memtable holding `keys`, written as the engine writes: in batches.
fn filled(keys: &[[u8; KEY_BYTES]]) -> Arc<Memtable> {
    let mem = Arc::new(Memtable::new(1));
    for (b, batch) in keys.chunks(BATCH_ENTRIES).enumerate() {
        insert_batch(&mem, batch, (b * BATCH_ENTRIES) as u64 + 1);
    }
    mem
}

/// A memtable holding `keys`, each written as a single put.
fn filled_by_single_puts(keys: &[[u8; KEY_BYTES]]) -> Arc<Memtable> {
    let mem = Arc::new(Memtable::new(1));
    for (i, k) in keys.iter().enumerate() {
        insert_one(&mem, k, i as u64 + 1, &value(i));
    }
    mem
}

/// Memtables filled with `keys` in order across criterion's samples, so that inserts
/// meet every size from empty to full, as the engine's memtable does, whatever the
/// sample sizes. A full memtable is dropped, untimed, and a new one begun.
struct Filler<'k> {
    keys: &'k [[u8; KEY_BYTES]],
    mem: Memtable,
    next: usize,
}

impl<'k> Filler<'k> {
    fn new(keys: &'k [[u8; KEY_BYTES]]) -> Self {
        Filler {
            keys,
            mem: Memtable::new(1),
            next: 0,
        }
    }

    /// Times `iters` steps of `chunk` keys each; `step` gets the keys and the sequence
    /// of the first.
    fn run(
        &mut self,
        iters: u64,
        chunk: usize,
        mut step: impl FnMut(&Memtable, &[[u8; KEY_BYTES]], u64),
    ) -> Duration {
        let mut elapsed = Duration::ZERO;
        let mut left = iters as usize;
        while left > 0 {
            if self.next + chunk > self.keys.len() {
                self.mem = Memtable::new(1);
                self.next = 0;
            }
            let steps = left.min((self.keys.len() - self.next) / chunk);
            let start = ThreadCpu.start();
            for s in 0..steps {
                let at = self.next + s * chunk;
                step(&self.mem, &self.keys[at..at + chunk], at as u64 + 1);
            }
            elapsed += ThreadCpu.end(start);
            self.next += steps * chunk;
            left -= steps;
        }
        elapsed
    }
}

fn bench_insert(c: &mut Criterion<ThreadCpu>) {
    let all = keys(0..FILL_ENTRIES as u64);
    let mut g = c.benchmark_group("insert");
    g.throughput(Throughput::Elements(1));
    let mut filler = Filler::new(&all);
    g.bench_function("single", |b| {
        b.iter_custom(|iters| {
            filler.run(iters, 1, |mem, ks, seq| {
                insert_one(mem, &ks[0], seq, &value(seq as usize))
            })
        })
    });
    g.throughput(Throughput::Elements(BATCH_ENTRIES as u64));
    let mut filler = Filler::new(&all);
    g.bench_function("batch4096", |b| {
        b.iter_custom(|iters| filler.run(iters, BATCH_ENTRIES, insert_batch))
    });
    g.finish();
}

fn bench_get(c: &mut Criterion<ThreadCpu>) {
    let present = keys(0..FILL_ENTRIES as u64);
    let absent = keys(FILL_ENTRIES as u64..2 * FILL_ENTRIES as u64);
    let mut g = c.benchmark_group("get");
    g.throughput(Throughput::Elements(1));
    let by_batches = filled(&present);
    let by_single_puts = filled_by_single_puts(&present);
    let cases = [
        ("hit", &by_batches, &present, true),
        ("miss", &by_batches, &absent, false),
        ("hit_after_single_puts", &by_single_puts, &present, true),
    ];
    for (name, mem, probes, expect) in cases {
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                // A stride coprime with the count visits keys in an order unlike insertion.
                i = (i + 7919) % probes.len();
                assert_eq!(get(mem, black_box(&probes[i])), expect);
            })
        });
    }
    g.finish();
}

fn bench_scan(c: &mut Criterion<ThreadCpu>) {
    let present = keys(0..FILL_ENTRIES as u64);
    let mem = filled(&present);
    let mut g = c.benchmark_group("scan");
    g.sample_size(10);
    g.throughput(Throughput::Elements(FILL_ENTRIES as u64));
    g.bench_function("step", |b| {
        b.iter(|| assert_eq!(scan_step(&mem), FILL_ENTRIES))
    });
    g.bench_function("for_each", |b| {
        b.iter(|| assert_eq!(scan_for_each(&mem), FILL_ENTRIES))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = bench_insert, bench_get, bench_scan
}
criterion_main!(benches);
