//! Formatting a store and opening it: the superblock (both copies), the metadata
//! directory and its index, and the checks that the devices, the index and the options
//! belong together. What happens after a crash is the index's own recovery (its log
//! replay) plus the value store's load (`store::open`): FORMAT.md, "What is
//! checked at open".

use crate::db::Db;
use crate::db::Opened;
use crate::devices;
use crate::error::{Error, Result};
use crate::index::IndexReader;
use crate::keys;
use crate::layout::Layout;
use crate::options::Options;
use crate::store::{self, Source};
use crate::superblock::{Superblock, FORMAT_VERSION};
use hashkv_blockdev::{AlignedBuf, BlockDevice};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Smallest alignment the value store uses, whatever smaller logical block a device
/// reports: 4 KiB writes avoid read-modify-write inside SSDs.
const BLOCK_BYTES_MIN: u32 = 4096;

/// The format version from which value-log pointers carry their own region tag.
const VLOG_REGION_TAGS_FORMAT_VERSION: u32 = 2;

impl Db {
    /// Formats `devices` (one, or several to stripe over) and `metadata_dir`, then
    /// opens the new store. Refuses devices that hold data unless `options.force_format`.
    pub fn format(devices: &[PathBuf], metadata_dir: &Path, options: &Options) -> Result<Db> {
        let (device, uuid) = devices::format_members(devices, options)?;
        Db::format_with_uuid(device, metadata_dir, options, uuid)
    }

    /// Opens a store formatted by `format`, recovering after a crash if needed.
    pub fn open(devices: &[PathBuf], metadata_dir: &Path, options: &Options) -> Result<Db> {
        let (device, stripe_uuid) =
            devices::open_members(devices, options, Some(options.main_segment_bytes))?;
        let superblock = read_superblock(device.as_ref())?;
        if let Some(u) = stripe_uuid {
            if u != superblock.stripe_uuid {
                return Err(Error::Mismatch {
                    what: "stripe uuid",
                    on_device: devices::hex(&superblock.stripe_uuid),
                    requested: devices::hex(&u),
                });
            }
        }
        Db::open_device(device, metadata_dir, options)
    }

    /// Reads the superblock of a formatted store without opening it, e.g. to learn the
    /// segment sizes and mode that `open` must be given (see
    /// `Options::matching`). The devices are opened and released again.
    pub fn probe(devices: &[PathBuf]) -> Result<Superblock> {
        let (device, _) = devices::open_members(devices, &Options::default(), None)?;
        read_superblock(device.as_ref())
    }

    /// `format` over an already opened device (tests use the simulated device).
    pub fn format_device(
        device: Arc<dyn BlockDevice>,
        metadata_dir: &Path,
        options: &Options,
    ) -> Result<Db> {
        Db::format_with_uuid(device, metadata_dir, options, rand::random())
    }

    fn format_with_uuid(
        device: Arc<dyn BlockDevice>,
        metadata_dir: &Path,
        options: &Options,
        stripe_uuid: [u8; 16],
    ) -> Result<Db> {
        let geometry = device.geometry();
        let block_bytes = geometry.logical_block_bytes.max(BLOCK_BYTES_MIN);
        let layout = Layout::compute(geometry.size_bytes, block_bytes, options)?;
        if !options.force_format {
            devices::check_empty(device.as_ref(), &layout)?;
        }
        prepare_metadata_dir(metadata_dir, options.force_format)?;
        let superblock = Superblock {
            format_version: FORMAT_VERSION,
            mode: options.mode,
            stripe_uuid,
            member_count: device.counters().len() as u32,
            device_bytes: geometry.size_bytes,
            layout,
        };
        // The index first: a superblock without its index is refused at open, while an
        // index without a superblock could be mistaken for another device's.
        let lsm = open_lsm(metadata_dir, options, true)?;
        let mut batch = hashkv_lsm::WriteBatch::new();
        batch.put(&keys::uuid_key(), &superblock.stripe_uuid);
        batch.put(&keys::seq_key(), &0u64.to_le_bytes());
        for (k, v) in store::open(options, &layout, Source::Fresh)?.format_entries() {
            batch.put(&k, &v);
        }
        lsm.write(&batch, &hashkv_lsm::WriteOptions { sync: true })?;
        lsm.close()?;
        let block = superblock.encode(block_bytes as usize);
        let mut buf = AlignedBuf::new(block.len());
        buf.copy_from_slice(&block);
        for offset in Layout::superblock_offsets(layout.main_segment_bytes) {
            device.write_at(offset, &buf)?;
        }
        device.flush()?;
        Db::open_device(device, metadata_dir, options)
    }

    /// `open` over an already opened device.
    pub fn open_device(
        device: Arc<dyn BlockDevice>,
        metadata_dir: &Path,
        options: &Options,
    ) -> Result<Db> {
        let superblock = read_superblock(device.as_ref())?;
        check_matches(&superblock, options, device.as_ref())?;
        let layout = superblock.layout;
        let lsm = open_lsm(metadata_dir, options, false)?;
        match lsm.get(&keys::uuid_key())? {
            Some(u) if u == superblock.stripe_uuid => {}
            Some(_) => {
                return Err(Error::Mismatch {
                    what: "metadata directory",
                    on_device: "another store's stripe uuid".into(),
                    requested: metadata_dir.display().to_string(),
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

fn prepare_metadata_dir(dir: &Path, force: bool) -> Result<()> {
    let io = |e| Error::MetadataDir {
        path: dir.to_path_buf(),
        source: e,
    };
    if dir.exists() {
        let non_empty = std::fs::read_dir(dir).map_err(io)?.next().is_some();
        if non_empty {
            if !force {
                return Err(Error::DeviceNotEmpty {
                    what: format!("metadata directory {} is not empty", dir.display()),
                });
            }
            // Through the index's own lock: an open store's directory is refused.
            hashkv_lsm::destroy(dir)?;
        }
    }
    std::fs::create_dir_all(dir).map_err(io)
}

fn open_lsm(dir: &Path, options: &Options, create: bool) -> Result<hashkv_lsm::Db> {
    let mut lsm_options = options.lsm.clone();
    lsm_options.create_if_missing = create;
    lsm_options.error_if_exists = false;
    Ok(hashkv_lsm::Db::open(dir, lsm_options)?)
}

/// Reads both superblock copies; a valid one wins. Two valid copies must agree.
pub(crate) fn read_superblock(device: &dyn BlockDevice) -> Result<Superblock> {
    let geometry = device.geometry();
    let block = geometry.logical_block_bytes.max(BLOCK_BYTES_MIN) as usize;
    let mut buf = AlignedBuf::new(block);
    device.read_at(0, &mut buf[..block])?;
    let first = Superblock::decode(&buf[..block]);
    // The second copy sits half a main segment in; its size comes from a valid first
    // copy, or else is searched for among the sizes a superblock may name.
    let mut errors = Vec::new();
    let mut found: Vec<Superblock> = Vec::new();
    match first {
        Ok(Some(s)) => found.push(s),
        Ok(None) => {}
        Err(e) => errors.push(e),
    }
    let candidates: Vec<u64> = match found.first() {
        Some(s) => vec![s.layout.main_segment_bytes],
        None => (13..=36).map(|shift| 1u64 << shift).collect(),
    };
    for main in candidates {
        let at = Layout::superblock_offsets(main)[1];
        if at + block as u64 > geometry.size_bytes {
            break;
        }
        device.read_at(at, &mut buf[..block])?;
        match Superblock::decode(&buf[..block]) {
            Ok(Some(s)) if s.layout.main_segment_bytes == main => {
                found.push(s);
                break;
            }
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    match (found.first(), found.get(1)) {
        (Some(a), Some(b)) if a != b => Err(Error::corrupt(
            "superblock",
            "two equal copies",
            format!("copies that disagree: {a:?} and {b:?}"),
        )),
        (Some(a), _) => Ok(*a),
        (None, _) => match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Err(Error::NotOurs {
                reason: "no hashkv superblock on the device".into(),
            }),
        },
    }
}

fn check_matches(sb: &Superblock, options: &Options, device: &dyn BlockDevice) -> Result<()> {
    let mismatch = |what, on_device: String, requested: String| {
        Err(Error::Mismatch {
            what,
            on_device,
            requested,
        })
    };
    if sb.format_version < VLOG_REGION_TAGS_FORMAT_VERSION && sb.mode == crate::options::Mode::VLog
    {
        return mismatch(
            "format version of a vlog store",
            sb.format_version.to_string(),
            format!("{FORMAT_VERSION} (reformat this baseline store)"),
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
