//! The tree: write path (WAL, memtable, group commit, write throttling), read path,
//! background flush and compaction threads, open/recovery and shutdown.

use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use fs2::FileExt;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::compaction::{pick, run, Compaction};
use crate::error::{LsmError, Result};
use crate::files::{self, FileKind};
use crate::ikey::{self, Kind};
use crate::iter::{Direction, RangeIter, SuperVersion};
use crate::manifest::log::{read_current, read_manifest, set_current, ManifestWriter};
use crate::manifest::VersionEdit;
use crate::memtable::Memtable;
use crate::options::{Options, WriteOptions};
use crate::snapshot::{Snapshot, SnapshotList};
use crate::stats::{add, Counters, Stats};
use crate::table::builder::TableBuilder;
use crate::table::open_files::TableCaches;
use crate::version::{FileMeta, Version, VersionSet, LEVELS};
use crate::wal::batch::for_each_entry;
use crate::wal::writer::WalWriter;
use crate::wal::WriteBatch;

/// Frozen memtables waiting for flush before writers stall: one being flushed and one
/// queued lets writers continue through one flush.
const IMMUTABLE_MEMTABLES_MAX: usize = 2;
/// Delay of one write when L0 reaches the slowdown trigger.
const SLOWDOWN_DELAY: Duration = Duration::from_millis(1);
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
    cursor: [Vec<u8>; LEVELS],
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
    cache: Arc<TableCaches>,
    counters: Arc<Counters>,
    poisoned: AtomicBool,
    poison_cause: Mutex<String>,
    shutdown: AtomicBool,
    /// Dropped last: the directory stays locked while anything may still write.
    _lock: File,
}

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
        let lock = lock_dir(dir)?;
        let counters = Arc::new(Counters::default());
        let cache = Arc::new(TableCaches {
            blocks: crate::table::cache::BlockCache::new(options.block_cache_bytes),
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
                cursor: Default::default(),
            }),
            bg_cv: Condvar::new(),
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

    /// The sequence number of the last applied write (each put/delete of a batch takes
    /// one). Survives reopen: recovery resumes after the last recovered write.
    pub fn latest_sequence(&self) -> u64 {
        self.inner.visible_seq.load(Ordering::Acquire)
    }

    /// Syncs the WAL and stops background work. Dropping the Db does the same,
    /// ignoring errors.
    pub fn close(self) -> Result<()> {
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
        if clean && !self.inner.poisoned.load(Ordering::Acquire) {
            let mut w = self.inner.writer.lock();
            w.wal.sync()?;
        }
        Ok(())
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = self.shutdown(true);
    }
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

    /// Delays or stops a writer while compaction is behind.
    fn throttle(&self) -> Result<()> {
        let mut slowed = false;
        let mut stalled = false;
        loop {
            self.check_writable()?;
            let (l0, mem_full) = {
                let sv = self.sv.read();
                (
                    sv.version.levels[0].len(),
                    sv.mem.approx_bytes() >= self.options.memtable_bytes_max
                        && sv.imms.len() >= IMMUTABLE_MEMTABLES_MAX,
                )
            };
            if l0 >= self.options.l0_stop_trigger || mem_full {
                if !stalled {
                    stalled = true;
                    add(&self.counters.write_stalls, 1);
                }
                let mut bg = self.bg.lock();
                self.bg_cv.notify_all();
                self.bg_cv.wait_for(&mut bg, WAIT_SLICE);
                continue;
            }
            if l0 >= self.options.l0_slowdown_trigger && !slowed && !stalled {
                slowed = true;
                add(&self.counters.write_slowdowns, 1);
                self.bg_cv.notify_all();
                std::thread::sleep(SLOWDOWN_DELAY);
                continue;
            }
            return Ok(());
        }
    }

    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        batch.check_limits()?;
        if batch.is_empty() {
            return Ok(());
        }
        self.throttle()?;
        let end = {
            let mut w = self.writer.lock();
            self.check_writable()?;
            let first_seq = w.last_seq + 1;
            if first_seq + batch.len() as u64 > ikey::SEQ_MAX {
                return Err(LsmError::corrupt("sequence numbers exhausted"));
            }
            let mut payload = Vec::with_capacity(batch.rep.len() + 12);
            batch.encode_payload(first_seq, &mut payload);
            let n = self.poisoning(w.wal.append(&payload))?;
            add(&self.counters.wal_bytes_written, n as u64);
            add(&self.counters.user_bytes_written, batch.rep.len() as u64);
            let mem = self.sv.read().mem.clone();
            let mut seq = first_seq;
            for_each_entry(&batch.rep, batch.len(), |e| {
                mem.insert(ikey::encode(e.key, seq, e.kind), e.value);
                seq += 1;
            })
            .expect("a batch built by WriteBatch decodes");
            w.last_seq = seq - 1;
            self.visible_seq.store(w.last_seq, Ordering::Release);
            let end = w.wal_base_bytes + w.wal.logical_bytes();
            if mem.approx_bytes() >= self.options.memtable_bytes_max
                && self.sv.read().imms.len() < IMMUTABLE_MEMTABLES_MAX
            {
                // This write is applied either way; a failed switch has poisoned the
                // tree, which later writes (and a sync of this one) will report.
                let _ = self.rotate_memtable(&mut w);
            }
            end
        };
        if sync {
            self.sync_until(end)?;
        }
        Ok(())
    }

    /// Freezes the memtable and starts a new one with a new WAL. The old WAL is synced
    /// first, so every write before the switch is durable: sync writers waiting on it are
    /// served, and flushes never depend on an unsynced WAL.
    fn rotate_memtable(&self, w: &mut Writer) -> Result<()> {
        let number = self.next_file.fetch_add(1, Ordering::SeqCst);
        let new_wal = self.poisoning(WalWriter::create(&self.dir, number))?;
        self.poisoning(files::sync_dir(&self.dir))?;
        self.poisoning(w.wal.sync())?;
        add(
            &self.counters.wal_bytes_written,
            crate::wal::record::WAL_HEADER_BYTES as u64,
        );
        let old_end = w.wal_base_bytes + w.wal.logical_bytes();
        w.wal = new_wal;
        w.wal_base_bytes = old_end;
        {
            let mut s = self.sync.lock();
            s.synced_bytes = s.synced_bytes.max(old_end);
        }
        self.sync_cv.notify_all();
        {
            let mut sv = self.sv.write();
            let mut imms = vec![sv.mem.clone()];
            imms.extend(sv.imms.iter().cloned());
            *sv = Arc::new(SuperVersion {
                mem: Arc::new(Memtable::new(number)),
                imms,
                version: sv.version.clone(),
            });
        }
        self.bg_cv.notify_all();
        Ok(())
    }

    /// Group commit: the first writer to find no sync running syncs everything written
    /// so far; writers arriving meanwhile wait and are usually covered by it.
    fn sync_until(&self, target: u64) -> Result<()> {
        let mut s = self.sync.lock();
        loop {
            if s.synced_bytes >= target {
                return Ok(());
            }
            self.check_writable()?;
            if s.in_progress {
                self.sync_cv.wait_for(&mut s, WAIT_SLICE);
                continue;
            }
            s.in_progress = true;
            drop(s);
            let r = (|| {
                let (file, end, path) = {
                    let mut w = self.writer.lock();
                    w.wal.flush_buffer()?;
                    (
                        w.wal.file(),
                        w.wal_base_bytes + w.wal.logical_bytes(),
                        w.wal.path.clone(),
                    )
                };
                file.sync_data()
                    .map_err(|e| LsmError::io(format!("syncing {}", path.display()), e))?;
                add(&self.counters.wal_syncs, 1);
                Ok(end)
            })();
            let r = self.poisoning(r);
            s = self.sync.lock();
            s.in_progress = false;
            if let Ok(end) = r {
                s.synced_bytes = s.synced_bytes.max(end);
            }
            self.sync_cv.notify_all();
            r?;
        }
    }

    fn flush_loop(&self) {
        loop {
            {
                let mut bg = self.bg.lock();
                loop {
                    if self.shutdown.load(Ordering::Acquire)
                        || self.poisoned.load(Ordering::Acquire)
                    {
                        return;
                    }
                    if !self.sv.read().imms.is_empty() {
                        break;
                    }
                    self.bg_cv.wait_for(&mut bg, WAIT_SLICE);
                }
            }
            let r = self.flush_oldest();
            let _ = self.poisoning(r);
            self.bg_cv.notify_all();
        }
    }

    /// Writes the oldest frozen memtable to an L0 table and retires its WAL.
    fn flush_oldest(&self) -> Result<()> {
        let imm = match self.sv.read().imms.last() {
            Some(m) => m.clone(),
            None => return Ok(()),
        };
        let mut added = Vec::new();
        if !imm.is_empty() {
            let number = self.next_file.fetch_add(1, Ordering::SeqCst);
            let info = write_memtable(&self.dir, &self.options, number, &imm)?;
            files::sync_dir(&self.dir)?;
            add(&self.counters.flush_bytes_written, info.file_bytes);
            added.push(FileMeta::open(
                &self.dir,
                number,
                info.smallest,
                info.largest,
                &self.cache,
                &self.counters,
            )?);
        }
        let log_number;
        {
            let mut vs = self.versions.lock();
            let sv = self.sv.read().clone();
            // The oldest WAL still needed is the one of the next memtable to flush.
            let n = sv.imms.len();
            log_number = if n >= 2 {
                sv.imms[n - 2].wal_number
            } else {
                sv.mem.wal_number
            };
            let edit = VersionEdit {
                log_number: Some(log_number),
                // Not the latest sequence: writes after the rotation live only in a WAL
                // that a crash may tear, and recovery must not claim them.
                last_sequence: Some(imm.seq_max()),
                added: added.iter().map(|f| f.added(0)).collect(),
                ..Default::default()
            };
            let v = vs.apply(edit, added)?;
            let mut sv = self.sv.write();
            let imms = sv
                .imms
                .iter()
                .filter(|m| !Arc::ptr_eq(m, &imm))
                .cloned()
                .collect();
            *sv = Arc::new(SuperVersion {
                mem: sv.mem.clone(),
                imms,
                version: v,
            });
        }
        add(&self.counters.flushes, 1);
        let _ = std::fs::remove_file(self.dir.join(files::wal_name(imm.wal_number)));
        Ok(())
    }

    fn compaction_loop(&self) {
        loop {
            let c = {
                let mut bg = self.bg.lock();
                loop {
                    if self.shutdown.load(Ordering::Acquire)
                        || self.poisoned.load(Ordering::Acquire)
                    {
                        return;
                    }
                    let v = self.sv.read().version.clone();
                    let picked = {
                        let b = &mut *bg;
                        let c = pick::pick(&self.options, &v, &b.busy_levels, &mut b.cursor);
                        if let Some(c) = &c {
                            b.busy_levels[c.level] = true;
                            b.busy_levels[c.output_level] = true;
                        }
                        c
                    };
                    if let Some(c) = picked {
                        break c;
                    }
                    drop(v);
                    self.bg_cv.wait_for(&mut bg, WAIT_SLICE);
                }
            };
            let r = self.run_compaction(&c, true);
            self.release_levels(&c);
            if let Err(e) = r {
                if !matches!(e, LsmError::Closed) {
                    return;
                }
            }
        }
    }

    fn release_levels(&self, c: &Compaction) {
        let mut bg = self.bg.lock();
        bg.busy_levels[c.level] = false;
        bg.busy_levels[c.output_level] = false;
        drop(bg);
        self.bg_cv.notify_all();
    }

    /// Runs a compaction whose levels the caller has marked busy, and installs it.
    fn run_compaction(&self, c: &Compaction, allow_trivial_move: bool) -> Result<()> {
        let out_level = c.output_level();
        let mut edit = VersionEdit::default();
        for f in &c.inputs {
            edit.deleted.push((c.level, f.number));
        }
        for f in &c.next_inputs {
            edit.deleted.push((out_level, f.number));
        }
        let outputs = if allow_trivial_move && c.is_trivial_move() {
            add(&self.counters.trivial_moves, 1);
            c.inputs.clone()
        } else {
            let smallest_snapshot = {
                // Read under the writer lock: snapshot() registers under it too.
                let _w = self.writer.lock();
                self.snapshots
                    .oldest()
                    .unwrap_or(u64::MAX)
                    .min(self.visible_seq.load(Ordering::Acquire))
            };
            let version = self.sv.read().version.clone();
            let env = run::Env {
                dir: &self.dir,
                options: &self.options,
                next_file: &self.next_file,
                cache: &self.cache,
                counters: &self.counters,
                shutdown: &self.shutdown,
            };
            self.poisoning(run::run(&env, c, &version, smallest_snapshot))?
        };
        edit.added = outputs.iter().map(|f| f.added(out_level)).collect();
        {
            let mut vs = self.versions.lock();
            let v = self.poisoning(vs.apply(edit, outputs))?;
            let mut sv = self.sv.write();
            *sv = Arc::new(SuperVersion {
                mem: sv.mem.clone(),
                imms: sv.imms.clone(),
                version: v,
            });
        }
        add(&self.counters.compactions, 1);
        self.bg_cv.notify_all();
        Ok(())
    }
}

fn write_memtable(
    dir: &Path,
    options: &Options,
    number: u64,
    mem: &Memtable,
) -> Result<crate::table::builder::TableInfo> {
    let mut b = TableBuilder::create(dir, number, options.block_bytes, options.bloom_bits_per_key)?;
    let mut err = None;
    mem.for_each(|k, v| {
        if err.is_none() {
            if let Err(e) = b.add(k, v) {
                err = Some(e);
            }
        }
    });
    if let Some(e) = err {
        b.abandon();
        return Err(e);
    }
    b.finish()
}

/// What `inspect_dir` found: whether a tree exists there.
struct Found {
    exists: bool,
}

/// Decides, before touching anything, whether `dir` may be opened.
fn inspect_dir(dir: &Path, options: &Options) -> Result<Found> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !options.create_if_missing {
                return Err(LsmError::NotFound {
                    dir: dir.to_path_buf(),
                });
            }
            std::fs::create_dir_all(dir)
                .map_err(|e| LsmError::io(format!("creating directory {}", dir.display()), e))?;
            return Ok(Found { exists: false });
        }
        Err(e) => return Err(LsmError::io(format!("inspecting {}", dir.display()), e)),
        Ok(m) if !m.is_dir() => {
            return Err(LsmError::NotAnLsmDirectory {
                dir: dir.to_path_buf(),
                found: "a file, not a directory".into(),
            })
        }
        Ok(_) => {}
    }
    let names = list_dir(dir)?;
    let exists = names.iter().any(|n| n == files::CURRENT);
    if !exists {
        // Only our own files may be here: those of a create that crashed before CURRENT.
        if let Some(other) = names.iter().find(|n| files::parse_name(n).is_none()) {
            return Err(LsmError::NotAnLsmDirectory {
                dir: dir.to_path_buf(),
                found: format!(
                    "{other:?}, which is not a file of an LSM tree, and no CURRENT file"
                ),
            });
        }
        if !options.create_if_missing {
            return Err(LsmError::NotFound {
                dir: dir.to_path_buf(),
            });
        }
    } else if options.error_if_exists {
        return Err(LsmError::AlreadyExists {
            dir: dir.to_path_buf(),
        });
    }
    Ok(Found { exists })
}

fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| LsmError::io(format!("listing {}", dir.display()), e))?;
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(|e| LsmError::io(format!("listing {}", dir.display()), e))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Removes `dir` and everything in it, as a forced re-format does, but refuses with
/// `LsmError::Locked` (and removes nothing) while a `Db` in this or another process
/// holds it open. A directory that does not exist is fine.
pub fn destroy(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    // Held until everything is gone, so no opener can slip in between.
    let _lock = lock_dir(dir)?;
    std::fs::remove_dir_all(dir).map_err(|e| LsmError::io(format!("removing {}", dir.display()), e))
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(files::LOCK);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| LsmError::io(format!("opening {}", path.display()), e))?;
    match f.try_lock_exclusive() {
        Ok(()) => Ok(f),
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.raw_os_error() == Some(libc::EWOULDBLOCK) =>
        {
            Err(LsmError::Locked {
                dir: dir.to_path_buf(),
            })
        }
        Err(e) => Err(LsmError::io(format!("locking {}", path.display()), e)),
    }
}

struct Recovered {
    versions: VersionSet,
    wal: WalWriter,
    wal_number: u64,
    last_seq: u64,
    next_file: Arc<AtomicU64>,
}

/// Rebuilds the tree from CURRENT, the manifest and the WALs. Everything is read and
/// validated before anything is written, so a refused open leaves the directory as it
/// was. Then: the replayed WAL contents go to an L0 table, a fresh manifest with the
/// whole state replaces the old one, and obsolete files are deleted.
fn recover(
    dir: &Path,
    options: &Options,
    found: &Found,
    cache: &Arc<TableCaches>,
    counters: &Arc<Counters>,
) -> Result<Recovered> {
    let mut version = Version::empty();
    let mut log_number = 0;
    let mut last_seq = 0;
    let mut next_file = 1;
    if found.exists {
        let m = read_current(dir)?;
        let edits = read_manifest(&dir.join(files::manifest_name(m)))?;
        let mut tables: std::collections::BTreeMap<
            u64,
            (usize, crate::manifest::edit::AddedTable),
        > = Default::default();
        for e in edits {
            if let Some(l) = e.log_number {
                log_number = l;
            }
            if let Some(n) = e.next_file_number {
                next_file = n;
            }
            if let Some(s) = e.last_sequence {
                last_seq = s;
            }
            for (_, n) in e.deleted {
                tables.remove(&n);
            }
            for a in e.added {
                tables.insert(a.number, (a.level, a));
            }
        }
        for (_, (level, a)) in tables {
            let f = FileMeta::open(dir, a.number, a.smallest, a.largest, cache, counters)?;
            version.levels[level].push(f);
        }
        version.levels[0].sort_by_key(|f| std::cmp::Reverse(f.number));
        for files in &mut version.levels[1..] {
            files.sort_by(|a, b| ikey::compare(&a.smallest, &b.smallest));
        }
    }
    let names = list_dir(dir)?;
    for n in &names {
        if let Some(
            FileKind::Wal(x) | FileKind::Table(x) | FileKind::Manifest(x) | FileKind::TableTmp(x),
        ) = files::parse_name(n)
        {
            next_file = next_file.max(x + 1);
        }
    }
    let mut wals: Vec<u64> = names
        .iter()
        .filter_map(|n| match files::parse_name(n) {
            Some(FileKind::Wal(x)) if found.exists && x >= log_number => Some(x),
            _ => None,
        })
        .collect();
    wals.sort();
    let mem = Memtable::new(0);
    // (path, valid bytes) of a WAL whose tail did not replay.
    let mut torn: Option<(PathBuf, u64)> = None;
    for &w in &wals {
        let path = dir.join(files::wal_name(w));
        let r = crate::wal::reader::replay(&path, |first_seq, _count, each| {
            let mut seq = first_seq;
            each(&mut |e| {
                mem.insert(ikey::encode(e.key, seq, e.kind), e.value);
                seq += 1;
            });
        })?;
        if let Some((torn_path, valid_bytes)) = &torn {
            // A WAL is synced before the next one gets records, so only the last WAL
            // with records may have a torn tail: damage earlier is corruption, and
            // replaying past it would not be a prefix of the writes.
            if r.seq_max > 0 {
                return Err(LsmError::Corruption {
                    file: torn_path.clone(),
                    offset: *valid_bytes,
                    what: format!("damaged record followed by records in {}", path.display()),
                });
            }
        }
        if r.valid_bytes < r.file_bytes {
            torn = Some((path, r.valid_bytes));
        }
        last_seq = last_seq.max(r.seq_max);
    }

    // From here on the directory changes.
    if let Some((path, valid_bytes)) = &torn {
        // Cut the torn tail, so that even if this open fails below, the next one replays
        // the same records.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| LsmError::io(format!("opening {}", path.display()), e))?;
        f.set_len(*valid_bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| LsmError::io(format!("truncating {}", path.display()), e))?;
    }
    let next_file = Arc::new(AtomicU64::new(next_file));
    let alloc = || next_file.fetch_add(1, Ordering::SeqCst);
    if !mem.is_empty() {
        let number = alloc();
        let info = write_memtable(dir, options, number, &mem)?;
        add(&counters.flush_bytes_written, info.file_bytes);
        let f = FileMeta::open(dir, number, info.smallest, info.largest, cache, counters)?;
        version.levels[0].insert(0, f);
    }
    let wal_number = alloc();
    let wal = WalWriter::create(dir, wal_number)?;
    let manifest_number = alloc();
    let snap = VersionSet::snapshot_edit(
        &version,
        wal_number,
        last_seq,
        next_file.load(Ordering::SeqCst),
    );
    let manifest = ManifestWriter::create(dir, manifest_number, &snap)?;
    add(&counters.manifest_bytes_written, manifest.file_bytes);
    files::sync_dir(dir)?;
    set_current(dir, manifest_number)?;

    let live: std::collections::HashSet<u64> =
        version.levels.iter().flatten().map(|f| f.number).collect();
    for n in &names {
        let obsolete = match files::parse_name(n) {
            Some(FileKind::Wal(x)) => x < wal_number,
            Some(FileKind::Table(x)) => !live.contains(&x),
            Some(FileKind::Manifest(x)) => x != manifest_number,
            Some(FileKind::TableTmp(_)) | Some(FileKind::CurrentTmp) => true,
            _ => false,
        };
        if obsolete {
            let _ = std::fs::remove_file(dir.join(n));
        }
    }
    files::sync_dir(dir)?;
    let versions = VersionSet::new(
        dir.to_path_buf(),
        version,
        manifest,
        wal_number,
        last_seq,
        next_file.clone(),
        counters.clone(),
    );
    Ok(Recovered {
        versions,
        wal,
        wal_number,
        last_seq,
        next_file,
    })
}
