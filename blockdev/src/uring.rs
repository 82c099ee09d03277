//! io_uring I/O driven by the threads that submit it.
//!
//! Each device keeps a pool of rings. A caller's `submit` checks out a free ring,
//! pushes one SQE per op of its batch, submits them and waits for their completions
//! with one io_uring_enter, and reaps its own CQEs on its own thread: each CQE either
//! continues its request (short read/write, EINTR/EAGAIN) or finishes it. When every
//! request of the batch has finished, the ring goes back to the pool. Nothing sits
//! between the caller and the kernel: no queue, no eventfd, no thread hand-off, and as
//! many threads as submit at once drive the device in parallel, each on its own ring.
//!
//! Rings are created on demand: a caller that finds none free creates one, up to
//! [`OpenOptions::rings_max`]; beyond that it waits until another caller gives one
//! back. The first ring is created at open, so that a device that opens can do I/O.
//!
//! A batch larger than its ring keeps the ring full: as completions arrive, the rest
//! of the batch (and any continuations) take the freed slots.
//!
//! Buffers are borrowed from the caller: a batch neither gives its ring back nor
//! returns (not on an error path, not while unwinding) before every CQE it asked for
//! has been reaped, so the kernel never touches a buffer after the borrow ends and the
//! next user of the ring never sees a stale completion.
//!
//! [`submit_across`] and [`flush_across`] put one batch on each of several devices from
//! one thread: a ring of every device is checked out and submitted to without waiting,
//! then each is waited for in turn, so all the devices work at once. Such a caller
//! never waits for a ring while it holds another (a device whose pool is exhausted is
//! done in a later round), so two of them cannot deadlock on each other's rings.
//!
//! Buffers allocated with [`UringDevice::alloc_buffer`] come from an arena registered
//! with every ring of the pool (fixed buffers); ops on them use READ_FIXED/WRITE_FIXED,
//! which saves the kernel pinning the pages on every request. Where registration is
//! refused (RLIMIT_MEMLOCK for unprivileged users, charged once per ring) that ring
//! uses plain ops, and where the first ring refuses it everything does.
//!
//! Poisoning belongs to the device, not to a ring: after an I/O error on any ring every
//! later write and flush of the device is refused.

// `x % n != 0` rather than `is_multiple_of`: the workspace MSRV (1.80) predates it.
#![allow(clippy::manual_is_multiple_of)]

use crate::buf::{AlignedBuf, BUFFER_ALIGN_BYTES};
use crate::device::{check_op, BlockDevice, CounterSnapshot, Counters, Geometry, IoOp};
use crate::error::{DeviceError, Result};
use crate::file::{open_direct, DeviceKind, DirectFile, OpenOptions};
use crossbeam_queue::ArrayQueue;
use io_uring::{opcode, squeue, types, IoUring};
use parking_lot::{Condvar, Mutex};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// The smallest ring we build: one request in flight at a time.
pub const RING_ENTRIES_MIN: u32 = 1;
/// The largest ring we build. Deeper queues stop paying off on NVMe (the device's own
/// queues are typically 1024 deep) and cost pinned kernel memory per ring.
pub const RING_ENTRIES_MAX: u32 = 4096;
/// The most rings one device may keep ([`OpenOptions::rings_max`] is checked against
/// it). A ring is a descriptor and about 100 bytes of kernel memory per entry, and a
/// ring only pays off for a thread that submits while every other ring is in use: far
/// more rings than threads that can be in `submit` at once is a configuration mistake.
pub const RINGS_LIMIT: usize = 1024;
/// Bytes one SQE moves at most. Linux caps a single read/write at about 2 GiB
/// (MAX_RW_COUNT) and an SQE's length is 32 bits; larger requests are issued in pieces
/// of this size through the short-I/O continuation. A multiple of every block size.
pub const SQE_BYTES_MAX: u64 = 1 << 30;
/// iovecs one WRITEV SQE carries at most (the kernel's UIO_MAXIOV); longer vectors
/// continue in the next SQE like a short write.
pub const SQE_IOVECS_MAX: usize = 1024;
/// How often one request is re-issued after EINTR/EAGAIN without progress before the
/// error is returned: the kernel normally retries these itself, so a request that
/// keeps failing this way is stuck, not unlucky.
pub const RETRIES_MAX: u32 = 64;
/// Pause after an io_uring_enter failure that is not transient, before trying again:
/// requests may still be in the kernel, so the caller must go on reaping, but a
/// persistent failure must not spin a CPU.
const ENTER_FAILURE_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

const _: () = assert!(SQE_BYTES_MAX <= u32::MAX as u64);
const _: () = assert!(SQE_BYTES_MAX % BUFFER_ALIGN_BYTES as u64 == 0);
const _: () = assert!(RING_ENTRIES_MIN >= 1 && RING_ENTRIES_MIN <= RING_ENTRIES_MAX);
// A request's index in its batch is its SQE's user_data; a batch holds at most one
// request per op of a slice, so usize fits.
const _: () = assert!(std::mem::size_of::<usize>() <= std::mem::size_of::<u64>());

/// Index of the arena in a ring's registered buffer table (we register one).
const ARENA_BUF_INDEX: u16 = 0;

// ---------------------------------------------------------------------------------
// Registered buffer arena
// ---------------------------------------------------------------------------------

/// Pages handed out by the arena.
const ARENA_PAGE_BYTES: usize = BUFFER_ALIGN_BYTES;

/// A block of memory that can be registered with one or more rings, carved into
/// page-granular buffers. Allocation is first-fit over a page bitmap behind a mutex:
/// buffers are allocated rarely (per flush or GC batch), not per record.
pub struct BufferArena {
    ptr: NonNull<u8>,
    len_bytes: usize,
    used_pages: Mutex<Vec<bool>>,
}

// SAFETY: the arena's memory is only read or written through `DeviceBuf`s, each of
// which owns a disjoint page range handed out under the `used_pages` mutex; the
// pointer itself is never written after construction.
unsafe impl Send for BufferArena {}
// SAFETY: as above; shared access to the arena only allocates/frees under the mutex.
unsafe impl Sync for BufferArena {}

impl BufferArena {
    /// `len_bytes` is rounded up to whole pages (at least one).
    pub fn new(len_bytes: usize) -> Arc<BufferArena> {
        let pages = len_bytes.div_ceil(ARENA_PAGE_BYTES).max(1);
        let len_bytes = pages
            .checked_mul(ARENA_PAGE_BYTES)
            .expect("arena size overflows usize");
        let layout = Layout::from_size_align(len_bytes, ARENA_PAGE_BYTES).expect("arena layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Arc::new(BufferArena {
            ptr,
            len_bytes,
            used_pages: Mutex::new(vec![false; pages]),
        })
    }

    pub fn len_bytes(&self) -> usize {
        self.len_bytes
    }

    fn iovec(&self) -> libc::iovec {
        libc::iovec {
            iov_base: self.ptr.as_ptr().cast(),
            iov_len: self.len_bytes,
        }
    }

    /// True if `[addr, addr + len)` lies inside the arena.
    fn contains(&self, addr: usize, len: usize) -> bool {
        let base = self.ptr.as_ptr() as usize;
        addr >= base
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= base + self.len_bytes)
    }

    /// A zeroed buffer of `len_bytes` rounded up to pages, or `None` if the arena has
    /// no free run that long.
    fn try_alloc(self: &Arc<Self>, len_bytes: usize) -> Option<DeviceBuf> {
        let pages = len_bytes.div_ceil(ARENA_PAGE_BYTES).max(1);
        let first_page = {
            let mut used = self.used_pages.lock();
            let mut run_start = 0;
            let mut found = None;
            for (i, &u) in used.iter().enumerate() {
                if u {
                    run_start = i + 1;
                } else if i + 1 - run_start == pages {
                    found = Some(run_start);
                    break;
                }
            }
            let first = found?;
            used[first..first + pages]
                .iter_mut()
                .for_each(|u| *u = true);
            first
        };
        let mut buf = DeviceBuf {
            inner: BufInner::Arena {
                arena: Arc::clone(self),
                first_page,
                pages,
            },
        };
        // Earlier users' bytes must not leak into this buffer's writes.
        buf.fill(0);
        Some(buf)
    }
}

impl Drop for BufferArena {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.len_bytes, ARENA_PAGE_BYTES).expect("layout");
        // SAFETY: allocated in `new` with exactly this layout. Every DeviceBuf holds an
        // Arc to the arena, and every ring that registered it belongs to a device that
        // holds one too and drops its rings first (no ring is checked out then: callers
        // borrow the device), so nothing uses the memory any more. Pages the kernel
        // pinned for a registration stay pinned by the kernel's own reference until it
        // has torn the ring down, independently of this allocation.
        unsafe { dealloc(self.ptr.as_ptr(), layout) }
    }
}

impl std::fmt::Debug for BufferArena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BufferArena({} bytes)", self.len_bytes)
    }
}

/// A buffer for device I/O: from a registered arena when one has room, else from the
/// heap. Aligned to [`BUFFER_ALIGN_BYTES`], zeroed, length rounded up to that.
pub struct DeviceBuf {
    inner: BufInner,
}

enum BufInner {
    Arena {
        arena: Arc<BufferArena>,
        first_page: usize,
        pages: usize,
    },
    Heap(AlignedBuf),
}

impl DeviceBuf {
    /// True if the buffer lies in a registered arena.
    pub fn is_from_arena(&self) -> bool {
        matches!(self.inner, BufInner::Arena { .. })
    }
}

impl Deref for DeviceBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.inner {
            BufInner::Arena {
                arena,
                first_page,
                pages,
            } => {
                // SAFETY: the page range [first_page, first_page + pages) lies inside
                // the arena (checked at allocation), is initialised (zeroed) memory and
                // is owned by this buffer alone until it is dropped.
                unsafe {
                    std::slice::from_raw_parts(
                        arena.ptr.as_ptr().add(first_page * ARENA_PAGE_BYTES),
                        pages * ARENA_PAGE_BYTES,
                    )
                }
            }
            BufInner::Heap(b) => b,
        }
    }
}

impl DerefMut for DeviceBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.inner {
            BufInner::Arena {
                arena,
                first_page,
                pages,
            } => {
                // SAFETY: as in deref; &mut self makes the access exclusive.
                unsafe {
                    std::slice::from_raw_parts_mut(
                        arena.ptr.as_ptr().add(*first_page * ARENA_PAGE_BYTES),
                        *pages * ARENA_PAGE_BYTES,
                    )
                }
            }
            BufInner::Heap(b) => b,
        }
    }
}

impl Drop for DeviceBuf {
    fn drop(&mut self) {
        if let BufInner::Arena {
            arena,
            first_page,
            pages,
        } = &self.inner
        {
            let mut used = arena.used_pages.lock();
            used[*first_page..*first_page + *pages]
                .iter_mut()
                .for_each(|u| *u = false);
        }
    }
}

impl std::fmt::Debug for DeviceBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceBuf({} bytes, {})",
            self.len(),
            if self.is_from_arena() {
                "arena"
            } else {
                "heap"
            }
        )
    }
}

/// Allocates from `arena` if given and it has room, else from the heap.
pub fn alloc_device_buffer(arena: Option<&Arc<BufferArena>>, len_bytes: usize) -> DeviceBuf {
    arena
        .and_then(|a| a.try_alloc(len_bytes))
        .unwrap_or_else(|| DeviceBuf {
            inner: BufInner::Heap(AlignedBuf::new(len_bytes)),
        })
}

// ---------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------

enum RequestKind {
    /// `in_arena`: the buffer lies in the device's registered arena, so a ring that has
    /// the arena registered issues it as a fixed-buffer op.
    Read {
        ptr: *mut u8,
        in_arena: bool,
    },
    Write {
        ptr: *const u8,
        in_arena: bool,
    },
    /// `iovecs[first..]` is what remains; `iovecs[first]` is trimmed in place after a
    /// short write.
    Writev {
        iovecs: Vec<libc::iovec>,
        first: usize,
    },
    Flush,
}

/// One op of a caller's batch while it is being issued. Its index in the batch is its
/// SQE's user_data. The raw pointers point into buffers the caller lends the batch (see
/// [`RingBatch`]); they are only handed to the kernel, never dereferenced here.
struct Request {
    kind: RequestKind,
    op_name: &'static str,
    start_offset: u64,
    total_bytes: u64,
    done_bytes: u64,
    rw_flags: i32,
    retries: u32,
}

impl Request {
    fn new(op: &mut IoOp<'_>, arena: Option<&BufferArena>) -> Request {
        let (op_name, start_offset, total_bytes) = (op.name(), op.offset(), op.len());
        let in_arena = |addr: usize, len: usize| arena.is_some_and(|a| a.contains(addr, len));
        let dsync = |fua: bool| if fua { libc::RWF_DSYNC } else { 0 };
        let (kind, rw_flags) = match op {
            IoOp::Read { buf, .. } => (
                RequestKind::Read {
                    in_arena: in_arena(buf.as_ptr() as usize, buf.len()),
                    ptr: buf.as_mut_ptr(),
                },
                0,
            ),
            IoOp::Write { buf, fua, .. } => (
                RequestKind::Write {
                    in_arena: in_arena(buf.as_ptr() as usize, buf.len()),
                    ptr: buf.as_ptr(),
                },
                dsync(*fua),
            ),
            IoOp::WriteVectored { bufs, fua, .. } => (
                RequestKind::Writev {
                    iovecs: bufs
                        .iter()
                        .map(|b| libc::iovec {
                            iov_base: b.as_ptr() as *mut libc::c_void,
                            iov_len: b.len(),
                        })
                        .collect(),
                    first: 0,
                },
                dsync(*fua),
            ),
        };
        Request {
            kind,
            op_name,
            start_offset,
            total_bytes,
            done_bytes: 0,
            rw_flags,
            retries: 0,
        }
    }

    /// fdatasync: on a block device it also flushes the device's volatile cache.
    fn flush() -> Request {
        Request {
            kind: RequestKind::Flush,
            op_name: "flush",
            start_offset: 0,
            total_bytes: 0,
            done_bytes: 0,
            rw_flags: 0,
            retries: 0,
        }
    }

    /// The SQE for what remains of the request, and whether it is a fixed-buffer op
    /// (an arena buffer on a ring that has the arena registered).
    fn sqe(&self, fd: types::Fd, arena_registered: bool) -> (squeue::Entry, bool) {
        let offset = self.start_offset + self.done_bytes;
        let len = (self.total_bytes - self.done_bytes).min(SQE_BYTES_MAX) as u32;
        let done = self.done_bytes as usize;
        match &self.kind {
            RequestKind::Read { ptr, in_arena } if *in_arena && arena_registered => (
                opcode::ReadFixed::new(fd, ptr.wrapping_add(done), len, ARENA_BUF_INDEX)
                    .offset(offset)
                    .build(),
                true,
            ),
            RequestKind::Read { ptr, .. } => (
                opcode::Read::new(fd, ptr.wrapping_add(done), len)
                    .offset(offset)
                    .build(),
                false,
            ),
            RequestKind::Write { ptr, in_arena } if *in_arena && arena_registered => (
                opcode::WriteFixed::new(fd, ptr.wrapping_add(done), len, ARENA_BUF_INDEX)
                    .offset(offset)
                    .rw_flags(self.rw_flags)
                    .build(),
                true,
            ),
            RequestKind::Write { ptr, .. } => (
                opcode::Write::new(fd, ptr.wrapping_add(done), len)
                    .offset(offset)
                    .rw_flags(self.rw_flags)
                    .build(),
                false,
            ),
            RequestKind::Writev { iovecs, first } => {
                let count = (iovecs.len() - first).min(SQE_IOVECS_MAX);
                (
                    opcode::Writev::new(fd, iovecs[*first..].as_ptr(), count as u32)
                        .offset(offset)
                        .rw_flags(self.rw_flags)
                        .build(),
                    false,
                )
            }
            RequestKind::Flush => (
                opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build(),
                false,
            ),
        }
    }

    /// Records `n` bytes done; for a vector, drops or trims the iovecs they covered.
    fn advance(&mut self, n: u64) {
        self.done_bytes += n;
        debug_assert!(self.done_bytes <= self.total_bytes);
        if let RequestKind::Writev { iovecs, first } = &mut self.kind {
            let mut left = n as usize;
            while left > 0 && *first < iovecs.len() {
                let iov = &mut iovecs[*first];
                if left >= iov.iov_len {
                    left -= iov.iov_len;
                    *first += 1;
                } else {
                    iov.iov_base = (iov.iov_base as *mut u8).wrapping_add(left).cast();
                    iov.iov_len -= left;
                    left = 0;
                }
            }
        }
    }

    fn io_error(&self, source: io::Error) -> DeviceError {
        DeviceError::Io {
            op: self.op_name,
            offset: self.start_offset,
            len: self.total_bytes,
            source,
        }
    }
}

/// A batch validated and turned into requests; nothing is issued yet. Carries the
/// lifetime of the buffers its requests point into.
struct Prepared<'a> {
    requests: Vec<Request>,
    _buffers: PhantomData<&'a mut [u8]>,
}

// ---------------------------------------------------------------------------------
// The ring pool
// ---------------------------------------------------------------------------------

/// One io_uring instance of a device's pool.
struct Ring {
    uring: IoUring,
    /// The device's arena is registered with this ring: arena buffers go out as
    /// READ_FIXED/WRITE_FIXED on it.
    arena_registered: bool,
}

/// A device's rings. A free ring waits in `free`; a checked-out ring belongs to one
/// batch of one caller until that batch has reaped every completion it asked for.
struct RingPool {
    /// Capacity: the configured `rings_max`, so a ring put back always fits.
    free: ArrayQueue<Ring>,
    /// Rings in existence, free or checked out. Never 0 after open.
    created: AtomicUsize,
    /// The most rings to create: `OpenOptions::rings_max`, lowered to the number that
    /// exists when creating one more fails (the kernel refused memory, memlock or a
    /// descriptor), so that callers then wait for a ring instead of failing, and do
    /// not retry the setup on every submit.
    growth_max: AtomicUsize,
    /// Callers blocked in `wait_for_free`.
    waiters: AtomicUsize,
    waiters_lock: Mutex<()>,
    ring_returned: Condvar,
}

impl RingPool {
    fn new(rings_max: usize, first: Ring) -> RingPool {
        let free = ArrayQueue::new(rings_max);
        if free.push(first).is_err() {
            unreachable!("rings_max >= 1 was checked");
        }
        RingPool {
            free,
            created: AtomicUsize::new(1),
            growth_max: AtomicUsize::new(rings_max),
            waiters: AtomicUsize::new(0),
            waiters_lock: Mutex::new(()),
            ring_returned: Condvar::new(),
        }
    }

    /// Reserves a place for one more ring, if the pool may grow.
    fn reserve_growth(&self) -> bool {
        let mut created = self.created.load(Ordering::Relaxed);
        loop {
            if created >= self.growth_max.load(Ordering::Relaxed) {
                return false;
            }
            match self.created.compare_exchange_weak(
                created,
                created + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => created = now,
            }
        }
    }

    /// Undoes `reserve_growth` after the ring could not be created, and stops growth.
    fn growth_failed(&self) {
        let before = self.created.fetch_sub(1, Ordering::Relaxed);
        self.growth_max.fetch_min(before - 1, Ordering::Relaxed);
    }

    /// Blocks until a ring is put back, and takes it.
    fn wait_for_free(&self) -> Ring {
        let mut guard = self.waiters_lock.lock();
        self.waiters.fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence in `put_back`: either that caller sees us counted, or
        // we see its ring. We hold `waiters_lock` from here until `wait` releases it,
        // and `put_back` notifies under it, so its notification cannot fall between
        // our look at the queue and our wait.
        fence(Ordering::SeqCst);
        loop {
            if let Some(ring) = self.free.pop() {
                self.waiters.fetch_sub(1, Ordering::SeqCst);
                return ring;
            }
            self.ring_returned.wait(&mut guard);
        }
    }

    fn put_back(&self, ring: Ring) {
        if self.free.push(ring).is_err() {
            unreachable!("a pool never has more rings than its capacity");
        }
        // Pairs with the fence in `wait_for_free`.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _guard = self.waiters_lock.lock();
            self.ring_returned.notify_one();
        }
    }
}

/// A ring checked out of a pool; dropping it puts the ring back. Only a [`RingBatch`]
/// holds one, and it reaps all its completions before the lease drops.
struct RingLease<'d> {
    pool: &'d RingPool,
    ring: Option<Ring>,
}

impl RingLease<'_> {
    fn ring(&mut self) -> &mut Ring {
        self.ring
            .as_mut()
            .expect("a lease holds its ring until dropped")
    }
}

impl Drop for RingLease<'_> {
    fn drop(&mut self) {
        if let Some(ring) = self.ring.take() {
            self.pool.put_back(ring);
        }
    }
}

fn new_uring(entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        // Twice the SQ: a batch keeps at most one request per SQ entry in the kernel,
        // so the CQ cannot overflow even before the caller reaps.
        .setup_cqsize(entries.saturating_mul(2))
        .build(entries)
}

fn register_arena(uring: &IoUring, arena: &BufferArena) -> io::Result<()> {
    let iovecs = [arena.iovec()];
    // SAFETY: the iovec describes the arena's live allocation, which stays allocated
    // while the ring exists: a device keeps an Arc to its registered arena and drops
    // its rings before it (field order), and a ring lives only in its device's pool or
    // in a lease borrowed from the device. An arena whose registration failed is not
    // registered, so dropping it is fine.
    unsafe { uring.submitter().register_buffers(&iovecs) }
}

// ---------------------------------------------------------------------------------
// A batch on one ring
// ---------------------------------------------------------------------------------

/// One caller's batch on a checked-out ring of one device, driven by the caller.
///
/// The batch lends its requests' buffers to the kernel for `'a`. It must not end
/// before the kernel is done with them: `run` returns only when every request has
/// finished, and `Drop` (reached without `run` only by unwinding) reaps every CQE
/// still owed before the lease puts the ring back. Crate-private because `mem::forget`
/// on it would break that.
struct RingBatch<'d, 'a> {
    device: &'d UringDevice,
    requests: Vec<Request>,
    /// Requests below this index have been issued at least once.
    next_new: usize,
    /// Issued requests to issue again (short I/O continuations, EINTR/EAGAIN retries),
    /// before new ones.
    again: VecDeque<usize>,
    /// SQEs pushed whose CQE has not been reaped; at most the SQ size.
    in_flight: usize,
    /// In-flight limit: the SQ size, which also keeps the CQ (twice as big) from
    /// overflowing.
    in_flight_max: usize,
    unfinished: usize,
    first_error: Option<DeviceError>,
    // Declared last: dropped after `Drop::drop` has reaped everything.
    lease: RingLease<'d>,
    _buffers: PhantomData<&'a mut [u8]>,
}

impl<'d, 'a> RingBatch<'d, 'a> {
    fn new(device: &'d UringDevice, mut lease: RingLease<'d>, prepared: Prepared<'a>) -> Self {
        let in_flight_max = lease.ring().uring.params().sq_entries() as usize;
        let unfinished = prepared.requests.len();
        RingBatch {
            device,
            requests: prepared.requests,
            next_new: 0,
            again: VecDeque::new(),
            in_flight: 0,
            in_flight_max,
            unfinished,
            first_error: None,
            lease,
            _buffers: PhantomData,
        }
    }

    /// Pushes requests waiting to be issued while the in-flight limit allows.
    fn push_ready(&mut self) {
        self.refuse_writes_if_poisoned();
        let fd = types::Fd(self.device.file.as_raw_fd());
        let ring = self.lease.ring();
        let arena_registered = ring.arena_registered;
        let mut sq = ring.uring.submission();
        while self.in_flight < self.in_flight_max {
            let index = match self.again.pop_front() {
                Some(index) => index,
                None if self.next_new < self.requests.len() => {
                    self.next_new += 1;
                    self.next_new - 1
                }
                None => break,
            };
            let (entry, fixed) = self.requests[index].sqe(fd, arena_registered);
            let entry = entry.user_data(index as u64);
            // SAFETY: the SQE points at buffers the caller lent this batch for 'a, which
            // does not end before the SQE's CQE is reaped (see `RingBatch`); for WRITEV
            // also at the request's iovec array, a heap allocation owned by
            // `self.requests`, which is neither resized nor dropped before then. The
            // descriptor belongs to the device, which the batch borrows. A fixed op's
            // buffer lies in the arena (checked in `Request::new`), which is registered
            // with this ring (`arena_registered`).
            if unsafe { sq.push(&entry) }.is_err() {
                // Cannot happen (unconsumed SQEs <= in_flight < SQ size); try later.
                self.again.push_front(index);
                break;
            }
            self.in_flight += 1;
            if fixed {
                self.device.fixed_ops.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Once the device is poisoned (by this batch or any other), no write, write
    /// continuation or flush of this batch is issued any more: they finish with the
    /// poison error. Reads still go out.
    fn refuse_writes_if_poisoned(&mut self) {
        if self.device.poisoned_error().is_none() {
            return;
        }
        let is_write = |r: &Request| !matches!(r.kind, RequestKind::Read { .. });
        let mut waiting: Vec<usize> = self.again.drain(..).collect();
        waiting.extend(self.next_new..self.requests.len());
        self.next_new = self.requests.len();
        for index in waiting {
            if is_write(&self.requests[index]) {
                let error = self.device.poisoned_error().expect("poisoned above");
                self.finish(Some(error));
            } else {
                self.again.push_back(index);
            }
        }
    }

    /// Submits what was pushed and waits until `want` completions are ready.
    fn enter(&mut self, want: usize) {
        let Err(e) = self.lease.ring().uring.submit_and_wait(want) else {
            return;
        };
        match e.raw_os_error() {
            // Interrupted: reap what is there and go round again.
            Some(libc::EINTR) => {}
            // The kernel is short of resources or has completions to hand out first.
            Some(libc::EAGAIN) | Some(libc::EBUSY) => std::thread::yield_now(),
            _ => {
                let error = DeviceError::Uring { source: e };
                self.device.poison(&error);
                self.first_error.get_or_insert(error);
                // Requests may still be in the kernel, so the caller must go on
                // reaping; pause so that a persistent failure does not spin.
                std::thread::sleep(ENTER_FAILURE_PAUSE);
            }
        }
    }

    fn reap(&mut self) {
        loop {
            let Some(cqe) = self.lease.ring().uring.completion().next() else {
                return;
            };
            self.complete(cqe.user_data() as usize, cqe.result());
        }
    }

    fn complete(&mut self, index: usize, result: i32) {
        assert!(self.in_flight > 0, "a completion nobody waits for");
        self.in_flight -= 1;
        let request = &mut self.requests[index];
        if result < 0 {
            let errno = -result;
            if (errno == libc::EINTR || errno == libc::EAGAIN) && request.retries < RETRIES_MAX {
                request.retries += 1;
                self.again.push_back(index);
            } else {
                let error = request.io_error(io::Error::from_raw_os_error(errno));
                self.finish(Some(error));
            }
            return;
        }
        if matches!(request.kind, RequestKind::Flush) {
            self.device.counters.record_flush();
            self.finish(None);
            return;
        }
        let n = result as u64;
        if n == 0 {
            // No progress on a non-empty range: the file shrank under us (read) or the
            // device accepts nothing (write).
            let kind = if request.op_name == "read" {
                io::ErrorKind::UnexpectedEof
            } else {
                io::ErrorKind::WriteZero
            };
            let error = request.io_error(io::Error::new(
                kind,
                format!(
                    "no progress after {} of {} bytes",
                    request.done_bytes, request.total_bytes
                ),
            ));
            self.finish(Some(error));
            return;
        }
        request.advance(n);
        request.retries = 0;
        if request.done_bytes < request.total_bytes {
            self.again.push_back(index);
            return;
        }
        match request.kind {
            RequestKind::Read { .. } => self.device.counters.record_read(request.total_bytes),
            _ => self.device.counters.record_write(request.total_bytes),
        }
        self.finish(None);
    }

    fn finish(&mut self, error: Option<DeviceError>) {
        self.unfinished -= 1;
        if let Some(e) = error {
            self.device.poison(&e);
            self.first_error.get_or_insert(e);
        }
    }

    /// Issues the first requests without waiting (for `run_across`).
    fn start(&mut self) {
        self.push_ready();
        self.enter(0);
    }

    /// Issues, waits and reaps until every request has finished; the first error.
    fn run(mut self) -> Result<()> {
        loop {
            self.push_ready();
            if self.in_flight == 0 {
                // push_ready issues something whenever anything is left.
                break;
            }
            // One io_uring_enter for everything in flight when the batch fits the
            // ring; for a larger batch, refill as soon as a slot frees.
            let want = if self.again.is_empty() && self.next_new == self.requests.len() {
                self.in_flight
            } else {
                1
            };
            self.enter(want);
            self.reap();
        }
        assert_eq!(self.unfinished, 0, "a batch ended with requests unissued");
        match self.first_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for RingBatch<'_, '_> {
    fn drop(&mut self) {
        // After `run` nothing is in flight. Otherwise we are unwinding: issue nothing
        // more, but reap every CQE still owed before the buffers' borrow ends and the
        // ring goes back to the pool.
        while self.in_flight > 0 {
            self.again.clear();
            self.next_new = self.requests.len();
            self.enter(self.in_flight);
            self.reap();
        }
    }
}

// ---------------------------------------------------------------------------------
// The device
// ---------------------------------------------------------------------------------

/// A block device or regular file driven through io_uring by the threads that submit
/// to it, each on a ring of the device's pool.
pub struct UringDevice {
    path: PathBuf,
    kind: DeviceKind,
    geometry: Geometry,
    /// Declared before `arena`: the rings, and their registrations of it, go first.
    pool: RingPool,
    /// SQ entries asked for when a ring is created.
    ring_entries_requested: u32,
    /// SQ entries the kernel gave the first ring (the same for every ring).
    ring_entries: u32,
    rings_max: usize,
    counters: Counters,
    fixed_ops: AtomicU64,
    poisoned: AtomicBool,
    first_error: Mutex<Option<String>>,
    /// The arena, if registering it with the first ring succeeded.
    arena: Option<Arc<BufferArena>>,
    fixed_buffers_unavailable: Option<String>,
    /// Owns the descriptor (and the flock of a regular file).
    file: File,
}

/// Where a device's registered arena comes from.
enum ArenaSource {
    None,
    Shared(Arc<BufferArena>),
    Private { len_bytes: usize },
}

/// Registered arenas smaller than this are not worth having: one engine flush or GC
/// read batch would not fit, and plain ops would be used for it anyway.
pub const ARENA_BYTES_MIN: usize = 256 << 10;
/// The largest buffer the kernel registers (larger ones fail with EFAULT).
pub const ARENA_BYTES_MAX: usize = 1 << 30;

/// The arena size to ask for, given the caller's wish and how many rings will register
/// it (registration is charged once per ring): unlimited for root (CAP_IPC_LOCK is not
/// charged) or an infinite RLIMIT_MEMLOCK; otherwise at most an eighth of the limit
/// per ring, because the limit is shared by all of the user's processes and also pays
/// for the rings themselves; a device that takes it all would make the next device's
/// ring setup fail. 0 if that is below [`ARENA_BYTES_MIN`].
pub fn arena_bytes_allowed(requested_bytes: usize, rings: usize) -> usize {
    // The kernel refuses to register a single buffer over 1 GiB (EFAULT).
    let requested_bytes = requested_bytes.min(ARENA_BYTES_MAX);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return requested_bytes;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a pointer to a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return requested_bytes;
    }
    let share = usize::try_from(limit.rlim_cur / 8 / rings.max(1) as u64).unwrap_or(usize::MAX);
    let allowed = requested_bytes.min(share);
    if allowed < ARENA_BYTES_MIN {
        0
    } else {
        allowed
    }
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
        // The first ring is made now, so that an unusable io_uring is an open error.
        let first = new_uring(opts.ring_entries).map_err(|source| DeviceError::Uring { source })?;

        let (arena, fixed_buffers_unavailable) = match source {
            ArenaSource::None => (
                None,
                Some(if opts.use_fixed_buffers {
                    "RLIMIT_MEMLOCK leaves no room for a buffer arena on every ring".to_string()
                } else {
                    "not requested".to_string()
                }),
            ),
            ArenaSource::Shared(arena) => match register_arena(&first, &arena) {
                Ok(()) => (Some(arena), None),
                Err(e) => (
                    None,
                    Some(format!("registering the shared buffer arena failed: {e}")),
                ),
            },
            ArenaSource::Private { mut len_bytes } => loop {
                let arena = BufferArena::new(len_bytes);
                match register_arena(&first, &arena) {
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
        };
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

    /// A zeroed, aligned buffer of at least `len_bytes`: from the registered arena if
    /// it has room (ops on it use fixed-buffer opcodes), else from the heap.
    pub fn alloc_buffer(&self, len_bytes: usize) -> DeviceBuf {
        alloc_device_buffer(self.arena.as_ref(), len_bytes)
    }

    fn poison(&self, error: &DeviceError) {
        let mut first = self.first_error.lock();
        if first.is_none() {
            *first = Some(error.to_string());
        }
        self.poisoned.store(true, Ordering::Release);
    }

    fn poisoned_error(&self) -> Option<DeviceError> {
        if !self.poisoned.load(Ordering::Acquire) {
            return None;
        }
        Some(DeviceError::Poisoned {
            first_error: self.first_error.lock().clone().unwrap_or_default(),
        })
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
    fn try_checkout(&self) -> Option<RingLease<'_>> {
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
    fn checkout(&self) -> RingLease<'_> {
        self.try_checkout().unwrap_or_else(|| RingLease {
            pool: &self.pool,
            ring: Some(self.pool.wait_for_free()),
        })
    }

    /// Validates `ops` and turns them into requests; issues nothing.
    fn prepare<'a>(&self, ops: &mut [IoOp<'a>]) -> Result<Prepared<'a>> {
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
    fn prepare_flush(&self) -> Result<Prepared<'static>> {
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

impl BlockDevice for UringDevice {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn submit(&self, ops: &mut [IoOp<'_>]) -> Result<()> {
        let prepared = self.prepare(ops)?;
        self.run(prepared)
    }

    fn flush(&self) -> Result<()> {
        let prepared = self.prepare_flush()?;
        self.run(prepared)
    }

    fn counters(&self) -> Vec<CounterSnapshot> {
        vec![self.counters.snapshot()]
    }

    fn poisoned(&self) -> Option<String> {
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

/// Submits one batch per device and returns when all of them have completed: every
/// batch is validated first (nothing is issued if any op is invalid), then all are put
/// on their devices' rings, then waited for, so the devices work concurrently from one
/// thread. Returns the first error.
pub fn submit_across(work: &mut [(&UringDevice, &mut [IoOp<'_>])]) -> Result<()> {
    let mut prepared = Vec::with_capacity(work.len());
    for (device, ops) in work.iter_mut() {
        prepared.push((*device, device.prepare(ops)?));
    }
    run_across(prepared)
}

/// Flushes every device, all at once from this thread; returns the first error.
pub fn flush_across(devices: &[&UringDevice]) -> Result<()> {
    let mut prepared = Vec::with_capacity(devices.len());
    let mut first_error = None;
    for device in devices {
        // A poisoned member refuses; the others are still flushed.
        match device.prepare_flush() {
            Ok(p) => prepared.push((*device, p)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let result = run_across(prepared);
    match first_error {
        Some(e) => Err(e),
        None => result,
    }
}

/// Starts every batch on a ring of its device, then waits for each. A caller waits for
/// a ring only while it holds none: a device whose pool has no ring free (and may not
/// grow) is left for the next round, after this round's rings are back. Two callers
/// that each hold a ring the other waits for would deadlock otherwise.
fn run_across<'d, 'a>(mut work: Vec<(&'d UringDevice, Prepared<'a>)>) -> Result<()> {
    work.retain(|(_, p)| !p.requests.is_empty());
    let mut first_error = None;
    while !work.is_empty() {
        let mut started: Vec<RingBatch<'d, 'a>> = Vec::with_capacity(work.len());
        let mut later = Vec::new();
        for (device, prepared) in work {
            let lease = if started.is_empty() {
                Some(device.checkout())
            } else {
                device.try_checkout()
            };
            match lease {
                Some(lease) => {
                    let mut batch = RingBatch::new(device, lease, prepared);
                    batch.start();
                    started.push(batch);
                }
                None => later.push((device, prepared)),
            }
        }
        for batch in started {
            if let Err(e) = batch.run() {
                first_error.get_or_insert(e);
            }
        }
        work = later;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
