//! Why the memtable is crossbeam-skiplist's SkipMap: compares it with a
//! parking_lot::RwLock<BTreeMap> under the memtable's load (one writer inserting
//! 32-byte internal keys in random order, as the write path does under its mutex, while
//! reader threads do point lookups).
//!
//! cargo run --release -p hashkv-lsm --example memtablebench -- [entries] [readers]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_skiplist::SkipMap;
use parking_lot::RwLock;

fn key(i: u64) -> Vec<u8> {
    let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    format!("user{x:020}{:08}", i).into_bytes()
}

trait Map: Send + Sync {
    fn insert(&self, k: Vec<u8>, v: Vec<u8>);
    fn get(&self, k: &[u8]) -> bool;
}

impl Map for SkipMap<Vec<u8>, Vec<u8>> {
    fn insert(&self, k: Vec<u8>, v: Vec<u8>) {
        SkipMap::insert(self, k, v);
    }
    fn get(&self, k: &[u8]) -> bool {
        SkipMap::get(self, k).is_some()
    }
}

impl Map for RwLock<BTreeMap<Vec<u8>, Vec<u8>>> {
    fn insert(&self, k: Vec<u8>, v: Vec<u8>) {
        self.write().insert(k, v);
    }
    fn get(&self, k: &[u8]) -> bool {
        self.read().contains_key(k)
    }
}

fn run(name: &str, map: Arc<dyn Map>, entries: u64, readers: usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let lookups = Arc::new(AtomicU64::new(0));
    let inserted = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..readers)
        .map(|r| {
            let (map, stop, lookups, inserted) =
                (map.clone(), stop.clone(), lookups.clone(), inserted.clone());
            std::thread::spawn(move || {
                let mut i = r as u64;
                while !stop.load(Ordering::Relaxed) {
                    let n = inserted.load(Ordering::Relaxed).max(1);
                    map.get(&key(i % n));
                    i = i.wrapping_add(7919);
                    lookups.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let t = Instant::now();
    for i in 0..entries {
        map.insert(key(i), vec![0u8; 16]);
        inserted.store(i, Ordering::Relaxed);
    }
    let d = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    println!(
        "{name:>24}: {:>9.0} inserts/s, {:>9.0} concurrent lookups/s ({readers} readers)",
        entries as f64 / d.as_secs_f64(),
        lookups.load(Ordering::Relaxed) as f64 / d.as_secs_f64()
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let entries: u64 = args
        .next()
        .map_or(1_000_000, |s| s.parse().expect("entries"));
    let readers: usize = args.next().map_or(1, |s| s.parse().expect("readers"));
    run(
        "crossbeam SkipMap",
        Arc::new(SkipMap::new()),
        entries,
        readers,
    );
    run(
        "RwLock<BTreeMap>",
        Arc::new(RwLock::new(BTreeMap::new())),
        entries,
        readers,
    );
    run("crossbeam SkipMap", Arc::new(SkipMap::new()), entries, 0);
    run(
        "RwLock<BTreeMap>",
        Arc::new(RwLock::new(BTreeMap::new())),
        entries,
        0,
    );
}
