//! Garbage collection of one segment group, copy-on-write.
//!
//! 1. Under the commit lock (so no flush is half-way), pick the group with the largest
//!    write volume since its last GC, mark it, and take a spare main segment. From now
//!    on appends to the group go to fresh log segments after the marked chain.
//! 2. Read every segment of the marked chain at once (parallel reads through io_uring).
//! 3. Walk the records in append order; the last record of each key is its newest
//!    version. No index lookup is needed: every version of a key lives in its group.
//!    Values survive; tombstones are dropped, since every older version of their key
//!    lies in the same segments and is dropped with them.
//! 4. Write the survivors into the spare main segment (and GC-reserved log segments if
//!    they overflow it), then flush the device.
//! 5. Under the commit lock: point the index at the survivors' new places, except for
//!    keys written to the group during the GC (those have newer versions), and replace
//!    the group's segment-table entry, in one synced index batch.
//! 6. The old segments become free once readers that may still hold pointers into them
//!    are gone.
//!
//! Nothing is overwritten in place, so a crash at any step leaves the committed state
//! intact (FORMAT.md, "GC").

use crate::db::Inner;
use crate::error::{Error, Result};
use crate::groups::segment_table::{ChainSegment, TailBlock};
use crate::keys;
use crate::layout::SegmentId;
use crate::location::Pointer;
use crate::record::{self, RecordKind, RecordRef, SegmentRecords};
use crate::stats::Counters;
use crate::store::GcOutcome;
use hashkv_blockdev::{AlignedBuf, IoOp};
use std::collections::HashMap;

/// Collects the group with the most writes since its last GC. `None` when no group
/// has anything to collect or no spare main segment is free yet.
/// With `preferred`, collects that group instead, if it is not under GC already.
pub(crate) fn collect_one(inner: &Inner, preferred: Option<u32>) -> Result<Option<GcOutcome>> {
    let _one_gc = inner.gc_lock.lock();
    inner.check_writable()?;
    let (group, collected, spare) = {
        let _commit = inner.commit.lock();
        let mut table = inner.table().lock();
        table.reclaim(inner.readers.oldest_active());
        let preferred = preferred.filter(|&g| table.groups[g as usize].gc.is_none());
        let Some(group) = preferred.or_else(|| table.pick_victim()) else {
            return Ok(None);
        };
        let Some((collected, spare)) = table.begin_gc(group) else {
            return Ok(None);
        };
        (group, collected, spare)
    };
    let mut taken_log = Vec::new();
    match run(inner, group, &collected, spare, &mut taken_log) {
        Ok(outcome) => Ok(Some(outcome)),
        Err(e) => {
            if inner.poisoned().is_none() {
                // Nothing was committed: give back what the GC took.
                inner.table().lock().abort_gc(group, spare, &taken_log);
            }
            if e.is_fatal() {
                inner.poison_with(&e);
            }
            Err(e)
        }
    }
}

fn run(
    inner: &Inner,
    group: u32,
    collected: &[ChainSegment],
    spare: SegmentId,
    taken_log: &mut Vec<SegmentId>,
) -> Result<GcOutcome> {
    let layout = inner.layout;
    let block = layout.block_bytes as usize;

    // 2. Read the whole group at once.
    // Whole blocks: the last one may be written only in part.
    let aligned = |used: u64| (used as usize).div_ceil(block) * block;
    let mut bufs: Vec<AlignedBuf> = collected
        .iter()
        .map(|s| AlignedBuf::new(aligned(s.used_bytes).max(block)))
        .collect();
    {
        let mut ops: Vec<IoOp<'_>> = bufs
            .iter_mut()
            .zip(collected)
            .filter(|(_, s)| s.used_bytes > 0)
            .map(|(buf, s)| IoOp::Read {
                offset: layout.segment_offset(s.id),
                buf: &mut buf[..aligned(s.used_bytes)],
            })
            .collect();
        if !ops.is_empty() {
            inner.device.submit(&mut ops)?;
        }
    }
    let bytes_read: u64 = collected.iter().map(|s| s.used_bytes).sum();
    Counters::add(&inner.counters.gc_device_bytes_read, bytes_read);

    // 3. Newest version of each key, in append order.
    let mut newest: HashMap<&[u8], (usize, RecordRef<'_>)> = HashMap::new();
    let mut order = 0usize;
    for (seg, buf) in collected.iter().zip(&bufs) {
        for item in SegmentRecords::new(&buf[..seg.used_bytes as usize], block) {
            let (_, rec) = item.map_err(|e| Error::Corruption {
                what: format!(
                    "GC of group {group}, segment {} ({} bytes used; chain {collected:?}): {e}",
                    seg.id, seg.used_bytes
                ),
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

    // 4. Copy the survivors into the spare main segment, then reserved log segments.
    let mut chain = vec![ChainSegment {
        id: spare,
        used_bytes: 0,
    }];
    let mut out: Vec<Vec<u8>> = vec![Vec::new()];
    let mut pointers: Vec<(&[u8], Pointer)> = Vec::with_capacity(survivors.len());
    for (_, rec) in &survivors {
        let len = rec.encoded_len();
        let tail = chain.last().unwrap();
        if tail.used_bytes as usize + len > layout.segment_bytes(tail.id) as usize {
            let taken = inner.table().lock().take_log_for_gc();
            let Some(id) = taken else {
                return Err(inner.store_full());
            };
            taken_log.push(id);
            chain.push(ChainSegment { id, used_bytes: 0 });
            out.push(Vec::new());
        }
        let tail = chain.last_mut().unwrap();
        let buf = out.last_mut().unwrap();
        pointers.push((
            rec.key,
            Pointer {
                segment: tail.id,
                offset: tail.used_bytes as u32,
                record_bytes: len as u32,
                seq: rec.seq,
            },
        ));
        record::encode(buf, rec.kind, rec.seq, rec.key, rec.value);
        tail.used_bytes += len as u64;
    }
    let mut writes = Vec::new();
    for (seg, bytes) in chain.iter().zip(&out) {
        debug_assert_eq!(seg.used_bytes, bytes.len() as u64);
        if bytes.is_empty() {
            continue;
        }
        let len = aligned(seg.used_bytes);
        let mut buf = AlignedBuf::new(len);
        buf[..bytes.len()].copy_from_slice(bytes);
        writes.push((layout.segment_offset(seg.id), buf, len));
    }
    // The partly written last block, for the flushes that continue it.
    let survivors_tail = chain.last().zip(out.last()).and_then(|(seg, bytes)| {
        let tail_len = bytes.len() % block;
        (tail_len > 0).then(|| TailBlock {
            segment: seg.id,
            bytes: bytes[bytes.len() - tail_len..].to_vec(),
        })
    });
    let bytes_written: u64 = writes.iter().map(|w| w.2 as u64).sum();
    if !writes.is_empty() {
        inner.submit_writes(&writes)?;
    }
    inner.device.flush()?;
    Counters::add(&inner.counters.gc_device_bytes_written, bytes_written);

    // 5. Commit: new locations and the new chain, atomically and durably.
    let _commit = inner.commit.lock();
    let mut batch = hashkv_lsm::WriteBatch::new();
    let freed;
    {
        let mut table = inner.table().lock();
        let written_since = table.gc_keys_written(group);
        for (key, ptr) in &pointers {
            if !written_since.contains(*key) {
                batch.put(&keys::user_key(key), &ptr.encode());
            }
        }
        freed = table.finish_gc(group, chain.clone(), survivors_tail);
        batch.put(&keys::group_key(group), &table.encode_group(group));
    }
    // The table already holds the new chain: a failure here poisons the store before
    // `collect_one` could try to undo it.
    if let Err(e) = inner
        .lsm
        .write(&batch, &hashkv_lsm::WriteOptions { sync: true })
    {
        let e = Error::from(e);
        inner.poison_with(&e);
        return Err(e);
    }
    // 6. Readers that started before this point may hold old pointers.
    let release_gen = inner.readers.advance();
    let segments_freed = freed.iter().filter(|&&id| !layout.is_main(id)).count();
    inner.table().lock().release(freed, release_gen);

    let reclaimed = bytes_read.saturating_sub(bytes_written);
    Counters::add(&inner.counters.gc_runs, 1);
    Counters::add(&inner.counters.gc_records_kept, pointers.len() as u64);
    Counters::add(&inner.counters.gc_bytes_reclaimed, reclaimed);
    Ok(GcOutcome {
        bytes_read,
        bytes_written,
        records_kept: pointers.len() as u64,
        made_room: segments_freed > taken_log.len(),
    })
}
