//! Garbage collection of the value log, as WiscKey does it.
//!
//! 1. Under the commit lock (no flush half-way placing), take the range to collect:
//!    from the tail up to `gc_chunk_bytes` on, and start noting keys that flushes
//!    change.
//! 2. Once the flushes placed before are committed (waited for without the lock: the
//!    index must answer for their keys), read the range (one read per chunk, all
//!    submitted at once).
//! 3. For every record, look its key up in the index: the record is live only if the
//!    index still points exactly at it. These lookups are the vLog's inherent cost;
//!    the index blocks they need are read in parallel first, `GC_PREFETCH_KEYS` keys
//!    at a time (one by one, a 64 MiB chunk's lookups read for seconds once the index
//!    outgrew its block cache, and writers stalled behind them).
//! 4. Under the commit lock: drop keys that flushes changed since step 1, append the
//!    live records at the head (GC may use the reserve flushes leave free) and queue
//!    their writes and their pointers with the new head and tail on the committer,
//!    behind the flushes placed before, synced; wait for it without the lock.
//! 5. The collected range becomes writable again once readers that may still hold
//!    pointers into it are gone.
//!
//! The collected range is never written before step 5, and everything appended lies
//! beyond the committed head, so a crash at any step leaves the committed state intact.

use super::ValueLog;
use crate::align::RecordSize;
use crate::circular_log::RunRecord;
use crate::commit::{PlacedSoFar, Plan, Purpose};
use crate::error::{Error, Result};
use crate::key_hash::HashedKey;
use crate::keys;
use crate::location::{self, Location};
use crate::record::RecordKind;
use crate::spans::{self, Span};
use crate::stats::Counters;
use crate::store::{GcCtx, GcOutcome};
use hashkv_blockdev::AlignedBuf;

pub(super) fn collect(store: &ValueLog, ctx: &GcCtx<'_>) -> Result<Option<GcOutcome>> {
    ctx.committer.check_writable()?;
    let Some((start, end, placed_before)) = begin(store, ctx) else {
        return Ok(None);
    };
    let outcome = placed_before
        .wait_committed(ctx.committer)
        .and_then(|()| run(store, ctx, start, end));
    if outcome.is_err() {
        // Stop noting keys: no commit follows.
        ctx.committer.lock_for_gc().written_during_gc.finish();
    }
    ctx.committer.poisoning(outcome).map(Some)
}

/// Step 1. Returns, with the range, the flushes placed before: the GC looks keys up
/// only once their batches are in the index (a key they wrote is not noted for it).
fn begin(store: &ValueLog, ctx: &GcCtx<'_>) -> Option<(u64, u64, PlacedSoFar)> {
    let mut commit = ctx.committer.lock_for_gc();
    let mut log = store.log.lock();
    log.reclaim(ctx.io.readers.oldest_active());
    let (start, end) = store.gc_range(&log)?;
    commit.written_during_gc.begin(|_| true);
    Some((start, end, commit.placed_so_far()))
}

/// A live record found in the collected range.
struct Live<'a> {
    key: &'a [u8],
    value: &'a [u8],
    seq: u64,
    crc: u32,
}

fn run(store: &ValueLog, ctx: &GcCtx<'_>, start: u64, end: u64) -> Result<GcOutcome> {
    let spans = store.geometry.spans(start, end);
    let only_spans: Vec<Span> = spans.iter().map(|(_, s)| *s).collect();
    let (bufs, _) = spans::read_pooled(ctx.io.device, &only_spans, ctx.io.buffers)?;
    let bytes_read = end - start;
    Counters::add(&ctx.io.counters.gc_device_bytes_read, bytes_read);
    let live = live_records(store, ctx, &spans, &bufs)?;
    let (records_kept, bytes_written) = commit_moves(store, ctx, live, (start, end))?;
    Ok(GcOutcome {
        bytes_read,
        bytes_written,
        records_kept,
        made_room: bytes_written < bytes_read,
    })
}

/// Keys whose index blocks GC reads at once before looking them up: their blocks
/// (at most one per key, 4 KiB by default) must stay in the block cache until the
/// lookups, so a group is a few MiB, far less than any budget's block cache.
const GC_PREFETCH_KEYS: usize = 1024;

/// Step 3: one index lookup per record, the blocks of each group of lookups read in
/// parallel first.
fn live_records<'b>(
    store: &ValueLog,
    ctx: &GcCtx<'_>,
    spans: &[(u64, Span)],
    bufs: &'b [AlignedBuf],
) -> Result<Vec<Live<'b>>> {
    let mut records = Vec::new();
    for ((first, span), buf) in spans.iter().zip(bufs) {
        for item in span.records(buf) {
            let (off, rec) = item.map_err(|e| e.at(format!("value log GC at position {first}")))?;
            if rec.kind == RecordKind::Value {
                let here = store.pointer(first + off as u64, rec.encoded_len(), rec.seq, rec.crc);
                records.push((here, rec));
            }
        }
    }
    let mut live = Vec::new();
    // A group's index keys, back to back in one buffer reused by every group.
    let (mut key_buf, mut group_keys) = (Vec::new(), Vec::new());
    for group in records.chunks(GC_PREFETCH_KEYS) {
        group_keys.clear();
        let mut ranges = Vec::with_capacity(group.len());
        for (_, rec) in group {
            let from = group_keys.len();
            group_keys.extend_from_slice(keys::user_key_into(&mut key_buf, rec.key));
            ranges.push(from..group_keys.len());
        }
        let user_keys: Vec<&[u8]> = ranges.into_iter().map(|r| &group_keys[r]).collect();
        ctx.index.prefetch(&user_keys)?;
        for ((here, rec), user_key) in group.iter().zip(&user_keys) {
            let entry = ctx.index.get(user_key)?;
            let is_live = match entry.as_deref().map(location::decode).transpose()? {
                Some(Location::Pointer(p)) => p == *here,
                _ => false,
            };
            if is_live {
                live.push(Live {
                    key: rec.key,
                    value: rec.value,
                    seq: rec.seq,
                    crc: rec.crc,
                });
            }
        }
    }
    Ok(live)
}

/// Step 4: re-append the live records of `[start, end)` and commit, with no flush in
/// between. Returns the records kept and the bytes written.
fn commit_moves(
    store: &ValueLog,
    ctx: &GcCtx<'_>,
    mut live: Vec<Live<'_>>,
    (start, end): (u64, u64),
) -> Result<(u64, u64)> {
    let mut commit = ctx.committer.lock_for_gc();
    let changed = commit.written_during_gc.finish();
    live.retain(|l| !changed.contains(HashedKey::new(l.key)));
    let sizes: Vec<RecordSize> = live
        .iter()
        .map(|l| RecordSize::value(l.key.len(), l.value.len()))
        .collect();
    // Values are padded onto sectors only if even the most padding keeps the copies
    // within the range collected, which the GC reserve is sized for.
    let padded_max: u64 = sizes
        .iter()
        .map(|s| s.len_max(ctx.io.value_align_bytes))
        .sum();
    let align = if padded_max <= end - start {
        ctx.io.value_align_bytes
    } else {
        1
    };
    let mut log = store.log.lock();
    let Ok(placed) = log.place(&sizes, align, 0) else {
        drop(log);
        return Err(store_full(store));
    };
    let run: Vec<RunRecord<'_>> = live
        .iter()
        .zip(&placed.positions)
        .map(|(l, &position)| RunRecord {
            position,
            key: l.key,
            value: l.value,
            aligned: None,
            seq: l.seq,
        })
        .collect();
    // A moved record is the same bytes: it keeps its checksum.
    let (writes, _) = log.encode_run(&run, &placed, &ctx.io.encoder())?;
    let mut batch = hashkv_lsm::WriteBatch::new();
    let mut key_buf = Vec::new();
    for (l, (&position, size)) in live.iter().zip(placed.positions.iter().zip(&sizes)) {
        let p = store.pointer(position, size.len as usize, l.seq, l.crc);
        batch.put(keys::user_key_into(&mut key_buf, l.key), &p.encode());
    }
    log.advance_tail(end);
    batch.put(&keys::vlog_key(), &log.encode_entry());
    drop(log);
    let committed = commit.queue_plan(Plan {
        purpose: Purpose::Gc,
        writes,
        batch,
        durable: true,
    })?;
    drop(commit);
    let release_gen = committed.wait()?;
    // Step 5: readers that started before the commit may hold pointers into the range.
    store.log.lock().release_behind(end, release_gen);
    Ok((live.len() as u64, placed.end - placed.start))
}

fn store_full(store: &ValueLog) -> Error {
    crate::store::store_full(crate::store::ValueStore::space(store))
}
