//! The C ABI (engine/src/ffi/, engine/include/hashkv.h), called as C would call it:
//! raw pointers, malloc'd results freed with `hashkv_free`, negative codes and
//! messages for bad input. The C programs in tests/c/ (run by `c_programs.rs`) call it
//! from C itself; this file covers what is easier to check from Rust.

mod common;

use common::{disk_dir, key, value, MIB};
use hashkv::ffi::*;
use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::{null, null_mut};

/// Takes the error message hashkv left in `err`, freeing it.
fn take_err(err: &mut *mut c_char) -> Option<String> {
    if err.is_null() {
        return None;
    }
    // SAFETY: hashkv set a NUL-terminated malloc'd string; it is freed once here.
    let s = unsafe { CStr::from_ptr(*err) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: as above.
    unsafe { hashkv_free(*err as *mut c_void) };
    *err = null_mut();
    Some(s)
}

/// A failure: the code returned, the thread's last code (must agree) and the message.
#[derive(Debug, PartialEq)]
struct Failed(i32, String);

fn failed(rc: i32, err: &mut *mut c_char) -> Failed {
    assert!(rc < 0, "not a failure: {rc}");
    assert_eq!(
        hashkv_last_errcode(),
        rc,
        "last_errcode agrees with the result"
    );
    Failed(rc, take_err(err).expect("a failure leaves a message"))
}

fn cstr(p: &std::path::Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

fn new_options(create: bool) -> *mut HashkvOptions {
    let o = hashkv_options_new();
    assert!(!o.is_null());
    // SAFETY: o is a live options object.
    unsafe {
        hashkv_options_set_main_segment_bytes(o, MIB);
        hashkv_options_set_log_segment_bytes(o, 64 << 10);
        hashkv_options_set_write_cache_bytes(o, 256 << 10);
        hashkv_options_set_separation_threshold_bytes(o, 100);
        hashkv_options_set_reserved_share(o, 0.3);
        if create {
            hashkv_options_set_create_device_bytes(o, 16 * MIB);
        }
    }
    o
}

/// Takes a malloc'd buffer from hashkv, freeing it.
fn take_bytes(p: *mut u8, len: usize) -> Vec<u8> {
    assert!(!p.is_null());
    // SAFETY: hashkv handed out `len` readable bytes at p; freed once here.
    let v = unsafe { std::slice::from_raw_parts(p, len) }.to_vec();
    // SAFETY: as above.
    unsafe { hashkv_free(p as *mut c_void) };
    v
}

fn get(db: *mut HashkvDb, k: &[u8]) -> Result<Option<Vec<u8>>, Failed> {
    let mut err = null_mut();
    let (mut v, mut len) = (null_mut(), 0usize);
    // SAFETY: db is live; key and outputs are valid for the call.
    match unsafe { hashkv_get(db, k.as_ptr(), k.len(), &mut v, &mut len, &mut err) } {
        1 => Ok(Some(take_bytes(v, len))),
        0 => {
            assert!(v.is_null() && len == 0);
            Ok(None)
        }
        rc => Err(failed(rc, &mut err)),
    }
}

fn put(db: *mut HashkvDb, k: &[u8], v: &[u8]) -> Result<(), Failed> {
    let mut err = null_mut();
    // SAFETY: db is live; key and value are valid for the call.
    match unsafe { hashkv_put(db, k.as_ptr(), k.len(), v.as_ptr(), v.len(), &mut err) } {
        0 => {
            assert!(err.is_null());
            Ok(())
        }
        rc => Err(failed(rc, &mut err)),
    }
}

fn scan(db: *mut HashkvDb, lo: Option<&[u8]>, hi: Option<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
    scan_limited(db, lo, hi, None)
}

fn scan_limited(
    db: *mut HashkvDb,
    lo: Option<&[u8]>,
    hi: Option<&[u8]>,
    limit: Option<usize>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut err = null_mut();
    let (lp, ll) = lo.map_or((null(), 0), |l| (l.as_ptr(), l.len()));
    let (hp, hl) = hi.map_or((null(), 0), |h| (h.as_ptr(), h.len()));
    // SAFETY: db is live; the bounds are valid for the call.
    let it = unsafe {
        match limit {
            None => hashkv_scan(db, lp, ll, hp, hl, &mut err),
            Some(n) => hashkv_scan_limit(db, lp, ll, hp, hl, n, &mut err),
        }
    };
    assert!(!it.is_null(), "scan: {:?}", take_err(&mut err));
    let mut out = Vec::new();
    loop {
        let (mut k, mut kl, mut v, mut vl) = (null_mut(), 0, null_mut(), 0);
        // SAFETY: it is live and used by this thread only; outputs are valid.
        match unsafe { hashkv_iter_next(it, &mut k, &mut kl, &mut v, &mut vl, &mut err) } {
            1 => out.push((take_bytes(k, kl), take_bytes(v, vl))),
            0 => break,
            _ => panic!("iter_next: {:?}", take_err(&mut err)),
        }
    }
    // SAFETY: it came from hashkv_scan and is freed once, before the store closes.
    unsafe { hashkv_iter_free(it) };
    out
}

/// Paths of one device file and a metadata directory in a fresh directory.
struct Store {
    _dir: tempfile::TempDir,
    dev: CString,
    meta: CString,
}

impl Store {
    fn new() -> Store {
        let dir = disk_dir();
        Store {
            dev: cstr(&dir.path().join("dev.img")),
            meta: cstr(&dir.path().join("meta")),
            _dir: dir,
        }
    }

    fn format(&self, opts: *const HashkvOptions) -> Result<*mut HashkvDb, Failed> {
        let mut err = null_mut();
        let devs = [self.dev.as_ptr()];
        // SAFETY: the paths are NUL-terminated; opts is NULL or live.
        let db = unsafe { hashkv_format(devs.as_ptr(), 1, self.meta.as_ptr(), opts, &mut err) };
        match db.is_null() {
            true => Err(failed(hashkv_last_errcode(), &mut err)),
            false => Ok(db),
        }
    }

    fn open(&self, opts: *const HashkvOptions) -> Result<*mut HashkvDb, Failed> {
        let mut err = null_mut();
        let devs = [self.dev.as_ptr()];
        // SAFETY: as in format.
        let db = unsafe { hashkv_open(devs.as_ptr(), 1, self.meta.as_ptr(), opts, &mut err) };
        match db.is_null() {
            true => Err(failed(hashkv_last_errcode(), &mut err)),
            false => Ok(db),
        }
    }
}

fn close(db: *mut HashkvDb) {
    let mut err = null_mut();
    // SAFETY: db is live, has no live iterator, and is closed once.
    let rc = unsafe { hashkv_close(db, &mut err) };
    assert_eq!(rc, 0, "close: {:?}", take_err(&mut err));
}

#[test]
fn format_put_get_delete_scan_flush_close_reopen() {
    let store = Store::new();
    let opts = new_options(true);
    let db = store.format(opts).unwrap();
    let mut model = std::collections::BTreeMap::new();
    for i in 0..300u32 {
        let v = value(i, 1, [20, 500, 3000][(i % 3) as usize]);
        put(db, &key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    // An empty value is a value, not a delete.
    put(db, b"empty", b"").unwrap();
    model.insert(b"empty".to_vec(), Vec::new());
    let mut err = null_mut();
    for i in (0..300u32).step_by(5) {
        // SAFETY: db is live; the key is valid for the call.
        assert_eq!(
            unsafe { hashkv_delete(db, key(i).as_ptr(), key(i).len(), &mut err) },
            0
        );
        model.remove(&key(i));
    }
    assert_eq!(get(db, &key(0)), Ok(None));
    assert_eq!(get(db, &key(1)), Ok(Some(value(1, 1, 500))));
    assert_eq!(get(db, b"empty"), Ok(Some(Vec::new())));
    assert_eq!(get(db, b"never"), Ok(None));
    // SAFETY: db is live.
    assert_eq!(
        unsafe { hashkv_flush(db, &mut err) },
        0,
        "{:?}",
        take_err(&mut err)
    );
    let all: Vec<_> = model.clone().into_iter().collect();
    assert_eq!(scan(db, None, None), all);
    // [key(10), key(20)): lower inclusive, upper exclusive.
    let part: Vec<_> = model
        .range(key(10)..key(20))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(scan(db, Some(&key(10)), Some(&key(20))), part);
    assert!(scan(db, Some(&key(20)), Some(&key(10))).is_empty());
    // A limited scan: the first n pairs of the range, however many the range holds.
    for n in [0, 1, 7, part.len(), part.len() + 5] {
        let want: Vec<_> = part.iter().take(n).cloned().collect();
        assert_eq!(
            scan_limited(db, Some(&key(10)), Some(&key(20)), Some(n)),
            want
        );
    }
    close(db);
    // Reopen with NULL options: the geometry comes from the superblock.
    let db = store.open(null()).unwrap();
    for (k, v) in &model {
        assert_eq!(get(db, k).as_ref(), Ok(&Some(v.clone())));
    }
    assert_eq!(scan(db, None, None), all);
    close(db);
    // SAFETY: opts is live and freed once; NULL is ignored.
    unsafe {
        hashkv_options_free(opts);
        hashkv_options_free(null_mut());
    }
}

#[test]
fn every_mode_formats_and_reopens_without_naming_it() {
    for mode in ["hashkv", "vlog", "lsm"] {
        let store = Store::new();
        let opts = new_options(true);
        let m = CString::new(mode).unwrap();
        // SAFETY: opts is live; m is NUL-terminated.
        unsafe { hashkv_options_set_mode(opts, m.as_ptr()) };
        let db = store.format(opts).unwrap();
        for i in 0..50 {
            put(db, &key(i), &value(i, 1, 700)).unwrap();
        }
        close(db);
        // Options that set only what an open may change (the write cache): mode and
        // sizes still come from the superblock.
        let reopen = hashkv_options_new();
        // SAFETY: reopen is live.
        unsafe { hashkv_options_set_write_cache_bytes(reopen, 0) };
        let db = store.open(reopen).unwrap();
        for i in 0..50 {
            assert_eq!(get(db, &key(i)), Ok(Some(value(i, 1, 700))), "mode {mode}");
        }
        close(db);
        // Insisting on another mode is refused.
        let other = CString::new(if mode == "lsm" { "vlog" } else { "lsm" }).unwrap();
        // SAFETY: reopen is live; other is NUL-terminated.
        unsafe { hashkv_options_set_mode(reopen, other.as_ptr()) };
        let Failed(code, msg) = store.open(reopen).unwrap_err();
        assert_eq!(code, HASHKV_E_INVALID_ARGUMENT, "{msg}");
        assert!(msg.contains("mode"), "{msg}");
        // SAFETY: both are live and freed once.
        unsafe {
            hashkv_options_free(reopen);
            hashkv_options_free(opts);
        }
    }
}

/// Asserts an invalid-argument failure whose message contains `needle`.
fn invalid(rc: i32, err: &mut *mut c_char, needle: &str) {
    let Failed(code, msg) = failed(rc, err);
    assert_eq!(code, HASHKV_E_INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
}

#[test]
fn null_handles_and_paths_are_refused() {
    let store = Store::new();
    let opts = new_options(true);
    let mut err = null_mut();
    let k = b"k";
    let (mut v, mut vl, mut kp, mut kl) = (null_mut(), 0usize, null_mut(), 0usize);
    let devs = [store.dev.as_ptr()];
    let with_null = [store.dev.as_ptr(), null()];
    let meta = store.meta.as_ptr();
    // SAFETY: every pointer is NULL or valid for the call; NULL handles are refused.
    unsafe {
        let e = &mut err;
        invalid(
            hashkv_put(null_mut(), k.as_ptr(), 1, k.as_ptr(), 1, e),
            e,
            "db is NULL",
        );
        invalid(
            hashkv_get(null_mut(), k.as_ptr(), 1, &mut v, &mut vl, e),
            e,
            "db is NULL",
        );
        invalid(hashkv_delete(null_mut(), k.as_ptr(), 1, e), e, "db is NULL");
        invalid(hashkv_flush(null_mut(), e), e, "db is NULL");
        invalid(hashkv_close(null_mut(), e), e, "db is NULL");
        invalid(hashkv_check(null_mut(), e), e, "db is NULL");
        assert!(hashkv_scan(null_mut(), null(), 0, null(), 0, e).is_null());
        invalid(hashkv_last_errcode(), e, "db is NULL");
        let rc = hashkv_iter_next(null_mut(), &mut kp, &mut kl, &mut v, &mut vl, e);
        invalid(rc, e, "iterator is NULL");
        hashkv_iter_free(null_mut());
        hashkv_free(null_mut());
        // A NULL errptr is allowed: the code alone says it failed.
        assert_eq!(
            hashkv_flush(null_mut(), null_mut()),
            HASHKV_E_INVALID_ARGUMENT
        );
        // Bad paths to format/open.
        assert!(hashkv_format(null(), 0, meta, opts, e).is_null());
        invalid(hashkv_last_errcode(), e, "no device");
        assert!(hashkv_format(devs.as_ptr(), 1, null(), opts, e).is_null());
        invalid(hashkv_last_errcode(), e, "metadata_dir is NULL");
        assert!(hashkv_format(with_null.as_ptr(), 2, meta, opts, e).is_null());
        invalid(hashkv_last_errcode(), e, "devices[1] is NULL");
    }
    let Failed(code, msg) = store.open(opts).unwrap_err();
    assert_eq!(code, HASHKV_E_NOT_FOUND, "{msg}");
    assert!(msg.contains("dev.img"), "{msg}");
    // SAFETY: live, freed once.
    unsafe { hashkv_options_free(opts) };
}

#[test]
fn bad_keys_values_and_buffers_are_refused_and_change_nothing() {
    let store = Store::new();
    let opts = new_options(true);
    let db = store.format(opts).unwrap();
    put(db, b"keep", b"me").unwrap();
    let long = vec![b'x'; HASHKV_KEY_BYTES_MAX + 1];
    let Failed(code, msg) = put(db, &long, b"v").unwrap_err();
    assert_eq!(code, HASHKV_E_INVALID_ARGUMENT);
    assert!(msg.contains("exceeds the limit"), "{msg}");
    assert!(put(db, &long[..HASHKV_KEY_BYTES_MAX], b"v").is_ok());
    assert_eq!(get(db, &long).unwrap_err().0, HASHKV_E_INVALID_ARGUMENT);
    assert_eq!(put(db, b"", b"v").unwrap_err().0, HASHKV_E_INVALID_ARGUMENT);
    let Failed(code, msg) = put(db, b"big", &vec![0u8; 64 << 10]).unwrap_err();
    assert_eq!(code, HASHKV_E_INVALID_ARGUMENT);
    assert!(msg.contains("value of"), "{msg}");
    let (mut err, mut vl) = (null_mut(), 0usize);
    // SAFETY: db is live; NULL buffers come with the lengths under test.
    unsafe {
        let e = &mut err;
        let rc = hashkv_put(db, null(), 3, b"v".as_ptr(), 1, e);
        invalid(rc, e, "key is NULL with length 3");
        let rc = hashkv_put(db, b"k".as_ptr(), usize::MAX, b"v".as_ptr(), 1, e);
        invalid(rc, e, "impossible");
        assert_eq!(hashkv_put(db, b"nv".as_ptr(), 2, null(), 0, e), 0);
        let rc = hashkv_get(db, b"keep".as_ptr(), 4, null_mut(), &mut vl, e);
        invalid(rc, e, "value is NULL");
    }
    assert_eq!(get(db, b"nv"), Ok(Some(Vec::new())));
    assert_eq!(get(db, b"keep"), Ok(Some(b"me".to_vec())));
    close(db);
    // SAFETY: live, freed once.
    unsafe { hashkv_options_free(opts) };
}

/// The count of keys found and each key's value.
type MultiGot = (i32, Vec<Option<Vec<u8>>>);

/// `hashkv_multi_get` of `keys` (the values are freed here).
fn multi_get(db: *mut HashkvDb, keys: &[&[u8]]) -> Result<MultiGot, Failed> {
    let ptrs: Vec<*const u8> = keys.iter().map(|k| k.as_ptr()).collect();
    let lens: Vec<usize> = keys.iter().map(|k| k.len()).collect();
    // Not NULL, so that the test sees the call set every one.
    let mut values = vec![std::ptr::dangling_mut::<u8>(); keys.len()];
    let mut value_lens = vec![7usize; keys.len()];
    let mut err = null_mut();
    // SAFETY: db is live; the arrays hold keys.len() valid elements each.
    let rc = unsafe {
        hashkv_multi_get(
            db,
            ptrs.as_ptr(),
            lens.as_ptr(),
            keys.len(),
            values.as_mut_ptr(),
            value_lens.as_mut_ptr(),
            &mut err,
        )
    };
    if rc < 0 {
        assert!(
            values.iter().all(|v| v.is_null()),
            "a failure hands out nothing"
        );
        assert!(value_lens.iter().all(|&l| l == 0));
        return Err(failed(rc, &mut err));
    }
    let got = values
        .into_iter()
        .zip(value_lens)
        .map(|(v, len)| {
            if v.is_null() {
                assert_eq!(len, 0, "a key not found has length 0");
                None
            } else {
                Some(take_bytes(v, len))
            }
        })
        .collect();
    Ok((rc, got))
}

#[test]
fn multi_get_returns_values_in_key_order_and_refuses_a_bad_key_whole() {
    let store = Store::new();
    let opts = new_options(true);
    let db = store.format(opts).unwrap();
    for i in 0..100u32 {
        put(db, &key(i), &value(i, 1, [20, 500, 3000][(i % 3) as usize])).unwrap();
    }
    put(db, b"empty", b"").unwrap();
    let mut err = null_mut();
    // SAFETY: db is live.
    assert_eq!(unsafe { hashkv_flush(db, &mut err) }, 0);
    let (k3, k50, k99) = (key(3), key(50), key(99));
    let keys: Vec<&[u8]> = vec![&k50, b"never", &k3, b"empty", &k50, &k99];
    let (found, got) = multi_get(db, &keys).unwrap();
    assert_eq!(found, 5);
    let want: Vec<Option<Vec<u8>>> = keys.iter().map(|k| get(db, k).unwrap()).collect();
    assert_eq!(got, want);
    assert_eq!(got[3], Some(Vec::new()), "an empty value is found");
    assert_eq!(multi_get(db, &[]).unwrap(), (0, Vec::new()));
    let long = vec![b'x'; HASHKV_KEY_BYTES_MAX + 1];
    let Failed(code, msg) = multi_get(db, &[&k3, &long]).unwrap_err();
    assert_eq!(code, HASHKV_E_INVALID_ARGUMENT, "{msg}");
    assert_eq!(
        multi_get(db, &[&k3, b""]).unwrap_err().0,
        HASHKV_E_INVALID_ARGUMENT
    );
    let (mut v, mut vl) = (null_mut(), 0usize);
    let kp = k3.as_ptr();
    let null_key: *const u8 = null();
    // SAFETY: db is live; the NULL arrays come with the counts under test.
    unsafe {
        let e = &mut err;
        let rc = hashkv_multi_get(db, null(), null(), 1, &mut v, &mut vl, e);
        invalid(rc, e, "keys is NULL with count 1");
        let rc = hashkv_multi_get(db, &kp, &3, 1, null_mut(), &mut vl, e);
        invalid(rc, e, "values is NULL with count 1");
        let rc = hashkv_multi_get(db, &null_key, &2, 1, &mut v, &mut vl, e);
        invalid(rc, e, "keys[0] is NULL with length 2");
        let rc = hashkv_multi_get(null_mut(), &kp, &3, 1, &mut v, &mut vl, e);
        invalid(rc, e, "db is NULL");
        let lens = [3usize, 3];
        let misaligned = lens.as_ptr().cast::<u8>().wrapping_add(1).cast::<usize>();
        let rc = hashkv_multi_get(db, &kp, misaligned, 1, &mut v, &mut vl, e);
        invalid(rc, e, "key_lens: address");
    }
    close(db);
    // SAFETY: live, freed once.
    unsafe { hashkv_options_free(opts) };
}

#[test]
fn second_opener_contradicting_options_and_reformat_are_refused() {
    let store = Store::new();
    let opts = new_options(true);
    let db = store.format(opts).unwrap();
    put(db, b"keep", b"me").unwrap();
    // A second opener of the same device is busy; the first keeps working.
    let Failed(code, msg) = store.open(opts).unwrap_err();
    assert_eq!(code, HASHKV_E_BUSY, "{msg}");
    assert_eq!(get(db, b"keep"), Ok(Some(b"me".to_vec())));
    close(db);
    // Opening with other segment sizes: refused, naming the mismatch.
    let other = new_options(false);
    // SAFETY: other is live.
    unsafe { hashkv_options_set_log_segment_bytes(other, 32 << 10) };
    let Failed(code, msg) = store.open(other).unwrap_err();
    assert_eq!(code, HASHKV_E_INVALID_ARGUMENT);
    assert!(msg.contains("other parameters"), "{msg}");
    // Formatting it again without force: refused; with force: works.
    let Failed(code, msg) = store.format(opts).unwrap_err();
    assert_eq!(code, HASHKV_E_INVALID_ARGUMENT);
    assert!(msg.contains("force"), "{msg}");
    // SAFETY: opts is live.
    unsafe { hashkv_options_set_force_format(opts, 1) };
    let db = store.format(opts).unwrap();
    assert_eq!(get(db, b"keep"), Ok(None));
    close(db);
    // SAFETY: live, freed once.
    unsafe {
        hashkv_options_free(other);
        hashkv_options_free(opts);
    }
}

#[test]
fn a_batch_applies_whole_or_not_at_all() {
    let store = Store::new();
    let opts = new_options(true);
    let db = store.format(opts).unwrap();
    put(db, b"old", b"value").unwrap();
    let b = hashkv_writebatch_create();
    let mut err = null_mut();
    // SAFETY: b and db are live; keys and values are valid for each call.
    unsafe {
        for i in 0..20u32 {
            let v = value(i, 2, 300);
            hashkv_writebatch_put(b, key(i).as_ptr(), key(i).len(), v.as_ptr(), v.len());
        }
        hashkv_writebatch_delete(b, b"old".as_ptr(), 3);
        assert_eq!(hashkv_writebatch_count(b), 21);
        // An invalid entry (NULL key with a length) poisons the batch: none of it is
        // applied.
        hashkv_writebatch_put(b, null(), 4, b"v".as_ptr(), 1);
        assert_eq!(hashkv_last_errcode(), HASHKV_E_INVALID_ARGUMENT);
        let Failed(code, msg) = failed(hashkv_write(db, b, 1, &mut err), &mut err);
        assert_eq!(code, HASHKV_E_INVALID_ARGUMENT);
        assert!(msg.contains("none is applied"), "{msg}");
        assert_eq!(get(db, &key(0)), Ok(None));
        assert_eq!(get(db, b"old"), Ok(Some(b"value".to_vec())));
        // A key too long in an otherwise good batch: refused whole as well.
        hashkv_writebatch_clear(b);
        assert_eq!(hashkv_writebatch_count(b), 0);
        hashkv_writebatch_put(b, b"good".as_ptr(), 4, b"v".as_ptr(), 1);
        let long = vec![b'k'; HASHKV_KEY_BYTES_MAX + 1];
        hashkv_writebatch_put(b, long.as_ptr(), long.len(), b"v".as_ptr(), 1);
        let Failed(code, _) = failed(hashkv_write(db, b, 0, &mut err), &mut err);
        assert_eq!(code, HASHKV_E_INVALID_ARGUMENT);
        assert_eq!(get(db, b"good"), Ok(None));
        // A good batch, sync: all of it, and durable.
        hashkv_writebatch_clear(b);
        for i in 0..20u32 {
            let v = value(i, 2, 300);
            hashkv_writebatch_put(b, key(i).as_ptr(), key(i).len(), v.as_ptr(), v.len());
        }
        hashkv_writebatch_delete(b, b"old".as_ptr(), 3);
        assert_eq!(
            hashkv_write(db, b, 1, &mut err),
            0,
            "{:?}",
            take_err(&mut err)
        );
        // NULLs are refused or ignored, never dereferenced.
        assert_eq!(
            hashkv_write(db, null(), 0, &mut err),
            HASHKV_E_INVALID_ARGUMENT
        );
        assert!(take_err(&mut err).unwrap().contains("batch is NULL"));
        hashkv_writebatch_put(null_mut(), b"k".as_ptr(), 1, b"v".as_ptr(), 1);
        assert_eq!(hashkv_last_errcode(), HASHKV_E_INVALID_ARGUMENT);
        assert_eq!(hashkv_writebatch_count(null()), 0);
        hashkv_writebatch_destroy(b);
        hashkv_writebatch_destroy(null_mut());
    }
    close(db);
    let db = store.open(null()).unwrap();
    for i in 0..20u32 {
        assert_eq!(get(db, &key(i)), Ok(Some(value(i, 2, 300))));
    }
    assert_eq!(get(db, b"old"), Ok(None));
    close(db);
    // SAFETY: live, freed once.
    unsafe { hashkv_options_free(opts) };
}

/// `hashkv_get_into` of `k` into `buf[..cap]` (`buf` NULL when None): (code, length).
fn get_into(db: *mut HashkvDb, k: &[u8], buf: Option<&mut [u8]>, cap: usize) -> (i32, usize) {
    let mut err = null_mut();
    let mut len = 12345usize;
    let p = buf.map_or(null_mut(), |b| {
        assert!(cap <= b.len());
        b.as_mut_ptr()
    });
    // SAFETY: db is live; p is NULL or holds cap writable bytes; len is writable.
    let rc = unsafe { hashkv_get_into(db, k.as_ptr(), k.len(), p, cap, &mut len, &mut err) };
    if rc < 0 {
        failed(rc, &mut err);
    }
    (rc, len)
}

#[test]
fn get_into_copies_only_what_fits() {
    let store = Store::new();
    let opts = new_options(true);
    let db = store.format(opts).unwrap();
    let v = value(7, 1, 1000);
    put(db, b"seven", &v).unwrap();
    let mut buf = vec![0xAAu8; 2000];
    // Too small: nothing copied, the size needed reported.
    let rc = get_into(db, b"seven", Some(&mut buf), 999);
    assert_eq!(rc, (HASHKV_E_BUFFER_TOO_SMALL, 1000));
    assert!(buf.iter().all(|&b| b == 0xAA), "nothing is copied");
    let rc = get_into(db, b"seven", None, 0);
    assert_eq!(rc, (HASHKV_E_BUFFER_TOO_SMALL, 1000));
    // Exactly large enough.
    assert_eq!(get_into(db, b"seven", Some(&mut buf), 1000), (1, 1000));
    assert_eq!(&buf[..1000], &v[..]);
    assert_eq!(buf[1000], 0xAA);
    assert_eq!(get_into(db, b"eight", Some(&mut buf), 2000), (0, 0));
    assert_eq!(
        get_into(db, b"seven", None, 10).0,
        HASHKV_E_INVALID_ARGUMENT
    );
    let mut err = null_mut();
    // SAFETY: db is live; buf holds 2000 bytes; value_len NULL is refused.
    let rc = unsafe {
        hashkv_get_into(
            db,
            b"seven".as_ptr(),
            5,
            buf.as_mut_ptr(),
            2000,
            null_mut(),
            &mut err,
        )
    };
    invalid(rc, &mut err, "value_len is NULL");
    close(db);
    // SAFETY: live, freed once.
    unsafe { hashkv_options_free(opts) };
}

#[test]
fn check_stats_and_version() {
    let store = Store::new();
    let opts = new_options(true);
    let db = store.format(opts).unwrap();
    put(db, b"seven", &value(7, 1, 1000)).unwrap();
    let mut err = null_mut();
    // SAFETY: db is live; the stats outputs hold the sizes passed.
    unsafe {
        assert_eq!(hashkv_flush(db, &mut err), 0);
        assert_eq!(hashkv_check(db, &mut err), 0, "{:?}", take_err(&mut err));
        let mut stats = HashkvStats::default();
        let rc = hashkv_get_stats(db, &mut stats, size_of::<HashkvStats>(), &mut err);
        assert_eq!(rc, 0);
        assert_eq!((stats.user_ops, stats.user_bytes_written), (1, 5 + 1000));
        assert!(
            stats.flushes >= 1 && stats.device_bytes_written >= 1000,
            "{stats:?}"
        );
        assert!(stats.log_segments > 0 && stats.free_log_segments <= stats.log_segments);
        // The appended fields carry the store's figures.
        let mut get_err = null_mut();
        let mut v = null_mut();
        let mut v_len = 0usize;
        for _ in 0..2 {
            let rc = hashkv_get(db, b"seven".as_ptr(), 5, &mut v, &mut v_len, &mut get_err);
            assert_eq!(rc, 1, "{:?}", take_err(&mut get_err));
            hashkv_free(v.cast());
        }
        let mut again = HashkvStats::default();
        assert_eq!(
            hashkv_get_stats(db, &mut again, size_of::<HashkvStats>(), &mut err),
            0
        );
        let rust = (*db).0.stats();
        assert_eq!(again.value_cache_hits, rust.value_cache_hits);
        assert_eq!(again.read_device_bytes, rust.read_device_bytes);
        assert!(
            again.read_device_bytes > stats.read_device_bytes,
            "{again:?}"
        );
        assert_eq!(
            (
                again.demotions,
                again.promotions,
                again.cold_gc_runs,
                again.paced_writes
            ),
            (
                rust.demotions,
                rust.promotions,
                rust.cold_gc_runs,
                rust.paced_writes
            )
        );
        // A caller built against a shorter struct gets only the fields it knows.
        let mut short = [u64::MAX; 3];
        let rc = hashkv_get_stats(db, short.as_mut_ptr().cast(), 16, &mut err);
        assert_eq!(rc, 0);
        assert_eq!(short, [1005, 1, u64::MAX]);
        let rc = hashkv_get_stats(db, null_mut(), 16, &mut err);
        invalid(rc, &mut err, "stats is NULL");
        let version = CStr::from_ptr(hashkv_version()).to_str().unwrap();
        assert_eq!(version, env!("CARGO_PKG_VERSION"));
    }
    close(db);
    // SAFETY: live, freed once.
    unsafe { hashkv_options_free(opts) };
}

#[test]
fn unknown_mode_and_bad_sizes_are_refused_at_format() {
    let store = Store::new();
    let opts = new_options(true);
    let bad = CString::new("btree").unwrap();
    // SAFETY: opts is live; the mode strings are NUL-terminated or NULL.
    unsafe {
        hashkv_options_set_mode(opts, bad.as_ptr());
        assert_eq!(hashkv_last_errcode(), HASHKV_E_INVALID_ARGUMENT);
    }
    let Failed(code, msg) = store.format(opts).unwrap_err();
    assert_eq!(code, HASHKV_E_INVALID_ARGUMENT);
    assert!(msg.contains("btree") && msg.contains("vlog"), "{msg}");
    // SAFETY: as above.
    unsafe { hashkv_options_set_mode(opts, null()) };
    assert!(store.format(opts).unwrap_err().1.contains("mode is NULL"));
    let good = CString::new("vlog").unwrap();
    // SAFETY: as above.
    unsafe {
        hashkv_options_set_mode(opts, good.as_ptr());
        hashkv_options_set_reserved_share(opts, 1.5);
    }
    let Failed(code, msg) = store.format(opts).unwrap_err();
    assert_eq!(code, HASHKV_E_INVALID_ARGUMENT);
    assert!(msg.contains("reserved_share"), "{msg}");
    // SAFETY: as above; NULL options are ignored and recorded.
    unsafe {
        hashkv_options_set_reserved_share(opts, 0.3);
        hashkv_options_set_log_segment_bytes(opts, 1000);
        hashkv_options_set_sync_writes(null_mut(), 1);
        assert_eq!(hashkv_last_errcode(), HASHKV_E_INVALID_ARGUMENT);
    }
    let Failed(code, msg) = store.format(opts).unwrap_err();
    assert_eq!(code, HASHKV_E_INVALID_ARGUMENT);
    assert!(msg.contains("log_segment_bytes"), "{msg}");
    // SAFETY: live, freed once.
    unsafe { hashkv_options_free(opts) };
}

/// Stops a store without its final flush, as a crash would: the write cache is lost.
fn crash(db: *mut HashkvDb) {
    // SAFETY: db came from format/open and nothing uses it afterwards.
    let db = unsafe { Box::from_raw(db) };
    let _ = db.0.crash_for_test();
}

#[test]
fn sync_writes_through_the_c_api_are_durable() {
    let store = Store::new();
    let opts = new_options(true);
    // SAFETY: opts is live.
    unsafe { hashkv_options_set_sync_writes(opts, 1) };
    let db = store.format(opts).unwrap();
    for i in 0..50 {
        put(db, &key(i), &value(i, 1, 700)).unwrap();
    }
    crash(db);
    // Without sync_writes (NULL options), one put_sync is durable on its own.
    let db = store.open(null()).unwrap();
    for i in 0..50 {
        assert_eq!(get(db, &key(i)), Ok(Some(value(i, 1, 700))));
    }
    let mut err = null_mut();
    let v = value(99, 1, 700);
    // SAFETY: db is live; key and value are valid for the call.
    let rc = unsafe {
        hashkv_put_sync(
            db,
            key(99).as_ptr(),
            key(99).len(),
            v.as_ptr(),
            v.len(),
            &mut err,
        )
    };
    assert_eq!(rc, 0, "{:?}", take_err(&mut err));
    crash(db);
    let db = store.open(null()).unwrap();
    assert_eq!(get(db, &key(99)), Ok(Some(v)));
    close(db);
    // SAFETY: live, freed once.
    unsafe { hashkv_options_free(opts) };
}

#[test]
fn a_memory_budget_and_hotness_set_through_the_c_api_take_effect() {
    const BUDGET_BYTES: u64 = 16 * MIB;
    let store = Store::new();
    let opts = new_options(true);
    // SAFETY: opts is live.
    unsafe { hashkv_options_set_memory_budget_bytes(opts, MIB) };
    let Failed(code, msg) = store.format(opts).unwrap_err();
    assert_eq!(code, HASHKV_E_INVALID_ARGUMENT);
    assert!(msg.contains("memory_budget_bytes"), "{msg}");
    // SAFETY: opts is live.
    unsafe {
        hashkv_options_set_memory_budget_bytes(opts, BUDGET_BYTES);
        hashkv_options_set_value_cache_bytes(opts, 64 * MIB);
        hashkv_options_set_hotness(opts, 1);
    }
    let db = store.format(opts).unwrap();
    for i in 0..200 {
        put(db, &key(i), &value(i, 1, 3000)).unwrap();
    }
    let usage = |db: *mut HashkvDb| {
        let mut u = HashkvMemoryUsage::default();
        let mut err = null_mut();
        // SAFETY: db is live; u holds the size passed.
        let rc = unsafe {
            hashkv_get_memory_usage(db, &mut u, size_of::<HashkvMemoryUsage>(), &mut err)
        };
        assert_eq!(rc, 0, "{:?}", take_err(&mut err));
        u
    };
    let u = usage(db);
    // The budget rules the block cache (its share, with any loan of the write side's)
    // and the value cache (the 64 MiB asked for is overridden).
    assert!(u.block_cache_capacity_bytes <= BUDGET_BYTES, "{u:?}");
    assert!(
        u.write_cache_bytes > 0 && u.value_cache_bytes <= BUDGET_BYTES,
        "{u:?}"
    );
    assert_eq!(
        u.total_bytes,
        u.block_cache_bytes
            + u.pinned_index_filter_bytes
            + u.memtable_bytes
            + u.write_cache_bytes
            + u.buffer_pool_bytes
            + u.value_cache_bytes,
        "{u:?}"
    );
    // SAFETY: db is live (the test's own handle).
    let described = unsafe { (*db).0.describe_value_store() };
    assert!(described.contains("hot/cold on"), "{described}");
    let mut err = null_mut();
    // A caller built against a shorter struct gets only the fields it knows.
    let mut short = [u64::MAX; 3];
    // SAFETY: short holds 24 bytes, 16 are passed.
    let rc = unsafe { hashkv_get_memory_usage(db, short.as_mut_ptr().cast(), 16, &mut err) };
    assert_eq!(rc, 0);
    assert!(short[0] > 0 && short[2] == u64::MAX, "{short:?}");
    // SAFETY: NULL output, refused.
    let rc = unsafe { hashkv_get_memory_usage(db, null_mut(), 16, &mut err) };
    invalid(rc, &mut err, "usage is NULL");
    close(db);
    // Without the budget the index's block cache is its own option's (64 MiB).
    let db = store.open(null()).unwrap();
    assert!(usage(db).block_cache_capacity_bytes > BUDGET_BYTES);
    // SAFETY: db is live.
    let described = unsafe { (*db).0.describe_value_store() };
    assert!(described.contains("hot/cold off"), "{described}");
    close(db);
    // SAFETY: live, freed once.
    unsafe { hashkv_options_free(opts) };
}

#[test]
fn a_delete_sync_through_the_c_api_is_durable() {
    let store = Store::new();
    let db = store.format(new_options(true)).unwrap();
    for i in 0..20 {
        put(db, &key(i), &value(i, 1, 700)).unwrap();
    }
    let mut err = null_mut();
    // SAFETY: db is live.
    assert_eq!(unsafe { hashkv_flush(db, &mut err) }, 0);
    // SAFETY: db is live; the key is valid for the call.
    let rc = unsafe { hashkv_delete_sync(db, key(3).as_ptr(), key(3).len(), &mut err) };
    assert_eq!(rc, 0, "{:?}", take_err(&mut err));
    crash(db);
    let db = store.open(null()).unwrap();
    assert_eq!(
        get(db, &key(3)),
        Ok(None),
        "the synced delete survived the crash"
    );
    assert_eq!(get(db, &key(4)), Ok(Some(value(4, 1, 700))));
    // SAFETY: NULL handle, refused.
    let rc = unsafe { hashkv_delete_sync(null_mut(), key(3).as_ptr(), 3, &mut err) };
    invalid(rc, &mut err, "db is NULL");
    close(db);
}
