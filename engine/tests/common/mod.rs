//! Helpers shared by the engine's integration tests: small-store options, self-checking
//! values, a model to verify against, stores on simulated devices, one test per mode,
//! disk-backed test directories and loop devices.
#![allow(dead_code)]

pub mod history;
pub mod power;

use hashkv::{Db, Error, Layout, Options};
use hashkv_blockdev::loop_devices::{attach_all, LoopDevice};
use hashkv_blockdev::sim::{SimConfig, SimDevice};
use hashkv_blockdev::{AlignedBuf, BlockDevice, IoOp};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;

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
        .with_main_segment_bytes(SMALL_MAIN_SEGMENT_BYTES)
        .with_log_segment_bytes(SMALL_LOG_SEGMENT_BYTES)
        .with_write_cache_bytes(64 * KIB)
        .with_separation_threshold_bytes(64)
        .with_lsm(lsm)
}

/// The main segment size of `small_options`.
pub const SMALL_MAIN_SEGMENT_BYTES: u64 = 256 * KIB;
/// The log segment size of `small_options`: also the largest record.
pub const SMALL_LOG_SEGMENT_BYTES: u64 = 16 * KIB;

/// Device offsets of the two superblock copies of a store formatted with
/// `small_options` (the one place tests learn where the copies lie).
pub fn small_superblock_offsets() -> [u64; 2] {
    Layout::superblock_offsets()
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

/// Every model key reads back; a full scan holds the model and at most the `maybe`
/// keys besides (writes that were refused, whose fate the caller does not judge).
pub fn verify_allowing(db: &Db, model: &Model, maybe: &Model) {
    for (k, v) in model {
        let got = db.get(k).unwrap();
        assert!(
            got.as_deref() == Some(&v[..]),
            "acknowledged key {:?} reads back {:?}",
            String::from_utf8_lossy(k),
            got.map(|g| g.len())
        );
    }
    let mut seen = 0;
    for item in db.scan(Bound::Unbounded, Bound::Unbounded).unwrap() {
        let (k, v) = item.unwrap();
        if let Some(mv) = model.get(&k) {
            assert!(v == *mv, "scan value of {:?}", String::from_utf8_lossy(&k));
            seen += 1;
        } else {
            assert!(
                maybe.get(&k) == Some(&v),
                "scan returned unexpected key {:?}",
                String::from_utf8_lossy(&k)
            );
        }
    }
    assert_eq!(seen, model.len(), "scan missed acknowledged keys");
}

/// `verify` against the model with `extra` entries added.
pub fn verify_plus(db: &Db, model: &Model, extra: &[(&[u8], &[u8])]) {
    let mut m = model.clone();
    for (k, v) in extra {
        m.insert(k.to_vec(), v.to_vec());
    }
    verify(db, &m);
}

/// Puts `n` keys of mixed sizes (every fourth inline under `small_options`), returning
/// the model.
pub fn load(db: &Db, n: u32) -> Model {
    let mut model = Model::new();
    for i in 0..n {
        let len = [10, 100, 1000, 3000][(i % 4) as usize];
        let v = value(i, 1, len);
        db.put(&key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    model
}

/// Data that was read back damaged: a checksum that does not match, or a structure
/// the format does not allow. The one place the tests name the engine's integrity
/// errors.
pub fn is_corruption(e: &Error) -> bool {
    matches!(e, Error::ChecksumMismatch { .. } | Error::Corruption { .. })
}

/// The error's message, printed so that a test's output shows what users would read.
pub fn msg(e: &Error) -> String {
    let s = e.to_string();
    println!("error: {s}");
    s
}

/// A simulated device of `size` bytes whose random decisions follow `seed`.
pub fn sim(size: u64, seed: u64) -> Arc<SimDevice> {
    Arc::new(SimDevice::new(SimConfig::new(size, seed)).unwrap())
}

/// A store formatted with `o` on a fresh simulated device of `size` bytes; the device
/// and directory are returned for faults, crashes and reopening.
pub fn format_sim(size: u64, seed: u64, o: &Options) -> (Arc<SimDevice>, tempfile::TempDir, Db) {
    let dev = sim(size, seed);
    let dir = tempfile::tempdir().unwrap();
    let db = Db::format_device(dev.clone(), dir.path(), o).unwrap();
    (dev, dir, db)
}

/// Writes `data` at `offset` behind the store's back (padded with zeros to whole
/// blocks) and makes it durable.
pub fn write_raw(dev: &SimDevice, offset: u64, data: &[u8]) {
    let mut buf = AlignedBuf::new(data.len().div_ceil(4096) * 4096);
    buf[..data.len()].copy_from_slice(data);
    dev.submit(&mut [IoOp::Write {
        offset,
        buf: &buf,
        fua: false,
    }])
    .unwrap();
    dev.flush().unwrap();
}

/// One test per listed mode, as crash.rs has: `test_in_modes!(body)` runs
/// `fn body(mode: Mode)` in every mode, `test_in_modes!(body: hashkv, vlog)` in the
/// modes named (the caller says why the others are left out). The tests are
/// `body::hashkv`, `body::vlog` and `body::lsm`, so a failure names its mode and
/// `cargo test body` runs them all.
#[macro_export]
macro_rules! test_in_modes {
    ($body:ident) => {
        $crate::test_in_modes!($body: hashkv, vlog, lsm);
    };
    ($body:ident: $($mode:ident),+) => {
        mod $body {
            $(
                #[test]
                fn $mode() {
                    super::$body(hashkv::Mode::from_name(stringify!($mode)).unwrap());
                }
            )+
        }
    };
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
