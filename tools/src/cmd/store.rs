//! What the store subcommands (bench, compare, format, stat, get/put/delete/scan) share:
//! their error type, facts about device paths (block device or file, kernel I/O
//! counters, where O_DIRECT works) and metadata directories (their size on disk), and
//! this process's storage I/O counters.

use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreCmdError {
    #[error(transparent)]
    Engine(#[from] hashkv::Error),

    /// Arguments that parse but make no sense together or for these devices.
    #[error("{0}")]
    Usage(String),

    /// Arguments missing or malformed in a way the parser could not see (exit status
    /// 2, as the parser's own errors).
    #[error("{0}")]
    Arguments(String),

    /// A sync write (`put`, `delete`) failed: it is not durable, and the store refuses
    /// writes until it is opened again; what earlier commands wrote is durable (each
    /// of them synced before it returned).
    #[error("the {what} is not durable: {source}; writes of earlier commands are (each was synced before it returned)")]
    NotDurable {
        what: &'static str,
        #[source]
        source: hashkv::Error,
    },

    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// `hashkv fsck` found damage: how much, and the first description.
    #[error("{count} damaged record(s) or index entries; the first: {first}")]
    Damaged { count: u64, first: String },

    /// The key is shown escaped (`kv::escape`): every byte of it, unambiguously.
    #[error("key {key} not found")]
    KeyNotFound { key: String },

    /// The run was interrupted (Ctrl-C) after printing what it had measured.
    #[error("interrupted")]
    Interrupted,

    /// A benchmark read missed a key the benchmark had loaded and never deleted.
    #[error("{store}: benchmark read: loaded key {key} not found")]
    LostWrite { store: String, key: String },

    /// An error of a peer store (RocksDB) in `hashkv compare`.
    #[error("{peer}: {what}")]
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    Peer { peer: String, what: String },

    /// Running fio (compare's device baseline).
    #[error(transparent)]
    Fio(#[from] crate::error::CliError),
}

pub type StoreResult<T> = Result<T, StoreCmdError>;

pub fn io_error(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> StoreCmdError {
    let path = path.to_path_buf();
    move |source| StoreCmdError::Io {
        path,
        action,
        source,
    }
}

/// True if `path` names a block device (or partition).
pub fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// The kernel's cumulative I/O counters of a block device, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelIoBytes {
    pub read_bytes: u64,
    pub write_bytes: u64,
}

/// Where the kernel counts a block device's I/O: /sys/class/block/<name>/stat, with
/// the name of the device node the path resolves to (so /dev/mapper links and
/// partitions work).
pub fn sysfs_stat_path(device: &Path) -> Option<PathBuf> {
    if !is_block_device(device) {
        return None;
    }
    let node = std::fs::canonicalize(device).ok()?;
    let name = node.file_name()?;
    let stat = Path::new("/sys/class/block").join(name).join("stat");
    stat.exists().then_some(stat)
}

/// Reads a sysfs block `stat` file: fields 3 and 7 are sectors read and written, in
/// 512-byte units whatever the device's sector size (Documentation/block/stat.rst).
pub fn read_kernel_io(stat_path: &Path) -> Option<KernelIoBytes> {
    let text = std::fs::read_to_string(stat_path).ok()?;
    let fields: Vec<u64> = text
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    const SECTOR_BYTES: u64 = 512;
    Some(KernelIoBytes {
        read_bytes: *fields.get(2)? * SECTOR_BYTES,
        write_bytes: *fields.get(6)? * SECTOR_BYTES,
    })
}

/// This process's storage I/O so far, from /proc/self/io: all threads, including the
/// io_uring workers and RocksDB's background threads. Bytes are counted when the
/// process causes them (a page dirtied, a direct request submitted, a read missing the
/// page cache), so buffered writes land in the phase that made them even if writeback
/// happens later.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessIoBytes {
    /// `read_bytes`: bytes fetched from storage.
    pub read_bytes: u64,
    /// `write_bytes` - `cancelled_write_bytes`: bytes sent or bound for storage, less
    /// dirty pages dropped unwritten because their file was truncated or deleted.
    pub write_bytes: u64,
}

impl ProcessIoBytes {
    /// Counts from `earlier` to `self` (saturating: the cancelled bytes of a file
    /// dirtied in an earlier interval can exceed this interval's writes).
    pub fn since(self, earlier: ProcessIoBytes) -> ProcessIoBytes {
        ProcessIoBytes {
            read_bytes: self.read_bytes.saturating_sub(earlier.read_bytes),
            write_bytes: self.write_bytes.saturating_sub(earlier.write_bytes),
        }
    }
}

/// Where `read_process_io` reads; `None` where the kernel lacks task I/O accounting.
pub const PROC_SELF_IO: &str = "/proc/self/io";

pub fn read_process_io() -> Option<ProcessIoBytes> {
    parse_process_io(&std::fs::read_to_string(PROC_SELF_IO).ok()?)
}

/// Parses the text of /proc/<pid>/io ("name: value" lines).
pub fn parse_process_io(text: &str) -> Option<ProcessIoBytes> {
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
            .trim()
            .parse()
            .ok()
    };
    Some(ProcessIoBytes {
        read_bytes: field("read_bytes")?,
        write_bytes: field("write_bytes")?.saturating_sub(field("cancelled_write_bytes")?),
    })
}

/// Bytes the files under `dir` occupy on disk (allocated blocks, so sparse or
/// preallocated files count as what they take).
pub fn dir_disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total_bytes = 0;
    for entry in entries.flatten() {
        let Ok(m) = entry.metadata() else { continue };
        if m.is_dir() {
            total_bytes += dir_disk_bytes(&entry.path());
        } else {
            // st_blocks counts 512-byte units.
            total_bytes += m.blocks() * 512;
        }
    }
    total_bytes
}

/// True if files in `dir` can be opened with O_DIRECT (not on tmpfs, for instance).
/// Tested by creating and opening a scratch file there, which is removed again.
pub fn supports_o_direct(dir: &Path) -> bool {
    let Ok(probe) = tempfile::Builder::new()
        .prefix(".hashkv-odirect-probe")
        .tempfile_in(dir)
    else {
        return false;
    };
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(probe.path())
        .is_ok()
}

/// Formats a byte count with a binary unit, for humans.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_picks_the_largest_unit_below_the_value() {
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(3 << 30), "3.00 GiB");
    }

    #[test]
    fn a_regular_file_has_no_kernel_counters() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(sysfs_stat_path(f.path()).is_none());
    }

    #[test]
    fn kernel_stat_fields_are_sectors_of_512_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let stat = dir.path().join("stat");
        std::fs::write(&stat, "  100 0 8 5 200 0 16 7 0 0 0 0 0 0 0 0 0\n").unwrap();
        assert_eq!(
            read_kernel_io(&stat),
            Some(KernelIoBytes {
                read_bytes: 8 * 512,
                write_bytes: 16 * 512
            })
        );
    }

    #[test]
    fn process_io_counts_written_less_cancelled_and_read_bytes() {
        let text = "rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\n\
                    write_bytes: 12288\ncancelled_write_bytes: 4096\n";
        assert_eq!(
            parse_process_io(text),
            Some(ProcessIoBytes {
                read_bytes: 4096,
                write_bytes: 8192
            })
        );
        assert_eq!(parse_process_io("rchar: 10\n"), None);
        let later = ProcessIoBytes {
            read_bytes: 5000,
            write_bytes: 8000,
        };
        assert_eq!(
            later.since(parse_process_io(text).unwrap()),
            ProcessIoBytes {
                read_bytes: 904,
                write_bytes: 0
            }
        );
    }

    #[test]
    fn this_process_writes_show_in_its_io_counters() {
        let Some(before) = read_process_io() else {
            eprintln!("skipped: {PROC_SELF_IO} is not readable here");
            return;
        };
        // The package's folder: on a disk, where tmpfs (no block I/O to count) is not.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        std::fs::File::open(&path).unwrap().sync_all().unwrap();
        let after = read_process_io().unwrap();
        assert!(
            after.since(before).write_bytes >= 1 << 20,
            "{before:?} -> {after:?}"
        );
    }

    #[test]
    fn dir_disk_bytes_counts_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), vec![1u8; 10_000]).unwrap();
        assert!(dir_disk_bytes(dir.path()) >= 10_000);
    }
}
