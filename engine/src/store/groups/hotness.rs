//! Hot or cold, decided at GC from record lifetimes (after SepBIT, FAST'22, which
//! infers block lifetimes in log-structured storage the same way).
//!
//! Every record carries its sequence number, and sequence numbers count user writes,
//! so a group GC sees, for each surviving record, how old it is (`now - seq`), and for
//! each key updated since the group's last GC, how long its previous version lived.
//!
//! The typical lifetime L is SepBIT's: how long a record stays in a group before the
//! group is collected, i.e. the interval between two GCs of a group (in writes). A
//! record younger than L was written since its group's last GC; a record older than L
//! has sat through a whole GC interval without an update. The GC keeps:
//! - a value younger than `DEMOTE_LIFETIMES * L`: hot, stays in its group;
//! - a value that replaced a short-lived version (one that lived less than L), or
//!   a cold tag (its key was promoted by an update), only past `REDEMOTE_LIFETIMES *
//!   L`: hysteresis, so a key updated about as often as its group is collected does
//!   not move to the cold log and back at every GC;
//! - anything older: cold, moves to the cold log.
//!
//! Both ages are multiplied by 1 + the cold log's price: the bytes a cold GC copies
//! per byte it frees (running average, weight `EWMA_WEIGHT`, since open; 0 before
//! the first cold GC). Staying in its group costs a value one copy per group GC it
//! survives; moving costs the move, then the cold log's price for its bytes when it
//! dies there. A value past `n` intervals is taken to live about as long again
//! (SepBIT's reading of an age), so it moves once `n` exceeds 1 + the price. Without
//! the price a cold log full of lukewarm values, dying at a steady rate and so never
//! much deader in one segment than another, took demotions on while each of its GCs
//! copied three bytes per byte freed (Zipf 0.9 with a 20% reserve: update2 ran at 57
//! against 159 kops/s with it, README "Hot/cold with the cold log's price").
//!
//! A cold key is promoted by an update, which writes the new value to its group;
//! nothing else moves it back.
//!
//! Why not the median lifetime of the versions GCs find replaced (this module's first
//! estimate): in a skewed workload most updates replace values written long before,
//! at load, so that median was of the order of the whole run and nothing was ever old
//! enough to demote (measured: no demotions at Zipf 0.9 over 2 GiB).
//!
//! L is one estimate for the whole store, not per group: groups are hash partitions of
//! one key space collected in turn, so their intervals are alike, and one group is
//! collected too rarely for a steady estimate of its own. It is the running average
//! (weight `EWMA_WEIGHT`) of the intervals observed. It lives in memory. Until some
//! group has been collected twice since open, the only window observed is the
//! store's history since sequence 0: L is taken as half of it, so a value that sat
//! through its older half untouched is cold (the paper's "written once, never
//! updated" values, found at the first GCs, not two intervals later; after a restart
//! of a long-lived store this is long, so nothing moves until intervals are measured).

/// Demote a value once it has sat through this many GC intervals of its group.
const DEMOTE_LIFETIMES: u64 = 1;
/// A value that replaced a short-lived one or a cold tag waits twice as long.
const REDEMOTE_LIFETIMES: u64 = 2 * DEMOTE_LIFETIMES;
/// Before an interval is measured, the typical lifetime is this share of the store's
/// history (1/2).
const BOOTSTRAP_HISTORY_DIVISOR: u64 = 2;
/// Weight of one observed interval in the running estimate.
const EWMA_WEIGHT: f64 = 0.25;
/// The cold log's price (bytes a cold GC copies per byte it frees) is taken at most
/// this high: a victim with almost nothing dead would otherwise stop demotions for
/// good, while 16 already asks a value to have sat through 17 GC intervals.
const COLD_COPIES_PER_FREED_MAX: f64 = 16.0;

/// What GC knows of a surviving value.
#[derive(Debug, Clone, Copy)]
pub struct Survivor {
    pub seq: u64,
    /// The version it replaced, if that was still in the group: its sequence number,
    /// and whether it was a cold tag.
    pub predecessor: Option<(u64, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Hot,
    Cold,
}

#[derive(Debug)]
pub struct Hotness {
    /// The typical lifetime (GC interval) in writes; `None` until measured.
    typical_lifetime: Option<f64>,
    /// Per group, the sequence number at its last GC since open.
    last_gc_seq: Vec<Option<u64>>,
    /// Running average (weight `EWMA_WEIGHT`) of the bytes each cold GC copied per
    /// byte it freed; 0 until a cold GC ran since open.
    cold_copies_per_freed: f64,
}

impl Hotness {
    pub fn new(group_count: u32) -> Hotness {
        Hotness {
            typical_lifetime: None,
            last_gc_seq: vec![None; group_count as usize],
            cold_copies_per_freed: 0.0,
        }
    }

    /// Notes a GC of `group` at `now` (the next sequence number): the interval since
    /// its previous GC moves the estimate.
    pub fn observe_gc(&mut self, group: u32, now: u64) {
        let last = &mut self.last_gc_seq[group as usize];
        if let Some(prev) = last.replace(now) {
            let interval = now.saturating_sub(prev) as f64;
            self.typical_lifetime = Some(match self.typical_lifetime {
                None => interval,
                Some(l) => l + EWMA_WEIGHT * (interval - l),
            });
        }
    }

    /// Notes a cold GC that copied `copied_bytes` of live records to free
    /// `freed_bytes`: what the cold log charges for every byte that dies in it.
    pub fn observe_cold_gc(&mut self, copied_bytes: u64, freed_bytes: u64) {
        let ratio = match freed_bytes {
            0 => COLD_COPIES_PER_FREED_MAX,
            f => (copied_bytes as f64 / f as f64).min(COLD_COPIES_PER_FREED_MAX),
        };
        self.cold_copies_per_freed += EWMA_WEIGHT * (ratio - self.cold_copies_per_freed);
    }

    /// The measured typical lifetime, if any.
    pub fn typical_lifetime(&self) -> Option<u64> {
        self.typical_lifetime.map(|l| l.max(1.0) as u64)
    }

    /// The lifetime GC classifies by at `now`: the measured one, else half the
    /// history since sequence 0.
    fn lifetime_at(&self, now: u64) -> u64 {
        self.typical_lifetime()
            .unwrap_or(now / BOOTSTRAP_HISTORY_DIVISOR)
            .max(1)
    }

    /// Where a surviving value belongs, `now` being the next sequence number.
    pub fn classify(&self, v: &Survivor, now: u64) -> Class {
        let l = self.lifetime_at(now);
        let age = now.saturating_sub(v.seq);
        let lifetimes = match v.predecessor {
            Some((p, was_cold)) if was_cold || v.seq - p < l => REDEMOTE_LIFETIMES,
            _ => DEMOTE_LIFETIMES,
        };
        let threshold = (lifetimes * l) as f64 * (1.0 + self.cold_copies_per_freed);
        if age as f64 > threshold {
            Class::Cold
        } else {
            Class::Hot
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_gc_intervals_with_hysteresis() {
        let mut h = Hotness::new(4);
        let v = Survivor {
            seq: 100,
            predecessor: None,
        };
        // Nothing measured yet: half the history since sequence 0.
        assert_eq!(
            h.classify(&v, 150),
            Class::Hot,
            "age 50 of a history of 150"
        );
        assert_eq!(h.classify(&v, 190), Class::Hot, "age 90 of 190");
        assert_eq!(h.classify(&v, 210), Class::Cold, "age 110 of 210");
        h.observe_gc(2, 1_000);
        assert_eq!(h.typical_lifetime(), None, "one GC of a group: no interval");
        assert_eq!(h.lifetime_at(1_000), 500, "half the history meanwhile");
        h.observe_gc(1, 1_200);
        assert_eq!(h.typical_lifetime(), None);
        h.observe_gc(2, 1_500);
        assert_eq!(h.typical_lifetime(), Some(500), "group 2's interval");
        let l = 500;
        let at = |age: u64, predecessor| {
            let v = Survivor {
                seq: 10_000,
                predecessor,
            };
            h.classify(&v, 10_000 + age)
        };
        assert_eq!(at(l - 1, None), Class::Hot);
        assert_eq!(at(l + 1, None), Class::Cold);
        // Replaced a short-lived version: twice the age.
        assert_eq!(at(l + 1, Some((10_000 - l / 2, false))), Class::Hot);
        assert_eq!(at(2 * l + 1, Some((10_000 - l / 2, false))), Class::Cold);
        // Replaced a long-lived value: the age decides.
        assert_eq!(at(l + 1, Some((10_000 - 2 * l, false))), Class::Cold);
        // Replaced a cold tag (promoted): demoted only past twice the age.
        assert_eq!(at(l + 1, Some((10_000 - 2 * l, true))), Class::Hot);
        assert_eq!(at(2 * l + 1, Some((10_000 - 2 * l, true))), Class::Cold);
        // The estimate moves a quarter of the way to a new interval: group 1 again
        // after 2,500 writes.
        let mut h = h;
        h.observe_gc(1, 3_700);
        assert_eq!(h.typical_lifetime(), Some(1_000));
    }

    #[test]
    fn a_costly_cold_log_raises_the_age_that_demotes() {
        let mut h = Hotness::new(2);
        h.observe_gc(0, 1_000);
        h.observe_gc(0, 2_000);
        let l = h.typical_lifetime().unwrap();
        assert_eq!(l, 1_000);
        let at = |h: &Hotness, age: u64| {
            let v = Survivor {
                seq: 10_000,
                predecessor: None,
            };
            h.classify(&v, 10_000 + age)
        };
        assert_eq!(at(&h, l + 1), Class::Cold, "no cold GC yet: one interval");
        // A cold GC that copied 4 bytes per byte freed: the price moves a quarter of
        // the way, to 1, so a value must sit through twice the interval.
        h.observe_cold_gc(4_000, 1_000);
        assert_eq!(at(&h, 2 * l - 1), Class::Hot);
        assert_eq!(at(&h, 2 * l + 1), Class::Cold);
        // A victim with nothing dead counts at the cap, not as infinitely costly.
        let mut h2 = Hotness::new(2);
        h2.observe_gc(0, 1_000);
        h2.observe_gc(0, 2_000);
        h2.observe_cold_gc(1_000, 0);
        let price = 1.0 + EWMA_WEIGHT * COLD_COPIES_PER_FREED_MAX;
        assert_eq!(at(&h2, (price * l as f64) as u64 - 1), Class::Hot);
        assert_eq!(at(&h2, (price * l as f64) as u64 + 1), Class::Cold);
        // Cheap cold GCs (everything dead) bring the threshold back down.
        for _ in 0..40 {
            h.observe_cold_gc(0, 1_000);
        }
        assert_eq!(at(&h, l + 10), Class::Cold);
    }
}
