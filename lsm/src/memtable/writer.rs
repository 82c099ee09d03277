//! The memtable's one writer: a node is filled in the arena, then linked bottom up, each
//! link a Release store, so a reader that reaches it sees it whole.
//!
//! A write batch is inserted in key order, each search starting from where the previous
//! entry went (a finger search): in a memtable of N entries, consecutive entries of a
//! sorted batch of B are about N/B nodes apart, so a search climbs only log4(N/B)
//! levels instead of descending all log4(N), and most of the nodes it visits were just
//! visited. benches/memtable.rs measures the difference (lsm/DESIGN.md has the numbers).

use std::sync::atomic::Ordering as AtomicOrdering;

use parking_lot::MutexGuard;

use super::arena::{Addr, WORD_BYTES};
use super::node::{self, SearchKey, HEIGHT_MAX};
use super::{Memtable, WriterState};
use crate::ikey::{self, Kind};

/// Each node gets one more level with probability 1/4 (a mean of 1.33 links per node;
/// searches visit about 4 nodes per level, as many as with 1/2 but in fewer levels).
const LEVEL_UP_BITS: u32 = 2;

/// One entry of a write batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MemEntry<'a> {
    pub user_key: &'a [u8],
    pub seq: u64,
    pub kind: Kind,
    pub value: &'a [u8],
}

/// Holds the write lock for as many inserts as the caller makes.
pub(crate) struct MemWriter<'a> {
    mem: &'a Memtable,
    state: MutexGuard<'a, WriterState>,
}

/// The last node before a key at each level, where the new node is linked in.
type Preds = [Addr; HEIGHT_MAX];

impl<'a> MemWriter<'a> {
    pub(super) fn new(mem: &'a Memtable, state: MutexGuard<'a, WriterState>) -> Self {
        MemWriter { mem, state }
    }

    /// Inserts version `seq` of `user_key`. Sequences are unique in a tree; an entry
    /// equal to one present goes before it, so reads find the later insert.
    pub fn insert(&mut self, user_key: &[u8], seq: u64, kind: Kind, value: &[u8]) {
        let key = SearchKey {
            user: user_key,
            trailer: ikey::pack_trailer(seq, kind),
        };
        let mut preds = [self.mem.head; HEIGHT_MAX];
        self.mem.find(&key, false, Some(&mut preds));
        self.link(key, seq, value, &mut preds);
    }

    /// Inserts a write batch, sorted first (the order of `entries` changes).
    pub fn insert_batch(&mut self, entries: &mut [MemEntry]) {
        entries
            .sort_unstable_by(|a, b| (a.user_key.cmp(b.user_key)).then_with(|| b.seq.cmp(&a.seq)));
        let mut preds = [self.mem.head; HEIGHT_MAX];
        for (i, e) in entries.iter().enumerate() {
            let key = SearchKey {
                user: e.user_key,
                trailer: ikey::pack_trailer(e.seq, e.kind),
            };
            if i == 0 {
                self.mem.find(&key, false, Some(&mut preds));
            } else {
                self.find_from(&key, &mut preds);
            }
            self.link(key, e.seq, e.value, &mut preds);
        }
    }

    /// Updates `preds`, which hold at each level the last node at or before the entry
    /// inserted last, to the last node before `key`, which follows that entry. Where no
    /// node lies between that entry and `key` on a level, its pred stands, and then on
    /// every level above as well (a level's nodes are a subset of the level below). So
    /// only the levels below the first such level are searched, top down, each from the
    /// further right of: the pred found on the level above (if it moved, it lies past
    /// the old preds), or this level's old pred.
    fn find_from(&self, key: &SearchKey, preds: &mut Preds) {
        let mem = self.mem;
        let before_key = |at: Option<Addr>| at.is_some_and(|n| mem.node(n).cmp_key(key).is_lt());
        let top = mem.height.load(AtomicOrdering::Relaxed);
        let mut stale = 0;
        while stale < top && before_key(mem.node(preds[stale]).next_for_writer(stale)) {
            stale += 1;
        }
        let mut moved = None;
        for level in (0..stale).rev() {
            let mut pred = moved.unwrap_or(preds[level]);
            while let Some(next) = mem.node(pred).next_for_writer(level) {
                if !mem.node(next).cmp_key(key).is_lt() {
                    break;
                }
                pred = next;
                moved = Some(next);
            }
            preds[level] = pred;
        }
    }

    /// Makes a node for `key` and links it after `preds`; then `preds` hold the node on
    /// its levels, so that they hold the last node at or before `key` on every level.
    fn link(&mut self, key: SearchKey, seq: u64, value: &[u8], preds: &mut Preds) {
        let mem = self.mem;
        let height = self.random_height();
        let words = node::words_for(height, key.user.len(), value.len());
        let (at, words) = mem.arena.alloc(&mut self.state.bump, words);
        node::init(words, height, key, value);
        let node = mem.node(at);
        for (level, &p) in preds.iter().enumerate().take(height) {
            node.link(level, mem.node(p).next_for_writer(level));
        }
        // Bottom up: a reader that finds the node at a level finds it below as well.
        for (level, p) in preds.iter_mut().enumerate().take(height) {
            mem.node(*p).link(level, Some(at));
            *p = at;
        }
        // Plain stores, not read-modify-writes: this writer is the only one.
        if height > mem.height.load(AtomicOrdering::Relaxed) {
            mem.height.store(height, AtomicOrdering::Release);
        }
        if seq > mem.seq_max.load(AtomicOrdering::Relaxed) {
            mem.seq_max.store(seq, AtomicOrdering::Relaxed);
        }
        let bytes = self.state.bump.total_words * WORD_BYTES;
        mem.arena_bytes.store(bytes, AtomicOrdering::Relaxed);
    }

    /// 1 + the number of level-ups, each with probability 1/4, at most HEIGHT_MAX.
    fn random_height(&mut self) -> usize {
        let mut x = self.state.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state.rng = x;
        let ups = x.trailing_zeros() / LEVEL_UP_BITS;
        (1 + ups as usize).min(HEIGHT_MAX)
    }
}
