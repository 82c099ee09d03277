//! Appends records to the current WAL file. Records are gathered in a user-space buffer
//! and handed to the kernel when it fills, before every sync, and on close: a non-sync
//! write may therefore be lost by a process crash, not only by a power cut, which is
//! the contract of non-sync writes (durable only after a later sync write, `sync_wal`
//! or `flush`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{encode_header, encode_record};
use crate::error::{LsmError, Result};
use crate::fs::{Fs, FsFile, IfExists};

/// Buffered records are written to the file once they exceed this; big enough to
/// amortise the write(2) call over many small records.
const BUFFER_BYTES_MAX: usize = 256 << 10;

pub(crate) struct WalWriter {
    pub path: PathBuf,
    file: Arc<dyn FsFile>,
    buf: Vec<u8>,
    /// Bytes handed to the kernel (file length, header included).
    pub written_bytes: u64,
}

impl WalWriter {
    /// Creates a new WAL file and writes its header (not yet synced: the caller syncs
    /// the directory and the file before relying on it).
    pub fn create(fs: &dyn Fs, dir: &Path, number: u64) -> Result<WalWriter> {
        let path = dir.join(crate::files::wal_name(number));
        let file = fs
            .create(&path, IfExists::Fail)
            .map_err(|e| LsmError::io(format!("creating {}", path.display()), e))?;
        let header = encode_header();
        file.append(&header)
            .map_err(|e| LsmError::io(format!("writing {}", path.display()), e))?;
        Ok(WalWriter {
            path,
            file,
            buf: Vec::with_capacity(BUFFER_BYTES_MAX * 2),
            written_bytes: header.len() as u64,
        })
    }

    /// Appends one record; returns its encoded size.
    pub fn append(&mut self, payload: &[u8]) -> Result<usize> {
        let before = self.buf.len();
        encode_record(payload, &mut self.buf);
        let n = self.buf.len() - before;
        if self.buf.len() >= BUFFER_BYTES_MAX {
            self.flush_buffer()?;
        }
        Ok(n)
    }

    /// Hands buffered records to the kernel.
    pub fn flush_buffer(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .append(&self.buf)
            .map_err(|e| LsmError::io(format!("writing {}", self.path.display()), e))?;
        self.written_bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// The file, for a sync done outside the writer's lock (group commit).
    pub fn file(&self) -> Arc<dyn FsFile> {
        self.file.clone()
    }

    /// Bytes appended so far, buffered or not.
    pub fn logical_bytes(&self) -> u64 {
        self.written_bytes + self.buf.len() as u64
    }

    pub fn sync(&mut self) -> Result<()> {
        self.flush_buffer()?;
        self.file
            .sync_data()
            .map_err(|e| LsmError::io(format!("syncing {}", self.path.display()), e))
    }
}
