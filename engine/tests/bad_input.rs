//! Bad input from the caller: keys and values over the limits, options that make no
//! sense. Each gets a typed `hashkv::Error` with a clear message and changes nothing;
//! input exactly at a limit is accepted. The limits are the same in every mode (so the
//! modes take the same workloads), and every test runs in every mode.

mod common;

use common::{
    format_sim, load, msg, sim, small_options, value, verify, verify_plus, KIB, MIB,
    SMALL_LOG_SEGMENT_BYTES,
};
use hashkv::{Db, Error, Mode, WriteBatch, KEY_BYTES_MAX};

test_in_modes!(empty_and_oversized_keys_are_refused_and_change_nothing);
fn empty_and_oversized_keys_are_refused_and_change_nothing(mode: Mode) {
    let (_dev, _dir, db) = format_sim(8 * MIB, 1, &small_options().with_mode(mode));
    let model = load(&db, 50);
    let long = vec![b'k'; KEY_BYTES_MAX + 1];
    for bad in [&b""[..], &long[..]] {
        for e in [
            db.put(bad, b"some value").unwrap_err(),
            db.delete(bad).unwrap_err(),
            db.get(bad).unwrap_err(),
        ] {
            match &e {
                Error::KeyTooLarge { len, max } => {
                    assert_eq!((*len, *max), (bad.len(), KEY_BYTES_MAX))
                }
                other => panic!("expected KeyTooLarge, got {other:?}"),
            }
            let m = msg(&e);
            assert!(m.contains(&bad.len().to_string()) && m.contains(&KEY_BYTES_MAX.to_string()));
        }
        // A batch with one bad key is refused whole: its good entries do not apply.
        let mut batch = WriteBatch::new();
        batch
            .put(b"good-in-bad-batch", b"v")
            .delete(&common::key(0))
            .put(bad, b"x");
        assert!(matches!(
            db.write(batch.clone()),
            Err(Error::KeyTooLarge { .. })
        ));
        assert!(matches!(
            db.write_sync(batch),
            Err(Error::KeyTooLarge { .. })
        ));
        assert_eq!(db.get(b"good-in-bad-batch").unwrap(), None);
    }
    verify(&db, &model);
    db.close().unwrap();
}

test_in_modes!(key_of_exactly_the_limit_is_accepted);
/// A key of exactly `KEY_BYTES_MAX` bytes is accepted and reads back, inline or
/// separated, through a flush and a reopen.
fn key_of_exactly_the_limit_is_accepted(mode: Mode) {
    let o = small_options().with_mode(mode);
    let (dev, dir, db) = format_sim(8 * MIB, 1, &o);
    let mut model = load(&db, 20);
    let max_key = vec![b'm'; KEY_BYTES_MAX];
    let max_key2 = vec![b'n'; KEY_BYTES_MAX];
    db.put(&max_key, b"tiny").unwrap();
    db.put(&max_key2, &value(7, 7, 5000)).unwrap();
    db.flush().unwrap();
    model.insert(max_key.clone(), b"tiny".to_vec());
    model.insert(max_key2.clone(), value(7, 7, 5000));
    verify(&db, &model);
    // Deleting it works too, and it stays deleted.
    db.delete(&max_key).unwrap();
    model.remove(&max_key);
    db.close().unwrap();
    let db = Db::open_device(dev, dir.path(), &o).unwrap();
    verify(&db, &model);
    db.close().unwrap();
}

test_in_modes!(oversized_value_is_refused_and_the_largest_fits);
fn oversized_value_is_refused_and_the_largest_fits(mode: Mode) {
    let dev = sim(8 * MIB, 2);
    let dir = tempfile::tempdir().unwrap();
    for cache in [0, 64 * KIB] {
        let o = small_options()
            .with_mode(mode)
            .with_write_cache_bytes(cache)
            .with_force_format(true);
        let db = Db::format_device(dev.clone(), dir.path(), &o).unwrap();
        let model = load(&db, 20);
        let k = b"big-value-key";
        // Log segment minus the 20-byte record header minus the key.
        let max = SMALL_LOG_SEGMENT_BYTES as usize - 20 - k.len();
        let e = db.put(k, &vec![1u8; max + 1]).unwrap_err();
        match &e {
            Error::ValueTooLarge { len, max: m } => assert_eq!((*len, *m), (max + 1, max)),
            other => panic!("expected ValueTooLarge, got {other:?}"),
        }
        assert!(msg(&e).contains(&max.to_string()));
        let mut batch = WriteBatch::new();
        batch
            .put(b"other", b"in the same batch")
            .put(k, &vec![1u8; 100 * 1024]);
        assert!(matches!(db.write(batch), Err(Error::ValueTooLarge { .. })));
        assert_eq!(db.get(b"other").unwrap(), None);
        assert_eq!(db.get(k).unwrap(), None);
        // Exactly the limit: a record the size of a whole log segment.
        let biggest = value(99, 1, max);
        db.put(k, &biggest).unwrap();
        db.flush().unwrap();
        verify_plus(&db, &model, &[(k, &biggest)]);
        db.close().unwrap();
        let db = Db::open_device(dev.clone(), dir.path(), &o).unwrap();
        verify_plus(&db, &model, &[(k, &biggest)]);
        db.close().unwrap();
    }
}

test_in_modes!(invalid_options_are_refused_before_touching_anything);
fn invalid_options_are_refused_before_touching_anything(mode: Mode) {
    let dev = sim(8 * MIB, 3);
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta");
    let o = small_options().with_mode(mode);
    for (o, what) in [
        (o.clone().with_log_segment_bytes(5000), "log_segment_bytes"),
        (
            o.clone().with_main_segment_bytes(100 * KIB),
            "main_segment_bytes",
        ),
        (o.clone().with_reserved_share(0.0), "reserved_share"),
        (o.clone().with_gc_workers(0), "gc_workers"),
    ] {
        let e = Db::format_device(dev.clone(), &meta, &o)
            .err()
            .expect("must fail");
        assert!(matches!(e, Error::InvalidOptions { .. }), "{e:?}");
        assert!(msg(&e).contains(what));
        assert!(!meta.exists(), "metadata dir created by a refused format");
    }
    assert!(dev.peek(0, 4096).unwrap().iter().all(|&b| b == 0));
}
