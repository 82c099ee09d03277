//! Version edits: a list of tagged fields.
//! 1 log_number (varint) | 2 next_file_number (varint) | 3 last_sequence (varint) |
//! 4 deleted table (level u8, number varint) | 5 added table (level u8, number varint,
//! file bytes varint, smallest key len-prefixed, largest key len-prefixed).

use std::cmp::Ordering;

use crate::coding::{put_varint, Reader};
use crate::error::{LsmError, Result};
use crate::ikey;
use crate::version::LEVELS;

const TAG_LOG_NUMBER: u8 = 1;
const TAG_NEXT_FILE_NUMBER: u8 = 2;
const TAG_LAST_SEQUENCE: u8 = 3;
const TAG_DELETED: u8 = 4;
const TAG_ADDED: u8 = 5;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AddedTable {
    pub level: usize,
    pub number: u64,
    pub file_bytes: u64,
    pub smallest: Vec<u8>,
    pub largest: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct VersionEdit {
    /// WALs numbered below this are no longer needed (their memtables are in tables).
    pub log_number: Option<u64>,
    pub next_file_number: Option<u64>,
    pub last_sequence: Option<u64>,
    pub deleted: Vec<(usize, u64)>,
    pub added: Vec<AddedTable>,
}

impl VersionEdit {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (tag, v) in [
            (TAG_LOG_NUMBER, self.log_number),
            (TAG_NEXT_FILE_NUMBER, self.next_file_number),
            (TAG_LAST_SEQUENCE, self.last_sequence),
        ] {
            if let Some(v) = v {
                out.push(tag);
                put_varint(&mut out, v);
            }
        }
        for &(level, number) in &self.deleted {
            out.push(TAG_DELETED);
            out.push(level as u8);
            put_varint(&mut out, number);
        }
        for a in &self.added {
            out.push(TAG_ADDED);
            out.push(a.level as u8);
            put_varint(&mut out, a.number);
            put_varint(&mut out, a.file_bytes);
            put_varint(&mut out, a.smallest.len() as u64);
            out.extend_from_slice(&a.smallest);
            put_varint(&mut out, a.largest.len() as u64);
            out.extend_from_slice(&a.largest);
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<VersionEdit> {
        let mut e = VersionEdit::default();
        let mut r = Reader::new(buf);
        if buf.is_empty() {
            return Err(LsmError::corrupt("empty version edit"));
        }
        let level = |r: &mut Reader| -> Result<usize> {
            let l = r.u8()? as usize;
            if l >= LEVELS {
                return Err(LsmError::corrupt(format!(
                    "level {l} out of range (max {})",
                    LEVELS - 1
                )));
            }
            Ok(l)
        };
        let key = |r: &mut Reader| -> Result<Vec<u8>> {
            let n = r.len_varint(crate::KEY_BYTES_MAX + ikey::TRAILER_BYTES)?;
            let k = r.bytes(n)?;
            if !ikey::is_valid(k) {
                return Err(LsmError::corrupt("table bound is not an internal key"));
            }
            Ok(k.to_vec())
        };
        while !r.is_empty() {
            match r.u8()? {
                TAG_LOG_NUMBER => e.log_number = Some(r.varint()?),
                TAG_NEXT_FILE_NUMBER => e.next_file_number = Some(r.varint()?),
                TAG_LAST_SEQUENCE => e.last_sequence = Some(r.varint()?),
                TAG_DELETED => {
                    let l = level(&mut r)?;
                    e.deleted.push((l, r.varint()?));
                }
                TAG_ADDED => {
                    let level = level(&mut r)?;
                    let number = r.varint()?;
                    let file_bytes = r.varint()?;
                    let smallest = key(&mut r)?;
                    let largest = key(&mut r)?;
                    if ikey::compare(&smallest, &largest) == Ordering::Greater {
                        return Err(LsmError::corrupt(format!(
                            "table {number}: smallest key > largest key"
                        )));
                    }
                    e.added.push(AddedTable {
                        level,
                        number,
                        file_bytes,
                        smallest,
                        largest,
                    });
                }
                t => return Err(LsmError::corrupt(format!("unknown version edit tag {t}"))),
            }
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ikey::Kind;

    #[test]
    fn round_trip_and_truncation() {
        let e = VersionEdit {
            log_number: Some(4),
            next_file_number: Some(9),
            last_sequence: Some(1000),
            deleted: vec![(0, 3), (1, 5)],
            added: vec![AddedTable {
                level: 2,
                number: 8,
                file_bytes: 4096,
                smallest: ikey::encode(b"a", 1, Kind::Put),
                largest: ikey::encode(b"z", 2, Kind::Delete),
            }],
        };
        let b = e.encode();
        assert_eq!(VersionEdit::decode(&b).unwrap(), e);
        // Every cut inside the added-table field fails; cuts between fields decode to a
        // prefix of the edit, which the record checksum around it rules out on disk.
        let fixed = b.len() - (1 + 1 + 1 + 2 + 1 + 9 + 1 + 9);
        for cut in fixed + 1..b.len() {
            assert!(VersionEdit::decode(&b[..cut]).is_err(), "cut {cut}");
        }
    }
}
