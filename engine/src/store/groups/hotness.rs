//! Hot or cold, decided at GC from record lifetimes (after SepBIT, FAST'22, which
//! infers block lifetimes in log-structured storage the same way).
//!
//! Every record carries its sequence number, and sequence numbers count user writes,
//! so a group GC sees, for each key updated since the group's last GC, how long its
//! previous version lived (`successor seq - predecessor seq`), and for each surviving
//! record how old it is (`now - seq`). The GC keeps:
//! - a value that replaced a short-lived one (lifetime below the typical lifetime L):
//!   it is likely short-lived too: hot, stays in its group;
//! - a value older than `DEMOTE_LIFETIMES * L`: it has survived many typical lifetimes:
//!   cold, moves to the cold log;
//! - anything else: hot for now.
//!
//! Hysteresis: a value that replaced a cold one (its key was promoted by an update) is
//! demoted again only past `REDEMOTE_LIFETIMES * L`, so a key updated just about as
//! often as the demotion age does not move to the cold log after every update. A cold
//! key is promoted by an update, which writes the new value to its group; nothing else
//! moves it back.
//!
//! L is one estimate for the whole store, not per group: groups are hash partitions of
//! one key space, so they see the same lifetime distribution, and a single group's GC
//! sees too few updates for a steady estimate. It is the running average (weight
//! `EWMA_WEIGHT`) of each GC's median observed lifetime. It lives in memory: after a
//! restart nothing is demoted until the first GCs have measured it again.

/// Demote a value once it is this many typical lifetimes old.
const DEMOTE_LIFETIMES: u64 = 4;
/// A value that replaced a cold one waits twice as long.
const REDEMOTE_LIFETIMES: u64 = 2 * DEMOTE_LIFETIMES;
/// Lifetime samples gathered (over one GC or several) before they move the estimate:
/// a median of fewer says little.
const SAMPLES_MIN: usize = 16;
/// Samples kept while gathering; more are not needed for a median.
const SAMPLES_MAX: usize = 4096;
/// Weight of one GC's median in the running estimate.
const EWMA_WEIGHT: f64 = 0.25;

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

#[derive(Debug, Default)]
pub struct Hotness {
    /// The typical lifetime in writes; `None` until measured.
    typical_lifetime: Option<f64>,
    /// Samples gathered since the estimate last moved.
    samples: Vec<u64>,
}

impl Hotness {
    /// Feeds one GC's observed lifetimes. Once `SAMPLES_MIN` have gathered, their
    /// median moves the estimate.
    pub fn observe(&mut self, lifetimes: &[u64]) {
        let room = SAMPLES_MAX - self.samples.len();
        self.samples.extend(lifetimes.iter().take(room));
        if self.samples.len() < SAMPLES_MIN {
            return;
        }
        let mid = self.samples.len() / 2;
        let (_, median, _) = self.samples.select_nth_unstable(mid);
        let median = *median as f64;
        self.samples.clear();
        self.typical_lifetime = Some(match self.typical_lifetime {
            None => median,
            Some(l) => l + EWMA_WEIGHT * (median - l),
        });
    }

    pub fn typical_lifetime(&self) -> Option<u64> {
        self.typical_lifetime.map(|l| l.max(1.0) as u64)
    }

    /// Where a surviving value belongs, `now` being the next sequence number.
    pub fn classify(&self, v: &Survivor, now: u64) -> Class {
        let Some(l) = self.typical_lifetime() else {
            return Class::Hot;
        };
        let age = now.saturating_sub(v.seq);
        let threshold = match v.predecessor {
            Some((p, _)) if v.seq - p < l => return Class::Hot,
            Some((_, true)) => REDEMOTE_LIFETIMES * l,
            _ => DEMOTE_LIFETIMES * l,
        };
        if age > threshold {
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
    fn classifies_by_lifetimes_with_hysteresis() {
        let mut h = Hotness::default();
        let v = Survivor {
            seq: 100,
            predecessor: None,
        };
        assert_eq!(
            h.classify(&v, 1_000_000),
            Class::Hot,
            "nothing measured yet"
        );
        h.observe(&[5; 10]);
        assert_eq!(h.typical_lifetime(), None, "too few samples");
        h.observe(&[5; 10]);
        assert_eq!(h.typical_lifetime(), Some(5), "gathered over two GCs");
        let mut h = Hotness::default();
        h.observe(&(1..=101).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(h.typical_lifetime(), Some(510));
        let l = 510;
        let at = |age: u64, predecessor| {
            let v = Survivor {
                seq: 10_000,
                predecessor,
            };
            h.classify(&v, 10_000 + age)
        };
        assert_eq!(at(4 * l - 1, None), Class::Hot);
        assert_eq!(at(4 * l + 1, None), Class::Cold);
        // Replaced a short-lived version: hot however old.
        assert_eq!(at(100 * l, Some((10_000 - l / 2, false))), Class::Hot);
        // Replaced a long-lived value: the age decides.
        assert_eq!(at(4 * l + 1, Some((10_000 - 2 * l, false))), Class::Cold);
        // Replaced a cold tag (promoted): demoted only past twice the age.
        assert_eq!(at(4 * l + 1, Some((10_000 - 2 * l, true))), Class::Hot);
        assert_eq!(at(8 * l + 1, Some((10_000 - 2 * l, true))), Class::Cold);
        // The estimate moves a quarter of the way to a new median.
        h.observe(&[1510; 20]);
        assert_eq!(h.typical_lifetime(), Some(760));
    }
}
