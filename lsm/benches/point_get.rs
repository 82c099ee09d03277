//! Point gets from cached blocks, as the engine's index serves them under a memory
//! budget: ns per `Db::get` of a key present in the tree, every block it needs
//! already in the block cache, but the blocks together far larger than the CPU's
//! caches (`ENTRIES` entries, about 50 MB of data blocks, against a few MB of L3).
//! So what it measures is the lookup's chain of memory loads (the filters, the
//! table's index, the block cache's table, the block's restart points and entries),
//! which is what the engine's gets of 4 KiB values spend most of their user time on.
//!
//! Keys and values are the engine's: a 1-byte namespace + a 24-byte YCSB key, and a
//! 25-byte value pointer. The tree is loaded, flushed and compacted, then read once
//! whole so that every block is cached.
//!
//! TMPDIR must be on a file system that takes O_DIRECT (not tmpfs).
//! cargo bench -p hashkv-lsm --bench point_get

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hashkv_lsm::{Db, Options, WriteBatch, WriteOptions};

/// Entries in the tree: 1M keys of 25 bytes with 25-byte values.
const ENTRIES: u64 = 1 << 20;
/// Entries per write batch while loading.
const LOAD_BATCH: u64 = 4096;
/// Keys each timed iteration gets, drawn ahead of time.
const KEYS_PER_ITER: usize = 1024;

fn key(i: u64) -> Vec<u8> {
    // A multiplicative hash spreads consecutive indexes over the key space.
    format!("uuser{:020}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 10u64.pow(19)).into_bytes()
}

fn load(dir: &std::path::Path) -> Db {
    let options = Options {
        block_cache_bytes: 256 << 20,
        ..Options::default()
    };
    let db = Db::open(dir, options).expect("open");
    let wo = WriteOptions { sync: false };
    for start in (0..ENTRIES).step_by(LOAD_BATCH as usize) {
        let mut batch = WriteBatch::new();
        for i in start..(start + LOAD_BATCH).min(ENTRIES) {
            batch.put(&key(i), &[i as u8; 25]);
        }
        db.write(&batch, &wo).expect("write");
    }
    db.flush().expect("flush");
    db.compact_range(None, None).expect("compact");
    for i in 0..ENTRIES {
        db.get(&key(i)).expect("get").expect("present");
    }
    db
}

fn point_get(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = load(dir.path());
    let mut state = 1u64;
    let mut group = c.benchmark_group("point_get");
    group.throughput(Throughput::Elements(KEYS_PER_ITER as u64));
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("cached_blocks", |b| {
        b.iter_batched(
            || {
                (0..KEYS_PER_ITER)
                    .map(|_| {
                        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                        key((state >> 33) % ENTRIES)
                    })
                    .collect::<Vec<_>>()
            },
            |keys| {
                for k in &keys {
                    black_box(db.get(k).expect("get"));
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, point_get);
criterion_main!(benches);
