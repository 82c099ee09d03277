//! The memtable: sorted runs, one per write batch, merged lazily; in safe Rust.
//!
//! - A write batch's entries are sorted into a run (`run`): one buffer of entries
//!   encoded back to back and one of their start offsets, so inserting a batch costs a
//!   sort of the batch and no per-entry allocation.
//! - The newest runs are merged while they are of similar size (`merge`), by the writer
//!   after its batch: O(log n) runs remain, each entry is copied O(log n) times, and
//!   every copy and comparison streams through memory in order. Runs stop growing at
//!   `merge::RUN_BYTES_MERGE_MAX`, which bounds the pause a merge adds to a write.
//! - Runs are immutable and shared (`Arc`). The writer publishes a new list of runs
//!   under a short lock; readers take the current list and search it without a lock:
//!   a get binary-searches the runs newest first, an iterator merges them (`cursor`).
//! - A key comparison compares the user keys' 8-byte big-endian prefixes as integers
//!   first, then the rest with memcmp, then the trailers. A run also keeps the 8 bytes
//!   after its keys' shared part in a dense array for binary searches, and a blocked
//!   Bloom filter (the tables' kind, `table::filter`) that lets a get skip it.
//!
//! Chosen over skiplists (the crossbeam SkipMap it replaces, and an arena skiplist with
//! inline keys and finger search) by benches/memtable.rs; lsm/DESIGN.md has the numbers.

mod cursor;
mod merge;
mod run;
#[cfg(test)]
mod tests;
mod writer;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::ikey::{self, Kind};
pub(crate) use cursor::MemIter;
use run::{Run, SearchKey};
pub(crate) use writer::MemWriter;

/// The runs of a memtable, oldest first.
type Runs = Arc<Vec<Arc<Run>>>;

pub(crate) struct Memtable {
    /// Replaced whole by the writer; readers keep the list they took.
    runs: RwLock<Runs>,
    /// Held by the one writer (see `writer`).
    writer: Mutex<()>,
    /// Heap bytes of the current runs, set with each new list.
    bytes: AtomicUsize,
    /// Largest sequence inserted: what a flush of this memtable makes durable.
    seq_max: AtomicU64,
    /// The WAL file holding this memtable's records.
    pub wal_number: u64,
}

impl Memtable {
    pub fn new(wal_number: u64) -> Memtable {
        Memtable {
            runs: RwLock::new(Arc::new(Vec::new())),
            writer: Mutex::new(()),
            bytes: AtomicUsize::new(0),
            seq_max: AtomicU64::new(0),
            wal_number,
        }
    }

    /// Publishes `runs` as the list of runs (only the writer calls this).
    fn set_runs(&self, runs: Vec<Arc<Run>>) {
        let bytes = runs.iter().map(|r| r.bytes()).sum();
        *self.runs.write() = Arc::new(runs);
        self.bytes.store(bytes, Ordering::Relaxed);
    }

    /// The writer for one write batch: its inserts become visible together when it is
    /// dropped. Writers take turns (the tree serialises them anyway).
    pub fn writer(&self) -> MemWriter<'_> {
        MemWriter::new(self, self.writer.lock())
    }

    /// Heap bytes held by the runs: entries, their headers, offsets and prefixes, and
    /// the unused capacity of the buffers. Not counted: runs merged away but still held
    /// by a reader, freed when it is done.
    pub fn approx_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn seq_max(&self) -> u64 {
        self.seq_max.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.runs.read().is_empty()
    }

    fn runs(&self) -> Runs {
        self.runs.read().clone()
    }

    /// The newest version of `user_key` with sequence <= seq: Some((kind, value)).
    /// Runs hold consecutive ranges of sequences, newer runs later, so the first run
    /// (newest first) with a visible version of the key has the newest one.
    pub fn get(&self, user_key: &[u8], seq: u64) -> Option<(Kind, Vec<u8>)> {
        let seek = SearchKey::new(user_key, ikey::seek_trailer(seq));
        let hash = crate::table::filter::hash(user_key);
        self.runs().iter().rev().find_map(|run| {
            if !run.filter.may_contain(hash) {
                return None;
            }
            let e = run.get(run.rank(&seek, false))?;
            (e.user_key == user_key).then(|| (e.kind(), e.value.to_vec()))
        })
    }

    /// All entries in order (for a flush): internal key, value.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) {
        let runs = self.runs();
        let mut walk = cursor::Merge::new(&runs, true, None);
        let mut key = Vec::new();
        while let Some(e) = walk.next_entry(&runs) {
            key.clear();
            e.internal_key_into(&mut key);
            f(&key, e.value);
        }
    }
}
