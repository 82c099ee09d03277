//! The write path's commit: the write cache's frozen map becomes one aligned write per
//! group and segment, all submitted at once, then one device flush, then one atomic
//! index batch carrying the new locations and the changed segment-table entries.
//! See FORMAT.md, "Commit", for why every crash point is safe.

use crate::db::{CommitState, Inner};
use crate::error::{Error, Result};
use crate::keys;
use crate::location::{self, Pointer};
use crate::stats::Counters;
use crate::store::ValueStore;
use crate::write_cache::{CacheMap, CachedValue};
use crate::{groups, vlog};
use hashkv_blockdev::{AlignedBuf, IoOp};
use std::sync::atomic::Ordering;
use std::sync::Arc;

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
                Err(FlushError::NeedSpace { group_at_limit }) => {
                    drop(commit);
                    gc_attempts += 1;
                    self.make_space(gc_attempts, group_at_limit)?;
                }
                Err(FlushError::Fatal(e)) => {
                    self.poison_with(&e);
                    return Err(e);
                }
            }
        }
    }

    /// Runs GC until a flush may find room; `StoreFull` when nothing can be reclaimed.
    /// `group_at_limit` names a group whose chain is full: it is collected first.
    fn make_space(&self, attempt: u32, group_at_limit: Option<u32>) -> Result<()> {
        let made_room = self
            .collect_garbage_once(group_at_limit)?
            .is_some_and(|outcome| outcome.made_room);
        if made_room {
            return Ok(());
        }
        // Space (or the spare main segment GC copies into) that GC released waits for
        // older readers (long scans) to finish.
        if self.space_pending() && attempt < 2000 {
            std::thread::sleep(std::time::Duration::from_millis(5));
            return Ok(());
        }
        if let Some(g) = group_at_limit {
            // Only collecting the group itself shortens a chain at its limit; another
            // GC (the background one) may have done it meanwhile.
            if !self.table().lock().at_chain_limit(g) || attempt < 2 {
                return Ok(());
            }
            return Err(self.store_full());
        }
        if attempt <= self.gc_attempts_max() {
            return Ok(());
        }
        Err(self.store_full())
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
            Err(FlushError::NeedSpace { group_at_limit }) => {
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
                Err(FlushError::NeedSpace { group_at_limit })
            }
            Err(fatal) => {
                // Never committed, and the store now refuses writes: reads must not
                // return what a restart would not (the writer of the failing flush got
                // the error).
                self.cache.write().frozen = None;
                Err(fatal)
            }
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
        let first_seq = self.next_seq.fetch_add(map.len() as u64, Ordering::SeqCst);
        let appended = match &self.store {
            ValueStore::Groups(_) => groups::append::place(self, map, first_seq)?,
            ValueStore::Log(_) => vlog::append::place(self, map, first_seq)?,
            ValueStore::Inline => Appended::inline(map.len()),
        };
        if !appended.writes.is_empty() {
            let written: u64 = appended.writes.iter().map(|w| w.2 as u64).sum();
            self.submit_writes(&appended.writes)
                .map_err(FlushError::Fatal)?;
            Counters::add(&self.counters.flush_device_bytes_written, written);
            // Values must be durable before the index can point at them: the index's
            // log may reach its disk at any moment, even for a non-sync write.
            self.device
                .flush()
                .map_err(|e| FlushError::Fatal(e.into()))?;
        }
        let Appended {
            writes,
            pointers,
            meta,
        } = appended;
        self.buffers.give(writes.into_iter().map(|w| w.1));
        let mut batch = hashkv_lsm::WriteBatch::new();
        for ((k, v), pointer) in map.iter().zip(&pointers) {
            let user_key = keys::user_key(k);
            match (v, pointer) {
                (None, _) => batch.delete(&user_key),
                (Some(small), None) => batch.put(&user_key, &location::encode_inline(small)),
                (Some(_), Some(ptr)) => batch.put(&user_key, &ptr.encode()),
            }
        }
        for (k, v) in &meta {
            batch.put(k, v);
        }
        let last_seq = first_seq + map.len() as u64 - 1;
        batch.put(&keys::seq_key(), &last_seq.to_le_bytes());
        self.lsm
            .write(&batch, &hashkv_lsm::WriteOptions { sync: durable })
            .map_err(|e| FlushError::Fatal(e.into()))?;
        Ok(())
    }

    /// The value a cached entry puts into the value store: a put's value at least
    /// `separation_threshold_bytes` long (selective KV separation); smaller values
    /// and deletes live in the index only.
    pub(crate) fn separated<'v>(&self, value: &'v CachedValue) -> Option<&'v [u8]> {
        let threshold = self.options.separation_threshold_bytes as usize;
        value.as_deref().filter(|v| v.len() >= threshold)
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

/// What a mode's placement produced for one flush: the device writes (offset, buffer,
/// bytes), a pointer per map entry whose value went to the value store (None: inline
/// or deleted), and metadata entries to commit in the same index batch.
pub(crate) struct Appended {
    pub writes: Vec<(u64, AlignedBuf, usize)>,
    pub pointers: Vec<Option<Pointer>>,
    pub meta: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Appended {
    /// Every value inline in the index (the lsm mode): nothing to write to the device.
    pub fn inline(entries: usize) -> Appended {
        Appended {
            writes: Vec::new(),
            pointers: vec![None; entries],
            meta: Vec::new(),
        }
    }
}

pub(crate) enum FlushError {
    /// Nothing was written; GC must make room first (see `NeedSpace`).
    NeedSpace {
        group_at_limit: Option<u32>,
    },
    Fatal(Error),
}
