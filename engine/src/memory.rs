//! The memory budget: one option (`Options::memory_budget_bytes`) bounds what the
//! engine keeps in memory, split between its caches and buffers by the shares below.
//! Nothing relies on the OS page cache: values are read with O_DIRECT, and so are the
//! index's tables (hashkv_lsm's `fs` module says how its files stay out of the cache).
//!
//! What the budget does not cover is working memory that does not grow with the data
//! (the documented constant of README "Memory"): the program and its threads, the
//! allocator's slack, a GC's buffers (the collected group's segments and its
//! survivors: at most twice the chain limit of two main segments' worth), a compaction's
//! (readahead of 512 KiB per input table, a 1 MiB write buffer and 8 bytes of filter
//! hash per entry of the table being written) and a flush's.

use crate::options::Options;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Share of the budget for the index's reads: the LSM block cache, with the live
/// tables' index and filter blocks pinned inside it. The largest share: every get,
/// scan and (in the vlog mode) GC lookup goes through the index, and a block held
/// saves a device read for each of the ~70 keys (hashkv mode) it holds.
pub const BLOCK_CACHE_SHARE: f64 = 0.40;
/// Share for the index's write buffer: its memtables (the active one and those frozen
/// and waiting for their flush, `hashkv_lsm::MEMTABLES_HELD_MAX` of them). Larger
/// memtables flush less often and so compact less.
pub const MEMTABLES_SHARE: f64 = 0.15;
/// Share for the write cache and its flush (see `WRITE_CACHE_COPIES`). The write cache
/// is what batches each segment group's records into one aligned write: the hashkv
/// design's write path depends on it most, so it gets the second largest share.
pub const WRITE_SHARE: f64 = 0.35;
/// Share for the value cache: values of recent gets, like BlobDB's blob cache. The
/// smallest share: on a store 30x its memory a uniform read rarely hits, but a skewed
/// one (Zipf) does.
pub const VALUE_CACHE_SHARE: f64 = 0.10;
const _: () = assert!(
    (BLOCK_CACHE_SHARE + MEMTABLES_SHARE + WRITE_SHARE + VALUE_CACHE_SHARE - 1.0) < 1e-9
        && (BLOCK_CACHE_SHARE + MEMTABLES_SHARE + WRITE_SHARE + VALUE_CACHE_SHARE - 1.0) > -1e-9
);

/// Copies of the write cache's size the write share pays for: the active cache, the
/// frozen one being placed, the one waiting for its commit (`commit/pipeline.rs`),
/// and one flush's records encoded into pooled buffers, whose power-of-two sizes may
/// take up to twice the records' bytes: under a budget a flush encodes its records
/// only once the previous flush's writes gave their buffers back
/// (`MemorySplit::flush_encodes_beside_writes`). Two flushes' buffers would take 7
/// copies, and the smaller write cache cost 10-18% of the update phases' throughput
/// under a 64 MiB budget.
pub const WRITE_CACHE_COPIES: u64 = 5;

/// Smallest budget accepted: below it a memtable holds too few index entries to make
/// a table worth writing, and the write cache too few records to batch a group's.
pub const MEMORY_BUDGET_BYTES_MIN: u64 = 8 << 20;

/// Aligned buffers kept for reuse without a budget: at least this much (and at least
/// `FLUSH_BUFFERS_PER_CACHE` times the write cache). A flush of a full cache, and a
/// GC's survivors, take their buffers from the pool.
const BUFFER_POOL_BYTES_MIN: u64 = 16 << 20;

/// Without a budget a flush encodes while the previous flush's writes are in flight,
/// so two flushes' buffers are in use at once, each up to twice the cache in
/// power-of-two sizes: the pool keeps that much. Keeping two caches' worth, it
/// dropped buffers that the next flush or GC then allocated afresh (the gc_pressure
/// test saw one new buffer per two GCs, where it allows one per four).
const FLUSH_BUFFERS_PER_CACHE: u64 = 4;

/// While no write and no GC has come for this long, the write side's shares that it
/// does not use (memtables, write cache, buffer pool) are lent to the block cache
/// (`Loan`). Long enough that writes pausing between batches do not make it lend and
/// take back over and over (each take-back evicts the blocks the loan held); short
/// enough that a read phase after writes has it within its first second.
pub const LOAN_IDLE: Duration = Duration::from_secs(1);

/// Smallest loan made: less would not hold a useful share of an index's blocks.
const LOAN_BYTES_MIN: u64 = 1 << 20;

/// What each cache and buffer may hold, in bytes, from the budget or (without one)
/// from the individual options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySplit {
    pub block_cache_bytes: u64,
    /// One memtable; the index holds up to `hashkv_lsm::MEMTABLES_HELD_MAX` of them.
    pub memtable_bytes: u64,
    pub write_cache_bytes: u64,
    /// Free aligned buffers kept for reuse.
    pub buffer_pool_bytes: u64,
    pub value_cache_bytes: u64,
    /// A flush encodes its records while the previous flush's writes are in flight
    /// (`commit/flush_writes.rs`), so that two flushes' buffers are in use at once:
    /// without a budget; under one, it waits for them (`WRITE_CACHE_COPIES`).
    pub flush_encodes_beside_writes: bool,
}

impl MemorySplit {
    pub fn of(options: &Options) -> MemorySplit {
        let budget = options.memory_budget_bytes;
        if budget == 0 {
            return MemorySplit {
                block_cache_bytes: options.lsm.block_cache_bytes as u64,
                memtable_bytes: options.lsm.memtable_bytes_max as u64,
                write_cache_bytes: options.write_cache_bytes,
                buffer_pool_bytes: (FLUSH_BUFFERS_PER_CACHE * options.write_cache_bytes)
                    .max(BUFFER_POOL_BYTES_MIN),
                value_cache_bytes: options.value_cache_bytes,
                flush_encodes_beside_writes: true,
            };
        }
        let share = |s: f64| (budget as f64 * s) as u64;
        let write_cache_bytes = share(WRITE_SHARE) / WRITE_CACHE_COPIES;
        MemorySplit {
            block_cache_bytes: share(BLOCK_CACHE_SHARE),
            memtable_bytes: share(MEMTABLES_SHARE) / hashkv_lsm::MEMTABLES_HELD_MAX as u64,
            write_cache_bytes,
            // The flush's encoded records, counted in the write share.
            buffer_pool_bytes: 2 * write_cache_bytes,
            value_cache_bytes: share(VALUE_CACHE_SHARE),
            flush_encodes_beside_writes: false,
        }
    }

    /// The write side's shares of the budget: the memtables the index may hold, the
    /// write cache's copies (the write cache, the one being flushed, the buffer pool).
    pub fn write_side_bytes(&self) -> u64 {
        self.memtable_bytes * hashkv_lsm::MEMTABLES_HELD_MAX as u64
            + self.write_cache_bytes * WRITE_CACHE_COPIES
    }
}

/// The write side's unused memory, lent to the index's block cache while writes are
/// idle. Under a budget, a read-only phase would otherwise leave half of it unused
/// (the memtables' and write cache's shares) while its gets miss the block cache: with
/// 64 MiB, 4 KiB values and a 2 GiB store, 0.2 index reads per get (block cache 25.6
/// MiB, the index larger); with the loan, 1.44-1.63x the gets per second.
///
/// Lent by the GC thread, which polls anyway, once nothing has called `take_back` for
/// `LOAN_IDLE`: what the write side's shares exceed what it holds then. Everything
/// that grows the write side calls `take_back` first (a write, a flush, a GC), which
/// returns once the block cache is back within its share. The two sides meet like
/// Dekker's: `take_back` counts itself in `activity` and then reads `lent_bytes`; the
/// lender sets `lent_bytes` and then reads `activity` again, and takes its loan back itself if it
/// changed. So either the taker sees the loan, or the lender sees the taker; and both
/// work under one lock, so no taker proceeds while another is still evicting.
#[derive(Debug)]
pub(crate) struct Loan {
    /// The write side's shares (`MemorySplit::write_side_bytes`); 0 without a budget,
    /// where nothing is lent.
    lendable_bytes: u64,
    /// Calls of `take_back` so far: the idle clock's input.
    activity: AtomicU64,
    /// The loan out now; 0: none (a loan is at least `LOAN_BYTES_MIN`).
    lent_bytes: AtomicU64,
    /// Held while lending or taking back; and the GC thread's idle clock: the activity
    /// it last saw, and since when.
    state: Mutex<(u64, Instant)>,
}

impl Loan {
    pub fn new(split: &MemorySplit, budgeted: bool) -> Loan {
        Loan {
            lendable_bytes: if budgeted {
                split.write_side_bytes()
            } else {
                0
            },
            activity: AtomicU64::new(0),
            lent_bytes: AtomicU64::new(0),
            state: Mutex::new((0, Instant::now())),
        }
    }

    /// Before anything that grows the write side: takes the loan back, if one is out,
    /// through `set_loan(0)`, which returns once the block cache is back within its
    /// share. Costs an atomic add and a load when nothing is lent.
    pub fn take_back(&self, set_loan: impl FnOnce(u64)) {
        self.activity.fetch_add(1, Ordering::SeqCst);
        if self.lent_bytes() == 0 {
            return;
        }
        let _state = self.state.lock();
        if self.lent_bytes() > 0 {
            self.call_back(set_loan);
        }
    }

    /// Takes the loan out back through `set_loan(0)`; under the state lock.
    fn call_back(&self, set_loan: impl FnOnce(u64)) {
        set_loan(0);
        self.lent_bytes.store(0, Ordering::SeqCst);
    }

    /// The GC thread's poll at `now`. Once nothing has called `take_back` for
    /// `LOAN_IDLE`, lends (through `set_loan`) what the write side's shares exceed
    /// `held()`, what it holds now. Returns the bytes lent, if it lent.
    pub fn maybe_lend(
        &self,
        now: Instant,
        held: impl FnOnce() -> u64,
        set_loan: impl Fn(u64),
    ) -> Option<u64> {
        if self.lendable_bytes == 0 || self.lent_bytes() > 0 {
            return None;
        }
        let mut state = self.state.lock();
        let activity = self.activity.load(Ordering::SeqCst);
        if state.0 != activity {
            *state = (activity, now);
            return None;
        }
        if now.saturating_duration_since(state.1) < LOAN_IDLE {
            return None;
        }
        let loan = self.lendable_bytes.saturating_sub(held());
        if loan < LOAN_BYTES_MIN {
            return None;
        }
        set_loan(loan);
        self.lent_bytes.store(loan, Ordering::SeqCst);
        if self.activity.load(Ordering::SeqCst) != activity {
            // A taker came in after the idle check and may not have seen the loan.
            self.call_back(set_loan);
            return None;
        }
        Some(loan)
    }

    /// The bytes lent now.
    pub fn lent_bytes(&self) -> u64 {
        self.lent_bytes.load(Ordering::SeqCst)
    }
}

/// Asks the allocator to return the memory it holds free to the system (glibc's
/// `malloc_trim`: the top of each heap, and whole free pages inside them), so that
/// memory the write side freed is not still resident when it is lent to the block
/// cache. Elsewhere it does nothing: other allocators return memory on their own
/// terms.
pub(crate) fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and has no precondition; glibc locks each
    // arena while it trims it, so it is safe with other threads allocating.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What the engine holds in memory by use, in bytes (`Db::memory_usage`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// The index: block cache, pinned indexes and filters, memtables.
    pub index: hashkv_lsm::MemoryUsage,
    /// Writes in the write cache (the active map and one being flushed), as the cache
    /// counts them (key, value and 128 bytes per entry: its hash-map slot and the
    /// allocator's headers).
    pub write_cache_bytes: u64,
    /// Free aligned buffers kept for the next flush or GC.
    pub buffer_pool_bytes: u64,
    /// Free aligned buffers kept for the next value reads: working memory outside
    /// the budget, at most `READ_BUFFER_POOL_BYTES` (1 MiB).
    pub read_buffer_bytes: u64,
    /// Values in the value cache, with their entries.
    pub value_cache_bytes: u64,
    /// The write side's unused shares lent to the block cache while writes are idle
    /// (`index.block_cache_capacity_bytes` includes them).
    pub block_cache_loan_bytes: u64,
}

impl MemoryUsage {
    /// Everything the budget covers.
    pub fn total_bytes(&self) -> u64 {
        self.index.total_bytes()
            + self.write_cache_bytes
            + self.buffer_pool_bytes
            + self.value_cache_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_split_whole_and_without_it_the_options_rule() {
        let mib = 1u64 << 20;
        let o = Options::default().with_memory_budget_bytes(64 * mib);
        let s = MemorySplit::of(&o);
        let held = s.block_cache_bytes
            + s.memtable_bytes * hashkv_lsm::MEMTABLES_HELD_MAX as u64
            + s.write_cache_bytes * WRITE_CACHE_COPIES
            + s.value_cache_bytes;
        assert!(
            held <= 64 * mib && held > 63 * mib,
            "{held} of {}",
            64 * mib
        );
        let plain = MemorySplit::of(&Options::default());
        assert_eq!(
            plain.write_cache_bytes,
            Options::default().write_cache_bytes
        );
        assert_eq!(plain.value_cache_bytes, 0);
        let w = Options::default().write_cache_bytes;
        assert_eq!(
            plain.buffer_pool_bytes,
            (FLUSH_BUFFERS_PER_CACHE * w).max(BUFFER_POOL_BYTES_MIN)
        );
        let small = MemorySplit::of(&Options::default().with_write_cache_bytes(1 << 20));
        assert_eq!(small.buffer_pool_bytes, BUFFER_POOL_BYTES_MIN);
    }

    #[test]
    fn the_loan_waits_for_idle_writes_lends_what_is_unused_and_comes_back() {
        let mib = 1u64 << 20;
        let split = MemorySplit::of(&Options::default().with_memory_budget_bytes(64 * mib));
        let lendable = split.write_side_bytes();
        assert!(lendable > 30 * mib, "{lendable}");
        let loan = Loan::new(&split, true);
        let lent = std::cell::Cell::new(None);
        let set = |b| lent.set(Some(b));
        let t0 = Instant::now();
        // Activity restarts the clock; idle for less than LOAN_IDLE: nothing.
        loan.take_back(set);
        assert_eq!(loan.maybe_lend(t0, || 0, set), None);
        assert_eq!(loan.maybe_lend(t0 + LOAN_IDLE / 2, || 0, set), None);
        loan.take_back(set);
        assert_eq!(loan.maybe_lend(t0 + LOAN_IDLE, || 0, set), None);
        assert_eq!(
            loan.maybe_lend(t0 + LOAN_IDLE + LOAN_IDLE / 2, || 0, set),
            None
        );
        assert_eq!(lent.get(), None);
        // Idle long enough: what the write side does not hold is lent, once.
        let held = 10 * mib;
        let now = t0 + 3 * LOAN_IDLE;
        assert_eq!(loan.maybe_lend(now, || held, set), Some(lendable - held));
        assert_eq!(lent.get(), Some(lendable - held));
        assert_eq!(loan.lent_bytes(), lendable - held);
        assert_eq!(loan.maybe_lend(now + LOAN_IDLE, || held, set), None);
        // The next write takes it back, once.
        loan.take_back(set);
        assert_eq!((lent.get(), loan.lent_bytes()), (Some(0), 0));
        lent.set(None);
        loan.take_back(set);
        assert_eq!(lent.get(), None, "nothing out, nothing to take back");
        // A taker that comes in while the lender decides (here: inside `held`) makes
        // the lender take its loan back itself.
        let later = now + 10 * LOAN_IDLE;
        assert_eq!(loan.maybe_lend(later, || 0, set), None, "activity seen");
        let racing = || {
            loan.activity.fetch_add(1, Ordering::SeqCst);
            held
        };
        assert_eq!(loan.maybe_lend(later + 2 * LOAN_IDLE, racing, set), None);
        assert_eq!((lent.get(), loan.lent_bytes()), (Some(0), 0));
        // A write side that holds nearly all of its shares lends nothing.
        let much_later = later + 10 * LOAN_IDLE;
        assert_eq!(loan.maybe_lend(much_later, || lendable, set), None);
        assert_eq!(
            loan.maybe_lend(much_later + 2 * LOAN_IDLE, || lendable, set),
            None
        );
        // Without a budget nothing is ever lent.
        let plain = Loan::new(&split, false);
        assert_eq!(plain.maybe_lend(t0, || 0, set), None);
        assert_eq!(plain.maybe_lend(much_later, || 0, set), None);
    }
}
