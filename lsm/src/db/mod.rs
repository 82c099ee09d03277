//! The tree: its shared state, and the modules that drive it.
//!
//! - [`api`]: [`Db`], the public interface (open, writes, reads, snapshots, flush,
//!   compact_range, close) and the read path.
//! - [`write`](mod@write): the write path: throttling, WAL append and memtable insert,
//!   memtable rotation, group commit of WAL syncs.
//! - [`throttle`]: pacing writers to the rate compaction drains L0.
//! - [`background`]: the flush and compaction threads, and writing a memtable to a table.
//! - [`recovery`]: checking and locking the directory at open, rebuilding the tree from
//!   CURRENT, the manifest and the WALs, and `destroy`.
//!
//! All of them work on one [`Inner`], shared through an `Arc` by the `Db` and its
//! background threads. After an I/O error in the write path, a flush or a compaction,
//! [`Inner::poison`] makes every later write fail (see lsm/DESIGN.md, Errors).

mod api;
mod background;
mod recovery;
mod throttle;
mod write;

pub use api::Db;
pub use recovery::{destroy, destroy_on};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{LsmError, Result};
use crate::fs::FsLock;
use crate::iter::SuperVersion;
use crate::options::Options;
use crate::snapshot::SnapshotList;
use crate::stats::Counters;
use crate::table::open_files::TableCaches;
use crate::version::{VersionSet, LEVELS};
use crate::wal::writer::WalWriter;

/// Frozen memtables waiting for flush before writers stall: one being flushed and one
/// queued lets writers continue through one flush.
pub(crate) const IMMUTABLE_MEMTABLES_MAX: usize = 2;
/// Waits re-check their condition at least this often (a lost wake-up costs no more).
const WAIT_SLICE: Duration = Duration::from_millis(50);

struct Writer {
    wal: WalWriter,
    /// Global WAL offset (over all WAL files of this run) of the current file's start.
    wal_base_bytes: u64,
    last_seq: u64,
}

#[derive(Default)]
struct SyncState {
    /// Global WAL offset up to which everything is durable.
    synced_bytes: u64,
    in_progress: bool,
}

struct BgState {
    busy_levels: [bool; LEVELS],
}

struct Inner {
    dir: PathBuf,
    options: Options,
    writer: Mutex<Writer>,
    sync: Mutex<SyncState>,
    sync_cv: Condvar,
    sv: RwLock<Arc<SuperVersion>>,
    versions: Mutex<VersionSet>,
    next_file: Arc<AtomicU64>,
    /// Sequence of the last write whose entries are all in the memtable: reads see
    /// exactly the writes up to it (a batch becomes visible at once).
    visible_seq: AtomicU64,
    snapshots: Arc<SnapshotList>,
    bg: Mutex<BgState>,
    /// Wakes background threads (work may be there) and stalled writers (L0 shrank,
    /// a memtable was flushed).
    bg_cv: Condvar,
    /// Paces writers while L0 is at or above the compaction trigger.
    throttle: throttle::WriteThrottle,
    cache: Arc<TableCaches>,
    counters: Arc<Counters>,
    poisoned: AtomicBool,
    poison_cause: Mutex<String>,
    shutdown: AtomicBool,
    /// Dropped last: the directory stays locked while anything may still write.
    _lock: Box<dyn FsLock>,
}

impl Inner {
    fn check_writable(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(LsmError::Poisoned {
                cause: self.poison_cause.lock().clone(),
            });
        }
        if self.shutdown.load(Ordering::Acquire) {
            return Err(LsmError::Closed);
        }
        Ok(())
    }

    /// Records the first I/O error: from now on writes fail, since what is on disk may
    /// no longer match what was acknowledged.
    fn poison(&self, e: &LsmError) {
        let mut cause = self.poison_cause.lock();
        if !self.poisoned.load(Ordering::Acquire) {
            *cause = e.to_string();
            self.poisoned.store(true, Ordering::Release);
        }
        drop(cause);
        self.bg_cv.notify_all();
        self.sync_cv.notify_all();
    }

    fn poisoning<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if !matches!(e, LsmError::Closed) {
                self.poison(e);
            }
        }
        r
    }
}
