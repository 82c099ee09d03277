//! Turning a C caller's arguments into Rust values: NULL pointers and impossible
//! lengths become `HASHKV_E_INVALID_ARGUMENT` failures, never undefined behaviour we
//! could have checked for.

use super::errors::Failure;
use std::ffi::{c_char, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Largest span of memory a C caller can hand over: Rust slices may not exceed
/// `isize::MAX` bytes, nor wrap around the end of the address space.
fn check_span(p: *const u8, len: usize, elem_bytes: usize, what: &str) -> Result<(), Failure> {
    let bytes = len
        .checked_mul(elem_bytes)
        .filter(|&b| b <= isize::MAX as usize);
    match bytes {
        Some(b) if (p as usize).checked_add(b).is_some() => Ok(()),
        _ => Err(Failure::invalid(format!(
            "{what}: length {len} is impossible (the span would exceed isize::MAX bytes or wrap around memory)"
        ))),
    }
}

/// The `len` bytes at `p`; NULL is allowed with length 0 (an empty string of bytes).
///
/// # Safety
/// A non-NULL `p` points to `len` readable bytes that stay unchanged while the
/// returned slice lives.
pub(crate) unsafe fn bytes<'a>(p: *const u8, len: usize, what: &str) -> Result<&'a [u8], Failure> {
    if p.is_null() {
        return match len {
            0 => Ok(&[]),
            _ => Err(Failure::invalid(format!(
                "{what} is NULL with length {len}"
            ))),
        };
    }
    check_span(p, len, 1, what)?;
    // SAFETY: non-NULL, a possible length (checked), readable as the caller promised.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// The `cap` writable bytes at `p`; NULL is allowed with capacity 0.
///
/// # Safety
/// A non-NULL `p` points to `cap` writable bytes that nothing else accesses while the
/// returned slice lives.
pub(crate) unsafe fn bytes_mut<'a>(
    p: *mut u8,
    cap: usize,
    what: &str,
) -> Result<&'a mut [u8], Failure> {
    if p.is_null() {
        return match cap {
            0 => Ok(&mut []),
            _ => Err(Failure::invalid(format!(
                "{what} is NULL with capacity {cap}"
            ))),
        };
    }
    check_span(p, cap, 1, what)?;
    // SAFETY: non-NULL, a possible length (checked), writable and unaliased as the
    // caller promised.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, cap) })
}

/// The `count` elements of a C array at `p`; NULL is allowed with count 0. A
/// misaligned array is refused.
///
/// # Safety
/// A non-NULL `p` points to `count` readable elements that stay unchanged while the
/// returned slice lives.
pub(crate) unsafe fn elements<'a, T>(
    p: *const T,
    count: usize,
    what: &str,
) -> Result<&'a [T], Failure> {
    if p.is_null() {
        return match count {
            0 => Ok(&[]),
            _ => Err(Failure::invalid(format!(
                "{what} is NULL with count {count}"
            ))),
        };
    }
    check_array(p.is_aligned(), p.cast(), count, size_of::<T>(), what)?;
    // SAFETY: non-NULL, aligned, a possible length (checked), readable as promised.
    Ok(unsafe { std::slice::from_raw_parts(p, count) })
}

/// The `count` writable elements of a C array at `p`; NULL is allowed with count 0.
/// A misaligned array is refused.
///
/// # Safety
/// A non-NULL `p` points to `count` writable elements that nothing else accesses while
/// the returned slice lives.
pub(crate) unsafe fn elements_mut<'a, T>(
    p: *mut T,
    count: usize,
    what: &str,
) -> Result<&'a mut [T], Failure> {
    if p.is_null() {
        return match count {
            0 => Ok(&mut []),
            _ => Err(Failure::invalid(format!(
                "{what} is NULL with count {count}"
            ))),
        };
    }
    check_array(p.is_aligned(), p.cast(), count, size_of::<T>(), what)?;
    // SAFETY: non-NULL, aligned, a possible length (checked), writable and unaliased
    // as the caller promised.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, count) })
}

/// `check_span` for an array of elements of `elem_bytes`, refusing a misaligned one.
fn check_array(
    aligned: bool,
    p: *const u8,
    count: usize,
    elem_bytes: usize,
    what: &str,
) -> Result<(), Failure> {
    if !aligned {
        return Err(Failure::invalid(format!(
            "{what}: address {p:?} is not aligned for its elements"
        )));
    }
    check_span(p, count, elem_bytes, what)
}

/// An output pointer the function must write through.
///
/// # Safety
/// A non-NULL `p` points to a writable, properly aligned `T`.
pub(crate) unsafe fn out<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: as the caller promised for a non-NULL p.
    unsafe { p.as_mut() }.ok_or_else(|| Failure::invalid(format!("{what} is NULL")))
}

/// A NUL-terminated path. Paths are bytes on Linux, so any bytes are accepted.
///
/// # Safety
/// A non-NULL `p` points to a NUL-terminated string.
pub(crate) unsafe fn path(p: *const c_char, what: &str) -> Result<PathBuf, Failure> {
    if p.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated as the caller promised.
    let s = unsafe { CStr::from_ptr(p) };
    if s.is_empty() {
        return Err(Failure::invalid(format!("{what} is empty")));
    }
    Ok(PathBuf::from(OsStr::from_bytes(s.to_bytes())))
}

/// The `count` device paths of `hashkv_format`/`hashkv_open`.
///
/// # Safety
/// A non-NULL `devices` points to `count` pointers, each NULL or a NUL-terminated
/// string.
pub(crate) unsafe fn device_paths(
    devices: *const *const c_char,
    count: usize,
) -> Result<Vec<PathBuf>, Failure> {
    if devices.is_null() || count == 0 {
        return Err(Failure::invalid(format!(
            "no device given (devices {}, device_count {count})",
            if devices.is_null() {
                "NULL"
            } else {
                "non-NULL"
            }
        )));
    }
    check_span(devices.cast(), count, size_of::<*const c_char>(), "devices")?;
    // SAFETY: non-NULL, a possible length, `count` readable pointers as promised.
    let ptrs = unsafe { std::slice::from_raw_parts(devices, count) };
    ptrs.iter()
        .enumerate()
        // SAFETY: each pointer is NULL or NUL-terminated as promised.
        .map(|(i, &p)| unsafe { path(p, &format!("devices[{i}]")) })
        .collect()
}

/// Copies `bytes` into memory from malloc, which C frees with `hashkv_free`.
pub(crate) fn malloc_copy(bytes: &[u8]) -> Result<*mut u8, Failure> {
    // SAFETY: malloc of a non-zero size; the result is checked for NULL before use.
    let p = unsafe { libc::malloc(bytes.len().max(1)) } as *mut u8;
    if p.is_null() {
        return Err(Failure {
            code: super::errors::HASHKV_E_IO,
            message: format!("out of memory copying {} bytes for the caller", bytes.len()),
        });
    }
    // SAFETY: p has room for bytes.len() bytes and is fresh, so it overlaps nothing.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
    Ok(p)
}
