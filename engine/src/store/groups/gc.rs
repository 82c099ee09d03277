//! Garbage collection of one segment group, copy-on-write.
//!
//! 1. Under the commit lock (so no flush is half-way), pick the group with the largest
//!    write volume since its last GC, mark it, and take a spare main segment. From now
//!    on appends to the group go to fresh log segments after the marked chain, and the
//!    committer notes the keys they carry.
//! 2. Read every segment of the marked chain at once (parallel reads through io_uring).
//! 3. Walk the records in append order; the last record of each key is its newest
//!    version. No index lookup is needed: every version of a key lives in its group.
//!    Values survive; tombstones are dropped, since every older version of their key
//!    lies in the same segments and is dropped with them.
//! 4. Write the survivors into the spare main segment (and GC-reserved log segments if
//!    they overflow it), then flush the device (`Committer::stage`: no committed state
//!    names these segments).
//! 5. Through the committer: point the index at the survivors' new places, except for
//!    keys written to the group during the GC (those have newer versions), and replace
//!    the group's segment-table entry, in one synced index batch.
//! 6. The old segments become free once readers that may still hold pointers into them
//!    are gone.
//!
//! Nothing is overwritten in place, so a crash at any step leaves the committed state
//! intact (FORMAT.md, "GC").

use super::segment_table::ChainSegment;
use super::{group_of, Groups};
use crate::commit::{DeviceWrite, Plan, Purpose};
use crate::error::Result;
use crate::keys;
use crate::layout::SegmentId;
use crate::location::{Pointer, Region};
use crate::partial_block::PartialBlock;
use crate::record::{self, RecordKind, RecordRef};
use crate::spans::{self, Span};
use crate::stats::Counters;
use crate::store::{store_full, GcCtx, GcOutcome, ValueStore};
use hashkv_blockdev::AlignedBuf;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use xxhash_rust::xxh3::Xxh3;

/// The GC of one group, begun.
struct Job {
    group: u32,
    collected: Vec<ChainSegment>,
    spare: SegmentId,
}

/// Collects the group with the most writes since its last GC, or `preferred` if it is
/// not under GC already. `None` when no group has anything to collect or no spare main
/// segment is free yet.
pub(super) fn collect(
    store: &Groups,
    ctx: &GcCtx<'_>,
    preferred: Option<u32>,
) -> Result<Option<GcOutcome>> {
    ctx.committer.check_writable()?;
    let Some(job) = begin(store, ctx, preferred) else {
        return Ok(None);
    };
    let mut taken_log = Vec::new();
    let mut swapped = false;
    let outcome = run(store, ctx, &job, &mut taken_log, &mut swapped);
    if outcome.is_err() {
        ctx.committer.lock().written_during_gc.finish();
        if !swapped {
            // The table still holds the old chain: give back what the GC took.
            let mut table = store.table.lock();
            table.abort_gc(job.group, job.spare, &taken_log);
        }
    }
    ctx.committer.poisoning(outcome).map(Some)
}

/// Step 1.
fn begin(store: &Groups, ctx: &GcCtx<'_>, preferred: Option<u32>) -> Option<Job> {
    let mut commit = ctx.committer.lock();
    let mut table = store.table.lock();
    table.reclaim(ctx.io.readers.oldest_active());
    let preferred = preferred.filter(|&g| table.groups[g as usize].gc.is_none());
    let group = preferred.or_else(|| table.pick_victim())?;
    let (collected, spare) = table.begin_gc(group)?;
    let group_count = store.layout.group_count;
    commit
        .written_during_gc
        .begin(move |key| group_of(key, group_count) == group);
    Some(Job {
        group,
        collected,
        spare,
    })
}

fn run(
    store: &Groups,
    ctx: &GcCtx<'_>,
    job: &Job,
    taken_log: &mut Vec<SegmentId>,
    swapped: &mut bool,
) -> Result<GcOutcome> {
    // 2. Read the whole group at once.
    let block = u64::from(store.layout.block_bytes);
    let spans: Vec<Span> = job
        .collected
        .iter()
        .filter(|s| s.used_bytes > 0)
        .map(|s| Span::covering(store.layout.segment_offset(s.id), s.used_bytes, block))
        .collect();
    let (bufs, _) = spans::read(ctx.io.device, &spans)?;
    let bytes_read: u64 = job.collected.iter().map(|s| s.used_bytes).sum();
    Counters::add(&ctx.io.counters.gc_device_bytes_read, bytes_read);

    let survivors = newest_values(store, job, &spans, &bufs)?;
    let copy = Copy::pack(store, &survivors, job.spare, taken_log)?;
    let (writes, last_block) = copy.encode(store, ctx, &survivors);
    let bytes_written: u64 = writes.iter().map(|w| w.len as u64).sum();
    ctx.committer.stage(writes, Purpose::Gc)?;
    let segments_freed = commit(store, ctx, job, &copy, last_block, &survivors, swapped)?;
    Ok(GcOutcome {
        bytes_read,
        bytes_written,
        records_kept: survivors.len() as u64,
        made_room: segments_freed > taken_log.len(),
    })
}

/// Step 3: the newest version of each key that is a value, in append order.
fn newest_values<'b>(
    store: &Groups,
    job: &Job,
    spans: &[Span],
    bufs: &'b [AlignedBuf],
) -> Result<Vec<RecordRef<'b>>> {
    let block = store.layout.block_bytes as usize;
    let segments = job.collected.iter().filter(|s| s.used_bytes > 0);
    let mut newest: HashMap<&[u8], (usize, RecordRef<'_>), BuildHasherDefault<Xxh3>> =
        HashMap::default();
    let mut order = 0usize;
    for ((seg, span), buf) in segments.zip(spans).zip(bufs) {
        for item in span.records(buf, block) {
            let (_, rec) = item.map_err(|e| {
                e.at(format!(
                    "GC of group {}, segment {} ({} bytes used)",
                    job.group, seg.id, seg.used_bytes
                ))
            })?;
            newest.insert(rec.key, (order, rec));
            order += 1;
        }
    }
    let mut survivors: Vec<(usize, RecordRef<'_>)> = newest
        .into_values()
        .filter(|(_, r)| r.kind == RecordKind::Value)
        .collect();
    survivors.sort_unstable_by_key(|(o, _)| *o);
    Ok(survivors.into_iter().map(|(_, r)| r).collect())
}

/// Step 4: where the survivors go, in order: the spare main segment, then log segments
/// from the GC reserve.
struct Copy {
    chain: Vec<ChainSegment>,
    /// Per survivor: its segment's index in `chain` and its offset there.
    places: Vec<(usize, u64)>,
}

impl Copy {
    fn pack(
        store: &Groups,
        survivors: &[RecordRef<'_>],
        spare: SegmentId,
        taken_log: &mut Vec<SegmentId>,
    ) -> Result<Copy> {
        let layout = store.layout;
        let mut chain = vec![ChainSegment {
            id: spare,
            used_bytes: 0,
        }];
        let mut places = Vec::with_capacity(survivors.len());
        for rec in survivors {
            let len = rec.encoded_len() as u64;
            let last = chain.last().expect("never empty");
            if last.used_bytes + len > layout.segment_bytes(last.id) {
                let Some(id) = store.table.lock().take_log_for_gc() else {
                    return Err(store_full(store.space()));
                };
                taken_log.push(id);
                chain.push(ChainSegment { id, used_bytes: 0 });
            }
            let index = chain.len() - 1;
            let last = &mut chain[index];
            places.push((index, last.used_bytes));
            last.used_bytes += len;
        }
        Ok(Copy { chain, places })
    }

    /// Encodes the survivors straight into one aligned buffer per segment. Returns the
    /// writes and the partly written last block.
    fn encode(
        &self,
        store: &Groups,
        ctx: &GcCtx<'_>,
        survivors: &[RecordRef<'_>],
    ) -> (Vec<DeviceWrite>, PartialBlock) {
        let layout = store.layout;
        let block = layout.block_bytes as usize;
        let mut writes: Vec<DeviceWrite> = self
            .chain
            .iter()
            .map(|s| {
                let len = (s.used_bytes as usize).div_ceil(block) * block;
                DeviceWrite {
                    offset: layout.segment_offset(s.id),
                    buf: ctx.io.buffers.take(len.max(block)),
                    len,
                }
            })
            .collect();
        for (rec, &(i, at)) in survivors.iter().zip(&self.places) {
            let at = at as usize;
            record::encode_into(
                &mut writes[i].buf[at..],
                rec.kind,
                rec.seq,
                rec.key,
                rec.value,
            );
        }
        let mut last_block = PartialBlock::default();
        for (w, s) in writes.iter_mut().zip(&self.chain) {
            let used = s.used_bytes as usize;
            let len = w.len;
            w.buf[used..len].fill(0);
            last_block = PartialBlock::after_write(&w.buf, w.offset, used, block);
        }
        writes.retain(|w| w.len > 0);
        (writes, last_block)
    }

    fn pointer(&self, i: usize, rec: &RecordRef<'_>) -> Pointer {
        let (seg, offset) = self.places[i];
        Pointer {
            region: Region::Segments,
            unit: self.chain[seg].id,
            offset: offset as u32,
            record_bytes: rec.encoded_len() as u32,
            seq: rec.seq,
        }
    }
}

/// Steps 5 and 6. Returns how many log segments the GC freed. Sets `swapped` once the
/// table holds the new chain (a failure after that has poisoned the store).
fn commit(
    store: &Groups,
    ctx: &GcCtx<'_>,
    job: &Job,
    copy: &Copy,
    last_block: PartialBlock,
    survivors: &[RecordRef<'_>],
    swapped: &mut bool,
) -> Result<usize> {
    let mut commit = ctx.committer.lock();
    let written_since = commit.written_during_gc.finish();
    let mut batch = hashkv_lsm::WriteBatch::new();
    for (i, rec) in survivors.iter().enumerate() {
        if !written_since.contains(rec.key) {
            batch.put(&keys::user_key(rec.key), &copy.pointer(i, rec).encode());
        }
    }
    let freed = {
        let mut table = store.table.lock();
        let freed = table.finish_gc(job.group, copy.chain.clone(), last_block);
        *swapped = true;
        batch.put(&keys::group_key(job.group), &table.encode_group(job.group));
        freed
    };
    // The table already holds the new chain: a failure here has poisoned the store.
    let release_gen = commit.commit(Plan {
        purpose: Purpose::Gc,
        writes: Vec::new(),
        batch,
        durable: true,
    })?;
    drop(commit);
    let layout = store.layout;
    let segments_freed = freed.iter().filter(|&&id| !layout.is_main(id)).count();
    store.table.lock().release(freed, release_gen);
    Ok(segments_freed)
}
