//! `hashkv_options`: the options of `hashkv_format` and `hashkv_open`. The setters
//! return nothing, as RocksDB's do; a value they cannot take (an unknown mode) is
//! remembered and reported by the format or open that uses the options.

use super::errors::{guard_void, Failure};
use crate::{Mode, Options};
use std::ffi::{c_char, c_int, CStr};

/// Options for `hashkv_format` and `hashkv_open`.
pub struct HashkvOptions {
    pub(crate) options: Options,
    /// Which format-time parameters the caller set: `hashkv_open` takes the others
    /// from the superblock, and refuses set ones that contradict it.
    pub(crate) mode_set: bool,
    pub(crate) main_segment_set: bool,
    pub(crate) log_segment_set: bool,
    /// Why the last `hashkv_options_set_mode` was refused, if it was.
    pub(crate) bad_mode: Option<String>,
}

impl HashkvOptions {
    /// The options, or why they cannot be used.
    pub(crate) fn usable(&self) -> Result<&Options, Failure> {
        match &self.bad_mode {
            Some(why) => Err(Failure::invalid(format!("invalid options: {why}"))),
            None => Ok(&self.options),
        }
    }
}

/// Creates options with the defaults: mode "hashkv", 64 MiB main segments, 1 MiB log
/// segments, 30% reserved space, a 16 MiB write cache, values below 128 bytes inline.
///
/// Ownership: the caller owns the result and frees it with `hashkv_options_free`.
/// Format and open copy what they need, so the options may be freed right after.
/// Threads: an options object may be used by one thread at a time.
#[no_mangle]
pub extern "C" fn hashkv_options_new() -> *mut HashkvOptions {
    Box::into_raw(Box::new(HashkvOptions {
        options: Options::default(),
        mode_set: false,
        main_segment_set: false,
        log_segment_set: false,
        bad_mode: None,
    }))
}

/// Frees options from `hashkv_options_new`. NULL is ignored.
///
/// # Safety
/// `opts` is NULL or came from `hashkv_options_new` and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn hashkv_options_free(opts: *mut HashkvOptions) {
    if !opts.is_null() {
        // SAFETY: opts came from hashkv_options_new (a Box) and is freed once.
        drop(unsafe { Box::from_raw(opts) });
    }
}

/// Applies `set` to the options; a NULL `opts`, or a value `set` refuses, is recorded
/// for `hashkv_last_errcode` as an invalid argument.
///
/// # Safety
/// `opts` is NULL or a live pointer from `hashkv_options_new`, not used by another
/// thread during the call.
unsafe fn update(
    opts: *mut HashkvOptions,
    apply: impl FnOnce(&mut HashkvOptions) -> Result<(), Failure>,
) {
    guard_void(|| {
        // SAFETY: NULL or live and unshared, as the caller promised.
        let o = unsafe { opts.as_mut() }.ok_or_else(|| Failure::invalid("opts is NULL"))?;
        apply(o)
    })
}

/// `update` for a setter that takes any value.
///
/// # Safety
/// As `update`.
unsafe fn set(opts: *mut HashkvOptions, apply: impl FnOnce(&mut HashkvOptions)) {
    // SAFETY: opts as this function's caller promised.
    unsafe {
        update(opts, |o| {
            apply(o);
            Ok(())
        })
    }
}

/// Sets the engine mode a format writes: "hashkv" (the design), "vlog" (one circular
/// value log, WiscKey) or "lsm" (every value inline in the LSM tree). An open takes
/// the mode from the superblock unless this was called; a mode that contradicts the
/// superblock is refused. An unknown or NULL mode sets `hashkv_last_errcode` and makes
/// the format or open that uses these options fail with `HASHKV_E_INVALID_ARGUMENT`,
/// until a valid mode is set.
///
/// # Safety
/// `opts` is NULL (ignored) or a live pointer from `hashkv_options_new`; `mode` is
/// NULL or a NUL-terminated string. The string is not kept.
#[no_mangle]
pub unsafe extern "C" fn hashkv_options_set_mode(opts: *mut HashkvOptions, mode: *const c_char) {
    let parsed = if mode.is_null() {
        Err("mode is NULL".to_string())
    } else {
        // SAFETY: non-NULL and NUL-terminated as the caller promised.
        let name = unsafe { CStr::from_ptr(mode) }.to_string_lossy();
        Mode::from_name(&name)
    };
    // SAFETY: opts as this function's caller promised.
    unsafe {
        update(opts, |o| match parsed {
            Ok(m) => {
                o.options.mode = m;
                o.mode_set = true;
                o.bad_mode = None;
                Ok(())
            }
            Err(why) => {
                o.bad_mode = Some(why.clone());
                Err(Failure::invalid(why))
            }
        })
    }
}

/// A group's nominal share of the segment pool, and the stripe unit over several devices. Default
/// 64 MiB. An open takes it from the superblock unless this was called.
///
/// # Safety
/// `opts` is NULL (ignored) or a live pointer from `hashkv_options_new`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_options_set_main_segment_bytes(
    opts: *mut HashkvOptions,
    bytes: u64,
) {
    // SAFETY: opts as this function's caller promised.
    unsafe {
        set(opts, |o| {
            o.options.main_segment_bytes = bytes;
            o.main_segment_set = true;
        })
    }
}

/// Size of a log segment; it also bounds the largest value. Default 1 MiB. An open
/// takes it from the superblock unless this was called.
///
/// # Safety
/// `opts` is NULL (ignored) or a live pointer from `hashkv_options_new`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_options_set_log_segment_bytes(
    opts: *mut HashkvOptions,
    bytes: u64,
) {
    // SAFETY: opts as this function's caller promised.
    unsafe {
        set(opts, |o| {
            o.options.log_segment_bytes = bytes;
            o.log_segment_set = true;
        })
    }
}

/// Share of the value space reserved for log segments, in (0, 0.95). Default 0.30.
/// Used by format only.
///
/// # Safety
/// `opts` is NULL (ignored) or a live pointer from `hashkv_options_new`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_options_set_reserved_share(opts: *mut HashkvOptions, share: f64) {
    // SAFETY: opts as this function's caller promised.
    unsafe { set(opts, |o| o.options.reserved_share = share) }
}

/// Write cache size in bytes; 0 turns the cache off. Default 16 MiB.
///
/// # Safety
/// `opts` is NULL (ignored) or a live pointer from `hashkv_options_new`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_options_set_write_cache_bytes(
    opts: *mut HashkvOptions,
    bytes: u64,
) {
    // SAFETY: opts as this function's caller promised.
    unsafe { set(opts, |o| o.options.write_cache_bytes = bytes) }
}

/// Values shorter than this stay inline in the index. Default 128 bytes.
///
/// # Safety
/// `opts` is NULL (ignored) or a live pointer from `hashkv_options_new`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_options_set_separation_threshold_bytes(
    opts: *mut HashkvOptions,
    bytes: u64,
) {
    // SAFETY: opts as this function's caller promised.
    unsafe { set(opts, |o| o.options.separation_threshold_bytes = bytes) }
}

/// Non-zero: every put, delete and write is durable when it returns. Default 0.
///
/// # Safety
/// `opts` is NULL (ignored) or a live pointer from `hashkv_options_new`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_options_set_sync_writes(opts: *mut HashkvOptions, on: c_int) {
    // SAFETY: opts as this function's caller promised.
    unsafe { set(opts, |o| o.options.sync_writes = on != 0) }
}

/// Non-zero: format overwrites devices that hold data. Default 0.
///
/// # Safety
/// `opts` is NULL (ignored) or a live pointer from `hashkv_options_new`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_options_set_force_format(opts: *mut HashkvOptions, on: c_int) {
    // SAFETY: opts as this function's caller promised.
    unsafe { set(opts, |o| o.options.force_format = on != 0) }
}

/// When formatting one path that does not exist, create a file of this size there.
///
/// # Safety
/// `opts` is NULL (ignored) or a live pointer from `hashkv_options_new`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_options_set_create_device_bytes(
    opts: *mut HashkvOptions,
    bytes: u64,
) {
    // SAFETY: opts as this function's caller promised.
    unsafe { set(opts, |o| o.options.create_device_bytes = Some(bytes)) }
}

/// One bound on the engine's memory in bytes, split between the index's block cache,
/// its memtables, the write cache and the value cache (README, "Memory"); with it set,
/// `hashkv_options_set_write_cache_bytes` and `hashkv_options_set_value_cache_bytes`
/// are overridden. 0: no budget (the default). At least 8 MiB when set: a smaller one
/// makes the format or open that uses these options fail with
/// `HASHKV_E_INVALID_ARGUMENT`. Chosen at open.
///
/// # Safety
/// `opts` is NULL (ignored) or a live pointer from `hashkv_options_new`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_options_set_memory_budget_bytes(
    opts: *mut HashkvOptions,
    bytes: u64,
) {
    // SAFETY: opts as this function's caller promised.
    unsafe { set(opts, |o| o.options.memory_budget_bytes = bytes) }
}

/// Bytes of recently read values kept in memory, without a memory budget; 0 (the
/// default) turns the value cache off. Chosen at open.
///
/// # Safety
/// `opts` is NULL (ignored) or a live pointer from `hashkv_options_new`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_options_set_value_cache_bytes(
    opts: *mut HashkvOptions,
    bytes: u64,
) {
    // SAFETY: opts as this function's caller promised.
    unsafe { set(opts, |o| o.options.value_cache_bytes = bytes) }
}

/// Non-zero: hot/cold separation (hashkv mode): group GCs move values they find cold
/// to the cold data log and keep a tag in the group. Default 0. Chosen at open: a
/// store opened with it off still reads and collects what is cold.
///
/// # Safety
/// `opts` is NULL (ignored) or a live pointer from `hashkv_options_new`.
#[no_mangle]
pub unsafe extern "C" fn hashkv_options_set_hotness(opts: *mut HashkvOptions, on: c_int) {
    // SAFETY: opts as this function's caller promised.
    unsafe { set(opts, |o| o.options.hotness = on != 0) }
}
