//! Reads that a caller starts now and collects later: [`BlockDevice::start_reads`]
//! returns a [`PendingReads`] that owns the buffers, so the caller can do other work
//! (consume the values it read before) while the device reads the next ones.

use crate::buf::AlignedBuf;
use crate::device::{BlockDevice, IoOp};
use crate::error::Result;
use crate::uring::InFlightReads;

/// One read of a [`PendingReads`]: `len` bytes at device offset `offset` into the
/// start of `buf`.
#[derive(Debug)]
pub struct OwnedRead {
    pub offset: u64,
    pub len: usize,
    pub buf: AlignedBuf,
}

impl OwnedRead {
    /// A read of `len` bytes at `offset` into a fresh buffer.
    pub fn new(offset: u64, len: usize) -> OwnedRead {
        OwnedRead {
            offset,
            len,
            buf: AlignedBuf::new(len),
        }
    }

    /// A read of `len` bytes at `offset` into `buf`, a buffer the caller reuses
    /// (whatever it holds is overwritten up to `len`). Panics if `buf` is shorter than
    /// `len`.
    pub fn with_buf(offset: u64, len: usize, buf: AlignedBuf) -> OwnedRead {
        assert!(
            buf.len() >= len,
            "a read of {len} bytes into a buffer of {}",
            buf.len()
        );
        OwnedRead { offset, len, buf }
    }

    fn op(&mut self) -> IoOp<'_> {
        IoOp::Read {
            offset: self.offset,
            buf: &mut self.buf[..self.len],
        }
    }
}

/// The ops that perform `reads`, borrowing their buffers.
pub fn read_ops(reads: &mut [OwnedRead]) -> Vec<IoOp<'_>> {
    reads.iter_mut().map(OwnedRead::op).collect()
}

/// Reads started by [`BlockDevice::start_reads`]: in flight on the device's
/// read-ahead rings, or, where none was free or the device has none, not yet issued
/// (then `wait` issues them). Either way `wait` returns the reads once all have
/// completed. Dropped without `wait`, it returns only when the device is done with
/// its buffers.
pub struct PendingReads<'d> {
    /// Declared before `reads`, so dropped first: each batch reaps every completion it
    /// still owes before the buffers below are freed.
    in_flight: Vec<InFlightReads<'d>>,
    /// The device to read on at `wait`, when the reads were not issued at the start.
    not_started: Option<&'d dyn BlockDevice>,
    reads: Vec<OwnedRead>,
}

impl<'d> PendingReads<'d> {
    /// Reads that `wait` will issue on `device` (read-ahead that found no ring free).
    pub fn not_started(device: &'d dyn BlockDevice, reads: Vec<OwnedRead>) -> PendingReads<'d> {
        PendingReads {
            in_flight: Vec::new(),
            not_started: Some(device),
            reads,
        }
    }

    /// Reads that are done already (devices that cannot leave reads in flight read
    /// them before `start_reads` returns).
    pub fn done(reads: Vec<OwnedRead>) -> PendingReads<'d> {
        PendingReads {
            in_flight: Vec::new(),
            not_started: None,
            reads,
        }
    }

    /// Issues `reads` on read-ahead rings: `start` is given the reads' ops (borrowing
    /// their buffers) and returns the batches it put in flight, or `None` to leave the
    /// reads to `wait` on `device`.
    ///
    /// What `start` may rely on (the requirement of `ReadaheadRing::start`): the
    /// buffers of the ops stay allocated and untouched until every batch it returns
    /// has been waited for or dropped. `PendingReads` owns them, and drops its batches
    /// before them; only the buffers' heap allocations are lent out, which moving
    /// `PendingReads` (or its Vec) does not move.
    pub(crate) fn start_with(
        device: &'d dyn BlockDevice,
        reads: Vec<OwnedRead>,
        start: impl FnOnce(&mut [IoOp<'_>]) -> Result<Option<Vec<InFlightReads<'d>>>>,
    ) -> Result<PendingReads<'d>> {
        let mut pending = PendingReads {
            in_flight: Vec::new(),
            not_started: None,
            reads,
        };
        if pending.reads.is_empty() {
            return Ok(pending);
        }
        // On an error return `pending` drops its batches before the buffers; batches
        // `start` made before failing were dropped (and reaped) inside it.
        let mut ops = read_ops(&mut pending.reads);
        match start(&mut ops)? {
            Some(batches) => pending.in_flight = batches,
            None => pending.not_started = Some(device),
        }
        Ok(pending)
    }

    /// True when the reads were issued at the start (a read-ahead ring was free).
    pub fn in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Waits for every read (issuing them now if they were not started); returns the
    /// reads with their buffers filled, or the first error.
    pub fn wait(mut self) -> Result<Vec<OwnedRead>> {
        let mut result = Ok(());
        for batch in self.in_flight.drain(..) {
            let r = batch.wait();
            if result.is_ok() {
                result = r;
            }
        }
        if let Some(device) = self.not_started.take() {
            let mut ops = read_ops(&mut self.reads);
            let r = device.submit(&mut ops);
            if result.is_ok() {
                result = r;
            }
        }
        result?;
        Ok(std::mem::take(&mut self.reads))
    }
}

impl std::fmt::Debug for PendingReads<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingReads")
            .field("reads", &self.reads.len())
            .field("batches_in_flight", &self.in_flight.len())
            .field("not_started", &self.not_started.is_some())
            .finish()
    }
}
