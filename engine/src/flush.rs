//! The write path's group commit: the write cache's frozen map is placed (the value
//! store places its records, one aligned write per group and segment, all submitted at
//! once) and written under the commit lock; the commit thread then flushes the device
//! and commits its index batch, with the new locations and the value store's changed
//! entries, while the next flush places (`commit/pipeline.rs`). When the store has no
//! room, GC runs first. See `commit/` for why every crash point is safe.

use crate::commit::flush_writes::WritesInFlight;
use crate::commit::pipeline::{PlacedFlush, Progress, Queued, Reach};
use crate::commit::{CommitGuard, Purpose};
use crate::db::Inner;
use crate::error::{Error, Result};
use crate::gc::FlushGc;
use crate::keys;
use crate::location;
use crate::stats::Counters;
use crate::store::{store_full, FlushRecord, PlaceError, Placed};
use crate::write_cache::CacheMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// While GC's released space waits for older readers (a long scan), a flush that needs
/// it sleeps this long between tries...
const READER_WAIT_STEP: Duration = Duration::from_millis(5);
/// ...this many times (10 s in all) before the store counts as full: no reader should
/// hold a generation that long, and a full store must not hang its writers.
const READER_WAIT_STEPS_MAX: u32 = 2000;
/// Tries at collecting the group whose chain is at its limit before `StoreFull`: the
/// background GC may be collecting that very group when the first tries come, and a
/// concurrent flush may have filled what the last GC freed.
const GROUP_AT_LIMIT_TRIES: u32 = 4;

impl Inner {
    /// Returns once flush number `flush_no` has come as far as `reach`. Concurrent
    /// callers share flushes: whoever holds the commit lock flushes everything cached
    /// so far, and the others find their flush already placed (group commit).
    pub(crate) fn flush_through(&self, flush_no: u64, reach: Reach) -> Result<()> {
        // A flush takes buffers and grows the memtables: memory lent to the block cache
        // comes back first (a flush of writes made before the loan, or `Db::flush`).
        self.take_back_loan();
        let mut gc_attempts = 0u32;
        // The group whose chain was at its limit at the last refusal, and how many
        // refusals in a row named it.
        let mut at_limit: Option<AtLimit> = None;
        let pipeline = &self.committer.pipeline;
        loop {
            // Before the poison: a flush that failed on the commit thread returns its
            // own error to whoever waits for it, not `Poisoned`.
            match pipeline.progress(flush_no, reach)? {
                Progress::Done => return Ok(()),
                Progress::NeedsSync(committed) => {
                    self.committer.sync_index()?;
                    pipeline.note_durable(committed);
                    return Ok(());
                }
                Progress::Unplaced => {}
            }
            self.committer.check_writable()?;
            let started = Instant::now();
            let mut commit = self.committer.lock_for_flush();
            // Placed by another thread while this one waited for the lock.
            if pipeline.progress(flush_no, Reach::Placed)? == Progress::Done {
                continue;
            }
            match self.flush_active(&mut commit, reach == Reach::Durable) {
                Ok(device_bytes) => {
                    drop(commit);
                    self.gc.pacer.note_flush(
                        started.elapsed(),
                        device_bytes,
                        self.counters.user_bytes_written.load(Ordering::Relaxed),
                    );
                    gc_attempts = 0;
                    at_limit = None;
                    self.maybe_wake_gc();
                }
                Err(PlaceError::NeedSpace { group }) => {
                    drop(commit);
                    gc_attempts += 1;
                    // The group's GC count as the refusal left it: if another GC of it
                    // ends first, this flush does not collect it again.
                    at_limit = group.map(|g| AtLimit {
                        group: g,
                        tries: match at_limit {
                            Some(last) if last.group == g => last.tries + 1,
                            _ => 1,
                        },
                        generation: self.store.gc_generation(g),
                    });
                    self.make_space(gc_attempts, at_limit)?;
                }
                Err(PlaceError::Fatal(e)) => return self.committer.poisoning(Err(e)),
            }
        }
    }

    /// Runs GC until a flush may find room; `StoreFull` when nothing can be reclaimed.
    /// `at_limit` names a group whose chain is full: it is collected first.
    fn make_space(&self, attempt: u32, at_limit: Option<AtLimit>) -> Result<()> {
        let outcome = match self.collect_for_flush(at_limit.map(|a| (a.group, a.generation)))? {
            FlushGc::Ran(outcome) => outcome,
            FlushGc::CollectedMeanwhile => return Ok(()),
        };
        if outcome.as_ref().is_some_and(|o| o.made_room) {
            return Ok(());
        }
        // Space (also the room a GC copies into) that GC released waits for
        // older readers (long scans) to finish. When GC could not even start, space
        // that became free just now is tried at once: it is no sign of a full store
        // (counting it as a failed attempt made a busy store report itself full now
        // and then).
        let reclaimed = self.store.reclaim(self.readers.oldest_active());
        if outcome.is_none() && reclaimed.freed {
            return Ok(());
        }
        if reclaimed.waiting && attempt < READER_WAIT_STEPS_MAX {
            std::thread::sleep(READER_WAIT_STEP);
            return Ok(());
        }
        let collected = outcome.is_some();
        let tries = at_limit.map(|a| (a.group, a.tries));
        if out_of_space(tries, collected, attempt, self.store.gc_attempts_max()) {
            return Err(store_full(self.store.space()));
        }
        Ok(())
    }

    /// Freezes the write cache, places it, starts its writes and queues its commit; on
    /// `NeedSpace` the entries go back. Returns the bytes it writes to the device.
    fn flush_active(&self, commit: &mut CommitGuard<'_>, durable: bool) -> Result<u64, PlaceError> {
        let (map, flush_no) = self.cache.write().freeze();
        match self.place_map(commit, &map) {
            Ok(PlacedMap {
                batch,
                writes,
                device_bytes,
            }) => {
                // Marked before it is queued: the commit thread releases only placed maps.
                let (bytes, took) = self.cache.write().mark_placed();
                let limit = self.options.write_cache_bytes;
                self.gc.pacer.note_placed(bytes, limit, took);
                self.committer.pipeline.queue(PlacedFlush {
                    flush_no,
                    batch,
                    writes,
                    durable,
                });
                Ok(device_bytes)
            }
            Err(PlaceError::NeedSpace { group }) => {
                self.cache.write().unfreeze(map);
                Err(PlaceError::NeedSpace { group })
            }
            Err(fatal) => {
                // Never committed, and the store now refuses writes: reads must not
                // return what a restart would not (the writer of the failing flush got
                // the error).
                self.cache.write().drop_placing();
                Err(fatal)
            }
        }
    }

    /// Places `map`'s records and starts writing them.
    fn place_map(
        &self,
        commit: &mut CommitGuard<'_>,
        map: &CacheMap,
    ) -> Result<PlacedMap, PlaceError> {
        if map.is_empty() {
            return Ok(PlacedMap {
                batch: None,
                writes: None,
                device_bytes: 0,
            });
        }
        let first_seq = self.next_seq.fetch_add(map.len() as u64, Ordering::SeqCst);
        let records: Vec<FlushRecord<'_>> = map
            .iter()
            .zip(map.aligned_values())
            .enumerate()
            .map(|(i, ((key, value), aligned))| {
                let value = self.separated(value);
                FlushRecord {
                    key: key.key,
                    key_hash: key.hash,
                    value,
                    aligned: aligned.filter(|_| value.is_some()),
                    seq: first_seq + i as u64,
                }
            })
            .collect();
        if !self.flush_encodes_beside_writes {
            // Under a memory budget: the previous flush's buffers are back in the pool
            // before these records are encoded (`memory::WRITE_CACHE_COPIES`).
            commit.wait_for_previous_flush_writes()?;
        }
        let Placed {
            writes,
            pointers,
            entries,
        } = self.store.place(&self.io(), &records)?;
        for (key, _) in map.iter() {
            commit.written_during_gc.note(key);
        }
        let last_seq = first_seq + map.len() as u64 - 1;
        let batch = index_batch(map, &pointers, &entries, last_seq);
        let device_bytes = writes.iter().map(|w| w.len as u64).sum();
        let writes = commit.start_writes(writes, Purpose::Flush)?;
        Ok(PlacedMap {
            batch: Some(batch),
            writes,
            device_bytes,
        })
    }

    /// The commit thread: commits placed flushes in order, several at once when they
    /// queued while the last device flush ran (`commit/pipeline.rs`). If it panics (a
    /// bug), the store is poisoned and every placed flush fails, so that no caller
    /// waits for it forever.
    pub(crate) fn commit_loop(&self) {
        let run = std::panic::AssertUnwindSafe(|| self.commit_queued());
        if let Err(panic) = std::panic::catch_unwind(run) {
            let message = crate::error::panic_message(panic.as_ref());
            let e = Error::CommitThreadPanicked { message };
            let _ = self.committer.poisoning::<()>(Err(e.clone()));
            self.committer.pipeline.fail_all(e);
            // What it held is not committed: reads must not return it.
            self.cache.write().frozen.retain(|f| !f.placed);
        }
    }

    fn commit_queued(&self) {
        let pipeline = &self.committer.pipeline;
        while let Some(queued) = pipeline.take_queued() {
            let (mut flushes, mut through, mut plans) = (0u64, 0u64, 0u64);
            for q in &queued {
                match q {
                    Queued::Flush(f) => (flushes, through) = (flushes + 1, f.flush_no + 1),
                    Queued::Plan(_) => plans += 1,
                }
            }
            let outcome = self.committer.commit_queued(&queued);
            if outcome.is_ok() {
                Counters::add(&self.counters.flushes, flushes);
            }
            // After the batches are in the index, so that a reader finds each key in
            // the cache or in the index; after a failure, so that reads do not return
            // what a restart would not.
            // Only when flushes committed: a commit of GC plans alone releases no map,
            // and must not count as the end of the pipeline's work on one.
            if flushes > 0 {
                let released = self.cache.write().release_committed(flushes);
                let limit = self.options.write_cache_bytes;
                let pacer = &self.gc.pacer;
                pacer.note_release(released.bytes, limit, released.service);
                // Freed outside the cache's lock: a map holds its chunks, and readers
                // and writers wait for that lock.
                drop(released.maps);
            }
            for q in queued {
                if let Queued::Plan(plan) = q {
                    // A GC that waits for it holds the receiver; one that failed since
                    // has dropped it, and nothing is lost by not telling it.
                    let _ = plan
                        .outcome
                        .send(outcome.clone().map(|(_, generation)| generation));
                }
            }
            pipeline.settle(flushes, through, plans, outcome.map(|(synced, _)| synced));
        }
    }

    /// The value a cached entry puts into the value store: a put's value at least
    /// `separation_threshold_bytes` long (selective KV separation); smaller values
    /// and deletes live in the index only.
    fn separated<'v>(&self, value: Option<&'v [u8]>) -> Option<&'v [u8]> {
        let threshold = self.options.separation_threshold_bytes as usize;
        value.filter(|v| v.len() >= threshold)
    }
}

/// A write cache map placed, its writes started.
struct PlacedMap {
    /// The index batch its commit writes (None for an empty map).
    batch: Option<hashkv_lsm::WriteBatch>,
    /// Its writes in flight (None if it writes nothing to the device).
    writes: Option<Arc<WritesInFlight>>,
    device_bytes: u64,
}

/// A flush's index batch: each cached key's inline value, pointer or delete, the value
/// store's changed entries, and the last sequence number the flush used.
fn index_batch(
    map: &CacheMap,
    pointers: &[Option<location::Pointer>],
    entries: &[(Vec<u8>, Vec<u8>)],
    last_seq: u64,
) -> hashkv_lsm::WriteBatch {
    let mut batch = hashkv_lsm::WriteBatch::with_capacity(batch_bytes_max(map, pointers, entries));
    // Reused for every entry: no allocation per record.
    let (mut key_buf, mut inline_buf) = (Vec::new(), Vec::new());
    for ((k, v), pointer) in map.iter().zip(pointers) {
        let user_key = keys::user_key_into(&mut key_buf, k.key);
        match (v, pointer) {
            (None, _) => batch.delete(user_key),
            (Some(small), None) => batch.put(
                user_key,
                location::encode_inline_into(&mut inline_buf, small),
            ),
            (Some(_), Some(ptr)) => batch.put(user_key, &ptr.encode()),
        }
    }
    for (k, v) in entries {
        batch.put(k, v);
    }
    batch.put(&keys::seq_key(), &last_seq.to_le_bytes());
    batch
}

/// The most bytes a flush's index batch takes: each cached entry's user key with its
/// inline value or pointer, the value store's entries and the sequence key. Sized in
/// advance, the batch (megabytes in the lsm mode, where values are inline) is one
/// allocation instead of a doubling chain of them.
fn batch_bytes_max(
    map: &CacheMap,
    pointers: &[Option<location::Pointer>],
    entries: &[(Vec<u8>, Vec<u8>)],
) -> usize {
    use hashkv_lsm::WriteBatch;
    let cached: usize = map
        .iter()
        .zip(pointers)
        .map(|((k, v), pointer)| {
            // The user key's prefix byte; an inline value's tag, or a pointer.
            let value_len = match (v, pointer) {
                (None, _) => 0,
                (Some(small), None) => small.len() + 1,
                (Some(_), Some(_)) => location::POINTER_BYTES,
            };
            WriteBatch::entry_bytes_max(k.key.len() + 1, value_len)
        })
        .sum();
    let store: usize = entries
        .iter()
        .map(|(k, v)| WriteBatch::entry_bytes_max(k.len(), v.len()))
        .sum();
    cached + store + WriteBatch::entry_bytes_max(keys::seq_key().len(), size_of::<u64>())
}

/// The group a flush was refused for, its chain being at its limit.
#[derive(Debug, Clone, Copy)]
struct AtLimit {
    group: u32,
    /// Refusals in a row that named it.
    tries: u32,
    /// Its GCs finished since open (`ValueStore::gc_generation`) at the last refusal.
    generation: u64,
}

/// Whether a flush refused for space counts as out of space after `attempt` refusals
/// in a row (`at_limit`: the group whose chain was at its limit at the last one, and
/// how many refusals in a row named it), the last GC having `collected` something.
///
/// Only collecting the group itself shortens its chain. Once this thread collected it
/// and the flush still found it at its limit, time after time, the flush's records for
/// the group do not fit under its chain limit (the chain need not be at the limit yet:
/// the flush may need more segments than remain below it). Refusals naming other
/// groups in between are progress: a flush meets the groups that filled up together
/// one by one, and a group the background GC had just collected frees nothing when
/// collected again, though the flush fits now (counting those made a store with a
/// fifth of its segments free report itself full, about one test run in twelve). The
/// count of all attempts bounds the whole, and decides alone when no group was named.
fn out_of_space(
    at_limit: Option<(u32, u32)>,
    collected: bool,
    attempt: u32,
    attempts_max: u32,
) -> bool {
    let group_full =
        matches!(at_limit, Some((_, tries)) if tries >= GROUP_AT_LIMIT_TRIES && collected);
    group_full || attempt > attempts_max
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_hash::HashedKey;
    use crate::write_cache::ValueIn;

    #[test]
    fn the_index_batch_fits_the_room_sized_for_it_without_much_to_spare() {
        let mut map = CacheMap::default();
        let (inline, separated) = (vec![1u8; 1000], vec![2u8; 4096]);
        map.insert(HashedKey::new(b"inline"), Some(ValueIn::Borrowed(&inline)));
        map.insert(
            HashedKey::new(b"separated"),
            Some(ValueIn::Owned(separated)),
        );
        map.insert(HashedKey::new(b"deleted"), None);
        let pointer = location::Pointer {
            region: location::Region::Segments,
            unit: 3,
            offset: 512,
            record_bytes: 4200,
            seq: 9,
            crc: 0xabcd_ef01,
        };
        let pointers: Vec<_> = map
            .iter()
            .map(|(k, _)| (k.key == b"separated").then_some(pointer))
            .collect();
        let entries = vec![(b"store-entry".to_vec(), vec![3u8; 40])];
        let room = batch_bytes_max(&map, &pointers, &entries);
        let batch = index_batch(&map, &pointers, &entries, 41);
        assert_eq!(
            batch.len(),
            5,
            "three cached keys, a store entry, the sequence"
        );
        let used = batch.payload_bytes();
        // Never past the room (else the batch would grow by doubling); and the
        // separated value counted as its pointer, not its 4 KiB.
        assert!(used <= room, "{used} > {room}");
        assert!(room - used <= 5 * 2 * 10, "{room} for {used}");
    }

    #[test]
    fn only_refusals_naming_the_same_group_in_a_row_count_towards_full() {
        let max = 100;
        // Four refusals, each naming another group: each GC was progress.
        for (attempt, g) in (1..=4).zip([7, 9, 7, 12]) {
            assert!(!out_of_space(Some((g, 1)), true, attempt, max), "{attempt}");
        }
        // The same group four times in a row, collected each time: full.
        assert!(!out_of_space(Some((7, 3)), true, 3, max));
        assert!(out_of_space(Some((7, GROUP_AT_LIMIT_TRIES)), true, 4, max));
        // ...unless its GC could not start (the background GC held it).
        assert!(!out_of_space(
            Some((7, GROUP_AT_LIMIT_TRIES)),
            false,
            4,
            max
        ));
        // The count of all attempts bounds every case.
        assert!(out_of_space(Some((7, 1)), true, max + 1, max));
        assert!(out_of_space(Some((7, 9)), false, max + 1, max));
        assert!(!out_of_space(None, true, max, max));
        assert!(out_of_space(None, true, max + 1, max));
    }
}
