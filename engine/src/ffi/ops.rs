//! Single-key operations, the multi-key get, and flush.

use super::args;
use super::errors::{guard, Failure, HASHKV_E_BUFFER_TOO_SMALL};
use super::open::{db_ref, HashkvDb};
use std::ffi::{c_char, c_int};

/// Stores `value` under `key`. Durable after the next flush (or at once with
/// `hashkv_options_set_sync_writes`); use `hashkv_put_sync` for one durable write.
/// Keys are 1 to `HASHKV_KEY_BYTES_MAX` bytes (others are refused with
/// `HASHKV_E_INVALID_ARGUMENT`); a value must fit in one log segment. A NULL `value`
/// with length 0 stores the empty value.
///
/// Returns 0, or a negative code (`HASHKV_E_STORE_FULL`: nothing changed).
/// Ownership: key and value are copied. Threads: any, concurrently with other calls
/// on the handle.
///
/// # Safety
/// `db` is NULL (refused) or a live handle; `key` and `value` are NULL or point to
/// `key_len`/`value_len` readable bytes; `errptr` as for `hashkv_format`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_put(
    db: *mut HashkvDb,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    errptr: *mut *mut c_char,
) -> c_int {
    let body = || {
        // SAFETY: db, key and value as this function's caller promised.
        let (db, key, value) = unsafe {
            (
                db_ref(db)?,
                args::bytes(key, key_len, "key")?,
                args::bytes(value, value_len, "value")?,
            )
        };
        db.put(key, value)?;
        Ok(0)
    };
    // SAFETY: errptr as this function's caller promised.
    unsafe { guard(errptr, body) }
}

/// `hashkv_put`, durable when it returns 0 (writers that sync at the same time share
/// one device flush).
///
/// # Safety
/// As `hashkv_put`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_put_sync(
    db: *mut HashkvDb,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    errptr: *mut *mut c_char,
) -> c_int {
    let body = || {
        // SAFETY: db, key and value as this function's caller promised.
        let (db, key, value) = unsafe {
            (
                db_ref(db)?,
                args::bytes(key, key_len, "key")?,
                args::bytes(value, value_len, "value")?,
            )
        };
        db.put_sync(key, value)?;
        Ok(0)
    };
    // SAFETY: errptr as this function's caller promised.
    unsafe { guard(errptr, body) }
}

/// Deletes `key` (a key that is not there is not an error). Durability as
/// `hashkv_put`.
///
/// Returns 0 or a negative code. Threads: any, concurrently with other calls.
///
/// # Safety
/// `db` is NULL (refused) or a live handle; `key` is NULL or points to `key_len`
/// readable bytes; `errptr` as for `hashkv_format`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_delete(
    db: *mut HashkvDb,
    key: *const u8,
    key_len: usize,
    errptr: *mut *mut c_char,
) -> c_int {
    // SAFETY: as this function's caller promised.
    unsafe { delete_key(db, key, key_len, errptr, false) }
}

/// Deletes `key`, durable when it returns, with every write acknowledged before it
/// (concurrent sync writers share one flush).
///
/// Returns 0 or a negative code. Threads: any, concurrently with other calls.
///
/// # Safety
/// `db` is NULL (refused) or a live handle; `key` is NULL or points to `key_len`
/// readable bytes; `errptr` as for `hashkv_format`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_delete_sync(
    db: *mut HashkvDb,
    key: *const u8,
    key_len: usize,
    errptr: *mut *mut c_char,
) -> c_int {
    // SAFETY: as this function's caller promised.
    unsafe { delete_key(db, key, key_len, errptr, true) }
}

/// `hashkv_delete` and, `durable`, `hashkv_delete_sync`.
///
/// # Safety
/// As theirs.
unsafe fn delete_key(
    db: *mut HashkvDb,
    key: *const u8,
    key_len: usize,
    errptr: *mut *mut c_char,
    durable: bool,
) -> c_int {
    let body = || {
        // SAFETY: db and key as this function's caller promised.
        let (db, key) = unsafe { (db_ref(db)?, args::bytes(key, key_len, "key")?) };
        match durable {
            true => db.delete_sync(key)?,
            false => db.delete(key)?,
        }
        Ok(0)
    };
    // SAFETY: errptr as this function's caller promised.
    unsafe { guard(errptr, body) }
}

/// Reads the value of `key` into memory hashkv allocates.
///
/// Returns 1 with `*value`/`*value_len` set when the key was found, 0 (with `*value`
/// NULL and `*value_len` 0) when it was not, or a negative code. Ownership: the caller
/// frees `*value` with `hashkv_free` (it is non-NULL for an empty value too).
/// Threads: any, concurrently with other calls; a get sees every write that returned
/// before it started.
///
/// # Safety
/// `db` is NULL (refused) or a live handle; `key` is NULL or points to `key_len`
/// readable bytes; `value` and `value_len` are NULL (refused) or writable;
/// `errptr` as for `hashkv_format`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_get(
    db: *mut HashkvDb,
    key: *const u8,
    key_len: usize,
    value: *mut *mut u8,
    value_len: *mut usize,
    errptr: *mut *mut c_char,
) -> c_int {
    let body = || {
        // SAFETY: the pointers as this function's caller promised.
        let (db, key, value, value_len) = unsafe {
            (
                db_ref(db)?,
                args::bytes(key, key_len, "key")?,
                args::out(value, "value")?,
                args::out(value_len, "value_len")?,
            )
        };
        match db.get(key)? {
            Some(v) => {
                *value = args::malloc_copy(&v)?;
                *value_len = v.len();
                Ok(1)
            }
            None => {
                *value = std::ptr::null_mut();
                *value_len = 0;
                Ok(0)
            }
        }
    };
    // SAFETY: errptr as this function's caller promised.
    unsafe { guard(errptr, body) }
}

/// Reads the value of `key` into the caller's buffer `buf` of `buf_cap` bytes.
///
/// Returns 1 when the key was found and its value copied (`*value_len` is its size),
/// 0 when the key was not found (`*value_len` is 0), `HASHKV_E_BUFFER_TOO_SMALL` when
/// the value is larger than `buf_cap` (nothing is copied, and `*value_len` is the size
/// needed: pass `buf` NULL and `buf_cap` 0 to ask for it), or another negative code.
/// Ownership: nothing is allocated. Threads: as `hashkv_get`.
///
/// # Safety
/// `db` is NULL (refused) or a live handle; `key` is NULL or points to `key_len`
/// readable bytes; `buf` is NULL (only with `buf_cap` 0) or points to `buf_cap`
/// writable bytes; `value_len` is NULL (refused) or writable; `errptr` as for
/// `hashkv_format`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_get_into(
    db: *mut HashkvDb,
    key: *const u8,
    key_len: usize,
    buf: *mut u8,
    buf_cap: usize,
    value_len: *mut usize,
    errptr: *mut *mut c_char,
) -> c_int {
    let body = || {
        // SAFETY: the pointers as this function's caller promised.
        let (db, key, buf, value_len) = unsafe {
            (
                db_ref(db)?,
                args::bytes(key, key_len, "key")?,
                args::bytes_mut(buf, buf_cap, "buf")?,
                args::out(value_len, "value_len")?,
            )
        };
        let Some(v) = db.get(key)? else {
            *value_len = 0;
            return Ok(0);
        };
        *value_len = v.len();
        let Some(dst) = buf.get_mut(..v.len()) else {
            return Err(Failure {
                code: HASHKV_E_BUFFER_TOO_SMALL,
                message: format!(
                    "value of {} bytes does not fit the {buf_cap}-byte buffer",
                    v.len()
                ),
            });
        };
        dst.copy_from_slice(&v);
        Ok(1)
    };
    // SAFETY: errptr as this function's caller promised.
    unsafe { guard(errptr, body) }
}

/// Reads the values of `count` keys at once: every key is looked up, then all their
/// values are read from the devices with one submission, so the devices read them in
/// parallel (`count` calls of `hashkv_get` read one after another). A key may appear
/// more than once.
///
/// Returns the number of keys found (0 to `count`), with `values[i]` and
/// `value_lens[i]` set for every i: a value hashkv allocates (non-NULL for an empty
/// value too), or NULL and 0 for a key not found. Or returns a negative code, with
/// every `values[i]` NULL and `value_lens[i]` 0: a bad key (empty or longer than
/// `HASHKV_KEY_BYTES_MAX`) fails the whole call, as does `count` above INT_MAX.
/// Ownership: the caller frees each non-NULL `values[i]` with `hashkv_free`; the keys
/// are only read. Threads: as `hashkv_get`; each value is what a `hashkv_get` of its
/// key during the call would return.
///
/// # Safety
/// `db` is NULL (refused) or a live handle; `keys` and `key_lens` are NULL (only with
/// `count` 0) or point to `count` readable elements, and each `keys[i]` is NULL or
/// points to `key_lens[i]` readable bytes; `values` and `value_lens` are NULL (only
/// with `count` 0) or point to `count` writable elements; `errptr` as for
/// `hashkv_format`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_multi_get(
    db: *mut HashkvDb,
    keys: *const *const u8,
    key_lens: *const usize,
    count: usize,
    values: *mut *mut u8,
    value_lens: *mut usize,
    errptr: *mut *mut c_char,
) -> c_int {
    let body = || {
        // SAFETY: the pointers as this function's caller promised.
        let (db, key_ptrs, key_lens, values, value_lens) = unsafe {
            (
                db_ref(db)?,
                args::elements(keys, count, "keys")?,
                args::elements(key_lens, count, "key_lens")?,
                args::elements_mut(values, count, "values")?,
                args::elements_mut(value_lens, count, "value_lens")?,
            )
        };
        // Nothing to free for the caller unless every value is handed out.
        values.fill(std::ptr::null_mut());
        value_lens.fill(0);
        // The count found is returned as an int.
        if c_int::try_from(count).is_err() {
            return Err(Failure::invalid(format!(
                "count {count} is above INT_MAX, the most keys one call takes"
            )));
        }
        let keys: Vec<&[u8]> = key_ptrs
            .iter()
            .zip(key_lens)
            .enumerate()
            // SAFETY: each key as this function's caller promised.
            .map(|(i, (&p, &len))| unsafe { args::bytes(p, len, &format!("keys[{i}]")) })
            .collect::<Result<_, _>>()?;
        let got = db.multi_get(&keys)?;
        let copies = malloc_copies(&got)?;
        for (i, (p, v)) in copies.into_iter().zip(&got).enumerate() {
            values[i] = p;
            value_lens[i] = v.as_ref().map_or(0, Vec::len);
        }
        // At most `count`, which fits (checked above).
        Ok(got.iter().filter(|v| v.is_some()).count() as c_int)
    };
    // SAFETY: errptr as this function's caller promised.
    unsafe { guard(errptr, body) }
}

/// A malloc'd copy of every value (NULL for `None`); all or none: when one copy
/// fails, the others are freed.
fn malloc_copies(values: &[Option<Vec<u8>>]) -> Result<Vec<*mut u8>, Failure> {
    let mut copies = Vec::with_capacity(values.len());
    for v in values {
        let copy = match v {
            Some(v) => args::malloc_copy(v),
            None => Ok(std::ptr::null_mut()),
        };
        match copy {
            Ok(p) => copies.push(p),
            Err(f) => {
                for p in copies {
                    // SAFETY: each p is NULL or from malloc, and not handed out.
                    unsafe { libc::free(p.cast()) };
                }
                return Err(f);
            }
        }
    }
    Ok(copies)
}

/// Writes the write cache to the devices and makes every write that returned before
/// this call durable.
///
/// Returns 0 or a negative code. Threads: any, concurrently with other calls.
///
/// # Safety
/// `db` is NULL (refused) or a live handle; `errptr` as for `hashkv_format`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_flush(db: *mut HashkvDb, errptr: *mut *mut c_char) -> c_int {
    let body = || {
        // SAFETY: db as this function's caller promised.
        unsafe { db_ref(db) }?.flush()?;
        Ok(0)
    };
    // SAFETY: errptr as this function's caller promised.
    unsafe { guard(errptr, body) }
}
