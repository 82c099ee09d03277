//! The identity header at the start of every member device: which stripe set the
//! device belongs to, at which position, and with which stripe unit. The engine writes
//! it when it formats a stripe and checks it on every open, so that members passed in
//! the wrong order, or from different stripes, are refused instead of mixed up.
//!
//! Layout of the reserved first block ([`IDENTITY_RESERVED_BYTES`]), little-endian:
//!
//! | bytes      | field                                           |
//! |------------|-------------------------------------------------|
//! | 0..8       | magic `b"HKVMEMBR"`                             |
//! | 8..12      | format version (u32), currently 1               |
//! | 12..28     | stripe uuid ([u8; 16])                          |
//! | 28..32     | member index (u32)                              |
//! | 32..36     | member count (u32)                              |
//! | 36..44     | stripe unit bytes (u64)                         |
//! | 44..4092   | zero (room for later versions)                  |
//! | 4092..4096 | crc32c of bytes 0..4092 (u32)                   |
//!
//! An all-zero block means "no identity" (a fresh device). The magic is non-zero, so a
//! valid header is never all zero.

// `x % n != 0` rather than `is_multiple_of`: the workspace MSRV (1.80) predates it.
#![allow(clippy::manual_is_multiple_of)]

use crate::buf::AlignedBuf;
use crate::device::{BlockDevice, IoOp};
use crate::error::{DeviceError, Result};

/// Bytes at the start of each member reserved for the identity header; the striped
/// address space begins after them. One 4 KiB block: the largest logical block we
/// accept, so the header is one aligned write on every device.
pub const IDENTITY_RESERVED_BYTES: u64 = 4096;
/// Encoded size of the header (it fills the reserved block).
pub const IDENTITY_ENCODED_BYTES: usize = IDENTITY_RESERVED_BYTES as usize;
pub const IDENTITY_MAGIC: [u8; 8] = *b"HKVMEMBR";
/// The version this build writes; it reads this and older ones.
pub const IDENTITY_FORMAT_VERSION: u32 = 1;

const FIELDS_END: usize = 44;
const CRC_OFFSET: usize = IDENTITY_ENCODED_BYTES - 4;

const _: () = assert!(FIELDS_END <= CRC_OFFSET);
const _: () = assert!(IDENTITY_RESERVED_BYTES as u32 <= crate::file::LOGICAL_BLOCK_MAX_BYTES);
const _: () = assert!(IDENTITY_RESERVED_BYTES % crate::file::LOGICAL_BLOCK_MAX_BYTES as u64 == 0);

/// One member's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub format_version: u32,
    pub stripe_uuid: [u8; 16],
    pub member_index: u32,
    pub member_count: u32,
    pub stripe_unit_bytes: u64,
}

impl Identity {
    /// The identities of a new stripe of `member_count` members with a fresh random
    /// uuid, in member order.
    pub fn new_stripe(member_count: u32, stripe_unit_bytes: u64) -> Vec<Identity> {
        let stripe_uuid: [u8; 16] = rand::random();
        (0..member_count)
            .map(|member_index| Identity {
                format_version: IDENTITY_FORMAT_VERSION,
                stripe_uuid,
                member_index,
                member_count,
                stripe_unit_bytes,
            })
            .collect()
    }

    /// The uuid as the usual 8-4-4-4-12 hex string (for messages).
    pub fn uuid_string(&self) -> String {
        uuid_string(&self.stripe_uuid)
    }

    fn validate(&self) -> Result<()> {
        if self.member_count == 0 {
            return Err(identity_error("member count is 0".to_string()));
        }
        if self.member_index >= self.member_count {
            return Err(identity_error(format!(
                "member index {} is not below the member count {}",
                self.member_index, self.member_count
            )));
        }
        if self.stripe_unit_bytes == 0 {
            return Err(identity_error("stripe unit is 0 bytes".to_string()));
        }
        Ok(())
    }
}

fn uuid_string(u: &[u8; 16]) -> String {
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn identity_error(reason: String) -> DeviceError {
    DeviceError::Identity { reason }
}

/// Encodes `id` into a full header block.
pub fn encode_identity(id: &Identity) -> Result<[u8; IDENTITY_ENCODED_BYTES]> {
    id.validate()?;
    let mut block = [0u8; IDENTITY_ENCODED_BYTES];
    block[0..8].copy_from_slice(&IDENTITY_MAGIC);
    block[8..12].copy_from_slice(&id.format_version.to_le_bytes());
    block[12..28].copy_from_slice(&id.stripe_uuid);
    block[28..32].copy_from_slice(&id.member_index.to_le_bytes());
    block[32..36].copy_from_slice(&id.member_count.to_le_bytes());
    block[36..44].copy_from_slice(&id.stripe_unit_bytes.to_le_bytes());
    let crc = crc32c::crc32c(&block[..CRC_OFFSET]);
    block[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    Ok(block)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes a header block: `Ok(None)` for an all-zero block (no identity yet), an
/// error for a truncated block, a foreign magic, a checksum mismatch, a newer format
/// version or inconsistent fields.
pub fn decode_identity(block: &[u8]) -> Result<Option<Identity>> {
    if block.len() < IDENTITY_ENCODED_BYTES {
        return Err(identity_error(format!(
            "header truncated: {} bytes, expected {IDENTITY_ENCODED_BYTES}",
            block.len()
        )));
    }
    let block = &block[..IDENTITY_ENCODED_BYTES];
    if block.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    if block[0..8] != IDENTITY_MAGIC {
        return Err(identity_error(format!(
            "not a hashkv stripe member: magic {:02x?}, expected {:02x?} ({:?})",
            &block[0..8],
            IDENTITY_MAGIC,
            std::str::from_utf8(&IDENTITY_MAGIC).unwrap_or("")
        )));
    }
    let stored_crc = le_u32(block, CRC_OFFSET);
    let computed_crc = crc32c::crc32c(&block[..CRC_OFFSET]);
    if stored_crc != computed_crc {
        return Err(identity_error(format!(
            "checksum mismatch: stored {stored_crc:#010x}, computed {computed_crc:#010x} (header corrupted)"
        )));
    }
    let format_version = le_u32(block, 8);
    if format_version == 0 || format_version > IDENTITY_FORMAT_VERSION {
        return Err(identity_error(format!(
            "format version {format_version} is not supported; this build reads versions 1..={IDENTITY_FORMAT_VERSION} (written by a newer hashkv?)"
        )));
    }
    let mut stripe_uuid = [0u8; 16];
    stripe_uuid.copy_from_slice(&block[12..28]);
    let id = Identity {
        format_version,
        stripe_uuid,
        member_index: le_u32(block, 28),
        member_count: le_u32(block, 32),
        stripe_unit_bytes: le_u64(block, 36),
    };
    id.validate()?;
    Ok(Some(id))
}

/// Writes `id` into the device's first block, durably (FUA write, then a flush).
pub fn write_identity(dev: &dyn BlockDevice, id: &Identity) -> Result<()> {
    let encoded = encode_identity(id)?;
    let mut buf = AlignedBuf::new(IDENTITY_ENCODED_BYTES);
    buf[..IDENTITY_ENCODED_BYTES].copy_from_slice(&encoded);
    dev.submit(&mut [IoOp::Write {
        offset: 0,
        buf: &buf[..IDENTITY_ENCODED_BYTES],
        fua: true,
    }])?;
    dev.flush()
}

/// Reads and decodes the device's identity header (`None` if the block is all zero).
pub fn read_identity(dev: &dyn BlockDevice) -> Result<Option<Identity>> {
    let mut buf = AlignedBuf::new(IDENTITY_ENCODED_BYTES);
    dev.read_at(0, &mut buf[..IDENTITY_ENCODED_BYTES])?;
    decode_identity(&buf[..IDENTITY_ENCODED_BYTES])
}

/// Checks that `identities` (one per device, in the order given) form one complete
/// stripe in member order, with the expected stripe unit if one is given.
pub fn check_stripe(
    identities: &[Option<Identity>],
    expected_stripe_unit_bytes: Option<u64>,
) -> Result<()> {
    let given = identities.len();
    if given == 0 {
        return Err(identity_error("no member devices given".to_string()));
    }
    let mut first: Option<(usize, Identity)> = None;
    for (position, id) in identities.iter().enumerate() {
        let Some(id) = id else {
            return Err(identity_error(format!(
                "device {position} has no identity header (never formatted as a stripe member)"
            )));
        };
        if let Some((first_position, f)) = first {
            if id.stripe_uuid != f.stripe_uuid {
                return Err(identity_error(format!(
                    "device {position} belongs to stripe {}, device {first_position} to stripe {}: devices from different stripes",
                    id.uuid_string(),
                    f.uuid_string()
                )));
            }
            if id.stripe_unit_bytes != f.stripe_unit_bytes || id.member_count != f.member_count {
                return Err(identity_error(format!(
                    "device {position} says {} members with {}-byte units, device {first_position} says {} members with {}-byte units",
                    id.member_count, id.stripe_unit_bytes, f.member_count, f.stripe_unit_bytes
                )));
            }
        } else {
            first = Some((position, *id));
        }
        if id.member_count as usize != given {
            return Err(identity_error(format!(
                "stripe {} has {} members but {given} devices were given",
                id.uuid_string(),
                id.member_count
            )));
        }
        if id.member_index as usize != position {
            return Err(identity_error(format!(
                "device {position} is member {} of stripe {}: pass the devices in member order",
                id.member_index,
                id.uuid_string()
            )));
        }
        if let Some(unit) = expected_stripe_unit_bytes {
            if id.stripe_unit_bytes != unit {
                return Err(identity_error(format!(
                    "device {position} was formatted with {}-byte stripe units, expected {unit}",
                    id.stripe_unit_bytes
                )));
            }
        }
    }
    Ok(())
}

/// Reads every member's header and checks they form one stripe in order; returns the
/// identities.
pub fn read_and_check_stripe(
    members: &[std::sync::Arc<dyn BlockDevice>],
    expected_stripe_unit_bytes: Option<u64>,
) -> Result<Vec<Identity>> {
    let ids = members
        .iter()
        .map(|m| read_identity(m.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    check_stripe(&ids, expected_stripe_unit_bytes)?;
    Ok(ids.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn sample() -> Identity {
        Identity {
            format_version: IDENTITY_FORMAT_VERSION,
            stripe_uuid: *b"0123456789abcdef",
            member_index: 1,
            member_count: 3,
            stripe_unit_bytes: 64 << 20,
        }
    }

    #[test]
    fn round_trip() {
        let id = sample();
        let block = encode_identity(&id).unwrap();
        assert_eq!(decode_identity(&block).unwrap(), Some(id));
        // A longer input (a whole device read) decodes the same.
        let mut longer = block.to_vec();
        longer.extend_from_slice(&[0xAB; 512]);
        assert_eq!(decode_identity(&longer).unwrap(), Some(id));
    }

    #[test]
    fn zero_block_is_none() {
        assert_eq!(
            decode_identity(&[0u8; IDENTITY_ENCODED_BYTES]).unwrap(),
            None
        );
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let block = encode_identity(&sample()).unwrap();
        for bit in 0..IDENTITY_ENCODED_BYTES * 8 {
            let mut b = block;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_identity(&b).is_err(), "bit {bit} flip not detected");
        }
    }

    #[test]
    fn newer_version_refused_with_clear_message() {
        let mut id = sample();
        id.format_version = IDENTITY_FORMAT_VERSION + 1;
        let block = encode_identity(&id).unwrap();
        let err = decode_identity(&block).unwrap_err().to_string();
        assert!(err.contains("format version 2"), "{err}");
    }

    #[test]
    fn invalid_fields_refused() {
        let mut id = sample();
        id.member_index = 3;
        assert!(encode_identity(&id).is_err());
        id.member_index = 0;
        id.member_count = 0;
        assert!(encode_identity(&id).is_err());
        id.member_count = 1;
        id.stripe_unit_bytes = 0;
        assert!(encode_identity(&id).is_err());
    }

    #[test]
    fn garbage_and_truncated_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let valid = encode_identity(&sample()).unwrap();
        for i in 0..5000 {
            let len = if i % 2 == 0 {
                IDENTITY_ENCODED_BYTES
            } else {
                rng.gen_range(0..IDENTITY_ENCODED_BYTES)
            };
            let mut bytes = vec![0u8; len];
            match i % 3 {
                0 => rng.fill(&mut bytes[..]),
                // A valid header, truncated or with random bytes overwritten.
                _ => {
                    bytes.copy_from_slice(&valid[..len]);
                    for _ in 0..rng.gen_range(1..8) {
                        if len > 0 {
                            let at = rng.gen_range(0..len);
                            bytes[at] = bytes[at].wrapping_add(rng.gen_range(1..=255));
                        }
                    }
                }
            }
            if bytes.iter().all(|&b| b == 0) && len == IDENTITY_ENCODED_BYTES {
                continue;
            }
            let r = decode_identity(&bytes);
            assert!(
                r.is_err(),
                "case {i}: garbage of {len} bytes decoded as {r:?}"
            );
        }
        // Garbage with the right magic and a correct checksum but nonsense fields.
        for _ in 0..1000 {
            let mut b = [0u8; IDENTITY_ENCODED_BYTES];
            rng.fill(&mut b[..FIELDS_END]);
            b[0..8].copy_from_slice(&IDENTITY_MAGIC);
            let crc = crc32c::crc32c(&b[..CRC_OFFSET]);
            b[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
            // Must not panic; may only succeed if the fields happen to be valid.
            if let Ok(Some(id)) = decode_identity(&b) {
                assert!(id.member_index < id.member_count);
                assert!(id.format_version == IDENTITY_FORMAT_VERSION);
            }
        }
    }

    #[test]
    fn stripe_check_messages() {
        let ids: Vec<Option<Identity>> = Identity::new_stripe(3, 1 << 20)
            .into_iter()
            .map(Some)
            .collect();
        check_stripe(&ids, Some(1 << 20)).unwrap();

        let mut swapped = ids.clone();
        swapped.swap(0, 2);
        let e = check_stripe(&swapped, None).unwrap_err().to_string();
        assert!(e.contains("member order"), "{e}");

        let e = check_stripe(&ids[..2], None).unwrap_err().to_string();
        assert!(e.contains("has 3 members but 2 devices"), "{e}");

        let other = Identity::new_stripe(3, 1 << 20);
        let mut mixed = ids.clone();
        mixed[1] = Some(other[1]);
        let e = check_stripe(&mixed, None).unwrap_err().to_string();
        assert!(e.contains("different stripes"), "{e}");

        let mut missing = ids.clone();
        missing[2] = None;
        let e = check_stripe(&missing, None).unwrap_err().to_string();
        assert!(e.contains("device 2 has no identity header"), "{e}");

        let e = check_stripe(&ids, Some(2 << 20)).unwrap_err().to_string();
        assert!(e.contains("expected 2097152"), "{e}");

        assert!(check_stripe(&[], None).is_err());
    }
}
