//! When runs are merged: after each batch, the writer merges the newest two runs while
//! the older is at most `MERGE_SIZE_RATIO` times the newer, up to a run of
//! `RUN_BYTES_MERGE_MAX`.

use std::sync::Arc;

use super::run::Run;

/// With batches of similar size the runs then behave like a binary counter: O(log n)
/// runs, and O(log n) copies of each entry.
const MERGE_SIZE_RATIO: usize = 2;
/// Runs are not merged into one above this size. A merge runs on the writer's path
/// (under the tree's writer lock), so this bounds the pause it adds to a write: the
/// slowest batch of a 64 MiB fill took 9-10 ms of CPU here (lsm/DESIGN.md), at the cost
/// of more runs for a get to search (14 in such a memtable, most ruled out by their
/// filters).
pub(super) const RUN_BYTES_MERGE_MAX: usize = 8 << 20;

/// Merges the newest runs while they are of similar size.
pub(super) fn merge_similar(runs: &mut Vec<Arc<Run>>) {
    while let [.., older, newer] = &runs[..] {
        let (a, b) = (older.bytes(), newer.bytes());
        if a > MERGE_SIZE_RATIO * b || a + b > RUN_BYTES_MERGE_MAX {
            return;
        }
        let merged = Arc::new(Run::merge(older, newer));
        runs.truncate(runs.len() - 2);
        runs.push(merged);
    }
}

/// All runs merged into one.
pub(super) fn merge_all(runs: &[Arc<Run>]) -> Run {
    runs.iter()
        .fold(Run::default(), |acc, r| Run::merge(&acc, r))
}
