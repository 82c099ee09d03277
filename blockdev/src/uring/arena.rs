//! The fixed-buffer arena: memory registered with a device's rings, carved into
//! page-granular [`AlignedBuf`]s, and how large it may be under RLIMIT_MEMLOCK.

use crate::buf::{AlignedBuf, BUFFER_ALIGN_BYTES};
use io_uring::IoUring;
use parking_lot::Mutex;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::Arc;

/// Index of the arena in a ring's registered buffer table (we register one).
pub(super) const ARENA_BUF_INDEX: u16 = 0;

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

// SAFETY: the arena's memory is only read or written through `AlignedBuf`s, each of
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
    pub(super) fn contains(&self, addr: usize, len: usize) -> bool {
        let base = self.ptr.as_ptr() as usize;
        addr >= base
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= base + self.len_bytes)
    }

    /// A zeroed buffer of `len_bytes` rounded up to pages, or `None` if the arena has
    /// no free run that long.
    fn try_alloc(self: &Arc<Self>, len_bytes: usize) -> Option<AlignedBuf> {
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
        // SAFETY: the page range was free and is now marked used under the mutex, so
        // this buffer alone uses it until its drop calls `release`; it lies inside the
        // arena (the bitmap has one entry per page), whose memory was zeroed at
        // allocation and is page-aligned.
        let mut buf = unsafe {
            AlignedBuf::in_arena(
                Arc::clone(self),
                NonNull::new_unchecked(self.ptr.as_ptr().add(first_page * ARENA_PAGE_BYTES)),
                pages * ARENA_PAGE_BYTES,
                first_page,
            )
        };
        // Earlier users' bytes must not leak into this buffer's writes.
        buf.fill(0);
        Some(buf)
    }

    /// Takes back the `len_bytes` from `first_page` on that a buffer held (its drop).
    pub(crate) fn release(&self, first_page: usize, len_bytes: usize) {
        let pages = len_bytes / ARENA_PAGE_BYTES;
        let mut used = self.used_pages.lock();
        used[first_page..first_page + pages]
            .iter_mut()
            .for_each(|u| *u = false);
    }
}

impl Drop for BufferArena {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.len_bytes, ARENA_PAGE_BYTES).expect("layout");
        // SAFETY: allocated in `new` with exactly this layout. Every AlignedBuf in it holds an
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

/// Allocates from `arena` if given and it has room, else from the heap.
pub fn alloc_device_buffer(arena: Option<&Arc<BufferArena>>, len_bytes: usize) -> AlignedBuf {
    arena
        .and_then(|a| a.try_alloc(len_bytes))
        .unwrap_or_else(|| AlignedBuf::new(len_bytes))
}

/// Registered arenas smaller than this are not worth having: one engine flush or GC
/// read batch would not fit, and plain ops would be used for it anyway.
pub const ARENA_BYTES_MIN: usize = 256 << 10;
/// The largest buffer the kernel registers (larger ones fail with EFAULT).
pub const ARENA_BYTES_MAX: usize = 1 << 30;

/// A device's arenas take at most this fraction (1/n) of RLIMIT_MEMLOCK: the limit is
/// shared by all of the user's processes and also pays for the rings themselves.
const MEMLOCK_SHARE_DIVISOR: u64 = 8;

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
    let share = usize::try_from(limit.rlim_cur / MEMLOCK_SHARE_DIVISOR / rings.max(1) as u64)
        .unwrap_or(usize::MAX);
    let allowed = requested_bytes.min(share);
    if allowed < ARENA_BYTES_MIN {
        0
    } else {
        allowed
    }
}

pub(super) fn register_arena(uring: &IoUring, arena: &BufferArena) -> io::Result<()> {
    let iovecs = [arena.iovec()];
    // SAFETY: the iovec describes the arena's live allocation, which stays allocated
    // while the ring exists: a device keeps an Arc to its registered arena and drops
    // its rings before it (field order), and a ring lives only in its device's pool or
    // in a lease borrowed from the device. An arena whose registration failed is not
    // registered, so dropping it is fine.
    unsafe { uring.submitter().register_buffers(&iovecs) }
}
