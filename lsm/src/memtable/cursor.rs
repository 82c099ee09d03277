//! Ordered iteration: the runs' entries merged, in either direction, from any start.

use super::run::{Entry, Run, SearchKey};
use super::{Memtable, Runs};

/// Positions in each run of a list. Forward, a run's next entry is at its position;
/// backward, just before it.
pub(super) struct Merge {
    forward: bool,
    positions: Vec<usize>,
}

impl Merge {
    /// Starts at the first entry >= `start` (forward) or the last entry <= `start`
    /// (backward), an internal key; without one, at the first or last entry.
    pub fn new(runs: &[std::sync::Arc<Run>], forward: bool, start: Option<&[u8]>) -> Merge {
        let positions = runs
            .iter()
            .map(|run| match start {
                None if forward => 0,
                None => run.len(),
                Some(k) => run.rank(&SearchKey::internal(k), !forward),
            })
            .collect();
        Merge { forward, positions }
    }

    /// The next entry in the merge's direction. `runs` is the list it was made for.
    pub fn next_entry<'r>(&mut self, runs: &'r [std::sync::Arc<Run>]) -> Option<Entry<'r>> {
        let mut best: Option<(usize, Entry<'r>)> = None;
        for (r, run) in runs.iter().enumerate() {
            let at = self.positions[r];
            let e = if self.forward {
                run.get(at)
            } else {
                at.checked_sub(1).and_then(|i| run.get(i))
            };
            let Some(e) = e else { continue };
            let better = best.as_ref().is_none_or(|(_, b)| {
                let order = e.cmp_entry(b);
                if self.forward {
                    order.is_lt()
                } else {
                    order.is_gt()
                }
            });
            if better {
                best = Some((r, e));
            }
        }
        let (r, e) = best?;
        if self.forward {
            self.positions[r] += 1;
        } else {
            self.positions[r] -= 1;
        }
        Some(e)
    }
}

/// A range iterator's cursor over a memtable: it keeps the list of runs it started with
/// (entries published later carry sequences above the read's, so it would skip them).
pub(crate) struct MemIter {
    runs: Runs,
    merge: Merge,
}

impl MemIter {
    pub fn new(mem: std::sync::Arc<Memtable>, forward: bool, start: Option<Vec<u8>>) -> MemIter {
        let runs = mem.runs();
        let merge = Merge::new(&runs, forward, start.as_deref());
        MemIter { runs, merge }
    }

    /// The next entry in the cursor's direction: (internal key, value).
    pub fn step(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        Some(self.merge.next_entry(&self.runs)?.to_owned_pair())
    }
}
