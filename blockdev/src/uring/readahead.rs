//! Reads left in flight while their caller does other work (a scan's next batch of
//! values while the current one is consumed).
//!
//! Such a batch holds its ring for as long as the caller lets it: between the start
//! and the wait, the caller may submit other I/O on the same device from the same
//! thread. Were the ring taken from the device's pool, that submit could wait for a
//! ring that only the caller itself can give back (every ring held by read-aheads of
//! callers that are all waiting): a deadlock. So read-aheads take their rings from a
//! pool of their own, the device's read-ahead pool, and never wait for one: when it
//! has none free and may not grow, there is no read-ahead, and the caller reads when
//! it needs the data. Nothing ever waits on the read-ahead pool, and nothing in it
//! waits on the main pool, so the two cannot deadlock.
//!
//! The read-ahead rings do not register the buffer arena: read-ahead buffers are the
//! caller's heap buffers, and registering would spend RLIMIT_MEMLOCK that the main
//! pool's rings need for their fixed buffers.
//!
//! This is crate-private: the safe interface is [`crate::PendingReads`], which owns
//! the buffers these reads go into.

use super::batch::RingBatch;
use super::device::UringDevice;
use super::pool::{new_uring, Ring, RingLease};
use super::request::Prepared;
use crate::device::IoOp;
use crate::error::Result;
use std::marker::PhantomData;

/// A ring of a device's read-ahead pool, checked out for one batch of reads.
pub(crate) struct ReadaheadRing<'d> {
    device: &'d UringDevice,
    lease: RingLease<'d>,
}

/// Reads issued on a read-ahead ring and not yet waited for. Dropping it without
/// `wait` issues nothing more but still reaps every completion owed (see
/// [`RingBatch`]), so it returns only when the kernel is done with the buffers.
pub(crate) struct InFlightReads<'d> {
    batch: RingBatch<'d, 'static>,
}

impl UringDevice {
    /// A free read-ahead ring, or a new one while the read-ahead pool may grow (to
    /// `rings_max`, like the main pool: each scan in progress holds at most one per
    /// device). Never waits: `None` means no read-ahead now.
    pub(crate) fn try_readahead_ring(&self) -> Option<ReadaheadRing<'_>> {
        let pool = &self.readahead_pool;
        let ring = match pool.free.pop() {
            Some(ring) => ring,
            None if pool.reserve_growth() => match new_uring(self.ring_entries_requested) {
                Ok(uring) => Ring {
                    uring,
                    arena_registered: false,
                },
                Err(_) => {
                    pool.growth_failed();
                    return None;
                }
            },
            None => return None,
        };
        Some(ReadaheadRing {
            device: self,
            lease: RingLease {
                pool,
                ring: Some(ring),
            },
        })
    }

    /// Read-ahead rings created so far (a statistic, and for tests).
    pub fn readahead_rings_created(&self) -> usize {
        self.readahead_pool
            .created
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl<'d> ReadaheadRing<'d> {
    /// Validates `ops`, which must all be reads, and issues them without waiting for
    /// their completions. A batch larger than the ring issues the rest at `wait`.
    ///
    /// # Safety
    /// The buffers of `ops` must stay allocated, and nothing may read or write them,
    /// until the returned `InFlightReads` has been waited for or dropped (if it is
    /// leaked: forever). The borrow in `ops` does not express that, since it ends when
    /// this returns.
    pub(crate) unsafe fn start(self, ops: &mut [IoOp<'_>]) -> Result<InFlightReads<'d>> {
        debug_assert!(
            ops.iter().all(|op| !op.is_write()),
            "read-ahead carries reads only"
        );
        let prepared = self.device.prepare(ops)?;
        // The requests' raw pointers are into the caller's buffers, which the caller
        // keeps allocated and untouched until the batch is waited for or dropped
        // (this function's contract), so the batch may outlive the borrow of `ops`.
        let detached: Prepared<'static> = Prepared {
            requests: prepared.requests,
            _buffers: PhantomData,
        };
        let mut batch = RingBatch::new(self.device, self.lease, detached);
        batch.start();
        Ok(InFlightReads { batch })
    }
}

impl InFlightReads<'_> {
    /// Waits until every read has completed (issuing the rest of a batch larger than
    /// the ring); the first error.
    pub(crate) fn wait(self) -> Result<()> {
        self.batch.run()
    }
}

// SAFETY: what keeps a batch from being Send is the raw buffer pointers in its
// requests, which are only handed to the kernel, never dereferenced; the buffers belong
// to the owner of this value (see `start`), which moves with it. The ring may be
// driven from any thread (it is not set up IORING_SETUP_SINGLE_ISSUER), and the device
// and pool it borrows are Sync. A read cancelled because the thread that issued it
// exited is issued again (see `RingBatch::complete`).
unsafe impl Send for InFlightReads<'_> {}
