//! A device's pool of rings: checked out by one batch at a time, created on demand up
//! to the configured most, waited for beyond that.

use crossbeam_queue::ArrayQueue;
use io_uring::IoUring;
use parking_lot::{Condvar, Mutex};
use std::io;
use std::sync::atomic::{fence, AtomicUsize, Ordering};

/// One io_uring instance of a device's pool.
pub(super) struct Ring {
    pub(super) uring: IoUring,
    /// The device's arena is registered with this ring: arena buffers go out as
    /// READ_FIXED/WRITE_FIXED on it.
    pub(super) arena_registered: bool,
}

/// A device's rings. A free ring waits in `free`; a checked-out ring belongs to one
/// batch of one caller until that batch has reaped every completion it asked for.
pub(super) struct RingPool {
    /// Capacity: the configured `rings_max`, so a ring put back always fits.
    pub(super) free: ArrayQueue<Ring>,
    /// Rings in existence, free or checked out. Never 0 after open for a device's
    /// main pool; its read-ahead pool starts empty.
    pub(super) created: AtomicUsize,
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
    pub(super) fn new(rings_max: usize, first: Ring) -> RingPool {
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

    /// A pool with no ring yet, growing to `rings_max` (a device's read-ahead pool,
    /// whose users never wait for a ring: see `readahead.rs`).
    pub(super) fn empty(rings_max: usize) -> RingPool {
        RingPool {
            free: ArrayQueue::new(rings_max),
            created: AtomicUsize::new(0),
            growth_max: AtomicUsize::new(rings_max),
            waiters: AtomicUsize::new(0),
            waiters_lock: Mutex::new(()),
            ring_returned: Condvar::new(),
        }
    }

    /// Reserves a place for one more ring, if the pool may grow.
    pub(super) fn reserve_growth(&self) -> bool {
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
    pub(super) fn growth_failed(&self) {
        let before = self.created.fetch_sub(1, Ordering::Relaxed);
        self.growth_max.fetch_min(before - 1, Ordering::Relaxed);
    }

    /// Blocks until a ring is put back, and takes it.
    pub(super) fn wait_for_free(&self) -> Ring {
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

    pub(super) fn put_back(&self, ring: Ring) {
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

/// A ring checked out of a pool; dropping it puts the ring back. Only a
/// [`RingBatch`](super::batch::RingBatch) holds one, and it reaps all its completions
/// before the lease drops.
pub(super) struct RingLease<'d> {
    pub(super) pool: &'d RingPool,
    pub(super) ring: Option<Ring>,
}

impl RingLease<'_> {
    pub(super) fn ring(&mut self) -> &mut Ring {
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

/// CQ entries per SQ entry: a batch keeps at most one request per SQ entry in the
/// kernel, so a CQ twice the SQ cannot overflow even before the caller reaps.
const CQ_ENTRIES_PER_SQ_ENTRY: u32 = 2;

pub(super) fn new_uring(entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_cqsize(entries.saturating_mul(CQ_ENTRIES_PER_SQ_ENTRY))
        .build(entries)
}
