//! The small store crashtest and soak run on: 1 MiB main segments and 64 KiB log
//! segments, so that a 64 MiB file holds dozens of groups and hundreds of log
//! segments and GC runs within seconds of writing; a small index memtable, so that the
//! index flushes and compacts all the time too. Block devices are used at their size.

use super::values::{SEPARATION_THRESHOLD_BYTES, VALUE_BYTES_MAX};
use super::{StressError, StressResult};
use crate::cmd::explain::{explain, Doing};
use crate::cmd::store::StoreCmdError;
use hashkv::{Db, Mode, Options};
use hashkv_blockdev::DeviceError;
use std::path::{Path, PathBuf};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// Main segments of 1 MiB: many groups in a small store, so groups fill and are
/// collected quickly (the paper's 64 MiB would give a 64 MiB file no group at all).
pub const MAIN_SEGMENT_BYTES: u64 = MIB;
/// Log segments of 64 KiB: many of them in the reserved space, and room for the
/// largest value (a record never spans two segments).
pub const LOG_SEGMENT_BYTES: u64 = 64 * KIB;
const _: () = assert!(VALUE_BYTES_MAX as u64 * 2 <= LOG_SEGMENT_BYTES);
/// The paper's reserved share: `--reserve`'s default.
pub const RESERVED_SHARE: f64 = 0.30;
/// Size of the device files created where none exists: the workloads' writes wrap
/// around it within a cycle or a few seconds, so GC runs all the time (at 64 MiB the
/// first crashtest cycles end before any GC).
pub const DEVICE_MIB_DEFAULT: u64 = 32;
/// An index memtable of 256 KiB: the index flushes to tables and compacts every few
/// thousand writes, so a kill lands in those as well.
const LSM_MEMTABLE_BYTES: usize = 256 << 10;
const LSM_TABLE_TARGET_BYTES: u64 = 256 << 10;
const LSM_LEVEL1_BYTES_MAX: u64 = 1 << 20;
/// The index's block cache: the index of these stores is a few MiB at most.
const LSM_BLOCK_CACHE_BYTES: usize = 8 << 20;

/// Where a small store lives and how it is set up: the flags crashtest and soak share.
#[derive(Debug, Clone, clap::Args)]
pub struct SmallStoreArgs {
    /// Engine mode: hashkv, vlog or lsm.
    #[arg(long, value_name = "NAME", default_value = "hashkv")]
    pub mode: String,

    /// Hot/cold separation during GC (the hashkv mode's cold data log).
    #[arg(long, value_name = "on|off", default_value = "off", value_parser = ["on", "off"])]
    pub hotness: String,

    /// Share of the value space reserved for updates (the hashkv mode's log segments).
    /// Past about 0.5 the groups' chain limits, not the pool, end the room, and GC
    /// runs on their band.
    #[arg(long, value_name = "SHARE", default_value_t = RESERVED_SHARE)]
    pub reserve: f64,

    /// Size in MiB of each device file created where a --device path does not exist.
    /// Existing files and block devices are used at their size.
    #[arg(long, value_name = "MIB", default_value_t = DEVICE_MIB_DEFAULT)]
    pub device_mib: u64,

    /// Format over devices and a metadata directory that hold data (a store of an
    /// earlier run, say).
    #[arg(long)]
    pub force: bool,
}

impl SmallStoreArgs {
    pub fn mode(&self) -> Result<Mode, String> {
        Mode::from_name(&self.mode).map_err(|e| format!("--mode: {e}"))
    }

    pub fn hotness_on(&self) -> bool {
        self.hotness == "on"
    }

    /// The device file size --device-mib asks for, checked.
    pub fn device_bytes(&self) -> Result<u64, String> {
        // Four main segments is the engine's least; ask for room for GC beyond that.
        const DEVICE_MIB_MIN: u64 = 16;
        if self.device_mib < DEVICE_MIB_MIN {
            return Err(format!(
                "--device-mib {} is below {DEVICE_MIB_MIN}: the store needs room for groups, \
                 spares and reserved space of {} KiB segments",
                self.device_mib,
                MAIN_SEGMENT_BYTES / KIB
            ));
        }
        self.device_mib
            .checked_mul(MIB)
            .ok_or_else(|| format!("--device-mib {} is too large", self.device_mib))
    }

    /// The flags as engine options, with a write cache of `write_cache_bytes`.
    pub fn options(&self, write_cache_bytes: u64) -> Result<Options, String> {
        Ok(options(self.mode()?, self.hotness_on(), write_cache_bytes)
            .with_reserved_share(self.reserve)
            .with_force_format(self.force))
    }
}

/// Options of a small store in `mode`.
pub fn options(mode: Mode, hotness: bool, write_cache_bytes: u64) -> Options {
    let lsm = hashkv_lsm::Options {
        memtable_bytes_max: LSM_MEMTABLE_BYTES,
        table_target_bytes: LSM_TABLE_TARGET_BYTES,
        level1_bytes_max: LSM_LEVEL1_BYTES_MAX,
        block_cache_bytes: LSM_BLOCK_CACHE_BYTES,
        ..hashkv_lsm::Options::default()
    };
    Options::default()
        .with_mode(mode)
        .with_main_segment_bytes(MAIN_SEGMENT_BYTES)
        .with_log_segment_bytes(LOG_SEGMENT_BYTES)
        .with_reserved_share(RESERVED_SHARE)
        .with_separation_threshold_bytes(SEPARATION_THRESHOLD_BYTES)
        .with_write_cache_bytes(write_cache_bytes)
        .with_hotness(hotness)
        .with_lsm(lsm)
}

/// Creates each of `devices` that does not exist as a file of `bytes`; returns the
/// paths created, so the caller can say what it made.
pub fn create_missing_files(
    devices: &[PathBuf],
    bytes: u64,
) -> Result<Vec<PathBuf>, (PathBuf, DeviceError)> {
    let mut created = Vec::new();
    for path in devices {
        if std::fs::symlink_metadata(path).is_ok() {
            continue;
        }
        hashkv_blockdev::file::create_file(path, bytes, false).map_err(|e| (path.clone(), e))?;
        created.push(path.clone());
    }
    Ok(created)
}

/// Formats the store (creating missing device files first is the caller's part).
/// Refusals are worded for the command line (a device that holds data needs --force).
pub fn format(devices: &[PathBuf], metadata: &Path, options: &Options) -> StressResult<Db> {
    Db::format(devices, metadata, options).map_err(|e| {
        match explain(e, Doing::Format, devices, metadata) {
            StoreCmdError::Usage(message) => StressError::Usage(message),
            StoreCmdError::Engine(source) => StressError::Engine {
                doing: "formatting the store".into(),
                source,
            },
            other => StressError::Usage(other.to_string()),
        }
    })
}

/// Opens the store with the mode and segment sizes its superblock names and the other
/// options of `options`.
pub fn open(devices: &[PathBuf], metadata: &Path, options: &Options) -> hashkv::Result<Db> {
    Db::open_formatted(devices, metadata, options)
}
