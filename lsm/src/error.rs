//! Errors of the LSM tree. Each variant says what was expected and what was found, so
//! that an operator reading a log line can act on it without the source code.

use std::path::PathBuf;

/// Every fallible operation of the tree returns this.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    #[error("key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge { len: usize, max: usize },
    #[error("key must not be empty")]
    KeyEmpty,
    #[error("directory {dir} is locked by another open Db (in this or another process)")]
    Locked { dir: PathBuf },
    #[error("directory {dir} is not an LSM directory: found {found}")]
    NotAnLsmDirectory { dir: PathBuf, found: String },
    #[error("directory {dir} does not hold an LSM tree and create_if_missing is false")]
    NotFound { dir: PathBuf },
    #[error("directory {dir} already holds an LSM tree and error_if_exists is true")]
    AlreadyExists { dir: PathBuf },
    #[error("{file}: format version {found} is newer than the supported version {supported}")]
    NewerFormat {
        file: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("corruption in {file} at offset {offset}: {what}")]
    Corruption {
        file: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("checksum mismatch in {file} at offset {offset}: expected {expected:#010x}, found {found:#010x}")]
    ChecksumMismatch {
        file: PathBuf,
        offset: u64,
        expected: u32,
        found: u32,
    },
    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the tree is poisoned by an earlier error ({cause}); reopen it to recover")]
    Poisoned { cause: String },
    #[error("the tree is closed")]
    Closed,
    #[error("invalid options: {what}")]
    InvalidOptions { what: String },
}

/// Errors are cloned where one must be kept and also returned (a poisoned store keeps
/// its first error). I/O errors keep their OS error number, or kind and message.
impl Clone for LsmError {
    fn clone(&self) -> Self {
        use LsmError::*;
        match self {
            KeyTooLarge { len, max } => KeyTooLarge {
                len: *len,
                max: *max,
            },
            ValueTooLarge { len, max } => ValueTooLarge {
                len: *len,
                max: *max,
            },
            KeyEmpty => KeyEmpty,
            Locked { dir } => Locked { dir: dir.clone() },
            NotAnLsmDirectory { dir, found } => NotAnLsmDirectory {
                dir: dir.clone(),
                found: found.clone(),
            },
            NotFound { dir } => NotFound { dir: dir.clone() },
            AlreadyExists { dir } => AlreadyExists { dir: dir.clone() },
            NewerFormat {
                file,
                found,
                supported,
            } => NewerFormat {
                file: file.clone(),
                found: *found,
                supported: *supported,
            },
            Corruption { file, offset, what } => Corruption {
                file: file.clone(),
                offset: *offset,
                what: what.clone(),
            },
            ChecksumMismatch {
                file,
                offset,
                expected,
                found,
            } => ChecksumMismatch {
                file: file.clone(),
                offset: *offset,
                expected: *expected,
                found: *found,
            },
            Io { context, source } => Io {
                context: context.clone(),
                source: match source.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::new(source.kind(), source.to_string()),
                },
            },
            Poisoned { cause } => Poisoned {
                cause: cause.clone(),
            },
            Closed => Closed,
            InvalidOptions { what } => InvalidOptions { what: what.clone() },
        }
    }
}

impl LsmError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> LsmError {
        LsmError::Io {
            context: context.into(),
            source,
        }
    }

    /// A decoding failure of an in-memory buffer whose file is filled in by the caller.
    pub(crate) fn corrupt(what: impl Into<String>) -> LsmError {
        LsmError::Corruption {
            file: PathBuf::new(),
            offset: 0,
            what: what.into(),
        }
    }

    /// Attach a file and a base offset to a corruption found while decoding a buffer.
    pub(crate) fn in_file(self, path: &std::path::Path, base_offset: u64) -> LsmError {
        match self {
            LsmError::Corruption { file, offset, what } if file.as_os_str().is_empty() => {
                LsmError::Corruption {
                    file: path.to_path_buf(),
                    offset: base_offset + offset,
                    what,
                }
            }
            LsmError::ChecksumMismatch {
                file,
                offset,
                expected,
                found,
            } if file.as_os_str().is_empty() => LsmError::ChecksumMismatch {
                file: path.to_path_buf(),
                offset: base_offset + offset,
                expected,
                found,
            },
            other => other,
        }
    }
}

pub type Result<T, E = LsmError> = std::result::Result<T, E>;
