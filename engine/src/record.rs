//! Value records, as they lie in segments (see FORMAT.md).
//!
//! ```text
//! offset size
//!  0     1   tag: 0xB0 | record format version (1); never zero
//!  1     1   kind: 1 value, 2 tombstone, 3 cold tag (value: a ColdTag)
//!  2     2   key length (LE)
//!  4     4   value length (LE)
//!  8     8   sequence number (LE)
//! 16     4   crc32c of bytes 0..16, key and value, xor CRC_MASK
//! 20     -   key, then value
//! ```
//! Records are packed back to back and may cross block boundaries; a batch continues
//! right after the previous one's last record. A record's first byte is never zero, so
//! a zero byte where a record could start is padding (the zeros after a batch written
//! up to a block boundary, the rest of a vlog chunk, or the zeros put before a record
//! so that its value starts on a sector: `align.rs`), unambiguously: the reader skips
//! zeros to the next record.

use crate::error::{Error, Result};

pub const RECORD_HEADER_BYTES: usize = 20;
pub const RECORD_FORMAT_VERSION: u8 = 1;
/// High nibble of a record's first byte; the low nibble is the format version.
const TAG_HIGH: u8 = 0xB0;
const CRC_MASK: u32 = 0xa282_ead8;
const CRC_AT: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Value,
    Tombstone,
    /// A cold key's mark in its group: the value lives in the cold log, at the place
    /// the record's value bytes name ([`ColdTag`]).
    ColdTag,
}

impl RecordKind {
    fn code(self) -> u8 {
        match self {
            RecordKind::Value => 1,
            RecordKind::Tombstone => 2,
            RecordKind::ColdTag => 3,
        }
    }

    fn from_code(code: u8) -> Option<RecordKind> {
        match code {
            1 => Some(RecordKind::Value),
            2 => Some(RecordKind::Tombstone),
            3 => Some(RecordKind::ColdTag),
            _ => None,
        }
    }
}

/// Where a cold key's value lies: the body of a cold tag record.
///
/// ```text
/// segment u32, epoch u32, offset u32, record bytes u32, record crc u32, flags u8
/// ```
/// (LE, 21 bytes). The record's checksum goes with its place, so that an index pointer
/// made from the tag can check a read of the value alone (`location::Pointer::crc`).
/// `epoch` names the cold segment's incarnation: a segment freed and taken again by
/// the cold log gets a new one, so a stale tag never names a new record. Flag bit 0
/// (`relocated`): a cold GC copied the value here and the index may still point at
/// the old copy; the group's next GC points it here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ColdTag {
    pub segment: u32,
    pub epoch: u32,
    pub offset: u32,
    pub record_bytes: u32,
    /// The cold record's checksum, as its header holds it.
    pub crc: u32,
    pub relocated: bool,
}

pub const COLD_TAG_BYTES: usize = 21;
const COLD_TAG_RELOCATED: u8 = 1;

impl ColdTag {
    pub fn encode(&self) -> [u8; COLD_TAG_BYTES] {
        let mut out = [0u8; COLD_TAG_BYTES];
        out[0..4].copy_from_slice(&self.segment.to_le_bytes());
        out[4..8].copy_from_slice(&self.epoch.to_le_bytes());
        out[8..12].copy_from_slice(&self.offset.to_le_bytes());
        out[12..16].copy_from_slice(&self.record_bytes.to_le_bytes());
        out[16..20].copy_from_slice(&self.crc.to_le_bytes());
        out[20] = if self.relocated {
            COLD_TAG_RELOCATED
        } else {
            0
        };
        out
    }

    /// The tag a record carries; `None` unless it is a well-formed cold tag (decode
    /// checks the size).
    pub fn of(rec: &RecordRef<'_>) -> Option<ColdTag> {
        if rec.kind != RecordKind::ColdTag || rec.value.len() != COLD_TAG_BYTES {
            return None;
        }
        let u32_at =
            |i: usize| u32::from_le_bytes(rec.value[i..i + 4].try_into().expect("4 bytes"));
        Some(ColdTag {
            segment: u32_at(0),
            epoch: u32_at(4),
            offset: u32_at(8),
            record_bytes: u32_at(12),
            crc: u32_at(16),
            relocated: rec.value[20] & COLD_TAG_RELOCATED != 0,
        })
    }
}

/// A decoded record borrowing from the buffer it was read into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub kind: RecordKind,
    pub seq: u64,
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// The checksum its header holds (and `decode` checked): index pointers carry it.
    pub crc: u32,
    /// The whole record as read: header, key and value.
    pub bytes: &'a [u8],
}

impl RecordRef<'_> {
    pub fn encoded_len(&self) -> usize {
        encoded_len(self.key.len(), self.value.len())
    }
}

pub fn encoded_len(key_len: usize, value_len: usize) -> usize {
    RECORD_HEADER_BYTES + key_len + value_len
}

/// Appends one record to `out`.
#[cfg(test)]
pub fn encode(out: &mut Vec<u8>, kind: RecordKind, seq: u64, key: &[u8], value: &[u8]) {
    let start = out.len();
    out.resize(start + encoded_len(key.len(), value.len()), 0);
    encode_into(&mut out[start..], kind, seq, key, value);
}

/// A record's encoded length and checksum (what an index pointer to it carries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    pub len: usize,
    pub crc: u32,
}

/// Writes one record at the start of `out` (at least `encoded_len` bytes), so that a
/// flush can encode straight into its aligned device buffer.
pub fn encode_into(
    out: &mut [u8],
    kind: RecordKind,
    seq: u64,
    key: &[u8],
    value: &[u8],
) -> Encoded {
    debug_assert!(!key.is_empty() && key.len() <= u16::MAX as usize);
    debug_assert!(value.len() <= u32::MAX as usize);
    debug_assert!(kind != RecordKind::Tombstone || value.is_empty());
    debug_assert!(kind != RecordKind::ColdTag || value.len() == COLD_TAG_BYTES);
    let len = encoded_len(key.len(), value.len());
    let rec = &mut out[..len];
    rec[..CRC_AT].copy_from_slice(&header_start(kind, seq, key.len(), value.len()));
    rec[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + key.len()].copy_from_slice(key);
    rec[RECORD_HEADER_BYTES + key.len()..].copy_from_slice(value);
    let crc = record_crc(rec);
    rec[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    Encoded { len, crc }
}

/// Writes one value record's header and key at the start of `out` (at least
/// `encoded_len(key.len(), 0)` bytes) and returns its checksum, from `value_crc`
/// (crc32c of the `value_len` bytes of the value) without reading the value: its
/// bytes follow in the device write from the write cache's buffer
/// (`record_write.rs`).
pub fn encode_head_into(
    out: &mut [u8],
    seq: u64,
    key: &[u8],
    value_len: usize,
    value_crc: u32,
) -> u32 {
    debug_assert!(!key.is_empty() && key.len() <= u16::MAX as usize);
    debug_assert!(value_len <= u32::MAX as usize);
    let head = header_start(RecordKind::Value, seq, key.len(), value_len);
    let head_crc = crc32c::crc32c_append(crc32c::crc32c(&head), key);
    let crc = crate::crc_combine::combine(head_crc, value_crc, value_len) ^ CRC_MASK;
    out[..CRC_AT].copy_from_slice(&head);
    out[CRC_AT..RECORD_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    out[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + key.len()].copy_from_slice(key);
    crc
}

/// A header's bytes before its checksum: tag, kind, lengths, sequence number.
fn header_start(kind: RecordKind, seq: u64, key_len: usize, value_len: usize) -> [u8; CRC_AT] {
    let mut h = [0u8; CRC_AT];
    h[0] = TAG_HIGH | RECORD_FORMAT_VERSION;
    h[1] = kind.code();
    h[2..4].copy_from_slice(&(key_len as u16).to_le_bytes());
    h[4..8].copy_from_slice(&(value_len as u32).to_le_bytes());
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h
}

/// crc32c over a whole encoded record except its crc field.
fn record_crc(record: &[u8]) -> u32 {
    checksum(&record[..CRC_AT], &[&record[RECORD_HEADER_BYTES..]])
}

/// A record's checksum from its header's bytes before the crc field and the bytes
/// after the header, in parts.
fn checksum(head: &[u8], rest: &[&[u8]]) -> u32 {
    let crc = rest.iter().fold(crc32c::crc32c(head), |crc, part| {
        crc32c::crc32c_append(crc, part)
    });
    crc ^ CRC_MASK
}

/// The checksum of the value record of `key` with sequence number `seq` holding
/// `value`, computed without its header: a read of the value's sectors alone
/// (`read.rs`) checks it against the one its index pointer carries, which covers the
/// header's fields, the key and the value as the record's own checksum does.
pub fn value_record_crc(seq: u64, key: &[u8], value: &[u8]) -> u32 {
    let head = header_start(RecordKind::Value, seq, key.len(), value.len());
    checksum(&head, &[key, value])
}

/// Where a value record's value begins, from the record's start.
pub fn value_offset(key_len: usize) -> usize {
    RECORD_HEADER_BYTES + key_len
}

/// Recomputes the checksum of the record at the start of `buf` in place, when the
/// lengths its header gives fit in `buf` (the fuzz targets' `decoders::reseal`).
pub fn reseal(buf: &mut [u8]) {
    if buf.len() < RECORD_HEADER_BYTES {
        return;
    }
    let key_len = u16::from_le_bytes([buf[2], buf[3]]) as usize;
    let value_len = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes")) as usize;
    let total = encoded_len(key_len, value_len);
    if total > buf.len() {
        return;
    }
    let crc = record_crc(&buf[..total]);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
}

/// What lies at a position of a segment.
#[derive(Debug)]
pub enum Slot<'a> {
    Record(RecordRef<'a>),
    /// Zero padding up to the next record.
    Padding,
}

/// Decodes the record at the start of `buf`. Never panics on garbage.
pub fn decode(buf: &[u8]) -> Result<Slot<'_>> {
    match buf.first() {
        None | Some(0) => return Ok(Slot::Padding),
        Some(_) => {}
    }
    if buf.len() < RECORD_HEADER_BYTES {
        return Err(corrupt(
            format!("a {RECORD_HEADER_BYTES}-byte header"),
            format!("{} bytes", buf.len()),
        ));
    }
    let header = &buf[..RECORD_HEADER_BYTES];
    if header[0] & 0xF0 != TAG_HIGH {
        return Err(corrupt(
            format!("tag {:#04x}", TAG_HIGH | RECORD_FORMAT_VERSION),
            format!("{:#04x}", header[0]),
        ));
    }
    let version = header[0] & 0x0F;
    if version != RECORD_FORMAT_VERSION {
        return Err(corrupt(
            format!("format version {RECORD_FORMAT_VERSION}"),
            format!("version {version}"),
        ));
    }
    let kind = RecordKind::from_code(header[1]).ok_or_else(|| {
        corrupt(
            "kind 1 (value), 2 (tombstone) or 3 (cold tag)".into(),
            format!("kind {}", header[1]),
        )
    })?;
    let key_len = u16::from_le_bytes([header[2], header[3]]) as usize;
    let value_len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    if key_len == 0 {
        return Err(corrupt("a non-empty key".into(), "key length 0".into()));
    }
    let total = RECORD_HEADER_BYTES + key_len + value_len;
    if total > buf.len() {
        return Err(corrupt(
            format!("at most {} bytes", buf.len()),
            format!("a record of {total} bytes"),
        ));
    }
    let stored = u32::from_le_bytes(header[CRC_AT..CRC_AT + 4].try_into().expect("4 bytes"));
    let computed = record_crc(&buf[..total]);
    if stored != computed {
        return Err(Error::ChecksumMismatch {
            what: "value record",
            stored,
            computed,
        });
    }
    let key = &buf[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + key_len];
    let value = &buf[RECORD_HEADER_BYTES + key_len..total];
    if kind == RecordKind::Tombstone && !value.is_empty() {
        return Err(corrupt(
            "a tombstone without a value".into(),
            format!("a tombstone with {} value bytes", value.len()),
        ));
    }
    if kind == RecordKind::ColdTag && value.len() != COLD_TAG_BYTES {
        return Err(corrupt(
            format!("a cold tag of {COLD_TAG_BYTES} bytes"),
            format!("a cold tag of {} bytes", value.len()),
        ));
    }
    Ok(Slot::Record(RecordRef {
        kind,
        seq,
        key,
        value,
        crc: stored,
        bytes: &buf[..total],
    }))
}

fn corrupt(expected: String, found: String) -> Error {
    Error::corrupt("value record", expected, found)
}

/// Walks the records of a segment's used part, skipping padding: zero bytes up to the
/// next record (a record's first byte is never zero).
pub struct SegmentRecords<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> SegmentRecords<'a> {
    #[cfg(test)]
    pub fn new(used: &'a [u8]) -> SegmentRecords<'a> {
        SegmentRecords { buf: used, pos: 0 }
    }

    /// Starts at `pos` (a record boundary or padding) of a buffer; offsets returned
    /// are from the buffer's start.
    pub fn new_at(used: &'a [u8], pos: usize) -> SegmentRecords<'a> {
        SegmentRecords { buf: used, pos }
    }
}

impl<'a> Iterator for SegmentRecords<'a> {
    /// (offset in the segment, record)
    type Item = Result<(usize, RecordRef<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.pos >= self.buf.len() {
                return None;
            }
            match decode(&self.buf[self.pos..]) {
                Ok(Slot::Padding) => {
                    let rest = &self.buf[self.pos..];
                    self.pos += rest.iter().position(|&b| b != 0).unwrap_or(rest.len());
                }
                Ok(Slot::Record(r)) => {
                    let at = self.pos;
                    self.pos += r.encoded_len();
                    return Some(Ok((at, r)));
                }
                Err(e) => {
                    let at = self.pos;
                    self.pos = self.buf.len();
                    return Some(Err(e.at(format!("offset {at}"))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn round_trip_and_padding() {
        let mut buf = Vec::new();
        encode(&mut buf, RecordKind::Value, 7, b"key1", b"value one");
        encode(&mut buf, RecordKind::Tombstone, 8, b"key2", b"");
        buf.resize(4096, 0);
        encode(&mut buf, RecordKind::Value, 9, b"k3", &[5u8; 5000]);
        let recs: Vec<_> = SegmentRecords::new(&buf).map(|r| r.unwrap()).collect();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].1.key, b"key1");
        assert_eq!(recs[0].1.value, b"value one");
        assert_eq!(recs[1].1.kind, RecordKind::Tombstone);
        assert_eq!(recs[2].0, 4096);
        assert_eq!(recs[2].1.seq, 9);
        assert_eq!(recs[2].1.value.len(), 5000);
    }

    #[test]
    fn zeros_of_any_length_before_a_record_are_padding() {
        let mut buf = Vec::new();
        encode(&mut buf, RecordKind::Value, 1, b"a", b"one");
        let first_end = buf.len();
        buf.resize(first_end + 37, 0);
        encode(&mut buf, RecordKind::Value, 2, b"b", &[9u8; 700]);
        let recs: Vec<_> = SegmentRecords::new(&buf).map(|r| r.unwrap()).collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].0, first_end + 37);
        // Zeros to the end of the buffer are padding too, not an error.
        buf.resize(buf.len() + 11, 0);
        assert_eq!(SegmentRecords::new(&buf).count(), 2);
    }

    #[test]
    fn a_head_encoded_apart_from_its_value_is_the_records_head() {
        let value: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mut whole = vec![0u8; encoded_len(3, value.len())];
        let encoded = encode_into(&mut whole, RecordKind::Value, 77, b"key", &value);
        let mut head = vec![0u8; encoded_len(3, 0)];
        let crc = encode_head_into(&mut head, 77, b"key", value.len(), crc32c::crc32c(&value));
        assert_eq!(crc, encoded.crc);
        assert_eq!(head, whole[..head.len()]);
        assert_eq!(crc, value_record_crc(77, b"key", &value));
    }

    #[test]
    fn the_value_alone_checks_against_the_record_checksum() {
        let mut out = vec![0u8; encoded_len(3, 50)];
        let enc = encode_into(&mut out, RecordKind::Value, 77, b"key", &[3u8; 50]);
        assert_eq!(enc.len, out.len());
        let Slot::Record(r) = decode(&out).unwrap() else {
            panic!("a record")
        };
        assert_eq!(r.crc, enc.crc);
        let value = &out[value_offset(3)..];
        assert_eq!(value_record_crc(77, b"key", value), enc.crc);
        assert_ne!(value_record_crc(78, b"key", value), enc.crc);
        assert_ne!(value_record_crc(77, b"kez", value), enc.crc);
        assert_ne!(value_record_crc(77, b"key", &value[1..]), enc.crc);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode(
            &mut buf,
            RecordKind::Value,
            42,
            b"some key",
            b"some value bytes",
        );
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            match decode(&b) {
                Ok(Slot::Record(r)) => {
                    panic!("flip of bit {bit} decoded as {r:?}")
                }
                Ok(Slot::Padding) => panic!("flip of bit {bit} read as padding"),
                Err(_) => {}
            }
        }
    }

    #[test]
    fn garbage_never_panics_nor_decodes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..20_000 {
            let len = rng.gen_range(0..200);
            let mut b: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if len > 2 && rng.gen_bool(0.5) {
                b[0] = TAG_HIGH | RECORD_FORMAT_VERSION;
                b[1] = rng.gen_range(1..=2);
            }
            if let Ok(Slot::Record(r)) = decode(&b) {
                panic!("garbage decoded as a record: {r:?}");
            }
            for r in SegmentRecords::new(&b) {
                assert!(r.is_err(), "garbage yielded a record");
            }
        }
        // Truncations of a valid record are errors.
        let mut buf = Vec::new();
        encode(&mut buf, RecordKind::Value, 1, b"abc", b"defgh");
        for cut in 1..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        // Padding right before a block boundary is never mistaken for a record start,
        // nor a record start for padding, whatever follows.
        let mut seg = Vec::new();
        encode(
            &mut seg,
            RecordKind::Value,
            1,
            b"k",
            &vec![7u8; 4096 - 20 - 1 - 3],
        );
        assert_eq!(seg.len(), 4093);
        seg.resize(4096, 0);
        encode(&mut seg, RecordKind::Value, 2, b"k2", b"v2");
        let recs: Vec<_> = SegmentRecords::new(&seg).map(|r| r.unwrap()).collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].0, 4096);
    }
}
