//! Read access to the index (the LSM tree in the metadata directory). Reads go through
//! this handle; writes go only through the committer (`commit/`), which is what makes
//! the index a journal: every change to it is one batch ordered by the commit lock.

use crate::error::Result;
use crate::stats::Counters;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

#[derive(Clone)]
pub(crate) struct IndexReader(Arc<hashkv_lsm::Db>);

impl IndexReader {
    pub fn new(db: Arc<hashkv_lsm::Db>) -> IndexReader {
        IndexReader(db)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.0.get(key)?)
    }

    /// Reads, all at once, the index blocks gets of `keys` would read one by one.
    pub fn prefetch(&self, keys: &[&[u8]]) -> Result<()> {
        Ok(self.0.prefetch(keys)?)
    }

    /// Lets the block cache hold `bytes` beyond its share (`memory::Loan`); 0 takes
    /// the loan back, evicting before it returns.
    pub fn set_block_cache_loan(&self, bytes: u64) {
        self.0.set_block_cache_loan(bytes);
    }

    /// The view a GC reads through, which counts every lookup into `lookups`.
    pub fn for_gc<'a>(&'a self, lookups: &'a AtomicU64) -> GcIndex<'a> {
        GcIndex {
            index: self,
            lookups,
        }
    }

    pub fn snapshot(&self) -> hashkv_lsm::Snapshot {
        self.0.snapshot()
    }

    /// Entries in `[lower, upper)` order, at `snapshot` if given.
    pub fn range(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        snapshot: Option<&hashkv_lsm::Snapshot>,
    ) -> Result<hashkv_lsm::RangeIter> {
        Ok(self
            .0
            .range(lower, upper, hashkv_lsm::Direction::Forward, snapshot)?)
    }

    /// Entries whose key starts with `prefix`, in order.
    pub fn prefix(&self, prefix: &[u8]) -> Result<hashkv_lsm::RangeIter> {
        let mut upper = prefix.to_vec();
        *upper.last_mut().expect("non-empty prefix") += 1;
        self.range(Bound::Included(prefix), Bound::Excluded(&upper), None)
    }

    pub fn stats(&self) -> hashkv_lsm::Stats {
        self.0.stats()
    }

    pub fn memory_usage(&self) -> hashkv_lsm::MemoryUsage {
        self.0.memory_usage()
    }

    /// Closes the index (syncs its log and stops its background work), returning
    /// what failed, also in work still running when the close began.
    pub fn close(&self) -> Result<()> {
        Ok(self.0.close_shared()?)
    }

    pub fn wal_durable_point_for_test(&self) -> (PathBuf, u64) {
        self.0.wal_durable_point_for_test()
    }
}

/// The index as a GC sees it: lookups only, each one counted (`Stats::gc_index_lookups`),
/// so the count covers every GC path that asks the index what is valid. The hashkv
/// mode's GCs never do; the vlog mode's looks up every record it reads.
pub(crate) struct GcIndex<'a> {
    index: &'a IndexReader,
    lookups: &'a AtomicU64,
}

impl GcIndex<'_> {
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Counters::add(self.lookups, 1);
        self.index.get(key)
    }

    /// Reads ahead the index blocks the gets of `keys` will need; the gets count.
    pub fn prefetch(&self, keys: &[&[u8]]) -> Result<()> {
        self.index.prefetch(keys)
    }
}
