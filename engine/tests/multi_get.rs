//! `Db::multi_get` returns what a loop of `get` returns, key for key and in order:
//! with values in every region (inline, group segments, the cold data log, the value
//! log, the write cache), missing and deleted keys, duplicates and
//! lists longer than one chunk; in every mode, through a reopen, and while writers
//! make GC move values under it.

mod common;

use common::{check_value, key, mix, small_options, value, Model, Zipf, KIB, MIB};
use hashkv::{Db, Mode, Options, MULTI_GET_CHUNK_KEYS};
use hashkv_blockdev::sim::{SimConfig, SimDevice};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// The keys of `model` and as many that were never written, each of them twice, in
/// an order shuffled by `seed`: longer than a chunk for any store of a few hundred
/// keys.
fn asked_keys(model_keys: impl Iterator<Item = Vec<u8>>, seed: u64) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = model_keys.collect();
    let n = keys.len();
    keys.extend((0..n).map(|i| format!("never{i}").into_bytes()));
    keys.extend(keys.clone());
    let mut s = seed;
    for i in (1..keys.len()).rev() {
        s = mix(s);
        keys.swap(i, (s % (i as u64 + 1)) as usize);
    }
    keys
}

/// `multi_get` of `keys` equals `get` of each, and `model` says the same.
fn check_against_gets(db: &Db, keys: &[Vec<u8>], model: &Model) {
    assert!(keys.len() > MULTI_GET_CHUNK_KEYS, "the list spans chunks");
    let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let got = db.multi_get(&refs).unwrap();
    assert_eq!(got.len(), keys.len());
    for (k, v) in keys.iter().zip(&got) {
        let one = db.get(k).unwrap();
        assert!(
            *v == one,
            "key {:?}: multi_get {:?}, get {:?}",
            String::from_utf8_lossy(k),
            v.as_ref().map(|v| v.len()),
            one.as_ref().map(|v| v.len())
        );
        assert!(
            v.as_ref() == model.get(k),
            "key {:?}: multi_get differs from the model",
            String::from_utf8_lossy(k)
        );
    }
}

/// Where each key's value lies, as "inline", "group", "cold log" or "value log"
/// (`None`: no value in the index).
fn place(db: &Db, k: &[u8]) -> Option<&'static str> {
    db.value_region(k).unwrap()
}

fn hot_cold_options() -> Options {
    small_options()
        .with_write_cache_bytes(16 * KIB)
        .with_hotness(true)
}

/// The hashkv mode with values in group segments (written by flushes and by GC), the
/// cold log and inline, and writes still in the write cache: multi_get equals the gets, before
/// and after a reopen.
#[test]
fn every_region_reads_the_same_through_multi_get() {
    const KEYS: u32 = 2000;
    const HOT_KEYS: u32 = 50;
    let dev = Arc::new(SimDevice::new(SimConfig::new(16 * MIB, 7)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let o = hot_cold_options();
    let db = Db::format_device(dev.clone(), dir.path(), &o).unwrap();
    let mut model = Model::new();
    let mut version = 0u32;
    let mut put = |db: &Db, model: &mut Model, k: u32| {
        version += 1;
        // Every tenth key small enough to stay inline.
        let len = match k % 10 {
            0 => 20,
            _ => 1000,
        };
        let v = value(k, version, len);
        db.put(&key(k), &v).unwrap();
        model.insert(key(k), v);
    };
    for k in 0..KEYS {
        put(&db, &mut model, k);
    }
    // Hot updates and GC until values have gone cold.
    for _ in 0..400 {
        db.flush().unwrap();
        if db.stats().cold_log_bytes >= 64 * KIB {
            break;
        }
        for h in 0..HOT_KEYS {
            put(&db, &mut model, KEYS - 1 - h);
        }
        db.collect_garbage().unwrap();
    }
    // One group written past its share (a flush per version: the write cache keeps
    // only a key's newest): the newest values land in segments appended after GC.
    for _ in 0..400 {
        put(&db, &mut model, 101);
        db.flush().unwrap();
    }
    for k in (1..KEYS).step_by(97) {
        db.delete(&key(k)).unwrap();
        model.remove(&key(k));
    }
    db.flush().unwrap();
    let mut places = std::collections::BTreeMap::new();
    for k in 0..KEYS {
        if let Some(p) = place(&db, &key(k)) {
            *places.entry(p).or_insert(0u32) += 1;
        }
    }
    println!("values by place: {places:?}");
    for p in ["inline", "group", "cold log"] {
        assert!(
            places.get(p).is_some_and(|&n| n > 0),
            "no value in the {p}: {places:?}"
        );
    }
    // Writes and a delete that only the write cache holds.
    for k in (3..KEYS).step_by(211) {
        put(&db, &mut model, k);
    }
    db.delete(&key(4)).unwrap();
    model.remove(&key(4));
    let asked = asked_keys((0..KEYS).map(key), 1);
    let hits_before = db.stats().write_cache_hits;
    check_against_gets(&db, &asked, &model);
    assert!(
        db.stats().write_cache_hits > hits_before,
        "the write cache answered"
    );
    db.close().unwrap();
    let db = Db::open_device(dev, dir.path(), &o).unwrap();
    check_against_gets(&db, &asked, &model);
    db.close().unwrap();
}

/// Mixed sizes (every fourth inline), updates, deletes and GC in each mode; multi_get
/// equals the gets, before and after a reopen.
fn multi_get_equals_gets(mode: Mode) {
    let dev = Arc::new(SimDevice::new(SimConfig::new(16 * MIB, 11)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let o = small_options().with_mode(mode);
    let db = Db::format_device(dev.clone(), dir.path(), &o).unwrap();
    let mut model = common::load(&db, 600);
    for round in 2..6u32 {
        for i in (0..600u32).filter(|i| i % 3 == round % 3) {
            let v = value(i, round, [10, 100, 1000, 3000][(i % 4) as usize]);
            db.put(&key(i), &v).unwrap();
            model.insert(key(i), v);
        }
        db.flush().unwrap();
        while db.collect_garbage().unwrap() {}
    }
    for i in (0..600u32).step_by(7) {
        db.delete(&key(i)).unwrap();
        model.remove(&key(i));
    }
    let asked = asked_keys((0..600u32).map(key), 2);
    check_against_gets(&db, &asked, &model);
    db.close().unwrap();
    let db = Db::open_device(dev, dir.path(), &o).unwrap();
    check_against_gets(&db, &asked, &model);
    // A bad key anywhere fails the whole call.
    let long = vec![b'k'; hashkv::KEY_BYTES_MAX + 1];
    let e = db.multi_get(&[&key(1)[..], &long[..]]).unwrap_err();
    assert!(matches!(e, hashkv::Error::KeyTooLarge { .. }), "{e}");
    assert!(db.multi_get(&[&key(1)[..], b""]).is_err());
    assert_eq!(db.multi_get(&[]).unwrap(), Vec::<Option<Vec<u8>>>::new());
    db.close().unwrap();
}

test_in_modes!(multi_get_equals_gets);

const KEYS: u32 = 2000;
const VALUE_BYTES: usize = 1024;

fn gc_options(mode: Mode) -> Options {
    let lsm = hashkv_lsm::Options {
        memtable_bytes_max: 1 << 20,
        table_target_bytes: 1 << 20,
        level1_bytes_max: 4 << 20,
        ..Default::default()
    };
    Options::default()
        .with_mode(mode)
        .with_main_segment_bytes(256 * KIB)
        .with_log_segment_bytes(16 * KIB)
        .with_write_cache_bytes(64 * KIB)
        .with_separation_threshold_bytes(128)
        .with_lsm(lsm)
}

/// The value a writer stores for `k` at `version`: every eighth version small enough
/// to be inline, so keys move between the index and the value store.
fn versioned(k: u32, version: u32) -> Vec<u8> {
    value(k, version, if version % 8 == 7 { 40 } else { VALUE_BYTES })
}

/// Writers overwrite three times the value capacity (so GC runs and moves values)
/// while readers multi_get 40 random keys at a time: every value must be its key's,
/// undamaged, and no older than the version acknowledged before the call began.
fn multi_get_while_gc_moves_values(mode: Mode) {
    let dev = Arc::new(SimDevice::new(SimConfig::new(24 * MIB, 13)).unwrap());
    multi_get_while_gc_moves_values_on(mode, dev, tempfile::tempdir().unwrap());
}

test_in_modes!(multi_get_while_gc_moves_values);

/// The same on a file, through io_uring and O_DIRECT reads of records' sectors.
fn multi_get_while_gc_moves_values_on_a_file(mode: Mode) {
    let dev_dir = common::disk_dir();
    let opts = hashkv_blockdev::file::OpenOptions {
        create_size_bytes: Some(24 * MIB),
        ..Default::default()
    };
    let dev = hashkv_blockdev::file::open_device(&dev_dir.path().join("dev.img"), &opts).unwrap();
    multi_get_while_gc_moves_values_on(mode, dev, tempfile::tempdir().unwrap());
}

test_in_modes!(multi_get_while_gc_moves_values_on_a_file);

fn multi_get_while_gc_moves_values_on(
    mode: Mode,
    dev: Arc<dyn hashkv_blockdev::BlockDevice>,
    dir: tempfile::TempDir,
) {
    const WRITERS: u32 = 3;
    const BATCH: usize = 40;
    let o = gc_options(mode);
    let db = Arc::new(Db::format_device(dev.clone(), dir.path(), &o).unwrap());
    let acked: Arc<Vec<AtomicU32>> = Arc::new((0..KEYS).map(|_| AtomicU32::new(0)).collect());
    for i in 0..KEYS {
        db.put(&key(i), &versioned(i, 0)).unwrap();
    }
    db.flush().unwrap();
    let per_writer = 3 * db.layout().value_capacity_bytes() / u64::from(WRITERS);
    let done = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (db, acked) = (db.clone(), acked.clone());
            std::thread::spawn(move || {
                let zipf = Zipf::new(KEYS / WRITERS, 0.99, u64::from(w));
                let (mut rng, mut written, mut version) = (50 + u64::from(w), 0u64, 0u32);
                while written < per_writer {
                    rng = mix(rng);
                    let u = (rng >> 11) as f64 / (1u64 << 53) as f64;
                    let k = zipf.sample(u) * WRITERS + w;
                    version += 1;
                    let v = versioned(k, version);
                    written += v.len() as u64;
                    db.put(&key(k), &v).unwrap();
                    acked[k as usize].store(version, Ordering::Release);
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2u64)
        .map(|r| {
            let (db, acked, done, calls) = (db.clone(), acked.clone(), done.clone(), calls.clone());
            std::thread::spawn(move || {
                let mut rng = 900 + r;
                while !done.load(Ordering::Acquire) {
                    let ks: Vec<u32> = (0..BATCH)
                        .map(|i| {
                            rng = mix(rng);
                            // A few repeats within a call.
                            if i % 10 == 9 {
                                (rng >> 40) as u32 % 8
                            } else {
                                (rng % u64::from(KEYS)) as u32
                            }
                        })
                        .collect();
                    let floors: Vec<u32> = ks
                        .iter()
                        .map(|&k| acked[k as usize].load(Ordering::Acquire))
                        .collect();
                    let names: Vec<Vec<u8>> = ks.iter().map(|&k| key(k)).collect();
                    let refs: Vec<&[u8]> = names.iter().map(|k| &k[..]).collect();
                    let got = db
                        .multi_get(&refs)
                        .unwrap_or_else(|e| panic!("multi_get during GC: {e}"));
                    for ((&k, floor), v) in ks.iter().zip(floors).zip(got) {
                        let v = v.unwrap_or_else(|| panic!("key {k} missing during GC"));
                        let (vk, ver) = check_value(&v).expect("damaged value");
                        assert_eq!(vk, k, "value of another key");
                        assert!(
                            ver >= floor,
                            "key {k}: version {ver} older than acked {floor}"
                        );
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer panicked");
    }
    done.store(true, Ordering::Release);
    for r in readers {
        r.join().expect("reader panicked");
    }
    let model: Model = (0..KEYS)
        .map(|k| {
            (
                key(k),
                versioned(k, acked[k as usize].load(Ordering::Acquire)),
            )
        })
        .collect();
    let asked = asked_keys((0..KEYS).map(key), 3);
    check_against_gets(&db, &asked, &model);
    let stats = db.stats();
    println!(
        "{} multi_gets; gc_runs {}",
        calls.load(Ordering::Relaxed),
        stats.gc_runs
    );
    assert!(calls.load(Ordering::Relaxed) > 0);
    assert!(
        mode == Mode::Lsm || stats.gc_runs > 0,
        "GC never ran: {stats:?}"
    );
    let db = Arc::try_unwrap(db).ok().expect("threads are done");
    db.close().unwrap();
    let db = Db::open_device(dev, dir.path(), &o).unwrap();
    check_against_gets(&db, &asked, &model);
    db.close().unwrap();
}

/// On a device with 512-byte logical blocks (most NVMe, files on most file systems)
/// value reads cover their record's sectors, not the layout's 4 KiB write blocks: a
/// 1000-byte value costs at most four sectors in a get, a multi-get and a scan, and
/// every value read is the one written.
fn value_reads_cover_sectors_not_write_blocks(mode: Mode) {
    const KEYS: u32 = 300;
    const VALUE_BYTES: usize = 1000;
    const SECTOR: u64 = 512;
    let mut config = SimConfig::new(16 * MIB, 13);
    config.logical_block_bytes = SECTOR as u32;
    let dev = Arc::new(SimDevice::new(config).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let o = small_options().with_mode(mode).with_value_cache_bytes(0);
    let db = Db::format_device(dev.clone(), dir.path(), &o).unwrap();
    assert_eq!(db.layout().block_bytes, 4096, "writes keep 4 KiB blocks");
    for i in 0..KEYS {
        db.put(&key(i), &value(i, 1, VALUE_BYTES)).unwrap();
    }
    db.flush().unwrap();
    let per_value_max = 4 * SECTOR;
    let read = || db.stats().read_device_bytes;
    let before = read();
    for i in (0..KEYS).step_by(7) {
        let v = db.get(&key(i)).unwrap().unwrap();
        assert!(v == value(i, 1, VALUE_BYTES), "{:?}", check_value(&v));
    }
    let gets = KEYS.div_ceil(7) as u64;
    assert!(
        read() - before <= gets * per_value_max,
        "gets read {}",
        read() - before
    );
    let before = read();
    let keys: Vec<Vec<u8>> = (0..KEYS).step_by(3).map(key).collect();
    let asked: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    for (j, v) in db.multi_get(&asked).unwrap().into_iter().enumerate() {
        let i = 3 * j as u32;
        assert!(v.unwrap() == value(i, 1, VALUE_BYTES), "key {i}");
    }
    let n = asked.len() as u64;
    assert!(
        read() - before <= n * per_value_max,
        "multi-get read {}",
        read() - before
    );
    let before = read();
    let scanned = db
        .scan(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
        .unwrap()
        .limit(100)
        .map(|r| r.unwrap())
        .count();
    assert_eq!(scanned, 100);
    assert!(
        read() - before <= 100 * per_value_max,
        "scan read {}",
        read() - before
    );
    db.close().unwrap();
}

test_in_modes!(value_reads_cover_sectors_not_write_blocks);

/// A 4 KiB value is read as exactly 4 KiB: its record is placed so that the value
/// starts on a sector (`align.rs`), and a get reads the value's sectors alone, not the
/// record's header and key (which made it nine sectors). Also after GC copied the
/// values (hashkv: group GC; vlog: its log GC).
fn a_4k_value_is_one_4k_read(mode: Mode) {
    const KEYS: u32 = 200;
    const VALUE_BYTES: usize = 4096;
    let mut config = SimConfig::new(16 * MIB, 14);
    config.logical_block_bytes = 512;
    let dev = Arc::new(SimDevice::new(config).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let o = small_options().with_mode(mode).with_value_cache_bytes(0);
    let db = Db::format_device(dev.clone(), dir.path(), &o).unwrap();
    let check_reads = |version: u32| {
        let read = || db.stats().read_device_bytes;
        let before = read();
        for i in 0..KEYS {
            let v = db.get(&key(i)).unwrap().unwrap();
            assert!(v == value(i, version, VALUE_BYTES), "{:?}", check_value(&v));
        }
        let per_get = (read() - before) / u64::from(KEYS);
        assert_eq!(
            read() - before,
            u64::from(KEYS) * VALUE_BYTES as u64,
            "{per_get} per get"
        );
    };
    let mut version = 1;
    for i in 0..KEYS {
        db.put(&key(i), &value(i, version, VALUE_BYTES)).unwrap();
    }
    db.flush().unwrap();
    check_reads(version);
    // Overwrite everything until GC has run and moved values.
    let gc_runs = || db.stats().gc_runs;
    while gc_runs() < 3 {
        version += 1;
        for i in 0..KEYS {
            db.put(&key(i), &value(i, version, VALUE_BYTES)).unwrap();
        }
        db.flush().unwrap();
        assert!(version < 200, "no GC ran");
    }
    check_reads(version);
    db.close().unwrap();
}

test_in_modes!(a_4k_value_is_one_4k_read: hashkv, vlog);

/// A store formatted with `o` on a 16 MiB simulated device (seeded `seed`), keys
/// 0..`keys` holding their version-1 values of `value_bytes`, flushed; with its
/// metadata directory, which must outlive it.
fn loaded(o: &Options, seed: u64, keys: u32, value_bytes: usize) -> (Db, tempfile::TempDir) {
    let dev = Arc::new(SimDevice::new(SimConfig::new(16 * MIB, seed)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let db = Db::format_device(dev, dir.path(), o).unwrap();
    for i in 0..keys {
        db.put(&key(i), &value(i, 1, value_bytes)).unwrap();
    }
    db.flush().unwrap();
    (db, dir)
}

/// The value cache admits a value at its second miss (its doorkeeper): a key read
/// once is read from the device again, one read twice is served from the cache from
/// then on, by `get` and `multi_get` alike, and a write of the key is never hidden
/// by its cached old value.
fn a_value_is_cached_from_its_second_miss(mode: Mode) {
    const KEYS: u32 = 20;
    const VALUE_BYTES: usize = 2048;
    // Large enough that the keys' doorkeeper slots almost surely differ (two keys
    // sharing one would each take it from the other, and neither be admitted).
    let o = small_options()
        .with_mode(mode)
        .with_value_cache_bytes(16 * MIB);
    let (db, _dir) = loaded(&o, 15, KEYS, VALUE_BYTES);
    let (hits, reads) = (
        || db.stats().value_cache_hits,
        || db.stats().read_device_bytes,
    );
    let get = |i: u32, version: u32| {
        let v = db.get(&key(i)).unwrap().unwrap();
        assert!(v == value(i, version, VALUE_BYTES), "{:?}", check_value(&v));
    };
    // First miss: read, not cached.
    let before = (hits(), reads());
    get(0, 1);
    assert_eq!(hits(), before.0);
    assert!(reads() > before.1);
    // Second miss: read, and cached from now on.
    let before = (hits(), reads());
    get(0, 1);
    assert_eq!(hits(), before.0);
    assert!(reads() > before.1);
    let before = (hits(), reads());
    get(0, 1);
    assert_eq!(
        (hits(), reads()),
        (before.0 + 1, before.1),
        "a hit reads nothing"
    );

    // A multi-get admits the same way, and its hits read nothing either.
    let keys: Vec<Vec<u8>> = (1..KEYS).map(key).collect();
    let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    for _ in 0..2 {
        db.multi_get(&refs).unwrap();
    }
    let before = (hits(), reads());
    let got = db.multi_get(&refs).unwrap();
    for (i, v) in (1..KEYS).zip(&got) {
        assert!(v.as_deref() == Some(&value(i, 1, VALUE_BYTES)[..]));
    }
    assert_eq!(
        (hits(), reads()),
        (before.0 + u64::from(KEYS) - 1, before.1)
    );

    // A new version of a cached key is what a get returns.
    db.put(&key(0), &value(0, 2, VALUE_BYTES)).unwrap();
    db.flush().unwrap();
    get(0, 2);
    db.close().unwrap();
}

test_in_modes!(a_value_is_cached_from_its_second_miss: hashkv, vlog);

/// Value reads take their buffers from the store's pool and give them back: after a
/// first round of gets, multi-gets and a scan, the same reads again allocate no
/// buffer (a fresh one per read cost a zeroing pass, an allocation and a free).
fn value_reads_reuse_their_buffers(mode: Mode) {
    const KEYS: u32 = 64;
    const VALUE_BYTES: usize = 4096;
    // No value cache: every read goes to the device.
    let o = small_options().with_mode(mode).with_value_cache_bytes(0);
    let (db, _dir) = loaded(&o, 16, KEYS, VALUE_BYTES);
    let keys: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
    let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let round = || {
        let reads = db.stats().read_device_bytes;
        for (i, k) in (0..KEYS).zip(&keys) {
            assert!(db.get(k).unwrap() == Some(value(i, 1, VALUE_BYTES)));
        }
        for (i, v) in (0..KEYS).zip(db.multi_get(&refs).unwrap()) {
            assert!(v == Some(value(i, 1, VALUE_BYTES)));
        }
        let scanned = db
            .scan(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
            .unwrap()
            .map(|r| r.unwrap())
            .count();
        assert_eq!(scanned, KEYS as usize);
        assert!(
            db.stats().read_device_bytes >= reads + 3 * u64::from(KEYS) * VALUE_BYTES as u64,
            "every value was read from the device, three times"
        );
    };
    round();
    let allocations = db.stats().read_buffer_allocations;
    assert!(allocations > 0);
    round();
    round();
    assert_eq!(db.stats().read_buffer_allocations, allocations);
    db.close().unwrap();
}

test_in_modes!(value_reads_reuse_their_buffers: hashkv, vlog);
