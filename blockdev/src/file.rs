//! Opening raw block devices, partitions and regular files with O_DIRECT, learning
//! their size and block sizes, and locking them against a second opener.
//!
//! - Block devices and partitions are opened `O_RDWR | O_DIRECT | O_CLOEXEC | O_EXCL`:
//!   the kernel refuses a second exclusive opener (and a mounted filesystem) with EBUSY.
//! - Regular files are opened `O_RDWR | O_DIRECT | O_CLOEXEC` and then locked with
//!   `flock(LOCK_EX | LOCK_NB)` (fs2). flock locks belong to the open file description,
//!   so a second handle in this process conflicts just like another process does.
//!
//! The opened file is handed to [`crate::uring::UringDevice`], whose callers drive the
//! I/O on its pool of io_uring rings.

// `x % n != 0` rather than `is_multiple_of`: the workspace MSRV (1.80) predates it.
#![allow(clippy::manual_is_multiple_of)]

use crate::device::Geometry;
use crate::error::{DeviceError, Result};
use crate::uring::UringDevice;
use fs2::FileExt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The smallest logical block we accept: the smallest sector size any Linux block
/// device reports.
pub const LOGICAL_BLOCK_MIN_BYTES: u32 = 512;
/// The largest logical block we accept: [`crate::BUFFER_ALIGN_BYTES`] must cover it so
/// that every [`crate::AlignedBuf`] is aligned for every device.
pub const LOGICAL_BLOCK_MAX_BYTES: u32 = 4096;
/// Block size assumed for a regular file when the kernel or filesystem does not report
/// its O_DIRECT alignment (statx STATX_DIOALIGN needs Linux 6.1 and filesystem
/// support): 4096 is safe on every filesystem that supports O_DIRECT at all.
pub const FILE_BLOCK_FALLBACK_BYTES: u32 = 4096;

const _: () = assert!(LOGICAL_BLOCK_MAX_BYTES as usize <= crate::buf::BUFFER_ALIGN_BYTES);
const _: () = assert!(LOGICAL_BLOCK_MIN_BYTES <= FILE_BLOCK_FALLBACK_BYTES);
const _: () = assert!(FILE_BLOCK_FALLBACK_BYTES <= LOGICAL_BLOCK_MAX_BYTES);

/// `statx` mask bit asking for the O_DIRECT alignment (Linux 6.1+).
const STATX_DIOALIGN_MASK: u32 = 0x2000;

/// Ring size when the caller does not choose: deep enough that one engine flush (one
/// write per segment group) and one GC read burst go out in a single io_uring_enter,
/// small enough that the ring's memory stays a few tens of KiB.
pub const RING_ENTRIES_DEFAULT: u32 = 256;
/// Size of the registered (fixed) buffer arena when the caller does not choose. 8 MiB
/// fits the common default RLIMIT_MEMLOCK (8 MiB) that registered buffers are charged
/// against for unprivileged users (once per ring; see
/// [`crate::uring::arena_bytes_allowed`]).
pub const FIXED_BUFFER_ARENA_BYTES_DEFAULT: usize = 8 << 20;
/// Rings per CPU a device may create when the caller does not choose. A caller holds
/// its ring while it sleeps on its I/O, so the threads inside `submit` at once can
/// outnumber the CPUs several times over (reader threads each waiting on one read);
/// fewer rings than that would cap the queue depth they reach.
pub const RINGS_PER_CPU_DEFAULT: usize = 4;
/// The fewest rings a device may create when the caller does not choose, whatever the
/// CPU count: rings are created only when that many threads submit at once, so the
/// floor costs nothing until it is used.
pub const RINGS_MAX_DEFAULT_MIN: usize = 16;
/// The most rings a device may create when the caller does not choose.
pub const RINGS_MAX_DEFAULT_MAX: usize = 256;

const _: () = assert!(RINGS_MAX_DEFAULT_MIN <= RINGS_MAX_DEFAULT_MAX);
const _: () = assert!(RINGS_MAX_DEFAULT_MAX <= crate::uring::RINGS_LIMIT);

/// [`OpenOptions::rings_max`] when the caller does not choose:
/// [`RINGS_PER_CPU_DEFAULT`] per CPU this process may run on, within
/// [`RINGS_MAX_DEFAULT_MIN`]..=[`RINGS_MAX_DEFAULT_MAX`].
pub fn rings_max_default() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    cpus.saturating_mul(RINGS_PER_CPU_DEFAULT)
        .clamp(RINGS_MAX_DEFAULT_MIN, RINGS_MAX_DEFAULT_MAX)
}

/// How to open a device.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// `None`: the path must exist. `Some(n)`: a missing regular file is created with
    /// `n` bytes (see [`create_file`]); an existing file or device is opened as it is.
    pub create_size_bytes: Option<u64>,
    /// io_uring submission queue entries of each ring (rounded up to a power of two by
    /// the kernel), in [`crate::uring::RING_ENTRIES_MIN`]..=
    /// [`crate::uring::RING_ENTRIES_MAX`]. One batch keeps at most this many requests
    /// in flight; the rest of a larger batch follows as they complete.
    pub ring_entries: u32,
    /// The most io_uring rings the device creates, in 1..=[`crate::uring::RINGS_LIMIT`].
    /// Each caller drives its batch on a ring of its own, so this is the most batches
    /// in flight on the device at once; a caller that finds every ring in use waits for
    /// one. Rings are created as concurrent callers need them (one at open). Default:
    /// [`rings_max_default`].
    pub rings_max: usize,
    /// Register a buffer arena with io_uring so that ops on buffers from
    /// [`UringDevice::alloc_buffer`] use READ_FIXED/WRITE_FIXED. Falls back to plain
    /// ops when registration is refused (RLIMIT_MEMLOCK, charged once per ring: with
    /// a small limit, fewer `rings_max` leave room for a larger arena).
    pub use_fixed_buffers: bool,
    /// Size of that arena.
    pub fixed_buffer_arena_bytes: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            create_size_bytes: None,
            ring_entries: RING_ENTRIES_DEFAULT,
            rings_max: rings_max_default(),
            use_fixed_buffers: true,
            fixed_buffer_arena_bytes: FIXED_BUFFER_ARENA_BYTES_DEFAULT,
        }
    }
}

/// What kind of thing a device path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A raw block device or a partition.
    BlockDevice,
    /// A regular file on a filesystem (the embedded default).
    RegularFile,
}

/// A device opened with O_DIRECT and locked, with its discovered geometry.
#[derive(Debug)]
pub struct DirectFile {
    pub path: PathBuf,
    pub kind: DeviceKind,
    pub geometry: Geometry,
    /// Owns the descriptor (and, for regular files, the flock, released on close).
    pub file: File,
}

/// Opens `path` as an io_uring device (see [`crate::uring`]).
pub fn open_device(path: &Path, opts: &OpenOptions) -> Result<Arc<UringDevice>> {
    let direct = open_direct(path, opts.create_size_bytes)?;
    Ok(Arc::new(UringDevice::new(direct, opts)?))
}

/// Opens a block device, partition or regular file with O_DIRECT, locks it against
/// other openers and learns its geometry. With `create_size_bytes`, a missing path is
/// created as a regular file of that size first.
pub fn open_direct(path: &Path, create_size_bytes: Option<u64>) -> Result<DirectFile> {
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => match create_size_bytes {
            Some(size_bytes) => {
                match create_file(path, size_bytes, false) {
                    // Another process created it between our stat and our create:
                    // open theirs; the lock decides who gets it.
                    Ok(()) | Err(DeviceError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e),
                }
                std::fs::metadata(path).map_err(|e| open_error(path, e))?
            }
            None => {
                return Err(DeviceError::NotFound {
                    path: path.to_path_buf(),
                })
            }
        },
        Err(e) => return Err(open_error(path, e)),
    };
    let file_type = metadata.file_type();
    if file_type.is_dir() {
        return Err(DeviceError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    if file_type.is_block_device() {
        open_block_device(path)
    } else if file_type.is_file() {
        open_regular_file(path)
    } else {
        Err(DeviceError::UnsupportedKind {
            path: path.to_path_buf(),
        })
    }
}

fn open_error(path: &Path, source: io::Error) -> DeviceError {
    match source.kind() {
        io::ErrorKind::NotFound => DeviceError::NotFound {
            path: path.to_path_buf(),
        },
        _ => DeviceError::Open {
            path: path.to_path_buf(),
            source,
        },
    }
}

fn open_block_device(path: &Path) -> Result<DirectFile> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        // O_EXCL on a block device: the kernel refuses a second exclusive opener and a
        // device with a mounted filesystem (EBUSY).
        .custom_flags(libc::O_DIRECT | libc::O_EXCL | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => DeviceError::InUse {
                path: path.to_path_buf(),
            },
            Some(libc::EINVAL) => DeviceError::DirectIoUnsupported {
                path: path.to_path_buf(),
                source: e,
            },
            _ => open_error(path, e),
        })?;
    // Checked on the descriptor: the path may have been swapped since the stat.
    let file_type = file
        .metadata()
        .map_err(|e| open_error(path, e))?
        .file_type();
    if !file_type.is_block_device() {
        return Err(DeviceError::UnsupportedKind {
            path: path.to_path_buf(),
        });
    }
    let size_bytes = block_ioctl_u64(&file, path)?;
    let logical_block_bytes = block_ioctl_int(&file, path, libc::BLKSSZGET as _)?;
    let physical_block_bytes = block_ioctl_int(&file, path, libc::BLKPBSZGET as _)?;
    let geometry = checked_geometry(path, size_bytes, logical_block_bytes, physical_block_bytes)?;
    Ok(DirectFile {
        path: path.to_path_buf(),
        kind: DeviceKind::BlockDevice,
        geometry,
        file,
    })
}

nix::ioctl_read!(ioctl_blkgetsize64, 0x12, 114, u64);

fn block_ioctl_u64(file: &File, path: &Path) -> Result<u64> {
    let mut size_bytes: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to a live
    // local u64; the descriptor is open for the duration of the call.
    unsafe { ioctl_blkgetsize64(file.as_raw_fd(), &mut size_bytes) }.map_err(|errno| {
        DeviceError::Open {
            path: path.to_path_buf(),
            source: io::Error::other(format!("ioctl BLKGETSIZE64 failed: {errno}")),
        }
    })?;
    Ok(size_bytes)
}

fn block_ioctl_int(file: &File, path: &Path, request: libc::Ioctl) -> Result<u32> {
    let mut value: libc::c_int = 0;
    // SAFETY: BLKSSZGET and BLKPBSZGET write one int through the pointer, which points
    // to a live local c_int; the descriptor is open for the duration of the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request, &mut value as *mut libc::c_int) };
    if rc != 0 {
        return Err(DeviceError::Open {
            path: path.to_path_buf(),
            source: io::Error::other(format!(
                "ioctl {request:#x} (block size query) failed: {}",
                io::Error::last_os_error()
            )),
        });
    }
    u32::try_from(value).map_err(|_| DeviceError::Open {
        path: path.to_path_buf(),
        source: io::Error::other(format!("block size query returned {value}")),
    })
}

fn open_regular_file(path: &Path) -> Result<DirectFile> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => DeviceError::DirectIoUnsupported {
                path: path.to_path_buf(),
                source: e,
            },
            _ => open_error(path, e),
        })?;
    let metadata = file.metadata().map_err(|e| open_error(path, e))?;
    if !metadata.file_type().is_file() {
        return Err(DeviceError::UnsupportedKind {
            path: path.to_path_buf(),
        });
    }
    lock_exclusive(&file, path)?;
    let (logical_block_bytes, physical_block_bytes) = file_block_sizes(&file, path)?;
    let geometry = checked_geometry(
        path,
        metadata.len(),
        logical_block_bytes,
        physical_block_bytes,
    )?;
    Ok(DirectFile {
        path: path.to_path_buf(),
        kind: DeviceKind::RegularFile,
        geometry,
        file,
    })
}

fn lock_exclusive(file: &File, path: &Path) -> Result<()> {
    file.try_lock_exclusive().map_err(|e| {
        if e.kind() == io::ErrorKind::WouldBlock
            || e.raw_os_error() == fs2::lock_contended_error().raw_os_error()
        {
            DeviceError::InUse {
                path: path.to_path_buf(),
            }
        } else {
            DeviceError::Open {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })
}

/// (logical, physical) block sizes of a regular file: the O_DIRECT offset and memory
/// alignment from statx(STATX_DIOALIGN) where reported, else
/// [`FILE_BLOCK_FALLBACK_BYTES`]; physical is at least the filesystem block size
/// (writes smaller than it are read-modify-write below us).
fn file_block_sizes(file: &File, path: &Path) -> Result<(u32, u32)> {
    let fs_block_bytes = file
        .metadata()
        .map(|m| std::os::unix::fs::MetadataExt::blksize(&m))
        .unwrap_or(u64::from(FILE_BLOCK_FALLBACK_BYTES));
    // One block size serves offsets, lengths and buffer addresses in check_op, so it
    // must satisfy both alignments; raised to our minimum.
    let logical = direct_io_align_bytes(file).map_or(FILE_BLOCK_FALLBACK_BYTES, |a| {
        a.max(LOGICAL_BLOCK_MIN_BYTES)
    });
    if logical > LOGICAL_BLOCK_MAX_BYTES {
        return Err(DeviceError::BlockSizeUnsupported {
            path: path.to_path_buf(),
            block_bytes: logical,
            min_bytes: LOGICAL_BLOCK_MIN_BYTES,
            max_bytes: LOGICAL_BLOCK_MAX_BYTES,
        });
    }
    let physical = u32::try_from(fs_block_bytes)
        .unwrap_or(LOGICAL_BLOCK_MAX_BYTES)
        .clamp(logical, LOGICAL_BLOCK_MAX_BYTES.max(logical));
    Ok((logical, physical))
}

/// The O_DIRECT alignment of an open regular file: the larger of the offset and the
/// memory alignment statx(STATX_DIOALIGN) reports (Linux 6.1 and file systems that
/// support it); `None` where it reports none.
pub fn direct_io_align_bytes(file: &File) -> Option<u32> {
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let empty = c"";
    // SAFETY: with AT_EMPTY_PATH and an empty path statx describes the descriptor
    // itself; `empty` is a valid NUL-terminated string and `stx` a live, writable
    // statx buffer for the duration of the call.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            STATX_DIOALIGN_MASK,
            &mut stx,
        )
    };
    let reported = rc == 0
        && stx.stx_mask & STATX_DIOALIGN_MASK != 0
        && stx.stx_dio_offset_align != 0
        && stx.stx_dio_mem_align != 0;
    reported.then(|| stx.stx_dio_offset_align.max(stx.stx_dio_mem_align))
}

fn checked_geometry(
    path: &Path,
    size_bytes: u64,
    logical_block_bytes: u32,
    physical_block_bytes: u32,
) -> Result<Geometry> {
    if !logical_block_bytes.is_power_of_two()
        || !(LOGICAL_BLOCK_MIN_BYTES..=LOGICAL_BLOCK_MAX_BYTES).contains(&logical_block_bytes)
    {
        return Err(DeviceError::BlockSizeUnsupported {
            path: path.to_path_buf(),
            block_bytes: logical_block_bytes,
            min_bytes: LOGICAL_BLOCK_MIN_BYTES,
            max_bytes: LOGICAL_BLOCK_MAX_BYTES,
        });
    }
    if size_bytes % u64::from(logical_block_bytes) != 0 {
        return Err(DeviceError::SizeUnaligned {
            path: path.to_path_buf(),
            size_bytes,
            block_bytes: logical_block_bytes,
        });
    }
    Ok(Geometry {
        size_bytes,
        logical_block_bytes,
        // Informational; never below the logical block.
        physical_block_bytes: physical_block_bytes.max(logical_block_bytes),
    })
}

/// Creates a regular file of `size_bytes` for use as a device (the embedded default).
///
/// The file is built under a temporary name in the same directory, its blocks are
/// allocated (fallocate, or set_len where the filesystem cannot), it is fsynced, then
/// published under `path` without replacing anything that appeared meanwhile
/// (renameat2 RENAME_NOREPLACE), and the directory is fsynced, so that after a crash
/// `path` is either absent or complete. An existing `path` is refused with
/// [`DeviceError::AlreadyExists`] unless `replace_existing` (which still refuses a
/// file another opener holds locked, and anything but a regular file).
/// `size_bytes` must be a non-zero multiple of [`FILE_BLOCK_FALLBACK_BYTES`].
pub fn create_file(path: &Path, size_bytes: u64, replace_existing: bool) -> Result<()> {
    let block = FILE_BLOCK_FALLBACK_BYTES;
    if size_bytes == 0 || size_bytes % u64::from(block) != 0 {
        return Err(DeviceError::SizeUnaligned {
            path: path.to_path_buf(),
            size_bytes,
            block_bytes: block,
        });
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| DeviceError::Config {
        reason: format!("{}: not a file path", path.display()),
    })?;
    // Held until the new file is published so that no opener slips in meanwhile.
    let mut _replaced_lock: Option<File> = None;
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            if !replace_existing {
                return Err(DeviceError::AlreadyExists {
                    path: path.to_path_buf(),
                });
            }
            if m.is_dir() {
                return Err(DeviceError::IsDirectory {
                    path: path.to_path_buf(),
                });
            }
            if !m.file_type().is_file() {
                return Err(DeviceError::UnsupportedKind {
                    path: path.to_path_buf(),
                });
            }
            // Do not pull a file from under a live opener.
            let existing = std::fs::OpenOptions::new()
                .read(true)
                .open(path)
                .map_err(|e| open_error(path, e))?;
            lock_exclusive(&existing, path)?;
            _replaced_lock = Some(existing);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(open_error(path, e)),
    }

    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".creating.{}", std::process::id()));
    let tmp_path = parent.join(&tmp_name);
    let result = (|| -> Result<()> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp_path)
            .map_err(|e| open_error(&tmp_path, e))?;
        let len = libc::off_t::try_from(size_bytes).map_err(|_| DeviceError::Config {
            reason: format!("{}: size {size_bytes} bytes too large", path.display()),
        })?;
        // SAFETY: fallocate on a descriptor we own, mode 0 (allocate), no pointers.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                // The filesystem cannot preallocate: a sparse file still works.
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => file
                    .set_len(size_bytes)
                    .map_err(|e| open_error(&tmp_path, e))?,
                _ => {
                    return Err(DeviceError::Open {
                        path: path.to_path_buf(),
                        source: err,
                    })
                }
            }
        }
        file.sync_all().map_err(|e| open_error(&tmp_path, e))?;
        publish(&tmp_path, path, replace_existing)?;
        sync_dir(&parent)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp_path);
    }
    result
}

/// Moves `tmp` to `path`; without `replace` fails if `path` exists by then.
fn publish(tmp: &Path, path: &Path, replace: bool) -> Result<()> {
    if replace {
        return std::fs::rename(tmp, path).map_err(|e| open_error(path, e));
    }
    let c_tmp =
        std::ffi::CString::new(tmp.as_os_str().as_bytes()).map_err(|_| DeviceError::Config {
            reason: format!("{}: path contains a NUL byte", tmp.display()),
        })?;
    let c_path =
        std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| DeviceError::Config {
            reason: format!("{}: path contains a NUL byte", path.display()),
        })?;
    // SAFETY: both arguments are valid NUL-terminated paths that live across the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_tmp.as_ptr(),
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EEXIST) => Err(DeviceError::AlreadyExists {
            path: path.to_path_buf(),
        }),
        // The filesystem has no RENAME_NOREPLACE: link() also refuses an existing name.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            std::fs::hard_link(tmp, path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    DeviceError::AlreadyExists {
                        path: path.to_path_buf(),
                    }
                } else {
                    open_error(path, e)
                }
            })?;
            std::fs::remove_file(tmp).map_err(|e| open_error(tmp, e))
        }
        _ => Err(open_error(path, err)),
    }
}

/// fsyncs a directory so that a name created or renamed in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| open_error(dir, e))?;
    d.sync_all().map_err(|e| DeviceError::Open {
        path: dir.to_path_buf(),
        source: e,
    })
}
