//! Opening the devices a store lives on: one device or file, or several members that
//! the value store stripes itself over (each member carries an identity header naming
//! the stripe and its place in it).

// `x % n != 0` rather than `is_multiple_of`: the workspace MSRV (1.80) predates it.
#![allow(clippy::manual_is_multiple_of)]

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::open::format::UnfinishedFormat;
use crate::options::Options;
use crate::superblock;
use hashkv_blockdev::file::{open_device, OpenOptions};
use hashkv_blockdev::identity::{self, Identity, IDENTITY_RESERVED_BYTES};
use hashkv_blockdev::stripe::StripedDevice;
use hashkv_blockdev::{AlignedBuf, BlockDevice, DeviceError};
use hashkv_lsm::LsmError;
use holder::Holder;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod holder;

/// Bytes at the start of a device checked for existing data before formatting: covers
/// the signatures of the common filesystems (btrfs's lies at 64 KiB).
const EMPTY_CHECK_BYTES: usize = 128 * 1024;

/// How each of `members` devices opens. A single device registers a fixed-buffer
/// arena as large as the buffer pools it fills ([`fixed_buffer_arena_bytes`]); members
/// of a stripe register none: a stripe's buffer is written through several members'
/// rings, and one member's arena would be plain memory to the others'.
fn open_options(options: &Options, create: bool, members: usize) -> OpenOptions {
    OpenOptions {
        create_size_bytes: if create {
            options.create_device_bytes
        } else {
            None
        },
        use_fixed_buffers: members == 1,
        fixed_buffer_arena_bytes: fixed_buffer_arena_bytes(options),
        ..OpenOptions::default()
    }
}

/// The arena a single device registers: the flushes' buffer pool and the value reads'
/// (`Db`'s `buffers` and `read_buffers`), so that the buffers they keep are all fixed.
/// Its pages are pinned at open; GC's extra buffers, and anything in flight beyond
/// what the pools keep, come from the heap when the arena is full.
fn fixed_buffer_arena_bytes(options: &Options) -> usize {
    options.memory_split().buffer_pool_bytes as usize + crate::read::READ_BUFFER_POOL_BYTES
}

fn open_each(
    paths: &[PathBuf],
    options: &Options,
    create: bool,
) -> Result<Vec<Arc<dyn BlockDevice>>> {
    if paths.is_empty() {
        return Err(Error::InvalidOptions {
            reason: "no device given".into(),
        });
    }
    check_distinct(paths)?;
    let opts = open_options(options, create && paths.len() == 1, paths.len());
    paths
        .iter()
        .map(|p| retry_while_holder_gone(|| Ok(open_device(p, &opts)? as Arc<dyn BlockDevice>)))
        .collect()
}

/// Opens the devices at `paths` without checking that they form a stripe (fsck's
/// header check reads and repairs the headers itself).
pub(crate) fn open_unchecked(paths: &[PathBuf]) -> Result<Vec<Arc<dyn BlockDevice>>> {
    open_each(paths, &Options::default(), false)
}

/// Refuses a device named twice (by the same path, or by two paths to one file or
/// device node): its second open would fail as "already opened".
fn check_distinct(paths: &[PathBuf]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let identity = |p: &PathBuf| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.rdev()))
    };
    for (i, a) in paths.iter().enumerate() {
        for b in &paths[..i] {
            let same_file = identity(a).is_some() && identity(a) == identity(b);
            if a == b || same_file {
                return Err(Error::InvalidOptions {
                    reason: format!(
                        "device {} is given twice{}; name each member of a stripe once",
                        a.display(),
                        if a == b {
                            String::new()
                        } else {
                            format!(" (as {} too)", b.display())
                        }
                    ),
                });
            }
        }
    }
    Ok(())
}

/// How long an open keeps retrying a lock whose owner has exited. A process killed
/// with SIGKILL releases its device file only when the kernel has torn down its
/// io_uring, asynchronously, a few milliseconds after its death; two seconds cover
/// that on a loaded machine, and a user waits that long without noticing.
const LOCK_RELEASE_WAIT_MS: u64 = 2000;
/// Pause between those retries.
const LOCK_RETRY_INTERVAL_MS: u64 = 10;

/// The path whose lock refused an open, and whether it is a block device (opened
/// with O_EXCL) rather than a file locked with `flock`.
fn locked_path(e: &Error) -> Option<(PathBuf, bool)> {
    match e {
        Error::Device(DeviceError::InUse { path }) => Some((path.clone(), is_block_device(path))),
        Error::Lsm(LsmError::Locked { dir }) => Some((dir.join(LSM_LOCK_FILE), false)),
        _ => None,
    }
}

fn is_block_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// The index directory's lock file (hashkv-lsm's `LOCK`). The index takes it through
/// its file system (`Options::lsm.fs`); the holder is looked up here under the file's
/// real name in /proc/locks, bypassing that file system on purpose: the lookup only
/// decides whether to wait and changes nothing, so it has no part in the index's
/// durability. (On a test's in-memory file system the name is not a real file: the
/// holder is unknown, and the open retries and then fails, as for any unknown holder.)
const LSM_LOCK_FILE: &str = "LOCK";

/// Runs `open`, retrying while it fails on a lock whose owner has exited (see
/// `LOCK_RELEASE_WAIT_MS`). A lock held by a live process fails at once, naming the
/// process; one held by this process fails at once as it is.
pub(crate) fn retry_while_holder_gone<T>(mut open: impl FnMut() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        let e = match open() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let Some((path, block_device)) = locked_path(&e) else {
            return Err(e);
        };
        let holder = if block_device {
            holder::block_device_holder(&path)
        } else {
            holder::flock_holder(&path)
        };
        match holder {
            Holder::Process { pid, name } => return Err(held_by(e, pid, &name)),
            Holder::ThisProcess => return Err(e),
            Holder::Gone | Holder::Unknown => {
                if start.elapsed() >= Duration::from_millis(LOCK_RELEASE_WAIT_MS) {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(LOCK_RETRY_INTERVAL_MS));
            }
        }
    }
}

/// The lock error `e`, naming the live process that holds the lock.
fn held_by(e: Error, pid: u32, name: &str) -> Error {
    let source = std::io::Error::new(
        std::io::ErrorKind::WouldBlock,
        format!("locked by process {pid} ({name}), which is running; stop it or wait for it to close the store"),
    );
    match e {
        Error::Device(DeviceError::InUse { path }) => {
            Error::Device(DeviceError::Open { path, source })
        }
        Error::Lsm(LsmError::Locked { dir }) => Error::MetadataDir { path: dir, source },
        other => other,
    }
}

/// The devices of a store being formatted: the device the store lives on, the
/// identity header each stripe member is to get (none for a single device), and the
/// stripe uuid the superblock must carry.
pub(crate) struct NewMembers {
    pub device: Arc<dyn BlockDevice>,
    pub headers: Vec<(Arc<dyn BlockDevice>, Identity)>,
    pub stripe_uuid: [u8; 16],
}

/// Opens the devices for formatting (creating a single missing file if asked) and
/// chooses the identities of a new stripe; nothing is written yet. Members that carry
/// an identity header are refused without force, unless an unfinished format
/// (`unfinished`, from its marker) wrote it.
pub(crate) fn format_members(
    paths: &[PathBuf],
    options: &Options,
    unfinished: Option<&UnfinishedFormat>,
) -> Result<NewMembers> {
    let members = open_each(paths, options, true)?;
    if members.len() == 1 {
        return Ok(NewMembers {
            device: members.into_iter().next().unwrap(),
            headers: Vec::new(),
            stripe_uuid: rand::random(),
        });
    }
    if !options.force_format {
        for (i, m) in members.iter().enumerate() {
            let header = identity::read_identity(m.as_ref());
            let ours = match (&header, unfinished) {
                (Ok(None), _) => true,
                (Ok(Some(id)), Some(u)) => u.stripe_uuid == Some(id.stripe_uuid),
                // A header torn while the unfinished format wrote it.
                (Err(_), Some(_)) => true,
                _ => false,
            };
            if !ours {
                return Err(Error::DeviceNotEmpty {
                    what: format!("{} carries a stripe identity header", paths[i].display()),
                });
            }
        }
    }
    let ids = Identity::new_stripe(members.len() as u32, options.main_segment_bytes);
    let striped = StripedDevice::new(members.clone(), options.main_segment_bytes)?;
    Ok(NewMembers {
        device: Arc::new(striped),
        stripe_uuid: ids[0].stripe_uuid,
        headers: members.into_iter().zip(ids).collect(),
    })
}

/// Zeroes a member's identity header: a format that failed takes back the header it
/// wrote, so the member reads as fresh again.
pub(crate) fn clear_identity(member: &dyn BlockDevice) -> Result<()> {
    let zeros = AlignedBuf::new(IDENTITY_RESERVED_BYTES as usize);
    member.write_at(0, &zeros[..])?;
    member.flush()?;
    Ok(())
}

/// The device of an existing store, and the stripe uuid its members' headers name
/// (`None` for a single device).
pub(crate) type OpenedMembers = (Arc<dyn BlockDevice>, Option<[u8; 16]>);

/// Opens the devices of an existing store, checking that several members form one
/// stripe in the order given, with `expected_unit_bytes` as stripe unit if given (else
/// the unit the identity headers name). Returns the stripe uuid of the headers.
pub(crate) fn open_members(
    paths: &[PathBuf],
    options: &Options,
    expected_unit_bytes: Option<u64>,
) -> Result<OpenedMembers> {
    let members = open_each(paths, options, false)?;
    if members.len() == 1 {
        return Ok((members.into_iter().next().unwrap(), None));
    }
    let ids = members
        .iter()
        .zip(paths)
        .map(|(m, p)| member_identity(m.as_ref(), p).map(Some))
        .collect::<Result<Vec<_>>>()?;
    identity::check_stripe(&ids, expected_unit_bytes).map_err(|e| name_members(e, paths))?;
    let first = ids[0].expect("checked above");
    let striped = StripedDevice::new(members, first.stripe_unit_bytes)?;
    Ok((Arc::new(striped), Some(first.stripe_uuid)))
}

/// A member's identity header, or an error that names the path and says what it holds
/// instead (nothing, or a single-device store).
fn member_identity(member: &dyn BlockDevice, path: &Path) -> Result<Identity> {
    let not_a_member = |what: &str| {
        member_error(format!(
            "{} is not a member of a hashkv stripe ({what}); name only the devices of one \
             stripe, in member order",
            path.display()
        ))
    };
    match identity::read_identity(member) {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(not_a_member("its identity block is empty")),
        Err(_) if starts_with_superblock(member)? => Err(member_error(format!(
            "{} holds a single-device hashkv store, not a stripe member; open it as the only \
             device",
            path.display()
        ))),
        Err(DeviceError::Identity { reason }) => Err(not_a_member(&reason)),
        Err(e) => Err(e.into()),
    }
}

/// A device that is not the stripe member it is given as: a typed device error
/// (the message says which device is what), not "not a hashkv device".
fn member_error(reason: String) -> Error {
    Error::Device(DeviceError::Identity { reason })
}

fn starts_with_superblock(device: &dyn BlockDevice) -> Result<bool> {
    let block = IDENTITY_RESERVED_BYTES as usize;
    let mut buf = AlignedBuf::new(block);
    device.read_at(0, &mut buf[..block])?;
    Ok(buf[..8] == superblock::SUPERBLOCK_MAGIC[..])
}

/// Blockdev's stripe check names members by position; add the paths given.
fn name_members(e: DeviceError, paths: &[PathBuf]) -> Error {
    match e {
        DeviceError::Identity { reason } => {
            let given: Vec<String> = paths
                .iter()
                .enumerate()
                .map(|(i, p)| format!("device {i} = {}", p.display()))
                .collect();
            Error::Device(DeviceError::Identity {
                reason: format!("{reason} ({})", given.join(", ")),
            })
        }
        other => other.into(),
    }
}

/// A device opened alone without a superblock may be one member of a stripe: say
/// which, and that every member must be given.
pub(crate) fn explain_missing_superblock(
    e: Error,
    device: &dyn BlockDevice,
    paths: &[PathBuf],
) -> Error {
    if paths.len() != 1 || !matches!(e, Error::NotOurs { .. }) {
        return e;
    }
    match identity::read_identity(device) {
        Ok(Some(id)) => member_error(format!(
            "{} is member {} of a stripe of {} devices (stripe uuid {}); open the store with \
             all {} members, in member order",
            paths[0].display(),
            id.member_index,
            id.member_count,
            id.uuid_string(),
            id.member_count
        )),
        _ => e,
    }
}

/// Refuses to format over data: the first bytes (where filesystems and our superblock
/// live), the twin superblock copy and the place where older formats kept the twin
/// must be zero. After an unfinished format (`unfinished`), a superblock copy torn by
/// the interruption may be there too (our magic and fields, zeros after them), but no
/// valid copy: a valid copy is a finished store.
pub(crate) fn check_empty(
    device: &dyn BlockDevice,
    layout: &Layout,
    unfinished: bool,
) -> Result<()> {
    if unfinished {
        let copies = superblock::read_copies(device)?;
        if copies.first.valid().is_some() || copies.twin.valid().is_some() {
            return Err(Error::DeviceNotEmpty {
                what: "a hashkv superblock".into(),
            });
        }
    }
    let size = device.geometry().size_bytes;
    let block = u64::from(layout.block_bytes);
    let first_bytes = EMPTY_CHECK_BYTES.min(layout.main_segment_bytes as usize) as u64;
    let mut probes = vec![(0, first_bytes)];
    for at in [
        Layout::superblock_offsets()[1],
        Layout::legacy_twin_offset(layout.main_segment_bytes),
    ] {
        if at >= first_bytes && at % block == 0 && !probes.contains(&(at, block)) {
            probes.push((at, block));
        }
    }
    for (offset, len) in probes {
        if offset + len > size {
            continue;
        }
        let len = len as usize;
        let mut buf = AlignedBuf::new(len);
        device.read_at(offset, &mut buf[..len])?;
        if buf[..8] == superblock::SUPERBLOCK_MAGIC[..] && !unfinished {
            return Err(Error::DeviceNotEmpty {
                what: "a hashkv superblock".into(),
            });
        }
        if unfinished {
            for copy_at in Layout::superblock_offsets() {
                let i = copy_at.wrapping_sub(offset) as usize;
                if i < len && buf[i..i + 8] == superblock::SUPERBLOCK_MAGIC[..] {
                    buf[i..i + superblock::SUPERBLOCK_ENCODED_BYTES].fill(0);
                }
            }
        }
        if let Some(pos) = buf[..len].iter().position(|&b| b != 0) {
            return Err(Error::DeviceNotEmpty {
                what: format!("non-zero bytes at offset {}", offset + pos as u64),
            });
        }
    }
    Ok(())
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
