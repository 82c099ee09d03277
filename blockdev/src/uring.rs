//! The io_uring submission loop shared by many threads.
//!
//! One ring per device, owned by a dedicated ring thread. A caller's `submit` turns
//! each op of its batch into a heap-allocated [`Pending`] request, pushes them onto a
//! lock-free queue and, if the ring thread is asleep, wakes it by writing an eventfd on
//! which the ring thread always keeps a read in flight. The ring thread moves as many
//! queued requests into SQEs as the in-flight limit allows and submits them with one
//! io_uring_enter, which also waits for the next completion. Each CQE either continues
//! its request (short read/write, EINTR/EAGAIN) or finishes it; the last request of a
//! batch wakes the caller, which waits once per batch.
//!
//! Buffers are borrowed from the caller: `submit` never returns (not even on an error
//! path) before every CQE of its batch has been reaped, so the kernel never touches a
//! buffer after the borrow ends.
//!
//! Buffers allocated with [`UringDevice::alloc_buffer`] come from an arena registered
//! with the ring (fixed buffers); ops on them use READ_FIXED/WRITE_FIXED, which saves
//! the kernel pinning the pages on every request. Where registration is refused
//! (RLIMIT_MEMLOCK for unprivileged users) everything uses plain ops.

// `x % n != 0` rather than `is_multiple_of`: the workspace MSRV (1.80) predates it.
#![allow(clippy::manual_is_multiple_of)]

use crate::buf::{AlignedBuf, BUFFER_ALIGN_BYTES};
use crate::device::{check_op, BlockDevice, CounterSnapshot, Counters, Geometry, IoOp};
use crate::error::{DeviceError, Result};
use crate::file::{open_direct, DeviceKind, DirectFile, OpenOptions};
use crossbeam_queue::SegQueue;
use io_uring::{opcode, squeue, types, IoUring};
use parking_lot::{Condvar, Mutex};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The smallest ring we build: one slot for the wake-up read, one for a request.
pub const RING_ENTRIES_MIN: u32 = 2;
/// The largest ring we build. Deeper queues stop paying off on NVMe (the device's own
/// queues are typically 1024 deep) and cost pinned kernel memory per ring.
pub const RING_ENTRIES_MAX: u32 = 4096;
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

const _: () = assert!(SQE_BYTES_MAX <= u32::MAX as u64);
const _: () = assert!(SQE_BYTES_MAX % BUFFER_ALIGN_BYTES as u64 == 0);

/// user_data of the ring thread's own eventfd read; requests use their (non-null,
/// aligned) heap address, which is never 0.
const WAKE_USER_DATA: u64 = 0;
/// Index of the arena in the ring's registered buffer table (we register one).
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
        let len_bytes = pages * ARENA_PAGE_BYTES;
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
        // Arc to the arena and every ring that registered it is owned by a device that
        // holds one too (and joins its ring thread, closing the ring, before dropping
        // it), so nothing uses the memory any more.
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
// Requests and batches
// ---------------------------------------------------------------------------------

/// One caller's batch: how many requests are still out, and the first error.
struct Batch {
    state: Mutex<BatchState>,
    all_done: Condvar,
}

struct BatchState {
    remaining: usize,
    first_error: Option<DeviceError>,
}

impl Batch {
    fn new(requests: usize) -> Arc<Batch> {
        Arc::new(Batch {
            state: Mutex::new(BatchState {
                remaining: requests,
                first_error: None,
            }),
            all_done: Condvar::new(),
        })
    }

    fn finish_one(&self, error: Option<DeviceError>) {
        let mut state = self.state.lock();
        if state.first_error.is_none() {
            state.first_error = error;
        }
        assert!(
            state.remaining > 0,
            "batch finished more requests than it has"
        );
        state.remaining -= 1;
        if state.remaining == 0 {
            self.all_done.notify_all();
        }
    }

    fn wait(&self) -> Result<()> {
        let mut state = self.state.lock();
        while state.remaining > 0 {
            self.all_done.wait(&mut state);
        }
        match state.first_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

enum PendingKind {
    Read {
        ptr: *mut u8,
        fixed: bool,
    },
    Write {
        ptr: *const u8,
        fixed: bool,
    },
    /// `iovecs[first..]` is what remains; `iovecs[first]` is trimmed in place after a
    /// short write.
    Writev {
        iovecs: Vec<libc::iovec>,
        first: usize,
    },
    Flush,
}

/// One request travelling between a caller and the ring thread. Its heap address is
/// the SQE's user_data while it is in the kernel.
struct Pending {
    kind: PendingKind,
    op_name: &'static str,
    start_offset: u64,
    total_bytes: u64,
    done_bytes: u64,
    rw_flags: i32,
    retries: u32,
    batch: Arc<Batch>,
}

// SAFETY: the raw pointers (buffer addresses, iovec bases) point into buffers the
// submitting caller borrows for the whole batch; the caller blocks until the ring
// thread has finished every request of the batch, so the memory stays valid while the
// ring thread (and the kernel) use the pointers. The ring thread never dereferences
// them itself; it only passes them to the kernel.
unsafe impl Send for Pending {}

impl Pending {
    fn sqe(&self, fd: types::Fd) -> squeue::Entry {
        let offset = self.start_offset + self.done_bytes;
        let len = (self.total_bytes - self.done_bytes).min(SQE_BYTES_MAX) as u32;
        let done = self.done_bytes as usize;
        match &self.kind {
            PendingKind::Read { ptr, fixed: true } => {
                opcode::ReadFixed::new(fd, ptr.wrapping_add(done), len, ARENA_BUF_INDEX)
                    .offset(offset)
                    .build()
            }
            PendingKind::Read { ptr, fixed: false } => {
                opcode::Read::new(fd, ptr.wrapping_add(done), len)
                    .offset(offset)
                    .build()
            }
            PendingKind::Write { ptr, fixed: true } => {
                opcode::WriteFixed::new(fd, ptr.wrapping_add(done), len, ARENA_BUF_INDEX)
                    .offset(offset)
                    .rw_flags(self.rw_flags)
                    .build()
            }
            PendingKind::Write { ptr, fixed: false } => {
                opcode::Write::new(fd, ptr.wrapping_add(done), len)
                    .offset(offset)
                    .rw_flags(self.rw_flags)
                    .build()
            }
            PendingKind::Writev { iovecs, first } => {
                let count = (iovecs.len() - first).min(SQE_IOVECS_MAX);
                opcode::Writev::new(fd, iovecs[*first..].as_ptr(), count as u32)
                    .offset(offset)
                    .rw_flags(self.rw_flags)
                    .build()
            }
            PendingKind::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        }
    }

    /// Records `n` bytes done; for a vector, drops or trims the iovecs they covered.
    fn advance(&mut self, n: u64) {
        self.done_bytes += n;
        debug_assert!(self.done_bytes <= self.total_bytes);
        if let PendingKind::Writev { iovecs, first } = &mut self.kind {
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

    fn is_flush(&self) -> bool {
        matches!(self.kind, PendingKind::Flush)
    }

    fn uses_fixed(&self) -> bool {
        matches!(
            self.kind,
            PendingKind::Read { fixed: true, .. } | PendingKind::Write { fixed: true, .. }
        )
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

// ---------------------------------------------------------------------------------
// The device
// ---------------------------------------------------------------------------------

/// State shared by the callers and the ring thread.
struct Shared {
    path: PathBuf,
    /// Owns the descriptor (and the flock of a regular file).
    file: File,
    wake_fd: OwnedFd,
    geometry: Geometry,
    queue: SegQueue<Box<Pending>>,
    /// Set by the ring thread just before it blocks with room for more requests;
    /// a caller that clears it owes the ring thread a wake-up.
    ring_sleeping: AtomicBool,
    shutdown: AtomicBool,
    counters: Counters,
    fixed_ops: AtomicU64,
    poisoned: AtomicBool,
    first_error: Mutex<Option<String>>,
    /// The registered arena, if registration succeeded.
    arena: Option<Arc<BufferArena>>,
}

impl Shared {
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

    fn wake_ring(&self) {
        let value: u64 = 1;
        loop {
            // SAFETY: writes 8 bytes from a live local u64 to our own eventfd.
            let rc = unsafe {
                libc::write(
                    self.wake_fd.as_raw_fd(),
                    (&value as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
            // EAGAIN means the counter is saturated: a wake-up is pending anyway.
            if rc >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return;
            }
        }
    }
}

/// A block device or regular file driven through its own io_uring ring thread.
pub struct UringDevice {
    shared: Arc<Shared>,
    kind: DeviceKind,
    ring_entries: u32,
    fixed_buffers_unavailable: Option<String>,
    ring_thread: Option<JoinHandle<()>>,
}

/// Requests one ring keeps in the kernel at most: all SQ slots but one, which stays
/// free for the ring thread's wake-up read, so pushing never finds the SQ full; the CQ
/// (twice the SQ) then cannot overflow. More requests wait in the queue.
fn in_flight_max(sq_entries: u32) -> usize {
    (sq_entries as usize).saturating_sub(1).max(1)
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

/// The arena size to ask for, given the caller's wish and how many rings will register
/// it: unlimited for root (CAP_IPC_LOCK is not charged) or an infinite RLIMIT_MEMLOCK;
/// otherwise at most an eighth of the limit per ring, because the limit is shared by all
/// of the user's processes and also pays for the rings themselves; a device that takes
/// it all would make the next device's ring setup fail. 0 if that is below
/// [`ARENA_BYTES_MIN`].
pub fn arena_bytes_allowed(requested_bytes: usize, rings: usize) -> usize {
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

fn register_arena(ring: &IoUring, arena: &BufferArena) -> io::Result<()> {
    let iovecs = [arena.iovec()];
    // SAFETY: the iovec describes the arena's live allocation, which stays allocated
    // while the ring exists: the device's `Shared` keeps an Arc to a registered arena
    // and outlives the ring thread, which owns (and closes) the ring. An arena whose
    // registration failed is not registered, so dropping it is fine.
    unsafe { ring.submitter().register_buffers(&iovecs) }
}

/// A launched batch; dropping it waits for every request, so the buffers it borrows
/// outlive the kernel's use of them even if the caller unwinds. Crate-private because
/// `mem::forget` on it would break that (this is why there is no public async submit).
pub(crate) struct InFlight<'a> {
    batch: Option<Arc<Batch>>,
    _buffers: PhantomData<&'a mut [u8]>,
}

impl InFlight<'_> {
    pub(crate) fn wait(mut self) -> Result<()> {
        match self.batch.take() {
            Some(b) => b.wait(),
            None => Ok(()),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.batch.take() {
            let _ = b.wait();
        }
    }
}

/// Requests validated and ready to launch; nothing is issued until [`UringDevice::launch`].
pub(crate) struct Prepared<'a> {
    // Boxed on purpose: each request's heap address is its SQE user_data and must not
    // move while the request is in the kernel.
    #[allow(clippy::vec_box)]
    requests: Vec<Box<Pending>>,
    batch: Option<Arc<Batch>>,
    _buffers: PhantomData<&'a mut [u8]>,
}

impl UringDevice {
    /// Opens `path` (see [`crate::file::open_device`], which wraps this in an Arc).
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<UringDevice> {
        UringDevice::new(open_direct(path, opts.create_size_bytes)?, opts)
    }

    /// Starts the ring thread for an opened file, with a private registered arena of
    /// `opts.fixed_buffer_arena_bytes` if `opts.use_fixed_buffers`. Where the memlock
    /// limit refuses that size, the arena is halved until it fits (down to
    /// [`ARENA_BYTES_MIN`]), then fixed buffers are given up.
    pub fn new(direct: DirectFile, opts: &OpenOptions) -> Result<UringDevice> {
        let len_bytes = if opts.use_fixed_buffers {
            arena_bytes_allowed(opts.fixed_buffer_arena_bytes, 1)
        } else {
            0
        };
        let source = if len_bytes > 0 {
            ArenaSource::Private { len_bytes }
        } else {
            ArenaSource::None
        };
        UringDevice::start(direct, opts, source)
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
        UringDevice::start(direct, opts, source)
    }

    fn start(direct: DirectFile, opts: &OpenOptions, source: ArenaSource) -> Result<UringDevice> {
        if !(RING_ENTRIES_MIN..=RING_ENTRIES_MAX).contains(&opts.ring_entries) {
            return Err(DeviceError::Config {
                reason: format!(
                    "ring_entries {} outside {RING_ENTRIES_MIN}..={RING_ENTRIES_MAX}",
                    opts.ring_entries
                ),
            });
        }
        let ring: IoUring = IoUring::builder()
            // Twice the SQ: in-flight requests never exceed the SQ size, so the CQ
            // cannot overflow even if the ring thread is slow to reap.
            .setup_cqsize(opts.ring_entries.saturating_mul(2))
            .build(opts.ring_entries)
            .map_err(|source| DeviceError::Uring { source })?;

        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let raw_wake_fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if raw_wake_fd < 0 {
            return Err(DeviceError::Uring {
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: raw_wake_fd is a fresh descriptor nothing else owns.
        let wake_fd = unsafe { OwnedFd::from_raw_fd(raw_wake_fd) };

        let (arena, fixed_buffers_unavailable) = match source {
            ArenaSource::None => (
                None,
                Some(if opts.use_fixed_buffers {
                    "RLIMIT_MEMLOCK leaves no room for a buffer arena".to_string()
                } else {
                    "not requested".to_string()
                }),
            ),
            ArenaSource::Shared(arena) => match register_arena(&ring, &arena) {
                Ok(()) => (Some(arena), None),
                Err(e) => (
                    None,
                    Some(format!("registering the shared buffer arena failed: {e}")),
                ),
            },
            ArenaSource::Private { mut len_bytes } => loop {
                let arena = BufferArena::new(len_bytes);
                match register_arena(&ring, &arena) {
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

        let shared = Arc::new(Shared {
            path: direct.path.clone(),
            file: direct.file,
            wake_fd,
            geometry: direct.geometry,
            queue: SegQueue::new(),
            ring_sleeping: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            counters: Counters::default(),
            fixed_ops: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            first_error: Mutex::new(None),
            arena,
        });
        let ring_entries = ring.params().sq_entries();
        let thread_shared = Arc::clone(&shared);
        let name = format!(
            "uring-{}",
            direct
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let ring_thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let path = thread_shared.path.clone();
                let run = std::panic::AssertUnwindSafe(|| ring_thread_main(thread_shared, ring));
                if std::panic::catch_unwind(run).is_err() {
                    // Requests may be in the kernel, pointing at callers' buffers, and
                    // their callers would wait forever: neither can be made safe from
                    // here, so stop the process (a bug, reported above by the panic).
                    eprintln!(
                        "{}: io_uring ring thread panicked; aborting",
                        path.display()
                    );
                    std::process::abort();
                }
            })
            .map_err(|source| DeviceError::Uring { source })?;
        Ok(UringDevice {
            shared,
            kind: direct.kind,
            ring_entries,
            fixed_buffers_unavailable,
            ring_thread: Some(ring_thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// The SQ size the kernel gave us (a power of two >= the requested entries).
    pub fn ring_entries(&self) -> u32 {
        self.ring_entries
    }

    /// Requests this device keeps in the kernel at once (`ring_entries() - 1`).
    pub fn in_flight_max(&self) -> usize {
        in_flight_max(self.ring_entries)
    }

    /// True if the buffer arena is registered with the ring (fixed-buffer ops).
    pub fn fixed_buffers_registered(&self) -> bool {
        self.shared.arena.is_some()
    }

    /// Why fixed buffers are not in use, if they are not.
    pub fn fixed_buffers_unavailable(&self) -> Option<&str> {
        self.fixed_buffers_unavailable.as_deref()
    }

    /// Requests issued as READ_FIXED/WRITE_FIXED so far (a statistic).
    pub fn fixed_op_count(&self) -> u64 {
        self.shared.fixed_ops.load(Ordering::Relaxed)
    }

    /// The registered arena, if any (to share it with other devices). Its size may be
    /// below the requested one where the memlock limit did not allow more.
    pub fn arena(&self) -> Option<&Arc<BufferArena>> {
        self.shared.arena.as_ref()
    }

    /// A zeroed, aligned buffer of at least `len_bytes`: from the registered arena if
    /// it has room (ops on it use fixed-buffer opcodes), else from the heap.
    pub fn alloc_buffer(&self, len_bytes: usize) -> DeviceBuf {
        alloc_device_buffer(self.shared.arena.as_ref(), len_bytes)
    }

    /// Validates `ops` and turns them into requests; issues nothing.
    pub(crate) fn prepare<'a>(&self, ops: &mut [IoOp<'a>]) -> Result<Prepared<'a>> {
        let geometry = &self.shared.geometry;
        for op in ops.iter() {
            check_op(geometry, op)?;
        }
        if ops.iter().any(|op| op.is_write()) {
            if let Some(e) = self.shared.poisoned_error() {
                return Err(e);
            }
        }
        if ops.is_empty() {
            return Ok(Prepared {
                requests: Vec::new(),
                batch: None,
                _buffers: PhantomData,
            });
        }
        let batch = Batch::new(ops.len());
        let arena = self.shared.arena.as_deref();
        let in_arena = |addr: usize, len: usize| arena.is_some_and(|a| a.contains(addr, len));
        let requests = ops
            .iter_mut()
            .map(|op| {
                let (kind, rw_flags) = match op {
                    IoOp::Read { buf, .. } => (
                        PendingKind::Read {
                            fixed: in_arena(buf.as_ptr() as usize, buf.len()),
                            ptr: buf.as_mut_ptr(),
                        },
                        0,
                    ),
                    IoOp::Write { buf, fua, .. } => (
                        PendingKind::Write {
                            fixed: in_arena(buf.as_ptr() as usize, buf.len()),
                            ptr: buf.as_ptr(),
                        },
                        if *fua { libc::RWF_DSYNC } else { 0 },
                    ),
                    IoOp::WriteVectored { bufs, fua, .. } => (
                        PendingKind::Writev {
                            iovecs: bufs
                                .iter()
                                .map(|b| libc::iovec {
                                    iov_base: b.as_ptr() as *mut libc::c_void,
                                    iov_len: b.len(),
                                })
                                .collect(),
                            first: 0,
                        },
                        if *fua { libc::RWF_DSYNC } else { 0 },
                    ),
                };
                Box::new(Pending {
                    kind,
                    op_name: op.name(),
                    start_offset: op.offset(),
                    total_bytes: op.len(),
                    done_bytes: 0,
                    rw_flags,
                    retries: 0,
                    batch: Arc::clone(&batch),
                })
            })
            .collect();
        Ok(Prepared {
            requests,
            batch: Some(batch),
            _buffers: PhantomData,
        })
    }

    /// Hands prepared requests to the ring thread; the returned guard waits for them.
    pub(crate) fn launch<'a>(&self, prepared: Prepared<'a>) -> InFlight<'a> {
        let Prepared {
            requests, batch, ..
        } = prepared;
        if requests.is_empty() {
            return InFlight {
                batch: None,
                _buffers: PhantomData,
            };
        }
        for r in requests {
            self.shared.queue.push(r);
        }
        // Pairs with the fence in the ring thread between setting `ring_sleeping` and
        // looking at the queue: either it sees our requests or we see it asleep.
        fence(Ordering::SeqCst);
        if self.shared.ring_sleeping.load(Ordering::SeqCst)
            && self.shared.ring_sleeping.swap(false, Ordering::SeqCst)
        {
            self.shared.wake_ring();
        }
        InFlight {
            batch,
            _buffers: PhantomData,
        }
    }
}

impl BlockDevice for UringDevice {
    fn geometry(&self) -> Geometry {
        self.shared.geometry
    }

    fn submit(&self, ops: &mut [IoOp<'_>]) -> Result<()> {
        let prepared = self.prepare(ops)?;
        self.launch(prepared).wait()
    }

    fn flush(&self) -> Result<()> {
        let prepared = self.prepare_flush()?;
        self.launch(prepared).wait()
    }

    fn counters(&self) -> Vec<CounterSnapshot> {
        vec![self.shared.counters.snapshot()]
    }

    fn poisoned(&self) -> Option<String> {
        if !self.shared.poisoned.load(Ordering::Acquire) {
            return None;
        }
        self.shared.first_error.lock().clone()
    }
}

impl UringDevice {
    /// A flush (fdatasync: on a block device it also flushes the device's volatile
    /// cache) as a request; refused on a poisoned device.
    pub(crate) fn prepare_flush(&self) -> Result<Prepared<'static>> {
        if let Some(e) = self.shared.poisoned_error() {
            return Err(e);
        }
        let batch = Batch::new(1);
        let request = Box::new(Pending {
            kind: PendingKind::Flush,
            op_name: "flush",
            start_offset: 0,
            total_bytes: 0,
            done_bytes: 0,
            rw_flags: 0,
            retries: 0,
            batch: Arc::clone(&batch),
        });
        Ok(Prepared {
            requests: vec![request],
            batch: Some(batch),
            _buffers: PhantomData,
        })
    }
}

impl Drop for UringDevice {
    fn drop(&mut self) {
        // No caller can be inside submit/flush (they borrow self), so the queue is
        // empty; the ring thread exits once its wake-up read has completed.
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.wake_ring();
        if let Some(t) = self.ring_thread.take() {
            // The thread aborts the process rather than unwind, so join cannot fail.
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for UringDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringDevice")
            .field("path", &self.shared.path)
            .field("kind", &self.kind)
            .field("geometry", &self.shared.geometry)
            .field("ring_entries", &self.ring_entries)
            .field("fixed_buffers", &self.fixed_buffers_registered())
            .finish()
    }
}

/// Submits one batch per device and returns when all of them have completed: every
/// batch is validated first (nothing is issued if any op is invalid), then all are put
/// on their rings, then waited for, so the devices work concurrently from one thread.
/// Returns the first error.
pub fn submit_across(work: &mut [(&UringDevice, &mut [IoOp<'_>])]) -> Result<()> {
    let mut prepared = Vec::with_capacity(work.len());
    for (device, ops) in work.iter_mut() {
        prepared.push((*device, device.prepare(ops)?));
    }
    launch_and_wait_all(prepared)
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
    let result = launch_and_wait_all(prepared);
    match first_error {
        Some(e) => Err(e),
        None => result,
    }
}

fn launch_and_wait_all<'a>(prepared: Vec<(&UringDevice, Prepared<'a>)>) -> Result<()> {
    let in_flight: Vec<InFlight<'a>> = prepared
        .into_iter()
        .map(|(device, p)| device.launch(p))
        .collect();
    let mut first_error = None;
    for f in in_flight {
        if let Err(e) = f.wait() {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------
// The ring thread
// ---------------------------------------------------------------------------------

fn ring_thread_main(shared: Arc<Shared>, mut ring: IoUring) {
    let fd = types::Fd(shared.file.as_raw_fd());
    let wake_fd: RawFd = shared.wake_fd.as_raw_fd();
    let in_flight_max = in_flight_max(ring.params().sq_entries());
    // The eventfd read's target; lives until the ring is dropped below, after its CQE.
    let mut wake_value = Box::new(0u64);
    let mut wake_armed = false;
    let mut in_flight = 0usize;
    // Requests to (re)issue before taking new ones: continuations and retries.
    let mut ready: VecDeque<Box<Pending>> = VecDeque::new();

    loop {
        let shutdown = shared.shutdown.load(Ordering::SeqCst);
        {
            let mut sq = ring.submission();
            if !wake_armed && !shutdown {
                let entry = opcode::Read::new(
                    types::Fd(wake_fd),
                    (&mut *wake_value as *mut u64).cast(),
                    std::mem::size_of::<u64>() as u32,
                )
                .build()
                .user_data(WAKE_USER_DATA);
                // SAFETY: the read target `wake_value` is heap memory owned by this
                // function that outlives the ring (dropped after it at the end).
                wake_armed = unsafe { sq.push(&entry) }.is_ok();
            }
            while in_flight < in_flight_max {
                let Some(request) = ready.pop_front().or_else(|| shared.queue.pop()) else {
                    break;
                };
                let entry = request.sqe(fd);
                let uses_fixed = request.uses_fixed();
                let raw = Box::into_raw(request);
                let entry = entry.user_data(raw as u64);
                // SAFETY: the SQE points at the caller's buffers (alive until the batch
                // completes, see `Pending`'s Send impl) and at the request's own iovec
                // array, which lives on the heap until its CQE turns `raw` back into
                // a Box. Fixed ops lie inside the registered arena (checked in
                // `prepare`).
                if unsafe { sq.push(&entry) }.is_err() {
                    // SAFETY: `raw` came from Box::into_raw just above and was not
                    // handed to the kernel.
                    ready.push_front(unsafe { Box::from_raw(raw) });
                    break;
                }
                if uses_fixed {
                    shared.fixed_ops.fetch_add(1, Ordering::Relaxed);
                }
                in_flight += 1;
            }
        }

        if shutdown && in_flight == 0 && !wake_armed && ready.is_empty() && shared.queue.is_empty()
        {
            break;
        }

        // Block for a completion unless there is work we could issue right away.
        let mut want = 1;
        if in_flight < in_flight_max {
            if !ready.is_empty() {
                want = 0;
            } else {
                shared.ring_sleeping.store(true, Ordering::SeqCst);
                // Pairs with the fence in `launch`.
                fence(Ordering::SeqCst);
                if !shared.queue.is_empty() {
                    shared.ring_sleeping.store(false, Ordering::SeqCst);
                    want = 0;
                }
            }
        }
        if in_flight == 0 && !wake_armed {
            // Nothing could complete: never block (only reachable while shutting down).
            want = 0;
        }
        match ring.submit_and_wait(want) {
            Ok(_) => {}
            Err(e) => match e.raw_os_error() {
                // Interrupted, or the kernel is short of resources / has completions
                // to hand out first: reap below and go round again.
                Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY) => {}
                _ => {
                    shared.poison(&DeviceError::Uring { source: e });
                    // Requests may still be in the kernel, so the loop must go on
                    // reaping; pause so a persistent failure does not spin.
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            },
        }
        shared.ring_sleeping.store(false, Ordering::SeqCst);

        for cqe in ring.completion() {
            let user_data = cqe.user_data();
            let result = cqe.result();
            if user_data == WAKE_USER_DATA {
                wake_armed = false;
                continue;
            }
            in_flight -= 1;
            // SAFETY: every non-wake user_data is a pointer from Box::into_raw above,
            // and the kernel posts exactly one CQE per SQE, so it is reclaimed once.
            let mut request = unsafe { Box::from_raw(user_data as *mut Pending) };
            if result < 0 {
                let errno = -result;
                if (errno == libc::EINTR || errno == libc::EAGAIN) && request.retries < RETRIES_MAX
                {
                    request.retries += 1;
                    ready.push_back(request);
                } else {
                    let error = request.io_error(io::Error::from_raw_os_error(errno));
                    finish(&shared, *request, Some(error));
                }
                continue;
            }
            if request.is_flush() {
                shared.counters.record_flush();
                finish(&shared, *request, None);
                continue;
            }
            let n = result as u64;
            if n == 0 {
                // No progress on a non-empty range: the file shrank under us (read)
                // or the device accepts nothing (write).
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
                finish(&shared, *request, Some(error));
                continue;
            }
            request.advance(n);
            request.retries = 0;
            if request.done_bytes < request.total_bytes {
                ready.push_back(request);
            } else {
                match request.kind {
                    PendingKind::Read { .. } => shared.counters.record_read(request.total_bytes),
                    _ => shared.counters.record_write(request.total_bytes),
                }
                finish(&shared, *request, None);
            }
        }
    }
    // The ring (and with it the registration of the arena) goes before `wake_value`.
    drop(ring);
    drop(wake_value);
}

fn finish(shared: &Shared, request: Pending, error: Option<DeviceError>) {
    if let Some(e) = &error {
        shared.poison(e);
    }
    request.batch.finish_one(error);
}
