//! The memtable: a skiplist of internal keys built for this tree's load, in safe Rust.
//!
//! - Nodes live in an arena (`arena`): bump-allocated chunks, freed whole with the
//!   memtable, so an insert makes no heap allocation of its own (the crossbeam SkipMap
//!   this replaces made three: node, key, value).
//! - Key and value are stored inline in the node (`node`), the user key as big-endian
//!   words: comparing keys compares integers, the 8-byte prefix first, not a memcmp call.
//! - One writer at a time (`MemWriter`, behind a mutex the tree's write path holds once
//!   per batch; the tree serialises writers anyway), any number of readers without a
//!   lock: a node is complete before a Release store links it in.
//! - Entries are never removed; a frozen memtable is dropped whole once its table is
//!   installed. So an iterator (`cursor`) may hold a node's address and step from it.
//!
//! Measured against the crossbeam SkipMap with benches/memtable.rs; lsm/DESIGN.md has
//! the numbers.

mod arena;
mod cursor;
mod node;
#[cfg(test)]
mod tests;
mod writer;

use std::cmp::Ordering;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};

use parking_lot::Mutex;

use crate::ikey::{self, Kind};
use arena::{Addr, Arena, Bump, WORD_BYTES};
pub(crate) use cursor::MemIter;
use node::{Node, SearchKey, HEIGHT_MAX};
pub(crate) use writer::{MemEntry, MemWriter};

pub(crate) struct Memtable {
    arena: Arena,
    /// The head node: links only, never compared.
    head: Addr,
    /// Levels in use (the tallest node's height); readers start their search there.
    height: AtomicUsize,
    writer: Mutex<WriterState>,
    /// Bytes of the arena's chunks, published by the writer.
    arena_bytes: AtomicUsize,
    /// Largest sequence inserted: what a flush of this memtable makes durable.
    seq_max: AtomicU64,
    /// The WAL file holding this memtable's records.
    pub wal_number: u64,
}

/// What the writer keeps between inserts (see `writer`).
struct WriterState {
    bump: Bump,
    /// xorshift64 state for node heights.
    rng: u64,
}

impl Memtable {
    pub fn new(wal_number: u64) -> Memtable {
        let arena = Arena::new();
        let mut bump = Bump::new();
        let (head, words) = arena.alloc(&mut bump, node::words_for(HEIGHT_MAX, 0, 0));
        node::init(
            words,
            HEIGHT_MAX,
            SearchKey {
                user: &[],
                trailer: 0,
            },
            &[],
        );
        let arena_bytes = bump.total_words * WORD_BYTES;
        Memtable {
            arena,
            head,
            height: AtomicUsize::new(1),
            writer: Mutex::new(WriterState {
                bump,
                rng: 0x9e37_79b9_7f4a_7c15,
            }),
            arena_bytes: AtomicUsize::new(arena_bytes),
            seq_max: AtomicU64::new(0),
            wal_number,
        }
    }

    /// Takes the write lock for a run of inserts.
    pub fn writer(&self) -> MemWriter<'_> {
        MemWriter::new(self, self.writer.lock())
    }

    /// Inserts one entry (taking the write lock for it alone).
    pub fn insert(&self, user_key: &[u8], seq: u64, kind: Kind, value: &[u8]) {
        self.writer().insert(user_key, seq, kind, value);
    }

    /// Memory held: every arena chunk, used or not (entries, links, padding, and the
    /// zeroed rest of the newest chunk). The fixed directory and head are not counted
    /// (about 6 KiB, the same for every memtable).
    pub fn approx_bytes(&self) -> usize {
        self.arena_bytes.load(AtomicOrdering::Relaxed)
    }

    pub fn seq_max(&self) -> u64 {
        self.seq_max.load(AtomicOrdering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.node(self.head).next(0).is_none()
    }

    fn node(&self, at: Addr) -> Node<'_> {
        Node::at(&self.arena, at)
    }

    /// The newest version of `user_key` with sequence <= seq: Some((kind, value)).
    pub fn get(&self, user_key: &[u8], seq: u64) -> Option<(Kind, Vec<u8>)> {
        let seek = SearchKey {
            user: user_key,
            trailer: ikey::seek_trailer(seq),
        };
        let (_, at) = self.find(&seek, false, None);
        let node = self.node(at?);
        if !node.user_key_is(user_key) {
            return None;
        }
        let mut value = Vec::new();
        node.value_into(&mut value);
        Some((kind_of(node.trailer()), value))
    }

    /// All entries in order (for a flush): internal key, value.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) {
        let (mut key, mut value) = (Vec::new(), Vec::new());
        let mut at = self.node(self.head).next(0);
        while let Some(a) = at {
            let node = self.node(a);
            key.clear();
            value.clear();
            node.internal_key_into(&mut key);
            node.value_into(&mut value);
            f(&key, &value);
            at = node.next(0);
        }
    }

    /// Searches from the top level down. Returns the last node before `key` at level 0
    /// (the head if none) and the node after it: the first node >= key, or with
    /// `past_equal` the first node > key. Fills `preds` with the last node before `key`
    /// at each level, for an insert.
    fn find(
        &self,
        key: &SearchKey,
        past_equal: bool,
        mut preds: Option<&mut [Addr; HEIGHT_MAX]>,
    ) -> (Addr, Option<Addr>) {
        let mut pred = self.head;
        let mut next = None;
        for level in (0..self.height.load(AtomicOrdering::Acquire)).rev() {
            let pred_node = self.node(pred);
            next = pred_node.next(level);
            while let Some(n) = next {
                let node = self.node(n);
                match node.cmp_key(key) {
                    Ordering::Less => {}
                    Ordering::Equal if past_equal => {}
                    _ => break,
                }
                pred = n;
                next = node.next(level);
            }
            if let Some(p) = preds.as_deref_mut() {
                p[level] = pred;
            }
        }
        (pred, next)
    }
}

/// The kind in a trailer (unknown kinds cannot be inserted: they come from `Kind`).
fn kind_of(trailer: u64) -> Kind {
    Kind::from_u8(trailer as u8).unwrap_or(Kind::Delete)
}
