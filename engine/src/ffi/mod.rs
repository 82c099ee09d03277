//! The C ABI. `include/hashkv.h` is generated from this module by cbindgen
//! (`engine/cbindgen.toml`); the `c_header` test fails when the checked-in header
//! differs from a fresh generation. The header's preamble states the conventions for C
//! programmers: error codes, `errptr`, ownership, threads.
//!
//! Every exported function runs its body under a guard (`errors.rs`): a failure
//! becomes a stable negative code, the thread's `hashkv_last_errcode` and a message;
//! a panic becomes `HASHKV_E_PANIC` and never unwinds into C. Arguments are checked
//! in `args.rs`: NULL pointers and impossible lengths are refused, not dereferenced.
//! - `options.rs`: `hashkv_options`; `open.rs`: format, open (geometry from the
//!   superblock), close; `ops.rs`: put, put_sync, delete, get, get_into, flush;
//!   `batch.rs`: atomic write batches; `scan.rs`: iterators; `inspect.rs`: check and
//!   stats.
#![deny(unsafe_op_in_unsafe_fn)]

mod args;
// The header lists the exported items in the order cbindgen reads them, so these
// modules are declared in the order a reader of the header meets the API.
mod errors;
// (rustfmt sorts adjacent declarations: each stands alone to keep this order.)

mod options;

mod open;

mod ops;

mod batch;

mod scan;

mod inspect;

pub use batch::*;
pub use errors::*;
pub use inspect::*;
pub use open::*;
pub use ops::*;
pub use options::*;
pub use scan::*;

use std::ffi::{c_char, c_void};

/// Longest key accepted, in bytes (keys are 1 to this many bytes long).
pub const HASHKV_KEY_BYTES_MAX: usize = 1023;
const _: () = assert!(HASHKV_KEY_BYTES_MAX == crate::KEY_BYTES_MAX);

/// The library's version ("major.minor.patch"), a static string: do not free it.
///
/// Threads: any.
#[no_mangle]
pub extern "C" fn hashkv_version() -> *const c_char {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}

/// Frees memory hashkv handed to the caller: values and keys from `hashkv_get` and
/// `hashkv_iter_next`, and error messages from `errptr`. NULL is ignored.
///
/// Threads: any thread may free what another received.
///
/// # Safety
/// `ptr` is NULL or such a pointer, not yet freed and not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn hashkv_free(ptr: *mut c_void) {
    // SAFETY: everything hashkv hands out for freeing comes from malloc
    // (args::malloc_copy, errors::set_error); the caller frees each once. free(NULL)
    // does nothing.
    unsafe { libc::free(ptr) }
}
