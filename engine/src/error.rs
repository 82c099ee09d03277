//! The engine's typed errors. Lower layers' errors are wrapped, not flattened, so the
//! cause stays visible.

use hashkv_blockdev::DeviceError;
use hashkv_lsm::LsmError;

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

    #[error("corruption: {what}")]
    Corruption { what: String },

    #[error("checksum mismatch in {what}: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        what: &'static str,
        stored: u32,
        computed: u32,
    },

    #[error("store refuses writes after an earlier error: {first_error}")]
    Poisoned { first_error: String },

    #[error("store is closed")]
    Closed,

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
    /// Errors after which the store must refuse writes: the devices or the index
    /// failed, or data on them is damaged.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Device(_)
                | Error::Lsm(_)
                | Error::Corruption { .. }
                | Error::ChecksumMismatch { .. }
                | Error::Poisoned { .. }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
