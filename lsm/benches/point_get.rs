//! Point gets from cached blocks, as the engine's index serves them under a memory
//! budget: `Db::get` of keys present in the tree, every block they need already in
//! the block cache, but the blocks together far larger than the CPU's caches
//! (`ENTRIES` entries, about 50 MB of data blocks, against a few MB of L3). So what it
//! measures is the lookup's chain of memory loads (the filters, the table's index,
//! the block cache's table, the block's restart points and entries), which is what the
//! engine's gets of 4 KiB values spend most of their user time on. Criterion reports
//! the time of one iteration, `KEYS_PER_ITER` gets (so ms per iteration = us per get),
//! and gets per second.
//!
//! Two shapes of the same entries:
//! - `compacted`: one compacted run, where a get probes one table and its filter
//!   passes;
//! - `leveled`: the shape writes leave with small memtables and a small L1 (as under
//!   the engine's 64 MiB budget): a get first probes L0 and upper-level tables whose
//!   filters rule the key out.
//!
//! Keys and values are the engine's: its 1-byte user namespace (0x01) + a 24-byte YCSB
//! key, and a 25-byte value pointer. Each tree is loaded (and compacted, or left to its
//! background compactions until they stop), then read once whole so that every block
//! is cached.
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
const KEYS_PER_ITER: usize = 1000;
/// The leveled shape's memtable and L1 sizes: small, so that the 50 MB of entries
/// spread over L0, L1 and L2 as the engine's index does under a 64 MiB budget.
const LEVELED_MEMTABLE_BYTES: usize = 4 << 20;
const LEVELED_L1_BYTES: u64 = 8 << 20;
/// The leveled tree is read once its compactions have stopped for this long.
const COMPACTIONS_QUIET: Duration = Duration::from_secs(2);

fn key(i: u64) -> Vec<u8> {
    // A multiplicative hash spreads consecutive indexes over the key space.
    let mut k = vec![0x01];
    k.extend_from_slice(
        format!(
            "user{:020}",
            i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 10u64.pow(19)
        )
        .as_bytes(),
    );
    k
}

fn load(dir: &std::path::Path, leveled: bool) -> Db {
    let mut options = Options {
        block_cache_bytes: 256 << 20,
        ..Options::default()
    };
    if leveled {
        options.memtable_bytes_max = LEVELED_MEMTABLE_BYTES;
        options.level1_bytes_max = LEVELED_L1_BYTES;
        options.table_target_bytes = LEVELED_L1_BYTES / 4;
    }
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
    if leveled {
        let mut seen = db.stats().compactions;
        loop {
            std::thread::sleep(COMPACTIONS_QUIET);
            let now = db.stats().compactions;
            if now == seen {
                break;
            }
            seen = now;
        }
    } else {
        db.compact_range(None, None).expect("compact");
    }
    for i in 0..ENTRIES {
        db.get(&key(i)).expect("get").expect("present");
    }
    eprintln!(
        "{}: tables per level {:?}",
        if leveled { "leveled" } else { "compacted" },
        db.stats().table_count_per_level
    );
    db
}

fn point_get(c: &mut Criterion) {
    let mut group = c.benchmark_group("point_get");
    group.throughput(Throughput::Elements(KEYS_PER_ITER as u64));
    group.measurement_time(Duration::from_secs(10));
    for (name, leveled) in [("compacted", false), ("leveled", true)] {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = load(dir.path(), leveled);
        let mut state = 1u64;
        group.bench_function(name, |b| {
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
    }
    group.finish();
}

criterion_group!(benches, point_get);
criterion_main!(benches);
