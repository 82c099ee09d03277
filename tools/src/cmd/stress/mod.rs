//! What `hashkv crashtest` and `hashkv soak` share: keys and values that check
//! themselves (`values`), and the small store they torture (`small_store`): small
//! enough that GC runs all the time, with values on both sides of the separation
//! threshold so that every region of the value store is exercised.

pub mod small_store;
pub mod values;

use std::path::{Path, PathBuf};

/// Errors of crashtest and soak. A check that fails is `Failed`, whose message names
/// everything needed to reproduce and inspect it; the others say what could not be
/// done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StressError {
    /// Arguments that parse but make no sense.
    #[error("{0}")]
    Usage(String),

    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: creating the device file: {source}")]
    CreateDevice {
        path: PathBuf,
        #[source]
        source: hashkv_blockdev::DeviceError,
    },

    /// The store failed an operation that is not itself under test.
    #[error("{doing}: {source}")]
    Engine {
        doing: String,
        #[source]
        source: hashkv::Error,
    },

    /// A check found a violation of what the store promises.
    #[error("{0}")]
    Failed(String),
}

pub type StressResult<T> = Result<T, StressError>;

pub fn io_error(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> StressError {
    let path = path.to_path_buf();
    move |source| StressError::Io {
        path,
        action,
        source,
    }
}

/// Wraps an engine error with what was being done.
pub fn engine_error(doing: impl Into<String>) -> impl FnOnce(hashkv::Error) -> StressError {
    let doing = doing.into();
    move |source| StressError::Engine { doing, source }
}
