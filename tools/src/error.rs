//! Errors of the `hashkv` command. Each says what was being done, so the message alone
//! tells the user what failed and where.

use hashkv_blockdev::DeviceError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    #[error(transparent)]
    Device(#[from] DeviceError),

    /// Arguments that parse but make no sense together or for this device.
    #[error("{0}")]
    Usage(String),

    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("fio job {job}: {reason}")]
    Fio { job: String, reason: String },
}

pub type CliResult<T> = Result<T, CliError>;
