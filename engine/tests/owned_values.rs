//! `Db::put_owned` and `WriteBatch::put_owned`: the store takes the caller's value
//! buffer instead of copying it. What is read back, before and after a flush, through
//! GC and through a reopen, must be exactly what `put` would have stored, in every mode.

mod common;

use common::{format_sim, key, small_options, value, verify, Model, SMALL_LOG_SEGMENT_BYTES};
use hashkv::{Db, Error, Mode, WriteBatch};

const KEYS: u32 = 300;
/// Inline (under the 64-byte separation threshold of `small_options`), separated,
/// and close to the largest record a 16 KiB log segment holds.
const VALUE_LENS: [usize; 4] = [10, 100, 1000, 12_000];

fn value_len(i: u32, version: u32) -> usize {
    VALUE_LENS[((i + version) % VALUE_LENS.len() as u32) as usize]
}

/// Writes version `version` of every key: one in three through a batch of owned
/// values, one in six through the same batch's copying `put` (its values in the
/// batch's one buffer, beside owned ones and a delete), the rest through `put_owned`.
fn write_version(db: &Db, model: &mut Model, version: u32) {
    let mut batch = WriteBatch::new();
    for i in 0..KEYS {
        let v = value(i, version, value_len(i, version));
        model.insert(key(i), v.clone());
        if i % 3 == 0 {
            batch.put_owned(&key(i), v);
        } else if i % 6 == 1 {
            batch.put(&key(i), &v);
        } else {
            db.put_owned(&key(i), v).unwrap();
        }
        if batch.len() == 16 {
            batch.delete(&key(i + 1));
            model.remove(&key(i + 1));
            db.write(std::mem::take(&mut batch)).unwrap();
        }
    }
    db.write(batch).unwrap();
}

#[test]
fn owned_values_read_back_before_and_after_flush_gc_and_reopen_in_every_mode() {
    for (seed, mode) in Mode::ALL.iter().copied().enumerate() {
        let o = small_options().with_mode(mode);
        let (dev, dir, db) = format_sim(8 << 20, seed as u64, &o);
        let mut model = Model::new();
        write_version(&db, &mut model, 1);
        // Part of it still in the write cache.
        verify(&db, &model);
        db.flush().unwrap();
        verify(&db, &model);
        // Enough versions to make GC run in the modes that have one.
        for version in 2..12 {
            write_version(&db, &mut model, version);
        }
        verify(&db, &model);
        if mode != Mode::Lsm {
            assert!(db.stats().gc_runs > 0, "{mode:?}: GC never ran");
        }
        db.close().unwrap();
        let db = Db::open_device(dev, dir.path(), &o).unwrap();
        verify(&db, &model);
        db.close().unwrap();
    }
}

#[test]
fn an_owned_value_too_large_is_refused_like_a_borrowed_one() {
    for (seed, mode) in Mode::ALL.iter().copied().enumerate() {
        let o = small_options().with_mode(mode);
        let (_dev, _dir, db) = format_sim(8 << 20, 100 + seed as u64, &o);
        let big = vec![7u8; SMALL_LOG_SEGMENT_BYTES as usize];
        let owned = db.put_owned(b"big", big.clone()).unwrap_err();
        let borrowed = db.put(b"big", &big).unwrap_err();
        assert!(
            matches!(owned, Error::ValueTooLarge { len, .. } if len == big.len()),
            "{mode:?}: {owned}"
        );
        assert_eq!(owned.to_string(), borrowed.to_string(), "{mode:?}");
        let mut batch = WriteBatch::new();
        batch
            .put_owned(b"small", b"kept?".to_vec())
            .put_owned(b"big", big);
        assert!(matches!(db.write(batch), Err(Error::ValueTooLarge { .. })));
        // The batch is atomic: its valid entry was not written either.
        assert_eq!(db.get(b"small").unwrap(), None, "{mode:?}");
        db.close().unwrap();
    }
}
