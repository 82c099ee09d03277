//! The write path's commit: the write cache's frozen map becomes one aligned write per
//! group and segment, all submitted at once, then one device flush, then one atomic
//! index batch carrying the new locations and the changed segment-table entries.
//! See FORMAT.md, "Commit", for why every crash point is safe.

use crate::db::{CommitState, Inner};
use crate::error::{Error, Result};
use crate::gc;
use crate::keys;
use crate::location::{self, Pointer};
use crate::record::{self, RecordKind};
use crate::segment_table::{NeedSpace, Placement};
use crate::stats::Counters;
use crate::write_cache::CacheMap;
use hashkv_blockdev::{AlignedBuf, IoOp};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One record to append: its key, value (None for a tombstone) and group.
struct Pending<'a> {
    key: &'a [u8],
    value: Option<&'a [u8]>,
    group: u32,
    seq: u64,
}

impl Inner {
    /// Returns once flush number `flush_no` is committed (and durable, if asked).
    /// Concurrent callers share flushes: whoever holds the commit lock flushes everything
    /// cached so far, and the others find their flush already done (group commit).
    pub(crate) fn flush_through(&self, flush_no: u64, durable: bool) -> Result<()> {
        let mut gc_attempts = 0u32;
        loop {
            self.check_writable()?;
            let mut commit = self.commit.lock();
            if commit.durable_flushes > flush_no {
                return Ok(());
            }
            if commit.committed_flushes > flush_no {
                if !durable {
                    return Ok(());
                }
                if let Err(e) = self.lsm.sync_wal() {
                    let e = Error::from(e);
                    self.poison_with(&e);
                    return Err(e);
                }
                commit.durable_flushes = commit.committed_flushes;
                return Ok(());
            }
            match self.flush_active(&mut commit, durable) {
                Ok(()) => {
                    gc_attempts = 0;
                    drop(commit);
                    self.maybe_wake_gc();
                }
                Err(FlushError::NeedSpace) => {
                    drop(commit);
                    gc_attempts += 1;
                    self.make_space(gc_attempts)?;
                }
                Err(FlushError::Fatal(e)) => {
                    self.poison_with(&e);
                    return Err(e);
                }
            }
        }
    }

    /// Runs GC until a flush may find room; `StoreFull` when nothing can be reclaimed.
    fn make_space(&self, attempt: u32) -> Result<()> {
        let reclaimed_something = match gc::collect_one(self) {
            Ok(Some(outcome)) => outcome.segments_freed > outcome.segments_taken,
            Ok(None) => false,
            Err(e) => return Err(e),
        };
        if reclaimed_something {
            return Ok(());
        }
        // Segments GC released wait for older readers (long scans) to finish.
        if self.table.lock().pending_free_segments() > 0 && attempt < 2000 {
            std::thread::sleep(std::time::Duration::from_millis(5));
            return Ok(());
        }
        if attempt <= self.layout.group_count + 2 {
            return Ok(());
        }
        let t = self.table.lock();
        Err(Error::StoreFull {
            live_bytes: t.used_bytes(),
            group_count: self.layout.group_count,
        })
    }

    fn flush_active(
        &self,
        commit: &mut CommitState,
        durable: bool,
    ) -> std::result::Result<(), FlushError> {
        let (map, n) = self.cache.write().freeze();
        debug_assert_eq!(n, commit.committed_flushes);
        match self.commit_map(&map, durable) {
            Ok(()) => {
                self.cache.write().frozen = None;
                commit.committed_flushes = n + 1;
                if durable {
                    commit.durable_flushes = n + 1;
                }
                Counters::add(&self.counters.flushes, 1);
                Ok(())
            }
            Err(FlushError::NeedSpace) => {
                // Nothing was written: put the entries back under any newer ones.
                let mut cache = self.cache.write();
                cache.frozen = None;
                cache.active_flush -= 1;
                let map = Arc::try_unwrap(map).unwrap_or_else(|m| (*m).clone());
                for (k, v) in map {
                    if !cache.active.contains_key(&k) {
                        cache.insert(&k, v);
                    }
                }
                Err(FlushError::NeedSpace)
            }
            Err(fatal) => Err(fatal),
        }
    }

    fn commit_map(&self, map: &CacheMap, durable: bool) -> std::result::Result<(), FlushError> {
        if map.is_empty() {
            if durable {
                self.lsm
                    .sync_wal()
                    .map_err(|e| FlushError::Fatal(e.into()))?;
            }
            return Ok(());
        }
        let threshold = self.options.separation_threshold_bytes as usize;
        let groups = self.layout.group_count;
        let first_seq = self.next_seq.fetch_add(map.len() as u64, Ordering::SeqCst);
        // Every key gets a record in its group: a value, or a tombstone for a delete or
        // an inline (small) value, so that GC never revives an older separated value.
        let mut pending: Vec<Pending<'_>> = Vec::with_capacity(map.len());
        for (i, (k, v)) in map.iter().enumerate() {
            let value = v.as_deref().filter(|v| v.len() >= threshold);
            pending.push(Pending {
                key: k,
                value,
                group: group_of(k, groups),
                seq: first_seq + i as u64,
            });
        }
        let mut by_group: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, p) in pending.iter().enumerate() {
            by_group.entry(p.group).or_default().push(i);
        }
        let per_group: Vec<(u32, Vec<usize>)> = by_group
            .iter()
            .map(|(g, idx)| {
                let lens = idx
                    .iter()
                    .map(|&i| {
                        record::encoded_len(
                            pending[i].key.len(),
                            pending[i].value.map_or(0, |v| v.len()),
                        )
                    })
                    .collect();
                (*g, lens)
            })
            .collect();
        let (placements, group_entries) = {
            let mut table = self.table.lock();
            table.reclaim(self.readers.oldest_active());
            let placements = table
                .place_all(&per_group)
                .map_err(|NeedSpace| FlushError::NeedSpace)?;
            for (g, idx) in &by_group {
                for &i in idx {
                    table.note_key_written(*g, pending[i].key);
                }
            }
            let entries: Vec<(u32, Vec<u8>)> = by_group
                .keys()
                .map(|&g| (g, table.encode_group(g)))
                .collect();
            (placements, entries)
        };
        // Lay the records out: one buffer per (group, segment) run.
        let mut record_at: Vec<Placement> = vec![
            Placement {
                segment: 0,
                offset: 0
            };
            pending.len()
        ];
        let mut writes: Vec<(u64, AlignedBuf, usize)> = Vec::new();
        let mut scratch = Vec::new();
        for ((_, idx), places) in by_group.iter().zip(&placements) {
            let mut run_start = 0;
            while run_start < idx.len() {
                let seg = places[run_start].segment;
                let mut run_end = run_start;
                while run_end < idx.len() && places[run_end].segment == seg {
                    run_end += 1;
                }
                scratch.clear();
                for j in run_start..run_end {
                    let p = &pending[idx[j]];
                    record_at[idx[j]] = places[j];
                    let kind = if p.value.is_some() {
                        RecordKind::Value
                    } else {
                        RecordKind::Tombstone
                    };
                    record::encode(&mut scratch, kind, p.seq, p.key, p.value.unwrap_or(&[]));
                }
                let start = places[run_start].offset;
                let block = self.layout.block_bytes as usize;
                let mut buf = AlignedBuf::new(scratch.len().div_ceil(block) * block);
                buf[..scratch.len()].copy_from_slice(&scratch);
                let len = buf.len();
                writes.push((self.layout.segment_offset(seg) + start, buf, len));
                run_start = run_end;
            }
        }
        let written: u64 = writes.iter().map(|w| w.2 as u64).sum();
        self.submit_writes(&writes).map_err(FlushError::Fatal)?;
        Counters::add(&self.counters.flush_device_bytes_written, written);
        // Values must be durable before the index can point at them: the index's log
        // may reach its disk at any moment, even for a non-sync write.
        self.device
            .flush()
            .map_err(|e| FlushError::Fatal(e.into()))?;
        let mut batch = hashkv_lsm::WriteBatch::new();
        for (i, (k, v)) in map.iter().enumerate() {
            let user_key = keys::user_key(k);
            match (v, pending[i].value) {
                (None, _) => batch.delete(&user_key),
                (Some(small), None) => batch.put(&user_key, &location::encode_inline(small)),
                (Some(_), Some(value)) => {
                    let at = record_at[i];
                    let ptr = Pointer {
                        segment: at.segment,
                        offset: at.offset as u32,
                        record_bytes: record::encoded_len(k.len(), value.len()) as u32,
                        seq: pending[i].seq,
                    };
                    batch.put(&user_key, &ptr.encode())
                }
            }
        }
        for (g, entry) in &group_entries {
            batch.put(&keys::group_key(*g), entry);
        }
        let last_seq = first_seq + map.len() as u64 - 1;
        batch.put(&keys::seq_key(), &last_seq.to_le_bytes());
        self.lsm
            .write(&batch, &hashkv_lsm::WriteOptions { sync: durable })
            .map_err(|e| FlushError::Fatal(e.into()))?;
        Ok(())
    }

    /// Submits aligned writes all at once, split at `batch_write_threshold_bytes`, so
    /// the io_uring loop keeps many groups' writes in flight.
    pub(crate) fn submit_writes(&self, writes: &[(u64, AlignedBuf, usize)]) -> Result<()> {
        let piece_max = (self.options.batch_write_threshold_bytes as usize)
            .max(self.layout.block_bytes as usize)
            / self.layout.block_bytes as usize
            * self.layout.block_bytes as usize;
        let mut ops: Vec<IoOp<'_>> = Vec::new();
        for (offset, buf, len) in writes {
            let mut done = 0;
            while done < *len {
                let n = piece_max.min(len - done);
                ops.push(IoOp::Write {
                    offset: offset + done as u64,
                    buf: &buf[done..done + n],
                    fua: false,
                });
                done += n;
            }
        }
        self.device.submit(&mut ops)?;
        Ok(())
    }
}

pub(crate) fn group_of(key: &[u8], group_count: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key) % u64::from(group_count)) as u32
}

pub(crate) enum FlushError {
    NeedSpace,
    Fatal(Error),
}
