//! The flush pipeline: a flush's second half runs on the commit thread, so that the
//! next flush places its records while the device makes this one's durable.
//!
//! A flush places its records and starts their writes under the commit lock
//! (`flush.rs`, `flush_writes.rs`), then queues a [`PlacedFlush`] here and lets the
//! lock go. The commit thread takes every flush queued, waits for their writes,
//! flushes the device once for all of them, and writes their index batches in queue
//! order. Measured before the pipeline (session 16): leaving the
//! device flush out of non-synced flushes altogether ran the load 17-25% faster and
//! update-heavy phases 7-12% faster; a flush's device flush took about as long as its
//! writes.
//!
//! GCs queue their plans here too ([`QueuedPlan`]), behind the flushes placed before
//! them, and wait for the commit thread's outcome without the commit lock: a GC that
//! drained the pipeline under the lock kept every flush from placing for as long as
//! the commit thread needed to finish the placed ones (70-135 ms in a trace of the
//! 1 KiB updates, with flushes waiting 100-214 ms for the lock).
//!
//! # Why the order and the crash argument of `commit/mod.rs` still hold
//! - Flushes are placed one at a time under the commit lock, in flush-number order, and
//!   queued in that order; the commit thread commits them in queue order. Index batches
//!   reach the index's log in placement order, as before.
//! - The commit thread waits for a flush's writes to complete before it starts the
//!   device flush: the device flush covers its records, and comes before its batch. A
//!   failed write fails the flush there, like a failed device flush.
//! - A GC builds its plan under the commit lock from what every flush placed so far
//!   changed (the value store's tables are updated at placement, and the keys placed
//!   flushes wrote are noted for it, `gc::written_keys`) and queues it there: its batch
//!   reaches the index after theirs and before any placed later, as when it committed
//!   under a drained lock. Its writes, if any, run like a flush's ([`WritesInFlight`]),
//!   and the commit thread flushes the device before its batch.
//! - Every other holder of the commit lock (a refused write's take-back, `check`) takes
//!   it *drained*: it waits until nothing queued is uncommitted.
//! - A flush's map stays in the write cache, served to readers, until its batch is in
//!   the index (the commit thread releases it).
//! - After a failure the store is poisoned and no later queued flush commits: its batch
//!   could carry the value store's entries past records of the failed one.

use super::flush_writes::WritesInFlight;
use crate::error::{Error, Result};
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

/// Flushes placed but not committed while the next one places: one. A second would
/// only queue behind the first's device flush (the commit thread takes them together)
/// and hold one more write cache's worth of memory.
pub const UNCOMMITTED_FLUSHES_MAX: u64 = 1;

/// A flush whose records are placed and their writes started: what its commit still
/// needs.
pub(crate) struct PlacedFlush {
    pub flush_no: u64,
    /// None: the flush had nothing to write (its map was empty).
    pub batch: Option<hashkv_lsm::WriteBatch>,
    /// Its writes to the device, in flight or completed (None: the lsm mode's flushes,
    /// and the other modes' of inline values only, write none): its commit waits for
    /// them, and needs a device flush only if there are any.
    pub writes: Option<Arc<WritesInFlight>>,
    /// The batch is synced to the index's disk before the flush counts as committed.
    pub durable: bool,
}

/// A GC's plan queued behind the flushes placed before it: what its commit needs, and
/// where the commit thread sends the outcome (the reader generation after which the
/// space the GC released may be reused, or the error that failed it).
pub(crate) struct QueuedPlan {
    pub batch: hashkv_lsm::WriteBatch,
    /// Its writes in flight, if it writes anything when it commits.
    pub writes: Option<Arc<WritesInFlight>>,
    pub durable: bool,
    pub outcome: SyncSender<Result<u64>>,
}

/// What the commit thread commits, in queue order.
pub(crate) enum Queued {
    Flush(PlacedFlush),
    Plan(QueuedPlan),
}

impl Queued {
    pub fn batch(&self) -> Option<&hashkv_lsm::WriteBatch> {
        match self {
            Queued::Flush(f) => f.batch.as_ref(),
            Queued::Plan(p) => Some(&p.batch),
        }
    }

    pub fn writes(&self) -> Option<&Arc<WritesInFlight>> {
        match self {
            Queued::Flush(f) => f.writes.as_ref(),
            Queued::Plan(p) => p.writes.as_ref(),
        }
    }

    pub fn durable(&self) -> bool {
        match self {
            Queued::Flush(f) => f.durable,
            Queued::Plan(p) => p.durable,
        }
    }
}

/// How far a flush has come, as a caller waiting for it asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Placed and written: its map has left the active cache (writers' backpressure).
    Placed,
    /// Its batch is in the index: it survives kill -9.
    Committed,
    /// Its batch is synced: it survives a power cut.
    Durable,
}

/// What a caller waiting for a flush does next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// The flush has reached what was asked.
    Done,
    /// Not placed yet: the caller flushes.
    Unplaced,
    /// Committed, not durable: the caller syncs the index's log; every flush below
    /// this number is durable then.
    NeedsSync(u64),
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// Flushes numbered below these are placed, settled (committed or failed, and
    /// their maps released), committed, durable. Numbers, not counts: a flush
    /// refused for space leaves its number unused.
    placed: u64,
    settled: u64,
    committed: u64,
    durable: u64,
    /// Flushes placed and not yet settled.
    unsettled: u64,
    /// GC plans queued and not yet settled.
    plans_unsettled: u64,
    /// The commit thread's first failure: every flush settled after it failed.
    failure: Option<Error>,
    stopping: bool,
    /// Stopping without committing what is queued (a simulated crash), or the
    /// commit thread is gone.
    abandon: bool,
}

#[derive(Default)]
pub(crate) struct Pipeline {
    state: Mutex<State>,
    /// Signalled whenever a flush is queued or settles, and at stop.
    changed: Condvar,
}

impl Pipeline {
    /// Queues a placed flush (under the commit lock, in flush-number order).
    pub fn queue(&self, placed: PlacedFlush) {
        let mut s = self.state.lock();
        debug_assert!(placed.flush_no >= s.placed, "flushes queue in order");
        s.placed = placed.flush_no + 1;
        if s.abandon {
            // No commit thread will take it: it fails as soon as it is waited for.
            s.settled = s.placed;
            s.failure
                .get_or_insert_with(|| Error::CommitThreadPanicked {
                    message: "the commit thread has stopped".into(),
                });
            self.changed.notify_all();
            return;
        }
        s.unsettled += 1;
        s.queue.push_back(Queued::Flush(placed));
        self.changed.notify_all();
    }

    /// Queues a GC's plan behind the flushes placed so far (under the commit lock).
    pub fn queue_plan(&self, plan: QueuedPlan) {
        let mut s = self.state.lock();
        if s.abandon {
            // No commit thread will take it: dropping its sender fails its waiter.
            return;
        }
        s.plans_unsettled += 1;
        s.queue.push_back(Queued::Plan(plan));
        self.changed.notify_all();
    }

    /// Waits until at most `flushes_max` placed flushes and `plans_max` queued plans
    /// are unsettled.
    pub fn wait_unsettled_at_most(&self, flushes_max: u64, plans_max: u64) {
        let mut s = self.state.lock();
        while s.unsettled > flushes_max || s.plans_unsettled > plans_max {
            self.changed.wait(&mut s);
        }
    }

    /// Flushes numbered below this are placed.
    pub fn placed(&self) -> u64 {
        self.state.lock().placed
    }

    /// Where flush `flush_no` stands against `reach`, waiting while it is placed but
    /// not yet there. Errors: the commit thread failed on it (or before it).
    pub fn progress(&self, flush_no: u64, reach: Reach) -> Result<Progress> {
        let mut s = self.state.lock();
        loop {
            // First: a writer that waited only for placement must not be told Ok
            // once its flush is known to have failed.
            if s.settled > flush_no && s.committed <= flush_no {
                let failure = s
                    .failure
                    .clone()
                    .expect("a settled flush not committed failed");
                return Err(failure);
            }
            let done = match reach {
                Reach::Placed => s.placed > flush_no,
                Reach::Committed => s.committed > flush_no,
                Reach::Durable => s.durable > flush_no,
            };
            if done {
                return Ok(Progress::Done);
            }
            if reach == Reach::Durable && s.committed > flush_no {
                return Ok(Progress::NeedsSync(s.committed));
            }
            if s.placed <= flush_no {
                return Ok(Progress::Unplaced);
            }
            self.changed.wait(&mut s);
        }
    }

    /// Flushes below `flush_no` are durable (the caller synced the index's log after
    /// they were committed).
    pub fn note_durable(&self, flush_no: u64) {
        let mut s = self.state.lock();
        s.durable = s.durable.max(flush_no);
    }

    /// The commit thread's next work: everything queued, oldest first. Waits for one;
    /// `None` once stopping with nothing queued, or once abandoned.
    pub fn take_queued(&self) -> Option<Vec<Queued>> {
        let mut s = self.state.lock();
        loop {
            if s.abandon {
                return None;
            }
            if !s.queue.is_empty() {
                return Some(s.queue.drain(..).collect());
            }
            if s.stopping {
                return None;
            }
            self.changed.wait(&mut s);
        }
    }

    /// The commit thread settled `count` flushes, numbered below `through`, and `plans`
    /// GC plans: committed (and durable, if `synced`), or failed with `failure`. (The
    /// plans' own outcomes went to their senders.)
    pub fn settle(
        &self,
        count: u64,
        through: u64,
        plans: u64,
        outcome: std::result::Result<bool, Error>,
    ) {
        let mut s = self.state.lock();
        s.unsettled -= count;
        s.plans_unsettled -= plans;
        s.settled = s.settled.max(through);
        match outcome {
            Ok(synced) => {
                s.committed = s.committed.max(through);
                if synced {
                    s.durable = s.durable.max(through);
                }
            }
            Err(e) => {
                s.failure.get_or_insert(e);
            }
        }
        self.changed.notify_all();
    }

    /// The commit thread returns once the queue is empty.
    pub fn stop(&self) {
        self.state.lock().stopping = true;
        self.changed.notify_all();
    }

    /// The commit thread returns without committing what is queued, as a crash
    /// would leave it (`Db::crash_for_test`).
    pub fn abandon(&self) {
        self.state.lock().abandon = true;
        self.changed.notify_all();
    }

    /// The commit thread died (it panicked): every placed flush fails with
    /// `failure`, now and later, so that no caller waits for it forever.
    pub fn fail_all(&self, failure: Error) {
        let mut s = self.state.lock();
        s.failure.get_or_insert(failure);
        // Dropping the plans' senders fails their waiters.
        s.queue.clear();
        s.unsettled = 0;
        s.plans_unsettled = 0;
        s.settled = s.placed;
        s.abandon = true;
        self.changed.notify_all();
    }

    #[cfg(test)]
    fn snapshot(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// Runs `f` on the pipeline in another thread (a waiter the test then releases).
    fn in_thread<T: Send + 'static>(
        p: &Arc<Pipeline>,
        f: impl FnOnce(&Pipeline) -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let p = p.clone();
        std::thread::spawn(move || f(&p))
    }

    fn placed(flush_no: u64, durable: bool) -> PlacedFlush {
        PlacedFlush {
            flush_no,
            batch: None,
            writes: None,
            durable,
        }
    }

    fn flush_no(q: &Queued) -> Option<u64> {
        match q {
            Queued::Flush(f) => Some(f.flush_no),
            Queued::Plan(_) => None,
        }
    }

    fn plan() -> (QueuedPlan, std::sync::mpsc::Receiver<Result<u64>>) {
        let (outcome, rx) = std::sync::mpsc::sync_channel(1);
        let plan = QueuedPlan {
            batch: hashkv_lsm::WriteBatch::new(),
            writes: None,
            durable: true,
            outcome,
        };
        (plan, rx)
    }

    #[test]
    fn a_plan_commits_between_the_flushes_placed_before_and_after_it() {
        let p = Arc::new(Pipeline::default());
        p.queue(placed(0, false));
        let (queued, rx) = plan();
        p.queue_plan(queued);
        p.queue(placed(1, false));
        // A flush places beside one unsettled flush and a plan...
        p.wait_unsettled_at_most(UNCOMMITTED_FLUSHES_MAX + 1, u64::MAX);
        // ...but a drained holder waits for the plan too.
        let drainer = in_thread(&p, |p| p.wait_unsettled_at_most(0, 0));
        let taken = p.take_queued().unwrap();
        assert_eq!(
            taken.iter().map(flush_no).collect::<Vec<_>>(),
            vec![Some(0), None, Some(1)],
            "in queue order"
        );
        assert!(taken[1].durable() && taken[1].batch().is_some());
        p.settle(2, 2, 0, Ok(true));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!drainer.is_finished(), "the plan is still unsettled");
        p.settle(0, 0, 1, Ok(true));
        drainer.join().unwrap();
        drop(taken);
        assert!(rx.recv().is_err(), "no outcome was sent: its waiter fails");
    }

    #[test]
    fn a_plan_queued_after_a_crash_or_a_dead_commit_thread_fails_its_waiter() {
        let p = Pipeline::default();
        let (queued, rx) = plan();
        p.queue_plan(queued);
        p.fail_all(Error::CommitThreadPanicked {
            message: "for the test".into(),
        });
        assert!(rx.recv().is_err(), "dropped with the queue");
        let (queued, rx) = plan();
        p.queue_plan(queued);
        assert!(rx.recv().is_err(), "never queued");
        p.wait_unsettled_at_most(0, 0);
    }

    #[test]
    fn a_flush_is_placed_then_committed_then_durable_in_that_order() {
        let p = Pipeline::default();
        assert_eq!(p.progress(0, Reach::Placed).unwrap(), Progress::Unplaced);
        p.queue(placed(0, false));
        assert_eq!(p.progress(0, Reach::Placed).unwrap(), Progress::Done);
        assert_eq!(p.progress(1, Reach::Placed).unwrap(), Progress::Unplaced);
        let taken = p.take_queued().unwrap();
        assert_eq!(taken.len(), 1);
        p.settle(1, 1, 0, Ok(false));
        assert_eq!(p.progress(0, Reach::Committed).unwrap(), Progress::Done);
        assert_eq!(
            p.progress(0, Reach::Durable).unwrap(),
            Progress::NeedsSync(1)
        );
        p.note_durable(1);
        assert_eq!(p.progress(0, Reach::Durable).unwrap(), Progress::Done);
    }

    #[test]
    fn a_caller_waits_for_a_placed_flush_and_sees_its_failure() {
        let p = Arc::new(Pipeline::default());
        p.queue(placed(0, false));
        p.queue(placed(1, true));
        let waiter = in_thread(&p, |p| p.progress(1, Reach::Committed));
        let taken = p.take_queued().unwrap();
        assert_eq!(
            taken.iter().map(flush_no).collect::<Vec<_>>(),
            vec![Some(0), Some(1)],
            "taken together, oldest first"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished(), "waits while placed and unsettled");
        p.settle(
            2,
            2,
            0,
            Err(Error::InvalidOptions {
                reason: "a failed device flush, for the test".into(),
            }),
        );
        assert!(waiter.join().unwrap().is_err());
        // Nothing it failed on counts as committed, not even as placed for a writer
        // that waits only for that.
        assert!(p.progress(0, Reach::Committed).is_err());
        assert!(p.progress(0, Reach::Placed).is_err());
        assert_eq!(p.snapshot().committed, 0);
        assert!(p.snapshot().failure.is_some());
    }

    #[test]
    fn at_most_the_allowed_number_of_flushes_stays_unsettled() {
        let p = Arc::new(Pipeline::default());
        p.queue(placed(0, false));
        p.queue(placed(1, false));
        let drainer = in_thread(&p, |p| p.wait_unsettled_at_most(UNCOMMITTED_FLUSHES_MAX, 0));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!drainer.is_finished(), "two unsettled");
        p.settle(1, 1, 0, Ok(false));
        drainer.join().unwrap();
        assert_eq!(p.snapshot().committed, 1);
        p.stop();
        assert_eq!(
            p.take_queued().map(|q| q.len()),
            Some(2),
            "the queue drains first"
        );
        assert!(p.take_queued().is_none());
    }

    #[test]
    fn a_dead_commit_thread_fails_every_placed_flush_instead_of_hanging_its_waiters() {
        let p = Arc::new(Pipeline::default());
        p.queue(placed(0, false));
        let waiter = in_thread(&p, |p| p.progress(0, Reach::Durable));
        let drainer = in_thread(&p, |p| p.wait_unsettled_at_most(0, 0));
        std::thread::sleep(Duration::from_millis(20));
        p.fail_all(Error::CommitThreadPanicked {
            message: "for the test".into(),
        });
        assert!(waiter.join().unwrap().is_err());
        drainer.join().unwrap();
        assert!(p.take_queued().is_none());
        // A flush placed after it fails at once.
        p.queue(placed(1, false));
        assert!(p.progress(1, Reach::Placed).is_err());
        p.wait_unsettled_at_most(0, 0);
    }

    #[test]
    fn an_abandoned_queue_is_not_committed() {
        let p = Pipeline::default();
        p.queue(placed(0, false));
        p.abandon();
        assert!(p.take_queued().is_none(), "a crash commits nothing more");
    }
}
