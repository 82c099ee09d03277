//! The sweep's workload: one fixed sequence of engine calls that reaches every I/O site
//! of its mode (format; writes with sync points; GCs of groups or of the value log,
//! with hot/cold demotions, promotions and a cold-log GC in the hashkv mode; deletes
//! and batches; reads; a clean close and reopen; more of the same), on a simulated
//! device behind a [`SiteDevice`] and the index on a [`FaultFs`]. It records what it
//! wrote and what was acknowledged as durable, so a run cut short by a fault can be
//! checked against it.

use crate::common::history::{Batch, History};
use crate::common::{key, value, KIB, MIB};
use crate::sites::{SiteDevice, Stage};
use hashkv::{Db, Error, Layout, Mode, Options, WriteBatch};
use hashkv_blockdev::sim::{SimConfig, SimDevice};
use hashkv_lsm::fault::FaultFs;
use std::path::Path;
use std::sync::Arc;

pub const DIR: &str = "/hashkv-sweep/metadata";
/// Seeds the device's and the file system's random decisions.
pub const SEED: u64 = 14;
pub const DEVICE_BYTES: u64 = 8 * MIB;
/// Keys written once by the load: most of them stay unchanged and go cold.
const LOAD_KEYS: u32 = 300;
/// The last `HOT_KEYS` of them are then updated every round.
const HOT_KEYS: u32 = 40;
/// A put every this many is a sync put, during the load.
const LOAD_SYNC_EVERY: u32 = 50;
const VALUE_BYTES: usize = 1000;
/// Below the separation threshold (64 bytes): kept inline in the index.
const INLINE_VALUE_BYTES: usize = 10;
/// Every this many keys has an inline value, so tombstones for inline values reach the
/// groups too.
const INLINE_EVERY: u32 = 4;
/// Loaded keys updated after the churn: in the hashkv mode they are cold by then, so
/// the update promotes them and leaves garbage in the cold log.
const PROMOTED_KEYS: std::ops::Range<u32> = 0..24;

#[derive(Clone, Copy, Debug)]
pub enum Step {
    Format,
    Load,
    /// Rounds of updates of the hot keys, each followed by a GC.
    Churn {
        rounds: u32,
    },
    Promote,
    ColdGc,
    /// Deletes, a batch and a sync batch.
    Mixed,
    Flush,
    Reads,
    Close,
    Open,
}

pub const WORKLOAD: &[Step] = &[
    Step::Format,
    Step::Load,
    Step::Churn { rounds: 16 },
    Step::Promote,
    Step::ColdGc,
    Step::Mixed,
    Step::Reads,
    Step::Close,
    Step::Open,
    Step::Reads,
    Step::Churn { rounds: 3 },
    Step::Mixed,
    Step::Flush,
    Step::Close,
];

/// The options of the sweep's store, its index on `fs`.
pub fn options(mode: Mode, fs: Arc<dyn hashkv_lsm::fs::Fs>) -> Options {
    let lsm = hashkv_lsm::Options {
        // Small enough that the index flushes, compacts and rewrites its manifest
        // during the workload; no cache, so reads go to the table files.
        memtable_bytes_max: 32 << 10,
        l0_compaction_trigger: 2,
        table_target_bytes: 64 << 10,
        level1_bytes_max: 256 << 10,
        manifest_bytes_max: 4 << 10,
        block_cache_bytes: 0,
        table_files_open_max: 2,
        fs,
        ..hashkv_lsm::Options::default()
    };
    crate::common::small_options()
        .with_mode(mode)
        .with_write_cache_bytes(16 * KIB)
        .with_hotness(mode == Mode::HashKv)
        // GC runs when the workload asks, not from the background thread.
        .with_gc_low_water_segments(1)
        .with_lsm(lsm)
}

/// One run of the workload on fresh storage.
pub struct Run {
    pub mode: Mode,
    pub options: Options,
    pub fs: Arc<FaultFs>,
    pub dev: Arc<SimDevice>,
    pub sites: Arc<SiteDevice>,
    pub db: Option<Db>,
    pub history: History,
    /// A format returned a store (its later failures are a store's).
    pub formatted: bool,
    /// Faults of the index's file system fired by the time format returned a store.
    pub index_faults_in_format: usize,
    /// Peak bytes held by the index's file system, sampled after each step.
    pub peak_fs_bytes: u64,
    /// Hot/cold moves seen before the final close (hashkv mode).
    pub demotions: u64,
    pub cold_gcs: u64,
    version: u32,
}

/// A failed call: what the workload was doing, and the error.
pub type Failure = (Stage, Error);

impl Run {
    pub fn new(mode: Mode) -> Run {
        let fs = Arc::new(FaultFs::new(SEED));
        let dev = Arc::new(SimDevice::new(SimConfig::new(DEVICE_BYTES, SEED)).unwrap());
        let options = options(mode, fs.clone());
        let layout = Layout::compute(DEVICE_BYTES, 4096, &options).unwrap();
        let sites = SiteDevice::new(dev.clone(), fs.clone(), layout, mode == Mode::VLog);
        Run {
            mode,
            options,
            fs,
            dev,
            sites,
            db: None,
            history: History::default(),
            formatted: false,
            index_faults_in_format: 0,
            peak_fs_bytes: 0,
            demotions: 0,
            cold_gcs: 0,
            version: 0,
        }
    }

    pub fn run(&mut self) -> Result<(), Failure> {
        WORKLOAD.iter().try_for_each(|&s| {
            let r = self.step(s);
            self.peak_fs_bytes = self.peak_fs_bytes.max(self.fs.used_bytes());
            r
        })
    }

    fn db(&self) -> &Db {
        self.db.as_ref().expect("the store is open")
    }

    /// Runs `call` on the store as `stage`.
    fn at<T>(
        &self,
        stage: Stage,
        call: impl FnOnce(&Db) -> hashkv::Result<T>,
    ) -> Result<T, Failure> {
        self.sites.set_stage(stage);
        call(self.db()).map_err(|e| (stage, e))
    }

    fn step(&mut self, step: Step) -> Result<(), Failure> {
        match step {
            Step::Format => self.format(),
            Step::Load => (0..LOAD_KEYS).try_for_each(|k| {
                let sync = (k + 1).is_multiple_of(LOAD_SYNC_EVERY);
                self.put(k, sync)
            }),
            Step::Churn { rounds } => (0..rounds).try_for_each(|_| self.churn_round()),
            Step::Promote => PROMOTED_KEYS.clone().try_for_each(|k| self.put(k, false)),
            Step::ColdGc => {
                self.settle()?;
                self.at(Stage::ColdGc, |db| {
                    db.collect_cold_garbage(None).map(|_| ())
                })
            }
            Step::Mixed => self.mixed(),
            Step::Flush => self.durable(Stage::Flush, |db| db.flush()),
            Step::Reads => self.reads(),
            Step::Close => self.close(),
            Step::Open => self.open(),
        }
    }

    fn format(&mut self) -> Result<(), Failure> {
        self.sites.set_stage(Stage::Format);
        let db = Db::format_device(self.sites.clone(), Path::new(DIR), &self.options)
            .map_err(|e| (Stage::Format, e))?;
        self.db = Some(db);
        self.formatted = true;
        self.index_faults_in_format = self.fs.fired().len();
        Ok(())
    }

    fn open(&mut self) -> Result<(), Failure> {
        self.sites.set_stage(Stage::Open);
        let db = Db::open_device(self.sites.clone(), Path::new(DIR), &self.options)
            .map_err(|e| (Stage::Open, e))?;
        self.db = Some(db);
        Ok(())
    }

    fn close(&mut self) -> Result<(), Failure> {
        let stats = self.db().stats();
        self.demotions += stats.demotions;
        self.cold_gcs += stats.cold_gc_runs;
        self.sites.set_stage(Stage::Close);
        let db = self.db.take().expect("the store is open");
        db.close().map_err(|e| (Stage::Close, e))?;
        self.history.all_durable();
        Ok(())
    }

    /// Runs a durability call: on success every write so far is durable.
    fn durable(
        &mut self,
        stage: Stage,
        call: impl FnOnce(&Db) -> hashkv::Result<()>,
    ) -> Result<(), Failure> {
        self.at(stage, call)?;
        self.history.all_durable();
        Ok(())
    }

    fn next_value(&mut self, k: u32) -> Vec<u8> {
        self.version += 1;
        let len = if k.is_multiple_of(INLINE_EVERY) {
            INLINE_VALUE_BYTES
        } else {
            VALUE_BYTES
        };
        value(k, self.version, len)
    }

    fn put(&mut self, k: u32, sync: bool) -> Result<(), Failure> {
        let v = self.next_value(k);
        self.history.push(vec![(key(k), Some(v.clone()))]);
        if sync {
            self.durable(Stage::Write, |db| db.put_sync(&key(k), &v))
        } else {
            self.at(Stage::Write, |db| db.put(&key(k), &v))
        }
    }

    fn churn_round(&mut self) -> Result<(), Failure> {
        for k in LOAD_KEYS - HOT_KEYS..LOAD_KEYS {
            self.put(k, false)?;
        }
        self.settle()?;
        self.at(Stage::Gc, |db| db.collect_garbage().map(|_| ()))
    }

    /// Flushes what the write cache holds, so that a GC after it finds the same store
    /// in every run: the background flusher's progress would decide otherwise what the
    /// GC sees (and so which group it collects, and what goes cold).
    fn settle(&mut self) -> Result<(), Failure> {
        self.durable(Stage::Flush, |db| db.flush())
    }

    /// Deletes some keys, writes a batch, and a sync batch.
    fn mixed(&mut self) -> Result<(), Failure> {
        for k in (100..160).step_by(6) {
            self.history.push(vec![(key(k), None)]);
            self.at(Stage::Write, |db| db.delete(&key(k)))?;
        }
        for sync in [false, true] {
            let mut batch = WriteBatch::new();
            let mut entries = Batch::new();
            for k in [7, 103, 201, 263] {
                let v = self.next_value(k);
                batch.put(&key(k), &v);
                entries.push((key(k), Some(v)));
            }
            batch.delete(&key(50));
            entries.push((key(50), None));
            self.history.push(entries);
            if sync {
                self.durable(Stage::Write, |db| db.write_sync(batch))?;
            } else {
                self.at(Stage::Write, |db| db.write(batch))?;
            }
        }
        Ok(())
    }

    /// Every key reads back its latest value, by get and by a full scan.
    fn reads(&mut self) -> Result<(), Failure> {
        self.sites.set_stage(Stage::Read);
        for k in &self.history.keys {
            let got = self.db().get(k).map_err(|e| (Stage::Read, e))?;
            assert!(
                got.as_ref() == self.history.latest.get(k),
                "get {:?} returned a wrong value",
                String::from_utf8_lossy(k)
            );
        }
        let scan = self
            .db()
            .scan(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
            .map_err(|e| (Stage::Read, e))?;
        let mut n = 0;
        for item in scan {
            let (k, v) = item.map_err(|e| (Stage::Read, e))?;
            assert!(
                self.history.latest.get(&k) == Some(&v),
                "the scan returned a wrong value for {:?}",
                String::from_utf8_lossy(&k)
            );
            n += 1;
        }
        assert_eq!(n, self.history.latest.len(), "the scan missed keys");
        Ok(())
    }
}
