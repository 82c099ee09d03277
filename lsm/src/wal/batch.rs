//! Write batches and their encoding as a WAL record payload:
//! first sequence (u64 LE) | count (u32 LE) | count x (kind u8 | key_len varint | key
//! | [value_len varint | value] for puts). Entry i gets sequence first + i.

use crate::coding::{put_varint, Reader};
use crate::error::{LsmError, Result};
use crate::ikey::Kind;
use crate::{KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// Bytes of a payload before its entries: first sequence (u64) and count (u32).
pub(crate) const PAYLOAD_HEADER_BYTES: usize = 12;
const _: () = assert!(PAYLOAD_HEADER_BYTES == size_of::<u64>() + size_of::<u32>());

/// A group of puts and deletes applied atomically by `Db::write`: after a crash either
/// all of them are there or none.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    /// Encoded entries (without the sequence/count header).
    pub(crate) rep: Vec<u8>,
    pub(crate) count: usize,
    /// Largest key and value seen, checked against the limits by `Db::write` (put() has
    /// no error return, so the check happens when the batch is applied).
    pub(crate) key_bytes_max_seen: usize,
    pub(crate) value_bytes_max_seen: usize,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `bytes` of encoded entries (see
    /// [`WriteBatch::entry_bytes_max`]): a large batch built without it grows by
    /// doubling, a chain of ever larger buffers allocated, copied and freed.
    pub fn with_capacity(bytes: usize) -> Self {
        WriteBatch {
            rep: Vec::with_capacity(bytes),
            ..Self::default()
        }
    }

    /// The most bytes one entry of a `key_len`-byte key and a `value_len`-byte value
    /// takes in a batch (a delete takes less).
    pub fn entry_bytes_max(key_len: usize, value_len: usize) -> usize {
        const VARINT_BYTES_MAX: usize = 10;
        1 + VARINT_BYTES_MAX + key_len + VARINT_BYTES_MAX + value_len
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.rep.push(Kind::Put as u8);
        put_varint(&mut self.rep, key.len() as u64);
        self.rep.extend_from_slice(key);
        put_varint(&mut self.rep, value.len() as u64);
        self.rep.extend_from_slice(value);
        self.count += 1;
        self.key_bytes_max_seen = self.key_bytes_max_seen.max(key.len());
        self.value_bytes_max_seen = self.value_bytes_max_seen.max(value.len());
        if key.is_empty() {
            // Recorded as an oversize-like violation: empty keys are refused at write().
            self.key_bytes_max_seen = usize::MAX;
        }
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.rep.push(Kind::Delete as u8);
        put_varint(&mut self.rep, key.len() as u64);
        self.rep.extend_from_slice(key);
        self.count += 1;
        self.key_bytes_max_seen = self.key_bytes_max_seen.max(key.len());
        if key.is_empty() {
            self.key_bytes_max_seen = usize::MAX;
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn clear(&mut self) {
        self.rep.clear();
        self.count = 0;
        self.key_bytes_max_seen = 0;
        self.value_bytes_max_seen = 0;
    }

    /// Bytes of keys and values in the batch (what a user would call the data written).
    pub fn payload_bytes(&self) -> usize {
        self.rep.len()
    }

    pub(crate) fn check_limits(&self) -> Result<()> {
        if self.key_bytes_max_seen == usize::MAX {
            return Err(LsmError::KeyEmpty);
        }
        if self.key_bytes_max_seen > KEY_BYTES_MAX {
            return Err(LsmError::KeyTooLarge {
                len: self.key_bytes_max_seen,
                max: KEY_BYTES_MAX,
            });
        }
        if self.value_bytes_max_seen > VALUE_BYTES_MAX {
            return Err(LsmError::ValueTooLarge {
                len: self.value_bytes_max_seen,
                max: VALUE_BYTES_MAX,
            });
        }
        Ok(())
    }

    pub(crate) fn encode_payload(&self, first_seq: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.payload_header(first_seq));
        out.extend_from_slice(&self.rep);
    }

    /// What precedes the entries in a WAL payload: the first sequence and the count.
    pub(crate) fn payload_header(&self, first_seq: u64) -> [u8; PAYLOAD_HEADER_BYTES] {
        let mut h = [0u8; PAYLOAD_HEADER_BYTES];
        h[..8].copy_from_slice(&first_seq.to_le_bytes());
        h[8..].copy_from_slice(&(self.count as u32).to_le_bytes());
        h
    }
}

/// One decoded batch entry.
pub(crate) struct BatchEntry<'a> {
    pub kind: Kind,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// Iterates the entries of an encoded batch (`rep`, without header); every entry is
/// validated so a corrupt payload yields an error, never a panic.
pub(crate) fn for_each_entry<'a>(
    rep: &'a [u8],
    count: usize,
    mut f: impl FnMut(BatchEntry<'a>),
) -> Result<()> {
    let mut r = Reader::new(rep);
    for _ in 0..count {
        let kind = Kind::from_u8(r.u8()?)
            .ok_or_else(|| LsmError::corrupt("batch entry kind is neither put nor delete"))?;
        let key_len = r.len_varint(KEY_BYTES_MAX)?;
        if key_len == 0 {
            return Err(LsmError::corrupt("batch entry with an empty key"));
        }
        let key = r.bytes(key_len)?;
        let value = match kind {
            Kind::Put => {
                let n = r.len_varint(VALUE_BYTES_MAX)?;
                r.bytes(n)?
            }
            Kind::Delete => &[][..],
        };
        f(BatchEntry { kind, key, value });
    }
    if !r.is_empty() {
        return Err(LsmError::corrupt(format!(
            "{} bytes after the last of {count} batch entries",
            r.remaining()
        )));
    }
    Ok(())
}

/// Decodes a WAL record payload: Ok((first sequence, count, entries bytes)), with the
/// entries already validated.
pub(crate) fn decode_payload(payload: &[u8]) -> Result<(u64, usize, &[u8])> {
    let mut r = Reader::new(payload);
    let seq = r.u64()?;
    let count = r.u32()? as usize;
    if count == 0 {
        return Err(LsmError::corrupt("batch with no entries"));
    }
    if seq == 0
        || seq
            .checked_add(count as u64)
            .is_none_or(|end| end > crate::ikey::SEQ_MAX)
    {
        return Err(LsmError::corrupt(format!(
            "batch sequence {seq} out of range"
        )));
    }
    let rep = &payload[12..];
    for_each_entry(rep, count, |_| {})?;
    Ok((seq, count, rep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip_and_truncation() {
        let mut b = WriteBatch::new();
        b.put(b"a", b"1");
        b.delete(b"b");
        b.put(b"c", b"");
        let mut p = Vec::new();
        b.encode_payload(7, &mut p);
        let (seq, count, rep) = decode_payload(&p).unwrap();
        assert_eq!((seq, count), (7, 3));
        let mut seen = Vec::new();
        for_each_entry(rep, count, |e| {
            seen.push((e.kind, e.key.to_vec(), e.value.to_vec()))
        })
        .unwrap();
        assert_eq!(seen[1], (Kind::Delete, b"b".to_vec(), vec![]));
        for cut in 0..p.len() {
            assert!(decode_payload(&p[..cut]).is_err(), "cut at {cut}");
        }
    }
}
