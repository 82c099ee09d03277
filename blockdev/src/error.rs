//! Typed errors of the device layer. Every variant says what was expected and what
//! was found, so a caller (and a user reading the message) can act on it.

use std::path::PathBuf;

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

    #[error("device refuses writes after an earlier I/O error: {first_error}")]
    Poisoned { first_error: String },

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
    /// True for errors caused by the device rather than by the caller's arguments;
    /// those poison the device.
    pub fn is_io(&self) -> bool {
        matches!(self, DeviceError::Io { .. } | DeviceError::Poisoned { .. })
    }
}

pub type Result<T, E = DeviceError> = std::result::Result<T, E>;
