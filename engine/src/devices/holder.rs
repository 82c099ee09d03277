//! Who holds a lock that refused an open: a device file's `flock` or the index
//! directory's lock (both listed in /proc/locks with the pid that took them), or a
//! block device opened with O_EXCL (found among the open descriptors in /proc/*/fd).
//!
//! A process killed with SIGKILL can keep its lock for a few milliseconds after its
//! death: its io_uring instance is torn down asynchronously and holds the device file
//! until then. An open that finds the lock's owner gone therefore waits and retries
//! (`devices::retry_while_holder_gone`); one that finds a live owner names it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Holder {
    /// A live process other than this one.
    Process { pid: u32, name: String },
    /// This process (another handle of its own).
    ThisProcess,
    /// The process that took it has exited; the lock goes with its last descriptor.
    Gone,
    /// Not found out (no /proc, another pid namespace, a kernel holder such as a
    /// mount or a device-mapper target).
    Unknown,
}

/// The holder of the `flock` on the file at `path`, from /proc/locks.
pub(crate) fn flock_holder(path: &Path) -> Holder {
    let Ok(meta) = std::fs::metadata(path) else {
        return Holder::Unknown;
    };
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return Holder::Unknown;
    };
    let (major, minor) = major_minor(meta.dev());
    let wanted = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    match parse_lock_owner(&locks, &wanted) {
        Some(pid) => process_holder(pid),
        None => Holder::Unknown,
    }
}

/// A device number's major and minor, as Linux encodes them in `st_dev` (the
/// kernel's `new_encode_dev`: minor bits 0-7 and 20-43, major bits 8-19 and 44-63).
fn major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
    let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
    (major, minor)
}

/// The pid owning the granted lock on `device_inode` (`MAJ:MIN:INODE`, as
/// /proc/locks prints it: major and minor in hex). Blocked waiters ("->") are skipped;
/// pid 0 (or -1) means the owner is not visible, which the caller treats as gone.
fn parse_lock_owner(locks: &str, device_inode: &str) -> Option<i64> {
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE START END"
        if fields.get(1) == Some(&"->") || fields.get(5) != Some(&device_inode) {
            return None;
        }
        fields.get(4)?.parse().ok()
    })
}

/// What the process `pid` (from a lock table) is now.
fn process_holder(pid: i64) -> Holder {
    let Ok(pid) = u32::try_from(pid) else {
        return Holder::Gone;
    };
    if pid == 0 {
        return Holder::Gone;
    }
    if pid == std::process::id() {
        return Holder::ThisProcess;
    }
    // Field 3 of /proc/PID/stat is the state; Z and X are a dead process not yet
    // reaped. The name (field 2) is in parentheses and may hold spaces.
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Holder::Gone;
    };
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    if matches!(state, Some("Z" | "X") | None) {
        return Holder::Gone;
    }
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|n| n.trim_end().to_string())
        .unwrap_or_default();
    Holder::Process { pid, name }
}

/// The holder of a block device opened exclusively: a live process with a descriptor
/// on it (this one included), or `Unknown` when none has (the kernel holds it, or the
/// holder just died and its descriptors are being released).
pub(crate) fn block_device_holder(path: &Path) -> Holder {
    let Ok(target) = std::fs::canonicalize(path) else {
        return Holder::Unknown;
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Holder::Unknown;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|link| link == target));
        if holds {
            match process_holder(pid) {
                Holder::Gone => continue,
                holder => return holder,
            }
        }
    }
    Holder::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_owner_is_the_granted_lock_on_the_inode() {
        let locks = "1: FLOCK  ADVISORY  WRITE 17719 fe:00:464 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 222 fe:00:999 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 333 fe:00:999 0 EOF\n\
                     3: POSIX  ADVISORY  WRITE 0 08:01:5 0 EOF\n";
        assert_eq!(parse_lock_owner(locks, "fe:00:464"), Some(17719));
        assert_eq!(parse_lock_owner(locks, "fe:00:999"), Some(333));
        assert_eq!(parse_lock_owner(locks, "08:01:5"), Some(0));
        assert_eq!(parse_lock_owner(locks, "fe:00:46"), None);
    }

    #[test]
    fn device_numbers_decode_as_the_kernel_encodes_them() {
        assert_eq!(major_minor(0xfe00), (0xfe, 0));
        assert_eq!(major_minor(0x0801), (8, 1));
        // Large numbers, encoded as glibc's makedev does.
        let (major, minor) = (0x1_2345u64, 0x6_789au64);
        let dev = ((major & !0xfff) << 32)
            | ((major & 0xfff) << 8)
            | ((minor & !0xff) << 12)
            | (minor & 0xff);
        assert_eq!(major_minor(dev), (major, minor));
    }

    #[test]
    fn process_states() {
        assert_eq!(process_holder(0), Holder::Gone);
        assert_eq!(process_holder(-1), Holder::Gone);
        assert_eq!(
            process_holder(i64::from(std::process::id())),
            Holder::ThisProcess
        );
        // Pid 1 is alive wherever /proc is mounted.
        if std::path::Path::new("/proc/1/stat").exists() {
            assert!(matches!(process_holder(1), Holder::Process { pid: 1, .. }));
        }
    }

    #[test]
    fn this_process_holding_a_flock_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::File::create(&path).unwrap();
        // SAFETY: flock on a descriptor this test owns.
        assert_eq!(
            unsafe {
                libc::flock(
                    std::os::fd::AsRawFd::as_raw_fd(&file),
                    libc::LOCK_EX | libc::LOCK_NB,
                )
            },
            0
        );
        if std::fs::read_to_string("/proc/locks").is_ok() {
            assert_eq!(flock_holder(&path), Holder::ThisProcess);
        }
        drop(file);
        assert_eq!(flock_holder(&path), Holder::Unknown);
    }
}
