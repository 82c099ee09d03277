//! Benchmark of the LSM tree alone: N entries of 24-byte keys and 16-byte values
//! inserted in random key order, then random gets and a full scan. Prints ops/s and
//! the tree's write amplification (bytes it wrote to files / user bytes).
//!
//! cargo run --release -p hashkv-lsm --example lsmbench -- --entries 20000000 [--dir D]
//!   [--gets 1000000] [--threads 1] [--batch 1] [--sync] [--memtable-mib 64]
//!   [--cache-mib 64]
//!
//! With `--features rocksdb` (needs libclang-dev to build librocksdb-sys) the same run
//! then drives RocksDB through the same workload code, in a sibling directory on the
//! same filesystem (`<D>-rocksdb`, or --rocksdb-dir), and prints both side by side
//! with ours/RocksDB ratios. RocksDB runs with its default options (WAL on) and the
//! same `sync` write option as ours; statistics are switched on (tickers only) to read
//! its bytes written. `--no-rocksdb` skips it.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hashkv_lsm::{Db, Direction, Options, WriteBatch, WriteOptions};
use rand::{Rng, SeedableRng};

const KEY_BYTES: usize = 24;
const VALUE_BYTES: usize = 16;
/// The aims (issue 3): ours at least half of RocksDB's insert rate and at
/// least its random-get rate.
const AIM_INSERT_RATIO: f64 = 0.5;
const AIM_GET_RATIO: f64 = 1.0;
/// Our tree has no idle signal: it counts as settled once its compaction count has not
/// changed for SETTLE_QUIET, polled every SETTLE_POLL; the settled time is when the
/// final count was first seen (so it is at most one poll late, not SETTLE_QUIET late).
const SETTLE_QUIET: Duration = Duration::from_secs(2);
const SETTLE_POLL: Duration = Duration::from_millis(100);

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
    dir: Option<PathBuf>,
    rocksdb_dir: Option<PathBuf>,
    memtable_mib: usize,
    cache_mib: usize,
    batch: usize,
    sync: bool,
    no_rocksdb: bool,
}

fn usage_error(message: String) -> ! {
    eprintln!("lsmbench: {message}");
    eprintln!(
        "usage: lsmbench [--entries N] [--gets N] [--threads N] [--batch N] [--sync] \
         [--dir D] [--rocksdb-dir D] [--no-rocksdb] [--memtable-mib N] [--cache-mib N]"
    );
    std::process::exit(2)
}

fn number<T: std::str::FromStr>(flag: &str, text: String) -> T {
    text.parse()
        .unwrap_or_else(|_| usage_error(format!("{flag} {text:?}: not a whole number")))
}

fn parse_args() -> Args {
    let mut a = Args {
        entries: 2_000_000,
        gets: 1_000_000,
        threads: 1,
        dir: None,
        rocksdb_dir: None,
        memtable_mib: 64,
        cache_mib: 64,
        batch: 1,
        sync: false,
        no_rocksdb: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut text = || {
            it.next()
                .unwrap_or_else(|| usage_error(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--entries" => a.entries = number(&flag, text()),
            "--gets" => a.gets = number(&flag, text()),
            "--threads" => a.threads = number(&flag, text()),
            "--dir" => a.dir = Some(PathBuf::from(text())),
            "--rocksdb-dir" => a.rocksdb_dir = Some(PathBuf::from(text())),
            "--memtable-mib" => a.memtable_mib = number(&flag, text()),
            "--cache-mib" => a.cache_mib = number(&flag, text()),
            "--batch" => a.batch = number(&flag, text()),
            "--sync" => a.sync = true,
            "--no-rocksdb" => a.no_rocksdb = true,
            other => usage_error(format!("unknown flag {other}")),
        }
    }
    if a.entries == 0 {
        usage_error("--entries must be at least 1".into());
    }
    if a.threads == 0 {
        usage_error("--threads must be at least 1".into());
    }
    a
}

/// The process's storage I/O from /proc/self/io: bytes it caused to be read from and
/// written to storage, all threads included (so RocksDB's background threads count).
/// Written = write_bytes - cancelled_write_bytes: dirty pages of a file deleted before
/// writeback (a WAL removed after its memtable was flushed) never reach the disk.
#[derive(Clone, Copy, Debug, Default)]
struct ProcIo {
    read_bytes: u64,
    written_bytes: u64,
}

fn proc_io() -> Option<ProcIo> {
    let text = std::fs::read_to_string("/proc/self/io").ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))?
            .trim()
            .parse()
            .ok()
    };
    Some(ProcIo {
        read_bytes: field("read_bytes")?,
        written_bytes: field("write_bytes")?.saturating_sub(field("cancelled_write_bytes")?),
    })
}

/// What the workload needs of a tree; one implementation per tree, so both run exactly
/// the same operations in the same order.
trait Tree: Sync {
    fn name(&self) -> &'static str;
    fn put(&self, key: &[u8], value: &[u8]);
    fn put_batch(&self, entries: &[([u8; KEY_BYTES], [u8; VALUE_BYTES])]);
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    /// Visits every key in order; returns how many there were.
    fn scan_all(&self, each: &mut dyn FnMut(&[u8])) -> u64;
    /// Flushes the memtable and returns once background compaction is done, with the
    /// moment it was seen done if that was earlier than the return.
    fn flush_and_settle(&self) -> Option<Instant>;
    /// Bytes the tree says it wrote to files since it was opened, and their breakdown.
    fn bytes_written(&self) -> (u64, String);
    /// Where `bytes_written` comes from, for the output.
    fn bytes_written_source(&self) -> &'static str;
    /// A line about the tree's shape and caches, printed after each phase group.
    fn describe(&self) -> String;
}

struct Ours {
    db: Db,
    write_options: WriteOptions,
}

impl Tree for Ours {
    fn name(&self) -> &'static str {
        "hashkv-lsm"
    }

    fn put(&self, key: &[u8], value: &[u8]) {
        self.db.put(key, value, &self.write_options).expect("put");
    }

    fn put_batch(&self, entries: &[([u8; KEY_BYTES], [u8; VALUE_BYTES])]) {
        let mut b = WriteBatch::new();
        for (k, v) in entries {
            b.put(k, v);
        }
        self.db.write(&b, &self.write_options).expect("write");
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.db.get(key).expect("get")
    }

    fn scan_all(&self, each: &mut dyn FnMut(&[u8])) -> u64 {
        let mut n = 0;
        for e in self
            .db
            .range(Bound::Unbounded, Bound::Unbounded, Direction::Forward, None)
            .expect("range")
        {
            let (k, _) = e.expect("scan");
            each(&k);
            n += 1;
        }
        n
    }

    fn flush_and_settle(&self) -> Option<Instant> {
        self.db.flush().expect("flush");
        let mut last = self.db.stats().compactions;
        let mut last_change = Instant::now();
        while last_change.elapsed() < SETTLE_QUIET {
            std::thread::sleep(SETTLE_POLL);
            let c = self.db.stats().compactions;
            if c != last {
                last = c;
                last_change = Instant::now();
            }
        }
        Some(last_change)
    }

    fn bytes_written(&self) -> (u64, String) {
        let s = self.db.stats();
        (
            s.total_bytes_written(),
            format!(
                "wal {} MiB, flush {} MiB, compaction {:?} MiB, manifest {} KiB",
                s.wal_bytes_written >> 20,
                s.flush_bytes_written >> 20,
                s.compaction_bytes_written
                    .iter()
                    .map(|b| b >> 20)
                    .collect::<Vec<_>>(),
                s.manifest_bytes_written >> 10,
            ),
        )
    }

    fn bytes_written_source(&self) -> &'static str {
        "the tree's own counters (WAL + flush + compaction + manifest)"
    }

    fn describe(&self) -> String {
        let s = self.db.stats();
        format!(
            "tables per level {:?}, MiB per level {:?}, stalls {}, slowdowns {}, flushes {}, \
             compactions {} ({} trivial moves), block cache hits {} misses {}, bytes read {} MiB",
            s.table_count_per_level,
            s.table_bytes_per_level
                .iter()
                .map(|b| b >> 20)
                .collect::<Vec<_>>(),
            s.write_stalls,
            s.write_slowdowns,
            s.flushes,
            s.compactions,
            s.trivial_moves,
            s.block_cache_hits,
            s.block_cache_misses,
            s.bytes_read >> 20
        )
    }
}

#[cfg(feature = "rocksdb")]
mod rocks {
    //! RocksDB with its default options; only what the benchmark needs is changed:
    //! create_if_missing (to start empty) and statistics with tickers only (to count
    //! bytes written; histograms and timers stay off to keep the overhead small).

    use super::{Tree, KEY_BYTES, VALUE_BYTES};
    use rocksdb::statistics::{StatsLevel, Ticker};
    use rocksdb::{Options, WaitForCompactOptions, WriteBatch, WriteOptions, DB};
    use std::path::Path;

    pub struct Rocks {
        db: DB,
        options: Options,
        write_options: WriteOptions,
    }

    impl Rocks {
        pub fn open(dir: &Path, sync: bool) -> Result<Rocks, rocksdb::Error> {
            let mut options = Options::default();
            options.create_if_missing(true);
            options.enable_statistics();
            options.set_statistics_level(StatsLevel::ExceptHistogramOrTimers);
            let db = DB::open(&options, dir)?;
            let mut write_options = WriteOptions::default();
            write_options.set_sync(sync);
            write_options.disable_wal(false);
            Ok(Rocks {
                db,
                options,
                write_options,
            })
        }

        fn ticker(&self, t: Ticker) -> u64 {
            self.options.get_ticker_count(t)
        }

        fn int_property(&self, name: &str) -> u64 {
            self.db.property_int_value(name).ok().flatten().unwrap_or(0)
        }
    }

    impl Tree for Rocks {
        fn name(&self) -> &'static str {
            "RocksDB"
        }

        fn put(&self, key: &[u8], value: &[u8]) {
            self.db
                .put_opt(key, value, &self.write_options)
                .expect("rocksdb put");
        }

        fn put_batch(&self, entries: &[([u8; KEY_BYTES], [u8; VALUE_BYTES])]) {
            let mut b = WriteBatch::default();
            for (k, v) in entries {
                b.put(k, v);
            }
            self.db
                .write_opt(b, &self.write_options)
                .expect("rocksdb write");
        }

        fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
            self.db
                .get_pinned(key)
                .expect("rocksdb get")
                .map(|v| v.to_vec())
        }

        fn scan_all(&self, each: &mut dyn FnMut(&[u8])) -> u64 {
            let mut it = self.db.raw_iterator();
            it.seek_to_first();
            let mut n = 0;
            while let Some(k) = it.key() {
                each(k);
                n += 1;
                it.next();
            }
            it.status().expect("rocksdb scan");
            n
        }

        fn flush_and_settle(&self) -> Option<std::time::Instant> {
            self.db.flush().expect("rocksdb flush");
            self.db
                .wait_for_compact(&WaitForCompactOptions::default())
                .expect("rocksdb wait_for_compact");
            None
        }

        fn bytes_written(&self) -> (u64, String) {
            let wal = self.ticker(Ticker::WalFileBytes);
            let flush = self.ticker(Ticker::FlushWriteBytes);
            let compaction = self.ticker(Ticker::CompactWriteBytes);
            (
                wal + flush + compaction,
                format!(
                    "wal {} MiB, flush {} MiB, compaction {} MiB",
                    wal >> 20,
                    flush >> 20,
                    compaction >> 20
                ),
            )
        }

        fn bytes_written_source(&self) -> &'static str {
            "RocksDB statistics tickers rocksdb.wal.bytes + rocksdb.flush.write.bytes + \
             rocksdb.compact.write.bytes"
        }

        fn describe(&self) -> String {
            let level_files: Vec<u64> = (0..7)
                .map(|l| self.int_property(&format!("rocksdb.num-files-at-level{l}")))
                .collect();
            format!(
                "files per level {level_files:?}, live SST {} MiB, stall micros {}, \
                 block cache hits {} misses {}, bloom useful {}",
                self.int_property("rocksdb.live-sst-files-size") >> 20,
                self.ticker(Ticker::StallMicros),
                self.ticker(Ticker::BlockCacheHit),
                self.ticker(Ticker::BlockCacheMiss),
                self.ticker(Ticker::BloomFilterUseful),
            )
        }
    }
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn rate_text(n: u64, d: Duration) -> String {
    format!("{:.0} ops/s ({n} in {:.2} s)", rate(n, d), d.as_secs_f64())
}

/// What one tree measured.
struct Measured {
    name: &'static str,
    entries: u64,
    /// Until every put returned.
    insert: Duration,
    /// Until the memtable was flushed and compaction had settled.
    insert_settled: Duration,
    get_hits: (u64, Duration),
    get_misses: (u64, Duration),
    scan: (u64, Duration),
    /// From the tree's own counters, over the insert phase up to settling.
    own_write_bytes: u64,
    own_write_source: &'static str,
    /// /proc/self/io over the same interval.
    io: Option<ProcIo>,
}

impl Measured {
    fn user_bytes(&self) -> u64 {
        self.entries * (KEY_BYTES + VALUE_BYTES) as u64
    }

    fn own_write_amp(&self) -> f64 {
        self.own_write_bytes as f64 / self.user_bytes() as f64
    }

    fn io_write_amp(&self) -> Option<f64> {
        self.io
            .map(|io| io.written_bytes as f64 / self.user_bytes() as f64)
    }
}

/// The workload: the same for every tree.
fn run_workload(tree: &dyn Tree, args: &Args) -> Measured {
    let name = tree.name();
    let io_before = proc_io();
    let t = Instant::now();
    let per_thread = args.entries.div_ceil(args.threads);
    std::thread::scope(|s| {
        for th in 0..args.threads {
            s.spawn(move || {
                let lo = (th * per_thread).min(args.entries);
                let hi = ((th + 1) * per_thread).min(args.entries);
                let mut batch = Vec::with_capacity(args.batch);
                for i in lo..hi {
                    if args.batch <= 1 {
                        tree.put(&key(i), &value(i));
                    } else {
                        batch.push((key(i), value(i)));
                        if batch.len() >= args.batch {
                            tree.put_batch(&batch);
                            batch.clear();
                        }
                    }
                }
                if !batch.is_empty() {
                    tree.put_batch(&batch);
                }
            });
        }
    });
    let insert = t.elapsed();
    // Let background compaction settle so the write amplification counts the work the
    // load caused, not a snapshot in the middle of it.
    let settled_at = tree.flush_and_settle();
    let insert_settled = settled_at.map_or_else(|| t.elapsed(), |at| at - t);
    let io_after = proc_io();
    let (own_write_bytes, breakdown) = tree.bytes_written();
    let io = io_before.zip(io_after).map(|(b, a)| ProcIo {
        read_bytes: a.read_bytes.saturating_sub(b.read_bytes),
        written_bytes: a.written_bytes.saturating_sub(b.written_bytes),
    });
    let user_bytes = args.entries * (KEY_BYTES + VALUE_BYTES) as u64;
    println!(
        "{name}: insert (random order): {} ; incl. final flush and settled compaction {:.2} s",
        rate_text(args.entries, insert),
        insert_settled.as_secs_f64()
    );
    println!(
        "{name}: write amplification: {:.2} (total {} MiB / user {} MiB): {breakdown}",
        own_write_bytes as f64 / user_bytes as f64,
        own_write_bytes >> 20,
        user_bytes >> 20,
    );
    match io {
        Some(io) => println!(
            "{name}: /proc/self/io over the insert: written {} MiB (write amplification {:.2}), read {} MiB",
            io.written_bytes >> 20,
            io.written_bytes as f64 / user_bytes as f64,
            io.read_bytes >> 20
        ),
        None => println!("{name}: /proc/self/io is not readable here"),
    }
    println!("{name}: {}", tree.describe());

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let t = Instant::now();
    for _ in 0..args.gets {
        let i = rng.gen_range(0..args.entries);
        let v = tree.get(&key(i)).expect("a loaded key is present");
        assert_eq!(v, value(i));
    }
    let get_hits = (args.gets, t.elapsed());
    println!(
        "{name}: random get (hits): {}",
        rate_text(get_hits.0, get_hits.1)
    );
    let misses = args.gets / 10;
    let t = Instant::now();
    for _ in 0..misses {
        let mut k = key(rng.gen_range(0..args.entries));
        k[KEY_BYTES - 1] = b'x'; // Never a key of ours.
        assert!(tree.get(&k).is_none());
    }
    let get_misses = (misses, t.elapsed());
    println!(
        "{name}: random get (misses): {}",
        rate_text(get_misses.0, get_misses.1)
    );

    let t = Instant::now();
    let mut prev: Option<Vec<u8>> = None;
    let n = tree.scan_all(&mut |k| {
        if let Some(p) = &mut prev {
            assert!(p.as_slice() < k, "scan out of order");
            p.clear();
            p.extend_from_slice(k);
        } else {
            prev = Some(k.to_vec());
        }
    });
    assert_eq!(n, args.entries, "{name}: the scan must see every entry");
    let scan = (n, t.elapsed());
    println!("{name}: full scan: {}", rate_text(scan.0, scan.1));
    println!("{name}: {}", tree.describe());
    Measured {
        name,
        entries: args.entries,
        insert,
        insert_settled,
        get_hits,
        get_misses,
        scan,
        own_write_bytes,
        own_write_source: tree.bytes_written_source(),
        io,
    }
}

/// A directory to put a tree in: must be absent or empty, so that both trees start
/// from nothing.
fn check_empty_dir(dir: &Path, what: &str) {
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        usage_error(format!(
            "{what} {} is not empty; remove it or pick another",
            dir.display()
        ));
    }
}

fn run_ours(args: &Args, dir: &Path) -> Measured {
    let options = Options {
        memtable_bytes_max: args.memtable_mib << 20,
        block_cache_bytes: args.cache_mib << 20,
        ..Options::default()
    };
    println!("hashkv-lsm: dir {}, options: {options:?}", dir.display());
    let ours = Ours {
        db: Db::open(dir, options).unwrap_or_else(|e| {
            eprintln!("lsmbench: opening {}: {e}", dir.display());
            std::process::exit(1)
        }),
        write_options: WriteOptions { sync: args.sync },
    };
    let m = run_workload(&ours, args);
    ours.db.close().expect("close");
    m
}

#[cfg(feature = "rocksdb")]
fn run_rocksdb(args: &Args, dir: &Path) -> Option<Measured> {
    println!(
        "RocksDB: dir {}, default options (WAL on, write sync {}), statistics on (tickers only)",
        dir.display(),
        args.sync
    );
    let rocks = rocks::Rocks::open(dir, args.sync).unwrap_or_else(|e| {
        eprintln!("lsmbench: opening RocksDB in {}: {e}", dir.display());
        std::process::exit(1)
    });
    let m = run_workload(&rocks, args);
    drop(rocks);
    Some(m)
}

#[cfg(not(feature = "rocksdb"))]
fn run_rocksdb(_args: &Args, _dir: &Path) -> Option<Measured> {
    println!("RocksDB: skipped: built without --features rocksdb");
    None
}

/// The side-by-side table with ours/RocksDB ratios.
fn print_comparison(ours: &Measured, rocks: &Measured) {
    let rows: Vec<(&str, f64, f64, Option<f64>)> = vec![
        (
            "insert ops/s (puts returned)",
            rate(ours.entries, ours.insert),
            rate(rocks.entries, rocks.insert),
            Some(AIM_INSERT_RATIO),
        ),
        (
            "insert ops/s (incl. flush + settled)",
            rate(ours.entries, ours.insert_settled),
            rate(rocks.entries, rocks.insert_settled),
            None,
        ),
        (
            "random get (hits) ops/s",
            rate(ours.get_hits.0, ours.get_hits.1),
            rate(rocks.get_hits.0, rocks.get_hits.1),
            Some(AIM_GET_RATIO),
        ),
        (
            "random get (misses) ops/s",
            rate(ours.get_misses.0, ours.get_misses.1),
            rate(rocks.get_misses.0, rocks.get_misses.1),
            None,
        ),
        (
            "full scan keys/s",
            rate(ours.scan.0, ours.scan.1),
            rate(rocks.scan.0, rocks.scan.1),
            None,
        ),
    ];
    println!();
    println!(
        "{:<38} {:>14} {:>14} {:>13}  aim",
        "", ours.name, rocks.name, "ours/RocksDB"
    );
    for (what, a, b, aim) in rows {
        let ratio = a / b;
        let aim_text = aim.map_or(String::new(), |aim| {
            format!(">= {aim}: {}", if ratio >= aim { "met" } else { "NOT met" })
        });
        println!("{what:<38} {a:>14.0} {b:>14.0} {ratio:>13.2}  {aim_text}");
    }
    println!(
        "{:<38} {:>14.2} {:>14.2} {:>13.2}",
        "write amp, own counters (a)",
        ours.own_write_amp(),
        rocks.own_write_amp(),
        ours.own_write_amp() / rocks.own_write_amp()
    );
    match (ours.io_write_amp(), rocks.io_write_amp()) {
        (Some(a), Some(b)) => println!(
            "{:<38} {a:>14.2} {b:>14.2} {:>13.2}",
            "write amp, /proc/self/io (b)",
            a / b
        ),
        _ => println!("write amp, /proc/self/io (b): not readable here"),
    }
    println!(
        "write amplification = bytes written over the insert, up to the final flush and \
         settled compaction / user bytes ({} B per entry)",
        KEY_BYTES + VALUE_BYTES
    );
    println!("  (a) {}: {}", ours.name, ours.own_write_source);
    println!("      {}: {}", rocks.name, rocks.own_write_source);
    println!(
        "  (b) both: /proc/self/io write_bytes - cancelled_write_bytes of this process \
         (storage writes it caused, all threads)"
    );
}

fn main() {
    let args = parse_args();
    // Both trees in one temporary parent on the same filesystem, or --dir and its
    // sibling.
    let tmp;
    let (ours_dir, rocks_dir) = match &args.dir {
        Some(d) => {
            let sibling = args.rocksdb_dir.clone().unwrap_or_else(|| {
                let mut name = d.file_name().unwrap_or(d.as_os_str()).to_os_string();
                name.push("-rocksdb");
                d.with_file_name(name)
            });
            (d.clone(), sibling)
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("lsmbench")
                .tempdir_in("/work")
                .expect("tempdir");
            (
                tmp.path().join("hashkv-lsm"),
                args.rocksdb_dir
                    .clone()
                    .unwrap_or_else(|| tmp.path().join("rocksdb")),
            )
        }
    };
    let with_rocksdb = cfg!(feature = "rocksdb") && !args.no_rocksdb;
    if with_rocksdb {
        check_empty_dir(&rocks_dir, "RocksDB directory");
    }
    println!(
        "lsmbench: {} entries, key {KEY_BYTES} B, value {VALUE_BYTES} B, {} thread(s), batch {}, write sync {}",
        args.entries, args.threads, args.batch, args.sync
    );
    let ours = run_ours(&args, &ours_dir);
    let rocks = if args.no_rocksdb {
        println!("RocksDB: skipped: --no-rocksdb");
        None
    } else {
        run_rocksdb(&args, &rocks_dir)
    };
    if let Some(rocks) = &rocks {
        print_comparison(&ours, rocks);
        if args.dir.is_some() && args.rocksdb_dir.is_none() {
            println!(
                "RocksDB's directory {} is left in place",
                rocks_dir.display()
            );
        }
    }
}
