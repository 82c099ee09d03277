//! The part of `hashkv fsck` that needs no open store: both superblock copies and
//! every stripe member's identity header, each checked on its own (open tolerates one
//! damaged copy, so its damage would go unseen), and with `repair` rewritten when
//! damaged or missing: a superblock copy from its valid twin, a member header from
//! the superblock (uuid, member count, stripe unit) and the member's place in the
//! order given.

use crate::devices;
use crate::error::{Error, Result};
use crate::layout::MAIN_SEGMENT_BYTES_MIN;
use crate::superblock::{self, Copies, CopyState, HeaderReport, Superblock};
use hashkv_blockdev::identity::{self, Identity, IDENTITY_FORMAT_VERSION};
use hashkv_blockdev::stripe::StripedDevice;
use hashkv_blockdev::{BlockDevice, DeviceError};
use std::path::PathBuf;
use std::sync::Arc;

/// Checks (and with `repair`, rewrites) the superblock copies and member headers of
/// the store on `paths`.
pub(crate) fn check(paths: &[PathBuf], repair: bool) -> Result<HeaderReport> {
    let members = devices::open_unchecked(paths)?;
    let mut report = HeaderReport::default();
    if members.len() == 1 {
        let device = members[0].as_ref();
        let copies = superblock::read_copies(device)?;
        if copies.first.valid().is_none() && copies.twin.valid().is_none() {
            let e = Copies::into_superblock(copies).unwrap_err();
            return Err(devices::explain_missing_superblock(e, device, paths));
        }
        check_copies(device, &copies, repair, &mut report)?;
        return Ok(report);
    }
    let ids: Vec<_> = members
        .iter()
        .map(|m| identity::read_identity(m.as_ref()))
        .collect();
    let (striped, copies) = read_striped_copies(&members, &ids)?;
    check_copies(&striped, &copies, repair, &mut report)?;
    let reference = match copies.first.valid().or(copies.twin.valid()) {
        Some(sb) => Reference::Superblock(*sb),
        // Without a superblock (members out of order, both copies damaged), headers
        // are checked against each other and nothing is rewritten.
        None => match ids
            .iter()
            .find_map(|id| id.as_ref().ok().copied().flatten())
        {
            Some(id) => Reference::Header(id),
            None => return Ok(report),
        },
    };
    check_member_headers(&members, &ids, paths, &reference, repair, &mut report)?;
    Ok(report)
}

/// The striped device and its superblock copies. The stripe unit comes from a valid
/// member header or, failing that, the superblock: both copies lie in the first unit
/// (on member 0) whatever the unit, so a provisional unit reads them.
fn read_striped_copies(
    members: &[Arc<dyn BlockDevice>],
    ids: &[std::result::Result<Option<Identity>, DeviceError>],
) -> Result<(StripedDevice, Copies)> {
    let unit = ids
        .iter()
        .find_map(|id| id.as_ref().ok().copied().flatten())
        .map_or(MAIN_SEGMENT_BYTES_MIN, |id| id.stripe_unit_bytes);
    let striped = StripedDevice::new(members.to_vec(), unit)?;
    let copies = superblock::read_copies(&striped)?;
    let main = copies
        .first
        .valid()
        .or(copies.twin.valid())
        .map(|s| s.layout.main_segment_bytes);
    match main {
        Some(m) if m != unit => {
            let striped = StripedDevice::new(members.to_vec(), m)?;
            let copies = superblock::read_copies(&striped)?;
            Ok((striped, copies))
        }
        _ => Ok((striped, copies)),
    }
}

fn describe(state: &CopyState) -> String {
    match state {
        CopyState::Valid(_) => "valid".into(),
        CopyState::Absent => "missing (no superblock there)".into(),
        CopyState::Damaged(e) => format!("damaged ({e})"),
    }
}

fn check_copies(
    device: &dyn BlockDevice,
    copies: &Copies,
    repair: bool,
    report: &mut HeaderReport,
) -> Result<()> {
    let damage_before = report.damage.len();
    for (offset, state) in [(0, &copies.first), (copies.twin_offset, &copies.twin)] {
        if state.valid().is_none() {
            report.damage.push(format!(
                "superblock copy at offset {offset}: {}",
                describe(state)
            ));
        }
    }
    if let (CopyState::Valid(a), CopyState::Valid(b)) = (&copies.first, &copies.twin) {
        if a != b {
            report.damage.push(format!(
                "superblock copies at offset 0 and {} are both valid but disagree",
                copies.twin_offset
            ));
        }
    }
    let none_valid = copies.first.valid().is_none() && copies.twin.valid().is_none();
    if repair && report.damage.len() > damage_before && !none_valid {
        for offset in copies.repair(device)? {
            let from = if offset == 0 { copies.twin_offset } else { 0 };
            report.repaired.push(format!(
                "superblock copy at offset {offset} rewritten from its twin at offset {from}"
            ));
        }
    }
    Ok(())
}

/// What member headers are checked against: the superblock, or (without one) the
/// first valid header.
enum Reference {
    Superblock(Superblock),
    Header(Identity),
}

impl Reference {
    fn expected(&self, i: usize) -> Identity {
        let (stripe_uuid, member_count, stripe_unit_bytes) = match self {
            Reference::Superblock(sb) => (
                sb.stripe_uuid,
                sb.member_count,
                sb.layout.main_segment_bytes,
            ),
            Reference::Header(id) => (id.stripe_uuid, id.member_count, id.stripe_unit_bytes),
        };
        Identity {
            format_version: IDENTITY_FORMAT_VERSION,
            stripe_uuid,
            member_index: i as u32,
            member_count,
            stripe_unit_bytes,
        }
    }
}

/// Each member's header must name the stripe, its place in the order given, the
/// member count and the stripe unit. A missing or damaged header is rewritten with
/// `repair` when a superblock is valid, the devices given are as many as it names,
/// and another member's header is intact (so the set is this stripe's); a header that
/// names another stripe or another place is reported, never rewritten.
fn check_member_headers(
    members: &[Arc<dyn BlockDevice>],
    ids: &[std::result::Result<Option<Identity>, DeviceError>],
    paths: &[PathBuf],
    reference: &Reference,
    repair: bool,
    report: &mut HeaderReport,
) -> Result<()> {
    let expected = |i: usize| reference.expected(i);
    let intact = |i: usize| matches!(&ids[i], Ok(Some(id)) if *id == expected(i));
    let any_intact = (0..ids.len()).any(intact);
    let repairable = repair
        && any_intact
        && matches!(reference, Reference::Superblock(sb) if sb.member_count as usize == members.len());
    for (i, id) in ids.iter().enumerate() {
        let what = match id {
            _ if intact(i) => continue,
            Ok(Some(other)) => {
                report.damage.push(format!(
                    "member header of {} names member {} of {} of stripe {}, expected member {i} of {} of stripe {}",
                    paths[i].display(),
                    other.member_index,
                    other.member_count,
                    other.uuid_string(),
                    expected(i).member_count,
                    expected(i).uuid_string()
                ));
                continue;
            }
            Ok(None) => "missing (zeroed)".to_string(),
            Err(e) => format!("damaged ({e})"),
        };
        report
            .damage
            .push(format!("member header of {}: {what}", paths[i].display()));
        if repairable {
            identity::write_identity(members[i].as_ref(), &expected(i)).map_err(Error::from)?;
            report.repaired.push(format!(
                "member header of {} rewritten (member {i} of {}, stripe {})",
                paths[i].display(),
                expected(i).member_count,
                expected(i).uuid_string()
            ));
        }
    }
    Ok(())
}
