//! The next group GC's reads, made while the current GC works.
//!
//! A group GC waits on the device twice: reading the chain it collects, then writing
//! its survivors and committing. In between the device idles while the CPU surveys
//! the records. So once a GC has read its chain, a helper thread picks the group the
//! next GC will likely collect and reads that group's chain, except its last segment
//! (the one appends still go to), while this GC surveys, writes and commits.
//!
//! The reads hold for as long as the group's chain is unchanged below them: between
//! two GCs of a group its chain only grows at its end, and no segment of it is freed
//! or reused, so a segment at the same place in the chain, with the same id and the
//! same bytes used, at the same generation of the group (`Group::generation`, which
//! each finished GC of it advances) holds the same records. The GC that uses a
//! prefetch checks that per segment and reads whatever does not match. A prefetch is
//! only ever a shortcut: the records it holds are checked like freshly read ones.

use super::segment_table::{ChainSegment, SegmentTable};
use super::Groups;
use crate::buffers::BufferPool;
use crate::commit::Committer;
use crate::error::{Error, Result};
use crate::spans::{self, Span};
use crate::stats::Counters;
use crate::store::IoCtx;
use hashkv_blockdev::AlignedBuf;
use std::time::{Duration, Instant};

/// A prefetch the GC has not come for within this long, while no GC was wanted, is
/// dropped: it holds up to a chain's worth of buffers (two main segments), which an
/// idle store should not keep.
pub(super) const PREFETCH_IDLE_MAX: Duration = Duration::from_secs(1);

/// Segments of one group's chain, read ahead of its GC.
pub(super) struct Prefetched {
    pub group: u32,
    generation: u64,
    /// The segments read, the first of the chain, in order; a buffer each.
    segments: Vec<ChainSegment>,
    bufs: Vec<AlignedBuf>,
    read_at: Instant,
}

/// What the helper thread leaves for the next GC: the reads, or the error that
/// stopped them, which the next GC reports as its own (a read error is never dropped).
pub(super) type Outcome = Result<Prefetched>;

/// Picks the group the next GC would collect (not one under GC) and reads its chain
/// but the last segment. `None` when no group has a segment to read ahead.
pub(super) fn read_next(store: &Groups, committer: &Committer, io: &IoCtx<'_>) -> Option<Outcome> {
    let (group, generation, segments, placed_before) = {
        // Under the commit lock, as a GC's own start: a flush places its records in
        // the table before it starts their writes, and holds this lock from one to the
        // other. The writes of the flushes placed so far complete before the reads
        // below: else a segment sealed in the table could be read before it is written.
        let commit = committer.lock_for_gc();
        let table = store.table.lock();
        let group = table.pick_victim()?;
        let g = &table.groups[group as usize];
        let sealed = g.chain.len().saturating_sub(1);
        let segments: Vec<ChainSegment> = g.chain[..sealed]
            .iter()
            .filter(|s| s.used_bytes > 0)
            .copied()
            .collect();
        if segments.is_empty() {
            return None;
        }
        (group, g.generation, segments, commit.placed_so_far())
    };
    let spans = chain_spans(store, &segments);
    let read = || -> Result<Prefetched> {
        placed_before.wait_written(committer)?;
        let (bufs, _) = spans::read_pooled(io.device, &spans, io.buffers)?;
        let p = Prefetched {
            group,
            generation,
            segments,
            bufs: bufs.keep(),
            read_at: Instant::now(),
        };
        Counters::add(&io.counters.gc_device_bytes_read, p.bytes());
        Ok(p)
    };
    Some(read())
}

/// The spans a GC reads for `segments` of a chain: each segment's used bytes.
pub(super) fn chain_spans(store: &Groups, segments: &[ChainSegment]) -> Vec<Span> {
    let block = u64::from(store.layout.block_bytes);
    segments
        .iter()
        .map(|s| Span::covering(store.layout.segment_offset(s.id), s.used_bytes, block))
        .collect()
}

impl Prefetched {
    /// For the GC of its group collecting `chain`: a buffer holding each segment's
    /// bytes where this prefetch read that segment as it still is, else `None`; and
    /// the bytes so found. Buffers it has no use for go back to the pool.
    pub fn take_for(
        self,
        table: &SegmentTable,
        chain: &[ChainSegment],
        io: &IoCtx<'_>,
    ) -> (Vec<Option<AlignedBuf>>, u64) {
        let current = table.groups[self.group as usize].generation == self.generation;
        let mut read: Vec<Option<(ChainSegment, AlignedBuf)>> =
            self.segments.into_iter().zip(self.bufs).map(Some).collect();
        let mut found_bytes = 0;
        let found = chain
            .iter()
            .map(|seg| {
                let at = read
                    .iter()
                    .position(|r| matches!(r, Some((was, _)) if was == seg));
                let (_, buf) = at.filter(|_| current).and_then(|i| read[i].take())?;
                found_bytes += seg.used_bytes;
                Some(buf)
            })
            .collect();
        let unused: Vec<(ChainSegment, AlignedBuf)> = read.into_iter().flatten().collect();
        let unused_bytes = unused.iter().map(|(s, _)| s.used_bytes).sum();
        Counters::add(&io.counters.gc_prefetch_bytes_unused, unused_bytes);
        io.buffers.give(unused.into_iter().map(|(_, buf)| buf));
        (found, found_bytes)
    }

    /// Bytes of the segments read.
    fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.used_bytes).sum()
    }

    /// Gives the buffers of a prefetch no GC used back to `buffers`.
    fn give_back(self, counters: &Counters, buffers: &BufferPool) {
        Counters::add(&counters.gc_prefetch_bytes_unused, self.bytes());
        buffers.give(self.bufs);
    }
}

/// A GC of `group` about to read its chain takes the prefetch left for that group,
/// if any. An error a prefetch met is returned to whichever GC comes next, as the
/// error of its own read.
pub(super) fn take(store: &Groups, group: u32) -> Result<Option<Prefetched>> {
    let mut slot = store.prefetched.lock();
    if matches!(slot.as_ref(), Some(Ok(p)) if p.group != group) {
        return Ok(None);
    }
    slot.take().transpose().map_err(Error::at_prefetch)
}

/// Leaves `next` for the next GC; a prefetch it replaces, which no GC used, goes
/// back to the pool.
pub(super) fn leave(store: &Groups, io: &IoCtx<'_>, next: Option<Outcome>) {
    let old = std::mem::replace(&mut *store.prefetched.lock(), next);
    if let Some(Ok(p)) = old {
        p.give_back(io.counters, io.buffers);
    }
}

/// Drops a prefetch no GC has come for within `PREFETCH_IDLE_MAX`.
pub(super) fn drop_if_idle(store: &Groups, counters: &Counters, buffers: &BufferPool) {
    let mut slot = store.prefetched.lock();
    let idle = matches!(slot.as_ref(), Some(Ok(p)) if p.read_at.elapsed() > PREFETCH_IDLE_MAX);
    if idle {
        if let Some(Ok(p)) = slot.take() {
            p.give_back(counters, buffers);
        }
    }
}

impl Error {
    fn at_prefetch(self) -> Error {
        self.at("reading ahead the chain of the group the next GC collects")
    }
}
