//! Opening the devices a store lives on: one device or file, or several members that
//! the value store stripes itself over (each member carries an identity header naming
//! the stripe and its place in it).

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::options::Options;
use hashkv_blockdev::file::{open_device, OpenOptions};
use hashkv_blockdev::identity::{self, Identity};
use hashkv_blockdev::stripe::StripedDevice;
use hashkv_blockdev::{AlignedBuf, BlockDevice};
use std::path::PathBuf;
use std::sync::Arc;

/// Bytes at the start of a device checked for existing data before formatting: covers
/// the signatures of the common filesystems (btrfs's lies at 64 KiB).
const EMPTY_CHECK_BYTES: usize = 128 * 1024;

fn open_options(options: &Options, create: bool) -> OpenOptions {
    OpenOptions {
        create_size_bytes: if create {
            options.create_device_bytes
        } else {
            None
        },
        ..OpenOptions::default()
    }
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
    let opts = open_options(options, create && paths.len() == 1);
    paths
        .iter()
        .map(|p| Ok(open_device(p, &opts)? as Arc<dyn BlockDevice>))
        .collect()
}

/// Opens the devices for formatting; several members get fresh identity headers.
/// Returns the device and the stripe uuid the superblock must carry.
pub(crate) fn format_members(
    paths: &[PathBuf],
    options: &Options,
) -> Result<(Arc<dyn BlockDevice>, [u8; 16])> {
    let members = open_each(paths, options, true)?;
    if members.len() == 1 {
        return Ok((members.into_iter().next().unwrap(), rand::random()));
    }
    if !options.force_format {
        for (i, m) in members.iter().enumerate() {
            if identity::read_identity(m.as_ref())?.is_some() {
                return Err(Error::DeviceNotEmpty {
                    what: format!("{} carries a stripe identity header", paths[i].display()),
                });
            }
        }
    }
    let ids = Identity::new_stripe(members.len() as u32, options.main_segment_bytes);
    for (m, id) in members.iter().zip(&ids) {
        identity::write_identity(m.as_ref(), id)?;
        m.flush()?;
    }
    let striped = StripedDevice::new(members, options.main_segment_bytes)?;
    Ok((Arc::new(striped), ids[0].stripe_uuid))
}

/// Opens the devices of an existing store, checking that several members form one
/// stripe in the order given, with `expected_unit_bytes` as stripe unit if given (else
/// the unit the identity headers name). Returns the stripe uuid of the headers.
pub(crate) fn open_members(
    paths: &[PathBuf],
    options: &Options,
    expected_unit_bytes: Option<u64>,
) -> Result<(Arc<dyn BlockDevice>, Option<[u8; 16]>)> {
    let members = open_each(paths, options, false)?;
    if members.len() == 1 {
        return Ok((members.into_iter().next().unwrap(), None));
    }
    let ids = identity::read_and_check_stripe(&members, expected_unit_bytes)?;
    let uuid = ids[0].stripe_uuid;
    let striped = StripedDevice::new(members, ids[0].stripe_unit_bytes)?;
    Ok((Arc::new(striped), Some(uuid)))
}

/// Refuses to format over data: the first bytes (where filesystems and our superblock
/// live), the twin superblock copy and the place where older formats kept the twin
/// must be zero.
pub(crate) fn check_empty(device: &dyn BlockDevice, layout: &Layout) -> Result<()> {
    let size = device.geometry().size_bytes;
    let mut probes = vec![(
        0u64,
        EMPTY_CHECK_BYTES.min(layout.main_segment_bytes as usize),
    )];
    for at in [
        Layout::superblock_offsets()[1],
        Layout::legacy_twin_offset(layout.main_segment_bytes),
    ] {
        probes.push((at, layout.block_bytes as usize));
    }
    for (offset, len) in probes {
        if offset + len as u64 > size || offset % u64::from(layout.block_bytes) != 0 {
            continue;
        }
        let mut buf = AlignedBuf::new(len);
        device.read_at(offset, &mut buf[..len])?;
        if let Some(pos) = buf[..len].iter().position(|&b| b != 0) {
            let what = if buf[..8] == crate::superblock::SUPERBLOCK_MAGIC[..] {
                "a hashkv superblock".to_string()
            } else {
                format!("non-zero bytes at offset {}", offset + pos as u64)
            };
            return Err(Error::DeviceNotEmpty { what });
        }
    }
    Ok(())
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
