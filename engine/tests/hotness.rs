//! Hot/cold separation in the hashkv mode: values that outlive many typical lifetimes
//! move to the cold data log at GC, an update brings them back, a cold GC moves the
//! cold log's live records without an index lookup, and nothing stale or deleted ever
//! reads back, before or after a reopen.

mod common;

use common::{key, small_options, value, KIB, MIB};
use hashkv::{Db, Options};
use hashkv_blockdev::sim::{SimConfig, SimDevice};
use std::sync::Arc;

const DEVICE_BYTES: u64 = 16 * MIB;
const VALUE_BYTES: usize = 1000;
/// Keys loaded once; a few of them are then updated over and over.
const KEYS: u32 = 2000;
const HOT_KEYS: u32 = 50;
/// Rounds of hot updates at most, while waiting for a demotion.
const ROUNDS_MAX: u32 = 400;

fn options() -> Options {
    small_options()
        .with_write_cache_bytes(16 * KIB)
        .with_hotness(true)
}

struct Store {
    dev: Arc<SimDevice>,
    dir: tempfile::TempDir,
    db: Db,
    /// Current version of each key (`None`: deleted).
    versions: Vec<Option<u32>>,
    rounds: u32,
}

impl Store {
    fn new(seed: u64) -> Store {
        let dev = Arc::new(SimDevice::new(SimConfig::new(DEVICE_BYTES, seed)).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let db = Db::format_device(dev.clone(), dir.path(), &options()).unwrap();
        let mut s = Store {
            dev,
            dir,
            db,
            versions: vec![None; KEYS as usize],
            rounds: 0,
        };
        for k in 0..KEYS {
            s.put(k);
        }
        s.db.flush().unwrap();
        s
    }

    fn put(&mut self, k: u32) {
        let v = self.versions[k as usize].map_or(0, |v| v + 1);
        self.db.put(&key(k), &value(k, v, VALUE_BYTES)).unwrap();
        self.versions[k as usize] = Some(v);
    }

    fn check(&self, k: u32) {
        let got = self.db.get(&key(k)).unwrap();
        let want = self.versions[k as usize].map(|v| value(k, v, VALUE_BYTES));
        assert_eq!(got, want, "key {k} after {} rounds", self.rounds);
    }

    fn check_all(&self) {
        for k in 0..KEYS {
            self.check(k);
        }
    }

    fn region(&self, k: u32) -> Option<&'static str> {
        self.db.value_region(&key(k)).unwrap()
    }

    /// Updates the hot keys and collects garbage (the victim GC picks and `k`'s own
    /// group, which the victim choice may never pick: its write volume is small) until
    /// `k` is in `region` (after a flush); checks `k` on the way.
    fn churn_until(&mut self, k: u32, region: &str) {
        while self.rounds < ROUNDS_MAX {
            self.db.flush().unwrap();
            if self.region(k) == Some(region) {
                return;
            }
            self.rounds += 1;
            for h in 0..HOT_KEYS {
                self.put(KEYS - 1 - h);
            }
            self.db.collect_garbage().unwrap();
            self.db.collect_group_of(&key(k)).unwrap();
            self.check(k);
        }
        panic!(
            "key {k} not in the {region} after {ROUNDS_MAX} rounds: {:?}",
            self.db.stats()
        );
    }

    /// Churns until the cold log holds at least `bytes`.
    fn cold_log_at_least(&mut self, bytes: u64) {
        while self.db.stats().cold_log_bytes < bytes {
            assert!(self.rounds < ROUNDS_MAX, "{:?}", self.db.stats());
            self.rounds += 1;
            for h in 0..HOT_KEYS {
                self.put(KEYS - 1 - h);
            }
            self.db.collect_garbage().unwrap();
        }
    }

    /// Churns until some key among `candidates` is in the cold log; returns it.
    fn some_cold(&mut self, candidates: std::ops::Range<u32>) -> u32 {
        while self.rounds < ROUNDS_MAX {
            self.db.flush().unwrap();
            if let Some(k) = candidates
                .clone()
                .find(|&k| self.region(k) == Some("cold log"))
            {
                return k;
            }
            self.rounds += 1;
            for h in 0..HOT_KEYS {
                self.put(KEYS - 1 - h);
            }
            self.db.collect_garbage().unwrap();
        }
        panic!("no key of {candidates:?} went cold: {:?}", self.db.stats());
    }

    fn reopen(&mut self) {
        self.reopen_with(&options());
    }

    /// Closes the store and opens it again with `o`.
    fn reopen_with(&mut self, o: &Options) {
        self.close_now();
        self.db = Db::open_device(self.dev.clone(), self.dir.path(), o).unwrap();
    }

    /// Closes the store, leaving an empty stand-in in its place until it is opened
    /// again.
    fn close_now(&mut self) {
        let placeholder = Db::format_device(
            Arc::new(SimDevice::new(SimConfig::new(DEVICE_BYTES, 0)).unwrap()),
            tempfile::tempdir().unwrap().path(),
            &options(),
        )
        .unwrap();
        std::mem::replace(&mut self.db, placeholder)
            .close()
            .unwrap();
    }
}

/// A key goes cold, an update makes it hot, it goes cold again and hot again; every
/// read returns its newest value, and so does every key after a reopen.
#[test]
fn cold_hot_cold_hot() {
    let mut s = Store::new(1);
    let k = s.some_cold(0..KEYS - HOT_KEYS);
    s.churn_until(k, "cold log");
    assert!(s.db.stats().demotions > 0);
    s.put(k);
    s.db.flush().unwrap();
    assert_eq!(s.region(k), Some("group"), "an update brings it back");
    s.check(k);
    s.churn_until(k, "cold log");
    s.check(k);
    s.put(k);
    s.db.flush().unwrap();
    assert_eq!(s.region(k), Some("group"));
    s.check_all();
    let stats = s.db.stats();
    assert!(stats.promotions > 0 || stats.demotions > 1, "{stats:?}");
    assert_eq!(stats.gc_index_lookups, 0, "hashkv GC looks nothing up");
    let report = s.db.check().unwrap();
    assert!(report.is_clean(), "{:?}", report.damage);
    s.reopen();
    s.check_all();
    assert!(s.db.check().unwrap().is_clean());
}

/// A cold key is deleted, then its cold segment is collected before its group is:
/// the cold GC still believes the record live and copies it, with a relocation tag
/// behind the tombstone in the group. The key must stay deleted, before and after
/// the group's GC, and after a reopen.
#[test]
fn deleted_cold_key_never_comes_back() {
    let mut s = Store::new(2);
    let k = s.some_cold(0..KEYS - HOT_KEYS);
    // More demotions, so that k's segment is no longer the cold log's head.
    s.cold_log_at_least(256 * KIB);
    let (region, segment) = s.db.value_unit(&key(k)).unwrap().unwrap();
    assert_eq!(region, "cold log");
    s.db.delete(&key(k)).unwrap();
    s.versions[k as usize] = None;
    s.db.flush().unwrap();
    s.check(k);
    // k's own segment, while its group has not seen the delete yet.
    assert!(
        s.db.collect_cold_garbage(Some(segment)).unwrap(),
        "k's cold segment {segment} was not collected: {:?}",
        s.db.stats()
    );
    s.check(k);
    while s.db.collect_cold_garbage(None).unwrap() {
        s.check(k);
        if s.db.stats().cold_gc_runs >= 8 {
            break;
        }
    }
    s.check(k);
    s.reopen();
    s.check(k);
    for _ in 0..40 {
        s.db.collect_garbage().unwrap();
        s.check(k);
    }
    s.check_all();
    assert!(s.db.check().unwrap().is_clean());
    s.reopen();
    s.check_all();
    let stats = s.db.stats();
    assert_eq!(stats.gc_index_lookups, 0);
}

/// Cold GCs move live cold records and the groups then point the index at the
/// copies; evacuated segments are freed once their groups are collected. Values stay
/// right throughout, with hotness switched off at a reopen too.
#[test]
fn cold_gc_moves_live_records_and_frees_segments() {
    let mut s = Store::new(3);
    s.cold_log_at_least(512 * KIB);
    // Update some cold keys: their cold records die when their groups are collected.
    let cold: Vec<u32> = (0..KEYS - HOT_KEYS)
        .filter(|&k| s.region(k) == Some("cold log"))
        .collect();
    assert!(cold.len() > 100, "{} cold keys", cold.len());
    for &k in cold.iter().step_by(3) {
        s.put(k);
    }
    for _ in 0..30 {
        for h in 0..HOT_KEYS {
            s.put(KEYS - 1 - h);
        }
        s.db.collect_garbage().unwrap();
        s.db.collect_cold_garbage(None).unwrap();
    }
    s.db.flush().unwrap();
    let stats = s.db.stats();
    assert!(stats.cold_gc_runs > 0, "{stats:?}");
    assert!(stats.cold_live_bytes <= stats.cold_log_bytes);
    s.check_all();
    assert!(s.db.check().unwrap().is_clean());
    // Hotness off at open: cold values stay readable and collectable.
    s.reopen_with(&options().with_hotness(false));
    let demotions_before = s.db.stats().demotions;
    for _ in 0..20 {
        for h in 0..HOT_KEYS {
            s.put(KEYS - 1 - h);
        }
        s.db.collect_garbage().unwrap();
        s.db.collect_cold_garbage(None).unwrap();
    }
    assert_eq!(s.db.stats().demotions, demotions_before);
    s.check_all();
    assert!(s.db.check().unwrap().is_clean());
}

/// A cold log entry in the index that names a bad segment (one a group's chain holds,
/// or one past the device's end) is reported as corruption at open, not a panic; with
/// the entry gone the store opens again.
#[test]
fn a_cold_entry_naming_a_bad_segment_is_refused_at_open() {
    let mut s = Store::new(7);
    s.cold_log_at_least(1);
    // A segment some group's chain holds: the first value found in a group.
    let in_chain = (0..s.versions.len() as u32)
        .find_map(|k| match s.db.value_unit(&key(k)).unwrap() {
            Some(("group", unit)) => Some(unit),
            _ => None,
        })
        .expect("a value in a group");
    let (dev, dir) = (s.dev.clone(), s.dir.path().to_path_buf());
    s.db.close().unwrap();
    let open_index = || hashkv_lsm::Db::open(&dir, hashkv_lsm::Options::default()).unwrap();
    let wo = hashkv_lsm::WriteOptions { sync: true };
    // A real cold entry's bytes (checksummed, right version) under a bad segment id.
    let prefix = [0u8, b'c'];
    let index = open_index();
    let (_, entry) = first_cold_entry(&index);
    index.close().unwrap();
    for bad in [in_chain, u32::MAX - 1] {
        let mut k = prefix.to_vec();
        k.extend_from_slice(&bad.to_be_bytes());
        let index = open_index();
        index.put(&k, &entry, &wo).unwrap();
        index.close().unwrap();
        let err = Db::open_device(dev.clone(), &dir, &options())
            .err()
            .unwrap_or_else(|| panic!("segment {bad}: opened"));
        assert!(err.to_string().contains("cold log"), "segment {bad}: {err}");
        let index = open_index();
        index.delete(&k, &wo).unwrap();
        index.close().unwrap();
    }
    Db::open_device(dev, &dir, &options())
        .unwrap()
        .close()
        .unwrap();
}

/// fsck checks the cold log against the groups: a cold record whose bytes rotted on the
/// device, and a cold segment entry whose live count disagrees with the tags that name
/// its records, are both reported (the entry re-sealed with a valid checksum, so only
/// the cross-check can catch it).
#[test]
fn fsck_reports_a_damaged_cold_record_and_a_wrong_live_count() {
    let mut s = Store::new(11);
    let cold = s.some_cold(0..KEYS - HOT_KEYS);
    s.db.flush().unwrap();
    assert!(s.db.check().unwrap().is_clean());
    let report_of = |db: &Db| db.check().unwrap().damage.join("\n");

    // 1. The live count: one record's bytes fewer than the tags name.
    let (dev, dir) = (s.dev.clone(), s.dir.path().to_path_buf());
    s.close_now();
    let index = hashkv_lsm::Db::open(&dir, hashkv_lsm::Options::default()).unwrap();
    let (entry_key, entry) = first_cold_entry(&index);
    // FORMAT.md: version u8, epoch u32, used bytes u64, live bytes u64, ..., crc32c.
    let mut damaged = entry.to_vec();
    let live_at = 1 + 4 + 8;
    let live = u64::from_le_bytes(damaged[live_at..live_at + 8].try_into().unwrap());
    assert!(live > 0, "the first cold segment holds live records");
    damaged[live_at..live_at + 8].copy_from_slice(&(live - 1).to_le_bytes());
    let sealed = damaged.len() - 4;
    let crc = crc32c::crc32c(&damaged[..sealed]);
    damaged[sealed..].copy_from_slice(&crc.to_le_bytes());
    let wo = hashkv_lsm::WriteOptions { sync: true };
    index.put(&entry_key, &damaged, &wo).unwrap();
    index.close().unwrap();
    s.db = Db::open_device(dev.clone(), &dir, &options()).unwrap();
    let report = report_of(&s.db);
    assert!(
        report.contains(&format!("{} live bytes counted", live - 1)),
        "{report}"
    );
    s.close_now();
    let index = hashkv_lsm::Db::open(&dir, hashkv_lsm::Options::default()).unwrap();
    index.put(&entry_key, &entry, &wo).unwrap();
    index.close().unwrap();
    s.db = Db::open_device(dev.clone(), &dir, &options()).unwrap();
    assert!(s.db.check().unwrap().is_clean());

    // 2. The cold key's record rots on the device (every copy of its value bytes, so
    // that whichever the tag names is hit).
    let v = value(cold, s.versions[cold as usize].unwrap(), VALUE_BYTES);
    let image = dev.peek(0, DEVICE_BYTES as usize).unwrap();
    let copies: Vec<usize> = image
        .windows(64)
        .enumerate()
        .filter(|(_, w)| *w == &v[..64])
        .map(|(at, _)| at)
        .collect();
    assert!(!copies.is_empty(), "the cold value on the device");
    for at in copies {
        dev.corrupt_bit(at as u64 + 100, 3).unwrap();
    }
    let report = report_of(&s.db);
    assert!(
        report.contains(&format!(
            "cold record of key {:?}",
            String::from_utf8_lossy(&key(cold))
        )),
        "{report}"
    );
}

/// The first cold segment entry in the index (key `0x00 'c' segment`), key and value.
fn first_cold_entry(index: &hashkv_lsm::Db) -> (Vec<u8>, Vec<u8>) {
    let (k, v) = index
        .range(
            std::ops::Bound::Included(&[0u8, b'c'][..]),
            std::ops::Bound::Excluded(&[0u8, b'd'][..]),
            hashkv_lsm::Direction::Forward,
            None,
        )
        .unwrap()
        .next()
        .expect("a cold segment entry")
        .unwrap();
    (k.to_vec(), v.to_vec())
}
