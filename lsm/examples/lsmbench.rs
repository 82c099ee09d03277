//! Benchmark of the LSM tree alone: N entries of 24-byte keys and 16-byte values
//! inserted in random key order, then random gets and a full scan. Prints ops/s and
//! the tree's write amplification (bytes it wrote to files / user bytes).
//!
//! cargo run --release -p hashkv-lsm --example lsmbench -- --entries 20000000 [--dir D]
//!   [--gets 1000000] [--threads 1] [--memtable-mib 64] [--cache-mib 64]

use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashkv_lsm::{Db, Direction, Options, WriteBatch, WriteOptions};
use rand::{Rng, SeedableRng};

const KEY_BYTES: usize = 24;
const VALUE_BYTES: usize = 16;

/// A bijection on u64 (xorshift-multiply rounds), so consecutive indices give keys in
/// random order without duplicates.
fn scramble(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

fn key(i: u64) -> [u8; KEY_BYTES] {
    let mut k = [0u8; KEY_BYTES];
    let s = format!("user{:020}", scramble(i));
    k.copy_from_slice(s.as_bytes());
    k
}

fn value(i: u64) -> [u8; VALUE_BYTES] {
    let mut v = [0u8; VALUE_BYTES];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v[8..].copy_from_slice(&scramble(i ^ 0x5555).to_le_bytes());
    v
}

struct Args {
    entries: u64,
    gets: u64,
    threads: u64,
    dir: Option<String>,
    memtable_mib: usize,
    cache_mib: usize,
    batch: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        entries: 2_000_000,
        gets: 1_000_000,
        threads: 1,
        dir: None,
        memtable_mib: 64,
        cache_mib: 64,
        batch: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--entries" => a.entries = val().parse().expect("--entries N"),
            "--gets" => a.gets = val().parse().expect("--gets N"),
            "--threads" => a.threads = val().parse().expect("--threads N"),
            "--dir" => a.dir = Some(val()),
            "--memtable-mib" => a.memtable_mib = val().parse().expect("--memtable-mib N"),
            "--cache-mib" => a.cache_mib = val().parse().expect("--cache-mib N"),
            "--batch" => a.batch = val().parse().expect("--batch N"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn rate(n: u64, d: Duration) -> String {
    format!(
        "{:.0} ops/s ({n} in {:.2} s)",
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64()
    )
}

fn main() {
    let args = parse_args();
    let tmp;
    let dir = match &args.dir {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("lsmbench")
                .tempdir_in("/work")
                .expect("tempdir");
            tmp.path().to_path_buf()
        }
    };
    let options = Options {
        memtable_bytes_max: args.memtable_mib << 20,
        block_cache_bytes: args.cache_mib << 20,
        ..Options::default()
    };
    println!(
        "lsmbench: {} entries, key {KEY_BYTES} B, value {VALUE_BYTES} B, dir {}",
        args.entries,
        dir.display()
    );
    println!("options: {options:?}");
    let db = Arc::new(Db::open(&dir, options).expect("open"));

    let t = Instant::now();
    let per_thread = args.entries.div_ceil(args.threads);
    std::thread::scope(|s| {
        for th in 0..args.threads {
            let db = db.clone();
            let batch_n = args.batch;
            s.spawn(move || {
                let wo = WriteOptions::default();
                let lo = th * per_thread;
                let hi = ((th + 1) * per_thread).min(args.entries);
                let mut b = WriteBatch::new();
                for i in lo..hi {
                    if batch_n <= 1 {
                        db.put(&key(i), &value(i), &wo).expect("put");
                    } else {
                        b.put(&key(i), &value(i));
                        if b.len() >= batch_n {
                            db.write(&b, &wo).expect("write");
                            b.clear();
                        }
                    }
                }
                if !b.is_empty() {
                    db.write(&b, &wo).expect("write");
                }
            });
        }
    });
    let load = t.elapsed();
    db.flush().expect("flush");
    let load_flushed = t.elapsed();
    // Let background compaction settle so the write amplification counts the work the
    // load caused, not a snapshot in the middle of it.
    let mut last = db.stats().compactions;
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let c = db.stats().compactions;
        if c == last {
            break;
        }
        last = c;
    }
    let settled = t.elapsed();
    let s = db.stats();
    println!(
        "insert (random order): {} ; incl. final flush {:.2} s, compactions settled at {:.2} s",
        rate(args.entries, load),
        load_flushed.as_secs_f64(),
        settled.as_secs_f64()
    );
    let user_bytes = args.entries * (KEY_BYTES + VALUE_BYTES) as u64;
    let total = s.total_bytes_written();
    println!(
        "write amplification: {:.2} (total {} MiB / user {} MiB): wal {} MiB, flush {} MiB, compaction {:?} MiB, manifest {} KiB",
        total as f64 / user_bytes as f64,
        total >> 20,
        user_bytes >> 20,
        s.wal_bytes_written >> 20,
        s.flush_bytes_written >> 20,
        s.compaction_bytes_written.iter().map(|b| b >> 20).collect::<Vec<_>>(),
        s.manifest_bytes_written >> 10,
    );
    println!(
        "tables per level {:?}, MiB per level {:?}, stalls {}, slowdowns {}, flushes {}, compactions {} ({} trivial moves)",
        s.table_count_per_level,
        s.table_bytes_per_level.iter().map(|b| b >> 20).collect::<Vec<_>>(),
        s.write_stalls,
        s.write_slowdowns,
        s.flushes,
        s.compactions,
        s.trivial_moves
    );

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let t = Instant::now();
    for _ in 0..args.gets {
        let i = rng.gen_range(0..args.entries);
        let v = db.get(&key(i)).expect("get").expect("present");
        assert_eq!(v, value(i));
    }
    let gets = t.elapsed();
    println!("random get (hits): {}", rate(args.gets, gets));
    let t = Instant::now();
    for _ in 0..args.gets / 10 {
        let mut k = key(rng.gen_range(0..args.entries));
        k[KEY_BYTES - 1] = b'x'; // Never a key of ours.
        assert!(db.get(&k).expect("get").is_none());
    }
    println!("random get (misses): {}", rate(args.gets / 10, t.elapsed()));

    let t = Instant::now();
    let mut n = 0u64;
    let mut prev: Option<Vec<u8>> = None;
    for e in db
        .range(Bound::Unbounded, Bound::Unbounded, Direction::Forward, None)
        .expect("range")
    {
        let (k, _) = e.expect("scan");
        if let Some(p) = &prev {
            assert!(p < &k);
        }
        prev = Some(k);
        n += 1;
    }
    assert_eq!(n, args.entries);
    println!("full scan: {}", rate(n, t.elapsed()));
    let s2 = db.stats();
    println!(
        "block cache hits {} misses {}, bytes read {} MiB",
        s2.block_cache_hits,
        s2.block_cache_misses,
        s2.bytes_read >> 20
    );
    Arc::try_unwrap(db)
        .ok()
        .expect("sole owner")
        .close()
        .expect("close");
}
