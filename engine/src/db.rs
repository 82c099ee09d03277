//! The store's public face ([`Db`], [`WriteBatch`]) and the state every part shares
//! ([`Inner`]). Where the work happens:
//! - `open.rs`: formatting and opening (superblock, metadata directory);
//! - `write.rs`: a write enters the write cache; `flush.rs`: the cache becomes a plan;
//!   `commit/`: the committer writes the plan (the only writer of the index);
//! - `read.rs`: gets; `scan.rs`: range scans with readahead;
//! - `gc/`: when and which GC runs; `store/`: each mode's value store and its GC;
//! - `check.rs`: what `fsck` verifies.

use crate::buffers::BufferPool;
use crate::cache_map::ChunkPool;
use crate::commit::Committer;
use crate::error::{Error, Result};
use crate::flusher::Flusher;
use crate::gc::GcDriver;
use crate::index::IndexReader;
use crate::layout::Layout;
use crate::memory::{Loan, MemoryUsage};
use crate::options::{Mode, Options};
use crate::readers::Readers;
use crate::scan::ScanIter;
use crate::stats::{self, Counters, Stats};
use crate::store::{GcCtx, IoCtx, ValueStore};
use crate::superblock::Superblock;
use crate::value_cache::ValueCache;
use crate::write_cache::{Entry, ValueIn, WriteCache};
use hashkv_blockdev::BlockDevice;
use parking_lot::RwLock;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Longest key accepted. Keys travel in the LSM tree (with a one-byte namespace prefix)
/// and in every value record's u16 length field.
pub const KEY_BYTES_MAX: usize = hashkv_lsm::KEY_BYTES_MAX - 1;

/// Main segments' worth of buffers the pool keeps for GC besides the flushes' share
/// (one GC runs at a time). A group GC reads its chain (up to the chain limit: two
/// shares of one main segment each), writes its survivors into fresh segments (up to
/// as much again), and meanwhile reads the next group's chain ahead (as much again,
/// `store/groups/prefetch.rs`); a vlog GC reads and rewrites at most a main segment's
/// worth. Six hold the largest group GC, so no GC faults fresh pages (with four, page
/// faults were 7% of the GC thread's time once it read ahead). The cost: up to six
/// main segments (384 MiB by default) stay allocated between GCs, so a store with a
/// memory budget keeps none (its GC allocates and drops them).
const GC_POOL_MAIN_SEGMENTS: usize = 6;

/// The first buffer a batch's keys and values take.
const BATCH_BYTES_INITIAL: usize = 4 << 10;

/// An atomic group of writes. Its keys, and the values `put` copies, go end to end
/// into one buffer: a batch allocates about once, not once per entry, and the write
/// cache copies them into its arena as it copies a single `put`'s, so that nothing
/// is left for the commit thread to free entry by entry.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    /// Every entry's key, and the values `put` copied.
    bytes: Vec<u8>,
    entries: Vec<BatchEntry>,
}

#[derive(Debug, Clone)]
struct BatchEntry {
    /// Where its key is in `WriteBatch::bytes`.
    key: std::ops::Range<usize>,
    value: BatchValue,
}

#[derive(Debug, Clone)]
enum BatchValue {
    Delete,
    /// A value `put` copied, in `WriteBatch::bytes`.
    Copied(std::ops::Range<usize>),
    /// A value given with `put_owned`, kept as it is.
    Owned(Vec<u8>),
}

impl WriteBatch {
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> &mut WriteBatch {
        let value = BatchValue::Copied(self.append(value));
        self.push(key, value)
    }

    /// Like `put`, taking the value's buffer: the batch keeps it as it is, and the
    /// write cache after it (see `Db::put_owned`).
    pub fn put_owned(&mut self, key: &[u8], value: Vec<u8>) -> &mut WriteBatch {
        self.push(key, BatchValue::Owned(value))
    }

    pub fn delete(&mut self, key: &[u8]) -> &mut WriteBatch {
        self.push(key, BatchValue::Delete)
    }

    fn push(&mut self, key: &[u8], value: BatchValue) -> &mut WriteBatch {
        let key = self.append(key);
        self.entries.push(BatchEntry { key, value });
        self
    }

    /// Appends `bytes` to the batch's buffer; where they are.
    fn append(&mut self, bytes: &[u8]) -> std::ops::Range<usize> {
        if self.bytes.capacity() == 0 {
            // Not 8, 16, 32...: a batch of a hundred small entries grew its buffer a
            // dozen times.
            self.bytes.reserve(BATCH_BYTES_INITIAL);
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        start..self.bytes.len()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the batch's entries into the store: copied values are borrowed from
    /// the batch's buffer (the cache copies them), owned ones kept as they are.
    fn apply(mut self, inner: &Inner, sync: bool) -> Result<()> {
        let bytes = &self.bytes;
        let mut entries: Vec<Entry<'_>> = self
            .entries
            .iter_mut()
            .map(|e| Entry {
                key: &bytes[e.key.clone()],
                value: match std::mem::replace(&mut e.value, BatchValue::Delete) {
                    BatchValue::Delete => None,
                    BatchValue::Copied(at) => Some(ValueIn::Borrowed(&bytes[at])),
                    BatchValue::Owned(v) => Some(ValueIn::Owned(v)),
                },
            })
            .collect();
        inner.write(&mut entries, sync)
    }
}

/// What every part of the engine shares. Each component owns its own state and lock:
/// the committer (commit lock, poison), the value store (its table or log), the write
/// cache, the GC driver. Lock order: GC lock, then commit lock, then the value store's
/// lock, then the write cache.
pub(crate) struct Inner {
    pub(crate) options: Options,
    pub(crate) layout: Layout,
    pub(crate) superblock: Superblock,
    pub(crate) device: Arc<dyn BlockDevice>,
    /// Granularity of value reads: the device's logical block (512 bytes on most
    /// NVMe and files), finer than the layout's write block (at least 4 KiB). A 4 KiB
    /// value with its record header then reads 4.5-5 KiB, not 8, and a 1 KiB value
    /// 1.5-2 KiB, not 4-8.
    pub(crate) read_block_bytes: u64,
    /// Reads of the index; writes go through `committer`.
    pub(crate) index: IndexReader,
    pub(crate) committer: Committer,
    pub(crate) store: Box<dyn ValueStore>,
    pub(crate) cache: RwLock<WriteCache>,
    /// The write cache's memory pool, which writers copy large values into before
    /// they take the cache's lock (`cache_map.rs`).
    pub(crate) cache_pool: Arc<ChunkPool>,
    /// Values of recent gets (`value_cache.rs`).
    pub(crate) values: ValueCache,
    pub(crate) readers: Arc<Readers>,
    pub(crate) counters: Arc<Counters>,
    /// Aligned buffers flushes and GC encode into, reused.
    pub(crate) buffers: Arc<BufferPool>,
    /// Aligned buffers value reads read into, reused (`read.rs`).
    pub(crate) read_buffers: BufferPool,
    /// Next sequence number a flush hands out.
    pub(crate) next_seq: AtomicU64,
    pub(crate) gc: GcDriver,
    pub(crate) flusher: Flusher,
    /// The write side's unused memory lent to the block cache while writes are idle.
    pub(crate) loan: Loan,
    /// `MemorySplit::flush_encodes_beside_writes`.
    pub(crate) flush_encodes_beside_writes: bool,
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
///   loses every write still in the write cache (about three times
///   `Options::write_cache_bytes` of them: the map waiting for its commit, the map
///   being placed and the next; at worst four times, when the flusher starts late).
/// - A flush commits the write cache to the value store and the index. It runs in a
///   background thread when the cache fills (the write that fills it returns at once),
///   in the writer's thread when the next cache fills before that flush has placed
///   and written its records (the writer waits until its own are), at every
///   durability call below, and for every write when `write_cache_bytes` is 0. Its
///   device flush and index batch run on the commit thread, while the next flush
///   writes (`commit/pipeline.rs`).
///   A committed write
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
/// - After a flush fails (a device or index error), a call that waited for its
///   commit (a durability call, or any write when `write_cache_bytes` is 0) returns
///   the error; a flush's device flush and index batch run on the commit thread, so
///   when only the background flusher or a writer waiting for room ran it, the next
///   write returns it as the first error of `Error::Poisoned`. The store refuses
///   every later write with `Error::Poisoned`: what was
///   durable before stays durable; writes acknowledged since the last durability call
///   returned may be lost, and `close()` returns `Error::Poisoned` too. Reopen the
///   store to see what survived.
pub struct Db {
    inner: Arc<Inner>,
    flusher_thread: Option<JoinHandle<()>>,
    /// Commits placed flushes (`commit/pipeline.rs`).
    commit_thread: Option<JoinHandle<()>>,
    gc_thread: Option<JoinHandle<()>>,
    closed: bool,
}

/// What `Db::start` needs from opening or formatting.
pub(crate) struct Opened {
    pub device: Arc<dyn BlockDevice>,
    pub superblock: Superblock,
    pub lsm: Arc<hashkv_lsm::Db>,
    pub store: Box<dyn ValueStore>,
    pub next_seq: u64,
}

impl Db {
    /// Starts a store whose index and value store are open: builds the shared state and
    /// spawns the GC thread. Formatting and opening live in `open.rs`.
    pub(crate) fn start(options: &Options, opened: Opened, metadata_dir: &Path) -> Result<Db> {
        let layout = opened.superblock.layout;
        let lsm = opened.lsm;
        let readers = Arc::new(Readers::default());
        let counters = Arc::new(Counters::default());
        // The budget's split (or the individual options without a budget) sizes the
        // write cache, the buffer pool and the value cache; the index took its share
        // at open (`open_lsm`).
        let split = options.memory_split();
        let options = &options
            .clone()
            .with_write_cache_bytes(split.write_cache_bytes);
        let gc_pool_bytes = if options.memory_budget_bytes == 0 {
            GC_POOL_MAIN_SEGMENTS * layout.main_segment_bytes as usize
        } else {
            0
        };
        let buffers = Arc::new(
            BufferPool::new(
                split.buffer_pool_bytes as usize + gc_pool_bytes,
                crate::buffers::WRITE_BUFFER_BYTES_MIN,
            )
            .allocating_from(opened.device.clone()),
        );
        let block = layout.block_bytes as usize;
        let write_piece_bytes =
            (options.batch_write_threshold_bytes as usize).max(block) / block * block;
        let committer = Committer::new(
            lsm.clone(),
            opened.device.clone(),
            readers.clone(),
            counters.clone(),
            buffers.clone(),
            write_piece_bytes,
        );
        let cache_pool = ChunkPool::for_cache(options.write_cache_bytes, options.mode != Mode::Lsm);
        let read_buffers = BufferPool::new(
            crate::read::READ_BUFFER_POOL_BYTES,
            crate::buffers::READ_BUFFER_BYTES_MIN,
        )
        .allocating_from(opened.device.clone());
        let inner = Arc::new(Inner {
            options: options.clone(),
            layout,
            superblock: opened.superblock,
            read_block_bytes: crate::read::read_block_bytes(opened.device.as_ref(), &layout),
            device: opened.device,
            index: IndexReader::new(lsm),
            committer,
            store: opened.store,
            cache: RwLock::new(WriteCache::with_pool(cache_pool.clone())),
            cache_pool,
            values: ValueCache::new(split.value_cache_bytes),
            readers,
            counters,
            buffers,
            read_buffers,
            next_seq: AtomicU64::new(opened.next_seq),
            gc: GcDriver::new(options, &layout),
            flusher: Flusher::default(),
            loan: Loan::new(&split, options.memory_budget_bytes > 0),
            flush_encodes_beside_writes: split.flush_encodes_beside_writes,
        });
        let spawn_failed = |e| Error::MetadataDir {
            path: metadata_dir.to_path_buf(),
            source: e,
        };
        let commit_inner = inner.clone();
        let commit_thread = std::thread::Builder::new()
            .name("hashkv-commit".into())
            .spawn(move || commit_inner.commit_loop())
            .map_err(spawn_failed)?;
        let flusher_inner = inner.clone();
        let flusher_thread = std::thread::Builder::new()
            .name("hashkv-flush".into())
            .spawn(move || flusher_inner.flusher_loop())
            .map_err(|e| {
                inner.committer.pipeline.stop();
                spawn_failed(e)
            })?;
        let gc_inner = inner.clone();
        let gc_thread = std::thread::Builder::new()
            .name("hashkv-gc".into())
            .spawn(move || gc_inner.gc_loop())
            .map_err(|e| {
                inner.flusher.stop();
                inner.committer.pipeline.stop();
                spawn_failed(e)
            })?;
        Ok(Db {
            inner,
            flusher_thread: Some(flusher_thread),
            commit_thread: Some(commit_thread),
            gc_thread: Some(gc_thread),
            closed: false,
        })
    }

    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.inner
            .write(&mut [Entry::put(key, ValueIn::Borrowed(value))], false)
    }

    /// Like `put`, taking the value's buffer: the write cache keeps it as it is, so the
    /// value is copied once on its way to the device (into the aligned write buffer at
    /// flush), where `put` copies it into the cache first. Small values that stay
    /// inline in the index are copied into the index's batch as with `put`.
    pub fn put_owned(&self, key: &[u8], value: Vec<u8>) -> Result<()> {
        self.inner
            .write(&mut [Entry::put(key, ValueIn::Owned(value))], false)
    }

    pub fn delete(&self, key: &[u8]) -> Result<()> {
        self.inner.write(&mut [Entry::delete(key)], false)
    }

    /// Like `put`, and durable when it returns, with every write acknowledged before it
    /// (see "Durability" above). Concurrent sync writers share one flush.
    pub fn put_sync(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.inner
            .write(&mut [Entry::put(key, ValueIn::Borrowed(value))], true)
    }

    /// Like `delete`, and durable when it returns, with every write acknowledged before
    /// it.
    pub fn delete_sync(&self, key: &[u8]) -> Result<()> {
        self.inner.write(&mut [Entry::delete(key)], true)
    }

    /// Applies a batch atomically: after a crash it is wholly there or wholly absent.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        batch.apply(&self.inner, false)
    }

    /// Like `write`, and durable when it returns; every write acknowledged before it
    /// is durable then too.
    pub fn write_sync(&self, batch: WriteBatch) -> Result<()> {
        batch.apply(&self.inner, true)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }

    /// The values of `keys`, in the order of `keys` (`None` where a key has no value;
    /// a key given twice gets its value twice). All keys are looked up in the index
    /// first, then all their values are read with one device submission, so the reads
    /// proceed in parallel. Longer lists are done [`crate::MULTI_GET_CHUNK_KEYS`] keys
    /// at a time, to bound the memory one call holds. Each value is what `get` would return at some
    /// instant during the call. A bad key fails the call before anything is read.
    pub fn multi_get(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        self.inner.multi_get(keys)
    }

    /// Keys in `range` in ascending order with their values. Values are read in
    /// batches of `scan_readahead_max`, each batch submitted to the device at once,
    /// and the next batch's reads are submitted before the caller receives the values
    /// of the current one, so the device reads while the caller consumes. A caller
    /// that wants only the first n pairs says so with [`ScanIter::limit`], and no value
    /// beyond them is read.
    pub fn scan<'a>(&'a self, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> Result<ScanIter<'a>> {
        ScanIter::new(&self.inner, lower, upper)
    }

    /// Writes the write cache to the value store and makes every earlier write durable:
    /// it survives a power cut once this returns. The same as `sync`.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush_all()
    }

    /// The same as `flush`: every earlier write is durable when it returns.
    pub fn sync(&self) -> Result<()> {
        self.inner.flush_all()
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

    /// Runs one GC now: in the hashkv mode of the group `key` belongs to, whatever the
    /// victim choice would pick (the other modes' stores have no groups and collect as
    /// `collect_garbage` does); false when there was nothing to collect.
    #[doc(hidden)]
    pub fn collect_group_of(&self, key: &[u8]) -> Result<bool> {
        let group = crate::store::groups::group_of(key, self.inner.layout.group_count);
        Ok(self.inner.collect_garbage_once(Some(group))?.is_some())
    }

    /// Runs one GC of the cold data log's fullest-of-garbage segment now (hashkv mode),
    /// whatever its cost-benefit; false when there was none to collect.
    #[doc(hidden)]
    pub fn collect_cold_garbage(&self, segment: Option<u32>) -> Result<bool> {
        let _one_gc = self.inner.gc.exclusive();
        self.inner.take_back_loan();
        let ctx = self.inner.gc_ctx();
        Ok(self.inner.store.collect_cold(&ctx, segment)?.is_some())
    }

    /// The region and unit (segment or chunk) `key`'s value lies in, per the index.
    #[doc(hidden)]
    pub fn value_unit(&self, key: &[u8]) -> Result<Option<(&'static str, u32)>> {
        let Some(entry) = self.inner.index.get(&crate::keys::user_key(key))? else {
            return Ok(None);
        };
        Ok(match crate::location::decode(&entry)? {
            crate::location::Location::Inline(_) => None,
            crate::location::Location::Pointer(p) => {
                Some((self.inner.store.region_name(&p), p.unit))
            }
        })
    }

    /// Where `key`'s value lies: "inline" (in the index), "group", "cold log" or
    /// "value log"; `None` for a key with no value. Reads the index, not the write
    /// cache: flush first to see a recent write.
    #[doc(hidden)]
    pub fn value_region(&self, key: &[u8]) -> Result<Option<&'static str>> {
        let Some(entry) = self.inner.index.get(&crate::keys::user_key(key))? else {
            return Ok(None);
        };
        Ok(Some(match crate::location::decode(&entry)? {
            crate::location::Location::Inline(_) => "inline",
            crate::location::Location::Pointer(p) => self.inner.store.region_name(&p),
        }))
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

    /// What the engine holds in memory by use: what `Options::memory_budget_bytes`
    /// bounds (README, "Memory").
    pub fn memory_usage(&self) -> MemoryUsage {
        let i = &self.inner;
        MemoryUsage {
            index: i.index.memory_usage(),
            write_cache_bytes: i.cache.read().held_bytes(),
            buffer_pool_bytes: i.buffers.held_bytes() as u64,
            read_buffer_bytes: i.read_buffers.held_bytes() as u64,
            value_cache_bytes: i.values.held_bytes(),
            block_cache_loan_bytes: i.loan.lent_bytes(),
        }
    }

    /// Per group (hashkv mode; empty otherwise): bytes in its chain and bytes of its
    /// cold values in the cold data log.
    pub fn group_usage(&self) -> Vec<crate::GroupUsage> {
        self.inner.store.group_usage()
    }

    /// One line on how this mode organises the value space.
    pub fn describe_value_store(&self) -> String {
        self.inner.store.describe()
    }

    pub fn layout(&self) -> Layout {
        self.inner.layout
    }

    /// Bytes of values the value store can hold: the layout's value space, or less
    /// where the hashkv mode's chain limits bound it (a reserve past about one half,
    /// hot/cold off). `StoreFull` reports the same figure.
    pub fn value_capacity_bytes(&self) -> u64 {
        self.inner.store.space().capacity_bytes
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
        let point = self.inner.index.wal_durable_point_for_test();
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
        // The last flush runs here, in this thread, so that its error is returned.
        self.inner.flusher.stop();
        if let Some(t) = self.flusher_thread.take() {
            let _ = t.join();
        }
        let flushed = if !flush {
            Ok(())
        } else if self.inner.committer.first_error().is_none() {
            self.inner.flush_all()
        } else {
            // A poisoned store cannot flush: what its write cache holds is lost, and
            // close says so rather than return Ok.
            self.inner.committer.check_writable()
        };
        self.inner.gc.stop();
        if let Some(t) = self.gc_thread.take() {
            let _ = t.join();
        }
        // Last: GC waits for the commit thread to commit its plans. The thread commits
        // what is queued before it returns, unless this is a crash.
        if flush {
            self.inner.committer.pipeline.stop();
        } else {
            self.inner.committer.pipeline.abandon();
        }
        if let Some(t) = self.commit_thread.take() {
            let _ = t.join();
        }
        // A flush's writes run on a thread of their own; a commit that was abandoned or
        // refused (a poisoned store) did not wait for them. Nothing may write to the
        // device once this returns (a test's crash reopens it at once).
        self.inner.committer.wait_for_flush_writes();
        if !flush {
            return flushed;
        }
        // The index's failures in its own background work (a flush or compaction that
        // was running) show only here.
        flushed.and(self.inner.index.close())
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
    /// What the value store's I/O sees.
    pub(crate) fn io(&self) -> IoCtx<'_> {
        IoCtx {
            device: self.device.as_ref(),
            buffers: &self.buffers,
            readers: &self.readers,
            counters: &self.counters,
            value_align_bytes: self.read_block_bytes,
        }
    }

    /// What a GC sees.
    pub(crate) fn gc_ctx(&self) -> GcCtx<'_> {
        GcCtx {
            io: self.io(),
            committer: &self.committer,
            index: self.index.for_gc(&self.counters.gc_index_lookups),
            now_seq: self.next_seq.load(std::sync::atomic::Ordering::SeqCst),
            low_water_segments: self.gc.low_water_segments(),
        }
    }

    fn stats(&self) -> Stats {
        let c = &self.counters;
        let lsm = self.index.stats();
        let space = self.store.space();
        Stats {
            user_bytes_written: stats::load(&c.user_bytes_written),
            user_ops: stats::load(&c.user_ops),
            flush_device_bytes_written: stats::load(&c.flush_device_bytes_written),
            flush_value_bytes_spliced: stats::load(&c.flush_value_bytes_spliced),
            gc_device_bytes_written: stats::load(&c.gc_device_bytes_written),
            gc_device_bytes_read: stats::load(&c.gc_device_bytes_read),
            read_device_bytes: stats::load(&c.read_device_bytes),
            gc_runs: stats::load(&c.gc_runs),
            gc_runs_in_flush: stats::load(&c.gc_runs_in_flush),
            gc_records_kept: stats::load(&c.gc_records_kept),
            gc_bytes_reclaimed: stats::load(&c.gc_bytes_reclaimed),
            gc_index_lookups: stats::load(&c.gc_index_lookups),
            gc_prefetch_bytes_used: stats::load(&c.gc_prefetch_bytes_used),
            gc_prefetch_bytes_unused: stats::load(&c.gc_prefetch_bytes_unused),
            demotions: stats::load(&c.demotions),
            promotions: stats::load(&c.promotions),
            cold_gc_runs: stats::load(&c.cold_gc_runs),
            cold_log_bytes: space.cold_bytes,
            cold_live_bytes: space.cold_live_bytes,
            write_cache_hits: stats::load(&c.write_cache_hits),
            value_cache_hits: stats::load(&c.value_cache_hits),
            flushes: stats::load(&c.flushes),
            lsm_bytes_written: lsm.total_bytes_written(),
            devices: self.device.counters(),
            free_log_segments: space.free_units,
            log_segments: space.units,
            value_bytes_used: space.used_bytes,
            buffer_pool_allocations: self.buffers.allocations(),
            read_buffer_allocations: self.read_buffers.allocations(),
            paced_writes: stats::load(&self.gc.pacer.paced_writes),
            paced_micros: stats::load(&self.gc.pacer.paced_micros),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Db, WriteBatch};
    use crate::Options;
    use hashkv_blockdev::sim::{SimConfig, SimDevice};
    use std::sync::Arc;

    /// An owned value lands in the write cache as the very buffer the caller gave.
    #[test]
    fn put_owned_moves_the_callers_buffer_into_the_write_cache() {
        let dev = Arc::new(SimDevice::new(SimConfig::new(8 << 20, 1)).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let options = Options::default()
            .with_main_segment_bytes(256 << 10)
            .with_log_segment_bytes(16 << 10)
            .with_write_cache_bytes(1 << 20);
        let db = Db::format_device(dev, dir.path(), &options).unwrap();
        let cached_at = |key: &[u8]| {
            let cache = db.inner.cache.read();
            let key = crate::key_hash::HashedKey::new(key);
            let value = cache.active.get(&key).unwrap().unwrap();
            value.as_ptr()
        };
        let value = vec![5u8; 1000];
        let at = value.as_ptr();
        db.put_owned(b"k", value).unwrap();
        assert_eq!(cached_at(b"k"), at);
        let (one, two) = (vec![1u8; 300], vec![2u8; 300]);
        let (one_at, two_at) = (one.as_ptr(), two.as_ptr());
        let mut batch = WriteBatch::new();
        batch.put_owned(b"one", one).put_owned(b"two", two);
        db.write(batch).unwrap();
        assert_eq!((cached_at(b"one"), cached_at(b"two")), (one_at, two_at));
        // A borrowed value is copied, as it must be.
        let borrowed = vec![3u8; 1000];
        db.put(b"b", &borrowed).unwrap();
        assert_ne!(cached_at(b"b"), borrowed.as_ptr());
        db.close().unwrap();
    }
}
