//! The write cache: recent writes buffered in memory, a repeated key updated in place.
//! A flush freezes the active map and commits it as one unit, so a write batch is
//! always wholly in one flush (atomic).

use std::collections::BTreeMap;
use std::sync::Arc;

/// `None` is a delete.
pub type CachedValue = Option<Vec<u8>>;
pub type CacheMap = BTreeMap<Vec<u8>, CachedValue>;

#[derive(Debug, Default)]
pub struct WriteCache {
    pub active: CacheMap,
    pub active_bytes: u64,
    /// Number of the flush that will commit `active`.
    pub active_flush: u64,
    /// Frozen by a flush in progress; still served to readers until committed.
    pub frozen: Option<Arc<CacheMap>>,
}

impl WriteCache {
    pub fn insert(&mut self, key: &[u8], value: CachedValue) {
        let add = (key.len() + value.as_ref().map_or(0, |v| v.len()) + 32) as u64;
        match self.active.insert(key.to_vec(), value) {
            Some(old) => {
                let old_bytes = (key.len() + old.map_or(0, |v| v.len()) + 32) as u64;
                self.active_bytes = self.active_bytes + add - old_bytes;
            }
            None => self.active_bytes += add,
        }
    }

    /// Takes back a refused write of `key`: if the active map still holds `written`,
    /// puts back what it held before (`previous`: `None` if the key was not cached).
    /// A newer write of the key by someone else is left alone.
    pub fn take_back(&mut self, key: &[u8], written: &CachedValue, previous: Option<CachedValue>) {
        if self.active.get(key) != Some(written) {
            return;
        }
        match previous {
            Some(v) => self.insert(key, v),
            None => {
                self.active.remove(key);
                let bytes = (key.len() + written.as_ref().map_or(0, |v| v.len()) + 32) as u64;
                self.active_bytes -= bytes;
            }
        }
    }

    /// Looks a key up: `Some(None)` is a cached delete, `None` not cached.
    pub fn get(&self, key: &[u8]) -> Option<CachedValue> {
        if let Some(v) = self.active.get(key) {
            return Some(v.clone());
        }
        self.frozen.as_ref().and_then(|f| f.get(key).cloned())
    }

    /// Freezes the active map for a flush; returns it with its flush number.
    pub fn freeze(&mut self) -> (Arc<CacheMap>, u64) {
        assert!(self.frozen.is_none(), "one flush at a time");
        let map = Arc::new(std::mem::take(&mut self.active));
        self.active_bytes = 0;
        let n = self.active_flush;
        self.active_flush += 1;
        self.frozen = Some(map.clone());
        (map, n)
    }
}
