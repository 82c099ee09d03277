//! What the LSM tree holds for a user key: the value itself (selective separation)
//! or where its record lies in the value store, and in which region.
//!
//! ```text
//! inline:              0x01, value bytes
//! pointer, segments:   0x02, segment u32, offset u32, record length u32, sequence u64, crc u32
//! pointer, value log:  0x03, chunk u32,   offset u32, record length u32, sequence u64, crc u32
//! pointer, cold log:   0x04, segment u32, offset u32, record length u32, sequence u64, crc u32
//! ```
//! (little-endian; a pointer is 25 bytes). The crc is the record's own checksum: a get
//! reads the value's sectors alone, without the record's header, and checks them with
//! it (`record::value_record_crc`).

use crate::error::{Error, Result};

const TAG_INLINE: u8 = 1;
const TAG_SEGMENTS: u8 = 2;
const TAG_LOG: u8 = 3;
const TAG_COLD: u8 = 4;
pub const POINTER_BYTES: usize = 25;

/// The value region a pointer points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// The hashkv mode's segments (main and log segments); `unit` is a segment id.
    Segments,
    /// The vlog mode's circular value log; `unit` is a chunk of the log.
    Log,
    /// The hashkv mode's cold data log; `unit` is a (log) segment id.
    Cold,
}

/// Where a record lies. `seq` lets a reader check that the record it read is exactly
/// the version the index pointed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointer {
    pub region: Region,
    /// A segment id or a chunk number, as `region` says.
    pub unit: u32,
    /// Byte offset of the record within its unit.
    pub offset: u32,
    pub record_bytes: u32,
    pub seq: u64,
    /// The record's checksum (its header's crc field), which covers the key, the
    /// sequence number and the value.
    pub crc: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Inline(Vec<u8>),
    Pointer(Pointer),
}

/// The index entry of an inline value, into `out`, replacing what it held: one buffer
/// serves every inline value of a flush, instead of an allocation per value.
pub fn encode_inline_into<'o>(out: &'o mut Vec<u8>, value: &[u8]) -> &'o [u8] {
    out.clear();
    out.push(TAG_INLINE);
    out.extend_from_slice(value);
    out
}

impl Pointer {
    pub fn encode(&self) -> [u8; POINTER_BYTES] {
        let mut out = [0u8; POINTER_BYTES];
        out[0] = match self.region {
            Region::Segments => TAG_SEGMENTS,
            Region::Log => TAG_LOG,
            Region::Cold => TAG_COLD,
        };
        out[1..5].copy_from_slice(&self.unit.to_le_bytes());
        out[5..9].copy_from_slice(&self.offset.to_le_bytes());
        out[9..13].copy_from_slice(&self.record_bytes.to_le_bytes());
        out[13..21].copy_from_slice(&self.seq.to_le_bytes());
        out[21..25].copy_from_slice(&self.crc.to_le_bytes());
        out
    }
}

/// Decodes an index entry. Never panics on garbage.
pub fn decode(bytes: &[u8]) -> Result<Location> {
    let region = match bytes.first() {
        Some(&TAG_INLINE) => return Ok(Location::Inline(bytes[1..].to_vec())),
        Some(&TAG_SEGMENTS) => Region::Segments,
        Some(&TAG_LOG) => Region::Log,
        Some(&TAG_COLD) => Region::Cold,
        other => {
            return Err(Error::corrupt(
                "index entry",
                "tag 1 (inline value), 2, 3 or 4 (pointer)",
                format!("tag {other:?}"),
            ))
        }
    };
    if bytes.len() != POINTER_BYTES {
        return Err(Error::corrupt(
            "index pointer",
            format!("{POINTER_BYTES} bytes"),
            format!("{} bytes", bytes.len()),
        ));
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    Ok(Location::Pointer(Pointer {
        region,
        unit: u32_at(1),
        offset: u32_at(5),
        record_bytes: u32_at(9),
        seq: u64::from_le_bytes(bytes[13..21].try_into().expect("8 bytes")),
        crc: u32_at(21),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        for region in [Region::Segments, Region::Log, Region::Cold] {
            let p = Pointer {
                region,
                unit: 3,
                offset: 8192,
                record_bytes: 1044,
                seq: 99,
                crc: 0xdead_beef,
            };
            assert_eq!(decode(&p.encode()).unwrap(), Location::Pointer(p));
        }
        assert_eq!(
            decode(encode_inline_into(&mut Vec::new(), b"abc")).unwrap(),
            Location::Inline(b"abc".to_vec())
        );
        assert!(decode(&[]).is_err());
        assert!(decode(&[TAG_SEGMENTS, 1, 2]).is_err());
        assert!(decode(&[TAG_LOG, 1, 2]).is_err());
        // A pointer of the previous format (21 bytes, no crc) is refused, not misread.
        assert!(decode(&[TAG_COLD; 21]).is_err());
        assert!(decode(&[7, 1, 2]).is_err());
    }
}
