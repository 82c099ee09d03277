//! Range iteration: one cursor per source (memtables, each L0 table, each deeper
//! level), merged by internal key in the requested direction, then reduced to the
//! newest version of each user key visible at the read's sequence, tombstones hidden.
//! Everything is pulled lazily: a range is never materialised.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Bound;
use std::sync::Arc;

use crate::error::{LsmError, Result};
use crate::ikey::{self, Kind};
use crate::memtable::{MemIter, Memtable};
use crate::snapshot::Snapshot;
use crate::table::iter::TableIter;
use crate::table::reader::ReadFor;
use crate::version::{FileMeta, Version};

/// Direction of a range scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// A source of internal entries in one direction.
pub(crate) trait InternalIter: Send {
    fn next_entry(&mut self) -> Option<Result<(Vec<u8>, Vec<u8>)>>;
}

type Entry = (Vec<u8>, Vec<u8>);

impl InternalIter for MemIter {
    fn next_entry(&mut self) -> Option<Result<Entry>> {
        self.step().map(Ok)
    }
}

/// Concatenates the tables of one sorted level (L1 and deeper).
pub(crate) struct LevelIter {
    files: Vec<Arc<FileMeta>>,
    forward: bool,
    start: Option<Vec<u8>>,
    next_file: Option<usize>,
    cur: Option<TableIter>,
    read_for: ReadFor,
}

impl LevelIter {
    pub fn new(
        files: Vec<Arc<FileMeta>>,
        forward: bool,
        start: Option<Vec<u8>>,
        read_for: ReadFor,
    ) -> Self {
        let n = files.len();
        let first = match (&start, forward) {
            (None, true) => Some(0),
            (None, false) => n.checked_sub(1),
            (Some(s), true) => {
                Some(files.partition_point(|f| ikey::compare(&f.largest, s) == Ordering::Less))
            }
            (Some(s), false) => files
                .partition_point(|f| ikey::compare(&f.smallest, s) != Ordering::Greater)
                .checked_sub(1),
        };
        let next_file = first.filter(|&i| i < n);
        LevelIter {
            files,
            forward,
            start,
            next_file,
            cur: None,
            read_for,
        }
    }
}

impl InternalIter for LevelIter {
    fn next_entry(&mut self) -> Option<Result<Entry>> {
        loop {
            if let Some(cur) = &mut self.cur {
                match cur.next_entry() {
                    Some(e) => return Some(e),
                    None => self.cur = None,
                }
            }
            let i = self.next_file?;
            self.next_file = if self.forward {
                Some(i + 1).filter(|&j| j < self.files.len())
            } else {
                i.checked_sub(1)
            };
            let start = self.start.take();
            self.cur = Some(TableIter::new(
                self.files[i].reader.clone(),
                self.forward,
                start,
                self.read_for,
            ));
        }
    }
}

struct HeapItem {
    key: Vec<u8>,
    value: Vec<u8>,
    source: usize,
    forward: bool,
}

impl Ord for HeapItem {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap pops the greatest: forward wants the smallest key first.
        let by_key = ikey::compare(&self.key, &other.key).then(self.source.cmp(&other.source));
        if self.forward {
            by_key.reverse()
        } else {
            by_key
        }
    }
}

impl PartialOrd for HeapItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for HeapItem {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for HeapItem {}

/// Merges sources into one stream of internal entries in the chosen direction.
pub(crate) struct MergeIter {
    sources: Vec<Box<dyn InternalIter>>,
    heap: BinaryHeap<HeapItem>,
    forward: bool,
    primed: bool,
}

impl MergeIter {
    pub fn new(sources: Vec<Box<dyn InternalIter>>, forward: bool) -> Self {
        MergeIter {
            sources,
            heap: BinaryHeap::new(),
            forward,
            primed: false,
        }
    }

    fn pull(&mut self, source: usize) -> Result<()> {
        if let Some(e) = self.sources[source].next_entry() {
            let (key, value) = e?;
            self.heap.push(HeapItem {
                key,
                value,
                source,
                forward: self.forward,
            });
        }
        Ok(())
    }
}

impl InternalIter for MergeIter {
    fn next_entry(&mut self) -> Option<Result<Entry>> {
        if !self.primed {
            self.primed = true;
            for i in 0..self.sources.len() {
                if let Err(e) = self.pull(i) {
                    return Some(Err(e));
                }
            }
        }
        let top = self.heap.pop()?;
        if let Err(e) = self.pull(top.source) {
            return Some(Err(e));
        }
        Some(Ok((top.key, top.value)))
    }
}

/// Where a source starts for a user-key bound: the cursor then filters exclusions.
fn start_key(bound: &Bound<Vec<u8>>, forward: bool) -> Option<Vec<u8>> {
    match (bound, forward) {
        (Bound::Unbounded, _) => None,
        // Forward from the first (newest) version of the key.
        (Bound::Included(k) | Bound::Excluded(k), true) => Some(ikey::seek_key(k, ikey::SEQ_MAX)),
        // Backward from the last (oldest) version of the key; an excluded key's versions
        // are skipped by the caller.
        (Bound::Included(k) | Bound::Excluded(k), false) => Some(ikey::last_key(k)),
    }
}

/// What a read sees: the memtables and the version, captured together.
pub(crate) struct SuperVersion {
    pub mem: Arc<Memtable>,
    /// Frozen memtables, newest first.
    pub imms: Vec<Arc<Memtable>>,
    pub version: Arc<Version>,
}

pub(crate) fn sources(
    sv: &SuperVersion,
    forward: bool,
    start: Option<Vec<u8>>,
    read_for: ReadFor,
) -> Vec<Box<dyn InternalIter>> {
    let mut out: Vec<Box<dyn InternalIter>> = Vec::new();
    out.push(Box::new(MemIter::new(
        sv.mem.clone(),
        forward,
        start.clone(),
    )));
    for m in &sv.imms {
        out.push(Box::new(MemIter::new(m.clone(), forward, start.clone())));
    }
    for f in &sv.version.levels[0] {
        out.push(Box::new(TableIter::new(
            f.reader.clone(),
            forward,
            start.clone(),
            read_for,
        )));
    }
    for files in &sv.version.levels[1..] {
        if !files.is_empty() {
            out.push(Box::new(LevelIter::new(
                files.clone(),
                forward,
                start.clone(),
                read_for,
            )));
        }
    }
    out
}

/// A streaming scan over a key range, yielding (key, value) in the chosen direction.
pub struct RangeIter {
    merge: MergeIter,
    forward: bool,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    seq: u64,
    /// The user key whose newest visible version has been decided (forward).
    last_user_key: Option<Vec<u8>>,
    /// Backward: the newest visible version seen so far of the current user key.
    pending: Option<(Vec<u8>, Kind, Vec<u8>)>,
    done: bool,
    /// Keeps the versions this scan reads alive in compactions.
    _snapshot: Option<Snapshot>,
    /// Keeps the tables of the captured version alive.
    _sv: Arc<SuperVersion>,
}

impl RangeIter {
    pub(crate) fn new(
        sv: Arc<SuperVersion>,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        direction: Direction,
        seq: u64,
        snapshot: Option<Snapshot>,
    ) -> RangeIter {
        let forward = direction == Direction::Forward;
        let lower = lower.map(|k| k.to_vec());
        let upper = upper.map(|k| k.to_vec());
        let start = start_key(if forward { &lower } else { &upper }, forward);
        let merge = MergeIter::new(sources(&sv, forward, start, ReadFor::User), forward);
        // An empty or inverted range yields nothing (BTreeMap::range would panic; we
        // prefer an empty scan for a caller-computed range).
        let empty = match (&lower, &upper) {
            (Bound::Included(l), Bound::Included(u)) => l > u,
            (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u))
            | (Bound::Excluded(l), Bound::Included(u)) => l >= u,
            _ => false,
        };
        RangeIter {
            merge,
            forward,
            lower,
            upper,
            seq,
            last_user_key: None,
            pending: None,
            done: empty,
            _snapshot: snapshot,
            _sv: sv,
        }
    }

    fn below_lower(&self, k: &[u8]) -> bool {
        match &self.lower {
            Bound::Included(l) => k < l.as_slice(),
            Bound::Excluded(l) => k <= l.as_slice(),
            Bound::Unbounded => false,
        }
    }

    fn above_upper(&self, k: &[u8]) -> bool {
        match &self.upper {
            Bound::Included(u) => k > u.as_slice(),
            Bound::Excluded(u) => k >= u.as_slice(),
            Bound::Unbounded => false,
        }
    }

    fn next_forward(&mut self) -> Option<Result<Entry>> {
        loop {
            let (k, v) = match self.merge.next_entry()? {
                Ok(e) => e,
                Err(e) => return Some(Err(e)),
            };
            if ikey::seq(&k) > self.seq {
                continue;
            }
            let uk = ikey::user_key(&k);
            if self.last_user_key.as_deref() == Some(uk) {
                continue;
            }
            if self.above_upper(uk) {
                self.done = true;
                return None;
            }
            self.last_user_key = Some(uk.to_vec());
            if self.below_lower(uk) {
                continue;
            }
            if ikey::kind(&k) == Kind::Put {
                return Some(Ok((uk.to_vec(), v)));
            }
        }
    }

    fn next_backward(&mut self) -> Option<Result<Entry>> {
        loop {
            let Some(next) = self.merge.next_entry() else {
                self.done = true;
                return self.take_pending();
            };
            let (k, v) = match next {
                Ok(e) => e,
                Err(e) => return Some(Err(e)),
            };
            if ikey::seq(&k) > self.seq {
                continue;
            }
            let uk = ikey::user_key(&k);
            if self.below_lower(uk) {
                self.done = true;
                return self.take_pending();
            }
            if self.above_upper(uk) {
                continue;
            }
            let kind = ikey::kind(&k);
            match &mut self.pending {
                // Backward order visits a key's versions oldest first: a later one is newer.
                Some((pk, pkind, pv)) if pk.as_slice() == uk => {
                    *pkind = kind;
                    *pv = v;
                }
                _ => {
                    let prev = self.pending.replace((uk.to_vec(), kind, v));
                    if let Some((pk, Kind::Put, pv)) = prev {
                        return Some(Ok((pk, pv)));
                    }
                }
            }
        }
    }

    fn take_pending(&mut self) -> Option<Result<Entry>> {
        match self.pending.take() {
            Some((k, Kind::Put, v)) => Some(Ok((k, v))),
            _ => None,
        }
    }
}

impl Iterator for RangeIter {
    type Item = Result<(Vec<u8>, Vec<u8>), LsmError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = if self.forward {
            self.next_forward()
        } else {
            self.next_backward()
        };
        if let Some(Err(_)) = &r {
            self.done = true;
        }
        r
    }
}
