//! The C ABI declared in `include/hashkv.h`. Every function checks its pointers for
//! NULL, turns errors into messages, and never unwinds into C (panics are caught).

use crate::db::Db;
use crate::options::Options;
use crate::scan::ScanIter;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

pub struct HashkvOptions(Options);
pub struct HashkvDb(Db);
/// A scan borrowing its database; the header requires it to be freed first.
pub struct HashkvIter(ScanIter<'static>);

/// Hands an error message to C in malloc'd memory, so `hashkv_free` frees it.
fn set_error(errptr: *mut *mut c_char, msg: String) {
    if errptr.is_null() {
        return;
    }
    let c = CString::new(msg.replace('\0', " ")).expect("no interior NUL");
    let bytes = c.as_bytes_with_nul();
    // SAFETY: malloc of a non-zero size, checked for NULL before use.
    let p = unsafe { libc::malloc(bytes.len()) } as *mut u8;
    if p.is_null() {
        return;
    }
    // SAFETY: p holds bytes.len() bytes; errptr is non-NULL and the caller passes a
    // valid char** to write.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        *errptr = p as *mut c_char;
    }
}

/// Runs `f`, turning an error or a panic into -1 and a message.
fn guard(errptr: *mut *mut c_char, f: impl FnOnce() -> Result<c_int, String>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(msg)) => {
            set_error(errptr, msg);
            -1
        }
        Err(_) => {
            set_error(errptr, "hashkv: internal panic".into());
            -1
        }
    }
}

/// Copies bytes into a buffer C can free with `hashkv_free` (malloc'd).
fn to_c_bytes(bytes: &[u8], out: *mut *mut u8, out_len: *mut usize) -> Result<(), String> {
    if out.is_null() || out_len.is_null() {
        return Err("NULL output pointer".into());
    }
    // SAFETY: malloc with a non-zero size; the result is checked for NULL before use.
    let p = unsafe { libc::malloc(bytes.len().max(1)) } as *mut u8;
    if p.is_null() {
        return Err("out of memory".into());
    }
    // SAFETY: p has room for bytes.len() bytes and does not overlap `bytes`; out and
    // out_len were checked for NULL and point to caller-owned storage.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        *out = p;
        *out_len = bytes.len();
    }
    Ok(())
}

fn slice<'a>(p: *const u8, len: usize) -> Result<&'a [u8], String> {
    if p.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err("NULL buffer with non-zero length".into())
        };
    }
    // SAFETY: the caller promises p points to len readable bytes for the call.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

fn paths(devices: *const *const c_char, count: usize) -> Result<Vec<PathBuf>, String> {
    if devices.is_null() || count == 0 {
        return Err("no device given".into());
    }
    // SAFETY: the caller passes an array of `count` C strings.
    let ptrs = unsafe { std::slice::from_raw_parts(devices, count) };
    ptrs.iter().map(|&p| c_path(p)).collect()
}

fn c_path(p: *const c_char) -> Result<PathBuf, String> {
    if p.is_null() {
        return Err("NULL path".into());
    }
    // SAFETY: non-NULL, and the caller promises a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(p) };
    Ok(PathBuf::from(
        s.to_str().map_err(|_| "path is not UTF-8".to_string())?,
    ))
}

fn db_ref<'a>(db: *mut HashkvDb) -> Result<&'a Db, String> {
    // SAFETY: a non-NULL db comes from hashkv_open/hashkv_format and is live until
    // hashkv_close.
    unsafe { db.as_ref() }
        .map(|d| &d.0)
        .ok_or_else(|| "NULL database".to_string())
}

#[no_mangle]
pub extern "C" fn hashkv_options_new() -> *mut HashkvOptions {
    Box::into_raw(Box::new(HashkvOptions(Options::default())))
}

#[no_mangle]
pub extern "C" fn hashkv_options_free(opts: *mut HashkvOptions) {
    if !opts.is_null() {
        // SAFETY: opts came from hashkv_options_new and is freed once.
        drop(unsafe { Box::from_raw(opts) });
    }
}

macro_rules! option_setter {
    ($name:ident, $ty:ty, |$o:ident, $v:ident| $body:expr) => {
        #[no_mangle]
        pub extern "C" fn $name(opts: *mut HashkvOptions, $v: $ty) {
            // SAFETY: opts is NULL (ignored) or came from hashkv_options_new.
            if let Some(HashkvOptions($o)) = unsafe { opts.as_mut() } {
                $body;
            }
        }
    };
}

option_setter!(hashkv_options_set_main_segment_bytes, u64, |o, v| o
    .main_segment_bytes =
    v);
option_setter!(hashkv_options_set_log_segment_bytes, u64, |o, v| o
    .log_segment_bytes =
    v);
option_setter!(hashkv_options_set_reserved_share, f64, |o, v| o
    .reserved_share =
    v);
option_setter!(hashkv_options_set_write_cache_bytes, u64, |o, v| o
    .write_cache_bytes =
    v);
option_setter!(
    hashkv_options_set_separation_threshold_bytes,
    u64,
    |o, v| o.separation_threshold_bytes = v
);
option_setter!(hashkv_options_set_sync_writes, c_int, |o, v| o
    .sync_writes =
    v != 0);
option_setter!(hashkv_options_set_force_format, c_int, |o, v| o
    .force_format =
    v != 0);
option_setter!(hashkv_options_set_create_device_bytes, u64, |o, v| o
    .create_device_bytes =
    Some(v));

fn open_common(
    devices: *const *const c_char,
    count: usize,
    metadata_dir: *const c_char,
    opts: *const HashkvOptions,
    errptr: *mut *mut c_char,
    format: bool,
) -> *mut HashkvDb {
    let mut out = std::ptr::null_mut();
    guard(errptr, || {
        let paths = paths(devices, count)?;
        let dir = c_path(metadata_dir)?;
        // SAFETY: opts is NULL (defaults) or came from hashkv_options_new.
        let options = unsafe { opts.as_ref() }
            .map(|o| o.0.clone())
            .unwrap_or_default();
        let db = if format {
            Db::format(&paths, &dir, &options)
        } else {
            Db::open(&paths, &dir, &options)
        }
        .map_err(|e| e.to_string())?;
        out = Box::into_raw(Box::new(HashkvDb(db)));
        Ok(0)
    });
    out
}

#[no_mangle]
pub extern "C" fn hashkv_format(
    devices: *const *const c_char,
    device_count: usize,
    metadata_dir: *const c_char,
    opts: *const HashkvOptions,
    errptr: *mut *mut c_char,
) -> *mut HashkvDb {
    open_common(devices, device_count, metadata_dir, opts, errptr, true)
}

#[no_mangle]
pub extern "C" fn hashkv_open(
    devices: *const *const c_char,
    device_count: usize,
    metadata_dir: *const c_char,
    opts: *const HashkvOptions,
    errptr: *mut *mut c_char,
) -> *mut HashkvDb {
    open_common(devices, device_count, metadata_dir, opts, errptr, false)
}

#[no_mangle]
pub extern "C" fn hashkv_close(db: *mut HashkvDb, errptr: *mut *mut c_char) -> c_int {
    guard(errptr, || {
        if db.is_null() {
            return Err("NULL database".into());
        }
        // SAFETY: db came from hashkv_open/hashkv_format and is closed once.
        let db = unsafe { Box::from_raw(db) };
        db.0.close().map_err(|e| e.to_string())?;
        Ok(0)
    })
}

#[no_mangle]
pub extern "C" fn hashkv_put(
    db: *mut HashkvDb,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    errptr: *mut *mut c_char,
) -> c_int {
    guard(errptr, || {
        db_ref(db)?
            .put(slice(key, key_len)?, slice(value, value_len)?)
            .map_err(|e| e.to_string())?;
        Ok(0)
    })
}

#[no_mangle]
pub extern "C" fn hashkv_delete(
    db: *mut HashkvDb,
    key: *const u8,
    key_len: usize,
    errptr: *mut *mut c_char,
) -> c_int {
    guard(errptr, || {
        db_ref(db)?
            .delete(slice(key, key_len)?)
            .map_err(|e| e.to_string())?;
        Ok(0)
    })
}

#[no_mangle]
pub extern "C" fn hashkv_get(
    db: *mut HashkvDb,
    key: *const u8,
    key_len: usize,
    value: *mut *mut u8,
    value_len: *mut usize,
    errptr: *mut *mut c_char,
) -> c_int {
    guard(errptr, || {
        match db_ref(db)?
            .get(slice(key, key_len)?)
            .map_err(|e| e.to_string())?
        {
            Some(v) => {
                to_c_bytes(&v, value, value_len)?;
                Ok(1)
            }
            None => Ok(0),
        }
    })
}

#[no_mangle]
pub extern "C" fn hashkv_flush(db: *mut HashkvDb, errptr: *mut *mut c_char) -> c_int {
    guard(errptr, || {
        db_ref(db)?.flush().map_err(|e| e.to_string())?;
        Ok(0)
    })
}

#[no_mangle]
pub extern "C" fn hashkv_scan(
    db: *mut HashkvDb,
    lower: *const u8,
    lower_len: usize,
    upper: *const u8,
    upper_len: usize,
    errptr: *mut *mut c_char,
) -> *mut HashkvIter {
    let mut out = std::ptr::null_mut();
    guard(errptr, || {
        let db: &'static Db = {
            let d = db_ref(db)?;
            // SAFETY: the header requires iterators to be freed before hashkv_close,
            // so the database outlives the iterator; 'static only names that contract.
            unsafe { &*(d as *const Db) }
        };
        let lo = if lower.is_null() {
            Bound::Unbounded
        } else {
            Bound::Included(slice(lower, lower_len)?)
        };
        let hi = if upper.is_null() {
            Bound::Unbounded
        } else {
            Bound::Excluded(slice(upper, upper_len)?)
        };
        let it = db.scan(lo, hi).map_err(|e| e.to_string())?;
        out = Box::into_raw(Box::new(HashkvIter(it)));
        Ok(0)
    });
    out
}

#[no_mangle]
pub extern "C" fn hashkv_iter_next(
    it: *mut HashkvIter,
    key: *mut *mut u8,
    key_len: *mut usize,
    value: *mut *mut u8,
    value_len: *mut usize,
    errptr: *mut *mut c_char,
) -> c_int {
    guard(errptr, || {
        // SAFETY: a non-NULL it came from hashkv_scan and is not yet freed.
        let it = unsafe { it.as_mut() }.ok_or_else(|| "NULL iterator".to_string())?;
        match it.0.next() {
            None => Ok(0),
            Some(Err(e)) => Err(e.to_string()),
            Some(Ok((k, v))) => {
                to_c_bytes(&k, key, key_len)?;
                to_c_bytes(&v, value, value_len)?;
                Ok(1)
            }
        }
    })
}

#[no_mangle]
pub extern "C" fn hashkv_iter_free(it: *mut HashkvIter) {
    if !it.is_null() {
        // SAFETY: it came from hashkv_scan and is freed once.
        drop(unsafe { Box::from_raw(it) });
    }
}

/// Frees memory hashkv handed out: values, keys (malloc'd) and error strings.
#[no_mangle]
pub extern "C" fn hashkv_free(ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: every pointer hashkv hands to C for freeing is malloc'd (to_c_bytes and
    // set_error), and the caller frees each once.
    unsafe { libc::free(ptr) }
}
