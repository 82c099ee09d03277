//! Garbage collection of the value log, as WiscKey does it.
//!
//! 1. Under the commit lock (no flush half-way), take the range to collect: from the
//!    tail up to `gc_chunk_bytes` on, and start noting keys that flushes change.
//! 2. Read the range (one read per chunk, all submitted at once).
//! 3. For every record, look its key up in the index: the record is live only if the
//!    index still points exactly at it. These lookups are the vLog's inherent cost.
//! 4. Under the commit lock: drop keys that flushes changed since step 1, append the
//!    live records at the head (GC may use the reserve flushes leave free), flush the
//!    device, then commit the new pointers and the new head and tail in one synced
//!    index batch.
//! 5. The collected range becomes writable again once readers that may still hold
//!    pointers into it are gone.
//!
//! The collected range is never written before step 5, and everything appended lies
//! beyond the committed head, so a crash at any step leaves the committed state intact.

use crate::db::Inner;
use crate::error::{Error, Result};
use crate::keys;
use crate::location::{self, Location};
use crate::record::{self, RecordKind, SegmentRecords};
use crate::stats::Counters;
use crate::store::GcOutcome;
use crate::vlog::log::{encode_entry, LogGeometry, NeedSpace};
use hashkv_blockdev::{AlignedBuf, IoOp};

pub(crate) fn collect_one(inner: &Inner) -> Result<Option<GcOutcome>> {
    let _one_gc = inner.gc_lock.lock();
    inner.check_writable()?;
    let (start, end) = {
        let _commit = inner.commit.lock();
        let mut log = inner.value_log().lock();
        log.reclaim(inner.readers.oldest_active());
        let Some(range) = log.gc_range() else {
            return Ok(None);
        };
        log.begin_gc();
        range
    };
    let outcome = run(inner, start, end);
    // Stops the key tracking if `run` failed before doing so.
    inner.value_log().lock().end_gc();
    match outcome {
        Ok(o) => Ok(Some(o)),
        Err(e) => {
            if e.is_fatal() {
                inner.poison_with(&e);
            }
            Err(e)
        }
    }
}

/// A live record found in the collected range.
struct Live<'a> {
    key: &'a [u8],
    value: &'a [u8],
    seq: u64,
}

fn run(inner: &Inner, start: u64, end: u64) -> Result<GcOutcome> {
    let block = inner.layout.block_bytes as usize;
    // One piece per chunk: whole blocks read, the records in [start, end) parsed.
    // (position of the first block read, bytes to read, device offset, parse from, to)
    let pieces: Vec<(u64, usize, u64, usize, usize)> = {
        let log = inner.value_log().lock();
        let block = block as u64;
        let mut pieces = Vec::new();
        let mut at = start;
        while at < end {
            let chunk_end = (at / log.chunk_bytes + 1) * log.chunk_bytes;
            let piece_end = chunk_end.min(end);
            let first = at - at % block;
            let len = (piece_end.next_multiple_of(block) - first) as usize;
            pieces.push((
                first,
                len,
                log.device_offset(first),
                (at - first) as usize,
                (piece_end - first) as usize,
            ));
            at = piece_end;
        }
        pieces
    };

    // 2. Read the range at once.
    let mut bufs: Vec<AlignedBuf> = pieces.iter().map(|p| AlignedBuf::new(p.1)).collect();
    {
        let mut ops: Vec<IoOp<'_>> = bufs
            .iter_mut()
            .zip(&pieces)
            .map(|(buf, p)| IoOp::Read {
                offset: p.2,
                buf: &mut buf[..],
            })
            .collect();
        inner.device.submit(&mut ops)?;
    }
    let bytes_read = end - start;
    Counters::add(&inner.counters.gc_device_bytes_read, bytes_read);

    // 3. One index lookup per record.
    let geometry = LogGeometry::of(&inner.layout);
    let mut live: Vec<Live<'_>> = Vec::new();
    let mut lookups = 0u64;
    for (piece, buf) in pieces.iter().zip(&bufs) {
        for item in SegmentRecords::new_at(&buf[..piece.4], piece.3, block) {
            let (off, rec) = item.map_err(|e| Error::Corruption {
                what: format!("value log GC at position {}: {e}", piece.0),
            })?;
            if rec.kind != RecordKind::Value {
                continue;
            }
            let position = piece.0 + off as u64;
            let here = geometry.pointer(position, rec.encoded_len(), rec.seq);
            lookups += 1;
            let entry = inner.lsm.get(&keys::user_key(rec.key))?;
            let is_live = match entry.as_deref().map(location::decode).transpose()? {
                Some(Location::Pointer(p)) => p == here,
                _ => false,
            };
            if is_live {
                live.push(Live {
                    key: rec.key,
                    value: rec.value,
                    seq: rec.seq,
                });
            }
        }
    }
    Counters::add(&inner.counters.gc_index_lookups, lookups);

    // 4. Re-append the live records and commit, with no flush in between.
    let _commit = inner.commit.lock();
    let mut log = inner.value_log().lock();
    let changed = log.end_gc();
    live.retain(|l| !changed.contains(l.key));
    let lens: Vec<usize> = live
        .iter()
        .map(|l| record::encoded_len(l.key.len(), l.value.len()))
        .collect();
    let (positions, new_start, new_end) = match log.place(&lens, true) {
        Ok(p) => p,
        Err(NeedSpace) => {
            drop(log);
            return Err(inner.store_full());
        }
    };
    let run: Vec<(u64, &[u8], &[u8], u64)> = live
        .iter()
        .zip(&positions)
        .map(|(l, pos)| (*pos, l.key, l.value, l.seq))
        .collect();
    let writes = log.encode_run(&run, new_start, new_end, &inner.buffers);
    let mut batch = hashkv_lsm::WriteBatch::new();
    for (l, (pos, len)) in live.iter().zip(positions.iter().zip(&lens)) {
        let p = log.pointer(*pos, *len, l.seq);
        batch.put(&keys::user_key(l.key), &p.encode());
    }
    batch.put(&keys::vlog_key(), &encode_entry(log.head, end));
    drop(log);
    let bytes_written = new_end - new_start;
    if !writes.is_empty() {
        inner.submit_writes(&writes)?;
        inner.device.flush()?;
    }
    Counters::add(&inner.counters.gc_device_bytes_written, bytes_written);
    inner
        .lsm
        .write(&batch, &hashkv_lsm::WriteOptions { sync: true })?;
    // 5. Readers that started before this point may hold pointers into the range.
    let release_gen = inner.readers.advance();
    inner.value_log().lock().advance_tail(end, release_gen);

    Counters::add(&inner.counters.gc_runs, 1);
    Counters::add(&inner.counters.gc_records_kept, live.len() as u64);
    Counters::add(
        &inner.counters.gc_bytes_reclaimed,
        bytes_read.saturating_sub(bytes_written),
    );
    Ok(GcOutcome {
        bytes_read,
        bytes_written,
        records_kept: live.len() as u64,
        made_room: bytes_written < bytes_read,
    })
}
