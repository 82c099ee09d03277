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
//! [`OpenOptions::rings_max`]: crate::file::OpenOptions::rings_max
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
//! Reads may also be left in flight while their caller does other work
//! ([`crate::BlockDevice::start_reads`]): such a batch takes a ring of the device's
//! read-ahead pool, which nobody waits for (see `readahead.rs` for why).
//!
//! Poisoning belongs to the device, not to a ring: after an I/O error on any ring every
//! later write and flush of the device is refused.

// `x % n != 0` rather than `is_multiple_of`: the workspace MSRV (1.80) predates it.
#![allow(clippy::manual_is_multiple_of)]

mod across;
mod arena;
mod batch;
mod device;
mod pool;
mod readahead;
mod request;

pub use across::{flush_across, submit_across};
pub use arena::{
    alloc_device_buffer, arena_bytes_allowed, BufferArena, ARENA_BYTES_MAX, ARENA_BYTES_MIN,
};
pub use device::UringDevice;
pub(crate) use readahead::InFlightReads;

use crate::buf::BUFFER_ALIGN_BYTES;

/// The smallest ring we build: one request in flight at a time.
pub const RING_ENTRIES_MIN: u32 = 1;
/// The largest ring we build. Deeper queues stop paying off on NVMe (the device's own
/// queues are typically 1024 deep) and cost pinned kernel memory per ring.
pub const RING_ENTRIES_MAX: u32 = 4096;
/// The most rings one device may keep ([`OpenOptions::rings_max`] is checked against
/// it). A ring is a descriptor and about 100 bytes of kernel memory per entry, and a
/// ring only pays off for a thread that submits while every other ring is in use: far
/// more rings than threads that can be in `submit` at once is a configuration mistake.
///
/// [`OpenOptions::rings_max`]: crate::file::OpenOptions::rings_max
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
