//! Range scans: keys come in order from the index (merged with the write cache); the
//! values of up to `scan_readahead_max` keys are read with one submission, so the
//! device sees them all at once (the paper's readahead, as parallel io_uring reads).
//! The reads of the next batch are submitted before the caller receives the values of
//! the current one, so a long scan keeps the device busy while its caller consumes.

use crate::db::Inner;
use crate::error::{Error, Result};
use crate::keys;
use crate::location::{self, Location, Pointer};
use crate::read::check_value;
use crate::readers::OwnedReadGuard;
use crate::spans::Span;
use crate::write_cache::CachedValue;
use hashkv_blockdev::PendingReads;
use std::collections::VecDeque;
use std::iter::Peekable;
use std::ops::Bound;

/// Batches whose reads a scan keeps in flight beyond the one its caller consumes. One
/// keeps the device reading while the caller consumes a batch and the scan walks the
/// index for the next. Each batch in flight holds a read-ahead ring of every device it
/// reads from (a pool shared by all scans, beyond which scans read without read-ahead)
/// and is read for nothing when the caller stops early, so more would cost rings and
/// wasted reads for little: one batch is already `scan_readahead_max` reads deep.
const SCAN_BATCHES_AHEAD_MAX: usize = 1;

/// Streams `(key, value)` pairs in ascending key order.
pub struct ScanIter<'a> {
    inner: &'a Inner,
    /// Batches whose reads are in flight, oldest first. Declared before `_reading`, so
    /// dropped first: no read of this scan is in flight once its reader generation
    /// ends.
    ahead: VecDeque<Ahead<'a>>,
    // Keeps segments this scan may point into from being reused by GC.
    _reading: OwnedReadGuard,
    index: Peekable<hashkv_lsm::RangeIter>,
    _snapshot: hashkv_lsm::Snapshot,
    cached: Peekable<std::vec::IntoIter<(Vec<u8>, CachedValue)>>,
    /// No key is left to put in a batch.
    exhausted: bool,
    /// Keys the scan may still put in batches (`limit`): no value past the caller's
    /// last key is read.
    unbatched_max: usize,
    ready: VecDeque<(Vec<u8>, Vec<u8>)>,
    /// The error the scan ends with, returned once the pairs before it are.
    error: Option<Error>,
    failed: bool,
}

enum Item {
    Value(Vec<u8>, Vec<u8>),
    Read(Vec<u8>, Pointer),
}

/// Up to `scan_readahead_max` keys in order, with the reads of their values.
struct Batch<'a> {
    items: Vec<Item>,
    /// The span of each `Item::Read`, in order.
    spans: Vec<Span>,
    reads: PendingReads<'a>,
}

/// A batch started ahead, or the error met while starting it (returned when the
/// scan reaches it).
enum Ahead<'a> {
    Batch(Batch<'a>),
    Failed(Error),
}

impl<'a> ScanIter<'a> {
    pub(crate) fn new(
        inner: &'a std::sync::Arc<Inner>,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<ScanIter<'a>> {
        let reading = inner.readers.enter_owned();
        let in_range = |k: &[u8]| {
            (match lower {
                Bound::Included(l) => k >= l,
                Bound::Excluded(l) => k > l,
                Bound::Unbounded => true,
            }) && (match upper {
                Bound::Included(u) => k <= u,
                Bound::Excluded(u) => k < u,
                Bound::Unbounded => true,
            })
        };
        // The cache's entries and the index snapshot are taken under the cache lock: a
        // flush clears its frozen map only after its index batch, so nothing committed
        // in between is missed.
        let (cached, snapshot) = {
            let cache = inner.cache.read();
            let mut merged: std::collections::BTreeMap<Vec<u8>, CachedValue> = Default::default();
            // Oldest first: a newer map's entry replaces an older one's.
            for frozen in &cache.frozen {
                for (k, v) in frozen.map.iter().filter(|(k, _)| in_range(k.key)) {
                    merged.insert(k.key.to_vec(), v.map(<[u8]>::to_vec));
                }
            }
            for (k, v) in cache.active.iter().filter(|(k, _)| in_range(k.key)) {
                merged.insert(k.key.to_vec(), v.map(<[u8]>::to_vec));
            }
            (
                merged.into_iter().collect::<Vec<_>>(),
                inner.index.snapshot(),
            )
        };
        let map_bound = |b: Bound<&[u8]>| match b {
            Bound::Included(k) => Bound::Included(keys::user_key(k)),
            Bound::Excluded(k) => Bound::Excluded(keys::user_key(k)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let lo = match map_bound(lower) {
            Bound::Unbounded => Bound::Included(vec![keys::USER]),
            b => b,
        };
        let hi = match map_bound(upper) {
            Bound::Unbounded => Bound::Excluded(vec![keys::USER + 1]),
            b => b,
        };
        let index = inner
            .index
            .range(bound_slice(&lo), bound_slice(&hi), Some(&snapshot))?;
        Ok(ScanIter {
            inner,
            ahead: VecDeque::new(),
            _reading: reading,
            index: index.peekable(),
            _snapshot: snapshot,
            cached: cached.into_iter().peekable(),
            exhausted: false,
            unbatched_max: usize::MAX,
            ready: VecDeque::new(),
            error: None,
            failed: false,
        })
    }

    /// Returns at most `keys` pairs, and reads no value beyond them: a scan of a known
    /// count (YCSB's E) otherwise reads a batch ahead that its caller never takes (a
    /// 100-key scan with batches of 64 read 192 values). Takes effect before the first
    /// `next`; later, batches already started are still returned.
    pub fn limit(mut self, keys: usize) -> Self {
        self.unbatched_max = keys;
        self.exhausted |= keys == 0;
        self
    }

    /// The next key in order from the index and the cache, the cache winning ties.
    fn next_item(&mut self) -> Result<Option<Item>> {
        loop {
            let index_key = match self.index.peek() {
                Some(Ok((k, _))) => Some(k[1..].to_vec()),
                Some(Err(_)) => {
                    let Some(Err(e)) = self.index.next() else {
                        unreachable!()
                    };
                    return Err(e.into());
                }
                None => None,
            };
            let cache_key = self.cached.peek().map(|(k, _)| k.clone());
            let take_cache = match (&cache_key, &index_key) {
                (None, None) => return Ok(None),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(c), Some(i)) => c <= i,
            };
            if take_cache {
                if cache_key == index_key {
                    self.index.next();
                }
                let (k, v) = self.cached.next().unwrap();
                match v {
                    Some(v) => return Ok(Some(Item::Value(k, v))),
                    None => continue,
                }
            }
            let (k, v) = self.index.next().unwrap()?;
            let key = k[1..].to_vec();
            return Ok(Some(match location::decode(&v)? {
                Location::Inline(v) => Item::Value(key, v),
                Location::Pointer(p) => Item::Read(key, p),
            }));
        }
    }

    /// The next keys in order, up to `scan_readahead_max`, with the reads of their
    /// values started; `None` when no key is left.
    fn start_batch(&mut self) -> Result<Option<Batch<'a>>> {
        let mut items = Vec::new();
        let batch_max = self
            .inner
            .options
            .scan_readahead_max
            .min(self.unbatched_max);
        while items.len() < batch_max {
            match self.next_item()? {
                Some(i) => items.push(i),
                None => {
                    self.exhausted = true;
                    break;
                }
            }
        }
        self.unbatched_max -= items.len();
        self.exhausted |= self.unbatched_max == 0;
        if items.is_empty() {
            return Ok(None);
        }
        let (spans, reads) =
            self.inner
                .start_value_reads(items.iter().filter_map(|i| match i {
                    Item::Read(k, p) => Some((p, &k[..])),
                    Item::Value(..) => None,
                }))?;
        Ok(Some(Batch {
            items,
            spans,
            reads,
        }))
    }

    /// Starts batches until `SCAN_BATCHES_AHEAD_MAX` are in flight or no key is left.
    fn start_ahead(&mut self) {
        while self.ahead.len() < SCAN_BATCHES_AHEAD_MAX && !self.exhausted {
            match self.start_batch() {
                Ok(Some(batch)) => self.ahead.push_back(Ahead::Batch(batch)),
                Ok(None) => break,
                Err(e) => {
                    self.ahead.push_back(Ahead::Failed(e));
                    self.exhausted = true;
                }
            }
        }
    }

    /// Moves the next batch's pairs to `ready`: the oldest batch in flight, or one
    /// started now. The batches after it are started before it is waited for, so their
    /// reads proceed while the caller consumes it.
    fn advance(&mut self) -> Result<()> {
        let current = match self.ahead.pop_front() {
            Some(Ahead::Batch(batch)) => Some(batch),
            Some(Ahead::Failed(e)) => return Err(e),
            None => self.start_batch()?,
        };
        self.start_ahead();
        match current {
            Some(batch) => self.finish(batch),
            None => Ok(()),
        }
    }

    /// Waits for a batch's reads and puts its pairs in `ready`, in order. A value that
    /// does not decode ends the scan: the pairs before it are still returned.
    fn finish(&mut self, batch: Batch<'a>) -> Result<()> {
        let reads = batch.reads.wait()?;
        let mut next_read = reads.iter().zip(&batch.spans);
        for item in batch.items {
            match item {
                Item::Value(k, v) => self.ready.push_back((k, v)),
                Item::Read(k, p) => {
                    let (read, span) = next_read.next().expect("one read per Item::Read");
                    let value = check_value(span.payload(&read.buf), &p, &k)?;
                    self.ready.push_back((k, value));
                }
            }
        }
        self.inner.give_back(reads);
        Ok(())
    }
}

fn bound_slice(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl Iterator for ScanIter<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(pair) = self.ready.pop_front() {
                return Some(Ok(pair));
            }
            if self.failed {
                return None;
            }
            if let Some(e) = self.error.take() {
                self.failed = true;
                // Reads started ahead are of no use now.
                self.ahead.clear();
                return Some(Err(e));
            }
            if self.exhausted && self.ahead.is_empty() {
                return None;
            }
            if let Err(e) = self.advance() {
                self.error = Some(e);
            }
        }
    }
}
