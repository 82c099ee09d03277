//! Garbage collection of one cold data log segment, with no index lookup.
//!
//! Which records are live comes from the groups: every record whose tag a group GC
//! found superseded is in the segment's dead list (`cold_log.rs`). So a cold GC
//!
//! 1. reads the segment and keeps the records not in its dead list;
//! 2. under the commit lock: copies them to the cold log's head and appends, to each
//!    key's group, a relocation tag (same key and sequence number, the new place),
//!    then queues the writes, the groups' new chain ends and the cold log's state in
//!    one synced index batch on the committer, behind the flushes placed before. The index is not touched: it
//!    may still point at the old copies, which stay where they are;
//! 3. the segment now waits for the groups that received tags: each group's next GC,
//!    which alone knows whether the tag is still its key's newest version, points the
//!    index at the copy (or drops it, if the key was updated or deleted meanwhile).
//!    When the last of them is collected the segment is free.
//!
//! A record that a key's update or delete made dead after its group's last GC is
//! copied too (its death is not known yet): the copy is marked dead when that group is
//! collected. Nothing is overwritten in place, and until the batch commits the copies
//! lie past the cold head's committed end: a crash at any step leaves the committed
//! state intact (FORMAT.md, "Hot and cold").

use super::cold_write::{self, ColdRecord};
use super::place::{self, AppendRecord};
use super::segment_table::ColdMove;
use super::{group_of, Groups};
use crate::align::RecordSize;
use crate::commit::{Plan, Purpose};
use crate::error::Result;
use crate::key_hash::HashedKey;
use crate::layout::SegmentId;
use crate::record::{ColdTag, RecordKind, RecordRef, COLD_TAG_BYTES};
use crate::spans::{self, Span};
use crate::stats::Counters;
use crate::store::{GcCtx, GcOutcome, PlaceError};

/// Collects cold segment `victim`. `None` when it is gone, or when there is no room to
/// copy its live records to (the flush path then collects groups instead).
pub(super) fn collect(
    store: &Groups,
    ctx: &GcCtx<'_>,
    victim: SegmentId,
) -> Result<Option<GcOutcome>> {
    ctx.committer.check_writable()?;
    let Some(seg) = store.table.lock().cold.find(victim).cloned() else {
        return Ok(None);
    };
    // 1. Read it; keep what no group found dead.
    let block = u64::from(store.layout.block_bytes);
    let span = Span::covering(store.layout.segment_offset(seg.id), seg.used_bytes, block);
    let (bufs, _) =
        ctx.committer
            .poisoning(spans::read_pooled(ctx.io.device, &[span], ctx.io.buffers))?;
    Counters::add(&ctx.io.counters.gc_device_bytes_read, seg.used_bytes);
    let mut live: Vec<RecordRef<'_>> = Vec::new();
    for item in span.records(&bufs[0]) {
        let (at, rec) = ctx
            .committer
            .poisoning(item.map_err(|e| e.at(format!("GC of cold segment {}", seg.id))))?;
        if rec.kind == RecordKind::Value && !seg.is_dead(at as u32) {
            live.push(rec);
        }
    }
    let outcome = move_live(store, ctx, victim, &live);
    ctx.committer.poisoning(outcome).map(|o| {
        o.map(|bytes_written| {
            Counters::add(&ctx.io.counters.cold_gc_runs, 1);
            // The segment's live count is the bytes of the records not in its dead
            // list, which this GC copied.
            let live_bytes = seg.live_bytes.min(seg.used_bytes);
            store
                .hotness
                .lock()
                .observe_cold_gc(live_bytes, seg.used_bytes - live_bytes);
            GcOutcome {
                bytes_read: seg.used_bytes,
                bytes_written,
                records_kept: live.len() as u64,
                made_room: live.is_empty(),
            }
        })
    })
}

/// The tag each copy leaves in its key's group: the new place, marked relocated so
/// that the group's next GC points the index at it.
fn relocation_tags(records: &[ColdRecord<'_>]) -> Vec<[u8; COLD_TAG_BYTES]> {
    records
        .iter()
        .map(|r| {
            ColdTag {
                segment: r.place.segment,
                epoch: r.place.epoch,
                offset: r.place.offset as u32,
                record_bytes: r.size().len as u32,
                crc: r.crc,
                relocated: true,
            }
            .encode()
        })
        .collect()
}

/// Step 2. Returns the bytes written, or `None` when there was no room (nothing
/// changed).
fn move_live(
    store: &Groups,
    ctx: &GcCtx<'_>,
    victim: SegmentId,
    live: &[RecordRef<'_>],
) -> Result<Option<u64>> {
    let mut commit = ctx.committer.lock_for_gc();
    let sizes: Vec<RecordSize> = live
        .iter()
        .map(|r| RecordSize::value(r.key.len(), r.value.len()))
        .collect();
    let (checkpoint, places, mut head_block, head_end) = {
        let mut table = store.table.lock();
        let checkpoint = table.cold.checkpoint();
        let head_end = table.cold.head_end();
        let Some((places, _)) = table.place_cold(&sizes, ColdMove::Relocation) else {
            return Ok(None);
        };
        (checkpoint, places, table.cold.head_block.clone(), head_end)
    };
    let records: Vec<ColdRecord<'_>> = live
        .iter()
        .zip(&places)
        .map(|(r, &place)| ColdRecord {
            place,
            key: r.key,
            value: r.value,
            seq: r.seq,
            crc: r.crc,
        })
        .collect();
    let mut writes =
        cold_write::encode(&store.layout, &ctx.io, &mut head_block, head_end, &records)?;
    let tags = relocation_tags(&records);
    let appends: Vec<AppendRecord<'_>> = records
        .iter()
        .zip(&tags)
        .map(|(r, tag)| AppendRecord {
            key: r.key,
            key_hash: HashedKey::new(r.key).hash,
            kind: RecordKind::ColdTag,
            body: tag,
            aligned: None,
            seq: r.seq,
        })
        .collect();
    let appended = match place::append(store, &ctx.io, &appends, false) {
        Ok(a) => a,
        Err(PlaceError::NeedSpace { .. }) => {
            store.table.lock().rollback_cold(checkpoint);
            return Ok(None);
        }
        Err(PlaceError::Fatal(e)) => return Err(e),
    };
    writes.extend(appended.writes);
    let mut batch = hashkv_lsm::WriteBatch::new();
    for (k, v) in &appended.entries {
        batch.put(k, v);
    }
    let groups: Vec<u32> = live
        .iter()
        .map(|r| group_of(r.key, store.layout.group_count))
        .collect();
    let freed = {
        let mut table = store.table.lock();
        table.cold.head_block = head_block;
        let freed = table.cold.evacuate(victim, groups);
        table.cold.take_changes(&mut batch);
        freed
    };
    let bytes_written: u64 = writes.iter().map(|w| w.len as u64).sum();
    let committed = commit.queue_plan(Plan {
        purpose: Purpose::Gc,
        writes,
        batch,
        durable: true,
    })?;
    drop(commit);
    let release_gen = committed.wait()?;
    store.table.lock().release(freed, release_gen);
    Ok(Some(bytes_written))
}
