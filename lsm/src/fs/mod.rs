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
//!
//! # The OS page cache
//!
//! The tree keeps what it wants in memory itself (block cache, pinned indexes and
//! filters, memtables), inside the engine's memory budget; its files must not also
//! fill the page cache, which on a node whose data is 30x its RAM holds nothing useful
//! and would count against the process's memory (cgroup) besides. The policy:
//! - Tables are read through [`Fs::open_uncached`]: `O_DIRECT` (aligned reads into a
//!   bounce buffer, the wanted bytes copied out), or, where the file system refuses
//!   `O_DIRECT` at open (`EINVAL`: tmpfs, some FUSE and network file systems),
//!   buffered reads each followed by `posix_fadvise(DONTNEED)` of the range read.
//! - Files the tree appends to (tables, WALs) drop their pages behind them
//!   ([`DropBehind`]): every [`DROP_BEHIND_BYTES`] appended, `DONTNEED` over all of
//!   the file written so far starts the writeback of what is dirty and drops what is
//!   clean (written back since the last call); after each `fdatasync` the whole file
//!   is dropped. A file being written so holds in the page cache what the disk has
//!   not yet written of it, about two steps as long as the disk keeps up. (Waiting
//!   for the writeback with `sync_file_range` would bound it hard, but would also
//!   consume a writeback error that the next `fdatasync` must report.)
//! - The manifest and CURRENT are small and read only at open: left to the kernel.
//!
//! Advice never changes what a file holds; a failed `DONTNEED` costs only cache space,
//! so the tree ignores it (the fault sweep fails every advice call to check that).

mod real;

/// Bytes appended to a file between two `DONTNEED` calls of [`DropBehind`]: the page
/// cache holds about two of these per file being written. 1 MiB is the table builder's
/// write size, and large enough that the calls (one per MiB) cost nothing measurable.
pub(crate) const DROP_BEHIND_BYTES: u64 = 1 << 20;

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
    /// Opens an existing file for reads that leave nothing in the OS page cache:
    /// `O_DIRECT` where the file system allows it, else buffered reads each followed by
    /// `DONTNEED` of what they read (see the module documentation). Reads of any
    /// offset and length work on it: alignment is the handle's business.
    fn open_uncached(&self, path: &Path) -> io::Result<Arc<dyn FsFile>>;
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
    /// Advises the OS that the `len_bytes` bytes from `offset` (0: to the end) are not
    /// needed again (`posix_fadvise(DONTNEED)`): clean cached pages are dropped, dirty
    /// ones start their writeback. Changes nothing the file holds.
    fn drop_cache(&self, offset: u64, len_bytes: u64) -> io::Result<()>;
}

/// An exclusive lock from [`Fs::lock`]; dropping it releases the lock.
pub trait FsLock: Send + Sync {}

/// Keeps a file being appended to out of the page cache (see the module
/// documentation): tell it what was appended and when the file was synced.
#[derive(Debug, Default)]
pub(crate) struct DropBehind {
    /// Bytes appended so far.
    appended: u64,
    /// Where `appended` stood at the last advice.
    advised_to: u64,
}

impl DropBehind {
    /// Notes `n` bytes appended to `file`; advises once a step is complete.
    pub fn appended(&mut self, file: &dyn FsFile, n: u64) {
        self.appended += n;
        if self.appended - self.advised_to >= DROP_BEHIND_BYTES {
            // Over everything written so far: pages written back since an earlier call
            // (whose writeback was then still running) go now, and the newest step's
            // writeback starts. The walk costs only the pages still cached. Advice: a
            // failure costs only cache space (module documentation).
            let _ = file.drop_cache(0, self.appended);
            self.advised_to = self.appended;
        }
    }

    /// Notes that `file` was synced: every page is clean, so all of them go (but the
    /// last one if partial: advice drops whole pages only, and an append to a page
    /// not cached would read it back from the disk first).
    pub fn synced(&mut self, file: &dyn FsFile) {
        // Advice: a failure costs only cache space (module documentation).
        let _ = file.drop_cache(0, self.appended);
        self.advised_to = self.appended;
    }
}

/// Adapts an [`FsFile`] to `std::io::Write`, so a `BufWriter` can gather small writes
/// into large appends (table building); drops the pages written behind it.
pub(crate) struct AppendWriter {
    pub file: Arc<dyn FsFile>,
    pub behind: DropBehind,
}

impl AppendWriter {
    pub fn new(file: Arc<dyn FsFile>) -> AppendWriter {
        AppendWriter {
            file,
            behind: DropBehind::default(),
        }
    }
}

impl io::Write for AppendWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.append(buf)?;
        self.behind.appended(&*self.file, buf.len() as u64);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
