//! Keys written while a GC runs. A GC reads records, decides what survives, and only
//! then commits new pointers; a flush that commits in between may have given a key a
//! newer version. The GC must not point the index back at the version it read, so
//! every flush notes its keys here (under the commit lock), and the GC skips them when
//! it commits (under the commit lock too). One tracker serves every value store.

use crate::key_hash::KeyHash;
use std::collections::HashSet;

/// The keys noted: every key of every flush during a GC goes through it.
pub(crate) type KeySet = HashSet<Vec<u8>, KeyHash>;

/// Which keys a GC cares about: a group GC only about its group's keys.
type Scope = Box<dyn Fn(&[u8]) -> bool + Send>;

#[derive(Default)]
pub(crate) struct WrittenKeys {
    tracking: Option<(Scope, KeySet)>,
}

impl WrittenKeys {
    /// Starts noting keys for which `in_scope` holds. One GC at a time.
    pub fn begin(&mut self, in_scope: impl Fn(&[u8]) -> bool + Send + 'static) {
        assert!(self.tracking.is_none(), "one GC at a time");
        self.tracking = Some((Box::new(in_scope), KeySet::default()));
    }

    /// A flush committed a new version (or a delete) of `key`.
    pub fn note(&mut self, key: &[u8]) {
        if let Some((in_scope, keys)) = self.tracking.as_mut() {
            if in_scope(key) && !keys.contains(key) {
                keys.insert(key.to_vec());
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
        w.note(b"before");
        w.begin(|k| k.starts_with(b"a"));
        w.note(b"apple");
        w.note(b"banana");
        w.note(b"apple");
        let keys = w.finish();
        assert_eq!(keys.len(), 1);
        assert!(keys.contains(&b"apple".to_vec()));
        w.note(b"apricot");
        assert!(w.finish().is_empty(), "nothing noted once finished");
    }
}
