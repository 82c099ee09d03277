//! Appends records to the current WAL file. Each record (one write batch) is handed to
//! the kernel as it is appended, as RocksDB does for `sync = false`: a non-sync write
//! therefore survives a crash of this process (kill -9), and only a power cut or an
//! operating-system crash can lose it before a later sync write, `sync_wal` or `flush`
//! makes it durable. The cost is one write(2) per batch, two for a batch too large for
//! the encoding buffer to keep (its entries are written from the batch itself).
//!
//! The WAL is read only at recovery, so its pages are dropped from the page cache
//! behind the writer (`fs::DropBehind`: each MiB appended, and after each sync). The
//! last, partial page stays (advice covers whole pages only), so the next append does
//! not read it back from the disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{encode_header, record_header};
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

    /// Appends one record whose payload is `parts` one after another and hands it to
    /// the kernel; returns its encoded size. A last part too large for the encoding
    /// buffer to keep goes to the kernel from the caller's slice, not through a copy: a
    /// full write cache committed in the lsm mode is megabytes, and each copy was a
    /// buffer of that size allocated and freed per flush (the memory test's resident
    /// memory rose by what the allocator kept of them). A crash between the appends
    /// leaves a torn last record, which recovery cuts off like any other; a failed
    /// append poisons the tree, so nothing follows it.
    pub fn append_parts(&mut self, parts: &[&[u8]]) -> Result<usize> {
        let header = record_header(parts);
        let payload_bytes: usize = parts.iter().map(|p| p.len()).sum();
        self.buf.extend_from_slice(&header);
        let (last, first) = parts.split_last().expect("a record has a payload");
        for p in first {
            self.buf.extend_from_slice(p);
        }
        if self.buf.len() + last.len() <= ENCODE_BUFFER_BYTES_KEPT_MAX {
            self.buf.extend_from_slice(last);
            self.flush_buffer()?;
        } else {
            // Two write(2)s: the header and the small parts, then the large last part.
            self.flush_buffer()?;
            self.append_unbuffered(last)?;
        }
        Ok(header.len() + payload_bytes)
    }

    fn append_unbuffered(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .append(bytes)
            .map_err(|e| LsmError::io(format!("writing {}", self.path.display()), e))?;
        self.written_bytes += bytes.len() as u64;
        self.behind.appended(&*self.file, bytes.len() as u64);
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::RealFs;
    use crate::wal::batch::WriteBatch;
    use crate::wal::reader::replay;

    /// Replays `path`: per batch, its first sequence and its (key, value) entries.
    fn replayed(path: &Path) -> Vec<(u64, Vec<(Vec<u8>, Vec<u8>)>)> {
        let mut out = Vec::new();
        replay(&RealFs, path, |seq, _count, each| {
            let mut entries = Vec::new();
            each(&mut |e| entries.push((e.key.to_vec(), e.value.to_vec())));
            out.push((seq, entries));
        })
        .unwrap();
        out
    }

    #[test]
    fn records_in_parts_small_and_past_the_kept_buffer_replay_whole_and_a_torn_one_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(&RealFs, dir.path(), 1).unwrap();
        let mut small = WriteBatch::new();
        small.put(b"a", b"1");
        let mut large = WriteBatch::new();
        let big_value = vec![7u8; 3 * ENCODE_BUFFER_BYTES_KEPT_MAX];
        large.put(b"b", &big_value);
        large.delete(b"c");
        let n1 = w
            .append_parts(&[&small.payload_header(5), &small.rep])
            .unwrap();
        let at_large = w.written_bytes;
        let n2 = w
            .append_parts(&[&large.payload_header(6), &large.rep])
            .unwrap();
        assert_eq!(w.written_bytes, at_large + n2 as u64);
        assert!(n1 < ENCODE_BUFFER_BYTES_KEPT_MAX && n2 > ENCODE_BUFFER_BYTES_KEPT_MAX);
        let path = w.path.clone();
        drop(w);
        let all = replayed(&path);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], (5, vec![(b"a".to_vec(), b"1".to_vec())]));
        assert_eq!(all[1].0, 6);
        assert_eq!(all[1].1[0], (b"b".to_vec(), big_value));
        assert_eq!(all[1].1[1].0, b"c".to_vec());
        // Torn inside the large record's payload (a crash between its appends): the
        // first batch stays, the torn one is cut off.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(at_large + n2 as u64 / 2).unwrap();
        assert_eq!(replayed(&path), vec![all[0].clone()]);
    }
}
