//! A write enters the store: its key and value are checked, it goes into the write
//! cache, and the writer that fills the cache wakes the background flusher
//! (`flusher.rs`). While a flush is in flight, writes are paced so that the next cache
//! fills by the time it is expected to end (`gc/pacer.rs`). A writer that asks for
//! durability, or fills the cache while the previous one is still being flushed,
//! flushes in its own thread (`flush.rs`). A write the store refuses for lack of space is taken back out of the
//! cache, so that it is neither read back nor committed later.

use crate::commit::pipeline::{Progress, Reach};
use crate::db::{Inner, KEY_BYTES_MAX};
use crate::error::{Error, Result};
use crate::key_hash::HashedKey;
use crate::record;
use crate::stats::Counters;
use crate::write_cache::{self, Entry, Undo};
use std::sync::atomic::Ordering;

impl Inner {
    /// The same limit in every mode, so that modes take the same workloads: a record
    /// fits in one log segment, and an inline value (with its location tag) in the
    /// index.
    pub(crate) fn value_bytes_max(&self, key_len: usize) -> usize {
        let record_max =
            self.layout.log_segment_bytes as usize - record::RECORD_HEADER_BYTES - key_len;
        record_max.min(hashkv_lsm::VALUE_BYTES_MAX - 1)
    }

    pub(crate) fn check_entry(&self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        if key.is_empty() || key.len() > KEY_BYTES_MAX {
            return Err(Error::KeyTooLarge {
                len: key.len(),
                max: KEY_BYTES_MAX,
            });
        }
        if let Some(v) = value {
            let max = self.value_bytes_max(key.len());
            if v.len() > max {
                return Err(Error::ValueTooLarge { len: v.len(), max });
            }
        }
        Ok(())
    }

    /// Writes `entries` (their owned values move into the cache; a single put passes
    /// an array on its stack, so that it allocates nothing).
    pub(crate) fn write(&self, entries: &mut [Entry<'_>], sync: bool) -> Result<()> {
        self.committer.check_writable()?;
        // The write side is about to grow: memory lent to the block cache comes back.
        self.take_back_loan();
        for e in entries.iter_mut() {
            self.check_entry(e.key, e.value_slice())?;
            e.value = e.value.take().map(|v| v.for_cache(&self.cache_pool));
        }
        let user_bytes: u64 = entries
            .iter()
            .map(|e| (e.key.len() + e.value_slice().map_or(0, <[u8]>::len)) as u64)
            .sum();
        let ops = entries.len() as u64;
        // Before the cache: a paced write waits without holding anything.
        let gc_charged_seconds = self.gc.pacer.pace(user_bytes);
        let sync = sync || self.options.sync_writes;
        let limit = self.options.write_cache_bytes;
        let entry_bytes = write_cache::growth_bytes(entries);
        let (flush_no, full, backpressure, fill, undo) = {
            let mut cache = self.cache.write();
            // Only a write that flushes in its own thread can be refused, so only it
            // pays for the record of what it replaces.
            let undo = (sync || cache.may_need_writer_flush(entry_bytes, limit))
                .then(|| cache.undo_for(entries));
            for e in entries.iter_mut() {
                cache.insert(HashedKey::new(e.key), e.value.take());
            }
            (
                cache.active_flush,
                cache.active_bytes >= limit,
                cache.needs_writer_flush(limit),
                cache.fill(limit),
                undo,
            )
        };
        Counters::add(&self.counters.user_bytes_written, user_bytes);
        Counters::add(&self.counters.user_ops, ops);
        if !(sync || backpressure) {
            if full {
                self.flusher.request();
            } else {
                // After the cache: the write is in, and the writer holds nothing.
                self.gc
                    .pacer
                    .pace_cache(entry_bytes, fill, gc_charged_seconds);
            }
            return Ok(());
        }
        // A writer under backpressure waits only until its map is placed: the next
        // cache may then fill. Without a cache, every write is committed before it
        // returns (`Db`'s docs, "Durability").
        let reach = match (sync, limit) {
            (true, _) => Reach::Durable,
            (false, 0) => Reach::Committed,
            (false, _) => Reach::Placed,
        };
        match self.flush_through(flush_no, reach) {
            Err(e @ Error::StoreFull { .. }) => {
                let undo = undo.expect("a write that flushes records its undo");
                self.take_back(flush_no, sync, undo, user_bytes, ops, e)
            }
            other => other,
        }
    }

    /// A write of flush `flush_no` was refused with `StoreFull`. Decided under the
    /// (drained) commit lock, so no flush holds this write frozen: either another
    /// writer's flush committed it meanwhile (then it took effect), or it is taken
    /// back. Writes acknowledged before it stay cached.
    fn take_back(
        &self,
        flush_no: u64,
        sync: bool,
        undo: Undo,
        user_bytes: u64,
        ops: u64,
        refusal: Error,
    ) -> Result<()> {
        let commit = self.committer.lock();
        if self
            .committer
            .pipeline
            .progress(flush_no, Reach::Committed)?
            == Progress::Done
        {
            drop(commit);
            return if sync {
                self.flush_through(flush_no, Reach::Durable)
            } else {
                Ok(())
            };
        }
        let mut cache = self.cache.write();
        debug_assert!(
            cache.frozen.is_empty(),
            "no flush runs under the drained commit lock"
        );
        cache.take_back(undo);
        drop(cache);
        drop(commit);
        self.counters
            .user_bytes_written
            .fetch_sub(user_bytes, Ordering::Relaxed);
        self.counters.user_ops.fetch_sub(ops, Ordering::Relaxed);
        Err(refusal)
    }

    /// Flushes everything written so far, and waits until it is durable.
    pub(crate) fn flush_all(&self) -> Result<()> {
        let n = self.cache.read().active_flush;
        self.flush_through(n, Reach::Durable)
    }
}
