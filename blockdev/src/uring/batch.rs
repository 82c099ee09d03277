//! One caller's batch on one checked-out ring: issue, wait, reap, continue short I/O,
//! and never let go of the ring before every completion it asked for is reaped.

use super::device::UringDevice;
use super::pool::RingLease;
use super::request::{Prepared, Request, RequestKind};
use super::{ENTER_FAILURE_PAUSE, RETRIES_MAX};
use crate::error::{DeviceError, Result};
use io_uring::types;
use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

/// One caller's batch on a checked-out ring of one device, driven by the caller.
///
/// The batch lends its requests' buffers to the kernel for `'a`. It must not end
/// before the kernel is done with them: `run` returns only when every request has
/// finished, and `Drop` (reached without `run` only by unwinding) reaps every CQE
/// still owed before the lease puts the ring back. Crate-private because `mem::forget`
/// on it would break that.
pub(super) struct RingBatch<'d, 'a> {
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
    pub(super) fn new(
        device: &'d UringDevice,
        mut lease: RingLease<'d>,
        prepared: Prepared<'a>,
    ) -> Self {
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
            // A read is cancelled (ECANCELED) when the thread that issued it exits while
            // it waits in io_uring's workers: a read-ahead may be waited for by another
            // thread (see `readahead.rs`). Reads can be issued again; writes are not
            // cancelled that way, since their batch's thread waits for them.
            let cancelled_read =
                errno == libc::ECANCELED && matches!(request.kind, RequestKind::Read { .. });
            let transient = errno == libc::EINTR || errno == libc::EAGAIN || cancelled_read;
            if transient && request.retries < RETRIES_MAX {
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
    pub(super) fn start(&mut self) {
        self.push_ready();
        self.enter(0);
    }

    /// Issues, waits and reaps until every request has finished; the first error.
    pub(super) fn run(mut self) -> Result<()> {
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
