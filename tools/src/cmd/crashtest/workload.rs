//! The child's seeded workload: puts, overwrites, deletes, batches and durability
//! points, with gets and short scans that the child checks as it goes. Most writes go
//! to a hot fifth of the keys, so that (with --hotness on) some values outlive many
//! overwrites of their neighbours and are moved to the cold data log.

use super::oplog::{Entry, OpKind, BATCH_KEYS_MAX};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Keys of the crashtest: with values of 2.5 KiB on average (`stress::values`), about
/// 5 MiB live, a sixth of the default 32 MiB store, so the store never fills while its
/// writes wrap around it many times per cycle.
pub const KEY_COUNT: u32 = 2048;
/// Keys in the hot set (the first fifth of the key indexes, scrambled by the key
/// choice) and the share of choices that fall in it.
const HOT_KEYS: u32 = KEY_COUNT / 5;
const HOT_CHOICE_PERCENT: u32 = 80;
/// Keys per batch: 2 up to this.
const BATCH_KEYS_CHOSEN_MAX: usize = 16;
const _: () = assert!(BATCH_KEYS_CHOSEN_MAX <= BATCH_KEYS_MAX);
/// Longest scan, in keys.
const SCAN_KEYS_MAX: u32 = 32;
/// Write caches a cycle's child runs with (one per cycle, from the seed): none (every
/// write commits at once), small, and large enough to hold many writes (which a kill
/// loses unless a durability point flushed them).
const WRITE_CACHE_CHOICES_BYTES: [u64; 4] = [0, 64 << 10, 1 << 20, 4 << 20];

/// Steps per ten thousand. Durability points are 0.5%: every cycle has dozens, and
/// about 200 operations pile up in the write cache and the index between two of them
/// (a sync costs a device flush and an fsync; more often, and the child would spend
/// its time waiting for the disk instead of filling the store).
const MIX_PER_10K: [(StepKind, u32); 10] = [
    (StepKind::Write(OpKind::Put), 4700),
    (StepKind::Write(OpKind::Delete), 1200),
    (StepKind::Write(OpKind::Batch), 1250),
    (StepKind::Get, 2200),
    (StepKind::Scan, 600),
    (StepKind::Write(OpKind::PutSync), 20),
    (StepKind::Write(OpKind::DeleteSync), 10),
    (StepKind::Write(OpKind::WriteSync), 10),
    (StepKind::Write(OpKind::Flush), 5),
    (StepKind::Write(OpKind::Sync), 5),
];
const _: () = {
    let mut sum = 0;
    let mut i = 0;
    while i < MIX_PER_10K.len() {
        sum += MIX_PER_10K[i].1;
        i += 1;
    }
    assert!(sum == 10_000);
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepKind {
    Write(OpKind),
    Get,
    Scan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An operation to log and issue; each put writes version = its op id.
    Write {
        kind: OpKind,
        entries: Vec<Entry>,
    },
    Get {
        key: u32,
    },
    /// Keys `first .. first + count` (clipped to the key space).
    Scan {
        first: u32,
        count: u32,
    },
}

pub struct Workload {
    rng: StdRng,
}

impl Workload {
    /// The workload of `cycle` of a run seeded with `seed`.
    pub fn new(seed: u64, cycle: u32) -> Workload {
        let stream = crate::cmd::stress::values::mix(seed ^ (u64::from(cycle) << 40));
        Workload {
            rng: StdRng::seed_from_u64(stream),
        }
    }

    pub fn write_cache_bytes(&mut self) -> u64 {
        WRITE_CACHE_CHOICES_BYTES[self.rng.gen_range(0..WRITE_CACHE_CHOICES_BYTES.len())]
    }

    fn key(&mut self) -> u32 {
        if self.rng.gen_range(0..100) < HOT_CHOICE_PERCENT {
            // Hot keys spread over the key space (every fifth index), not bunched.
            self.rng.gen_range(0..HOT_KEYS) * (KEY_COUNT / HOT_KEYS)
        } else {
            self.rng.gen_range(0..KEY_COUNT)
        }
    }

    fn entries(&mut self, kind: OpKind) -> Vec<Entry> {
        match kind {
            OpKind::Put | OpKind::PutSync => vec![Entry {
                key: self.key(),
                put: true,
            }],
            OpKind::Delete | OpKind::DeleteSync => vec![Entry {
                key: self.key(),
                put: false,
            }],
            OpKind::Batch | OpKind::WriteSync => {
                let n = self.rng.gen_range(2..=BATCH_KEYS_CHOSEN_MAX);
                let mut entries: Vec<Entry> = Vec::with_capacity(n);
                while entries.len() < n {
                    let key = self.key();
                    if entries.iter().all(|e| e.key != key) {
                        // Three puts to one delete, as in the single operations.
                        let put = self.rng.gen_range(0..4) != 0;
                        entries.push(Entry { key, put });
                    }
                }
                entries
            }
            OpKind::Flush | OpKind::Sync => Vec::new(),
        }
    }

    pub fn next_step(&mut self) -> Step {
        let mut pick = self.rng.gen_range(0..10_000);
        let kind = MIX_PER_10K
            .iter()
            .find(|&&(_, weight)| {
                let hit = pick < weight;
                pick = pick.saturating_sub(weight);
                hit
            })
            .map(|&(kind, _)| kind)
            .expect("the weights add up to 10 000");
        match kind {
            StepKind::Write(kind) => Step::Write {
                kind,
                entries: self.entries(kind),
            },
            StepKind::Get => Step::Get { key: self.key() },
            StepKind::Scan => Step::Scan {
                first: self.rng.gen_range(0..KEY_COUNT),
                count: self.rng.gen_range(1..=SCAN_KEYS_MAX),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_and_cycle_give_the_same_steps() {
        let steps = |seed, cycle| {
            let mut w = Workload::new(seed, cycle);
            (0..500).map(|_| w.next_step()).collect::<Vec<_>>()
        };
        assert_eq!(steps(5, 2), steps(5, 2));
        assert_ne!(steps(5, 2), steps(5, 3));
        assert_ne!(steps(5, 2), steps(6, 2));
    }

    #[test]
    fn every_kind_of_step_occurs_and_batches_name_distinct_keys() {
        let mut w = Workload::new(1, 1);
        let mut kinds = std::collections::HashSet::new();
        for _ in 0..20_000 {
            match w.next_step() {
                Step::Write { kind, entries } => {
                    let mut keys: Vec<u32> = entries.iter().map(|e| e.key).collect();
                    keys.sort_unstable();
                    keys.dedup();
                    assert_eq!(keys.len(), entries.len());
                    assert!(keys.iter().all(|&k| k < KEY_COUNT));
                    kinds.insert(kind.name());
                }
                Step::Get { key } => assert!(key < KEY_COUNT),
                Step::Scan { first, count } => assert!(first < KEY_COUNT && count >= 1),
            }
        }
        assert_eq!(kinds.len(), 8, "{kinds:?}");
    }
}
