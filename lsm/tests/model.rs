//! Model-based test: random operations against the tree and a BTreeMap model, with
//! tiny memtables and levels so that flushes, compactions and write stalls happen
//! throughout, plus clean reopens and simulated crashes that tear or garble the WAL
//! past its last durable byte.
//!
//! Default: `MODEL_SEEDS` seeds (16) of `MODEL_OPS` operations (3000) each. A failure
//! prints its seed; rerun one with `MODEL_SEED=<n>`.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::ops::Bound;
use std::path::Path;

use hashkv_lsm::{Db, Direction, Options, Snapshot, WriteBatch, WriteOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Clone, Debug)]
enum Mutation {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

fn apply(model: &mut Model, muts: &[Mutation]) {
    for m in muts {
        match m {
            Mutation::Put(k, v) => {
                model.insert(k.clone(), v.clone());
            }
            Mutation::Delete(k) => {
                model.remove(k);
            }
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn options(rng: &mut StdRng) -> Options {
    let trigger = rng.gen_range(2..5);
    Options {
        memtable_bytes_max: rng.gen_range(4..32) << 10,
        l0_compaction_trigger: trigger,
        l0_slowdown_trigger: trigger + 2,
        l0_stop_trigger: trigger + 4,
        level_size_ratio: rng.gen_range(2..6),
        level1_bytes_max: rng.gen_range(16..128) << 10,
        table_target_bytes: rng.gen_range(4..32) << 10,
        block_bytes: rng.gen_range(128..2048),
        bloom_bits_per_key: [0, 4, 10][rng.gen_range(0..3)],
        block_cache_bytes: [0, 64 << 10, 1 << 20][rng.gen_range(0..3)],
        compaction_threads: rng.gen_range(1..3),
        table_files_open_max: [2, 8, 512][rng.gen_range(0..3)],
        ..Options::default()
    }
}

fn gen_key(rng: &mut StdRng, key_space: u32) -> Vec<u8> {
    let i = rng.gen_range(0..key_space);
    // Shared prefixes of different lengths exercise prefix compression; a few long keys
    // exercise multi-byte varints.
    match i % 4 {
        0 => format!("k{i}").into_bytes(),
        1 => format!("key/{i:06}").into_bytes(),
        2 => format!("key/{i:06}/{}", "x".repeat((i % 200) as usize)).into_bytes(),
        _ => vec![(i % 256) as u8, (i / 256) as u8],
    }
}

fn gen_value(rng: &mut StdRng) -> Vec<u8> {
    let n = if rng.gen_bool(0.05) {
        rng.gen_range(200..3000)
    } else {
        rng.gen_range(0..40)
    };
    (0..n).map(|_| rng.gen()).collect()
}

fn gen_bound(rng: &mut StdRng, key_space: u32) -> Bound<Vec<u8>> {
    match rng.gen_range(0..3) {
        0 => Bound::Unbounded,
        1 => Bound::Included(gen_key(rng, key_space)),
        _ => Bound::Excluded(gen_key(rng, key_space)),
    }
}

fn in_range(k: &[u8], lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    let above = match lo {
        Bound::Included(l) => k >= l.as_slice(),
        Bound::Excluded(l) => k > l.as_slice(),
        Bound::Unbounded => true,
    };
    let below = match hi {
        Bound::Included(h) => k <= h.as_slice(),
        Bound::Excluded(h) => k < h.as_slice(),
        Bound::Unbounded => true,
    };
    above && below
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Compares a scan with the model, reporting sizes and the first difference (not
/// thousands of keys).
fn assert_same(got: &[(Vec<u8>, Vec<u8>)], model: &Model, what: &str) {
    let expected: Vec<(Vec<u8>, Vec<u8>)> = model.clone().into_iter().collect();
    if got != expected.as_slice() {
        let i = got
            .iter()
            .zip(&expected)
            .position(|(g, e)| g != e)
            .unwrap_or(got.len().min(expected.len()));
        panic!(
            "{what}: {} entries, expected {}; first difference at {i}: got {:?}, expected {:?}",
            got.len(),
            expected.len(),
            got.get(i),
            expected.get(i)
        );
    }
}

fn full_scan(db: &Db) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.range(Bound::Unbounded, Bound::Unbounded, Direction::Forward, None)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// Damages the WAL past its durable point the way a crash may: cut it, garble a
/// stretch, or leave it whole.
fn tear_wal(rng: &mut StdRng, path: &Path, durable_bytes: u64) -> String {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if len <= durable_bytes {
        return "nothing to tear".into();
    }
    match rng.gen_range(0..3) {
        0 => "left whole".into(),
        1 => {
            let cut = rng.gen_range(durable_bytes..=len);
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap()
                .set_len(cut)
                .unwrap();
            format!("truncated {len} -> {cut} (durable {durable_bytes})")
        }
        _ => {
            let at = rng.gen_range(durable_bytes..len);
            let n = rng.gen_range(1..=(len - at).min(64));
            let garbage: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&garbage).unwrap();
            format!("garbled {n} bytes at {at} of {len} (durable {durable_bytes})")
        }
    }
}

struct Run {
    rng: StdRng,
    key_space: u32,
    options: Options,
    db: Option<Db>,
    model: Model,
    /// State at the last point everything was durable, and the mutations since, each
    /// with the sequence the tree reported after it.
    durable_model: Model,
    durable_seq: u64,
    pending: Vec<(u64, Vec<Mutation>)>,
    snapshots: Vec<(Snapshot, Model)>,
    log: Vec<String>,
    /// Flushes and compactions over all opens (the tree's counters restart at open).
    flushes: u64,
    compactions: u64,
    crashes: u64,
}

impl Run {
    fn db(&self) -> &Db {
        self.db.as_ref().expect("open")
    }

    fn count_work(&mut self) {
        let s = self.db().stats();
        self.flushes += s.flushes;
        self.compactions += s.compactions;
    }

    fn mark_durable(&mut self) {
        self.durable_model = self.model.clone();
        self.durable_seq = self.db().latest_sequence();
        self.pending.clear();
    }

    fn mutate(&mut self, muts: Vec<Mutation>, sync: bool) {
        let wo = WriteOptions { sync };
        if muts.len() == 1 && self.rng.gen_bool(0.7) {
            match &muts[0] {
                Mutation::Put(k, v) => self.db().put(k, v, &wo).unwrap(),
                Mutation::Delete(k) => self.db().delete(k, &wo).unwrap(),
            }
        } else {
            let mut b = WriteBatch::new();
            for m in &muts {
                match m {
                    Mutation::Put(k, v) => b.put(k, v),
                    Mutation::Delete(k) => b.delete(k),
                }
            }
            assert_eq!(b.len(), muts.len());
            self.db().write(&b, &wo).unwrap();
        }
        apply(&mut self.model, &muts);
        let seq = self.db().latest_sequence();
        self.pending.push((seq, muts));
        if sync {
            self.mark_durable();
        }
    }

    fn check_range(&mut self, at_snapshot: Option<usize>) {
        let lo = gen_bound(&mut self.rng, self.key_space);
        let hi = gen_bound(&mut self.rng, self.key_space);
        let dir = if self.rng.gen_bool(0.5) {
            Direction::Forward
        } else {
            Direction::Backward
        };
        let (snap, model) = match at_snapshot {
            Some(i) => (Some(&self.snapshots[i].0), &self.snapshots[i].1),
            None => (None, &self.model),
        };
        let mut expected: Vec<(Vec<u8>, Vec<u8>)> = model
            .iter()
            .filter(|(k, _)| in_range(k, &lo, &hi))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if dir == Direction::Backward {
            expected.reverse();
        }
        let it = self
            .db()
            .range(as_ref(&lo), as_ref(&hi), dir, snap)
            .unwrap();
        // Sometimes read only a prefix: iterators must stream, not precompute.
        let take = if self.rng.gen_bool(0.3) {
            self.rng.gen_range(0..5)
        } else {
            usize::MAX
        };
        let got: Vec<_> = it.take(take).collect::<Result<Vec<_>, _>>().unwrap();
        expected.truncate(take);
        if got != expected {
            let i = got
                .iter()
                .zip(&expected)
                .position(|(g, e)| g != e)
                .unwrap_or(got.len().min(expected.len()));
            panic!(
                "range {lo:?}..{hi:?} {dir:?} snapshot {at_snapshot:?}: {} entries, expected {}; \
                 first difference at {i}: got {:?}, expected {:?}",
                got.len(),
                expected.len(),
                got.get(i),
                expected.get(i)
            );
        }
    }

    fn step(&mut self, dir: &Path) {
        let r = self.rng.gen_range(0..1000);
        match r {
            0..=349 => {
                let k = gen_key(&mut self.rng, self.key_space);
                let v = gen_value(&mut self.rng);
                let sync = self.rng.gen_bool(0.05);
                self.mutate(vec![Mutation::Put(k, v)], sync);
            }
            350..=449 => {
                let k = gen_key(&mut self.rng, self.key_space);
                let sync = self.rng.gen_bool(0.05);
                self.mutate(vec![Mutation::Delete(k)], sync);
            }
            450..=519 => {
                let n = self.rng.gen_range(1..12);
                let muts = (0..n)
                    .map(|_| {
                        let k = gen_key(&mut self.rng, self.key_space);
                        if self.rng.gen_bool(0.7) {
                            Mutation::Put(k, gen_value(&mut self.rng))
                        } else {
                            Mutation::Delete(k)
                        }
                    })
                    .collect();
                let sync = self.rng.gen_bool(0.1);
                self.mutate(muts, sync);
            }
            520..=699 => {
                let k = gen_key(&mut self.rng, self.key_space);
                assert_eq!(
                    self.db().get(&k).unwrap(),
                    self.model.get(&k).cloned(),
                    "get {k:?}"
                );
            }
            700..=779 => self.check_range(None),
            780..=819 => {
                if self.snapshots.len() < 4 {
                    let s = self.db().snapshot();
                    self.snapshots.push((s, self.model.clone()));
                } else {
                    let i = self.rng.gen_range(0..self.snapshots.len());
                    self.snapshots.swap_remove(i);
                }
            }
            820..=879 => {
                if !self.snapshots.is_empty() {
                    let i = self.rng.gen_range(0..self.snapshots.len());
                    if self.rng.gen_bool(0.5) {
                        let k = gen_key(&mut self.rng, self.key_space);
                        let (s, m) = &self.snapshots[i];
                        assert_eq!(
                            self.db().get_at(&k, s).unwrap(),
                            m.get(&k).cloned(),
                            "get_at {k:?}"
                        );
                    } else {
                        self.check_range(Some(i));
                    }
                }
            }
            880..=899 => {
                self.db().sync_wal().unwrap();
                self.mark_durable();
            }
            900..=919 => {
                self.db().flush().unwrap();
                self.mark_durable();
            }
            920..=929 => {
                let a = gen_key(&mut self.rng, self.key_space);
                let b = gen_key(&mut self.rng, self.key_space);
                let (a, b) = if a <= b { (a, b) } else { (b, a) };
                let begin = self.rng.gen_bool(0.7).then_some(a);
                let end = self.rng.gen_bool(0.7).then_some(b);
                self.db()
                    .compact_range(begin.as_deref(), end.as_deref())
                    .unwrap();
                self.mark_durable();
            }
            930..=939 => {
                self.log.push("close + reopen".into());
                self.snapshots.clear();
                self.count_work();
                self.db.take().unwrap().close().unwrap();
                self.db = Some(Db::open(dir, self.options.clone()).unwrap());
                self.mark_durable();
                assert_same(&full_scan(self.db()), &self.model, "after reopen");
            }
            940..=949 => self.crash_and_recover(dir),
            _ => {
                // Bulk writes without reads, to fill memtables and levels between restarts.
                for _ in 0..self.rng.gen_range(1..40) {
                    let k = gen_key(&mut self.rng, self.key_space);
                    let v = gen_value(&mut self.rng);
                    self.mutate(vec![Mutation::Put(k, v)], false);
                }
            }
        }
    }

    fn crash_and_recover(&mut self, dir: &Path) {
        self.snapshots.clear();
        self.count_work();
        let db = self.db.take().unwrap();
        let (wal, durable_bytes) = db.wal_durable_point_for_test();
        db.crash_for_test();
        let what = tear_wal(&mut self.rng, &wal, durable_bytes);
        self.log.push(format!("crash: {what}"));
        self.crashes += 1;
        let db = Db::open(dir, self.options.clone()).unwrap();
        let seq = db.latest_sequence();
        assert!(
            seq >= self.durable_seq,
            "recovered sequence {seq} < durable {}",
            self.durable_seq
        );
        // The recovered state must be the durable state plus a prefix of the later writes,
        // ending exactly at a write boundary.
        let mut model = self.durable_model.clone();
        let mut boundary = seq == self.durable_seq;
        for (end, muts) in &self.pending {
            if *end > seq {
                break;
            }
            apply(&mut model, muts);
            boundary = *end == seq;
        }
        assert!(
            boundary,
            "recovered sequence {seq} is not a write boundary (a batch was split)"
        );
        let last = self.pending.last().map_or(self.durable_seq, |p| p.0);
        assert!(
            seq <= last,
            "recovered sequence {seq} beyond the last write {last}"
        );
        assert_same(&full_scan(&db), &model, &format!("after crash ({what})"));
        self.model = model;
        self.db = Some(db);
        self.mark_durable();
    }
}

fn run_seed(seed: u64, ops: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let options = options(&mut rng);
    let key_space = rng.gen_range(50..2000);
    let db = Db::open(tmp.path(), options.clone()).unwrap();
    let mut run = Run {
        rng,
        key_space,
        options,
        db: Some(db),
        model: Model::new(),
        durable_model: Model::new(),
        durable_seq: 0,
        pending: Vec::new(),
        snapshots: Vec::new(),
        log: Vec::new(),
        flushes: 0,
        compactions: 0,
        crashes: 0,
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for i in 0..ops {
            if run.log.len() > 8 {
                run.log.remove(0);
            }
            run.log.push(format!("op {i}"));
            run.step(tmp.path());
        }
        // Final: everything the model holds, in both directions.
        assert_same(&full_scan(run.db()), &run.model, "at the end");
        run.count_work();
        assert!(run.flushes > 0, "no flush happened");
        eprintln!(
            "seed {seed}: {ops} ops, {} keys in the model, {} flushes, {} compactions, {} crashes",
            run.model.len(),
            run.flushes,
            run.compactions,
            run.crashes
        );
    }));
    if let Err(e) = result {
        eprintln!(
            "model test failed: seed {seed} (rerun with MODEL_SEED={seed}), options {:?}, last events {:?}",
            run.options, run.log
        );
        std::panic::resume_unwind(e);
    }
}

fn seeds(offset: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("MODEL_SEED") {
        return if offset == 0 {
            vec![s.parse().expect("MODEL_SEED is a number")]
        } else {
            vec![]
        };
    }
    let n = env_usize("MODEL_SEEDS", 16) as u64;
    // Two test functions split the seeds so the harness runs them on both cores.
    (0..n)
        .filter(|s| s % 2 == offset)
        .map(|s| s.wrapping_mul(0x9e37_79b9) + 1)
        .collect()
}

#[test]
fn model_even_seeds() {
    let ops = env_usize("MODEL_OPS", 3000);
    for seed in seeds(0) {
        run_seed(seed, ops);
    }
}

#[test]
fn model_odd_seeds() {
    let ops = env_usize("MODEL_OPS", 3000);
    for seed in seeds(1) {
        run_seed(seed, ops);
    }
}
