//! The alternative the memtable was chosen against: sorted write batches merged lazily.
//! Each batch is sorted into a run; the newest runs are merged while the older of the
//! last two is at most twice the size of the newer (so there are O(log n) runs and each
//! entry is copied O(log n) times); a get binary-searches the runs newest first; a scan
//! merges the runs. Fixed-size records of the engine's shape (25-byte keys, 21-byte
//! values), which favours this design: a real one needs variable-size entries.
//! Single-threaded: the cost of letting readers in while runs are merged is left out.
//!
//! Same load and clock as benches/memtable.rs (whose numbers it is read beside):
//! cargo bench -p hashkv-lsm --bench memtable_runs

use std::cmp::Ordering;
use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nix::time::{clock_gettime, ClockId};

const FILL_ENTRIES: usize = 400_000;
const BATCH_ENTRIES: usize = 4096;
const KEY_BYTES: usize = 25;
const VALUE_BYTES: usize = 21;

type Key = [u8; KEY_BYTES];

#[derive(Clone, Copy)]
struct Record {
    key: Key,
    seq: u64,
    value: [u8; VALUE_BYTES],
}

/// Internal key order: key ascending, sequence descending.
fn order(a: &Record, b: &Record) -> Ordering {
    a.key.cmp(&b.key).then_with(|| b.seq.cmp(&a.seq))
}

#[derive(Default)]
struct Runs {
    /// Oldest first.
    runs: Vec<Vec<Record>>,
}

impl Runs {
    fn insert_batch(&mut self, mut batch: Vec<Record>) {
        batch.sort_unstable_by(order);
        self.runs.push(batch);
        while let [.., older, newer] = &self.runs[..] {
            if older.len() > 2 * newer.len() {
                break;
            }
            let newer = self.runs.pop().expect("two runs");
            let older = self.runs.pop().expect("two runs");
            self.runs.push(merge(&older, &newer));
        }
    }

    /// The newest version of `key`'s value, copied out as the memtable's get does.
    fn get(&self, key: &Key) -> Option<Vec<u8>> {
        self.runs.iter().rev().find_map(|run| {
            let i = run.partition_point(|r| r.key < *key);
            run.get(i)
                .filter(|r| r.key == *key)
                .map(|r| r.value.to_vec())
        })
    }

    /// Visits every record in order.
    fn scan(&self, mut f: impl FnMut(&Record)) {
        let mut at = vec![0usize; self.runs.len()];
        loop {
            let mut best: Option<usize> = None;
            for (r, run) in self.runs.iter().enumerate() {
                if let Some(x) = run.get(at[r]) {
                    if best.is_none_or(|b| order(x, &self.runs[b][at[b]]).is_lt()) {
                        best = Some(r);
                    }
                }
            }
            let Some(b) = best else { return };
            f(&self.runs[b][at[b]]);
            at[b] += 1;
        }
    }
}

fn merge(a: &[Record], b: &[Record]) -> Vec<Record> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if order(&a[i], &b[j]).is_le() {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// This thread's CPU time, as in benches/memtable.rs.
struct ThreadCpu;
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

/// The same keys as benches/memtable.rs: namespace 1, "user", 20 digits of FNV-1a.
fn key(index: u64) -> Key {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut x = index;
    for _ in 0..8 {
        h ^= x & 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        x >>= 8;
    }
    let mut k = [0u8; KEY_BYTES];
    k[0] = 1;
    k[1..5].copy_from_slice(b"user");
    k[5..].copy_from_slice(format!("{h:020}").as_bytes());
    k
}

fn record(key: Key, seq: u64) -> Record {
    let mut value = [0u8; VALUE_BYTES];
    value[..8].copy_from_slice(&seq.to_le_bytes());
    Record { key, seq, value }
}

fn filled(keys: &[Key]) -> Runs {
    let mut runs = Runs::default();
    for (b, chunk) in keys.chunks(BATCH_ENTRIES).enumerate() {
        let first = (b * BATCH_ENTRIES) as u64 + 1;
        runs.insert_batch(
            (chunk.iter().enumerate())
                .map(|(i, k)| record(*k, first + i as u64))
                .collect(),
        );
    }
    runs
}

fn bench_runs(c: &mut Criterion<ThreadCpu>) {
    let present: Vec<Key> = (0..FILL_ENTRIES as u64).map(key).collect();
    let absent: Vec<Key> = (FILL_ENTRIES as u64..2 * FILL_ENTRIES as u64)
        .map(key)
        .collect();
    let mut g = c.benchmark_group("runs");
    g.throughput(Throughput::Elements(FILL_ENTRIES as u64));
    g.sample_size(10);
    // Whole fills: a run's cost depends on where in the fill it lands (merges).
    g.bench_function("insert/batch4096/fill", |b| {
        b.iter(|| black_box(filled(&present)))
    });
    let runs = filled(&present);
    g.bench_function("scan", |b| {
        b.iter(|| {
            let mut n = 0;
            runs.scan(|r| {
                black_box(r);
                n += 1;
            });
            assert_eq!(n, FILL_ENTRIES);
        })
    });
    g.sample_size(100);
    g.throughput(Throughput::Elements(1));
    for (name, probes, expect) in [("get/hit", &present, true), ("get/miss", &absent, false)] {
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 7919) % probes.len();
                assert_eq!(runs.get(black_box(&probes[i])).is_some(), expect);
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = bench_runs
}
criterion_main!(benches);
