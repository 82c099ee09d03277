//! Helpers shared by the engine's integration tests: small-store options, self-checking
//! values, a model to verify against, disk-backed test directories and loop devices.
#![allow(dead_code)]

use hashkv::{Db, Options};
use hashkv_blockdev::loop_devices::{attach_all, LoopDevice};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::PathBuf;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;

/// A small store: 256 KiB main segments, 16 KiB log segments, a small memtable so the
/// index flushes and compacts during the tests too.
pub fn small_options() -> Options {
    let mut lsm = hashkv_lsm::Options::default();
    lsm.memtable_bytes_max = 256 << 10;
    lsm.table_target_bytes = 256 << 10;
    lsm.level1_bytes_max = 1 << 20;
    Options::default()
        .with_main_segment_bytes(256 * KIB)
        .with_log_segment_bytes(16 * KIB)
        .with_write_cache_bytes(64 * KIB)
        .with_separation_threshold_bytes(64)
        .with_lsm(lsm)
}

pub fn key(i: u32) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

/// SplitMix64: a tiny deterministic generator for filler bytes.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A value that names its key and version and whose every byte follows from them, so
/// a value returned for the wrong key, an older version or a damaged one is noticed.
/// At least 8 bytes.
pub fn value(key: u32, version: u32, len: usize) -> Vec<u8> {
    let len = len.max(8);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&key.to_le_bytes());
    v.extend_from_slice(&version.to_le_bytes());
    let mut s = mix((u64::from(key) << 32) | u64::from(version));
    while v.len() < len {
        s = mix(s);
        let take = (len - v.len()).min(8);
        v.extend_from_slice(&s.to_le_bytes()[..take]);
    }
    v
}

/// The (key, version) a value claims, if every byte of it is consistent.
pub fn check_value(v: &[u8]) -> Option<(u32, u32)> {
    if v.len() < 8 {
        return None;
    }
    let k = u32::from_le_bytes(v[0..4].try_into().unwrap());
    let ver = u32::from_le_bytes(v[4..8].try_into().unwrap());
    (value(k, ver, v.len()) == v).then_some((k, ver))
}

/// What the store should hold.
pub type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Every model key reads back exactly; a full scan returns exactly the model.
pub fn verify(db: &Db, model: &Model) {
    for (k, v) in model {
        let got = db
            .get(k)
            .unwrap_or_else(|e| panic!("get {:?}: {e}", String::from_utf8_lossy(k)));
        assert!(
            got.as_deref() == Some(&v[..]),
            "key {:?}: expected {} bytes, got {:?}",
            String::from_utf8_lossy(k),
            v.len(),
            got.map(|g| g.len())
        );
    }
    let all: Vec<(Vec<u8>, Vec<u8>)> = db
        .scan(Bound::Unbounded, Bound::Unbounded)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(all.len(), model.len(), "full scan length");
    for ((k, v), (mk, mv)) in all.iter().zip(model) {
        assert_eq!(k, mk, "scan key order");
        assert!(v == mv, "scan value of {:?}", String::from_utf8_lossy(k));
    }
}

/// A fresh directory on a disk-backed filesystem (O_DIRECT fails on tmpfs): under the
/// cargo target dir.
pub fn disk_dir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).expect("target tmp dir");
    tempfile::Builder::new()
        .prefix("hashkv-engine-")
        .tempdir_in(&base)
        .expect("temp dir")
}

/// Loop devices over zero-filled backing files in a disk-backed directory.
pub struct Loops {
    // Field order: devices are detached before the directory is removed.
    pub devs: Vec<LoopDevice>,
    pub dir: tempfile::TempDir,
}

impl Loops {
    pub fn paths(&self) -> Vec<PathBuf> {
        self.devs.iter().map(|d| d.path.clone()).collect()
    }
}

/// `count` loop devices of `size` bytes each, or why they cannot be had (not root, no
/// loop driver, losetup failing).
pub fn loops(count: usize, size: u64) -> Result<Loops, String> {
    let dir = disk_dir();
    let devs = attach_all(dir.path(), &vec![(size, None); count])?;
    Ok(Loops { devs, dir })
}

/// Zipf(theta) over 0..n by inverse CDF (exact; fine for the key counts of tests),
/// scrambled by a fixed permutation so the hot keys spread over the key space.
pub struct Zipf {
    cdf: Vec<f64>,
    perm: Vec<u32>,
}

impl Zipf {
    pub fn new(n: u32, theta: f64, seed: u64) -> Zipf {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut sum = 0.0;
        for i in 1..=n {
            sum += 1.0 / f64::from(i).powf(theta);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        let mut perm: Vec<u32> = (0..n).collect();
        let mut s = seed;
        for i in (1..perm.len()).rev() {
            s = mix(s);
            perm.swap(i, (s % (i as u64 + 1)) as usize);
        }
        Zipf { cdf, perm }
    }

    /// A key index from a uniform sample u in [0, 1).
    pub fn sample(&self, u: f64) -> u32 {
        let rank = self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1);
        self.perm[rank]
    }
}
