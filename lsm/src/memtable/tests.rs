//! The memtable against a sorted-vector model (order, snapshots, deletes, iteration both
//! ways from any start, small and large values, batches of one entry and of hundreds),
//! its memory accounting and merging, and readers running against a writer on many
//! threads.

use std::cmp::Ordering;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{MemIter, Memtable};
use crate::ikey::{self, Kind};

type Entry = (Vec<u8>, Vec<u8>);

/// Short keys over a tiny alphabet with zero bytes, so that keys share prefixes, end
/// inside 8 bytes, and differ only in trailing zeros (what zero-padded prefixes must get
/// right); after `shared` if given (so that a run's keys share it).
fn random_user_key(rng: &mut StdRng, shared: &[u8]) -> Vec<u8> {
    let len = rng.gen_range(0..20);
    let tail = (0..len).map(|_| [0u8, 1, b'a', 0xff][rng.gen_range(0..4)]);
    shared.iter().copied().chain(tail).collect()
}

/// A key to search for among keys after `shared`: most after it, some a part of it or
/// departing from it.
fn probe_user_key(rng: &mut StdRng, shared: &[u8]) -> Vec<u8> {
    match rng.gen_range(0..8) {
        0 => shared[..rng.gen_range(0..=shared.len())].to_vec(),
        1 => random_user_key(rng, &[]),
        _ => random_user_key(rng, shared),
    }
}

/// Run both ways: keys sharing nothing, and keys sharing a prefix longer than 8 bytes.
const SHARED: [&[u8]; 2] = [b"", b"\x01user0000\x00"];

fn random_value(rng: &mut StdRng) -> Vec<u8> {
    let len = match rng.gen_range(0..100) {
        0 => rng.gen_range(4000..70_000),
        1..10 => 0,
        _ => rng.gen_range(1..40),
    };
    (0..len).map(|_| rng.gen()).collect()
}

/// Fills a memtable and the model (entries sorted by internal key) from `seed`: in
/// write batches of 1 to 300 entries, some of them single entries.
fn filled(seed: u64, entries: usize, shared: &[u8]) -> (Memtable, Vec<Entry>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mem = Memtable::new(7);
    let mut model = Vec::new();
    let mut seq = 1;
    while model.len() < entries {
        let n = match rng.gen_range(0..4) {
            0 => 1,
            _ => rng.gen_range(1..=300),
        };
        let mut writer = mem.writer();
        for _ in 0..n.min(entries - model.len()) {
            let user = random_user_key(&mut rng, shared);
            let (kind, value) = if rng.gen_range(0..5) == 0 {
                (Kind::Delete, Vec::new())
            } else {
                (Kind::Put, random_value(&mut rng))
            };
            writer.insert(&user, seq, kind, &value);
            model.push((ikey::encode(&user, seq, kind), value));
            seq += 1;
        }
    }
    model.sort_by(|a, b| ikey::compare(&a.0, &b.0));
    (mem, model)
}

fn collect(mut it: MemIter) -> Vec<Entry> {
    std::iter::from_fn(|| it.step()).collect()
}

#[test]
fn entries_come_back_in_internal_key_order() {
    for (seed, shared) in (0..8).zip(SHARED.iter().cycle()) {
        let (mem, model) = filled(seed, 3000, shared);
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
    for shared in SHARED {
        iterators_start_where_asked_with(shared);
    }
}

fn iterators_start_where_asked_with(shared: &[u8]) {
    let (mem, model) = filled(11, 2000, shared);
    let mem = Arc::new(mem);
    let mut rng = StdRng::seed_from_u64(12);
    for _ in 0..200 {
        let start = match rng.gen_range(0..3) {
            0 => model[rng.gen_range(0..model.len())].0.clone(),
            1 => ikey::seek_key(&probe_user_key(&mut rng, shared), rng.gen_range(0..2500)),
            _ => ikey::last_key(&probe_user_key(&mut rng, shared)),
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
    for shared in SHARED {
        get_finds_the_newest_version_with(shared);
    }
}

fn get_finds_the_newest_version_with(shared: &[u8]) {
    let (mem, model) = filled(21, 3000, shared);
    let mut rng = StdRng::seed_from_u64(22);
    for _ in 0..3000 {
        let user = match rng.gen_range(0..2) {
            0 => ikey::user_key(&model[rng.gen_range(0..model.len())].0).to_vec(),
            _ => probe_user_key(&mut rng, shared),
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
fn memory_counts_the_runs_and_runs_stay_few() {
    const BATCHES: u64 = 100;
    const BATCH_ENTRIES: u64 = 1000;
    let mem = Memtable::new(1);
    assert!(mem.is_empty() && mem.approx_bytes() == 0);
    let mut rng = StdRng::seed_from_u64(5);
    let mut entry_bytes = 0;
    let mut encoded_bytes = 0;
    for b in 0..BATCHES {
        let mut writer = mem.writer();
        for i in 0..BATCH_ENTRIES {
            let key: [u8; 25] = rng.gen();
            let value = [9u8; 21];
            writer.insert(&key, b * BATCH_ENTRIES + i + 1, Kind::Put, &value);
            entry_bytes += key.len() + value.len() + ikey::TRAILER_BYTES;
            // The entry's header (prefix, trailer, two lengths) and its offset.
            encoded_bytes += key.len() + value.len() + 24 + 8;
        }
    }
    let held = mem.approx_bytes();
    assert!(
        held >= entry_bytes,
        "{held} bytes held for {entry_bytes} of entries"
    );
    // Buffers grown by doubling are at most half empty.
    assert!(
        held <= 2 * encoded_bytes,
        "{held} bytes held for {encoded_bytes} encoded"
    );
    // Runs of similar size are merged: O(log n) of them.
    let runs = mem.runs().len();
    assert!(
        (1..=2 * 7).contains(&runs),
        "{runs} runs after {BATCHES} batches"
    );
    let bytes: usize = mem.runs().iter().map(|r| r.bytes()).sum();
    assert_eq!(mem.approx_bytes(), bytes);
    assert_eq!(mem.seq_max(), BATCHES * BATCH_ENTRIES);
}

/// Recovery may replay records again (a WAL copied with the next number) before it
/// finds the damage that makes it give up: the memtable stays right, without duplicates.
#[test]
fn batches_below_earlier_sequences_are_merged_in() {
    let mem = Memtable::new(1);
    mem.writer().insert(b"a", 9, Kind::Put, b"new");
    mem.writer().insert(b"b", 8, Kind::Put, b"x");
    let mut writer = mem.writer();
    writer.insert(b"a", 5, Kind::Put, b"old");
    writer.insert(b"b", 8, Kind::Put, b"x");
    drop(writer);
    assert_eq!(mem.get(b"a", 100), Some((Kind::Put, b"new".to_vec())));
    assert_eq!(mem.get(b"a", 6), Some((Kind::Put, b"old".to_vec())));
    let mut all = Vec::new();
    mem.for_each(|k, v| all.push((k.to_vec(), v.to_vec())));
    let want = vec![
        (ikey::encode(b"a", 9, Kind::Put), b"new".to_vec()),
        (ikey::encode(b"a", 5, Kind::Put), b"old".to_vec()),
        (ikey::encode(b"b", 8, Kind::Put), b"x".to_vec()),
    ];
    assert_eq!(all, want);
    assert_eq!(mem.seq_max(), 9);
}

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
                    while !done.load(AtomicOrdering::Acquire) {}
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
            let mut writer = mem.writer();
            for s in seq..seq + n {
                let (round, k) = ((s - 1) / KEYS, (s - 1) % KEYS);
                writer.insert(&user_key(k), s, Kind::Put, &round.to_le_bytes());
            }
            drop(writer);
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
