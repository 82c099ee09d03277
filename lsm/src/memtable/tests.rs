//! The memtable against a sorted-vector model (order, snapshots, deletes, iteration both
//! ways from any start, values across chunk boundaries), its memory accounting, and
//! readers running against a writer on many threads.

use std::cmp::Ordering;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::arena::{CHUNK_WORDS_FLAT, WORD_BYTES};
use super::node::HEIGHT_MAX;
use super::{MemEntry, MemIter, Memtable};
use crate::ikey::{self, Kind};

type Entry = (Vec<u8>, Vec<u8>);

/// Short keys over a tiny alphabet with zero bytes, so that keys share prefixes, end
/// inside a word, and differ only in trailing zeros (what word padding must get right).
fn random_user_key(rng: &mut StdRng) -> Vec<u8> {
    let len = rng.gen_range(0..20);
    (0..len)
        .map(|_| [0u8, 1, b'a', 0xff][rng.gen_range(0..4)])
        .collect()
}

fn random_value(rng: &mut StdRng) -> Vec<u8> {
    let len = match rng.gen_range(0..100) {
        0 => rng.gen_range(4000..70_000),
        1..10 => 0,
        _ => rng.gen_range(1..40),
    };
    (0..len).map(|_| rng.gen()).collect()
}

/// Fills a memtable and the model (entries sorted by internal key) from `seed`: in
/// write batches of 1 to 300 entries, half of them inserted one by one.
fn filled(seed: u64, entries: usize) -> (Memtable, Vec<Entry>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mem = Memtable::new(7);
    let mut model = Vec::new();
    let mut seq = 1;
    while model.len() < entries {
        let n = rng.gen_range(1..=300).min(entries - model.len());
        let batch: Vec<(Vec<u8>, u64, Kind, Vec<u8>)> = (seq..seq + n as u64)
            .map(|seq| match rng.gen_range(0..5) {
                0 => (random_user_key(&mut rng), seq, Kind::Delete, Vec::new()),
                _ => (
                    random_user_key(&mut rng),
                    seq,
                    Kind::Put,
                    random_value(&mut rng),
                ),
            })
            .collect();
        let mut writer = mem.writer();
        if rng.gen() {
            let mut entries: Vec<MemEntry> = batch
                .iter()
                .map(|(user_key, seq, kind, value)| MemEntry {
                    user_key,
                    seq: *seq,
                    kind: *kind,
                    value,
                })
                .collect();
            writer.insert_batch(&mut entries);
        } else {
            for (user_key, seq, kind, value) in &batch {
                writer.insert(user_key, *seq, *kind, value);
            }
        }
        for (user_key, seq, kind, value) in batch {
            model.push((ikey::encode(&user_key, seq, kind), value));
        }
        seq += n as u64;
    }
    model.sort_by(|a, b| ikey::compare(&a.0, &b.0));
    (mem, model)
}

/// Every level of the list is in order and holds only nodes that tall. Searches find
/// the right entries even on a level out of order (they step right only to nodes before
/// the key, and level 0 decides), so only this catches a misplaced upper link.
fn check_levels(mem: &Memtable) {
    let mut key = Vec::new();
    for level in 0..HEIGHT_MAX {
        let mut at = mem.node(mem.head).next(level);
        let mut prev: Option<Vec<u8>> = None;
        while let Some(a) = at {
            let node = mem.node(a);
            assert!(
                node.height() > level,
                "a node of height {} on level {level}",
                node.height()
            );
            key.clear();
            node.internal_key_into(&mut key);
            if let Some(p) = &prev {
                assert!(
                    ikey::compare(p, &key).is_lt(),
                    "level {level} out of order at {key:?}"
                );
            }
            prev = Some(key.clone());
            at = node.next(level);
        }
    }
}

fn collect(mut it: MemIter) -> Vec<Entry> {
    std::iter::from_fn(|| it.step()).collect()
}

#[test]
fn entries_come_back_in_internal_key_order() {
    for seed in 0..8 {
        let (mem, model) = filled(seed, 3000);
        check_levels(&mem);
        let mut all = Vec::new();
        mem.for_each(|k, v| all.push((k.to_vec(), v.to_vec())));
        assert!(all == model, "seed {seed}: for_each differs from the model");
        assert_eq!(mem.seq_max(), 3000);
        let mem = Arc::new(mem);
        assert!(collect(MemIter::new(mem.clone(), true, None)) == model);
        let backward: Vec<Entry> = model.iter().rev().cloned().collect();
        assert!(collect(MemIter::new(mem, false, None)) == backward);
    }
}

#[test]
fn iterators_start_where_asked() {
    let (mem, model) = filled(11, 2000);
    let mem = Arc::new(mem);
    let mut rng = StdRng::seed_from_u64(12);
    for _ in 0..200 {
        let start = match rng.gen_range(0..3) {
            0 => model[rng.gen_range(0..model.len())].0.clone(),
            1 => ikey::seek_key(&random_user_key(&mut rng), rng.gen_range(0..2500)),
            _ => ikey::last_key(&random_user_key(&mut rng)),
        };
        let at = |e: &Entry| ikey::compare(&e.0, &start);
        let forward: Vec<Entry> = model
            .iter()
            .filter(|e| at(e) != Ordering::Less)
            .cloned()
            .collect();
        let backward: Vec<Entry> = model
            .iter()
            .rev()
            .filter(|e| at(e) != Ordering::Greater)
            .cloned()
            .collect();
        assert!(collect(MemIter::new(mem.clone(), true, Some(start.clone()))) == forward);
        assert!(collect(MemIter::new(mem.clone(), false, Some(start.clone()))) == backward);
    }
}

#[test]
fn get_finds_the_newest_version_at_a_snapshot() {
    let (mem, model) = filled(21, 3000);
    let mut rng = StdRng::seed_from_u64(22);
    for _ in 0..3000 {
        let user = match rng.gen_range(0..2) {
            0 => ikey::user_key(&model[rng.gen_range(0..model.len())].0).to_vec(),
            _ => random_user_key(&mut rng),
        };
        let seq = rng.gen_range(0..3100);
        let want = model
            .iter()
            .find(|(k, _)| ikey::user_key(k) == user.as_slice() && ikey::seq(k) <= seq)
            .map(|(k, v)| (ikey::kind(k), v.clone()));
        assert_eq!(mem.get(&user, seq), want, "{user:?} at {seq}");
    }
}

#[test]
fn memory_counts_every_chunk_and_grows_with_entries() {
    let mem = Memtable::new(1);
    assert!(mem.is_empty());
    let empty = mem.approx_bytes();
    let (key, value) = ([7u8; 25], [9u8; 21]);
    let mut entry_bytes = 0;
    for seq in 1..=100_000u64 {
        mem.insert(&key, seq, Kind::Put, &value);
        entry_bytes += key.len() + value.len() + ikey::TRAILER_BYTES;
    }
    let held = mem.approx_bytes();
    assert!(!mem.is_empty());
    // At least the entries themselves; at most their links and padding (less than as
    // much again) and the newest chunk's unused rest.
    assert!(empty <= 1024, "an empty memtable holds {empty} bytes");
    assert!(
        held >= entry_bytes,
        "{held} bytes held for {entry_bytes} of entries"
    );
    let chunk_bytes_max = CHUNK_WORDS_FLAT * WORD_BYTES;
    assert!(
        held <= 2 * entry_bytes + chunk_bytes_max,
        "{held} bytes held for {entry_bytes}"
    );
}

/// Writer: rounds of versions of keys 0..KEYS, value = round, sequence published after
/// each insert as the tree publishes a batch. Readers check that a get at the published
/// sequence finds exactly the newest version at or below it, and that scans in both
/// directions see entries in order with the values their sequences imply.
const KEYS: u64 = 2000;
const ROUNDS: u64 = 12;
/// More threads than the machine's 2 cores, so that readers are preempted mid-search.
const READERS: usize = 6;

#[test]
fn readers_see_consistent_entries_while_a_writer_inserts() {
    let mem = Arc::new(Memtable::new(1));
    let published = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let user_key = |k: u64| format!("key{:08}", k * 7919 % KEYS).into_bytes();
    std::thread::scope(|s| {
        for r in 0..READERS {
            let (mem, published, done) = (mem.clone(), &published, &done);
            s.spawn(move || {
                // Also while the writer goes on: levels stay ordered at every instant.
                if r == 0 {
                    while !done.load(AtomicOrdering::Acquire) {
                        check_levels(&mem);
                    }
                    return;
                }
                let mut rng = StdRng::seed_from_u64(r as u64);
                let mut checks = 0u64;
                while !done.load(AtomicOrdering::Acquire) || checks < 100 {
                    let seq = published.load(AtomicOrdering::Acquire);
                    let k = rng.gen_range(0..KEYS);
                    let want = (seq > k)
                        .then(|| (Kind::Put, ((seq - k - 1) / KEYS).to_le_bytes().to_vec()));
                    assert_eq!(mem.get(&user_key(k), seq), want, "key {k} at {seq}");
                    if checks & 63 == 0 {
                        check_scan(&mem, rng.gen(), seq, &user_key);
                    }
                    checks += 1;
                }
            });
        }
        // Batches of random size, each published once inserted, as the tree does.
        let mut rng = StdRng::seed_from_u64(99);
        let mut seq = 1;
        while seq <= KEYS * ROUNDS {
            let n = rng.gen_range(1..=500).min(KEYS * ROUNDS + 1 - seq);
            let rounds: Vec<[u8; 8]> = (seq..seq + n)
                .map(|s| ((s - 1) / KEYS).to_le_bytes())
                .collect();
            let keys: Vec<Vec<u8>> = (seq..seq + n).map(|s| user_key((s - 1) % KEYS)).collect();
            let mut entries: Vec<MemEntry> = (0..n as usize)
                .map(|i| MemEntry {
                    user_key: &keys[i],
                    seq: seq + i as u64,
                    kind: Kind::Put,
                    value: &rounds[i],
                })
                .collect();
            mem.writer().insert_batch(&mut entries);
            seq += n;
            published.store(seq - 1, AtomicOrdering::Release);
        }
        done.store(true, AtomicOrdering::Release);
    });
}

/// A scan sees every entry published before it started, in order, each with its value.
fn check_scan(
    mem: &Arc<Memtable>,
    forward: bool,
    published: u64,
    user_key: &impl Fn(u64) -> Vec<u8>,
) {
    let entries = collect(MemIter::new(mem.clone(), forward, None));
    assert!(
        entries.len() as u64 >= published,
        "{} entries, {published} published",
        entries.len()
    );
    for pair in entries.windows(2) {
        let order = ikey::compare(&pair[0].0, &pair[1].0);
        assert_eq!(
            order,
            if forward {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        );
    }
    for (k, v) in &entries {
        let seq = ikey::seq(k);
        assert_eq!(ikey::user_key(k), user_key((seq - 1) % KEYS).as_slice());
        assert_eq!(v, &((seq - 1) / KEYS).to_le_bytes());
    }
}
