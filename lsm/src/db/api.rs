//! [`Db`]: the public interface of the tree, and the read path.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};

use super::recovery::{inspect_dir, lock_dir, recover};
use super::{BgState, Inner, SyncState, Writer, WAIT_SLICE};
use crate::compaction::pick;
use crate::error::{LsmError, Result};
use crate::ikey::Kind;
use crate::iter::{Direction, RangeIter, SuperVersion};
use crate::memory::MemoryUsage;
use crate::memtable::Memtable;
use crate::options::{Options, WriteOptions};
use crate::snapshot::{Snapshot, SnapshotList};
use crate::stats::{Counters, Stats};
use crate::table::open_files::TableCaches;
use crate::version::LEVELS;
use crate::wal::WriteBatch;

/// An LSM tree in a directory. `Send + Sync`: share it through `Arc`.
pub struct Db {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Db {
    /// Opens (or creates) the tree in `dir`, replaying WALs left by a crash. Refuses,
    /// without changing anything on disk: a directory holding other files, one locked by
    /// another opener, one written by a newer format.
    pub fn open(dir: &Path, options: Options) -> Result<Db> {
        options.validate()?;
        let found = inspect_dir(dir, &options)?;
        let lock = lock_dir(&*options.fs, dir)?;
        let counters = Arc::new(Counters::default());
        let cache = Arc::new(TableCaches {
            fs: options.fs.clone(),
            blocks: crate::table::cache::BlockCache::new(
                options.block_cache_bytes,
                options.block_bytes,
            ),
            files: crate::table::open_files::OpenFiles::new(options.table_files_open_max),
        });
        let recovered = recover(dir, &options, &found, &cache, &counters)?;
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer {
                wal: recovered.wal,
                wal_base_bytes: 0,
                last_seq: recovered.last_seq,
            }),
            sync: Mutex::new(SyncState::default()),
            sync_cv: Condvar::new(),
            sv: RwLock::new(Arc::new(SuperVersion {
                mem: Arc::new(Memtable::new(recovered.wal_number)),
                imms: Vec::new(),
                version: recovered.versions.current.clone(),
            })),
            versions: Mutex::new(recovered.versions),
            next_file: recovered.next_file,
            visible_seq: AtomicU64::new(recovered.last_seq),
            snapshots: Arc::new(SnapshotList::default()),
            bg: Mutex::new(BgState {
                busy_levels: [false; LEVELS],
            }),
            bg_cv: Condvar::new(),
            throttle: super::throttle::WriteThrottle::new(),
            cache,
            counters,
            poisoned: AtomicBool::new(false),
            poison_cause: Mutex::new(String::new()),
            shutdown: AtomicBool::new(false),
            options,
            _lock: lock,
        });
        let mut threads = Vec::new();
        let spawn = |name: String, f: fn(&Inner)| {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(name)
                .spawn(move || f(&inner))
                .map_err(|e| LsmError::io("spawning a background thread", e))
        };
        threads.push(spawn("lsm-flush".into(), Inner::flush_loop)?);
        for i in 0..inner.options.compaction_threads {
            threads.push(spawn(format!("lsm-compact-{i}"), Inner::compaction_loop)?);
        }
        Ok(Db {
            inner,
            threads: Mutex::new(threads),
        })
    }

    pub fn put(&self, key: &[u8], value: &[u8], wo: &WriteOptions) -> Result<()> {
        let mut b = WriteBatch::new();
        b.put(key, value);
        self.write(&b, wo)
    }

    pub fn delete(&self, key: &[u8], wo: &WriteOptions) -> Result<()> {
        let mut b = WriteBatch::new();
        b.delete(key);
        self.write(&b, wo)
    }

    /// Applies the batch atomically: readers and recovery see all of it or none.
    pub fn write(&self, batch: &WriteBatch, wo: &WriteOptions) -> Result<()> {
        self.inner.write(batch, wo.sync)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let seq = self.inner.visible_seq.load(Ordering::Acquire);
        self.inner.get(key, seq)
    }

    /// Reads into the block cache, all at once, the blocks that gets of `keys` would
    /// read one after another: a multi-get's lookups then wait for one device round
    /// trip instead of one per key (or one per table a filter wrongly let through).
    /// Changes nothing a read returns; a key in a memtable, or in a cached block,
    /// needs nothing, and without a block cache nothing is read.
    pub fn prefetch(&self, keys: &[&[u8]]) -> Result<()> {
        if !self.inner.cache.blocks.is_enabled() {
            return Ok(());
        }
        let seq = self.inner.visible_seq.load(Ordering::Acquire);
        let sv = self.inner.sv.read().clone();
        let mut pending: Vec<&[u8]> = keys
            .iter()
            .copied()
            .filter(|k| {
                sv.mem.get(k, seq).is_none() && sv.imms.iter().all(|m| m.get(k, seq).is_none())
            })
            .collect();
        // Rounds: a key whose fetched block did not hold it (a filter's false
        // positive) goes on to the next table. Each round fetches only blocks no
        // earlier round fetched, so the rounds end even if the cache drops blocks.
        let mut fetched = std::collections::HashSet::new();
        loop {
            let mut blocks = Vec::new();
            pending.retain(|key| match sv.version.first_uncached_block(key, seq) {
                Some((table, i)) => {
                    if fetched.insert((table.number, i)) {
                        blocks.push((table, i));
                    }
                    true
                }
                None => false,
            });
            if blocks.is_empty() {
                return Ok(());
            }
            fetch_blocks(&blocks)?;
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        // Registered under the writer lock so that no compaction can compute its oldest
        // snapshot between our read of the sequence and the registration.
        let _w = self.inner.writer.lock();
        Snapshot::new(
            self.inner.visible_seq.load(Ordering::Acquire),
            self.inner.snapshots.clone(),
        )
    }

    pub fn get_at(&self, key: &[u8], snap: &Snapshot) -> Result<Option<Vec<u8>>> {
        self.inner.get(key, snap.seq)
    }

    /// A streaming scan of [lower, upper] in `direction`, at `snap` or at the latest
    /// write. The scan holds the tables it reads alive; it does not block writes.
    pub fn range(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        direction: Direction,
        snap: Option<&Snapshot>,
    ) -> Result<RangeIter> {
        let snap = match snap {
            Some(s) => s.clone(),
            None => self.snapshot(),
        };
        let sv = self.inner.sv.read().clone();
        let seq = snap.seq;
        Ok(RangeIter::new(sv, lower, upper, direction, seq, Some(snap)))
    }

    /// Freezes the memtable and waits until it (and any earlier frozen one) is in a
    /// table file named by a synced manifest.
    pub fn flush(&self) -> Result<()> {
        self.inner.check_writable()?;
        // Every memtable with a WAL numbered up to this one must be in a table.
        let wal_number_max = {
            let mut w = self.inner.writer.lock();
            let mem = self.inner.sv.read().mem.clone();
            if !mem.is_empty() {
                // Flush waits for its own memtable even if the frozen queue is full.
                self.inner.rotate_memtable(&mut w)?;
            }
            mem.wal_number
        };
        self.inner.bg_cv.notify_all();
        let mut bg = self.inner.bg.lock();
        loop {
            self.inner.check_writable()?;
            // Writers may freeze newer memtables meanwhile; those are not ours to wait for.
            if self
                .inner
                .sv
                .read()
                .imms
                .iter()
                .all(|m| m.wal_number > wal_number_max)
            {
                return Ok(());
            }
            self.inner.bg_cv.wait_for(&mut bg, WAIT_SLICE);
        }
    }

    /// Makes every earlier write durable.
    pub fn sync_wal(&self) -> Result<()> {
        self.inner.check_writable()?;
        let end = {
            let w = self.inner.writer.lock();
            w.wal_base_bytes + w.wal.logical_bytes()
        };
        self.inner.sync_until(end)
    }

    /// Compacts every level's tables overlapping [begin, end] down to the deepest level
    /// holding data in that range (at least L1; memtable flushed first), then rewrites
    /// that level's tables in the range, so tombstones and shadowed versions in the range
    /// are dropped wherever no snapshot needs them.
    pub fn compact_range(&self, begin: Option<&[u8]>, end: Option<&[u8]>) -> Result<()> {
        self.flush()?;
        let inner = &self.inner;
        let v = inner.sv.read().version.clone();
        let Some(deepest) = (0..LEVELS)
            .rev()
            .find(|&l| !v.overlapping(l, begin, end).is_empty())
        else {
            return Ok(());
        };
        let bottom = deepest.max(1);
        for level in 0..=bottom {
            let output_level = (level + 1).min(bottom);
            let c = {
                let mut bg = inner.bg.lock();
                while bg.busy_levels[level] || bg.busy_levels[output_level] {
                    inner.check_writable()?;
                    inner.bg_cv.wait_for(&mut bg, WAIT_SLICE);
                }
                let v = inner.sv.read().version.clone();
                let c = if level == bottom {
                    pick::in_place(&v, level, begin, end)
                } else {
                    pick::for_range(&v, level, begin, end)
                };
                let Some(c) = c else {
                    continue;
                };
                bg.busy_levels[level] = true;
                bg.busy_levels[output_level] = true;
                c
            };
            let r = inner.run_compaction(&c, false);
            inner.release_levels(&c);
            r?;
        }
        Ok(())
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.inner.counters.snapshot();
        let v = self.inner.sv.read().version.clone();
        s.table_count_per_level = v.levels.iter().map(|l| l.len()).collect();
        s.table_bytes_per_level = (0..LEVELS).map(|l| v.level_bytes(l)).collect();
        s
    }

    /// Lets the block cache hold `bytes` more than `Options::block_cache_bytes` until
    /// the next call: memory a program's budget has room for while its other buffers
    /// do not use it. A smaller loan (0 takes it all back) evicts down to the new
    /// capacity before this returns.
    pub fn set_block_cache_loan(&self, bytes: u64) {
        self.inner.cache.blocks.set_loan(bytes);
    }

    /// What the tree holds in memory, by use (see [`MemoryUsage`]).
    pub fn memory_usage(&self) -> MemoryUsage {
        let (block_cache_bytes, block_cache_capacity_bytes, pinned) =
            self.inner.cache.blocks.usage();
        let sv = self.inner.sv.read().clone();
        let memtable_bytes = std::iter::once(&sv.mem)
            .chain(sv.imms.iter())
            .map(|m| m.approx_bytes() as u64)
            .sum();
        MemoryUsage {
            block_cache_bytes,
            block_cache_capacity_bytes,
            pinned_index_filter_bytes: pinned,
            memtable_bytes,
        }
    }

    /// The sequence number of the last applied write (each put/delete of a batch takes
    /// one). Survives reopen: recovery resumes after the last recovered write.
    pub fn latest_sequence(&self) -> u64 {
        self.inner.visible_seq.load(Ordering::Acquire)
    }

    /// Syncs the WAL and stops background work. Dropping the Db does the same,
    /// ignoring errors. Fails if the WAL cannot be synced or the tree is poisoned: then
    /// writes since the last sync may be lost.
    pub fn close(self) -> Result<()> {
        self.shutdown(true)
    }

    /// `close` through a shared handle (an owner that keeps the tree in an `Arc`):
    /// writes fail with `Closed` afterwards, and dropping the last handle does
    /// nothing more.
    pub fn close_shared(&self) -> Result<()> {
        self.shutdown(true)
    }

    /// Test hook: stops background threads and drops everything without syncing or
    /// handing buffered WAL records to the kernel, as a crash would.
    #[doc(hidden)]
    pub fn crash_for_test(self) {
        let _ = self.shutdown(false);
    }

    /// Test hook: the current WAL file and the byte offset in it up to which it is
    /// known durable. Bytes past it may be torn by a crash.
    #[doc(hidden)]
    pub fn wal_durable_point_for_test(&self) -> (PathBuf, u64) {
        let w = self.inner.writer.lock();
        let synced = self.inner.sync.lock().synced_bytes;
        (w.wal.path.clone(), synced.saturating_sub(w.wal_base_bytes))
    }

    fn shutdown(&self, clean: bool) -> Result<()> {
        if self.inner.shutdown.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        {
            let _bg = self.inner.bg.lock();
            self.inner.bg_cv.notify_all();
        }
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        if !clean {
            return Ok(());
        }
        if self.inner.poisoned.load(Ordering::Acquire) {
            // Writes since the last sync are not durable, and cannot be made so: a
            // close that returned Ok would claim they are.
            return Err(LsmError::Poisoned {
                cause: self.inner.poison_cause.lock().clone(),
            });
        }
        let mut w = self.inner.writer.lock();
        self.inner.poisoning(w.wal.sync())
    }
}

/// Threads one prefetch reads with at most (the caller's among them): table files are
/// read with blocking O_DIRECT reads, so the device sees as many at once as there are
/// threads; 8 keep a 32-key multi-get to about four reads per thread.
const PREFETCH_THREADS_MAX: usize = 8;

/// Reads `blocks` into the block cache with up to `PREFETCH_THREADS_MAX` threads, each
/// taking the next block not yet taken; the first error is returned.
fn fetch_blocks(blocks: &[(Arc<crate::table::reader::TableReader>, usize)]) -> Result<()> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || -> Result<()> {
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some((table, i)) = blocks.get(k) else {
                return Ok(());
            };
            table.fetch(*i)?;
        }
    };
    let helpers = blocks.len().min(PREFETCH_THREADS_MAX).saturating_sub(1);
    std::thread::scope(|s| {
        let spawned: Vec<_> = (0..helpers).map(|_| s.spawn(work)).collect();
        let mine = work();
        spawned
            .into_iter()
            .map(|h| h.join().expect("a prefetch thread panicked"))
            .fold(mine, |first, r| first.and(r))
    })
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = self.shutdown(true);
    }
}

impl Inner {
    fn get(&self, key: &[u8], seq: u64) -> Result<Option<Vec<u8>>> {
        let sv = self.sv.read().clone();
        let found = match sv.mem.get(key, seq) {
            Some(f) => Some(f),
            None => match sv.imms.iter().find_map(|m| m.get(key, seq)) {
                Some(f) => Some(f),
                None => sv.version.get(key, seq)?,
            },
        };
        Ok(match found {
            Some((Kind::Put, v)) => Some(v),
            _ => None,
        })
    }
}
