//! Reader generations: a segment released by GC is reused only after every reader that
//! might still hold a pointer into it (a get between its index lookup and its device
//! read, or a scan over an older snapshot) has finished.

use parking_lot::Mutex;
use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct Readers {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    active: BTreeMap<u64, usize>,
}

/// Held for the duration of a read.
pub struct ReadGuard<'a> {
    readers: &'a Readers,
    generation: u64,
}

impl Readers {
    pub fn enter(&self) -> ReadGuard<'_> {
        let mut s = self.state.lock();
        let generation = s.generation;
        *s.active.entry(generation).or_insert(0) += 1;
        ReadGuard {
            readers: self,
            generation,
        }
    }

    /// Starts a new generation; segments released now may be reused once
    /// `oldest_active()` is at least the returned value (or no reader is active).
    pub fn advance(&self) -> u64 {
        let mut s = self.state.lock();
        s.generation += 1;
        s.generation
    }

    pub fn oldest_active(&self) -> Option<u64> {
        self.state.lock().active.keys().next().copied()
    }

    /// The same as `enter`, for readers that must outlive a borrow (scan iterators).
    pub fn enter_owned(self: &std::sync::Arc<Self>) -> OwnedReadGuard {
        let generation = {
            let mut s = self.state.lock();
            let g = s.generation;
            *s.active.entry(g).or_insert(0) += 1;
            g
        };
        OwnedReadGuard {
            readers: self.clone(),
            generation,
        }
    }

    fn exit(&self, generation: u64) {
        let mut s = self.state.lock();
        let n = s.active.get_mut(&generation).expect("reader registered");
        *n -= 1;
        if *n == 0 {
            s.active.remove(&generation);
        }
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        self.readers.exit(self.generation);
    }
}

pub struct OwnedReadGuard {
    readers: std::sync::Arc<Readers>,
    generation: u64,
}

impl Drop for OwnedReadGuard {
    fn drop(&mut self) {
        self.readers.exit(self.generation);
    }
}

/// Space released by a commit, waiting for the readers that may still read it: each
/// item is handed back once every reader older than its generation has finished.
/// Every value region keeps its released space here (segments, log tails).
#[derive(Debug)]
pub struct Deferred<T> {
    pending: Vec<(u64, T)>,
}

impl<T> Default for Deferred<T> {
    fn default() -> Self {
        Deferred {
            pending: Vec::new(),
        }
    }
}

impl<T> Deferred<T> {
    /// Holds `item` until readers older than `release_gen` (from `Readers::advance`)
    /// are gone.
    pub fn defer(&mut self, release_gen: u64, item: T) {
        self.pending.push((release_gen, item));
    }

    /// Takes out the items no running reader can still need, in release order.
    /// `oldest_reader` is `Readers::oldest_active`.
    pub fn ready(&mut self, oldest_reader: Option<u64>) -> Vec<T> {
        let (ready, keep): (Vec<_>, Vec<_>) = self
            .pending
            .drain(..)
            .partition(|(gen, _)| oldest_reader.is_none_or(|r| r >= *gen));
        self.pending = keep;
        ready.into_iter().map(|(_, item)| item).collect()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    #[cfg(any(test, debug_assertions))]
    pub fn items(&self) -> impl Iterator<Item = &T> {
        self.pending.iter().map(|(_, item)| item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferred_waits_for_older_readers() {
        let r = Readers::default();
        let mut d = Deferred::default();
        let old = r.enter();
        d.defer(r.advance(), "a");
        assert!(d.ready(r.oldest_active()).is_empty());
        let newer = r.enter();
        drop(old);
        assert_eq!(d.ready(r.oldest_active()), vec!["a"]);
        d.defer(r.advance(), "b");
        drop(newer);
        assert_eq!(d.ready(r.oldest_active()), vec!["b"]);
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn oldest_tracks_guards() {
        let r = Readers::default();
        assert_eq!(r.oldest_active(), None);
        let a = r.enter();
        let g1 = r.advance();
        let b = r.enter();
        assert_eq!(r.oldest_active(), Some(0));
        drop(a);
        assert_eq!(r.oldest_active(), Some(g1));
        drop(b);
        assert_eq!(r.oldest_active(), None);
    }
}
