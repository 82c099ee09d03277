//! The value device's I/O sites, and an EIO aimed at one operation of one site.
//!
//! [`SiteDevice`] sits between the engine and a simulated device. It names each
//! operation's site: what the engine was doing (the [`Stage`] the workload sets before
//! each call), the kind of operation, and the region it touches. It counts the
//! operations per site; armed with a site and a count, it lets that many of the site's
//! operations pass and has the device fail the next one with EIO (a fault rule on that
//! operation's index, so the device's own model of a failed operation applies: the
//! device is poisoned, a failed write may still partly reach the media at a crash).
//! Counting per site in the run itself keeps the aim true even where the engine's
//! threads order operations differently from run to run.

use hashkv::Layout;
use hashkv_blockdev::sim::{FaultRule, SimDevice};
use hashkv_blockdev::{BlockDevice, CounterSnapshot, Geometry, IoOp, Result};
use hashkv_lsm::fault::FaultFs;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// What the workload is doing: set before each call of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Format,
    Open,
    /// Puts, deletes and batches, sync or not (with the flushes they run).
    Write,
    /// `Db::flush`.
    Flush,
    /// `Db::collect_garbage`: a group's GC, or the value log's.
    Gc,
    /// `Db::collect_cold_garbage`: the cold data log's GC.
    ColdGc,
    /// Gets and scans.
    Read,
    Close,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IoKind {
    Read,
    Write,
    /// The device's cache flush.
    Flush,
}

/// The part of the device an operation touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Region {
    /// The first unit: the superblock's two copies.
    Superblock,
    /// The groups' main segments (and the spares GC copies into).
    MainSegments,
    /// The reserved space: log segments of the groups and the cold data log.
    LogSegments,
    /// The vlog mode's circular log, over both.
    ValueLog,
    /// A device flush touches no region.
    Whole,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceSite {
    pub stage: Stage,
    pub kind: IoKind,
    pub region: Region,
}

impl fmt::Display for DeviceSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {:?} of {:?}", self.stage, self.kind, self.region)
    }
}

struct State {
    stage: Stage,
    calls: BTreeMap<DeviceSite, u64>,
    /// The site to fail, and how many of its operations pass first.
    armed: Option<(DeviceSite, u64)>,
    fired: Option<DeviceSite>,
    /// Faults the index's file system had fired when format's superblock reached the
    /// media (its commit point), if it did.
    index_faults_at_commit: Option<usize>,
}

pub struct SiteDevice {
    dev: Arc<SimDevice>,
    /// The index's file system, to note which of its faults came before the commit.
    fs: Arc<FaultFs>,
    layout: Layout,
    value_log: bool,
    /// Held across each call to the device, so the operation indices the device hands
    /// out are the ones `submit` expects.
    state: Mutex<State>,
}

impl SiteDevice {
    /// `layout` is the store's (`Layout::compute` with its options); `value_log` for
    /// the vlog mode, whose log spans main and log segments alike.
    pub fn new(
        dev: Arc<SimDevice>,
        fs: Arc<FaultFs>,
        layout: Layout,
        value_log: bool,
    ) -> Arc<SiteDevice> {
        Arc::new(SiteDevice {
            dev,
            fs,
            layout,
            value_log,
            state: Mutex::new(State {
                stage: Stage::Format,
                calls: BTreeMap::new(),
                armed: None,
                fired: None,
                index_faults_at_commit: None,
            }),
        })
    }

    pub fn set_stage(&self, stage: Stage) {
        self.state.lock().stage = stage;
    }

    /// The operation after `skip` operations of `site` fails with EIO.
    pub fn arm(&self, site: DeviceSite, skip: u64) {
        self.state.lock().armed = Some((site, skip));
    }

    /// Operations per site so far.
    pub fn calls(&self) -> BTreeMap<DeviceSite, u64> {
        self.state.lock().calls.clone()
    }

    /// The site whose armed operation was failed, if it came.
    pub fn fired(&self) -> Option<DeviceSite> {
        self.state.lock().fired
    }

    /// Faults of the index's file system fired before format committed (its
    /// superblock flushed); `None` if it never did.
    pub fn index_faults_at_commit(&self) -> Option<usize> {
        self.state.lock().index_faults_at_commit
    }

    fn region(&self, offset: u64) -> Region {
        if offset < self.layout.main_region_offset {
            Region::Superblock
        } else if self.value_log {
            Region::ValueLog
        } else if offset < self.layout.log_region_offset {
            Region::MainSegments
        } else {
            Region::LogSegments
        }
    }

    /// Counts an operation of `kind` in `region` that the device will number
    /// `op_index`; fails it if it is the armed one.
    fn admit(&self, s: &mut State, kind: IoKind, region: Region, op_index: u64) {
        let site = DeviceSite {
            stage: s.stage,
            kind,
            region,
        };
        let n = s.calls.entry(site).or_insert(0);
        *n += 1;
        if s.armed == Some((site, *n - 1)) {
            s.armed = None;
            s.fired = Some(site);
            let rule = FaultRule::eio().at_op(op_index).max_hits(1);
            self.dev.inject(rule).expect("a valid fault rule");
        }
    }
}

impl BlockDevice for SiteDevice {
    fn geometry(&self) -> Geometry {
        self.dev.geometry()
    }

    fn submit(&self, ops: &mut [IoOp<'_>]) -> Result<()> {
        let mut s = self.state.lock();
        let first = self.dev.ops_issued();
        for (i, op) in ops.iter().enumerate() {
            let kind = match op {
                IoOp::Read { .. } => IoKind::Read,
                _ => IoKind::Write,
            };
            self.admit(&mut s, kind, self.region(op.offset()), first + i as u64);
        }
        self.dev.submit(ops)
    }

    fn flush(&self) -> Result<()> {
        let mut s = self.state.lock();
        let at = self.dev.ops_issued();
        self.admit(&mut s, IoKind::Flush, Region::Whole, at);
        self.dev.flush()?;
        let superblock_written = DeviceSite {
            stage: Stage::Format,
            kind: IoKind::Write,
            region: Region::Superblock,
        };
        if s.stage == Stage::Format && s.calls.contains_key(&superblock_written) {
            s.index_faults_at_commit
                .get_or_insert_with(|| self.fs.fired().len());
        }
        Ok(())
    }

    fn counters(&self) -> Vec<CounterSnapshot> {
        self.dev.counters()
    }

    fn poisoned(&self) -> Option<Arc<hashkv_blockdev::DeviceError>> {
        self.dev.poisoned()
    }
}
