//! Formatting, crash-safe at every step. The superblock is the commit point: a device
//! with a valid superblock copy holds a finished store. Everything format writes before
//! it is marked as format's: the index's first batch carries a marker entry (with the
//! stripe uuid) that format deletes after the commit, and before that batch the index
//! is still empty or not yet created. A format interrupted before its commit (a kill,
//! a power cut) therefore leaves a metadata directory that holds no finished store's
//! index, and the next format recognises it (`unfinished`) and redoes the format
//! without force, provided the devices hold no valid superblock and stripe members
//! carry no identity header but the one the marker names. FORMAT.md, "Format", lists
//! the steps and argues each crash point.

use crate::devices::NewMembers;
use crate::error::{Error, Result};
use crate::keys;
use crate::layout::Layout;
use crate::options::Options;
use crate::store;
use crate::superblock::{self, FormatStep, Superblock, FORMAT_VERSION};
use hashkv_blockdev::identity;
use hashkv_blockdev::BlockDevice;
use hashkv_lsm::fs::{EntryKind, Fs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Smallest alignment the value store uses, whatever smaller logical block a device
/// reports: 4 KiB writes avoid read-modify-write inside SSDs.
const BLOCK_BYTES_MIN: u32 = 4096;

/// The marker entry in the index of an unfinished format: `META "f"` -> the stripe
/// uuid being formatted. Written in the index's first batch, deleted after the
/// superblock; a finished store's index never keeps it past its first open.
pub(crate) fn marker_key() -> [u8; 2] {
    [keys::META, b'f']
}

/// What an unfinished format left in the metadata directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnfinishedFormat {
    /// The stripe uuid it was formatting, if its index got the marker.
    pub stripe_uuid: Option<[u8; 16]>,
}

/// Whether the metadata directory `dir` holds what an interrupted format left: an
/// index cut short while it was created (the index's own files, no CURRENT), an empty
/// index, or an index with the marker entry. `None` for a missing or empty directory
/// (nothing to redo) and for anything else (a finished store's index, other files).
/// An I/O error is returned: what cannot be read is not guessed at.
pub(crate) fn unfinished(dir: &Path, options: &Options) -> Result<Option<UnfinishedFormat>> {
    if list_metadata_dir(dir, options)?.is_none_or(|names| names.is_empty()) {
        return Ok(None);
    }
    let lsm = match open_lsm(dir, options, false) {
        Ok(lsm) => lsm,
        Err(Error::Lsm(hashkv_lsm::LsmError::NotFound { .. })) => {
            return Ok(Some(UnfinishedFormat { stripe_uuid: None }))
        }
        Err(e) if is_io_error(&e) => return Err(e),
        // Not an index format left (another's, locked, damaged): format refuses the
        // directory unless forced.
        Err(_) => return Ok(None),
    };
    let found = (|| -> Result<Option<UnfinishedFormat>> {
        if let Some(uuid) = lsm.get(&marker_key())? {
            return Ok(Some(UnfinishedFormat {
                stripe_uuid: uuid.as_slice().try_into().ok(),
            }));
        }
        let empty = lsm
            .range(
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
                hashkv_lsm::Direction::Forward,
                None,
            )?
            .next()
            .is_none();
        Ok(empty.then_some(UnfinishedFormat { stripe_uuid: None }))
    })();
    let _ = lsm.close();
    match found {
        Err(e) if is_io_error(&e) => Err(e),
        Err(_) => Ok(None),
        Ok(found) => Ok(found),
    }
}

/// The index or the metadata directory could not be read or written.
fn is_io_error(e: &Error) -> bool {
    use hashkv_lsm::LsmError;
    matches!(
        e,
        Error::Lsm(LsmError::Io { .. } | LsmError::Poisoned { .. }) | Error::MetadataDir { .. }
    )
}

/// The names in the metadata directory, or `None` if it does not exist. Any other
/// error is returned: format must not take a directory it failed to list for a
/// missing or an empty one (and remove it, or write into it).
fn list_metadata_dir(dir: &Path, options: &Options) -> Result<Option<Vec<String>>> {
    match index_fs(options).list(dir) {
        Ok(names) => Ok(Some(names)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(dir_error(dir)(e)),
    }
}

/// Deletes the marker entry of a format that finished (at the end of format, or at the
/// first open of a store whose format was interrupted after its commit).
pub(crate) fn remove_marker(lsm: &hashkv_lsm::Db) -> Result<()> {
    if lsm.get(&marker_key())?.is_some() {
        let mut batch = hashkv_lsm::WriteBatch::new();
        batch.delete(&marker_key());
        lsm.write(&batch, &hashkv_lsm::WriteOptions { sync: true })?;
    }
    Ok(())
}

/// The file system the metadata directory lives on: the index's own (`Options::lsm.fs`).
/// Everything format does in the directory goes through it, as the index's own I/O
/// does, so that one seam sees (and a test's fault-injecting file system can fail or
/// crash) every change made there. Only the device file that format may create is
/// handled with `std::fs`: it is a device, not part of the index.
fn index_fs(options: &Options) -> &dyn Fs {
    &*options.lsm.fs
}

fn dir_error(dir: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::MetadataDir {
        path: dir.to_path_buf(),
        source,
    }
}

/// Empties (or creates) the metadata directory. A directory that holds data is
/// refused unless `force`, or unless it is an unfinished format's.
fn prepare_metadata_dir(fs: &dyn Fs, dir: &Path, force: bool, unfinished: bool) -> Result<()> {
    if fs.entry_kind(dir).map_err(dir_error(dir))? != EntryKind::Missing {
        let non_empty = !fs.list(dir).map_err(dir_error(dir))?.is_empty();
        if non_empty {
            if !force && !unfinished {
                return Err(Error::DeviceNotEmpty {
                    what: format!("metadata directory {} is not empty", dir.display()),
                });
            }
            // Through the index's own lock: an open store's directory is refused.
            hashkv_lsm::destroy_on(fs, dir)?;
        }
    }
    create_dir_durably(fs, dir)
}

/// Creates `dir` (and missing parents) and syncs the parent of each directory it
/// created, so that the directory's own entry survives a power cut: the index syncs
/// its files and its directory, never the directory's parent, and the superblock that
/// commits the format must not outlive the index it names.
fn create_dir_durably(fs: &dyn Fs, dir: &Path) -> Result<()> {
    let missing = |p: &Path| {
        fs.entry_kind(p)
            .map(|k| k == EntryKind::Missing)
            .map_err(dir_error(p))
    };
    // The directories to create, deepest first; their parents get the new entries.
    let mut created = Vec::new();
    let mut at = Some(dir);
    // The root, and the working directory ("" above a relative path), exist.
    while let Some(p) = at.filter(|p| !p.as_os_str().is_empty() && p.parent().is_some()) {
        if !missing(p)? {
            break;
        }
        created.push(p);
        at = p.parent();
    }
    fs.create_dir_all(dir).map_err(dir_error(dir))?;
    if created.is_empty() {
        // A directory made just before format (mkdir, then format) may not be durable
        // either.
        created.push(dir);
    }
    for p in created {
        // A relative path's last parent is "", the working directory.
        let parent = match p.parent() {
            Some(q) if !q.as_os_str().is_empty() => q,
            _ => Path::new("."),
        };
        fs.sync_dir(parent).map_err(dir_error(parent))?;
    }
    Ok(())
}

pub(crate) fn open_lsm(dir: &Path, options: &Options, create: bool) -> Result<hashkv_lsm::Db> {
    let mut lsm_options = options.lsm.clone();
    // The index's share of the memory budget (or its own options without one).
    let split = options.memory_split();
    lsm_options.block_cache_bytes = split.block_cache_bytes as usize;
    lsm_options.memtable_bytes_max = split.memtable_bytes as usize;
    lsm_options.create_if_missing = create;
    lsm_options.error_if_exists = false;
    Ok(hashkv_lsm::Db::open(dir, lsm_options)?)
}

/// What a format has changed so far, so that a failed one can take it back.
#[derive(Default)]
pub(crate) struct Progress {
    /// Stripe members whose identity header was written.
    pub headers_written: Vec<Arc<dyn BlockDevice>>,
    /// The superblock's write began: the format may have committed, even if the
    /// write failed (a failed write can still reach the media).
    pub commit_attempted: bool,
}

/// Writes a new store on `new`'s devices and `dir`, step by step (see the module
/// docs), and returns the device. Stops after `stop_after`, as a kill there would.
/// Errors come only from before the commit; nothing after it can fail the format.
pub(crate) fn write_store(
    new: NewMembers,
    dir: &Path,
    options: &Options,
    unfinished: Option<UnfinishedFormat>,
    stop_after: Option<FormatStep>,
    progress: &mut Progress,
) -> Result<Option<Arc<dyn BlockDevice>>> {
    let geometry = new.device.geometry();
    let block_bytes = geometry.logical_block_bytes.max(BLOCK_BYTES_MIN);
    let layout = Layout::compute(geometry.size_bytes, block_bytes, options)?;
    if !options.force_format {
        crate::devices::check_empty(new.device.as_ref(), &layout, unfinished.is_some())?;
    }
    prepare_metadata_dir(
        index_fs(options),
        dir,
        options.force_format,
        unfinished.is_some(),
    )?;
    let superblock = Superblock {
        format_version: FORMAT_VERSION,
        mode: options.mode,
        stripe_uuid: new.stripe_uuid,
        member_count: new.device.counters().len() as u32,
        device_bytes: geometry.size_bytes,
        layout,
    };
    let stop = |step: FormatStep| stop_after == Some(step);
    let lsm = open_lsm(dir, options, true)?;
    if stop(FormatStep::IndexCreated) {
        let _ = lsm.close();
        return Ok(None);
    }
    write_first_batch(&lsm, options, &superblock)?;
    if stop(FormatStep::IndexWritten) {
        let _ = lsm.close();
        return Ok(None);
    }
    for (member, id) in &new.headers {
        progress.headers_written.push(member.clone());
        identity::write_identity(member.as_ref(), id)?;
    }
    if stop(FormatStep::HeadersWritten) {
        let _ = lsm.close();
        return Ok(None);
    }
    progress.commit_attempted = true;
    superblock::write_copies(
        new.device.as_ref(),
        &superblock,
        &Layout::superblock_offsets(),
    )?;
    if stop(FormatStep::SuperblockWritten) {
        let _ = lsm.close();
        return Ok(None);
    }
    // Committed: the index was synced before the superblock, so nothing below can
    // fail the format. A marker left behind (the deletion failing) is deleted by the
    // next open, and lets no format without force overwrite the store: its devices
    // hold a valid superblock, so they are refused. An index that fails here fails
    // the open that follows, on a whole store.
    let _ = remove_marker(&lsm);
    let _ = lsm.close();
    if stop(FormatStep::MarkerRemoved) {
        return Ok(None);
    }
    Ok(Some(new.device))
}

/// The index's first entries, synced: the marker, the stripe uuid that ties the index
/// to the devices, the sequence number, and the value store's own entries.
fn write_first_batch(
    lsm: &hashkv_lsm::Db,
    options: &Options,
    superblock: &Superblock,
) -> Result<()> {
    let mut batch = hashkv_lsm::WriteBatch::new();
    batch.put(&marker_key(), &superblock.stripe_uuid);
    batch.put(&keys::uuid_key(), &superblock.stripe_uuid);
    batch.put(&keys::seq_key(), &0u64.to_le_bytes());
    let fresh = store::open(options, &superblock.layout, store::Source::Fresh)?;
    for (k, v) in fresh.format_entries() {
        batch.put(&k, &v);
    }
    lsm.write(&batch, &hashkv_lsm::WriteOptions { sync: true })?;
    Ok(())
}

/// What existed before a format, so that a failed one removes what it created: a
/// device file it created, the metadata directory it created or the content it
/// wrote into an empty one, and the identity headers it wrote.
pub(crate) struct Undo {
    created_device: Option<PathBuf>,
    dir: PathBuf,
    dir_existed: bool,
    dir_was_empty: bool,
}

impl Undo {
    /// Fails if the metadata directory cannot be listed: not knowing what was there,
    /// a failed format could remove what was not its own.
    pub fn note(devices: &[PathBuf], dir: &Path, options: &Options) -> Result<Undo> {
        let created_device = match devices {
            [one] if options.create_device_bytes.is_some() && !one.exists() => Some(one.clone()),
            _ => None,
        };
        let names = list_metadata_dir(dir, options)?;
        Ok(Undo {
            created_device,
            dir: dir.to_path_buf(),
            dir_existed: names.is_some(),
            dir_was_empty: names.is_none_or(|n| n.is_empty()),
        })
    }

    /// Takes back what the failed format created. Errors that mean another process
    /// holds the device or the directory leave everything alone: it is theirs.
    ///
    /// A format that failed in or after its superblock write keeps everything: the
    /// write may have reached the media although it failed, and then the store is
    /// committed and its index must stay. If it did not, the index with its marker is
    /// an unfinished format's, which the next format redoes without force.
    ///
    /// Nothing here is synced: if a crash brings back what was removed, it is an
    /// unfinished format's too.
    pub fn run(&self, error: &Error, progress: &Progress, options: &Options) {
        use hashkv_blockdev::DeviceError;
        if progress.commit_attempted
            || matches!(
                error,
                Error::Device(DeviceError::InUse { .. })
                    | Error::Lsm(hashkv_lsm::LsmError::Locked { .. })
            )
        {
            return;
        }
        if let Some(path) = &self.created_device {
            let _ = std::fs::remove_file(path);
        }
        let fs = index_fs(options);
        if !self.dir_existed {
            let _ = fs.remove_dir_all(&self.dir);
        } else if self.dir_was_empty {
            for name in fs.list(&self.dir).unwrap_or_default() {
                let path = self.dir.join(name);
                let _ = fs.remove_dir_all(&path).or_else(|_| fs.remove_file(&path));
            }
        } else {
            // The directory held data before (an unfinished format's, or data force
            // let format destroy); what format wrote there is recognised as an
            // unfinished format's and redone, with the headers its marker names.
            return;
        }
        for member in &progress.headers_written {
            let _ = crate::devices::clear_identity(member.as_ref());
        }
    }
}
