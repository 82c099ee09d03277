//! The memtable: a lock-free skiplist (crossbeam-skiplist, built on crossbeam-epoch)
//! of internal keys. Writers insert under the tree's write lock (which orders sequence
//! numbers anyway); readers and iterators never take a lock. Entries are never removed:
//! a frozen memtable is dropped whole once its table is installed.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};

use crossbeam_skiplist::SkipMap;

use crate::ikey;

/// Per-entry bytes beyond key and value: skiplist node (tower, pointers, refcount) and
/// two Vec headers. Measured roughly; it keeps the memtable bound honest for small
/// entries, where the overhead dominates.
const ENTRY_OVERHEAD_BYTES: usize = 96;

/// An internal key ordered by `ikey::compare`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MemKey(pub Vec<u8>);

impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> Ordering {
        ikey::compare(&self.0, &other.0)
    }
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

pub(crate) struct Memtable {
    map: SkipMap<MemKey, Vec<u8>>,
    approx_bytes: AtomicUsize,
    /// Largest sequence inserted: what a flush of this memtable makes durable.
    seq_max: AtomicU64,
    /// The WAL file holding this memtable's records.
    pub wal_number: u64,
}

impl Memtable {
    pub fn new(wal_number: u64) -> Memtable {
        Memtable {
            map: SkipMap::new(),
            approx_bytes: AtomicUsize::new(0),
            seq_max: AtomicU64::new(0),
            wal_number,
        }
    }

    pub fn insert(&self, ikey: Vec<u8>, value: &[u8]) {
        let n = ikey.len() + value.len() + ENTRY_OVERHEAD_BYTES;
        self.seq_max
            .fetch_max(ikey::seq(&ikey), AtomicOrdering::Relaxed);
        self.map.insert(MemKey(ikey), value.to_vec());
        self.approx_bytes.fetch_add(n, AtomicOrdering::Relaxed);
    }

    pub fn approx_bytes(&self) -> usize {
        self.approx_bytes.load(AtomicOrdering::Relaxed)
    }

    pub fn seq_max(&self) -> u64 {
        self.seq_max.load(AtomicOrdering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The newest version of `user_key` with sequence <= seq: Some((kind, value)).
    pub fn get(&self, user_key: &[u8], seq: u64) -> Option<(ikey::Kind, Vec<u8>)> {
        let seek = MemKey(ikey::seek_key(user_key, seq));
        let e = self.map.lower_bound(Bound::Included(&seek))?;
        let k = &e.key().0;
        (ikey::user_key(k) == user_key).then(|| (ikey::kind(k), e.value().clone()))
    }

    /// The first entry after (forward) or before (backward) `from`, for iterators that
    /// own an `Arc<Memtable>` and re-seek at each step instead of borrowing the map.
    pub fn step(&self, from: Bound<&[u8]>, forward: bool) -> Option<(Vec<u8>, Vec<u8>)> {
        let from = match from {
            Bound::Included(k) => Bound::Included(MemKey(k.to_vec())),
            Bound::Excluded(k) => Bound::Excluded(MemKey(k.to_vec())),
            Bound::Unbounded => Bound::Unbounded,
        };
        let e = if forward {
            self.map.lower_bound(from.as_ref())
        } else {
            self.map.upper_bound(from.as_ref())
        }?;
        Some((e.key().0.clone(), e.value().clone()))
    }

    /// All entries in order (for a flush).
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) {
        for e in self.map.iter() {
            f(&e.key().0, e.value());
        }
    }
}
