//! Keys written while a GC runs. A GC reads records, decides what survives, and only
//! then commits new pointers; a flush that commits in between may have given a key a
//! newer version. The GC must not point the index back at the version it read, so
//! every flush notes its keys here (under the commit lock), and the GC skips them when
//! it queues its batch (under the commit lock too, behind those flushes' batches). One
//! tracker serves every value store.
//!
//! Keys are found by their hash (`HashedKey`): the GC looks up each survivor with the
//! hash its survey computed, without reading the key again unless a noted key has the
//! same hash.

use crate::key_hash::{HashedKey, HashedKeys};
use std::collections::HashMap;

/// The keys noted, by hash: every key of every flush during a GC goes through it.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    by_hash: HashMap<u64, Vec<Vec<u8>>, HashedKeys>,
}

impl KeySet {
    fn insert(&mut self, key: HashedKey<'_>) {
        let same_hash = self.by_hash.entry(key.hash).or_default();
        if !same_hash.iter().any(|k| k == key.key) {
            same_hash.push(key.key.to_vec());
        }
    }

    pub fn contains(&self, key: HashedKey<'_>) -> bool {
        self.by_hash
            .get(&key.hash)
            .is_some_and(|same_hash| same_hash.iter().any(|k| k == key.key))
    }

    pub fn len(&self) -> usize {
        self.by_hash.values().map(Vec::len).sum()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// Which keys a GC cares about, by their hash: a group GC only about its group's.
type Scope = Box<dyn Fn(u64) -> bool + Send>;

#[derive(Default)]
pub(crate) struct WrittenKeys {
    tracking: Option<(Scope, KeySet)>,
}

impl WrittenKeys {
    /// Starts noting keys whose hash (`HashedKey::hash`) `in_scope` accepts. One GC at
    /// a time.
    pub fn begin(&mut self, in_scope: impl Fn(u64) -> bool + Send + 'static) {
        assert!(self.tracking.is_none(), "one GC at a time");
        self.tracking = Some((Box::new(in_scope), KeySet::default()));
    }

    /// A flush committed a new version (or a delete) of `key`.
    pub fn note(&mut self, key: HashedKey<'_>) {
        if let Some((in_scope, keys)) = self.tracking.as_mut() {
            if in_scope(key.hash) {
                keys.insert(key);
            }
        }
    }

    /// Stops noting and returns the keys noted since `begin` (empty if none began).
    pub fn finish(&mut self) -> KeySet {
        self.tracking
            .take()
            .map(|(_, keys)| keys)
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for WrittenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tracking {
            Some((_, keys)) => write!(f, "WrittenKeys(tracking, {} keys)", keys.len()),
            None => write!(f, "WrittenKeys(idle)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_only_in_scope_while_tracking() {
        let mut w = WrittenKeys::default();
        w.note(HashedKey::new(b"before"));
        let apple = HashedKey::new(b"apple").hash;
        w.begin(move |h| h == apple);
        w.note(HashedKey::new(b"apple"));
        w.note(HashedKey::new(b"banana"));
        w.note(HashedKey::new(b"apple"));
        let keys = w.finish();
        assert_eq!(keys.len(), 1);
        assert!(keys.contains(HashedKey::new(b"apple")));
        assert!(!keys.contains(HashedKey::new(b"banana")));
        let forged = HashedKey {
            hash: apple,
            key: b"pear",
        };
        assert!(
            !keys.contains(forged),
            "a key with the same hash is another key"
        );
        w.note(HashedKey::new(b"apricot"));
        assert!(w.finish().is_empty(), "nothing noted once finished");
    }
}
