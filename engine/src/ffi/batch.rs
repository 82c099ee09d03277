//! `hashkv_writebatch`: an atomic group of puts and deletes. Its operations return
//! nothing (as RocksDB's do), so an invalid argument is remembered in the batch and
//! `hashkv_write` refuses the whole batch with it: a batch is never applied in part.

use super::args;
use super::errors::{guard, guard_void, Failure};
use super::open::{db_ref, HashkvDb};
use crate::WriteBatch;
use std::ffi::{c_char, c_int};

/// A write batch.
pub struct HashkvWriteBatch {
    batch: WriteBatch,
    /// The first invalid argument given to a put or delete since the last clear.
    invalid: Option<String>,
}

/// Creates an empty batch.
///
/// Ownership: the caller frees it with `hashkv_writebatch_destroy`; `hashkv_write`
/// does not consume it, so it can be cleared and reused. Threads: a batch may be
/// changed by one thread at a time; while no thread changes it, several may pass it
/// to `hashkv_write`.
#[no_mangle]
pub extern "C" fn hashkv_writebatch_create() -> *mut HashkvWriteBatch {
    Box::into_raw(Box::new(HashkvWriteBatch {
        batch: WriteBatch::new(),
        invalid: None,
    }))
}

/// Applies `change` to the batch: a NULL batch is recorded for
/// `hashkv_last_errcode`; an invalid argument is recorded there and in the batch.
///
/// # Safety
/// `b` is NULL or a live batch that no other thread uses during the call.
unsafe fn change(
    b: *mut HashkvWriteBatch,
    change: impl FnOnce(&mut WriteBatch) -> Result<(), Failure>,
) {
    guard_void(|| {
        // SAFETY: NULL or live and unshared, as the caller promised.
        let b = unsafe { b.as_mut() }.ok_or_else(|| Failure::invalid("batch is NULL"))?;
        change(&mut b.batch).inspect_err(|f| {
            b.invalid.get_or_insert_with(|| f.message.clone());
        })
    })
}

/// Adds a put of `value` under `key` to the batch (a later entry for the same key
/// wins). Keys and values are checked by `hashkv_write`.
///
/// Ownership: key and value are copied.
///
/// # Safety
/// `b` is NULL (ignored, `hashkv_last_errcode` set) or a live batch; `key` and
/// `value` are NULL or point to `key_len`/`value_len` readable bytes (NULL with a
/// non-zero length makes the batch invalid).
#[no_mangle]
pub unsafe extern "C" fn hashkv_writebatch_put(
    b: *mut HashkvWriteBatch,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) {
    let put = |batch: &mut WriteBatch| {
        // SAFETY: key and value as this function's caller promised.
        let (key, value) = unsafe {
            (
                args::bytes(key, key_len, "batch key")?,
                args::bytes(value, value_len, "batch value")?,
            )
        };
        batch.put(key, value);
        Ok(())
    };
    // SAFETY: b as this function's caller promised.
    unsafe { change(b, put) }
}

/// Adds a delete of `key` to the batch.
///
/// # Safety
/// As `hashkv_writebatch_put`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_writebatch_delete(
    b: *mut HashkvWriteBatch,
    key: *const u8,
    key_len: usize,
) {
    let delete = |batch: &mut WriteBatch| {
        // SAFETY: key as this function's caller promised.
        batch.delete(unsafe { args::bytes(key, key_len, "batch key") }?);
        Ok(())
    };
    // SAFETY: b as this function's caller promised.
    unsafe { change(b, delete) }
}

/// Empties the batch and forgets an invalid argument it recorded.
///
/// # Safety
/// `b` is NULL (ignored) or a live batch.
#[no_mangle]
pub unsafe extern "C" fn hashkv_writebatch_clear(b: *mut HashkvWriteBatch) {
    guard_void(|| {
        // SAFETY: NULL or live and unshared, as the caller promised.
        let b = unsafe { b.as_mut() }.ok_or_else(|| Failure::invalid("batch is NULL"))?;
        b.batch = WriteBatch::new();
        b.invalid = None;
        Ok(())
    })
}

/// The number of puts and deletes in the batch (0 for NULL).
///
/// # Safety
/// `b` is NULL or a live batch.
#[no_mangle]
pub unsafe extern "C" fn hashkv_writebatch_count(b: *const HashkvWriteBatch) -> usize {
    // SAFETY: NULL or live, as the caller promised; only read.
    unsafe { b.as_ref() }.map_or(0, |b| b.batch.len())
}

/// Frees a batch. NULL is ignored.
///
/// # Safety
/// `b` is NULL or came from `hashkv_writebatch_create` and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn hashkv_writebatch_destroy(b: *mut HashkvWriteBatch) {
    if !b.is_null() {
        // SAFETY: b came from hashkv_writebatch_create (a Box) and is freed once.
        drop(unsafe { Box::from_raw(b) });
    }
}

/// Applies the batch atomically: after a crash it is wholly there or wholly absent,
/// and readers see all of it or none. With `sync` non-zero it is durable when this
/// returns 0. A batch holding an invalid argument, a bad key or a value too large is
/// refused whole (`HASHKV_E_INVALID_ARGUMENT`), as is a batch that does not fit
/// (`HASHKV_E_STORE_FULL`).
///
/// Returns 0 or a negative code. Ownership: the batch is only read; it stays the
/// caller's. Threads: any, concurrently with other calls on the handle.
///
/// # Safety
/// `db` is NULL (refused) or a live handle; `b` is NULL (refused) or a live batch
/// that no thread changes during the call; `errptr` as for `hashkv_format`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_write(
    db: *mut HashkvDb,
    b: *const HashkvWriteBatch,
    sync: c_int,
    errptr: *mut *mut c_char,
) -> c_int {
    let body = || {
        // SAFETY: db and b as this function's caller promised; b is only read.
        let (db, b) = unsafe { (db_ref(db)?, b.as_ref()) };
        let b = b.ok_or_else(|| Failure::invalid("batch is NULL"))?;
        if let Some(why) = &b.invalid {
            return Err(Failure::invalid(format!(
                "the batch holds an invalid entry, so none is applied: {why}"
            )));
        }
        let batch = b.batch.clone();
        if sync != 0 {
            db.write_sync(batch)?;
        } else {
            db.write(batch)?;
        }
        Ok(0)
    };
    // SAFETY: errptr as this function's caller promised.
    unsafe { guard(errptr, body) }
}

// The header lets several threads write one unchanging batch at once, and a batch
// move between threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<HashkvWriteBatch>();
};
