//! Framing of WAL records and the WAL file header.

use crate::coding::{masked_crc, masked_crc_parts, Reader};
use crate::error::{LsmError, Result};

pub(crate) const WAL_MAGIC: u64 = u64::from_le_bytes(*b"hkvlWAL\x01");
pub(crate) const WAL_FORMAT_VERSION: u32 = 1;
pub(crate) const WAL_HEADER_BYTES: usize = 16;
pub(crate) const RECORD_HEADER_BYTES: usize = 8;
/// A batch larger than this is refused: recovery reads a record whole, so a corrupt
/// length must not make it allocate without bound.
pub(crate) const RECORD_PAYLOAD_BYTES_MAX: usize = 256 << 20;

pub(crate) fn encode_header() -> [u8; WAL_HEADER_BYTES] {
    let mut h = [0u8; WAL_HEADER_BYTES];
    h[..8].copy_from_slice(&WAL_MAGIC.to_le_bytes());
    h[8..12].copy_from_slice(&WAL_FORMAT_VERSION.to_le_bytes());
    let crc = masked_crc(&h[..12]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Ok(version) for a header of ours; the caller refuses versions it does not know.
pub(crate) fn decode_header(buf: &[u8]) -> Result<u32> {
    let mut r = Reader::new(buf);
    let magic = r.u64()?;
    let version = r.u32()?;
    let crc = r.u32()?;
    if magic != WAL_MAGIC {
        return Err(LsmError::corrupt(format!(
            "WAL magic: expected {WAL_MAGIC:#018x}, found {magic:#018x}"
        )));
    }
    let expected = masked_crc(&buf[..12]);
    if crc != expected {
        return Err(LsmError::ChecksumMismatch {
            file: Default::default(),
            offset: 12,
            expected,
            found: crc,
        });
    }
    Ok(version)
}

pub(crate) fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&record_header(&[payload]));
    out.extend_from_slice(payload);
}

/// The header (checksum, length) of a record whose payload is `parts` one after
/// another, so that a payload need not be copied together to be written.
pub(crate) fn record_header(parts: &[&[u8]]) -> [u8; RECORD_HEADER_BYTES] {
    let payload_len: usize = parts.iter().map(|p| p.len()).sum();
    assert!(payload_len > 0 && payload_len <= RECORD_PAYLOAD_BYTES_MAX);
    let len = (payload_len as u32).to_le_bytes();
    let crc = masked_crc_parts(std::iter::once(&len[..]).chain(parts.iter().copied()));
    let mut header = [0u8; RECORD_HEADER_BYTES];
    header[..4].copy_from_slice(&crc.to_le_bytes());
    header[4..].copy_from_slice(&len);
    header
}

/// Decodes the record at the start of `buf`: Ok((payload, bytes consumed)).
pub(crate) fn decode_record(buf: &[u8]) -> Result<(&[u8], usize)> {
    let mut r = Reader::new(buf);
    let crc = r.u32()?;
    let len_bytes = r.bytes(4)?;
    let len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
    if len == 0 || len > RECORD_PAYLOAD_BYTES_MAX {
        return Err(LsmError::corrupt(format!(
            "WAL record length {len} out of range"
        )));
    }
    let payload = r.bytes(len)?;
    let expected = masked_crc_parts([len_bytes, payload]);
    if crc != expected {
        return Err(LsmError::ChecksumMismatch {
            file: Default::default(),
            offset: 0,
            expected,
            found: crc,
        });
    }
    Ok((payload, RECORD_HEADER_BYTES + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_every_truncation_fails() {
        let mut buf = Vec::new();
        encode_record(b"hello world", &mut buf);
        let (p, n) = decode_record(&buf).unwrap();
        assert_eq!((p, n), (&b"hello world"[..], buf.len()));
        for cut in 0..buf.len() {
            assert!(decode_record(&buf[..cut]).is_err());
        }
        assert!(
            decode_record(&[0u8; 64]).is_err(),
            "an all-zero frame is never valid"
        );
    }
}
