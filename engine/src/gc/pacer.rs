//! Write pacing: while free space is in the low-water band, user writes are slowed
//! to the rate at which GC frees space, so that the band is never used up and no
//! writer waits for a whole GC.
//!
//! Without pacing, writers ran at full speed until the flushes found no room, then
//! every writer waited for a GC of a whole group (hashkv) or log chunk (vlog): a
//! second or more with no write completing, the stalls of the bench's plot. A GC
//! frees space only when it ends, so the band is wide enough for writes to go on
//! during one (`GcDriver::new`).
//!
//! The rate: GC's recent net freeing rate (bytes freed per second of GC, averaged over
//! recent GCs), divided by the device bytes a user byte costs (the write cache absorbs
//! rewrites of hot keys; records have headers; measured over recent flushes, so that it
//! follows a change of workload within a second), times a factor that rises with the
//! headroom: 0.5 with the band empty, 1.0 at half the band (where free space holds
//! still), 1.5 at its top. Free space so settles near the middle of the band instead
//! of running out. Above the band nothing is paced. A flush that finds no room still
//! runs GC itself (`flush.rs`): pacing makes that rare, it does not replace it.
//!
//! Before the store's first GC (and after a reopen) there is no GC rate to follow:
//! the flushes' device bandwidth stands in for it, divided by
//! `FLUSH_RATE_PER_GC_RATE`. Unpaced, writes ran into the floor and waited for the
//! first GC (the bench's update1: a second at a fifth of the phase's mean).
//!
//! The same pacer slows writes to the flush pipeline's rate while the pipeline is full
//! (a placed flush waits behind the one committing, `commit/pipeline.rs`) and the next
//! write cache fills (`pace_cache`). Without it, writers faster than the device filled
//! the next cache long before the oldest flush committed, and the one that filled it
//! waited for that commit in its own thread: 50-130 ms with 64 KiB values, once in a
//! few hundred writes (the 64 KiB load's p99.9), 8-27 ms once a flush's writes could
//! start beside the previous flush's. Paced, the next cache fills by the time the
//! oldest flush is expected to commit (its bytes at the pipeline's measured rate, with
//! a margin), every write waiting a little instead of one waiting for a whole flush.
//! The pipeline's rate is measured at each commit, over the time the pipeline worked
//! on the maps it released (from when the first froze, or when the maps before were
//! released if later): time with no flush in flight does not count, so writers slower
//! than the device never make it look slower. Both limits charge one account of time
//! (`paid_until`), and a write pays the larger of its two costs, not their sum.

use crate::write_cache::{CacheFill, FreezeWait};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Weight of the newest GC in the running averages: recent GCs tell the rate of the
/// next one best (a group's garbage share changes as the workload goes on), but one
/// unusual GC must not swing the rate by more than a third.
const RATE_SMOOTHING: f64 = 0.3;
/// Device bytes per user byte assumed before the first measure, and its lower bound
/// (a write cache that absorbs nearly everything must not make writes unpaced).
const DEVICE_PER_USER_DEFAULT: f64 = 1.0;
const DEVICE_PER_USER_MIN: f64 = 0.05;
/// Pacing factor at an empty band and its rise over the band (see the module comment).
const FACTOR_AT_EMPTY: f64 = 0.5;
const FACTOR_RISE: f64 = 1.0;
/// A writer sleeps only once it is this far ahead of its allowed rate: shorter sleeps
/// cost more in wake-ups than they smooth.
const SLEEP_GRANULARITY: Duration = Duration::from_millis(1);
/// Longest a single write sleeps, and the most the writes admitted may run ahead of
/// the rate (debt beyond it is forgiven): a large batch waits for its own bytes, up to
/// this, but no write waits long for others' (the flush's own GC is the backstop when
/// space does run out).
const SLEEP_MAX: Duration = Duration::from_millis(100);
/// Before any GC is measured, GC is taken to free a third (1/3) of the flushes'
/// device bandwidth: a GC reads its victim and writes back the survivors, so one
/// that finds half of what it reads dead frees half of it in the time of one and a
/// half transfers.
const FLUSH_RATE_PER_GC_RATE: f64 = 3.0;
/// Slowest allowed rate, bytes per second: a GC that freed almost nothing must not
/// stop writers by pacing (they then meet `StoreFull` or a flush's GC, as before).
const RATE_MIN_BYTES_PER_S: f64 = 1024.0 * 1024.0;
/// A flush in flight is expected to take this many times its bytes at the measured
/// drain rate, and the next cache is paced to fill by then: the device's flush time
/// varies by half from one flush to the next (27-46 ms for 16 MiB here), and a flush
/// that ends before the next cache is full costs only the moment writers take to fill
/// the rest unpaced.
const FLUSH_LATE_MARGIN: f64 = 1.5;
/// The write cache never paces writers below this share of the drain rate: past its
/// expected end a flush still drains, and one far later than expected (a GC inside it)
/// leaves writers to fill the cache and flush themselves, as without pacing.
const CACHE_FILL_RATE_FLOOR: f64 = 0.5;
/// Only flushes of at least this share of the cache's size measure the drain rate, and
/// only they pace writers: a sync write's small flush is mostly fixed costs, and would
/// make a full cache's flush look slow.
const DRAIN_MEASURED_MIN_SHARE: f64 = 0.5;

#[derive(Debug)]
pub(crate) struct Pacer {
    /// The value store's headroom (`ValueStore::headroom`) after the last flush or GC,
    /// as f64 bits: read without a lock by every write.
    headroom_bits: AtomicU64,
    state: Mutex<State>,
    /// Writes that slept, and for how long in all (microseconds): `Stats`.
    pub paced_writes: AtomicU64,
    pub paced_micros: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// Bytes GC frees per second of GC, averaged; None before the first GC.
    gc_free_bytes_per_s: Option<f64>,
    /// GCs ended since open (`note_gc`).
    gcs_done: u64,
    /// Device bytes flushes write per second of flush, averaged; None before the
    /// first flush that wrote values.
    flush_bytes_per_s: Option<f64>,
    /// Write-cache bytes a flush places, and the seconds from its map's freeze to its
    /// placement, averaged over flushes of full caches; None before the first.
    placement: Option<Measured>,
    /// Write-cache bytes the flush pipeline commits, and the seconds it works for
    /// them, averaged over commits of full caches; None before the first. Commits
    /// come in pairs, one after a long wait, one just after it: an average of each
    /// one's rate would follow the short ones, the ratio of the averages does not.
    commit: Option<Measured>,
    /// Device bytes flushed per user byte written, averaged over recent flushes.
    device_per_user: f64,
    /// The store's user bytes written, in all, at the last flush.
    user_bytes_at_last_flush: u64,
    /// When the writes admitted so far have been paid for.
    paid_until: Instant,
}

impl Pacer {
    pub fn new() -> Pacer {
        Pacer {
            headroom_bits: AtomicU64::new(f64::INFINITY.to_bits()),
            state: Mutex::new(State {
                gc_free_bytes_per_s: None,
                gcs_done: 0,
                flush_bytes_per_s: None,
                placement: None,
                commit: None,
                device_per_user: DEVICE_PER_USER_DEFAULT,
                user_bytes_at_last_flush: 0,
                paid_until: Instant::now(),
            }),
            paced_writes: AtomicU64::new(0),
            paced_micros: AtomicU64::new(0),
        }
    }

    pub fn set_headroom(&self, headroom: f64) {
        let before = f64::from_bits(
            self.headroom_bits
                .swap(headroom.to_bits(), Ordering::Relaxed),
        );
        if before < 1.0 && headroom >= 1.0 {
            // Out of the band: writes admitted before owe nothing to the next time in.
            self.state.lock().paid_until = Instant::now();
        }
    }

    /// A GC's rate has been measured since open.
    pub fn gc_measured(&self) -> bool {
        self.state.lock().gc_free_bytes_per_s.is_some()
    }

    pub fn headroom(&self) -> f64 {
        f64::from_bits(self.headroom_bits.load(Ordering::Relaxed))
    }

    /// A GC ended: it ran `elapsed` and freed `freed_bytes` net (read minus written).
    ///
    /// The second GC since open replaces the first one's rate instead of moving the
    /// average: the first GC starts above the band (`gc::FIRST_GC_START_HEADROOM`), so
    /// it runs beside unpaced writes that contend for the device, and with the index's
    /// blocks not yet cached. It measured a third to a half of the rate of the GCs after
    /// it (vlog: 3.8-4.6 MiB/s, then 8.4-10; hashkv: 27, then 65-77), and averaged in,
    /// it paced writes below what GC sustained for the next five to eight GCs (the vlog
    /// mode's update1 fell to 7-9k ops/s for seconds, where GC kept up with 20k). Not
    /// taken at all (the flushes' stand-in pacing on until the second GC), it let writes
    /// use up most of the band in the vlog mode, whose GC frees a fifth of that, and
    /// they were paced at the band's bottom for the rest of the phase.
    pub fn note_gc(&self, elapsed: Duration, freed_bytes: u64) {
        let mut s = self.state.lock();
        let sample = bytes_per_s(freed_bytes, elapsed);
        s.gcs_done += 1;
        if s.gcs_done == 2 {
            s.gc_free_bytes_per_s = Some(sample);
        } else {
            smooth_into(&mut s.gc_free_bytes_per_s, sample);
        }
    }

    /// A flush placed `device_bytes` for the value store in `elapsed` (its wait for
    /// the commit lock, its placement); `user_bytes_total` is the store's user bytes
    /// written in all, now.
    ///
    /// A flush's device bytes over the user bytes written since the last flush is one
    /// sample of the device bytes a user byte costs. The writes since the last flush
    /// went mostly into the next cache, not this one, but flushes of the same workload
    /// follow each other, and the average evens that out. Measured per GC, from the
    /// totals since the last one, the first GC of an update phase took the ratio of the
    /// load before it (1.1 device bytes per user byte where the phase's was 0.45), and
    /// paced the vlog mode's update1 to a third of the rate GC sustained for seconds.
    pub fn note_flush(&self, elapsed: Duration, device_bytes: u64, user_bytes_total: u64) {
        let mut s = self.state.lock();
        let user_bytes = user_bytes_total.saturating_sub(s.user_bytes_at_last_flush);
        s.user_bytes_at_last_flush = user_bytes_total;
        if user_bytes > 0 {
            let ratio = (device_bytes as f64 / user_bytes as f64).max(DEVICE_PER_USER_MIN);
            s.device_per_user += RATE_SMOOTHING * (ratio - s.device_per_user);
        }
        if device_bytes > 0 {
            smooth_into(&mut s.flush_bytes_per_s, bytes_per_s(device_bytes, elapsed));
        }
    }

    /// A flush placed a map of `cache_bytes` of a write cache of `cache_limit_bytes`
    /// `took` after it froze it.
    pub fn note_placed(&self, cache_bytes: u64, cache_limit_bytes: u64, took: Duration) {
        if full_flush(cache_bytes, cache_limit_bytes) {
            Measured::note(&mut self.state.lock().placement, cache_bytes, took);
        }
    }

    /// The commit thread released maps of `cache_bytes` of a write cache of
    /// `cache_limit_bytes`, which the pipeline worked on for `service`
    /// (`write_cache::Released`).
    pub fn note_release(&self, cache_bytes: u64, cache_limit_bytes: u64, service: Duration) {
        if full_flush(cache_bytes, cache_limit_bytes) {
            Measured::note(&mut self.state.lock().commit, cache_bytes, service);
        }
    }

    /// The user write rate allowed at `headroom`, bytes per second; None: unpaced.
    fn allowed_rate(s: &State, headroom: f64) -> Option<f64> {
        if headroom >= 1.0 {
            return None;
        }
        let gc_rate = s
            .gc_free_bytes_per_s
            .or_else(|| s.flush_bytes_per_s.map(|r| r / FLUSH_RATE_PER_GC_RATE))?;
        let factor = FACTOR_AT_EMPTY + FACTOR_RISE * headroom.max(0.0);
        Some((gc_rate / s.device_per_user * factor).max(RATE_MIN_BYTES_PER_S))
    }

    /// Called by a write of `user_bytes` before it enters the cache: sleeps while the
    /// writes admitted so far are ahead of the allowed rate.
    /// Returns the cost it charged, in seconds (0 when unpaced), for `pace_cache`.
    pub fn pace(&self, user_bytes: u64) -> f64 {
        let headroom = self.headroom();
        if headroom >= 1.0 {
            return 0.0;
        }
        let now = Instant::now();
        let (wait, cost) = {
            let mut s = self.state.lock();
            let Some(rate) = Self::allowed_rate(&s, headroom) else {
                return 0.0;
            };
            let cost = user_bytes as f64 / rate;
            (s.charge(now, cost), cost)
        };
        self.sleep_off(wait);
        cost
    }

    /// Called by a write that put `entry_bytes` into the cache (as the cache counts
    /// them) and left it as `fill`, unless it flushes: while the next freeze waits for
    /// a flush of a full cache, sleeps while the writes admitted so far are ahead of the
    /// rate at which the next cache fills by that flush's expected commit. `gc_charged_seconds` is
    /// what `pace` charged the same write: only the excess is charged here, so a write
    /// pays the larger of its two costs, not their sum.
    pub fn pace_cache(&self, entry_bytes: u64, fill: CacheFill, gc_charged_seconds: f64) {
        let Some(waits_for) = fill.waits_for else {
            return;
        };
        let (began, frozen_bytes) = match waits_for {
            FreezeWait::Placement { at, bytes } | FreezeWait::Commit { at, bytes } => (at, bytes),
        };
        // A sync write's small flush says nothing of when the next cache fills (it is
        // over in about its fixed costs): pacing others to it only slowed them.
        if !full_flush(frozen_bytes, fill.limit_bytes) {
            return;
        }
        let now = Instant::now();
        let wait = {
            let mut s = self.state.lock();
            let measured = match waits_for {
                FreezeWait::Placement { .. } => s.placement,
                FreezeWait::Commit { .. } => s.commit,
            };
            let Some(drain) = measured.map(Measured::bytes_per_s) else {
                return;
            };
            let flushing_for = now.saturating_duration_since(began);
            let rate = cache_fill_rate(drain, frozen_bytes, flushing_for, fill.room_bytes);
            s.charge(now, entry_bytes as f64 / rate - gc_charged_seconds)
        };
        self.sleep_off(wait);
    }

    fn sleep_off(&self, wait: Duration) {
        if wait < SLEEP_GRANULARITY {
            return;
        }
        let sleep = wait.min(SLEEP_MAX);
        std::thread::sleep(sleep);
        self.paced_writes.fetch_add(1, Ordering::Relaxed);
        self.paced_micros
            .fetch_add(sleep.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Bytes and the seconds they took, each a running average (`RATE_SMOOTHING`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Measured {
    bytes: f64,
    seconds: f64,
}

impl Measured {
    fn note(avg: &mut Option<Measured>, bytes: u64, took: Duration) {
        let sample = Measured {
            bytes: bytes as f64,
            seconds: took.as_secs_f64(),
        };
        *avg = Some(match *avg {
            None => sample,
            Some(a) => Measured {
                bytes: a.bytes + RATE_SMOOTHING * (sample.bytes - a.bytes),
                seconds: a.seconds + RATE_SMOOTHING * (sample.seconds - a.seconds),
            },
        });
    }

    fn bytes_per_s(self) -> f64 {
        self.bytes / self.seconds.max(MEASURED_SECONDS_MIN)
    }
}

impl State {
    /// Charges a write's `cost_seconds` to the account; returns how far the writes
    /// admitted are now ahead of `now`. Time not used while unpaced or idle is not
    /// saved up for a burst, and debt beyond a sleep's worth is not carried.
    fn charge(&mut self, now: Instant, cost_seconds: f64) -> Duration {
        let from = self.paid_until.max(now);
        // Debt past SLEEP_MAX is dropped below anyway; the clamp also keeps a rate of
        // 0 (an infinite cost) or NaN from reaching `from_secs_f64`, which panics.
        let cost = if cost_seconds > 0.0 {
            Duration::from_secs_f64(cost_seconds.min(SLEEP_MAX.as_secs_f64()))
        } else {
            Duration::ZERO
        };
        self.paid_until = (from + cost).min(now + SLEEP_MAX);
        self.paid_until.saturating_duration_since(now)
    }
}

/// Whether a flush of `cache_bytes` of a cache of `limit_bytes` was of a full cache
/// (`DRAIN_MEASURED_MIN_SHARE`).
fn full_flush(cache_bytes: u64, limit_bytes: u64) -> bool {
    cache_bytes as f64 >= limit_bytes as f64 * DRAIN_MEASURED_MIN_SHARE
}

/// The rate, in cache bytes per second, at which writes may fill the `room_bytes`
/// left in the next cache while a flush of `frozen_bytes` has run `flushing_for` at
/// `drain` bytes per second: the room spread over the time the flush is expected to
/// take yet, but never below the floor.
fn cache_fill_rate(drain: f64, frozen_bytes: u64, flushing_for: Duration, room_bytes: u64) -> f64 {
    let floor = drain * CACHE_FILL_RATE_FLOOR;
    let expected_seconds = frozen_bytes as f64 / drain * FLUSH_LATE_MARGIN;
    let left_seconds = expected_seconds - flushing_for.as_secs_f64();
    if left_seconds <= 0.0 {
        return floor;
    }
    (room_bytes as f64 / left_seconds).max(floor)
}

/// Shortest time a rate is measured over: a GC or flush too quick to time must not
/// make its rate infinite.
const MEASURED_SECONDS_MIN: f64 = 1e-3;

fn bytes_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64().max(MEASURED_SECONDS_MIN)
}

/// Moves the running average `avg` towards `sample` (`RATE_SMOOTHING`); the first
/// sample sets it.
fn smooth_into(avg: &mut Option<f64>, sample: f64) {
    *avg = Some(match *avg {
        None => sample,
        Some(a) => a + RATE_SMOOTHING * (sample - a),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// A full 16 MiB cache committed after a second of the pipeline's work.
    fn note_full_flush_of_a_second(p: &Pacer) {
        p.note_release(16 * MIB, 16 * MIB, Duration::from_secs(1));
    }

    #[test]
    fn unpaced_above_the_band_and_before_the_first_flush() {
        let p = Pacer::new();
        let s = p.state.lock();
        assert_eq!(Pacer::allowed_rate(&s, 0.2), None, "nothing measured yet");
        drop(s);
        p.note_gc(Duration::from_secs(1), 100 * MIB);
        let s = p.state.lock();
        assert_eq!(Pacer::allowed_rate(&s, 1.0), None);
        assert_eq!(Pacer::allowed_rate(&s, f64::INFINITY), None);
    }

    #[test]
    fn the_rate_follows_gc_and_rises_with_the_headroom() {
        let p = Pacer::new();
        // 100 MiB freed in a second; 2 user MiB cost 1 device MiB (a cache absorbing).
        p.note_flush(Duration::from_millis(100), MIB, 2 * MIB);
        p.note_gc(Duration::from_secs(1), 100 * MIB);
        let s = p.state.lock();
        let per_user = s.device_per_user;
        assert!(per_user < 1.0 && per_user > 0.5, "{per_user}");
        let at = |h: f64| Pacer::allowed_rate(&s, h).unwrap();
        let even = 100.0 * MIB as f64 / per_user;
        assert!((at(0.5) - even).abs() < 1.0, "half the band: GC's rate");
        assert!((at(0.0) - 0.5 * even).abs() < 1.0);
        assert!(at(0.9) > at(0.5) && at(0.5) > at(0.1));
        drop(s);
        // A GC that frees nothing: the rate falls, but not below the floor.
        for _ in 0..50 {
            p.note_gc(Duration::from_secs(1), 0);
        }
        let s = p.state.lock();
        assert_eq!(Pacer::allowed_rate(&s, 0.0), Some(RATE_MIN_BYTES_PER_S));
    }

    #[test]
    fn the_device_bytes_per_user_byte_follow_the_recent_flushes_not_the_whole_history() {
        let p = Pacer::new();
        // A full 16 MiB cache's flush of `device` bytes, at `user_total` bytes written.
        let flush = |device: u64, user_total: u64| {
            p.note_flush(Duration::from_millis(50), device, user_total)
        };
        // A load: 17 device bytes per 16 user bytes, 64 flushes.
        let mut user_total = 0;
        for _ in 0..64 {
            user_total += 16 * MIB;
            flush(17 * MIB, user_total);
        }
        assert!((p.state.lock().device_per_user - 17.0 / 16.0).abs() < 0.01);
        // Updates of hot keys the cache absorbs: 36 user MiB per 16 device MiB. Ten
        // flushes (about a second) later, the ratio is the updates'.
        for _ in 0..10 {
            user_total += 36 * MIB;
            flush(16 * MIB, user_total);
        }
        let per_user = p.state.lock().device_per_user;
        assert!((per_user - 16.0 / 36.0).abs() < 0.02, "{per_user}");
        // A flush with no user bytes since the last (a closing flush) is no sample.
        flush(16 * MIB, user_total);
        assert_eq!(p.state.lock().device_per_user, per_user);
    }

    #[test]
    fn before_the_first_gc_the_flushes_bandwidth_stands_in_until_a_gc_is_measured() {
        let p = Pacer::new();
        p.note_flush(Duration::from_millis(100), 0, 0);
        assert_eq!(
            Pacer::allowed_rate(&p.state.lock(), 0.5),
            None,
            "no bytes, no rate"
        );
        // 300 MiB/s of flushes: GC taken to free 100 MiB/s; at half the band, with a
        // device byte per user byte, writes get that.
        p.note_flush(Duration::from_millis(100), 30 * MIB, 30 * MIB);
        let at_half = Pacer::allowed_rate(&p.state.lock(), 0.5).unwrap();
        assert!((at_half - 100.0 * MIB as f64).abs() < 1.0, "{at_half}");
        assert_eq!(
            Pacer::allowed_rate(&p.state.lock(), 1.0),
            None,
            "above the band"
        );
        // Once a GC is measured, its rate rules.
        p.note_gc(Duration::from_secs(1), 10 * MIB);
        let at_half = Pacer::allowed_rate(&p.state.lock(), 0.5).unwrap();
        assert!((at_half - 10.0 * MIB as f64).abs() < 1.0, "{at_half}");
    }

    #[test]
    fn the_second_gc_replaces_the_first_ones_rate_and_later_ones_are_averaged_in() {
        let p = Pacer::new();
        let rate = |p: &Pacer| p.state.lock().gc_free_bytes_per_s.unwrap() / MIB as f64;
        // The first GC, slowed by unpaced writes beside it.
        p.note_gc(Duration::from_secs(3), 12 * MIB);
        assert!((rate(&p) - 4.0).abs() < 1e-9);
        p.note_gc(Duration::from_secs(1), 10 * MIB);
        assert!((rate(&p) - 10.0).abs() < 1e-9, "replaced: {}", rate(&p));
        // An unusual third GC moves the average by RATE_SMOOTHING of the difference.
        p.note_gc(Duration::from_secs(1), 0);
        assert!((rate(&p) - 10.0 * (1.0 - RATE_SMOOTHING)).abs() < 1e-9);
    }

    #[test]
    fn the_next_cache_is_paced_to_fill_when_the_flush_in_flight_is_expected_to_end() {
        let drain = 100.0 * MIB as f64;
        // 16 MiB at 100 MiB/s: 0.16 s, expected with the margin 0.24 s.
        let rate = |secs: f64, room: u64| {
            cache_fill_rate(drain, 16 * MIB, Duration::from_secs_f64(secs), room)
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1.0;
        assert!(close(rate(0.0, 16 * MIB), 16.0 * MIB as f64 / 0.24));
        // Ahead of schedule (little room early): slower; behind (much room late):
        // faster.
        assert!(close(rate(0.2, 4 * MIB), 4.0 * MIB as f64 / 0.04));
        assert!(rate(0.1, 4 * MIB) < rate(0.1, 8 * MIB));
        // Never below the floor, also past the expected end.
        assert!(close(rate(0.0, 0), drain * CACHE_FILL_RATE_FLOOR));
        assert!(close(rate(1.0, 16 * MIB), drain * CACHE_FILL_RATE_FLOOR));
    }

    #[test]
    fn only_full_flushes_measure_the_drain_and_only_a_flush_in_flight_paces() {
        let p = Pacer::new();
        let in_flight = CacheFill {
            room_bytes: 8 * MIB,
            waits_for: Some(FreezeWait::Commit {
                at: Instant::now(),
                bytes: 16 * MIB,
            }),
            limit_bytes: 16 * MIB,
        };
        // Nothing measured: unpaced.
        for _ in 0..100 {
            p.pace_cache(MIB, in_flight, 0.0);
        }
        assert_eq!(p.paced_writes.load(Ordering::Relaxed), 0);
        // A sync write's small flush, slow for its size, is not a measure.
        p.note_release(MIB, 16 * MIB, Duration::from_secs(1));
        assert_eq!(p.state.lock().commit, None);
        // A full cache drained at 16 MiB/s: 16 MiB expected to take 1.5 s, so 8 MiB
        // of room fills at no more than 8 MiB per 1.5 s. Writing 2 MiB takes at
        // least a quarter of a second.
        note_full_flush_of_a_second(&p);
        let started = Instant::now();
        for _ in 0..32 {
            p.pace_cache(64 << 10, in_flight, 0.0);
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!(p.paced_writes.load(Ordering::Relaxed) > 0);
        // No flush in flight: nothing waits.
        let slept = p.paced_writes.load(Ordering::Relaxed);
        let idle = CacheFill {
            room_bytes: 8 * MIB,
            waits_for: None,
            limit_bytes: 16 * MIB,
        };
        for _ in 0..1000 {
            p.pace_cache(MIB, idle, 0.0);
        }
        assert_eq!(p.paced_writes.load(Ordering::Relaxed), slept);
    }

    #[test]
    fn a_placement_paces_by_the_placements_rate_and_a_full_pipeline_by_the_commits() {
        let p = Pacer::new();
        // Placements of 16 MiB take 10 ms; commits come in pairs, 16 MiB after 190
        // ms of work and 16 MiB 10 ms later: 32 MiB per 200 ms.
        for _ in 0..20 {
            p.note_placed(16 * MIB, 16 * MIB, Duration::from_millis(10));
            p.note_release(16 * MIB, 16 * MIB, Duration::from_millis(190));
            p.note_release(16 * MIB, 16 * MIB, Duration::from_millis(10));
        }
        let rate = |m: Option<Measured>| m.unwrap().bytes_per_s() / MIB as f64;
        let s = p.state.lock();
        assert!((rate(s.placement) - 1600.0).abs() < 1.0);
        // The ratio of the averages, near 160 MiB/s; the average of the two rates
        // would be near 840.
        let commit = rate(s.commit);
        assert!((120.0..200.0).contains(&commit), "{commit}");
        drop(s);
        // What one 64 KiB write is charged (too little to sleep for): waiting for a
        // 16 MiB placement, 64 KiB at the floor of half the placements' rate (8 MiB of
        // room over the 15 ms expected would be faster), about 78 us; waiting for two
        // 16 MiB maps' commit, 64 KiB at half the commits' rate, about 780 us (8 MiB
        // over the 0.3 s that 32 MiB take at that rate, with the margin, would be
        // slower).
        let charged = |waits_for| {
            p.state.lock().paid_until = Instant::now();
            let before = Instant::now();
            let fill = CacheFill {
                room_bytes: 8 * MIB,
                waits_for: Some(waits_for),
                limit_bytes: 16 * MIB,
            };
            p.pace_cache(64 << 10, fill, 0.0);
            p.state.lock().paid_until.saturating_duration_since(before)
        };
        let at = Instant::now();
        let placing = charged(FreezeWait::Placement {
            at,
            bytes: 16 * MIB,
        });
        let committing = charged(FreezeWait::Commit {
            at,
            bytes: 32 * MIB,
        });
        assert!(placing < Duration::from_micros(200), "{placing:?}");
        assert!(committing > Duration::from_micros(500), "{committing:?}");
    }

    #[test]
    fn a_small_flush_does_not_pace_and_a_write_pays_the_larger_cost_not_the_sum() {
        let p = Pacer::new();
        note_full_flush_of_a_second(&p);
        // A sync write's 1 MiB flush in flight: writes go unpaced.
        let small = CacheFill {
            room_bytes: 8 * MIB,
            waits_for: Some(FreezeWait::Commit {
                at: Instant::now(),
                bytes: MIB,
            }),
            limit_bytes: 16 * MIB,
        };
        for _ in 0..100 {
            p.pace_cache(MIB, small, 0.0);
        }
        assert_eq!(p.paced_writes.load(Ordering::Relaxed), 0);
        // A full flush in flight, but GC pacing already charged each write more than
        // the cache would: nothing more is charged.
        let full = CacheFill {
            room_bytes: 8 * MIB,
            waits_for: Some(FreezeWait::Commit {
                at: Instant::now(),
                bytes: 16 * MIB,
            }),
            limit_bytes: 16 * MIB,
        };
        let before = p.state.lock().paid_until;
        for _ in 0..10 {
            p.pace_cache(64 << 10, full, 10.0);
        }
        assert!(p.state.lock().paid_until <= before.max(Instant::now()));
        assert_eq!(p.paced_writes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_cost_of_no_rate_is_one_sleep_at_most_and_never_a_panic() {
        let p = Pacer::new();
        let mut s = p.state.lock();
        let now = Instant::now();
        assert_eq!(s.charge(now, f64::INFINITY), SLEEP_MAX);
        assert!(s.charge(now, f64::NAN) <= SLEEP_MAX);
        assert!(s.charge(now, -1.0) <= SLEEP_MAX);
        assert_eq!(s.charge(now + SLEEP_MAX * 2, 0.0), Duration::ZERO);
    }

    #[test]
    fn writes_ahead_of_the_rate_sleep_and_are_counted() {
        let p = Pacer::new();
        p.note_gc(Duration::from_secs(1), 4 * MIB);
        p.set_headroom(0.5);
        // 4 MiB/s allowed: 64 KiB writes, 16 of them, are 1/4 s of writes.
        let started = Instant::now();
        for _ in 0..16 {
            p.pace(64 << 10);
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(p.paced_writes.load(Ordering::Relaxed) > 0);
        // Above the band, nothing waits.
        p.set_headroom(1.5);
        let slept = p.paced_writes.load(Ordering::Relaxed);
        for _ in 0..1000 {
            p.pace(1 << 20);
        }
        assert_eq!(p.paced_writes.load(Ordering::Relaxed), slept);
    }
}
