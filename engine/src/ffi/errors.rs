//! Error codes of the C ABI, the mapping from the engine's typed errors to them, and
//! the guards every exported function runs its body under: a failure becomes a code,
//! the calling thread's last code and a message; a panic becomes `HASHKV_E_PANIC`
//! instead of unwinding into C.

use crate::Error;
use hashkv_blockdev::DeviceError;
use hashkv_lsm::LsmError;
use std::cell::Cell;
use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A NULL pointer where one is required, an impossible length, an option, key or
/// value outside its limits, or devices that do not fit the request (not formatted by
/// hashkv, formatted with other parameters, holding data and no force).
pub const HASHKV_E_INVALID_ARGUMENT: c_int = -1;
/// A device path or the metadata directory does not exist. A missing key is not an
/// error: the get functions return 0 for it.
pub const HASHKV_E_NOT_FOUND: c_int = -2;
/// No free value space even after garbage collection. The refused write changed
/// nothing; deletes (then a flush) make room.
pub const HASHKV_E_STORE_FULL: c_int = -3;
/// The devices or the metadata directory are open in another handle or process.
pub const HASHKV_E_BUSY: c_int = -4;
/// A device or the index failed an I/O operation. The store refuses writes from then
/// on (`HASHKV_E_POISONED`); close it and open it again.
pub const HASHKV_E_IO: c_int = -5;
/// Data read back is damaged (a checksum or a structure does not hold), or
/// `hashkv_check` found damage. A wrong value is never returned instead.
pub const HASHKV_E_CORRUPTION: c_int = -6;
/// The store refuses writes after an earlier I/O error or corruption; the message
/// names the first error. Close it and open it again.
pub const HASHKV_E_POISONED: c_int = -7;
/// `hashkv_get_into`: the value does not fit the buffer; nothing was copied and
/// `*value_len` holds the size needed.
pub const HASHKV_E_BUFFER_TOO_SMALL: c_int = -8;
/// A bug inside hashkv (a Rust panic) stopped at the boundary; the message says where.
/// Also the store's first error once its commit thread panicked: the store then
/// refuses writes (as after HASHKV_E_POISONED's first error).
pub const HASHKV_E_PANIC: c_int = -9;

/// Why a call failed: its code and the message handed to C.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: c_int,
    pub message: String,
}

impl Failure {
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure {
            code: HASHKV_E_INVALID_ARGUMENT,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure {
            code: error_code(&e),
            message: e.to_string(),
        }
    }
}

/// The code a C program sees for an engine error. Exhaustive over the engine's own
/// variants, so a new one must be given its code here.
pub(crate) fn error_code(e: &Error) -> c_int {
    match e {
        Error::KeyTooLarge { .. }
        | Error::ValueTooLarge { .. }
        | Error::InvalidOptions { .. }
        | Error::DeviceTooSmall { .. }
        | Error::DeviceNotEmpty { .. }
        | Error::NotOurs { .. }
        | Error::Mismatch { .. }
        | Error::NewerFormat { .. } => HASHKV_E_INVALID_ARGUMENT,
        Error::StoreFull { .. } => HASHKV_E_STORE_FULL,
        Error::Corruption { .. } | Error::ChecksumMismatch { .. } => HASHKV_E_CORRUPTION,
        Error::Poisoned { .. } => HASHKV_E_POISONED,
        Error::CommitThreadPanicked { .. } => HASHKV_E_PANIC,
        // A place named for the message: the cause decides the code.
        Error::At { source, .. } => error_code(source),
        Error::Device(d) => device_code(d),
        Error::Lsm(l) => lsm_code(l),
        Error::MetadataDir { source, .. } => io_code(source),
    }
}

fn device_code(e: &DeviceError) -> c_int {
    match e {
        DeviceError::NotFound { .. } => HASHKV_E_NOT_FOUND,
        DeviceError::InUse { .. } => HASHKV_E_BUSY,
        DeviceError::Open { source, .. } => io_code(source),
        DeviceError::Poisoned { .. } => HASHKV_E_POISONED,
        DeviceError::IsDirectory { .. }
        | DeviceError::UnsupportedKind { .. }
        | DeviceError::SizeUnaligned { .. }
        | DeviceError::Identity { .. }
        | DeviceError::Config { .. }
        | DeviceError::AlreadyExists { .. }
        | DeviceError::DirectIoUnsupported { .. }
        | DeviceError::BlockSizeUnsupported { .. } => HASHKV_E_INVALID_ARGUMENT,
        // The I/O itself failed, or the engine asked for an impossible one.
        _ => HASHKV_E_IO,
    }
}

fn lsm_code(e: &LsmError) -> c_int {
    match e {
        LsmError::Locked { .. } => HASHKV_E_BUSY,
        LsmError::NotFound { .. } => HASHKV_E_NOT_FOUND,
        LsmError::Corruption { .. } | LsmError::ChecksumMismatch { .. } => HASHKV_E_CORRUPTION,
        LsmError::Poisoned { .. } => HASHKV_E_POISONED,
        LsmError::Io { source, .. } => io_code(source),
        LsmError::KeyTooLarge { .. }
        | LsmError::ValueTooLarge { .. }
        | LsmError::KeyEmpty
        | LsmError::NotAnLsmDirectory { .. }
        | LsmError::AlreadyExists { .. }
        | LsmError::NewerFormat { .. }
        | LsmError::Closed
        | LsmError::InvalidOptions { .. } => HASHKV_E_INVALID_ARGUMENT,
        _ => HASHKV_E_IO,
    }
}

fn io_code(e: &std::io::Error) -> c_int {
    match e.kind() {
        std::io::ErrorKind::NotFound => HASHKV_E_NOT_FOUND,
        std::io::ErrorKind::WouldBlock => HASHKV_E_BUSY,
        _ => HASHKV_E_IO,
    }
}

thread_local! {
    static LAST_ERRCODE: Cell<c_int> = const { Cell::new(0) };
}

/// Records `code` as the calling thread's last failure.
pub(crate) fn record(code: c_int) {
    LAST_ERRCODE.with(|c| c.set(code));
}

/// Returns the code of the last failing hashkv call on the calling thread, or 0 if no
/// call has failed on it yet. A successful call does not reset it (as with errno): read
/// it right after a call whose result says it failed. It is the only way to learn why
/// a function returning void (an options setter, a batch operation) refused its
/// arguments.
///
/// Threads: any thread; each thread has its own code.
#[no_mangle]
pub extern "C" fn hashkv_last_errcode() -> c_int {
    LAST_ERRCODE.with(|c| c.get())
}

/// Hands `message` to C in `*errptr` (malloc'd, for `hashkv_free`), freeing a message
/// a previous call left there.
///
/// # Safety
/// `errptr` is NULL or points to a writable `char *` that is NULL or holds a message
/// from hashkv.
unsafe fn set_error(errptr: *mut *mut c_char, message: &str) {
    if errptr.is_null() {
        return;
    }
    let c = CString::new(message.replace('\0', " ")).expect("NULs were replaced");
    let bytes = c.as_bytes_with_nul();
    // SAFETY: malloc of a non-zero size; the result is checked for NULL before use.
    let p = unsafe { libc::malloc(bytes.len()) } as *mut u8;
    if p.is_null() {
        return;
    }
    // SAFETY: p holds bytes.len() fresh bytes; errptr is non-NULL and writable, and a
    // non-NULL *errptr is a hashkv message (malloc'd, so libc::free is its free).
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        libc::free((*errptr).cast());
        *errptr = p.cast();
    }
}

/// Records a failure: the thread's last code, and the message in `*errptr`.
///
/// # Safety
/// As `set_error`.
unsafe fn fail(errptr: *mut *mut c_char, failure: Failure) -> c_int {
    record(failure.code);
    // SAFETY: the caller's contract is set_error's.
    unsafe { set_error(errptr, &failure.message) };
    failure.code
}

fn panic_failure(payload: Box<dyn std::any::Any + Send>) -> Failure {
    let what = crate::error::panic_message(payload.as_ref());
    Failure {
        code: HASHKV_E_PANIC,
        message: format!("hashkv: internal error (panic): {what}"),
    }
}

/// Runs the body of an int-returning function: its value on success, else the
/// failure's code (recorded, with the message in `*errptr`).
///
/// # Safety
/// `errptr` as `set_error` requires.
pub(crate) unsafe fn guard(
    errptr: *mut *mut c_char,
    body: impl FnOnce() -> Result<c_int, Failure>,
) -> c_int {
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => return v,
        Ok(Err(f)) => f,
        Err(payload) => panic_failure(payload),
    };
    // SAFETY: errptr as this function's caller promised.
    unsafe { fail(errptr, failure) }
}

/// `guard` for functions that return a pointer: NULL on failure.
///
/// # Safety
/// `errptr` as `set_error` requires.
pub(crate) unsafe fn guard_ptr<T>(
    errptr: *mut *mut c_char,
    body: impl FnOnce() -> Result<*mut T, Failure>,
) -> *mut T {
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(p)) => return p,
        Ok(Err(f)) => f,
        Err(payload) => panic_failure(payload),
    };
    // SAFETY: errptr as this function's caller promised.
    unsafe { fail(errptr, failure) };
    std::ptr::null_mut()
}

/// `guard` for functions that return nothing: a failure is only recorded for
/// `hashkv_last_errcode`.
pub(crate) fn guard_void(body: impl FnOnce() -> Result<(), Failure>) {
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return,
        Ok(Err(f)) => f,
        Err(payload) => panic_failure(payload),
    };
    record(failure.code);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr::null_mut;

    #[test]
    fn every_code_is_distinct_and_negative() {
        let codes = [
            HASHKV_E_INVALID_ARGUMENT,
            HASHKV_E_NOT_FOUND,
            HASHKV_E_STORE_FULL,
            HASHKV_E_BUSY,
            HASHKV_E_IO,
            HASHKV_E_CORRUPTION,
            HASHKV_E_POISONED,
            HASHKV_E_BUFFER_TOO_SMALL,
            HASHKV_E_PANIC,
        ];
        let set: std::collections::BTreeSet<_> = codes.iter().collect();
        assert_eq!(set.len(), codes.len());
        assert!(codes.iter().all(|&c| c < 0), "{codes:?}");
    }

    fn corruption() -> Error {
        Error::Corruption {
            what: "record",
            expected: "a checksum".into(),
            found: "another".into(),
        }
    }

    #[test]
    fn engine_errors_map_to_the_documented_codes() {
        let io = |kind| std::io::Error::new(kind, "x");
        let cases: Vec<(Error, c_int)> = vec![
            (
                Error::KeyTooLarge { len: 9, max: 8 },
                HASHKV_E_INVALID_ARGUMENT,
            ),
            (
                Error::StoreFull {
                    used_bytes: 1,
                    capacity_bytes: 1,
                },
                HASHKV_E_STORE_FULL,
            ),
            (corruption(), HASHKV_E_CORRUPTION),
            (
                Error::Poisoned {
                    first_error: std::sync::Arc::new(corruption()),
                },
                HASHKV_E_POISONED,
            ),
            (
                Error::At {
                    place: "group 3 segment 7".into(),
                    source: Box::new(Error::StoreFull {
                        used_bytes: 1,
                        capacity_bytes: 1,
                    }),
                },
                HASHKV_E_STORE_FULL,
            ),
            (
                Error::Device(DeviceError::InUse { path: "d".into() }),
                HASHKV_E_BUSY,
            ),
            (
                Error::Device(DeviceError::NotFound { path: "d".into() }),
                HASHKV_E_NOT_FOUND,
            ),
            (
                Error::Device(DeviceError::Io {
                    op: "read",
                    offset: 0,
                    len: 4096,
                    source: io(std::io::ErrorKind::Other),
                }),
                HASHKV_E_IO,
            ),
            (
                Error::Device(DeviceError::refusal(std::sync::Arc::new(
                    DeviceError::Config { reason: "x".into() },
                ))),
                HASHKV_E_POISONED,
            ),
            (
                Error::Lsm(LsmError::Locked { dir: "m".into() }),
                HASHKV_E_BUSY,
            ),
            (
                Error::MetadataDir {
                    path: "m".into(),
                    source: io(std::io::ErrorKind::NotFound),
                },
                HASHKV_E_NOT_FOUND,
            ),
            (
                Error::MetadataDir {
                    path: "m".into(),
                    source: io(std::io::ErrorKind::PermissionDenied),
                },
                HASHKV_E_IO,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(error_code(&e), code, "{e:?}");
        }
    }

    #[test]
    fn a_panic_becomes_the_panic_code_with_its_message() {
        let mut err: *mut c_char = null_mut();
        // SAFETY: err is a valid, NULL-initialised char*.
        let rc = unsafe { guard(&mut err, || panic!("boom at the boundary")) };
        assert_eq!(rc, HASHKV_E_PANIC);
        assert_eq!(hashkv_last_errcode(), HASHKV_E_PANIC);
        // SAFETY: guard left a NUL-terminated malloc'd message.
        let msg = unsafe { std::ffi::CStr::from_ptr(err) }
            .to_string_lossy()
            .into_owned();
        assert!(msg.contains("boom at the boundary"), "{msg}");
        // A second failure frees the first message and replaces it.
        // SAFETY: err holds a hashkv message, as set_error allows.
        let rc = unsafe { guard(&mut err, || Err(Failure::invalid("second"))) };
        assert_eq!(rc, HASHKV_E_INVALID_ARGUMENT);
        // SAFETY: as above.
        let msg = unsafe { std::ffi::CStr::from_ptr(err) }
            .to_string_lossy()
            .into_owned();
        assert_eq!(msg, "second");
        // SAFETY: malloc'd by set_error, freed once.
        unsafe { libc::free(err.cast()) };
    }
}
