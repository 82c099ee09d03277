//! Range scans: keys come in order from the index (merged with the write cache); the
//! values of up to `scan_readahead_max` keys are read with one submission, so the
//! device sees them all at once (the paper's readahead, as parallel io_uring reads).

use crate::db::Inner;
use crate::error::{Error, Result};
use crate::keys;
use crate::location::{self, Location, Pointer};
use crate::read::decode_value;
use crate::readers::OwnedReadGuard;
use crate::write_cache::CachedValue;
use std::collections::VecDeque;
use std::iter::Peekable;
use std::ops::Bound;

/// Streams `(key, value)` pairs in ascending key order.
pub struct ScanIter<'a> {
    inner: &'a Inner,
    // Keeps segments this scan may point into from being reused by GC.
    _reading: OwnedReadGuard,
    index: Peekable<hashkv_lsm::RangeIter>,
    _snapshot: hashkv_lsm::Snapshot,
    cached: Peekable<std::vec::IntoIter<(Vec<u8>, CachedValue)>>,
    ready: VecDeque<(Vec<u8>, Vec<u8>)>,
    failed: bool,
}

enum Item {
    Value(Vec<u8>, Vec<u8>),
    Read(Vec<u8>, Pointer),
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
            if let Some(frozen) = &cache.frozen {
                for (k, v) in frozen.iter().filter(|(k, _)| in_range(k)) {
                    merged.insert(k.clone(), v.clone());
                }
            }
            for (k, v) in cache.active.iter().filter(|(k, _)| in_range(k)) {
                merged.insert(k.clone(), v.clone());
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
            _reading: reading,
            index: index.peekable(),
            _snapshot: snapshot,
            cached: cached.into_iter().peekable(),
            ready: VecDeque::new(),
            failed: false,
        })
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

    fn fill(&mut self) -> Result<()> {
        let mut items = Vec::new();
        while items.len() < self.inner.options.scan_readahead_max {
            match self.next_item()? {
                Some(i) => items.push(i),
                None => break,
            }
        }
        let reads = self
            .inner
            .read_records(items.iter().filter_map(|i| match i {
                Item::Read(_, p) => Some(p),
                Item::Value(..) => None,
            }))?;
        let mut next_read = 0;
        for item in items {
            match item {
                Item::Value(k, v) => self.ready.push_back((k, v)),
                Item::Read(k, p) => {
                    let (span, buf) = &reads[next_read];
                    let value = decode_value(span.payload(buf), &p, &k)?;
                    next_read += 1;
                    self.ready.push_back((k, value));
                }
            }
        }
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
        if self.failed {
            return None;
        }
        if self.ready.is_empty() {
            if let Err(e) = self.fill() {
                self.failed = true;
                return Some(Err(e));
            }
        }
        self.ready.pop_front().map(Ok)
    }
}
