//! The memtable's one writer: collects a write batch into a run, and when dropped
//! publishes it, merged with the newest runs while they are of similar size.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::MutexGuard;

use super::run::{Run, RunBuilder, SearchKey};
use super::{merge, Memtable};
use crate::ikey::{self, Kind};

pub(crate) struct MemWriter<'a> {
    mem: &'a Memtable,
    _turn: MutexGuard<'a, ()>,
    batch: RunBuilder,
    /// Smallest sequence in the batch.
    seq_min: u64,
    seq_max: u64,
}

impl<'a> MemWriter<'a> {
    pub(super) fn new(mem: &'a Memtable, turn: MutexGuard<'a, ()>) -> Self {
        MemWriter {
            mem,
            _turn: turn,
            batch: RunBuilder::default(),
            seq_min: u64::MAX,
            seq_max: 0,
        }
    }

    /// Adds version `seq` of `user_key` to the batch. A batch's sequences are expected
    /// above those of earlier batches (the tree assigns them so); see `publish`.
    pub fn insert(&mut self, user_key: &[u8], seq: u64, kind: Kind, value: &[u8]) {
        let key = SearchKey::new(user_key, ikey::pack_trailer(seq, kind));
        self.batch.push(&key, value);
        self.seq_min = self.seq_min.min(seq);
        self.seq_max = self.seq_max.max(seq);
    }

    fn publish(&mut self) {
        let mem = self.mem;
        let prior = mem.seq_max.load(Ordering::Relaxed);
        let run = Arc::new(std::mem::take(&mut self.batch).finish());
        let mut runs: Vec<Arc<Run>> = mem.runs().iter().cloned().collect();
        if self.seq_min > prior || runs.is_empty() {
            runs.push(run);
            merge::merge_similar(&mut runs);
        } else {
            // Sequences at or below earlier ones (recovery replaying a WAL that repeats
            // records, before it finds the damage): one run for all, since a get takes
            // the newest run holding a version as the one with the newest.
            runs.push(run);
            runs = vec![Arc::new(merge::merge_all(&runs))];
        }
        mem.set_runs(runs);
        mem.seq_max
            .store(prior.max(self.seq_max), Ordering::Relaxed);
    }
}

impl Drop for MemWriter<'_> {
    fn drop(&mut self) {
        // A writer dropped by a panic publishes nothing: its batch may be partial.
        if !self.batch.is_empty() && !std::thread::panicking() {
            self.publish();
        }
    }
}
