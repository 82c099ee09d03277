//! Formatting a store and opening it: the superblock (both copies), the metadata
//! directory and its index, and the checks that the devices, the index and the options
//! belong together. What happens after a crash is the index's own recovery (its log
//! replay) plus the value store's load (`store::open`): FORMAT.md, "What is
//! checked at open".

pub(crate) mod format;
mod headers;

use crate::db::Db;
use crate::db::Opened;
use crate::devices;
use crate::error::{Error, Result};
use crate::index::IndexReader;
use crate::keys;
use crate::options::Options;
use crate::store::{self, Source};
use crate::superblock::{self, FormatStep, Superblock, FORMAT_VERSION};
use format::{Progress, Undo};
use hashkv_blockdev::BlockDevice;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The format version from which index pointers carry their record's checksum: the
/// oldest hashkv or vlog store this build reads (superblock.rs, `FORMAT_VERSION`).
const POINTER_CHECKSUMS_FORMAT_VERSION: u32 = 4;

impl Db {
    /// Formats `devices` (one, or several to stripe over) and `metadata_dir`, then
    /// opens the new store. Refuses devices and a directory that hold data unless
    /// `options.force_format`, or unless they hold what an interrupted format left
    /// (which is redone). A format that fails before its superblock write removes what
    /// it created; one that fails in it leaves a store that opens or is redone.
    /// Crash-safe: see FORMAT.md, "Format".
    pub fn format(devices: &[PathBuf], metadata_dir: &Path, options: &Options) -> Result<Db> {
        match format_paths(devices, metadata_dir, options, None)? {
            Some(device) => Db::open_device(device, metadata_dir, options),
            None => unreachable!("a format that is not stopped returns its device"),
        }
    }

    /// `format` over an already opened device (tests use the simulated device).
    pub fn format_device(
        device: Arc<dyn BlockDevice>,
        metadata_dir: &Path,
        options: &Options,
    ) -> Result<Db> {
        match format_device(device, metadata_dir, options, None)? {
            Some(device) => Db::open_device(device, metadata_dir, options),
            None => unreachable!("a format that is not stopped returns its device"),
        }
    }

    /// `format` stopped right after `step`, as a kill there would stop it: nothing
    /// after the step runs, nothing is cleaned up. For the tests of format's crash
    /// safety.
    #[doc(hidden)]
    pub fn format_interrupted_for_test(
        devices: &[PathBuf],
        metadata_dir: &Path,
        options: &Options,
        step: FormatStep,
    ) -> Result<()> {
        format_paths(devices, metadata_dir, options, Some(step)).map(|_| ())
    }

    /// `format_interrupted_for_test` over an already opened device.
    #[doc(hidden)]
    pub fn format_device_interrupted_for_test(
        device: Arc<dyn BlockDevice>,
        metadata_dir: &Path,
        options: &Options,
        step: FormatStep,
    ) -> Result<()> {
        format_device(device, metadata_dir, options, Some(step)).map(|_| ())
    }

    /// Opens a store formatted by `format`, recovering after a crash if needed.
    /// `options` must name the mode and segment sizes the store was formatted with
    /// (`open_formatted` reads them from the superblock instead).
    pub fn open(devices: &[PathBuf], metadata_dir: &Path, options: &Options) -> Result<Db> {
        let (device, superblock) = open_store_devices(devices, metadata_dir, options)?;
        Db::open_with(device, superblock, metadata_dir, options)
    }

    /// Opens a store with the mode and segment sizes its superblock names (the other
    /// options are `options`'), so the caller need not know how it was formatted.
    pub fn open_formatted(
        devices: &[PathBuf],
        metadata_dir: &Path,
        options: &Options,
    ) -> Result<Db> {
        let (device, superblock) = open_store_devices(devices, metadata_dir, options)?;
        let options = options.clone().matching(&superblock);
        Db::open_with(device, superblock, metadata_dir, &options)
    }

    /// Reads the superblock of a formatted store without opening it, e.g. to learn the
    /// segment sizes and mode that `open` must be given (see
    /// `Options::matching`). The devices are opened and released again.
    pub fn probe(devices: &[PathBuf]) -> Result<Superblock> {
        let (device, _) = devices::open_members(devices, &Options::default(), None)?;
        read_superblock(device.as_ref())
            .map_err(|e| devices::explain_missing_superblock(e, device.as_ref(), devices))
    }

    /// Checks the superblock's two copies and every stripe member's identity header
    /// of the store on `devices`, each on its own, without opening the store (so it
    /// works when a damaged header keeps the store from opening); with `repair`,
    /// rewrites a damaged or missing copy from its valid twin and a damaged or
    /// missing member header from the superblock and the member's place in the order
    /// given. The first part of `hashkv fsck`.
    pub fn check_headers(devices: &[PathBuf], repair: bool) -> Result<superblock::HeaderReport> {
        headers::check(devices, repair)
    }

    /// `open` over an already opened device.
    pub fn open_device(
        device: Arc<dyn BlockDevice>,
        metadata_dir: &Path,
        options: &Options,
    ) -> Result<Db> {
        let superblock = read_superblock(device.as_ref())
            .map_err(|e| explain_unfinished_format(e, metadata_dir, options))?;
        Db::open_with(device, superblock, metadata_dir, options)
    }

    fn open_with(
        device: Arc<dyn BlockDevice>,
        superblock: Superblock,
        metadata_dir: &Path,
        options: &Options,
    ) -> Result<Db> {
        check_matches(&superblock, options, device.as_ref())?;
        let layout = superblock.layout;
        let lsm =
            devices::retry_while_holder_gone(|| format::open_lsm(metadata_dir, options, false))?;
        match lsm.get(&keys::uuid_key())? {
            Some(u) if u == superblock.stripe_uuid => {}
            Some(u) => {
                return Err(Error::Mismatch {
                    what: "metadata directory",
                    on_device: format!("stripe uuid {}", devices::hex(&superblock.stripe_uuid)),
                    requested: format!(
                        "{}, which holds the index of another store (stripe uuid {})",
                        metadata_dir.display(),
                        devices::hex(&u)
                    ),
                })
            }
            None => {
                return Err(Error::NotOurs {
                    reason: format!(
                        "metadata directory {} holds no hashkv index for this device",
                        metadata_dir.display()
                    ),
                })
            }
        }
        // The store is whole: a marker left by a format interrupted after its commit
        // means nothing any more.
        format::remove_marker(&lsm)?;
        let next_seq = match lsm.get(&keys::seq_key())? {
            Some(b) if b.len() == 8 => u64::from_le_bytes(b[..].try_into().unwrap()) + 1,
            _ => {
                return Err(Error::corrupt(
                    "index",
                    "an 8-byte sequence entry",
                    "none, or another size",
                ))
            }
        };
        let lsm = Arc::new(lsm);
        let index = IndexReader::new(lsm.clone());
        let store = store::open(options, &layout, Source::Index(&index, device.as_ref()))?;
        let opened = Opened {
            device,
            superblock,
            lsm,
            store,
            next_seq,
        };
        Db::start(options, opened, metadata_dir)
    }
}

/// Formats the devices at `paths`; `Ok(None)` when stopped after `stop_after`.
fn format_paths(
    paths: &[PathBuf],
    metadata_dir: &Path,
    options: &Options,
    stop_after: Option<FormatStep>,
) -> Result<Option<Arc<dyn BlockDevice>>> {
    format_undoing(paths, metadata_dir, options, stop_after, |unfinished| {
        devices::format_members(paths, options, unfinished)
    })
}

fn format_device(
    device: Arc<dyn BlockDevice>,
    metadata_dir: &Path,
    options: &Options,
    stop_after: Option<FormatStep>,
) -> Result<Option<Arc<dyn BlockDevice>>> {
    format_undoing(&[], metadata_dir, options, stop_after, |_| {
        Ok(devices::NewMembers {
            device,
            headers: Vec::new(),
            stripe_uuid: rand::random(),
        })
    })
}

/// The one format path: recognises an unfinished format (unless forced), gets the
/// devices from `members`, writes the store, and on a failure before its commit
/// removes what it created (`paths` are the files it may have created; `Undo::run`).
fn format_undoing(
    paths: &[PathBuf],
    metadata_dir: &Path,
    options: &Options,
    stop_after: Option<FormatStep>,
    members: impl FnOnce(Option<&format::UnfinishedFormat>) -> Result<devices::NewMembers>,
) -> Result<Option<Arc<dyn BlockDevice>>> {
    let undo = Undo::note(paths, metadata_dir, options)?;
    // With force, nothing needs recognising (and a large index need not be replayed).
    let unfinished = if options.force_format {
        None
    } else {
        format::unfinished(metadata_dir, options)?
    };
    let mut progress = Progress::default();
    let result = members(unfinished.as_ref()).and_then(|new| {
        format::write_store(
            new,
            metadata_dir,
            options,
            unfinished,
            stop_after,
            &mut progress,
        )
    });
    if let Err(e) = &result {
        undo.run(e, &progress, options);
    }
    result
}

/// Opens the devices of a store and reads its superblock, checking that stripe
/// members belong to it.
fn open_store_devices(
    paths: &[PathBuf],
    metadata_dir: &Path,
    options: &Options,
) -> Result<(Arc<dyn BlockDevice>, Superblock)> {
    let (device, stripe_uuid) = devices::open_members(paths, options, None)
        .map_err(|e| explain_unfinished_format(e, metadata_dir, options))?;
    let superblock = read_superblock(device.as_ref())
        .map_err(|e| devices::explain_missing_superblock(e, device.as_ref(), paths))
        .map_err(|e| explain_unfinished_format(e, metadata_dir, options))?;
    if let Some(u) = stripe_uuid {
        if u != superblock.stripe_uuid {
            return Err(Error::Mismatch {
                what: "stripe uuid",
                on_device: devices::hex(&superblock.stripe_uuid),
                requested: devices::hex(&u),
            });
        }
    }
    Ok((device, superblock))
}

/// A device without a valid superblock whose metadata directory holds what an
/// interrupted format left: say so, and what to do.
fn explain_unfinished_format(e: Error, metadata_dir: &Path, options: &Options) -> Error {
    let no_superblock = matches!(
        e,
        Error::NotOurs { .. }
            | Error::ChecksumMismatch { .. }
            | Error::Corruption { .. }
            | Error::Device(hashkv_blockdev::DeviceError::Identity { .. })
    );
    if no_superblock && matches!(format::unfinished(metadata_dir, options), Ok(Some(_))) {
        return Error::NotOurs {
            reason: format!(
                "its format was interrupted before it finished (metadata directory {} holds \
                 an unfinished format's index); format it again: an interrupted format is \
                 redone without force",
                metadata_dir.display()
            ),
        };
    }
    e
}

/// Reads both superblock copies; a valid one wins. Two valid copies must agree.
pub(crate) fn read_superblock(device: &dyn BlockDevice) -> Result<Superblock> {
    superblock::read_copies(device)?.into_superblock()
}

fn check_matches(sb: &Superblock, options: &Options, device: &dyn BlockDevice) -> Result<()> {
    let mismatch = |what, on_device: String, requested: String| {
        Err(Error::Mismatch {
            what,
            on_device,
            requested,
        })
    };
    if sb.format_version < POINTER_CHECKSUMS_FORMAT_VERSION && sb.mode != crate::options::Mode::Lsm
    {
        // Their index pointers lack the record checksum a get checks the value with
        // (FORMAT.md, "Index entries"); before version 3 hashkv groups also had a
        // fixed main segment each.
        return mismatch(
            "format version of a store with a value store",
            sb.format_version.to_string(),
            format!(
                "{FORMAT_VERSION} (reformat: index pointers now carry their record's checksum)"
            ),
        );
    }
    if sb.mode != options.mode {
        return mismatch("mode", sb.mode.name().into(), options.mode.name().into());
    }
    if sb.layout.main_segment_bytes != options.main_segment_bytes {
        return mismatch(
            "main segment bytes",
            sb.layout.main_segment_bytes.to_string(),
            options.main_segment_bytes.to_string(),
        );
    }
    if sb.layout.log_segment_bytes != options.log_segment_bytes {
        return mismatch(
            "log segment bytes",
            sb.layout.log_segment_bytes.to_string(),
            options.log_segment_bytes.to_string(),
        );
    }
    let members = device.counters().len() as u32;
    if sb.member_count != members {
        return mismatch(
            "member device count",
            sb.member_count.to_string(),
            members.to_string(),
        );
    }
    if device.geometry().size_bytes < sb.layout.end_offset() {
        return mismatch(
            "device size",
            sb.device_bytes.to_string(),
            device.geometry().size_bytes.to_string(),
        );
    }
    Ok(())
}
