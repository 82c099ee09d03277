//! Snapshots pin a sequence number: reads through them see the tree as of that number,
//! and compactions keep every version a live snapshot can see.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

#[derive(Default)]
pub(crate) struct SnapshotList {
    /// Sequence -> number of live handles.
    live: Mutex<BTreeMap<u64, usize>>,
}

impl SnapshotList {
    pub fn oldest(&self) -> Option<u64> {
        self.live.lock().keys().next().copied()
    }

    fn acquire(&self, seq: u64) {
        *self.live.lock().entry(seq).or_insert(0) += 1;
    }

    fn release(&self, seq: u64) {
        let mut live = self.live.lock();
        let n = live.get_mut(&seq).expect("released snapshot is live");
        *n -= 1;
        if *n == 0 {
            live.remove(&seq);
        }
    }
}

/// A consistent view of the tree; released when the last clone is dropped.
pub struct Snapshot {
    pub(crate) seq: u64,
    list: Arc<SnapshotList>,
}

impl Snapshot {
    pub(crate) fn new(seq: u64, list: Arc<SnapshotList>) -> Snapshot {
        list.acquire(seq);
        Snapshot { seq, list }
    }

    /// The sequence number the snapshot reads at.
    pub fn sequence(&self) -> u64 {
        self.seq
    }
}

impl Clone for Snapshot {
    fn clone(&self) -> Self {
        Snapshot::new(self.seq, self.list.clone())
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        self.list.release(self.seq);
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("seq", &self.seq).finish()
    }
}
