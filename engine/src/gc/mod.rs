//! When garbage collection runs, and on what. The work of a GC belongs to each mode's
//! value store (`store/groups/gc.rs`, `store/vlog/gc.rs`); this module decides when:
//! a background thread collects once free space nears the low-water band, writes are
//! paced inside it (`pacer.rs`), and a flush that finds no room collects inline
//! (`flush.rs`). One GC runs at a time.

pub(crate) mod pacer;
pub(crate) mod written_keys;

use crate::db::Inner;
use crate::error::Result;
use crate::layout::Layout;
use crate::options::Options;
use crate::stats::Counters;
use crate::store::GcOutcome;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The background GC looks at free space this often even when no flush wakes it.
const GC_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Default low-water band (GC runs and writes are paced inside it): fewer than this
/// share of the reserved segments (`Layout::reserve_segment_count`) free (1/20 = 5%)...
const LOW_WATER_SHARE_DIVISOR: usize = 20;
/// ...or fewer than this many main segments' worth: a GC frees space only when it
/// ends, and writes go on meanwhile (paced to GC's rate, up to 1.5 times it, at the
/// band's top): the band must outlast a GC of a group's chain (up to two shares, read,
/// and its survivors written) or a log chunk even at that rate. With two, flushes of
/// the default bench reached the floor and waited for whole GCs (slowest write about
/// 1 s, slowest second 0.33-0.62 of the mean); with four, 0.2-0.3 s and 0.8...
const LOW_WATER_MAIN_SEGMENTS: u64 = 4;
/// ...and never fewer than this many segments, so small stores collect before a
/// flush must wait...
const LOW_WATER_SEGMENTS_MIN: usize = 4;
/// ...but never more than this share of the reserved segments (1/4): in a small store
/// four main segments' worth may be most of the reserved space, and a band the store can never rise
/// above would pace every write and keep GC running.
const LOW_WATER_SHARE_MAX_DIVISOR: usize = 4;
/// Until a GC's rate has been measured (the store's first GC since open), the
/// background GC starts with this many bands' worth of free space still left (headroom
/// 1.5), though writes are paced only inside the band: that first GC then ends, and
/// its rate is measured, before writes enter the band. Starting at the band's top,
/// unpaced writes (twice GC's rate and more) crossed the band within the first GC,
/// pacing began near its bottom at half an estimated rate, and the bench's update1 had
/// two seconds at 0.28-0.47 of its mean (0.50-0.55 with the early first GC; README,
/// "Stalls since 54d55a6 and c35994f"). Every later GC starts at the band's top:
/// starting all of them early collected groups with less garbage (12% more GC writes
/// in update2, and a quarter less update throughput in one run).
const FIRST_GC_START_HEADROOM: f64 = 1.5;

/// What a flush's GC did.
pub(crate) enum FlushGc {
    /// One GC ran (`None`: there was nothing to collect).
    Ran(Option<GcOutcome>),
    /// Another GC of the group the flush was refused for finished since the refusal:
    /// none ran, and the flush tries again.
    CollectedMeanwhile,
}

pub(crate) struct GcDriver {
    /// Held for a whole GC: one at a time. Lock order: this, then the commit lock.
    lock: Mutex<()>,
    wake: Condvar,
    wake_lock: Mutex<()>,
    shutdown: AtomicBool,
    /// The band: GC runs (and writes are paced) when fewer free log segments' worth
    /// than this remain; the first GC since open starts a half band earlier.
    low_water_segments: usize,
    pub pacer: pacer::Pacer,
}

impl GcDriver {
    pub fn new(options: &Options, layout: &Layout) -> GcDriver {
        let low_water_segments = if options.gc_low_water_segments > 0 {
            options.gc_low_water_segments as usize
        } else {
            let gc_unit = (LOW_WATER_MAIN_SEGMENTS * layout.segments_per_main()) as usize;
            let reserved = layout.reserve_segment_count() as usize;
            (reserved / LOW_WATER_SHARE_DIVISOR)
                .max(gc_unit)
                .min(reserved / LOW_WATER_SHARE_MAX_DIVISOR)
                .max(LOW_WATER_SEGMENTS_MIN)
        };
        GcDriver {
            lock: Mutex::new(()),
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
            shutdown: AtomicBool::new(false),
            low_water_segments,
            pacer: pacer::Pacer::new(),
        }
    }

    /// Stops the background GC (after its current GC).
    pub fn stop(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        let _l = self.wake_lock.lock();
        self.wake.notify_all();
    }

    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// The band, in free log segments above the flush floor, in which GC runs and
    /// writes are paced (the first GC since open starts above it).
    pub fn low_water_segments(&self) -> usize {
        self.low_water_segments
    }

    /// Held while a GC runs; the check holds it to keep everything still.
    pub fn exclusive(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.lock.lock()
    }
}

impl Inner {
    /// Runs one GC, of `group` if given (hashkv mode) and it can be collected. `None`
    /// when there is nothing to collect.
    pub(crate) fn collect_garbage_once(&self, group: Option<u32>) -> Result<Option<GcOutcome>> {
        let _one_gc = self.gc.exclusive();
        self.collect_locked(group)
    }

    /// The GC a flush refused for `at_limit` runs: that group (its GCs finished
    /// since open as the refusal left them), unless another GC of it has finished
    /// since. Flushes run side by side and are refused for the same group at once;
    /// each collected it in turn, the second and third GC rewriting the fresh group to
    /// free nothing (with a reserve of 0.75, two GCs of three).
    pub(crate) fn collect_for_flush(&self, at_limit: Option<(u32, u64)>) -> Result<FlushGc> {
        let _one_gc = self.gc.exclusive();
        if let Some((g, generation)) = at_limit {
            if self.store.gc_generation(g) != generation {
                return Ok(FlushGc::CollectedMeanwhile);
            }
        }
        let outcome = self.collect_locked(at_limit.map(|(g, _)| g))?;
        if outcome.is_some() {
            Counters::add(&self.counters.gc_runs_in_flush, 1);
        }
        Ok(FlushGc::Ran(outcome))
    }

    /// One GC, the GC lock held.
    fn collect_locked(&self, group: Option<u32>) -> Result<Option<GcOutcome>> {
        // A GC takes buffers and writes the index: memory lent to the block cache
        // comes back first.
        self.take_back_loan();
        let started = Instant::now();
        let outcome = self.store.collect(&self.gc_ctx(), group)?;
        if let Some(o) = &outcome {
            let c = &self.counters;
            self.gc.pacer.note_gc(
                started.elapsed(),
                o.bytes_read.saturating_sub(o.bytes_written),
            );
            Counters::add(&c.gc_runs, 1);
            Counters::add(&c.gc_records_kept, o.records_kept);
            Counters::add(
                &c.gc_bytes_reclaimed,
                o.bytes_read.saturating_sub(o.bytes_written),
            );
        }
        Ok(outcome)
    }

    /// Free space is low enough for the background GC (the band, or
    /// `FIRST_GC_START_HEADROOM` before a GC is measured). Also
    /// hands the headroom to the pacer, which every write reads: called after every
    /// flush and GC, which change it.
    fn gc_wanted(&self) -> bool {
        // Space a GC released once its readers are gone counts as free (a long scan
        // that ended would otherwise keep writes paced until the next flush).
        self.store.reclaim(self.readers.oldest_active());
        let headroom = self.store.headroom(self.gc.low_water_segments);
        self.gc.pacer.set_headroom(headroom);
        let start = if self.gc.pacer.gc_measured() {
            1.0
        } else {
            FIRST_GC_START_HEADROOM
        };
        headroom < start
    }

    /// Before anything that grows the write side (a write, a flush, a GC): memory lent
    /// to the block cache comes back (`memory::Loan::take_back`).
    pub(crate) fn take_back_loan(&self) {
        self.loan
            .take_back(|bytes| self.index.set_block_cache_loan(bytes));
    }

    /// Lends the write side's unused memory to the block cache once writes, flushes
    /// and GCs have been idle for `memory::LOAN_IDLE` (`memory::Loan`). Before lending,
    /// the write cache frees the chunks it pooled for its next maps and the allocator
    /// returns what the write side freed to the system, so that the loan does not stack
    /// on memory the process still holds.
    fn lend_idle_memory(&self) {
        let held = || {
            let cache = self.cache.read();
            cache.let_go_of_pooled_memory();
            let memtables = self.index.memory_usage().memtable_bytes;
            memtables + cache.held_bytes() + self.buffers.held_bytes() as u64
        };
        self.loan.maybe_lend(Instant::now(), held, |bytes| {
            if bytes > 0 {
                crate::memory::return_freed_memory();
            }
            self.index.set_block_cache_loan(bytes);
        });
    }

    /// Wakes the GC thread if free space ran low.
    pub(crate) fn maybe_wake_gc(&self) {
        if self.gc_wanted() {
            let _l = self.gc.wake_lock.lock();
            self.gc.wake.notify_one();
        }
    }

    pub(crate) fn gc_loop(&self) {
        loop {
            {
                let mut l = self.gc.wake_lock.lock();
                if self.gc.stopping() {
                    return;
                }
                self.gc.wake.wait_for(&mut l, GC_POLL_INTERVAL);
            }
            if self.gc.stopping() {
                return;
            }
            // Lent only while GC is not wanted: each GC takes the loan back, and a GC
            // that finds nothing to collect would have it lent and evicted every poll.
            if !self.gc_wanted() {
                self.store.gc_idle(&self.counters, &self.buffers);
                self.lend_idle_memory();
                continue;
            }
            if self.committer.first_error().is_some() {
                continue;
            }
            while self.gc_wanted() && !self.gc.stopping() {
                match self.collect_garbage_once(None) {
                    Ok(Some(o)) if self.store.keep_collecting(&o) => {}
                    Ok(_) => break,
                    Err(e) => {
                        if e.is_fatal() {
                            eprintln!("hashkv: background GC failed: {e}");
                        }
                        break;
                    }
                }
            }
        }
    }
}
