//! The peer stores of `hashkv compare`: RocksDB and RocksDB with BlobDB, each driven
//! through the same `BenchTarget` interface as the engine. Built with
//! `--features rocksdb`; without it every peer is reported as skipped.

use super::super::bench::phase::Sample;
use super::super::bench::report::PhaseReport;
use super::super::bench::{BenchArgs, Plan};
use super::super::store::StoreResult;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    RocksDb,
    BlobDb,
}

impl Peer {
    pub const ALL: [Peer; 2] = [Peer::RocksDb, Peer::BlobDb];

    pub fn name(self) -> &'static str {
        match self {
            Peer::RocksDb => "rocksdb",
            Peer::BlobDb => "blobdb",
        }
    }

    pub fn from_name(name: &str) -> Option<Peer> {
        Peer::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Its configuration, for the output.
    pub fn describe(self, value_bytes: usize, memory: Option<PeerMemory>) -> String {
        let mut text = match self {
            Peer::RocksDb => "RocksDB, default options (leveled compaction, snappy, \
                              statistics on with tickers only)"
                .to_string(),
            Peer::BlobDb => format!(
                "RocksDB with BlobDB: default options plus enable_blob_files, \
                 min_blob_size {value_bytes} (every value of this run goes to blob files), \
                 enable_blob_garbage_collection (statistics on with tickers only)"
            ),
        };
        if let Some(m) = memory {
            text.push_str(&m.describe(self));
        }
        text
    }
}

/// A peer's memory under `--memory-mib`: the engine's budget, split the same way, so
/// that the comparison stays like for like. The engine's write share (write cache)
/// and memtable share both buffer writes, so RocksDB's memtables get both; its block
/// cache gets the block-cache share, and the value-cache share goes to BlobDB's blob
/// cache (RocksDB without blob files has no value cache: the block cache gets it).
/// Index and filter blocks live in the block cache (our index pins them there too),
/// and reads, flushes and compactions use O_DIRECT, so the page cache holds only the
/// WAL being written, as for our index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerMemory {
    pub block_cache_bytes: u64,
    pub blob_cache_bytes: u64,
    /// All memtables together (RocksDB's write buffer manager enforces it).
    pub memtables_bytes: u64,
}

/// Memtables RocksDB may hold at once within `memtables_bytes`: the active one and
/// one being flushed (its default `max_write_buffer_number`).
#[cfg(feature = "rocksdb")]
const ROCKSDB_MEMTABLES_HELD: u64 = 2;

impl PeerMemory {
    pub fn of(peer: Peer, budget_bytes: u64) -> PeerMemory {
        let share = |s: f64| (budget_bytes as f64 * s) as u64;
        let value_cache = share(hashkv::VALUE_CACHE_SHARE);
        let (block, blob) = match peer {
            Peer::RocksDb => (share(hashkv::BLOCK_CACHE_SHARE) + value_cache, 0),
            Peer::BlobDb => (share(hashkv::BLOCK_CACHE_SHARE), value_cache),
        };
        PeerMemory {
            block_cache_bytes: block,
            blob_cache_bytes: blob,
            memtables_bytes: share(hashkv::MEMTABLES_SHARE) + share(hashkv::WRITE_SHARE),
        }
    }

    fn describe(self, peer: Peer) -> String {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        let blob = match peer {
            Peer::RocksDb => String::new(),
            Peer::BlobDb => format!(", blob cache {:.1} MiB", mib(self.blob_cache_bytes)),
        };
        format!(
            "; memory budget: block cache {:.1} MiB (index and filter blocks in it){blob}, \
             memtables {:.1} MiB in all (write buffer manager), use_direct_reads and \
             use_direct_io_for_flush_and_compaction",
            mib(self.block_cache_bytes),
            mib(self.memtables_bytes),
        )
    }
}

/// Why no peer runs in this build, or None when they do.
pub fn unavailable_reason() -> Option<&'static str> {
    if cfg!(feature = "rocksdb") {
        None
    } else {
        Some("built without --features rocksdb")
    }
}

/// Runs the experiment's phases on `peer` in a new temporary directory under `base`,
/// removed afterwards.
#[cfg(feature = "rocksdb")]
pub fn run_peer(
    peer: Peer,
    base: &Path,
    args: &BenchArgs,
    plan: &Plan,
    rows: &mut Vec<PhaseReport>,
    samples: &mut Vec<Sample>,
) -> StoreResult<()> {
    use super::super::bench::run_target;
    use super::super::store::io_error;

    let dir = tempfile::Builder::new()
        .prefix(&format!("hashkv-compare-{}-", peer.name()))
        .tempdir_in(base)
        .map_err(io_error(base, "creating the peer's directory"))?;
    let memory = args.memory_mib.map(|mib| PeerMemory::of(peer, mib << 20));
    let target = rocks::RocksTarget::open(peer, dir.path(), args.value_size, memory)?;
    println!("\npeer {}: {}", peer.name(), dir.path().display());
    let result = run_target(&target, args, plan, rows, samples);
    // Closing waits for RocksDB's background work; the directory goes after it.
    drop(target);
    result
}

#[cfg(not(feature = "rocksdb"))]
pub fn run_peer(
    peer: Peer,
    _base: &Path,
    _args: &BenchArgs,
    _plan: &Plan,
    _rows: &mut Vec<PhaseReport>,
    _samples: &mut Vec<Sample>,
) -> StoreResult<()> {
    // PeerPlan lists every peer as skipped in this build, so none reaches here.
    unreachable!(
        "peer {} planned in a build without --features rocksdb",
        peer.name()
    )
}

#[cfg(feature = "rocksdb")]
mod rocks {
    use super::super::super::bench::target::{BenchTarget, StoreCounters};
    use super::super::super::store::{dir_disk_bytes, StoreCmdError, StoreResult};
    use super::{Peer, PeerMemory, ROCKSDB_MEMTABLES_HELD};
    use rocksdb::statistics::{StatsLevel, Ticker};
    use rocksdb::{BlockBasedOptions, Cache, Options, WriteBufferManager, WriteOptions, DB};
    use std::path::{Path, PathBuf};

    pub struct RocksTarget {
        peer: Peer,
        db: DB,
        /// Holds the statistics object the open database shares.
        options: Options,
        write_options: WriteOptions,
        dir: PathBuf,
    }

    impl RocksTarget {
        /// RocksDB's defaults, plus create_if_missing and tickers-only statistics (to
        /// read its bytes written); BlobDB adds blob files for every value of the run
        /// and blob GC; a memory budget bounds caches and memtables (`PeerMemory`).
        pub fn open(
            peer: Peer,
            dir: &Path,
            value_bytes: usize,
            memory: Option<PeerMemory>,
        ) -> StoreResult<RocksTarget> {
            let mut options = Options::default();
            if let Some(m) = memory {
                apply_memory(&mut options, peer, m);
            }
            options.create_if_missing(true);
            options.enable_statistics();
            options.set_statistics_level(StatsLevel::ExceptHistogramOrTimers);
            if peer == Peer::BlobDb {
                options.set_enable_blob_files(true);
                options.set_min_blob_size(value_bytes as u64);
                options.set_enable_blob_gc(true);
            }
            let db = DB::open(&options, dir).map_err(|e| StoreCmdError::Peer {
                peer: peer.name().into(),
                what: format!("opening {}: {e}", dir.display()),
            })?;
            let mut write_options = WriteOptions::default();
            write_options.set_sync(false);
            write_options.disable_wal(false);
            Ok(RocksTarget {
                peer,
                db,
                options,
                write_options,
                dir: dir.to_path_buf(),
            })
        }

        fn fail(&self, what: &str, e: rocksdb::Error) -> StoreCmdError {
            StoreCmdError::Peer {
                peer: self.peer.name().into(),
                what: format!("{what}: {e}"),
            }
        }

        fn ticker(&self, t: Ticker) -> u64 {
            self.options.get_ticker_count(t)
        }
    }

    /// The budget's caches and memtables, and direct I/O for everything but the WAL.
    /// The options keep their own references to the caches and the manager.
    fn apply_memory(options: &mut Options, peer: Peer, m: PeerMemory) {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(m.block_cache_bytes as usize));
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        options.set_block_based_table_factory(&table);
        if peer == Peer::BlobDb {
            options.set_blob_cache(&Cache::new_lru_cache(m.blob_cache_bytes as usize));
        }
        options.set_write_buffer_size((m.memtables_bytes / ROCKSDB_MEMTABLES_HELD) as usize);
        options.set_max_write_buffer_number(ROCKSDB_MEMTABLES_HELD as i32);
        options.set_write_buffer_manager(&WriteBufferManager::new_write_buffer_manager(
            m.memtables_bytes as usize,
            false,
        ));
        options.set_use_direct_reads(true);
        options.set_use_direct_io_for_flush_and_compaction(true);
    }

    impl BenchTarget for RocksTarget {
        fn name(&self) -> &str {
            self.peer.name()
        }

        fn put(&self, key: &[u8], value: &[u8]) -> StoreResult<()> {
            self.db
                .put_opt(key, value, &self.write_options)
                .map_err(|e| self.fail("put", e))
        }

        fn get(&self, key: &[u8]) -> StoreResult<Option<usize>> {
            Ok(self
                .db
                .get_pinned(key)
                .map_err(|e| self.fail("get", e))?
                .map(|v| v.len()))
        }

        fn scan(&self, from: &[u8], limit: usize) -> StoreResult<u64> {
            let mut it = self.db.raw_iterator();
            it.seek(from);
            let mut read = 0u64;
            for _ in 0..limit {
                let Some((k, v)) = it.item() else { break };
                read += (k.len() + v.len()) as u64;
                it.next();
            }
            it.status().map_err(|e| self.fail("scan", e))?;
            Ok(read)
        }

        fn flush(&self) -> StoreResult<()> {
            self.db
                .flush_wal(true)
                .map_err(|e| self.fail("flushing and syncing the WAL", e))
        }

        /// device = blob-file bytes (BlobDB's value store), lsm = everything else
        /// RocksDB wrote: WAL + flush + compaction output, whose counts include the
        /// blob files written during flushes and compactions.
        fn counters(&self) -> StoreCounters {
            let blob_written = self.ticker(Ticker::BlobDbBlobFileBytesWritten);
            let all_written = self.ticker(Ticker::WalFileBytes)
                + self.ticker(Ticker::FlushWriteBytes)
                + self.ticker(Ticker::CompactWriteBytes);
            StoreCounters {
                device_write_bytes: blob_written,
                device_read_bytes: self.ticker(Ticker::BlobDbBlobFileBytesRead),
                lsm_write_bytes: all_written.saturating_sub(blob_written),
                gc_write_bytes: self.ticker(Ticker::BlobDbGcBytesRelocated),
                gc_read_bytes: 0,
                gc_runs: 0,
                kernel: None,
                ..StoreCounters::default()
            }
        }

        fn space_bytes(&self) -> u64 {
            dir_disk_bytes(&self.dir)
        }
    }
}
