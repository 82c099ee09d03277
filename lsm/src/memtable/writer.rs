//! The memtable's one writer: collects a write batch into a run, and when dropped
//! publishes it, merging the newest runs while they are of similar size.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::MutexGuard;

use super::run::{Run, RunBuilder, SearchKey};
use super::Memtable;
use crate::ikey::{self, Kind};

/// The last two runs are merged while the older holds at most this many times the bytes
/// of the newer: with batches of similar size the runs then behave like a binary
/// counter, O(log n) runs and O(log n) copies of each entry.
const MERGE_SIZE_RATIO: usize = 2;
/// Runs are not merged into one above this size. A merge runs on the writer's path
/// (under the tree's writer lock), so this bounds the pause it adds to a write (16 MiB
/// is copied in a few ms), at the cost of more runs for a get to search: the default
/// 64 MiB memtable ends with about 4 such runs and as many smaller ones.
const RUN_BYTES_MERGE_MAX: usize = 16 << 20;

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
            merge_similar(&mut runs);
        } else {
            // Sequences at or below earlier ones (recovery replaying a WAL that repeats
            // records, before it finds the damage): one run for all, since a get takes
            // the newest run holding a version as the one with the newest.
            let all = runs
                .iter()
                .fold(Run::default(), |acc, r| Run::merge(&acc, r));
            runs = vec![Arc::new(Run::merge(&all, &run))];
        }
        let bytes = runs.iter().map(|r| r.bytes()).sum();
        *mem.runs.write() = Arc::new(runs);
        mem.bytes.store(bytes, Ordering::Relaxed);
        mem.seq_max
            .store(prior.max(self.seq_max), Ordering::Relaxed);
    }
}

/// Merges the last two runs while they are of similar size.
fn merge_similar(runs: &mut Vec<Arc<Run>>) {
    while let [.., older, newer] = &runs[..] {
        let (a, b) = (older.bytes(), newer.bytes());
        if a > MERGE_SIZE_RATIO * b || a + b > RUN_BYTES_MERGE_MAX {
            break;
        }
        let merged = Run::merge(older, newer);
        runs.truncate(runs.len() - 2);
        runs.push(Arc::new(merged));
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
