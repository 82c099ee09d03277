//! Appends records to the current WAL file. Each record (one write batch) is handed to
//! the kernel as it is appended, as RocksDB does for `sync = false`: a non-sync write
//! therefore survives a crash of this process (kill -9), and only a power cut or an
//! operating-system crash can lose it before a later sync write, `sync_wal` or `flush`
//! makes it durable. The cost is one write(2) per batch.
//!
//! The WAL is read only at recovery, so its pages are dropped from the page cache
//! behind the writer (`fs::DropBehind`: each MiB appended, and after each sync). The
//! last, partial page stays (advice covers whole pages only), so the next append does
//! not read it back from the disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{encode_header, encode_record};
use crate::error::{LsmError, Result};
use crate::fs::{DropBehind, Fs, FsFile, IfExists};

/// Capacity the encoding buffer starts with: one record of a typical batch encodes
/// without growing it.
const ENCODE_BUFFER_BYTES_INITIAL: usize = 64 << 10;
/// A buffer grown past this by a large batch is given back after it: kept, it would
/// hold the largest batch's size for the life of the WAL (megabytes, when the engine
/// commits a full write cache in the lsm mode) for no gain.
const ENCODE_BUFFER_BYTES_KEPT_MAX: usize = 4 * ENCODE_BUFFER_BYTES_INITIAL;

pub(crate) struct WalWriter {
    pub path: PathBuf,
    file: Arc<dyn FsFile>,
    buf: Vec<u8>,
    /// Bytes handed to the kernel (file length, header included).
    pub written_bytes: u64,
    behind: DropBehind,
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
        let mut behind = DropBehind::default();
        behind.appended(&*file, header.len() as u64);
        Ok(WalWriter {
            path,
            file,
            buf: Vec::with_capacity(ENCODE_BUFFER_BYTES_INITIAL),
            written_bytes: header.len() as u64,
            behind,
        })
    }

    /// Appends one record and hands it to the kernel; returns its encoded size.
    pub fn append(&mut self, payload: &[u8]) -> Result<usize> {
        let before = self.buf.len();
        encode_record(payload, &mut self.buf);
        let n = self.buf.len() - before;
        self.flush_buffer()?;
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
        self.behind.appended(&*self.file, self.buf.len() as u64);
        self.buf.clear();
        if self.buf.capacity() > ENCODE_BUFFER_BYTES_KEPT_MAX {
            self.buf = Vec::with_capacity(ENCODE_BUFFER_BYTES_INITIAL);
        }
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
            .map_err(|e| LsmError::io(format!("syncing {}", self.path.display()), e))?;
        self.behind.synced(&*self.file);
        Ok(())
    }
}
