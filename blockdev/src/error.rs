//! Typed errors of the device layer. Every variant says what was expected and what
//! was found, so a caller (and a user reading the message) can act on it.

use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    #[error("{path}: no such file or device")]
    NotFound { path: PathBuf },

    #[error("{path}: is a directory, expected a block device or a regular file")]
    IsDirectory { path: PathBuf },

    #[error("{path}: not a block device or a regular file")]
    UnsupportedKind { path: PathBuf },

    #[error("{path}: already opened by another process or handle (lock held)")]
    InUse { path: PathBuf },

    #[error(
        "{path}: size {size_bytes} bytes is not a multiple of the {block_bytes}-byte block size"
    )]
    SizeUnaligned {
        path: PathBuf,
        size_bytes: u64,
        block_bytes: u32,
    },

    #[error("{path}: open failed: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("offset {offset} is not a multiple of the {block_bytes}-byte block size")]
    OffsetUnaligned { offset: u64, block_bytes: u32 },

    #[error("length {len} is not a non-zero multiple of the {block_bytes}-byte block size")]
    LengthUnaligned { len: u64, block_bytes: u32 },

    #[error("buffer address {addr:#x} is not aligned to {block_bytes} bytes")]
    BufferUnaligned { addr: usize, block_bytes: u32 },

    #[error("range {offset}+{len} lies beyond the device end at {size_bytes} bytes")]
    OutOfRange {
        offset: u64,
        len: u64,
        size_bytes: u64,
    },

    #[error("{op} at offset {offset} (+{len} bytes) failed: {source}")]
    Io {
        op: &'static str,
        offset: u64,
        len: u64,
        #[source]
        source: std::io::Error,
    },

    /// `cause` is that earlier error itself (a stripe's: its first failed member's,
    /// which `first_error` names by member index).
    #[error("device refuses writes after an earlier I/O error: {first_error}")]
    Poisoned {
        first_error: String,
        cause: Arc<DeviceError>,
    },

    #[error("member identity header: {reason}")]
    Identity { reason: String },

    #[error("invalid configuration: {reason}")]
    Config { reason: String },

    #[error("{path}: already exists (refusing to replace it)")]
    AlreadyExists { path: PathBuf },

    #[error("{path}: the filesystem refuses O_DIRECT ({source}); put the file on a disk-backed filesystem such as ext4 or xfs")]
    DirectIoUnsupported {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: block size {block_bytes} bytes is outside the supported range {min_bytes}..={max_bytes}")]
    BlockSizeUnsupported {
        path: PathBuf,
        block_bytes: u32,
        min_bytes: u32,
        max_bytes: u32,
    },

    #[error("io_uring setup failed: {source}")]
    Uring {
        #[source]
        source: std::io::Error,
    },
}

impl DeviceError {
    /// The refusal of a write or flush after `cause`, the device's first I/O error.
    pub fn refusal(cause: Arc<DeviceError>) -> DeviceError {
        DeviceError::Poisoned {
            first_error: cause.to_string(),
            cause,
        }
    }

    /// True for errors caused by the device rather than by the caller's arguments;
    /// those poison the device.
    pub fn is_io(&self) -> bool {
        matches!(self, DeviceError::Io { .. } | DeviceError::Poisoned { .. })
    }
}

/// A copy of an I/O error that keeps what a caller acts on: the OS error number where
/// there is one, else the kind and the message.
pub fn copy_io_error(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

/// Errors are cloned where one must be kept and also returned: a store that is poisoned
/// by an error keeps it to report to every later caller.
impl Clone for DeviceError {
    fn clone(&self) -> Self {
        use DeviceError::*;
        match self {
            NotFound { path } => NotFound { path: path.clone() },
            IsDirectory { path } => IsDirectory { path: path.clone() },
            UnsupportedKind { path } => UnsupportedKind { path: path.clone() },
            InUse { path } => InUse { path: path.clone() },
            SizeUnaligned {
                path,
                size_bytes,
                block_bytes,
            } => SizeUnaligned {
                path: path.clone(),
                size_bytes: *size_bytes,
                block_bytes: *block_bytes,
            },
            Open { path, source } => Open {
                path: path.clone(),
                source: copy_io_error(source),
            },
            OffsetUnaligned {
                offset,
                block_bytes,
            } => OffsetUnaligned {
                offset: *offset,
                block_bytes: *block_bytes,
            },
            LengthUnaligned { len, block_bytes } => LengthUnaligned {
                len: *len,
                block_bytes: *block_bytes,
            },
            BufferUnaligned { addr, block_bytes } => BufferUnaligned {
                addr: *addr,
                block_bytes: *block_bytes,
            },
            OutOfRange {
                offset,
                len,
                size_bytes,
            } => OutOfRange {
                offset: *offset,
                len: *len,
                size_bytes: *size_bytes,
            },
            Io {
                op,
                offset,
                len,
                source,
            } => Io {
                op,
                offset: *offset,
                len: *len,
                source: copy_io_error(source),
            },
            Poisoned { first_error, cause } => Poisoned {
                first_error: first_error.clone(),
                cause: cause.clone(),
            },
            Identity { reason } => Identity {
                reason: reason.clone(),
            },
            Config { reason } => Config {
                reason: reason.clone(),
            },
            AlreadyExists { path } => AlreadyExists { path: path.clone() },
            DirectIoUnsupported { path, source } => DirectIoUnsupported {
                path: path.clone(),
                source: copy_io_error(source),
            },
            BlockSizeUnsupported {
                path,
                block_bytes,
                min_bytes,
                max_bytes,
            } => BlockSizeUnsupported {
                path: path.clone(),
                block_bytes: *block_bytes,
                min_bytes: *min_bytes,
                max_bytes: *max_bytes,
            },
            Uring { source } => Uring {
                source: copy_io_error(source),
            },
        }
    }
}

pub type Result<T, E = DeviceError> = std::result::Result<T, E>;
