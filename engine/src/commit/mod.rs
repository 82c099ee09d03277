//! The committer: the only code that writes the index, and so the only way any change
//! to the store becomes real. A flush's placed map and a GC's [`Plan`] (device writes,
//! one index batch, and whether the batch must be durable) go the same way:
//!
//! 1. under the commit lock, their records' writes start ([`flush_writes`]: on a
//!    thread of their own, beside the previous writes except where they overlap them)
//!    and their commit is queued ([`pipeline`]); the lock goes, and the next flush
//!    places meanwhile;
//! 2. the commit thread waits for their writes and flushes the device, so that the
//!    records are durable,
//! 3. writes their index batches in queue order (synced if any asks),
//! 4. starts a new reader generation: space the commit released is reused only once
//!    readers that began before it are gone ([`crate::readers::Deferred`]). A GC waits
//!    for this outcome ([`PlanInFlight`]) without the lock.
//!
//! [`pipeline`] says why the argument below holds with commits queued.
//!
//! # Why a crash at any instant is safe (FORMAT.md, "Commit" and "GC")
//! Records are only ever written where no committed index entry points: past a
//! segment's or a log's committed end, or into a segment no committed chain names. So
//! until step 3 reaches the index's log, the committed state is untouched and the plan
//! is wholly absent after a crash. Step 2 precedes step 3 even when the batch is not
//! synced, because the index's log may reach its disk at any moment once written:
//! every pointer a durable batch carries names a durable record, and the plan is
//! wholly present. Plans are committed one at a time, so their batches reach the
//! index's log in commit order, and a GC's batch can never point a key back at a
//! version that a flush committed before it (see `gc::written_keys`).
//!
//! A GC may write its survivors before taking the lock ([`Committer::stage`]) when they
//! go into space that no committed state and no concurrent flush can name (segments
//! it took from the free pool): the order of writes, device flush and batch is the same.
//!
//! Any fatal error on this path poisons the store ([`poison`]).

mod device_write;
pub(crate) mod flush_writes;
pub(crate) mod pipeline;
pub(crate) mod poison;

use crate::buffers::BufferPool;
use crate::error::{Error, Result};
use crate::gc::written_keys::WrittenKeys;
use crate::readers::Readers;
use crate::stats::Counters;
use flush_writes::WritesInFlight;
use hashkv_blockdev::BlockDevice;
use parking_lot::{Mutex, MutexGuard};
use pipeline::{Pipeline, Queued, QueuedPlan, Reach, UNCOMMITTED_FLUSHES_MAX};
use poison::Poison;
use std::ops::{Deref, DerefMut};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

pub(crate) use device_write::{DeviceWrite, Spliced};

/// Whose bytes a plan writes, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Flush,
    Gc,
}

/// What a flush or a GC asks the committer to make true.
pub(crate) struct Plan {
    pub purpose: Purpose,
    pub writes: Vec<DeviceWrite>,
    pub batch: hashkv_lsm::WriteBatch,
    /// The batch is synced to the index's disk before `commit` returns.
    pub durable: bool,
}

/// State guarded by the commit lock: one flush placement or GC commit runs at a time,
/// which orders their index batches.
#[derive(Debug, Default)]
pub(crate) struct CommitState {
    /// Keys flushes placed since the running GC began.
    pub written_during_gc: WrittenKeys,
    /// The last flush's (or GC plan's) writes: the next submits what overlaps them after
    /// they completed. Each completes after the one before, so when these completed,
    /// all had.
    pub flush_writes: Option<Arc<WritesInFlight>>,
}

pub(crate) struct Committer {
    index: Arc<hashkv_lsm::Db>,
    device: Arc<dyn BlockDevice>,
    readers: Arc<Readers>,
    counters: Arc<Counters>,
    buffers: Arc<BufferPool>,
    /// Writes are cut into requests of at most this many bytes (block-aligned), so
    /// one large write is several requests in flight.
    write_piece_bytes: usize,
    state: Mutex<CommitState>,
    /// Flushes placed and written, waiting for their device flush and index batch.
    pub pipeline: Pipeline,
    poison: Poison,
}

/// The commit lock, held: the only way to queue a commit.
pub(crate) struct CommitGuard<'a> {
    committer: &'a Committer,
    state: MutexGuard<'a, CommitState>,
}

/// A GC's plan queued on the commit thread.
#[must_use = "the space a GC released waits for its commit's reader generation"]
pub(crate) struct PlanInFlight {
    outcome: Receiver<Result<u64>>,
}

impl PlanInFlight {
    /// Waits for the commit thread to commit the plan (and everything queued before
    /// it): the reader generation after which the space the plan released may be
    /// reused, or the error that failed it.
    pub fn wait(self) -> Result<u64> {
        self.outcome.recv().unwrap_or_else(|_| {
            Err(Error::CommitThreadPanicked {
                message: "the commit thread stopped before a GC's plan committed".into(),
            })
        })
    }
}

/// Where the flushes placed before a GC began stand (`CommitGuard::placed_so_far`):
/// what the GC waits for, without the commit lock, before it reads.
pub(crate) struct PlacedSoFar {
    /// Flushes numbered below this were placed.
    through: u64,
    /// The last of their writes (each waited for the one before).
    writes: Option<Arc<WritesInFlight>>,
}

impl Committer {
    pub fn new(
        index: Arc<hashkv_lsm::Db>,
        device: Arc<dyn BlockDevice>,
        readers: Arc<Readers>,
        counters: Arc<Counters>,
        buffers: Arc<BufferPool>,
        write_piece_bytes: usize,
    ) -> Committer {
        Committer {
            index,
            device,
            readers,
            counters,
            buffers,
            write_piece_bytes,
            state: Mutex::new(CommitState::default()),
            pipeline: Pipeline::default(),
            poison: Poison::default(),
        }
    }

    /// The commit lock, drained: every flush placed and every plan queued before is
    /// committed (or failed), so the holder sees all of them in the index.
    pub fn lock(&self) -> CommitGuard<'_> {
        self.lock_with_unsettled_at_most(0, 0)
    }

    /// The commit lock for placing a flush: at most [`UNCOMMITTED_FLUSHES_MAX`] placed
    /// flushes still wait for their commit (GC plans hold no write cache).
    pub fn lock_for_flush(&self) -> CommitGuard<'_> {
        self.lock_with_unsettled_at_most(UNCOMMITTED_FLUSHES_MAX, u64::MAX)
    }

    /// The commit lock for a GC, at once: its plan queues behind whatever is placed
    /// (`pipeline.rs`), and it waits for what it must without the lock
    /// ([`CommitGuard::placed_so_far`], [`PlanInFlight`]).
    pub fn lock_for_gc(&self) -> CommitGuard<'_> {
        CommitGuard {
            committer: self,
            state: self.state.lock(),
        }
    }

    fn lock_with_unsettled_at_most(&self, flushes_max: u64, plans_max: u64) -> CommitGuard<'_> {
        let state = self.state.lock();
        self.pipeline.wait_unsettled_at_most(flushes_max, plans_max);
        CommitGuard {
            committer: self,
            state,
        }
    }

    /// `Error::Poisoned` once a fatal error happened.
    pub fn check_writable(&self) -> Result<()> {
        self.poison.check()
    }

    pub fn first_error(&self) -> Option<Arc<Error>> {
        self.poison.first_error()
    }

    /// Passes `r` through, poisoning the store if it is a fatal error: the one wrapper
    /// every write path, flush and GC error goes through.
    pub fn poisoning<T>(&self, r: Result<T>) -> Result<T> {
        self.poison.poisoning(r)
    }

    /// Writes records into space no committed state and no concurrent flush can name,
    /// and flushes the device, without the commit lock (a GC's survivors). Their plan
    /// then commits without writes.
    pub fn stage(&self, writes: Vec<DeviceWrite>, purpose: Purpose) -> Result<()> {
        self.poisoning(self.write_durably(&writes, purpose))?;
        self.buffers.give(writes.into_iter().map(|w| w.buf));
        Ok(())
    }

    fn write_durably(&self, writes: &[DeviceWrite], purpose: Purpose) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        self.write(writes, purpose)?;
        // Records must be durable before the index can point at them.
        self.device.flush()?;
        Ok(())
    }

    /// Writes `writes` (all submitted at once) and waits for them; no device flush.
    fn write(&self, writes: &[DeviceWrite], purpose: Purpose) -> Result<()> {
        let pieces = flush_writes::pieces(writes, self.write_piece_bytes);
        flush_writes::submit(&*self.device, writes, &pieces)?;
        count_written(&self.counters, writes, purpose);
        Ok(())
    }

    /// Steps 2-4 for what was queued (the commit thread, without the commit lock): one
    /// device flush for all, their batches in order, one sync if any asks. Returns
    /// whether the index's log was synced, and the new reader generation.
    pub fn commit_queued(&self, queued: &[Queued]) -> Result<(bool, u64)> {
        self.check_writable()?;
        for writes in queued.iter().filter_map(Queued::writes) {
            self.poisoning(writes.wait())?;
        }
        if queued.iter().any(|q| q.writes().is_some()) {
            self.poisoning(self.device.flush().map_err(Error::from))?;
        }
        let no_sync = hashkv_lsm::WriteOptions { sync: false };
        for batch in queued.iter().filter_map(Queued::batch) {
            self.poisoning(self.index.write(batch, &no_sync).map_err(Error::from))?;
        }
        let synced = queued.iter().any(Queued::durable);
        if synced {
            self.sync_index()?;
        }
        Ok((synced, self.readers.advance()))
    }

    /// Waits until no flush's writes are in flight, whatever their outcome (each flush
    /// started its writes after the previous flush's completed, so the last one's
    /// completion is everyone's).
    pub fn wait_for_flush_writes(&self) {
        let last = self.state.lock().flush_writes.clone();
        if let Some(writes) = last {
            let _ = writes.wait();
        }
    }

    /// Makes every batch committed so far durable.
    pub fn sync_index(&self) -> Result<()> {
        self.poisoning(self.index.sync_wal().map_err(Error::from))
    }
}

/// Counts `writes`' bytes as written by `purpose`.
fn count_written(counters: &Counters, writes: &[DeviceWrite], purpose: Purpose) {
    let bytes: u64 = writes.iter().map(|w| w.len as u64).sum();
    let counter = match purpose {
        Purpose::Flush => &counters.flush_device_bytes_written,
        Purpose::Gc => &counters.gc_device_bytes_written,
    };
    Counters::add(counter, bytes);
}

impl CommitGuard<'_> {
    /// Queues `plan` behind every flush placed so far (step 1 of the module docs): its
    /// writes start after theirs. The caller lets the lock go and waits for the
    /// commit thread's outcome.
    pub fn queue_plan(&mut self, plan: Plan) -> Result<PlanInFlight> {
        let writes = self.start_writes(plan.writes, plan.purpose)?;
        let (outcome, receiver) = std::sync::mpsc::sync_channel(1);
        self.committer.pipeline.queue_plan(QueuedPlan {
            batch: plan.batch,
            writes,
            durable: plan.durable,
            outcome,
        });
        Ok(PlanInFlight { outcome: receiver })
    }

    /// The flushes placed so far, for a GC that begins now: the value store's tables
    /// name their records already, the device or the index may not yet.
    pub fn placed_so_far(&self) -> PlacedSoFar {
        PlacedSoFar {
            through: self.committer.pipeline.placed(),
            writes: self.state.flush_writes.clone(),
        }
    }

    /// Waits until the previous flush's writes completed (`flush_writes.rs`): a flush
    /// under a memory budget calls it before it encodes its records, so that its
    /// buffers come from a pool the previous flush's writes gave back (the write share
    /// pays for one flush's encoded records, `memory.rs`). (The writes of what it
    /// encodes then would wait for these only where they overlap, `start_writes`.)
    pub fn wait_for_previous_flush_writes(&self) -> Result<()> {
        match &self.state.flush_writes {
            Some(previous) => self.committer.poisoning(previous.wait()),
            None => Ok(()),
        }
    }

    /// Step 1's writes: starts writing records, beside the previous flush's or plan's
    /// writes where they do not overlap them (`flush_writes.rs`), and returns them in
    /// flight (None if there are none). The rest of the commit follows on the commit
    /// thread ([`Pipeline::queue`]), which waits for them, before any holder of
    /// [`Committer::lock`] proceeds.
    pub fn start_writes(
        &mut self,
        writes: Vec<DeviceWrite>,
        purpose: Purpose,
    ) -> Result<Option<Arc<WritesInFlight>>> {
        let c = self.committer;
        c.check_writable()?;
        if writes.is_empty() {
            return Ok(None);
        }
        let (device, counters, buffers) = (c.device.clone(), c.counters.clone(), c.buffers.clone());
        let piece = c.write_piece_bytes;
        let previous = self.state.flush_writes.take();
        let own = writes
            .iter()
            .map(|w| w.offset..w.offset + w.len as u64)
            .collect();
        let in_flight = WritesInFlight::start(own, previous, move |previous| {
            let written = flush_writes::write_after(&*device, piece, &writes, previous);
            if written.is_ok() {
                count_written(&counters, &writes, purpose);
            }
            buffers.give(writes.into_iter().map(|w| w.buf));
            written
        });
        self.state.flush_writes = Some(in_flight.clone());
        Ok(Some(in_flight))
    }
}

impl PlacedSoFar {
    /// Waits until their records are on the device (not yet durable): a GC may read
    /// them.
    pub fn wait_written(&self, committer: &Committer) -> Result<()> {
        match &self.writes {
            Some(writes) => committer.poisoning(writes.wait()),
            None => Ok(()),
        }
    }

    /// Waits until their batches are in the index: a GC may look their keys up.
    pub fn wait_committed(&self, committer: &Committer) -> Result<()> {
        if self.through == 0 {
            return Ok(());
        }
        committer
            .pipeline
            .progress(self.through - 1, Reach::Committed)
            .map(|_| ())
    }
}

impl Deref for CommitGuard<'_> {
    type Target = CommitState;

    fn deref(&self) -> &CommitState {
        &self.state
    }
}

impl DerefMut for CommitGuard<'_> {
    fn deref_mut(&mut self) -> &mut CommitState {
        &mut self.state
    }
}
