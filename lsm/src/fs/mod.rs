//! The file-system seam: every file and directory operation of the tree goes through
//! [`Fs`] and [`FsFile`], so that tests can run the tree on [`crate::fault::FaultFs`]
//! (in memory, with crashes that lose unsynced data and injected errors) while
//! production runs on [`RealFs`] (std::fs and the kernel).
//!
//! The interface is what the tree needs and no more: whole-file reads (WAL, manifest,
//! CURRENT at open), sequential appends to files it creates, positional reads of
//! tables, `fdatasync`/`fsync`, truncation (cutting a torn WAL tail), rename (CURRENT),
//! remove, list, directory sync and an exclusive lock. Calls go through `dyn`, one
//! indirect call per operation; no call adds a copy or an allocation on the write path.

mod real;

use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub use real::RealFs;

/// What a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Missing,
    File,
    Dir,
}

/// What `Fs::create` does when the file exists already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfExists {
    /// Fail with `AlreadyExists` (`O_EXCL`): WALs, tables and manifests get numbers
    /// that are never reused, so finding one means something is wrong.
    Fail,
    /// Empty it (`O_TRUNC`): the temporary file of an atomic replace.
    Truncate,
}

/// The file operations of the tree. Implementations must be usable from several
/// threads at once (group commit syncs the WAL outside the writer's lock).
pub trait Fs: Send + Sync + Debug {
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Whether `path` is missing, a file or a directory.
    fn entry_kind(&self, path: &Path) -> io::Result<EntryKind>;
    /// The names of the entries of `dir` (not sorted).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates `path` for writing; its data is written by [`FsFile::append`].
    fn create(&self, path: &Path, if_exists: IfExists) -> io::Result<Arc<dyn FsFile>>;
    /// Opens an existing file for reads; with `writable`, also for `set_len`.
    fn open(&self, path: &Path, writable: bool) -> io::Result<Arc<dyn FsFile>>;
    /// The whole content of `path`.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Renames `from` to `to`, replacing `to` atomically. Durable after `sync_dir`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the name `path`; open handles keep working. Durable after `sync_dir`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes `dir` and everything in it.
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes the creates, renames and removes done in `dir` so far durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `path` (created if missing), held until the returned
    /// guard is dropped. A lock held elsewhere gives an error of kind `WouldBlock`.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn FsLock>>;
}

/// An open file. Files are written only by the handle that created them, front to
/// back, so `append` needs no offset.
pub trait FsFile: Send + Sync + Debug {
    /// Writes all of `data` after what this handle wrote before. Not durable until
    /// `sync_data`.
    fn append(&self, data: &[u8]) -> io::Result<()>;
    /// Fills `buf` from `offset`; a file too short for it is an `UnexpectedEof` error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The file's length in bytes.
    fn len_bytes(&self) -> io::Result<u64>;
    /// Cuts or extends the file to `len` bytes. Not durable until `sync_all`.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data (and the length it needs) durable: `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's data and metadata durable: `fsync`.
    fn sync_all(&self) -> io::Result<()>;
}

/// An exclusive lock from [`Fs::lock`]; dropping it releases the lock.
pub trait FsLock: Send + Sync {}

/// Adapts an [`FsFile`] to `std::io::Write`, so a `BufWriter` can gather small writes
/// into large appends (table building).
pub(crate) struct AppendWriter(pub Arc<dyn FsFile>);

impl io::Write for AppendWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.append(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.append(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
