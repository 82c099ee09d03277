//! The committer: the only code that writes the index, and so the only way any change
//! to the store becomes real. Every GC hands it a [`Plan`]: device writes, one index
//! batch, and whether the batch must be durable. Under the commit lock it
//!
//! 1. writes the plan's records to the device (all submitted at once),
//! 2. flushes the device, so that the records are durable,
//! 3. writes the plan's index batch (synced if the plan asks),
//! 4. starts a new reader generation: space the commit released is reused only once
//!    readers that began before it are gone ([`crate::readers::Deferred`]).
//!
//! A flush starts step 1 under the commit lock, its writes run on a thread of their
//! own while the next flush places ([`flush_writes`]: the next flush submits its
//! writes only after these completed, the commit thread flushes the device only after
//! they completed), and steps 2-4 run on the commit thread, so that the next flush
//! writes while the device flushes ([`pipeline`], which says why the argument below
//! still holds).
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

pub(crate) mod flush_writes;
pub(crate) mod pipeline;
pub(crate) mod poison;

use crate::buffers::BufferPool;
use crate::error::{Error, Result};
use crate::gc::written_keys::WrittenKeys;
use crate::readers::Readers;
use crate::stats::Counters;
use flush_writes::WritesInFlight;
use hashkv_blockdev::{AlignedBuf, BlockDevice, IoOp};
use parking_lot::{Mutex, MutexGuard};
use pipeline::{Pipeline, PlacedFlush, UNCOMMITTED_FLUSHES_MAX};
use poison::Poison;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// One aligned write: `len` bytes of `buf` at device `offset`.
pub(crate) struct DeviceWrite {
    pub offset: u64,
    pub buf: AlignedBuf,
    pub len: usize,
}

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
    /// The last flush's writes: the next flush submits its own after they completed.
    /// Each flush waits for the one before, so when these completed, all had.
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

/// The commit lock, held: the only way to commit a plan.
pub(crate) struct CommitGuard<'a> {
    committer: &'a Committer,
    state: MutexGuard<'a, CommitState>,
    /// Taken drained ([`Committer::lock`]): only such a guard may commit a plan.
    drained: bool,
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

    /// The commit lock, drained: every flush placed before is committed (or failed),
    /// so the holder sees, and commits after, all of them.
    pub fn lock(&self) -> CommitGuard<'_> {
        self.lock_with_unsettled_at_most(0)
    }

    /// The commit lock for placing a flush: at most [`UNCOMMITTED_FLUSHES_MAX`] placed
    /// flushes still wait for their commit.
    pub fn lock_for_flush(&self) -> CommitGuard<'_> {
        self.lock_with_unsettled_at_most(UNCOMMITTED_FLUSHES_MAX)
    }

    fn lock_with_unsettled_at_most(&self, unsettled_max: u64) -> CommitGuard<'_> {
        let state = self.state.lock();
        self.pipeline.wait_unsettled_at_most(unsettled_max);
        CommitGuard {
            committer: self,
            state,
            drained: unsettled_max == 0,
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
        let piece = self.write_piece_bytes;
        write_pieces(&*self.device, &self.counters, piece, writes, purpose)
    }

    /// Steps 2-4 for flushes placed and written (the commit thread, without the commit
    /// lock): one device flush for all, their batches in order, one sync if any asks.
    /// Returns whether the index's log was synced.
    pub fn commit_placed(&self, flushes: &[PlacedFlush]) -> Result<bool> {
        self.check_writable()?;
        for writes in flushes.iter().filter_map(|f| f.writes.as_ref()) {
            self.poisoning(writes.wait())?;
        }
        if flushes.iter().any(|f| f.writes.is_some()) {
            self.poisoning(self.device.flush().map_err(Error::from))?;
        }
        let no_sync = hashkv_lsm::WriteOptions { sync: false };
        for batch in flushes.iter().filter_map(|f| f.batch.as_ref()) {
            self.poisoning(self.index.write(batch, &no_sync).map_err(Error::from))?;
        }
        let synced = flushes.iter().any(|f| f.durable);
        if synced {
            self.sync_index()?;
        }
        self.readers.advance();
        Ok(synced)
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

/// Writes `writes` (all submitted at once, cut into requests of at most
/// `write_piece_bytes`) and waits for them; no device flush.
fn write_pieces(
    device: &dyn BlockDevice,
    counters: &Counters,
    write_piece_bytes: usize,
    writes: &[DeviceWrite],
    purpose: Purpose,
) -> Result<()> {
    if writes.is_empty() {
        return Ok(());
    }
    let mut ops: Vec<IoOp<'_>> = Vec::new();
    for w in writes {
        let mut done = 0;
        while done < w.len {
            let n = write_piece_bytes.min(w.len - done);
            ops.push(IoOp::Write {
                offset: w.offset + done as u64,
                buf: &w.buf[done..done + n],
                fua: false,
            });
            done += n;
        }
    }
    device.submit(&mut ops)?;
    let bytes: u64 = writes.iter().map(|w| w.len as u64).sum();
    let counter = match purpose {
        Purpose::Flush => &counters.flush_device_bytes_written,
        Purpose::Gc => &counters.gc_device_bytes_written,
    };
    Counters::add(counter, bytes);
    Ok(())
}

impl CommitGuard<'_> {
    /// Commits `plan` (steps 1-4 of the module docs) and returns the reader generation
    /// after which space this commit released may be reused.
    pub fn commit(&mut self, plan: Plan) -> Result<u64> {
        assert!(self.drained, "a plan commits after every placed flush");
        let c = self.committer;
        c.check_writable()?;
        c.poisoning(c.write_durably(&plan.writes, plan.purpose))?;
        c.buffers.give(plan.writes.into_iter().map(|w| w.buf));
        let options = hashkv_lsm::WriteOptions { sync: plan.durable };
        c.poisoning(c.index.write(&plan.batch, &options).map_err(Error::from))?;
        Ok(c.readers.advance())
    }

    /// Waits until the previous flush's writes completed (`flush_writes.rs`): a flush
    /// calls it before it encodes its records, so that it submits its writes after
    /// them, and so that its buffers come from a pool the previous flush's writes gave
    /// back (the write share pays for one flush's encoded records, `memory.rs`).
    pub fn wait_for_previous_flush_writes(&self) -> Result<()> {
        match &self.state.flush_writes {
            Some(previous) => self.committer.poisoning(previous.wait()),
            None => Ok(()),
        }
    }

    /// Step 1 for a flush: starts writing its records, after the previous flush's
    /// writes completed, and returns them in flight (None if it writes nothing). The
    /// rest of its commit follows on the commit thread ([`Pipeline::queue`]), which
    /// waits for them, before any holder of [`Committer::lock`] proceeds.
    pub fn start_flush_writes(
        &mut self,
        writes: Vec<DeviceWrite>,
    ) -> Result<Option<Arc<WritesInFlight>>> {
        let c = self.committer;
        c.check_writable()?;
        // Returns at once after `wait_for_previous_flush_writes`; the order matters
        // too much to leave to the caller.
        self.wait_for_previous_flush_writes()?;
        if writes.is_empty() {
            return Ok(None);
        }
        let (device, counters, buffers) = (c.device.clone(), c.counters.clone(), c.buffers.clone());
        let piece = c.write_piece_bytes;
        let in_flight = WritesInFlight::start(move || {
            let written = write_pieces(&*device, &counters, piece, &writes, Purpose::Flush);
            buffers.give(writes.into_iter().map(|w| w.buf));
            written
        });
        self.state.flush_writes = Some(in_flight.clone());
        Ok(Some(in_flight))
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
