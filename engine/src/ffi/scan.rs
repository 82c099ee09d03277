//! `hashkv_iter`: range scans.

use super::args;
use super::errors::{guard, guard_ptr, Failure};
use super::open::{db_ref, HashkvDb};
use crate::Db;
use crate::ScanIter;
use std::ffi::{c_char, c_int};
use std::ops::Bound;

/// A scan in progress; free it before closing its store.
// The scan borrows its store: the header requires it to be freed before the store is
// closed, which is what the 'static stands for.
pub struct HashkvIter(ScanIter<'static>);

/// Starts a scan of the keys in [lower, upper) in ascending order. A NULL bound is
/// unbounded; an empty range yields nothing. The scan sees the writes that returned
/// before it started, and may or may not see later ones.
///
/// Returns the iterator, or NULL on failure. Ownership: the caller frees it with
/// `hashkv_iter_free`, before `hashkv_close` of its store; the bounds are copied.
/// Threads: one thread at a time per iterator (it may move between threads); the
/// store may serve other calls meanwhile.
///
/// # Safety
/// `db` is NULL (refused) or a live handle that outlives the iterator; a non-NULL
/// `lower`/`upper` points to `lower_len`/`upper_len` readable bytes; `errptr` as for
/// `hashkv_format`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_scan(
    db: *mut HashkvDb,
    lower: *const u8,
    lower_len: usize,
    upper: *const u8,
    upper_len: usize,
    errptr: *mut *mut c_char,
) -> *mut HashkvIter {
    // SAFETY: every argument as this function's caller promised.
    unsafe { start_scan(db, lower, lower_len, upper, upper_len, None, errptr) }
}

/// As `hashkv_scan`, but the scan yields at most `limit` pairs and reads no value
/// beyond them: for a scan of a known count (YCSB's E), which otherwise reads values
/// ahead that the caller never takes.
///
/// # Safety
/// As for `hashkv_scan`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_scan_limit(
    db: *mut HashkvDb,
    lower: *const u8,
    lower_len: usize,
    upper: *const u8,
    upper_len: usize,
    limit: usize,
    errptr: *mut *mut c_char,
) -> *mut HashkvIter {
    // SAFETY: every argument as this function's caller promised.
    unsafe { start_scan(db, lower, lower_len, upper, upper_len, Some(limit), errptr) }
}

/// `hashkv_scan` and `hashkv_scan_limit`.
///
/// # Safety
/// As for `hashkv_scan`.
unsafe fn start_scan(
    db: *mut HashkvDb,
    lower: *const u8,
    lower_len: usize,
    upper: *const u8,
    upper_len: usize,
    limit: Option<usize>,
    errptr: *mut *mut c_char,
) -> *mut HashkvIter {
    let body = || {
        // SAFETY: db and the bounds as this function's caller promised. The caller
        // also promised the store outlives the iterator, which 'static names.
        let (db, lo, hi): (&'static Db, _, _) = unsafe {
            (
                db_ref(db)?,
                bound(lower, lower_len, "lower")?,
                bound(upper, upper_len, "upper")?,
            )
        };
        let lo = lo.map_or(Bound::Unbounded, Bound::Included);
        let hi = hi.map_or(Bound::Unbounded, Bound::Excluded);
        let mut it = db.scan(lo, hi)?;
        if let Some(limit) = limit {
            it = it.limit(limit);
        }
        Ok(Box::into_raw(Box::new(HashkvIter(it))))
    };
    // SAFETY: errptr as this function's caller promised.
    unsafe { guard_ptr(errptr, body) }
}

/// A scan bound: None for NULL (unbounded).
///
/// # Safety
/// As `args::bytes` for a non-NULL `p`.
unsafe fn bound<'a>(p: *const u8, len: usize, what: &str) -> Result<Option<&'a [u8]>, Failure> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and readable for len bytes, as the caller promised.
    unsafe { args::bytes(p, len, what) }.map(Some)
}

/// Moves to the next pair.
///
/// Returns 1 with `*key`/`*value` and their lengths set, 0 at the end (the outputs
/// are left unchanged), or a negative code (`HASHKV_E_CORRUPTION` for a damaged
/// record: the scan stops there). Ownership: the caller frees `*key` and `*value` with
/// `hashkv_free`. Threads: as `hashkv_scan`.
///
/// # Safety
/// `it` is NULL (refused) or a live iterator used by no other thread during the call;
/// the four outputs are NULL (refused) or writable; `errptr` as for `hashkv_format`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_iter_next(
    it: *mut HashkvIter,
    key: *mut *mut u8,
    key_len: *mut usize,
    value: *mut *mut u8,
    value_len: *mut usize,
    errptr: *mut *mut c_char,
) -> c_int {
    let body = || {
        // SAFETY: the pointers as this function's caller promised.
        let (it, key, key_len, value, value_len) = unsafe {
            (
                it.as_mut()
                    .ok_or_else(|| Failure::invalid("iterator is NULL"))?,
                args::out(key, "key")?,
                args::out(key_len, "key_len")?,
                args::out(value, "value")?,
                args::out(value_len, "value_len")?,
            )
        };
        let Some((k, v)) = it.0.next().transpose()? else {
            return Ok(0);
        };
        let kp = args::malloc_copy(&k)?;
        let vp = match args::malloc_copy(&v) {
            Ok(p) => p,
            Err(f) => {
                // SAFETY: kp is from malloc and not handed out.
                unsafe { libc::free(kp.cast()) };
                return Err(f);
            }
        };
        (*key, *key_len, *value, *value_len) = (kp, k.len(), vp, v.len());
        Ok(1)
    };
    // SAFETY: errptr as this function's caller promised.
    unsafe { guard(errptr, body) }
}

/// Frees an iterator. NULL is ignored.
///
/// # Safety
/// `it` is NULL or came from `hashkv_scan` or `hashkv_scan_limit` and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn hashkv_iter_free(it: *mut HashkvIter) {
    if !it.is_null() {
        // SAFETY: it came from hashkv_scan (a Box) and is freed once.
        drop(unsafe { Box::from_raw(it) });
    }
}

// A C program may move an iterator between threads (one at a time), as the header
// allows: the scan must be Send.
const _: () = {
    const fn send<T: Send>() {}
    send::<HashkvIter>();
};
