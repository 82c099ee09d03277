//! `hashkv_db`: formatting, opening (with the geometry read from the superblock) and
//! closing a store.

use super::args;
use super::errors::{guard, guard_ptr, Failure};
use super::options::HashkvOptions;
use crate::Db;
use crate::Options;
use std::ffi::{c_char, c_int};
use std::path::PathBuf;

/// An open store.
// The field is public for Rust code that mixes the C API with the Rust one (tests).
pub struct HashkvDb(pub Db);

/// The store behind a handle from `hashkv_format`/`hashkv_open`.
///
/// # Safety
/// `db` is NULL or a live handle (not yet closed).
pub(crate) unsafe fn db_ref<'a>(db: *mut HashkvDb) -> Result<&'a Db, Failure> {
    // SAFETY: NULL or live, as the caller promised; shared use is what Db is for.
    unsafe { db.as_ref() }
        .map(|d| &d.0)
        .ok_or_else(|| Failure::invalid("db is NULL"))
}

/// The options a format or open was given (NULL: the defaults).
///
/// # Safety
/// `opts` is NULL or a live pointer from `hashkv_options_new`.
unsafe fn given<'a>(opts: *const HashkvOptions) -> Option<&'a HashkvOptions> {
    // SAFETY: NULL or live, as the caller promised; only read.
    unsafe { opts.as_ref() }
}

/// The options to open with: the format-time parameters (mode, segment sizes) that the
/// caller did not set come from the superblock; those set are kept, so that the open
/// refuses them when they contradict it.
fn open_options(paths: &[PathBuf], opts: Option<&HashkvOptions>) -> Result<Options, Failure> {
    let requested = match opts {
        Some(o) => o.usable()?.clone(),
        None => Options::default(),
    };
    let superblock = Db::probe(paths)?;
    let mut options = requested.clone().matching(&superblock);
    if let Some(o) = opts {
        if o.mode_set {
            options.mode = requested.mode;
        }
        if o.main_segment_set {
            options.main_segment_bytes = requested.main_segment_bytes;
        }
        if o.log_segment_set {
            options.log_segment_bytes = requested.log_segment_bytes;
        }
    }
    Ok(options)
}

/// Formats the devices (one, or several to stripe over) and the metadata directory,
/// and opens the new store. `opts` NULL means the defaults. Refuses devices that hold
/// data unless `hashkv_options_set_force_format` was set.
///
/// Returns the handle, or NULL on failure (`hashkv_last_errcode` and `*errptr` say
/// why). Ownership: the caller owns the handle and must pass it to `hashkv_close`
/// once; `devices`, the strings and `opts` are only read during the call.
/// Threads: the handle may be used from many threads at once, except `hashkv_close`.
///
/// # Safety
/// `devices` points to `device_count` NUL-terminated strings (or is NULL: refused);
/// `metadata_dir` is NULL (refused) or NUL-terminated; `opts` is NULL or from
/// `hashkv_options_new`; `errptr` is NULL or points to a `char *` that is NULL or
/// holds an earlier hashkv message (it is freed and replaced).
#[no_mangle]
pub unsafe extern "C" fn hashkv_format(
    devices: *const *const c_char,
    device_count: usize,
    metadata_dir: *const c_char,
    opts: *const HashkvOptions,
    errptr: *mut *mut c_char,
) -> *mut HashkvDb {
    let body = || {
        // SAFETY: devices, metadata_dir and opts as this function's caller promised.
        let (paths, dir, opts) = unsafe {
            (
                args::device_paths(devices, device_count)?,
                args::path(metadata_dir, "metadata_dir")?,
                given(opts),
            )
        };
        let options = match opts {
            Some(o) => o.usable()?.clone(),
            None => Options::default(),
        };
        let db = Db::format(&paths, &dir, &options)?;
        Ok(Box::into_raw(Box::new(HashkvDb(db))))
    };
    // SAFETY: errptr as this function's caller promised.
    unsafe { guard_ptr(errptr, body) }
}

/// Opens a store made by `hashkv_format`, recovering after a crash if needed. The mode
/// and segment sizes are read from the superblock: `opts` may be NULL, and sets them
/// only to insist on them (a contradiction is refused with
/// `HASHKV_E_INVALID_ARGUMENT`). A second open of devices or a metadata directory
/// that are open fails with `HASHKV_E_BUSY`; a missing device with
/// `HASHKV_E_NOT_FOUND`.
///
/// Returns the handle, or NULL on failure. Ownership and threads as `hashkv_format`.
///
/// # Safety
/// As `hashkv_format`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_open(
    devices: *const *const c_char,
    device_count: usize,
    metadata_dir: *const c_char,
    opts: *const HashkvOptions,
    errptr: *mut *mut c_char,
) -> *mut HashkvDb {
    let body = || {
        // SAFETY: devices, metadata_dir and opts as this function's caller promised.
        let (paths, dir, opts) = unsafe {
            (
                args::device_paths(devices, device_count)?,
                args::path(metadata_dir, "metadata_dir")?,
                given(opts),
            )
        };
        let options = open_options(&paths, opts)?;
        let db = Db::open(&paths, &dir, &options)?;
        Ok(Box::into_raw(Box::new(HashkvDb(db))))
    };
    // SAFETY: errptr as this function's caller promised.
    unsafe { guard_ptr(errptr, body) }
}

/// Flushes the write cache, stops background work and frees the handle. Returns 0, or
/// a negative code if the final flush failed: the handle is freed either way, and the
/// writes not yet durable may be lost.
///
/// Ownership: the handle is consumed. Threads: no other call may use the handle
/// during or after this one; free its iterators (`hashkv_iter_free`) first.
///
/// # Safety
/// `db` is NULL (refused) or a live handle with no live iterator; `errptr` as for
/// `hashkv_format`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_close(db: *mut HashkvDb, errptr: *mut *mut c_char) -> c_int {
    let body = || {
        if db.is_null() {
            return Err(Failure::invalid("db is NULL"));
        }
        // SAFETY: a live handle from format/open (a Box), closed once, as the caller
        // promised.
        let db = unsafe { Box::from_raw(db) };
        db.0.close()?;
        Ok(0)
    };
    // SAFETY: errptr as this function's caller promised.
    unsafe { guard(errptr, body) }
}

// The header lets C use one handle from many threads at once.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<HashkvDb>();
};
