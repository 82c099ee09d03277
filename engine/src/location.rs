//! What the LSM tree holds for a user key: the value itself (selective separation)
//! or where its record lies in the value store.
//!
//! ```text
//! inline:  0x01, value bytes
//! pointer: 0x02, segment u32, offset u32, record length u32, sequence u64   (LE, 21 bytes)
//! ```

use crate::error::{Error, Result};

const TAG_INLINE: u8 = 1;
const TAG_POINTER: u8 = 2;
pub const POINTER_BYTES: usize = 21;

/// Where a record lies. `seq` lets a reader check that the record it read is exactly
/// the version the index pointed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointer {
    pub segment: u32,
    pub offset: u32,
    pub record_bytes: u32,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Inline(Vec<u8>),
    Pointer(Pointer),
}

pub fn encode_inline(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + value.len());
    out.push(TAG_INLINE);
    out.extend_from_slice(value);
    out
}

impl Pointer {
    pub fn encode(&self) -> [u8; POINTER_BYTES] {
        let mut out = [0u8; POINTER_BYTES];
        out[0] = TAG_POINTER;
        out[1..5].copy_from_slice(&self.segment.to_le_bytes());
        out[5..9].copy_from_slice(&self.offset.to_le_bytes());
        out[9..13].copy_from_slice(&self.record_bytes.to_le_bytes());
        out[13..21].copy_from_slice(&self.seq.to_le_bytes());
        out
    }
}

pub fn decode(bytes: &[u8]) -> Result<Location> {
    match bytes.first() {
        Some(&TAG_INLINE) => Ok(Location::Inline(bytes[1..].to_vec())),
        Some(&TAG_POINTER) if bytes.len() == POINTER_BYTES => Ok(Location::Pointer(Pointer {
            segment: u32::from_le_bytes(bytes[1..5].try_into().unwrap()),
            offset: u32::from_le_bytes(bytes[5..9].try_into().unwrap()),
            record_bytes: u32::from_le_bytes(bytes[9..13].try_into().unwrap()),
            seq: u64::from_le_bytes(bytes[13..21].try_into().unwrap()),
        })),
        _ => Err(Error::Corruption {
            what: format!(
                "index entry of {} bytes with tag {:?} is neither an inline value nor a pointer",
                bytes.len(),
                bytes.first()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let p = Pointer {
            segment: 3,
            offset: 8192,
            record_bytes: 1044,
            seq: 99,
        };
        assert_eq!(decode(&p.encode()).unwrap(), Location::Pointer(p));
        assert_eq!(
            decode(&encode_inline(b"abc")).unwrap(),
            Location::Inline(b"abc".to_vec())
        );
        assert!(decode(&[]).is_err());
        assert!(decode(&[TAG_POINTER, 1, 2]).is_err());
        assert!(decode(&[7, 1, 2]).is_err());
    }
}
