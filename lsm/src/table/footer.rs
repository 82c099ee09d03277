//! The fixed-size footer at the end of every table file:
//! index handle (offset u64, size u64) | filter handle (offset u64, size u64) |
//! entry count (u64) | format version (u32) | masked crc32c of the preceding 44 bytes
//! (u32) | magic (u64). All little-endian.

use crate::coding::{masked_crc, Reader};
use crate::error::{LsmError, Result};

pub(crate) const FOOTER_BYTES: usize = 56;
pub(crate) const TABLE_MAGIC: u64 = u64::from_le_bytes(*b"hkvlSST\x01");
/// 2: filters are blocked (`filter.rs`); tables of format 1 (flat filters) are read.
pub(crate) const TABLE_FORMAT_VERSION: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockHandle {
    pub offset: u64,
    /// Payload bytes, without the checksum trailer.
    pub size: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Footer {
    pub index: BlockHandle,
    pub filter: BlockHandle,
    pub entry_count: u64,
    pub version: u32,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_BYTES] {
        let mut out = [0u8; FOOTER_BYTES];
        let fields = [
            self.index.offset,
            self.index.size,
            self.filter.offset,
            self.filter.size,
            self.entry_count,
        ];
        for (i, f) in fields.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&f.to_le_bytes());
        }
        out[40..44].copy_from_slice(&self.version.to_le_bytes());
        let crc = masked_crc(&out[..44]);
        out[44..48].copy_from_slice(&crc.to_le_bytes());
        out[48..56].copy_from_slice(&TABLE_MAGIC.to_le_bytes());
        out
    }

    /// Decodes and validates against the file size (handles must lie before the footer).
    /// A newer version is reported as such by the caller (`version` is returned as found).
    pub fn decode(buf: &[u8], file_bytes: u64) -> Result<Footer> {
        if buf.len() != FOOTER_BYTES {
            return Err(LsmError::corrupt(format!(
                "footer: expected {FOOTER_BYTES} bytes, found {}",
                buf.len()
            )));
        }
        let mut r = Reader::new(buf);
        let index = BlockHandle {
            offset: r.u64()?,
            size: r.u64()?,
        };
        let filter = BlockHandle {
            offset: r.u64()?,
            size: r.u64()?,
        };
        let entry_count = r.u64()?;
        let version = r.u32()?;
        let crc = r.u32()?;
        let magic = r.u64()?;
        if magic != TABLE_MAGIC {
            return Err(LsmError::corrupt(format!(
                "table magic: expected {TABLE_MAGIC:#018x}, found {magic:#018x}"
            )));
        }
        let expected = masked_crc(&buf[..44]);
        if crc != expected {
            return Err(LsmError::ChecksumMismatch {
                file: Default::default(),
                offset: 44,
                expected,
                found: crc,
            });
        }
        let body_end = file_bytes.saturating_sub(FOOTER_BYTES as u64);
        for (name, h) in [("index", index), ("filter", filter)] {
            let end = h.offset.checked_add(h.size).and_then(|e| e.checked_add(4));
            if end.is_none_or(|e| e > body_end) {
                return Err(LsmError::corrupt(format!(
                    "{name} handle {}+{} lies outside the {body_end} bytes before the footer",
                    h.offset, h.size
                )));
            }
        }
        Ok(Footer {
            index,
            filter,
            entry_count,
            version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_damage() {
        let f = Footer {
            index: BlockHandle {
                offset: 100,
                size: 20,
            },
            filter: BlockHandle {
                offset: 50,
                size: 40,
            },
            entry_count: 7,
            version: TABLE_FORMAT_VERSION,
        };
        let e = f.encode();
        assert_eq!(Footer::decode(&e, 200).unwrap(), f);
        assert!(Footer::decode(&e, 150).is_err(), "handles beyond the file");
        for i in 0..FOOTER_BYTES {
            let mut d = e;
            d[i] ^= 0x10;
            assert!(Footer::decode(&d, 200).is_err(), "flip at {i}");
        }
    }
}
