//! The C ABI (engine/src/ffi.rs, engine/include/hashkv.h), called as C would call it:
//! raw pointers, malloc'd results freed with `hashkv_free`, error strings for bad input.
//! Also compile-checks the header with `cc` when there is one.

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
    hashkv_free(*err as *mut c_void);
    *err = null_mut();
    Some(s)
}

fn cstr(p: &std::path::Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

fn new_options(create: bool) -> *mut HashkvOptions {
    let o = hashkv_options_new();
    assert!(!o.is_null());
    hashkv_options_set_main_segment_bytes(o, MIB);
    hashkv_options_set_log_segment_bytes(o, 64 << 10);
    hashkv_options_set_write_cache_bytes(o, 256 << 10);
    hashkv_options_set_separation_threshold_bytes(o, 100);
    hashkv_options_set_reserved_share(o, 0.3);
    if create {
        hashkv_options_set_create_device_bytes(o, 16 * MIB);
    }
    o
}

/// Takes a malloc'd buffer from hashkv, freeing it.
fn take_bytes(p: *mut u8, len: usize) -> Vec<u8> {
    assert!(!p.is_null());
    // SAFETY: hashkv handed out `len` readable bytes at p; freed once here.
    let v = unsafe { std::slice::from_raw_parts(p, len) }.to_vec();
    hashkv_free(p as *mut c_void);
    v
}

fn get(db: *mut HashkvDb, k: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut err = null_mut();
    let (mut v, mut len) = (null_mut(), 0usize);
    match hashkv_get(db, k.as_ptr(), k.len(), &mut v, &mut len, &mut err) {
        1 => Ok(Some(take_bytes(v, len))),
        0 => Ok(None),
        rc => {
            assert_eq!(rc, -1);
            Err(take_err(&mut err).expect("error message"))
        }
    }
}

fn put(db: *mut HashkvDb, k: &[u8], v: &[u8]) -> Result<(), String> {
    let mut err = null_mut();
    match hashkv_put(db, k.as_ptr(), k.len(), v.as_ptr(), v.len(), &mut err) {
        0 => {
            assert!(err.is_null());
            Ok(())
        }
        rc => {
            assert_eq!(rc, -1);
            Err(take_err(&mut err).expect("error message"))
        }
    }
}

fn scan(db: *mut HashkvDb, lo: Option<&[u8]>, hi: Option<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut err = null_mut();
    let (lp, ll) = lo.map_or((null(), 0), |l| (l.as_ptr(), l.len()));
    let (hp, hl) = hi.map_or((null(), 0), |h| (h.as_ptr(), h.len()));
    let it = hashkv_scan(db, lp, ll, hp, hl, &mut err);
    assert!(!it.is_null(), "scan: {:?}", take_err(&mut err));
    let mut out = Vec::new();
    loop {
        let (mut k, mut kl, mut v, mut vl) = (null_mut(), 0, null_mut(), 0);
        match hashkv_iter_next(it, &mut k, &mut kl, &mut v, &mut vl, &mut err) {
            1 => out.push((take_bytes(k, kl), take_bytes(v, vl))),
            0 => break,
            _ => panic!("iter_next: {:?}", take_err(&mut err)),
        }
    }
    hashkv_iter_free(it);
    out
}

#[test]
fn format_put_get_delete_scan_flush_close_reopen() {
    let dir = disk_dir();
    let dev = cstr(&dir.path().join("dev.img"));
    let meta = cstr(&dir.path().join("meta"));
    let devs = [dev.as_ptr()];
    let opts = new_options(true);
    let mut err = null_mut();
    let db = hashkv_format(devs.as_ptr(), 1, meta.as_ptr(), opts, &mut err);
    assert!(!db.is_null(), "format: {:?}", take_err(&mut err));
    assert!(err.is_null());
    let mut model = std::collections::BTreeMap::new();
    for i in 0..300u32 {
        let v = value(i, 1, [20, 500, 3000][(i % 3) as usize]);
        put(db, &key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    // An empty value is a value, not a delete.
    put(db, b"empty", b"").unwrap();
    model.insert(b"empty".to_vec(), Vec::new());
    for i in (0..300u32).step_by(5) {
        assert_eq!(
            hashkv_delete(db, key(i).as_ptr(), key(i).len(), &mut err),
            0
        );
        model.remove(&key(i));
    }
    assert_eq!(get(db, &key(0)), Ok(None));
    assert_eq!(get(db, &key(1)), Ok(Some(value(1, 1, 500))));
    assert_eq!(get(db, b"empty"), Ok(Some(Vec::new())));
    assert_eq!(get(db, b"never"), Ok(None));
    assert_eq!(hashkv_flush(db, &mut err), 0, "{:?}", take_err(&mut err));
    let all: Vec<_> = model.clone().into_iter().collect();
    assert_eq!(scan(db, None, None), all);
    // [key(10), key(20)): lower inclusive, upper exclusive.
    let part: Vec<_> = model
        .range(key(10)..key(20))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(scan(db, Some(&key(10)), Some(&key(20))), part);
    assert!(scan(db, Some(&key(20)), Some(&key(10))).is_empty());
    assert_eq!(hashkv_close(db, &mut err), 0, "{:?}", take_err(&mut err));
    // Reopen with the same segment sizes (no create size needed).
    let opts2 = new_options(false);
    let db = hashkv_open(devs.as_ptr(), 1, meta.as_ptr(), opts2, &mut err);
    assert!(!db.is_null(), "open: {:?}", take_err(&mut err));
    for (k, v) in &model {
        assert_eq!(get(db, k).as_ref(), Ok(&Some(v.clone())));
    }
    assert_eq!(scan(db, None, None), all);
    assert_eq!(hashkv_close(db, &mut err), 0);
    hashkv_options_free(opts);
    hashkv_options_free(opts2);
    hashkv_options_free(null_mut());
}

#[test]
fn errors_are_messages_and_null_is_safe() {
    let dir = disk_dir();
    let dev = cstr(&dir.path().join("dev.img"));
    let meta = cstr(&dir.path().join("meta"));
    let devs = [dev.as_ptr()];
    let opts = new_options(true);
    let mut err = null_mut();
    // NULL database everywhere.
    let k = b"k";
    let (mut v, mut vl) = (null_mut(), 0usize);
    assert_eq!(
        hashkv_put(null_mut(), k.as_ptr(), 1, k.as_ptr(), 1, &mut err),
        -1
    );
    assert!(take_err(&mut err).unwrap().contains("NULL database"));
    assert_eq!(
        hashkv_get(null_mut(), k.as_ptr(), 1, &mut v, &mut vl, &mut err),
        -1
    );
    assert!(take_err(&mut err).unwrap().contains("NULL"));
    assert_eq!(hashkv_delete(null_mut(), k.as_ptr(), 1, &mut err), -1);
    assert!(take_err(&mut err).is_some());
    assert_eq!(hashkv_flush(null_mut(), &mut err), -1);
    assert!(take_err(&mut err).is_some());
    assert_eq!(hashkv_close(null_mut(), &mut err), -1);
    assert!(take_err(&mut err).is_some());
    assert!(hashkv_scan(null_mut(), null(), 0, null(), 0, &mut err).is_null());
    assert!(take_err(&mut err).is_some());
    let (mut kp, mut kl) = (null_mut(), 0usize);
    assert_eq!(
        hashkv_iter_next(null_mut(), &mut kp, &mut kl, &mut v, &mut vl, &mut err),
        -1
    );
    assert!(take_err(&mut err).unwrap().contains("NULL iterator"));
    hashkv_iter_free(null_mut());
    hashkv_free(null_mut());
    // A NULL errptr is allowed: the return code alone says it failed.
    assert_eq!(hashkv_flush(null_mut(), null_mut()), -1);
    // Bad paths and arguments to format/open.
    assert!(hashkv_format(null(), 0, meta.as_ptr(), opts, &mut err).is_null());
    assert!(take_err(&mut err).unwrap().contains("no device"));
    assert!(hashkv_format(devs.as_ptr(), 1, null(), opts, &mut err).is_null());
    assert!(take_err(&mut err).unwrap().contains("NULL path"));
    let missing = cstr(&dir.path().join("missing.img"));
    let mdevs = [missing.as_ptr()];
    assert!(hashkv_open(mdevs.as_ptr(), 1, meta.as_ptr(), opts, &mut err).is_null());
    let m = take_err(&mut err).unwrap();
    assert!(m.contains("missing.img"), "{m}");
    // Defaults (64 MiB main segments) on a 16 MiB device: too small, said so.
    let small_opts = hashkv_options_new();
    hashkv_options_set_create_device_bytes(small_opts, 16 * MIB);
    let small = cstr(&dir.path().join("small.img"));
    let sdevs = [small.as_ptr()];
    assert!(hashkv_format(sdevs.as_ptr(), 1, meta.as_ptr(), small_opts, &mut err).is_null());
    let m = take_err(&mut err).unwrap();
    assert!(m.contains("too small"), "{m}");
    hashkv_options_free(small_opts);
    // A real store: bad keys and values are refused with messages, nothing changes.
    let db = hashkv_format(devs.as_ptr(), 1, meta.as_ptr(), opts, &mut err);
    assert!(!db.is_null(), "format: {:?}", take_err(&mut err));
    put(db, b"keep", b"me").unwrap();
    let long = vec![b'x'; hashkv::KEY_BYTES_MAX + 1];
    let m = put(db, &long, b"v").unwrap_err();
    assert!(m.contains("exceeds the limit"), "{m}");
    let m = get(db, &long).unwrap_err();
    assert!(m.contains("exceeds the limit"), "{m}");
    let m = put(db, b"", b"v").unwrap_err();
    assert!(m.contains("empty"), "{m}");
    let m = put(db, b"big", &vec![0u8; 64 << 10]).unwrap_err();
    assert!(m.contains("value of"), "{m}");
    // NULL buffers with a length are refused; NULL with length 0 is an empty slice.
    assert_eq!(hashkv_put(db, null(), 3, b"v".as_ptr(), 1, &mut err), -1);
    assert!(take_err(&mut err).unwrap().contains("NULL buffer"));
    assert_eq!(hashkv_put(db, b"nv".as_ptr(), 2, null(), 0, &mut err), 0);
    assert_eq!(get(db, b"nv"), Ok(Some(Vec::new())));
    assert_eq!(
        hashkv_get(db, b"keep".as_ptr(), 4, null_mut(), &mut vl, &mut err),
        -1
    );
    assert!(take_err(&mut err).unwrap().contains("NULL output"));
    assert_eq!(get(db, b"keep"), Ok(Some(b"me".to_vec())));
    // A second opener of the same device gets a message, the first keeps working.
    assert!(hashkv_open(devs.as_ptr(), 1, meta.as_ptr(), opts, &mut err).is_null());
    let m = take_err(&mut err).unwrap();
    assert!(m.contains("already opened") || m.contains("lock"), "{m}");
    assert_eq!(hashkv_close(db, &mut err), 0);
    // Opening with other segment sizes: a mismatch message.
    let other = new_options(false);
    hashkv_options_set_log_segment_bytes(other, 32 << 10);
    assert!(hashkv_open(devs.as_ptr(), 1, meta.as_ptr(), other, &mut err).is_null());
    let m = take_err(&mut err).unwrap();
    assert!(m.contains("other parameters"), "{m}");
    hashkv_options_free(other);
    // Formatting it again without force: refused; with force: works.
    assert!(hashkv_format(devs.as_ptr(), 1, meta.as_ptr(), opts, &mut err).is_null());
    let m = take_err(&mut err).unwrap();
    assert!(m.contains("force"), "{m}");
    hashkv_options_set_force_format(opts, 1);
    let db = hashkv_format(devs.as_ptr(), 1, meta.as_ptr(), opts, &mut err);
    assert!(!db.is_null(), "forced format: {:?}", take_err(&mut err));
    assert_eq!(get(db, b"keep"), Ok(None));
    assert_eq!(hashkv_close(db, null_mut()), 0);
    hashkv_options_free(opts);
}

#[test]
fn sync_writes_through_the_c_api_are_durable() {
    let dir = disk_dir();
    let dev = cstr(&dir.path().join("dev.img"));
    let meta = cstr(&dir.path().join("meta"));
    let devs = [dev.as_ptr()];
    let opts = new_options(true);
    hashkv_options_set_sync_writes(opts, 1);
    let mut err = null_mut();
    let db = hashkv_format(devs.as_ptr(), 1, meta.as_ptr(), opts, &mut err);
    assert!(!db.is_null(), "{:?}", take_err(&mut err));
    for i in 0..50 {
        put(db, &key(i), &value(i, 1, 700)).unwrap();
    }
    assert_eq!(hashkv_close(db, &mut err), 0);
    let db = hashkv_open(devs.as_ptr(), 1, meta.as_ptr(), opts, &mut err);
    assert!(!db.is_null(), "{:?}", take_err(&mut err));
    for i in 0..50 {
        assert_eq!(get(db, &key(i)), Ok(Some(value(i, 1, 700))));
    }
    assert_eq!(hashkv_close(db, &mut err), 0);
    hashkv_options_free(opts);
}

#[test]
fn header_compiles_as_c_and_cxx() {
    let header = concat!(env!("CARGO_MANIFEST_DIR"), "/include/hashkv.h");
    let has_cc = std::process::Command::new("cc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cc {
        println!("skipped: no cc");
        return;
    }
    let out = std::process::Command::new("cc")
        .args([
            "-fsyntax-only",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-x",
            "c",
            header,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cc -fsyntax-only -x c hashkv.h: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A small program using every declaration, type-checked against the header.
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("use.c");
    std::fs::write(
        &prog,
        r#"#include "hashkv.h"
int use(void) {
    char *err = NULL;
    hashkv_options *o = hashkv_options_new();
    hashkv_options_set_main_segment_bytes(o, 1 << 20);
    hashkv_options_set_log_segment_bytes(o, 1 << 16);
    hashkv_options_set_reserved_share(o, 0.3);
    hashkv_options_set_write_cache_bytes(o, 0);
    hashkv_options_set_separation_threshold_bytes(o, 128);
    hashkv_options_set_sync_writes(o, 1);
    hashkv_options_set_force_format(o, 0);
    hashkv_options_set_create_device_bytes(o, 1 << 24);
    const char *devs[1] = {"dev.img"};
    hashkv_db *db = hashkv_format(devs, 1, "meta", o, &err);
    if (!db) db = hashkv_open(devs, 1, "meta", o, &err);
    uint8_t *v; size_t vl; uint8_t *k; size_t kl;
    hashkv_put(db, (const uint8_t *)"k", 1, (const uint8_t *)"v", 1, &err);
    hashkv_get(db, (const uint8_t *)"k", 1, &v, &vl, &err);
    hashkv_free(v);
    hashkv_delete(db, (const uint8_t *)"k", 1, &err);
    hashkv_flush(db, &err);
    hashkv_iter *it = hashkv_scan(db, NULL, 0, NULL, 0, &err);
    while (hashkv_iter_next(it, &k, &kl, &v, &vl, &err) == 1) { hashkv_free(k); hashkv_free(v); }
    hashkv_iter_free(it);
    int rc = hashkv_close(db, &err);
    hashkv_free(err);
    hashkv_options_free(o);
    return rc;
}
"#,
    )
    .unwrap();
    let include = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
    for lang in ["c", "c++"] {
        let out = std::process::Command::new("cc")
            .args([
                "-fsyntax-only",
                "-Wall",
                "-Werror",
                "-x",
                lang,
                "-I",
                include,
            ])
            .arg(&prog)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cc -x {lang} use.c: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
