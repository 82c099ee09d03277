//! The store: opening and formatting, the public operations, and shutdown. The write
//! path's commit lives in `flush.rs`, garbage collection in `gc.rs`, scans in
//! `scan.rs`.

use crate::buffers::BufferPool;
use crate::error::{Error, Result};
use crate::keys;
use crate::layout::Layout;
use crate::location::{self, Location, Pointer};
use crate::options::Options;
use crate::readers::Readers;
use crate::record::{self, RecordKind, Slot};
use crate::scan::ScanIter;
use crate::stats::{self, Counters, Stats};
use crate::store::ValueStore;
use crate::superblock::Superblock;
use crate::write_cache::{CachedValue, WriteCache};
use hashkv_blockdev::{AlignedBuf, BlockDevice, IoOp};
use parking_lot::{Condvar, Mutex, RwLock};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest key accepted. Keys travel in the LSM tree (with a one-byte namespace prefix)
/// and in every value record's u16 length field.
pub const KEY_BYTES_MAX: usize = hashkv_lsm::KEY_BYTES_MAX - 1;

/// Where a record lies on the device: (aligned start, aligned length, the record's
/// offset within that span).
pub(crate) type RecordSpan = (u64, usize, usize);

/// An atomic group of writes.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    pub(crate) entries: Vec<(Vec<u8>, CachedValue)>,
}

impl WriteBatch {
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> &mut WriteBatch {
        self.entries.push((key.to_vec(), Some(value.to_vec())));
        self
    }

    pub fn delete(&mut self, key: &[u8]) -> &mut WriteBatch {
        self.entries.push((key.to_vec(), None));
        self
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Flush bookkeeping, guarded by the commit lock: only one flush or GC commit runs at
/// a time, which orders their index batches.
#[derive(Debug, Default)]
pub(crate) struct CommitState {
    /// Flushes numbered below this are committed to the value store and the index.
    pub committed_flushes: u64,
    /// Flushes numbered below this are durable.
    pub durable_flushes: u64,
}

pub(crate) struct Inner {
    pub options: Options,
    pub device: Arc<dyn BlockDevice>,
    pub layout: Layout,
    pub superblock: Superblock,
    pub lsm: hashkv_lsm::Db,
    pub store: ValueStore,
    pub cache: RwLock<WriteCache>,
    pub commit: Mutex<CommitState>,
    pub readers: Arc<Readers>,
    pub counters: Counters,
    pub next_seq: AtomicU64,
    /// Aligned buffers flushes encode into, reused.
    pub buffers: BufferPool,
    poison: Mutex<Option<String>>,
    /// One GC at a time; held for a whole GC. Lock order: gc_lock, then commit, then
    /// table.
    pub gc_lock: Mutex<()>,
    gc_wake: Condvar,
    gc_wake_lock: Mutex<()>,
    shutdown: AtomicBool,
    pub gc_low_water_segments: usize,
}

/// A hashkv store. `Send + Sync`: share it between threads with `Arc`.
///
/// # Durability
///
/// Each statement below is checked by `engine/tests/durability.rs` (kill -9 of a
/// writing process, and power cuts on the simulated device); FORMAT.md, "Durability",
/// says how the engine keeps it.
///
/// - `put`, `delete` and `write` return once the write is in the write cache: every
///   reader sees it at once, but it is not durable. Killing the process (kill -9)
///   loses every write still in the write cache (up to `Options::write_cache_bytes`
///   of them).
/// - A flush commits the write cache to the value store and the index. It runs when
///   the cache fills (the write that fills it returns after it), at every durability
///   call below, and for every write when `write_cache_bytes` is 0. A committed write
///   survives kill -9: the index's log hands every commit to the kernel, as RocksDB
///   does with `sync = false`. It does not survive a power cut or an operating-system
///   crash until it is made durable.
/// - `put_sync`, `delete_sync` and `write_sync` return once their write is durable: it
///   survives a power cut. Each also makes every write acknowledged before it durable.
///   With `Options::sync_writes` every write is such a sync write.
/// - `flush()` and `sync()` are the same call: when it returns, every write
///   acknowledged before it is durable.
/// - `close()` flushes before it returns; dropping a `Db` flushes too (printing, not
///   returning, an error).
/// - A write batch is atomic: after any crash it is wholly there or wholly absent. And
///   what survives a crash is always a prefix of the acknowledged writes: no write is
///   there without every write acknowledged before it.
/// - After a flush fails (a device or index error), the call that ran it returns the
///   error, and the store refuses every later write with `Error::Poisoned`: what was
///   durable before stays durable; writes acknowledged since the last durability call
///   returned may be lost. Reopen the store to see what survived.
pub struct Db {
    inner: Arc<Inner>,
    gc_thread: Option<JoinHandle<()>>,
    closed: bool,
}

impl Db {
    /// Starts a store whose index and value store are open: builds the shared state and
    /// spawns the GC thread. Formatting and opening live in `open.rs`.
    pub(crate) fn start(
        options: &Options,
        device: Arc<dyn BlockDevice>,
        superblock: Superblock,
        lsm: hashkv_lsm::Db,
        store: ValueStore,
        next_seq: u64,
        metadata_dir: &Path,
    ) -> Result<Db> {
        let layout = superblock.layout;
        let gc_low_water_segments = if options.gc_low_water_segments > 0 {
            options.gc_low_water_segments as usize
        } else {
            ((layout.log_segment_count as usize) / 20).max(4)
        };
        let inner = Arc::new(Inner {
            options: options.clone(),
            device,
            layout,
            superblock,
            lsm,
            store,
            cache: RwLock::new(WriteCache::default()),
            commit: Mutex::new(CommitState::default()),
            readers: Arc::new(Readers::default()),
            counters: Counters::default(),
            next_seq: AtomicU64::new(next_seq),
            buffers: BufferPool::new((2 * options.write_cache_bytes as usize).max(16 << 20)),
            poison: Mutex::new(None),
            gc_lock: Mutex::new(()),
            gc_wake: Condvar::new(),
            gc_wake_lock: Mutex::new(()),
            shutdown: AtomicBool::new(false),
            gc_low_water_segments,
        });
        let gc_inner = inner.clone();
        let gc_thread = std::thread::Builder::new()
            .name("hashkv-gc".into())
            .spawn(move || gc_inner.gc_loop())
            .map_err(|e| Error::MetadataDir {
                path: metadata_dir.to_path_buf(),
                source: e,
            })?;
        Ok(Db {
            inner,
            gc_thread: Some(gc_thread),
            closed: false,
        })
    }

    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.inner
            .write(vec![(key.to_vec(), Some(value.to_vec()))], false)
    }

    pub fn delete(&self, key: &[u8]) -> Result<()> {
        self.inner.write(vec![(key.to_vec(), None)], false)
    }

    /// Like `put`, and durable when it returns, with every write acknowledged before it
    /// (see "Durability" above). Concurrent sync writers share one flush.
    pub fn put_sync(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.inner
            .write(vec![(key.to_vec(), Some(value.to_vec()))], true)
    }

    /// Like `delete`, and durable when it returns, with every write acknowledged before
    /// it.
    pub fn delete_sync(&self, key: &[u8]) -> Result<()> {
        self.inner.write(vec![(key.to_vec(), None)], true)
    }

    /// Applies a batch atomically: after a crash it is wholly there or wholly absent.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        self.inner.write(batch.entries, false)
    }

    /// Like `write`, and durable when it returns; every write acknowledged before it
    /// is durable then too.
    pub fn write_sync(&self, batch: WriteBatch) -> Result<()> {
        self.inner.write(batch.entries, true)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }

    /// Keys in `range` in ascending order with their values. Values are read in
    /// batches of `scan_readahead_max`, each batch submitted to the device at once.
    pub fn scan<'a>(&'a self, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> Result<ScanIter<'a>> {
        ScanIter::new(&self.inner, lower, upper)
    }

    /// Writes the write cache to the value store and makes every earlier write durable:
    /// it survives a power cut once this returns. The same as `sync`.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush_all(true)
    }

    /// The same as `flush`: every earlier write is durable when it returns.
    pub fn sync(&self) -> Result<()> {
        self.inner.flush_all(true)
    }

    /// Runs one GC now: in the hashkv mode on the group with the most writes since its
    /// last GC, in the vlog mode on the log's tail. Returns whether it reclaimed any
    /// space; false when there was nothing to collect or everything it read was live
    /// (always false in the lsm mode, whose space the index's compactions reclaim).
    pub fn collect_garbage(&self) -> Result<bool> {
        Ok(self
            .inner
            .collect_garbage_once(None)?
            .is_some_and(|o| o.bytes_written < o.bytes_read))
    }

    /// Checks the whole store (what `hashkv fsck` runs): every record's checksum, that
    /// each record lies in its key's group, and that every index location names a
    /// record that reads back with its key and sequence number. Damage is reported in
    /// the result; device or index I/O errors are returned. Writers that need a flush
    /// wait while it runs.
    pub fn check(&self) -> Result<crate::CheckReport> {
        self.inner.check()
    }

    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// One line on how this mode organises the value space.
    pub fn describe_value_store(&self) -> String {
        self.inner.describe_value_store()
    }

    pub fn layout(&self) -> Layout {
        self.inner.layout
    }

    /// Flushes, stops the GC thread and closes the index.
    pub fn close(mut self) -> Result<()> {
        self.shutdown(true)
    }

    /// Stops without flushing, as a crash would (the write cache is lost). Returns the
    /// index's write-ahead log and the offset up to which it is known durable, so a
    /// power-cut test can drop the rest; the caller then crashes the device too.
    #[doc(hidden)]
    pub fn crash_for_test(mut self) -> (PathBuf, u64) {
        let _ = self.shutdown(false);
        let point = self.inner.lsm.wal_durable_point_for_test();
        drop(self);
        point
    }

    pub fn superblock(&self) -> Superblock {
        self.inner.superblock
    }

    fn shutdown(&mut self, flush: bool) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let flushed = if flush && self.inner.poisoned().is_none() {
            self.inner.flush_all(true)
        } else {
            Ok(())
        };
        self.inner.shutdown.store(true, Ordering::SeqCst);
        {
            let _l = self.inner.gc_wake_lock.lock();
            self.inner.gc_wake.notify_all();
        }
        if let Some(t) = self.gc_thread.take() {
            let _ = t.join();
        }
        flushed
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown(true) {
            eprintln!("hashkv: flush at drop failed: {e}");
        }
    }
}

impl Inner {
    pub fn poisoned(&self) -> Option<String> {
        self.poison.lock().clone()
    }

    /// Records the first fatal error; the store refuses writes from now on.
    pub fn poison_with(&self, e: &Error) {
        let mut p = self.poison.lock();
        if p.is_none() {
            *p = Some(e.to_string());
        }
    }

    pub fn check_writable(&self) -> Result<()> {
        match self.poisoned() {
            Some(first_error) => Err(Error::Poisoned { first_error }),
            None => Ok(()),
        }
    }

    /// The same limit in every mode, so that modes take the same workloads: a record
    /// fits in one log segment, and an inline value (with its location tag) in the
    /// index.
    pub fn value_bytes_max(&self, key_len: usize) -> usize {
        let record_max =
            self.layout.log_segment_bytes as usize - record::RECORD_HEADER_BYTES - key_len;
        record_max.min(hashkv_lsm::VALUE_BYTES_MAX - 1)
    }

    fn check_entry(&self, key: &[u8], value: Option<&Vec<u8>>) -> Result<()> {
        if key.is_empty() || key.len() > KEY_BYTES_MAX {
            return Err(Error::KeyTooLarge {
                len: key.len(),
                max: KEY_BYTES_MAX,
            });
        }
        if let Some(v) = value {
            let max = self.value_bytes_max(key.len());
            if v.len() > max {
                return Err(Error::ValueTooLarge { len: v.len(), max });
            }
        }
        Ok(())
    }

    fn write(&self, entries: Vec<(Vec<u8>, CachedValue)>, sync: bool) -> Result<()> {
        self.check_writable()?;
        for (k, v) in &entries {
            self.check_entry(k, v.as_ref())?;
        }
        let user_bytes: u64 = entries
            .iter()
            .map(|(k, v)| (k.len() + v.as_ref().map_or(0, |v| v.len())) as u64)
            .sum();
        let ops = entries.len() as u64;
        let sync = sync || self.options.sync_writes;
        let (flush_no, full, undo) = {
            let mut cache = self.cache.write();
            // Only a write that flushes can be refused, so only it pays for the record
            // of what it replaces.
            let undo = (sync || cache.may_fill(&entries, self.options.write_cache_bytes))
                .then(|| cache.undo_for(&entries));
            for (k, v) in entries {
                cache.insert(&k, v);
            }
            (
                cache.active_flush,
                cache.active_bytes >= self.options.write_cache_bytes,
                undo,
            )
        };
        Counters::add(&self.counters.user_bytes_written, user_bytes);
        Counters::add(&self.counters.user_ops, ops);
        if sync || full {
            if let Err(e) = self.flush_through(flush_no, sync) {
                if !matches!(e, Error::StoreFull { .. }) {
                    return Err(e);
                }
                // Decided under the commit lock, so no flush holds this write frozen: either
                // another writer's flush committed it meanwhile (then it took effect), or
                // it is taken back, so that it is neither read back nor committed later.
                // Writes acknowledged before it stay cached.
                let commit = self.commit.lock();
                if commit.committed_flushes > flush_no {
                    drop(commit);
                    return if sync {
                        self.flush_through(flush_no, true)
                    } else {
                        Ok(())
                    };
                }
                let mut cache = self.cache.write();
                debug_assert!(
                    cache.frozen.is_none(),
                    "no flush runs under the commit lock"
                );
                cache.take_back(undo.expect("a write that flushes records its undo"));
                drop(cache);
                drop(commit);
                self.counters
                    .user_bytes_written
                    .fetch_sub(user_bytes, Ordering::Relaxed);
                self.counters.user_ops.fetch_sub(ops, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(())
    }

    pub fn flush_all(&self, durable: bool) -> Result<()> {
        let n = self.cache.read().active_flush;
        self.flush_through(n, durable)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_entry(key, None)?;
        if let Some(v) = self.cache.read().get(key) {
            Counters::add(&self.counters.write_cache_hits, 1);
            return Ok(v);
        }
        let user_key = keys::user_key(key);
        // Retry once: a pointer read just as GC moved the value is stale, not corrupt.
        for attempt in 0..2 {
            let _reading = self.readers.enter();
            let Some(entry) = self.lsm.get(&user_key)? else {
                return Ok(None);
            };
            match location::decode(&entry)? {
                Location::Inline(v) => return Ok(Some(v)),
                Location::Pointer(p) => match self.read_value(&p, key) {
                    Ok(v) => return Ok(Some(v)),
                    Err(Error::Corruption { .. }) if attempt == 0 => continue,
                    Err(e) => return Err(e),
                },
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Byte range of the device to read for a record: aligned outward to blocks.
    pub fn record_span(&self, p: &Pointer) -> Result<RecordSpan> {
        let at = self.pointer_offset(p)?;
        let block = u64::from(self.layout.block_bytes);
        let start = at / block * block;
        let end = (at + u64::from(p.record_bytes)).div_ceil(block) * block;
        Ok((start, (end - start) as usize, (at - start) as usize))
    }

    /// Reads the records of many pointers with one submission (readahead): returns
    /// each record's span (as `record_span`) and the buffer it was read into.
    pub(crate) fn read_records<'p>(
        &self,
        pointers: impl Iterator<Item = &'p Pointer>,
    ) -> Result<Vec<(RecordSpan, AlignedBuf)>> {
        let spans: Vec<RecordSpan> = pointers
            .map(|p| self.record_span(p))
            .collect::<Result<_>>()?;
        let mut bufs: Vec<AlignedBuf> = spans.iter().map(|s| AlignedBuf::new(s.1)).collect();
        if !spans.is_empty() {
            let mut ops: Vec<IoOp<'_>> = bufs
                .iter_mut()
                .zip(&spans)
                .map(|(b, s)| IoOp::Read {
                    offset: s.0,
                    buf: &mut b[..s.1],
                })
                .collect();
            self.device.submit(&mut ops)?;
            let bytes: usize = spans.iter().map(|s| s.1).sum();
            Counters::add(&self.counters.read_device_bytes, bytes as u64);
        }
        Ok(spans.into_iter().zip(bufs).collect())
    }

    /// Checks the record read for `p` and returns its value: the checksum, the key and
    /// the sequence number must all match, or the read is an error.
    pub fn decode_value(buf: &[u8], p: &Pointer, key: &[u8]) -> Result<Vec<u8>> {
        let rec = match record::decode(buf)? {
            Slot::Record(r) => r,
            Slot::Padding => {
                return Err(Error::Corruption {
                    what: format!("index points at empty space: {p:?}"),
                })
            }
        };
        if rec.kind != RecordKind::Value || rec.key != key || rec.seq != p.seq {
            return Err(Error::Corruption {
                what: format!(
                    "record at {p:?} holds key {:?} seq {} kind {:?}, expected key {:?} seq {}",
                    String::from_utf8_lossy(rec.key),
                    rec.seq,
                    rec.kind,
                    String::from_utf8_lossy(key),
                    p.seq
                ),
            });
        }
        Ok(rec.value.to_vec())
    }

    fn read_value(&self, p: &Pointer, key: &[u8]) -> Result<Vec<u8>> {
        let (start, len, skip) = self.record_span(p)?;
        let mut buf = AlignedBuf::new(len);
        self.device.read_at(start, &mut buf[..len])?;
        Counters::add(&self.counters.read_device_bytes, len as u64);
        Inner::decode_value(&buf[skip..len], p, key)
    }

    /// Wakes the GC thread if free log segments ran low.
    pub fn maybe_wake_gc(&self) {
        if self.gc_wanted() {
            let _l = self.gc_wake_lock.lock();
            self.gc_wake.notify_one();
        }
    }

    fn gc_loop(&self) {
        loop {
            {
                let mut l = self.gc_wake_lock.lock();
                if self.shutdown.load(Ordering::SeqCst) {
                    return;
                }
                self.gc_wake.wait_for(&mut l, Duration::from_millis(50));
            }
            if self.shutdown.load(Ordering::SeqCst) || self.poisoned().is_some() {
                if self.shutdown.load(Ordering::SeqCst) {
                    return;
                }
                continue;
            }
            while self.gc_wanted() && !self.shutdown.load(Ordering::SeqCst) {
                match self.collect_garbage_once(None) {
                    // A log whose tail is all live would be copied round and round:
                    // leave it to flushes, which GC only when they must.
                    Ok(Some(o)) if !o.made_room && matches!(self.store, ValueStore::Log(_)) => {
                        break
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        if e.is_fatal() {
                            eprintln!("hashkv: background GC failed: {e}");
                        }
                        break;
                    }
                }
            }
        }
    }

    fn stats(&self) -> Stats {
        let c = &self.counters;
        let lsm = self.lsm.stats();
        let space = self.space();
        Stats {
            user_bytes_written: stats::load(&c.user_bytes_written),
            user_ops: stats::load(&c.user_ops),
            flush_device_bytes_written: stats::load(&c.flush_device_bytes_written),
            gc_device_bytes_written: stats::load(&c.gc_device_bytes_written),
            gc_device_bytes_read: stats::load(&c.gc_device_bytes_read),
            read_device_bytes: stats::load(&c.read_device_bytes),
            gc_runs: stats::load(&c.gc_runs),
            gc_records_kept: stats::load(&c.gc_records_kept),
            gc_bytes_reclaimed: stats::load(&c.gc_bytes_reclaimed),
            gc_index_lookups: stats::load(&c.gc_index_lookups),
            write_cache_hits: stats::load(&c.write_cache_hits),
            flushes: stats::load(&c.flushes),
            lsm_bytes_written: lsm.total_bytes_written(),
            devices: self.device.counters(),
            free_log_segments: space.free_units,
            log_segments: space.units,
            value_bytes_used: space.used_bytes,
        }
    }
}
