//! One soak thread: mixed operations on the keys it owns, each result checked against
//! its own model as it goes. Threads own disjoint key ranges, and keys sort by index,
//! so a scan inside a thread's range sees only that thread's writes and its result is
//! known exactly even while the other threads write.

use crate::cmd::stress::values::{decode, key, key_index, mix, show_key, value};
use hashkv::{Db, WriteBatch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::ops::{Bound, Range};
use std::sync::atomic::{AtomicBool, Ordering};

/// Operations per thousand: reads and writes about even, with batches, scans and
/// now and then a durability point (which flushes the shared write cache).
const MIX_PER_MILLE: [(Kind, u32); 7] = [
    (Kind::Put, 300),
    (Kind::Get, 300),
    (Kind::Delete, 100),
    (Kind::Batch, 100),
    (Kind::Scan, 180),
    (Kind::PutSync, 10),
    (Kind::Flush, 10),
];
/// Keys per batch: 2 up to this.
const BATCH_KEYS_MAX: usize = 8;
/// Longest scan, in keys.
const SCAN_KEYS_MAX: u32 = 32;
/// Operations between looks at the stop flag.
const STOP_CHECK_EVERY_OPS: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Put,
    Get,
    Delete,
    Batch,
    Scan,
    PutSync,
    Flush,
}

pub const KINDS: [Kind; 7] = [
    Kind::Put,
    Kind::Get,
    Kind::Delete,
    Kind::Batch,
    Kind::Scan,
    Kind::PutSync,
    Kind::Flush,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Put => "put",
            Kind::Get => "get",
            Kind::Delete => "delete",
            Kind::Batch => "batch",
            Kind::Scan => "scan",
            Kind::PutSync => "put_sync",
            Kind::Flush => "flush",
        }
    }
}

/// What a thread did: operations per kind (in `KINDS` order).
pub type Counts = [u64; KINDS.len()];

/// A thread's keys and what they hold.
pub struct Owned {
    pub thread: u32,
    keys: Range<u32>,
    /// Per owned key (from `keys.start`): the version it holds.
    model: Vec<Option<u64>>,
}

pub struct Worker<'a> {
    db: &'a Db,
    pub owned: Owned,
    /// Versions are `thread << 48 | counter`: distinct across threads.
    next_version: u64,
    rng: StdRng,
    pub counts: Counts,
}

impl<'a> Worker<'a> {
    pub fn new(thread: u32, db: &'a Db, keys: Range<u32>, seed: u64) -> Worker<'a> {
        Worker {
            db,
            owned: Owned {
                thread,
                model: vec![None; keys.len()],
                keys,
            },
            next_version: u64::from(thread) << 48,
            rng: StdRng::seed_from_u64(mix(seed ^ u64::from(thread))),
            counts: [0; KINDS.len()],
        }
    }

    /// Runs until `stop` is set; an error is the first wrong result (or engine error).
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), String> {
        for n in 0.. {
            if n % STOP_CHECK_EVERY_OPS == 0 && stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let kind = self.pick();
            self.op(kind).map_err(|why| {
                format!("thread {}: {} #{n}: {why}", self.owned.thread, kind.name())
            })?;
            self.counts[KINDS.iter().position(|&k| k == kind).expect("listed")] += 1;
        }
        unreachable!("the loop ends by returning")
    }

    fn pick(&mut self) -> Kind {
        let mut pick = self.rng.gen_range(0..1000);
        for (kind, weight) in MIX_PER_MILLE {
            if pick < weight {
                return kind;
            }
            pick -= weight;
        }
        unreachable!("the weights add up to 1000")
    }

    fn some_key(&mut self) -> u32 {
        self.rng.gen_range(self.owned.keys.clone())
    }

    fn version(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    fn set(&mut self, k: u32, state: Option<u64>) {
        let at = (k - self.owned.keys.start) as usize;
        self.owned.model[at] = state;
    }

    fn expected(&self, k: u32) -> Option<u64> {
        self.owned.expected(k)
    }

    fn op(&mut self, kind: Kind) -> Result<(), String> {
        let engine = |e: hashkv::Error| e.to_string();
        match kind {
            Kind::Put | Kind::PutSync => {
                let (k, v) = (self.some_key(), self.version());
                if kind == Kind::Put {
                    self.db.put(&key(k), &value(k, v)).map_err(engine)?;
                } else {
                    self.db.put_sync(&key(k), &value(k, v)).map_err(engine)?;
                }
                self.set(k, Some(v));
            }
            Kind::Delete => {
                let k = self.some_key();
                self.db.delete(&key(k)).map_err(engine)?;
                self.set(k, None);
            }
            Kind::Batch => self.batch()?,
            Kind::Get => {
                let k = self.some_key();
                let got = self.db.get(&key(k)).map_err(engine)?;
                check_read(k, got.as_deref(), self.expected(k))?;
            }
            Kind::Scan => self.scan()?,
            Kind::Flush => self.db.flush().map_err(engine)?,
        }
        Ok(())
    }

    fn batch(&mut self) -> Result<(), String> {
        let n = self.rng.gen_range(2..=BATCH_KEYS_MAX);
        let mut batch = WriteBatch::new();
        let mut effects: Vec<(u32, Option<u64>)> = Vec::with_capacity(n);
        while effects.len() < n {
            let k = self.some_key();
            if effects.iter().any(|e| e.0 == k) {
                continue;
            }
            // Three puts to one delete.
            if self.rng.gen_range(0..4) == 0 {
                batch.delete(&key(k));
                effects.push((k, None));
            } else {
                let v = self.version();
                batch.put(&key(k), &value(k, v));
                effects.push((k, Some(v)));
            }
        }
        self.db.write(batch).map_err(|e| e.to_string())?;
        for (k, state) in effects {
            self.set(k, state);
        }
        Ok(())
    }

    fn scan(&mut self) -> Result<(), String> {
        let first = self.some_key();
        let end = first
            .saturating_add(self.rng.gen_range(1..=SCAN_KEYS_MAX))
            .min(self.owned.keys.end);
        let (lo, hi) = (key(first), key(end));
        let iter = self
            .db
            .scan(Bound::Included(&lo), Bound::Excluded(&hi))
            .map_err(|e| e.to_string())?;
        let mut expected = (first..end).filter(|&k| self.expected(k).is_some());
        for item in iter {
            let (k, v) = item.map_err(|e| e.to_string())?;
            let want = expected.next();
            if key_index(&k) != want {
                return Err(format!(
                    "scan {}..{} returned key {:?}, expected {:?}",
                    show_key(first),
                    show_key(end),
                    String::from_utf8_lossy(&k),
                    want.map(show_key)
                ));
            }
            let w = want.expect("equal to a key index");
            check_read(w, Some(&v), self.expected(w)).map_err(|why| format!("scan: {why}"))?;
        }
        if let Some(k) = expected.next() {
            return Err(format!(
                "scan {}..{} ended before key {}, which holds version {:?}",
                show_key(first),
                show_key(end),
                show_key(k),
                self.expected(k)
            ));
        }
        Ok(())
    }
}

/// Checks one read of key `k` against the version it should hold.
pub fn check_read(k: u32, got: Option<&[u8]>, expected: Option<u64>) -> Result<(), String> {
    let seen = got.map(|v| decode(k, v));
    if seen != expected.map(Ok) {
        return Err(format!(
            "key {} read {}, expected {}",
            show_key(k),
            match seen {
                None => "no value".to_string(),
                Some(Ok(v)) => format!("version {v}"),
                Some(Err(why)) => format!("a value never written ({why})"),
            },
            match expected {
                None => "no value".to_string(),
                Some(v) => format!("version {v}"),
            }
        ));
    }
    Ok(())
}

impl Owned {
    pub fn expected(&self, k: u32) -> Option<u64> {
        self.model[(k - self.keys.start) as usize]
    }

    pub fn owns(&self, k: u32) -> bool {
        self.keys.contains(&k)
    }

    pub fn keys(&self) -> Range<u32> {
        self.keys.clone()
    }

    /// Keys that hold a value.
    pub fn present(&self) -> u64 {
        self.model.iter().filter(|m| m.is_some()).count() as u64
    }
}
