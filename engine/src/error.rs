//! The engine's typed errors. Lower layers' errors are wrapped, not flattened, so the
//! cause stays visible.

use hashkv_blockdev::DeviceError;
use hashkv_lsm::LsmError;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("key of {len} bytes is empty or exceeds the limit of {max} bytes")]
    KeyTooLarge { len: usize, max: usize },

    #[error("value of {len} bytes exceeds the limit of {max} bytes (a record must fit in one log segment and an inline value in the index)")]
    ValueTooLarge { len: usize, max: usize },

    #[error("invalid options: {reason}")]
    InvalidOptions { reason: String },

    #[error("device too small: {reason}")]
    DeviceTooSmall { reason: String },

    #[error("device holds data ({what}); format it with force to overwrite")]
    DeviceNotEmpty { what: String },

    #[error("not a hashkv device: {reason}")]
    NotOurs { reason: String },

    #[error("device was formatted with other parameters: {what}: on device {on_device}, requested {requested}")]
    Mismatch {
        what: &'static str,
        on_device: String,
        requested: String,
    },

    #[error("device format version {found} is newer than this build supports ({supported})")]
    NewerFormat { found: u32, supported: u32 },

    #[error("store full: no free value space even after garbage collection ({used_bytes} of {capacity_bytes} bytes in use)")]
    StoreFull {
        used_bytes: u64,
        capacity_bytes: u64,
    },

    /// Something read back is not what the format allows: `what` names the structure,
    /// `expected` and `found` what should have been there and what was.
    #[error("corruption in {what}: expected {expected}, found {found}")]
    Corruption {
        what: &'static str,
        expected: String,
        found: String,
    },

    #[error("checksum mismatch in {what}: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        what: &'static str,
        stored: u32,
        computed: u32,
    },

    /// An error found at a place worth naming (a segment, a log position, a key).
    #[error("{place}: {source}")]
    At {
        place: String,
        #[source]
        source: Box<Error>,
    },

    /// The commit thread panicked (a bug): the flushes it held are not committed, and
    /// the store refuses writes.
    #[error("the commit thread panicked: {message}")]
    CommitThreadPanicked { message: String },

    /// The store refuses writes since its first fatal error, kept whole here.
    #[error("store refuses writes after an earlier error: {first_error}")]
    Poisoned { first_error: Arc<Error> },

    #[error("device: {0}")]
    Device(#[from] DeviceError),

    #[error("index: {0}")]
    Lsm(#[from] LsmError),

    #[error("metadata directory {path}: {source}")]
    MetadataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// `self`, found at `place`.
    pub(crate) fn at(self, place: impl Into<String>) -> Error {
        Error::At {
            place: place.into(),
            source: Box::new(self),
        }
    }

    /// Errors after which the store must refuse writes: the devices or the index
    /// failed, or data on them is damaged.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::At { source, .. } => source.is_fatal(),
            e => matches!(
                e,
                Error::Device(_)
                    | Error::Lsm(_)
                    | Error::Corruption { .. }
                    | Error::ChecksumMismatch { .. }
                    | Error::Poisoned { .. }
                    | Error::CommitThreadPanicked { .. }
            ),
        }
    }
}

impl Error {
    /// A corruption error: `what` structure, `expected` vs `found`.
    pub(crate) fn corrupt(
        what: &'static str,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Error {
        Error::Corruption {
            what,
            expected: expected.into(),
            found: found.into(),
        }
    }

    /// Data read back failed an integrity check (a checksum, or a structure that is not
    /// what the format allows).
    pub fn is_integrity(&self) -> bool {
        match self {
            Error::At { source, .. } => source.is_integrity(),
            e => matches!(e, Error::Corruption { .. } | Error::ChecksumMismatch { .. }),
        }
    }
}

/// A poisoned store keeps its first error and also returns it to the caller that hit
/// it, so errors are cloned (I/O errors keep their OS error number, or kind and
/// message).
impl Clone for Error {
    fn clone(&self) -> Self {
        use Error::*;
        match self {
            KeyTooLarge { len, max } => KeyTooLarge {
                len: *len,
                max: *max,
            },
            ValueTooLarge { len, max } => ValueTooLarge {
                len: *len,
                max: *max,
            },
            InvalidOptions { reason } => InvalidOptions {
                reason: reason.clone(),
            },
            DeviceTooSmall { reason } => DeviceTooSmall {
                reason: reason.clone(),
            },
            DeviceNotEmpty { what } => DeviceNotEmpty { what: what.clone() },
            CommitThreadPanicked { message } => CommitThreadPanicked {
                message: message.clone(),
            },
            NotOurs { reason } => NotOurs {
                reason: reason.clone(),
            },
            Mismatch {
                what,
                on_device,
                requested,
            } => Mismatch {
                what,
                on_device: on_device.clone(),
                requested: requested.clone(),
            },
            NewerFormat { found, supported } => NewerFormat {
                found: *found,
                supported: *supported,
            },
            StoreFull {
                used_bytes,
                capacity_bytes,
            } => StoreFull {
                used_bytes: *used_bytes,
                capacity_bytes: *capacity_bytes,
            },
            Corruption {
                what,
                expected,
                found,
            } => Corruption {
                what,
                expected: expected.clone(),
                found: found.clone(),
            },
            ChecksumMismatch {
                what,
                stored,
                computed,
            } => ChecksumMismatch {
                what,
                stored: *stored,
                computed: *computed,
            },
            At { place, source } => At {
                place: place.clone(),
                source: source.clone(),
            },
            Poisoned { first_error } => Poisoned {
                first_error: first_error.clone(),
            },
            Device(e) => Device(e.clone()),
            Lsm(e) => Lsm(e.clone()),
            MetadataDir { path, source } => MetadataDir {
                path: path.clone(),
                source: hashkv_blockdev::error::copy_io_error(source),
            },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A panic's message, for an error that reports it (the C API's boundary, the commit
/// thread): its `&str` or `String` payload, else a fixed text.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
