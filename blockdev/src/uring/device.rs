//! [`UringDevice`]: opening a file or block device onto a ring pool (its geometry,
//! arena and poisoning) and its [`BlockDevice`] interface.

use super::arena::{
    alloc_device_buffer, arena_bytes_allowed, register_arena, BufferArena, ARENA_BYTES_MIN,
};
use super::batch::RingBatch;
use super::pool::{new_uring, Ring, RingLease, RingPool};
use super::request::{Prepared, Request};
use super::{RINGS_LIMIT, RING_ENTRIES_MAX, RING_ENTRIES_MIN};
use crate::buf::AlignedBuf;
use crate::device::{check_op, BlockDevice, CounterSnapshot, Counters, Geometry, IoOp};
use crate::error::{DeviceError, Result};
use crate::file::{open_direct, DeviceKind, DirectFile, OpenOptions};
use crate::pending::{OwnedRead, PendingReads};
use io_uring::IoUring;
use parking_lot::Mutex;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// A block device or regular file driven through io_uring by the threads that submit
/// to it, each on a ring of the device's pool.
pub struct UringDevice {
    path: PathBuf,
    kind: DeviceKind,
    geometry: Geometry,
    /// Declared before `arena`: the rings, and their registrations of it, go first.
    pub(super) pool: RingPool,
    /// Rings for reads left in flight (`readahead.rs`); created on demand, up to
    /// `rings_max`, without the arena.
    pub(super) readahead_pool: RingPool,
    /// SQ entries asked for when a ring is created.
    pub(super) ring_entries_requested: u32,
    /// SQ entries the kernel gave the first ring (the same for every ring).
    ring_entries: u32,
    rings_max: usize,
    pub(super) counters: Counters,
    pub(super) fixed_ops: AtomicU64,
    poisoned: AtomicBool,
    first_error: Mutex<Option<Arc<DeviceError>>>,
    /// The arena, if registering it with the first ring succeeded.
    arena: Option<Arc<BufferArena>>,
    fixed_buffers_unavailable: Option<String>,
    /// Owns the descriptor (and the flock of a regular file).
    pub(super) file: File,
}

/// Where a device's registered arena comes from.
enum ArenaSource {
    None,
    Shared(Arc<BufferArena>),
    Private { len_bytes: usize },
}

impl UringDevice {
    /// Opens `path` (see [`crate::file::open_device`], which wraps this in an Arc).
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<UringDevice> {
        UringDevice::new(open_direct(path, opts.create_size_bytes)?, opts)
    }

    /// Sets up the ring pool for an opened file, with a private registered arena of
    /// `opts.fixed_buffer_arena_bytes` if `opts.use_fixed_buffers`, sized so that
    /// every one of `opts.rings_max` rings can register it under RLIMIT_MEMLOCK (see
    /// [`arena_bytes_allowed`]). Where the limit still refuses that size, the arena is
    /// halved until it fits (down to [`ARENA_BYTES_MIN`]), then fixed buffers are given
    /// up.
    pub fn new(direct: DirectFile, opts: &OpenOptions) -> Result<UringDevice> {
        let len_bytes = if opts.use_fixed_buffers {
            arena_bytes_allowed(opts.fixed_buffer_arena_bytes, opts.rings_max)
        } else {
            0
        };
        let source = if len_bytes > 0 {
            ArenaSource::Private { len_bytes }
        } else {
            ArenaSource::None
        };
        UringDevice::build(direct, opts, source)
    }

    /// As [`UringDevice::new`], registering the given arena (which several devices may
    /// share, so that one buffer is fixed on every member of a stripe) as it is.
    pub fn new_with_arena(
        direct: DirectFile,
        opts: &OpenOptions,
        arena: Option<Arc<BufferArena>>,
    ) -> Result<UringDevice> {
        let source = match arena {
            Some(a) => ArenaSource::Shared(a),
            None => ArenaSource::None,
        };
        UringDevice::build(direct, opts, source)
    }

    fn build(direct: DirectFile, opts: &OpenOptions, source: ArenaSource) -> Result<UringDevice> {
        check_ring_options(opts)?;
        // The first ring is made now, so that an unusable io_uring is an open error.
        let first = new_uring(opts.ring_entries).map_err(|source| DeviceError::Uring { source })?;
        let (arena, fixed_buffers_unavailable) = register_first_arena(&first, opts, source);
        let ring_entries = first.params().sq_entries();
        let first = Ring {
            uring: first,
            arena_registered: arena.is_some(),
        };
        Ok(UringDevice {
            path: direct.path,
            kind: direct.kind,
            geometry: direct.geometry,
            pool: RingPool::new(opts.rings_max, first),
            readahead_pool: RingPool::empty(opts.rings_max),
            ring_entries_requested: opts.ring_entries,
            ring_entries,
            rings_max: opts.rings_max,
            counters: Counters::default(),
            fixed_ops: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            first_error: Mutex::new(None),
            arena,
            fixed_buffers_unavailable,
            file: direct.file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// The SQ size of each ring, as the kernel gave it (a power of two >= the
    /// requested entries).
    pub fn ring_entries(&self) -> u32 {
        self.ring_entries
    }

    /// Requests one batch keeps in the kernel at once (the SQ size of its ring); the
    /// rest of a larger batch is issued as these complete.
    pub fn in_flight_max(&self) -> usize {
        self.ring_entries as usize
    }

    /// The most rings this device creates ([`OpenOptions::rings_max`]).
    pub fn rings_max(&self) -> usize {
        self.rings_max
    }

    /// Rings created so far: the most batches that were ever in flight at once (at
    /// least 1), up to [`UringDevice::rings_max`].
    pub fn rings_created(&self) -> usize {
        self.pool.created.load(Ordering::Relaxed)
    }

    /// Creates rings now, up to `rings` in all (and at most `rings_max`), so that the
    /// first burst of concurrent submitters does not pay for ring setup and arena
    /// registration in its latency. Returns the rings in existence afterwards, which
    /// is less than asked where the kernel refused more.
    pub fn create_rings(&self, rings: usize) -> usize {
        while self.rings_created() < rings && self.pool.reserve_growth() {
            match self.new_ring() {
                Ok(ring) => self.pool.put_back(ring),
                Err(_) => self.pool.growth_failed(),
            }
        }
        self.rings_created()
    }

    /// True if the buffer arena is registered with the rings (fixed-buffer ops).
    pub fn fixed_buffers_registered(&self) -> bool {
        self.arena.is_some()
    }

    /// Why fixed buffers are not in use, if they are not.
    pub fn fixed_buffers_unavailable(&self) -> Option<&str> {
        self.fixed_buffers_unavailable.as_deref()
    }

    /// Requests issued as READ_FIXED/WRITE_FIXED so far (a statistic; a continued
    /// request counts once per SQE).
    pub fn fixed_op_count(&self) -> u64 {
        self.fixed_ops.load(Ordering::Relaxed)
    }

    /// The registered arena, if any (to share it with other devices). Its size may be
    /// below the requested one where the memlock limit did not allow more.
    pub fn arena(&self) -> Option<&Arc<BufferArena>> {
        self.arena.as_ref()
    }

    pub(super) fn poison(&self, error: &DeviceError) {
        let mut first = self.first_error.lock();
        if first.is_none() {
            *first = Some(Arc::new(error.clone()));
        }
        self.poisoned.store(true, Ordering::Release);
    }

    pub(super) fn poisoned_error(&self) -> Option<DeviceError> {
        if !self.poisoned.load(Ordering::Acquire) {
            return None;
        }
        // `poison` records the error before it raises the flag.
        let cause = self.first_error.lock().clone()?;
        Some(DeviceError::refusal(cause))
    }

    /// A ring for a new batch in this pool, with the arena registered if the device
    /// has one and the kernel allows it (else that ring uses plain ops).
    fn new_ring(&self) -> io::Result<Ring> {
        let uring = new_uring(self.ring_entries_requested)?;
        let arena_registered = self
            .arena
            .as_ref()
            .is_some_and(|arena| register_arena(&uring, arena).is_ok());
        Ok(Ring {
            uring,
            arena_registered,
        })
    }

    /// A free ring, else a new one while the pool may grow.
    pub(super) fn try_checkout(&self) -> Option<RingLease<'_>> {
        let ring = match self.pool.free.pop() {
            Some(ring) => ring,
            None if self.pool.reserve_growth() => match self.new_ring() {
                Ok(ring) => ring,
                Err(_) => {
                    self.pool.growth_failed();
                    return None;
                }
            },
            None => return None,
        };
        Some(RingLease {
            pool: &self.pool,
            ring: Some(ring),
        })
    }

    /// As `try_checkout`, else waits for a ring to be put back. Callers must hold no
    /// other ring while they wait (see `run_across`).
    pub(super) fn checkout(&self) -> RingLease<'_> {
        self.try_checkout().unwrap_or_else(|| RingLease {
            pool: &self.pool,
            ring: Some(self.pool.wait_for_free()),
        })
    }

    /// Validates `ops` and turns them into requests; issues nothing.
    pub(super) fn prepare<'a>(&self, ops: &mut [IoOp<'a>]) -> Result<Prepared<'a>> {
        for op in ops.iter() {
            check_op(&self.geometry, op)?;
        }
        if ops.iter().any(|op| op.is_write()) {
            if let Some(e) = self.poisoned_error() {
                return Err(e);
            }
        }
        let arena = self.arena.as_deref();
        Ok(Prepared {
            requests: ops.iter_mut().map(|op| Request::new(op, arena)).collect(),
            _buffers: PhantomData,
        })
    }

    /// A flush as a batch; refused on a poisoned device.
    pub(super) fn prepare_flush(&self) -> Result<Prepared<'static>> {
        if let Some(e) = self.poisoned_error() {
            return Err(e);
        }
        Ok(Prepared {
            requests: vec![Request::flush()],
            _buffers: PhantomData,
        })
    }

    fn run(&self, prepared: Prepared<'_>) -> Result<()> {
        if prepared.requests.is_empty() {
            return Ok(());
        }
        RingBatch::new(self, self.checkout(), prepared).run()
    }
}

/// Refuses ring sizes and counts outside what this module builds.
fn check_ring_options(opts: &OpenOptions) -> Result<()> {
    if !(RING_ENTRIES_MIN..=RING_ENTRIES_MAX).contains(&opts.ring_entries) {
        return Err(DeviceError::Config {
            reason: format!(
                "ring_entries {} outside {RING_ENTRIES_MIN}..={RING_ENTRIES_MAX}",
                opts.ring_entries
            ),
        });
    }
    if !(1..=RINGS_LIMIT).contains(&opts.rings_max) {
        return Err(DeviceError::Config {
            reason: format!("rings_max {} outside 1..={RINGS_LIMIT}", opts.rings_max),
        });
    }
    Ok(())
}

/// The arena registered with a device's first ring, or why there is none. A private
/// arena that RLIMIT_MEMLOCK refuses is halved until it fits (down to
/// [`ARENA_BYTES_MIN`]); where registration fails otherwise, the device uses plain ops.
fn register_first_arena(
    first: &IoUring,
    opts: &OpenOptions,
    source: ArenaSource,
) -> (Option<Arc<BufferArena>>, Option<String>) {
    match source {
        ArenaSource::None => (
            None,
            Some(if opts.use_fixed_buffers {
                "RLIMIT_MEMLOCK leaves no room for a buffer arena on every ring".to_string()
            } else {
                "not requested".to_string()
            }),
        ),
        ArenaSource::Shared(arena) => match register_arena(first, &arena) {
            Ok(()) => (Some(arena), None),
            Err(e) => (
                None,
                Some(format!("registering the shared buffer arena failed: {e}")),
            ),
        },
        ArenaSource::Private { mut len_bytes } => loop {
            let arena = BufferArena::new(len_bytes);
            match register_arena(first, &arena) {
                Ok(()) => break (Some(arena), None),
                // RLIMIT_MEMLOCK (unprivileged users) too small for this size.
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::ENOMEM) | Some(libc::EPERM))
                        && len_bytes / 2 >= ARENA_BYTES_MIN =>
                {
                    len_bytes /= 2;
                }
                // Plain ops work everywhere, so fall back to them.
                Err(e) => {
                    break (
                        None,
                        Some(format!(
                            "registering a {len_bytes}-byte buffer arena failed: {e}"
                        )),
                    )
                }
            }
        },
    }
}

impl BlockDevice for UringDevice {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// From the registered arena if it has room (ops on it use fixed-buffer opcodes),
    /// else from the heap.
    fn alloc_buffer(&self, len_bytes: usize) -> AlignedBuf {
        alloc_device_buffer(self.arena.as_ref(), len_bytes)
    }

    fn submit(&self, ops: &mut [IoOp<'_>]) -> Result<()> {
        let prepared = self.prepare(ops)?;
        self.run(prepared)
    }

    fn flush(&self) -> Result<()> {
        let prepared = self.prepare_flush()?;
        self.run(prepared)
    }

    fn start_reads(&self, reads: Vec<OwnedRead>) -> Result<PendingReads<'_>> {
        PendingReads::start_with(self, reads, |ops| {
            let Some(ring) = self.try_readahead_ring() else {
                return Ok(None);
            };
            // SAFETY: `start_with` keeps the buffers of `ops` allocated and untouched
            // until the batch is waited for or dropped.
            Ok(Some(vec![unsafe { ring.start(ops) }?]))
        })
    }

    fn counters(&self) -> Vec<CounterSnapshot> {
        vec![self.counters.snapshot()]
    }

    fn poisoned(&self) -> Option<Arc<DeviceError>> {
        if !self.poisoned.load(Ordering::Acquire) {
            return None;
        }
        self.first_error.lock().clone()
    }
}

impl std::fmt::Debug for UringDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringDevice")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("geometry", &self.geometry)
            .field("ring_entries", &self.ring_entries)
            .field("rings_created", &self.rings_created())
            .field("rings_max", &self.rings_max)
            .field("fixed_buffers", &self.fixed_buffers_registered())
            .finish()
    }
}
