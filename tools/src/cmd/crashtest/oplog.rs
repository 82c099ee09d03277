//! The operation log the crashtest child writes and the parent checks the store
//! against. Before the child issues a write it appends `Pending` (the operation and
//! every key it touches); when the call returns it appends `Acked`; after a durability
//! point returns (put_sync, delete_sync, write_sync, flush, sync) it appends `Durable`
//! and fsyncs the log. Every record is one write(2), so a kill leaves at most the last
//! record torn, and the kernel keeps everything written before (kill -9 is not a power
//! cut).
//!
//! Record: `len` u32 LE (payload bytes) | `crc` u32 LE | payload. The crc32c covers
//! the length and the payload; a payload is at least its tag byte, and tag 0 is none,
//! so an all-zero record is never valid. A record that is cut short or fails its crc is
//! a torn tail when nothing but it follows; anywhere else it is corruption.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The largest payload: a tag, an op id, a kind, a count and `BATCH_KEYS_MAX` entries,
/// with room to spare; a length beyond it is damage, not a record.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 1024;
const RECORD_HEADER_BYTES: usize = 8;
/// Most keys one operation (a batch) touches.
pub const BATCH_KEYS_MAX: usize = 64;
const _: () = assert!(1 + 8 + 1 + 2 + BATCH_KEYS_MAX * 5 <= RECORD_PAYLOAD_BYTES_MAX);

const TAG_BEGIN: u8 = 1;
const TAG_PENDING: u8 = 2;
const TAG_ACKED: u8 = 3;
const TAG_DURABLE: u8 = 4;

/// What an operation calls on the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Put,
    Delete,
    /// `Db::write` of a `WriteBatch`.
    Batch,
    PutSync,
    DeleteSync,
    /// `Db::write_sync` of a `WriteBatch`.
    WriteSync,
    Flush,
    Sync,
}

impl OpKind {
    const ALL: [OpKind; 8] = [
        OpKind::Put,
        OpKind::Delete,
        OpKind::Batch,
        OpKind::PutSync,
        OpKind::DeleteSync,
        OpKind::WriteSync,
        OpKind::Flush,
        OpKind::Sync,
    ];

    fn code(self) -> u8 {
        OpKind::ALL.iter().position(|&k| k == self).expect("listed") as u8 + 1
    }

    fn from_code(code: u8) -> Option<OpKind> {
        OpKind::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    /// True if every write acknowledged before it is durable when it returns.
    pub fn is_durability_point(self) -> bool {
        matches!(
            self,
            OpKind::PutSync | OpKind::DeleteSync | OpKind::WriteSync | OpKind::Flush | OpKind::Sync
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Put => "put",
            OpKind::Delete => "delete",
            OpKind::Batch => "batch",
            OpKind::PutSync => "put_sync",
            OpKind::DeleteSync => "delete_sync",
            OpKind::WriteSync => "write_sync",
            OpKind::Flush => "flush",
            OpKind::Sync => "sync",
        }
    }
}

/// One key an operation touches: a put writes version = the operation's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub key: u32,
    pub put: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// First record of a cycle's log: op ids of this cycle start at `first_op`.
    Begin {
        cycle: u32,
        first_op: u64,
    },
    Pending {
        op: u64,
        kind: OpKind,
        entries: Vec<Entry>,
    },
    Acked {
        op: u64,
    },
    /// Every operation up to and including `through_op` is durable.
    Durable {
        through_op: u64,
    },
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(32);
        match self {
            Record::Begin { cycle, first_op } => {
                p.push(TAG_BEGIN);
                p.extend_from_slice(&cycle.to_le_bytes());
                p.extend_from_slice(&first_op.to_le_bytes());
            }
            Record::Pending { op, kind, entries } => {
                assert!(entries.len() <= BATCH_KEYS_MAX, "{} keys", entries.len());
                p.push(TAG_PENDING);
                p.extend_from_slice(&op.to_le_bytes());
                p.push(kind.code());
                p.extend_from_slice(&(entries.len() as u16).to_le_bytes());
                for e in entries {
                    p.extend_from_slice(&e.key.to_le_bytes());
                    p.push(u8::from(e.put));
                }
            }
            Record::Acked { op } => {
                p.push(TAG_ACKED);
                p.extend_from_slice(&op.to_le_bytes());
            }
            Record::Durable { through_op } => {
                p.push(TAG_DURABLE);
                p.extend_from_slice(&through_op.to_le_bytes());
            }
        }
        let len = (p.len() as u32).to_le_bytes();
        let mut crc = crc32c::crc32c(&len);
        crc = crc32c::crc32c_append(crc, &p);
        let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + p.len());
        out.extend_from_slice(&len);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&p);
        out
    }

    /// Decodes a payload whose crc matched.
    fn decode_payload(p: &[u8]) -> Result<Record, String> {
        let mut r = Reader { p, at: 0 };
        let tag = r.u8()?;
        let record = match tag {
            TAG_BEGIN => Record::Begin {
                cycle: r.u32()?,
                first_op: r.u64()?,
            },
            TAG_PENDING => {
                let op = r.u64()?;
                let code = r.u8()?;
                let kind = OpKind::from_code(code).ok_or(format!("unknown op kind {code}"))?;
                let count = usize::from(r.u16()?);
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let key = r.u32()?;
                    let put = match r.u8()? {
                        0 => false,
                        1 => true,
                        other => return Err(format!("entry flag {other}, expected 0 or 1")),
                    };
                    entries.push(Entry { key, put });
                }
                Record::Pending { op, kind, entries }
            }
            TAG_ACKED => Record::Acked { op: r.u64()? },
            TAG_DURABLE => Record::Durable {
                through_op: r.u64()?,
            },
            other => return Err(format!("unknown record tag {other}")),
        };
        if r.at != p.len() {
            return Err(format!(
                "{} bytes after a {} byte record",
                p.len() - r.at,
                r.at
            ));
        }
        Ok(record)
    }
}

struct Reader<'a> {
    p: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let bytes = self
            .p
            .get(self.at..self.at + N)
            .ok_or_else(|| format!("payload of {} bytes ends inside a field", self.p.len()))?;
        self.at += N;
        Ok(bytes.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take()?))
    }
}

/// The records of a log, and how many bytes of torn tail followed them.
#[derive(Debug)]
pub struct Decoded {
    pub records: Vec<Record>,
    pub torn_tail_bytes: usize,
}

/// Decodes a whole log. A bad record with nothing but itself after it is a torn tail;
/// one with more after it (or one whose crc holds but whose payload does not decode)
/// is an error naming its offset.
pub fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let torn = || Decoded {
            records: Vec::new(),
            torn_tail_bytes: rest.len(),
        };
        // The most a single torn append can leave.
        let could_be_torn = rest.len() <= RECORD_HEADER_BYTES + RECORD_PAYLOAD_BYTES_MAX;
        let bad = |why: String| -> Result<Decoded, String> {
            if could_be_torn {
                Ok(torn())
            } else {
                Err(format!(
                    "record at byte {at}: {why}, with {} bytes after it (not a torn tail)",
                    rest.len()
                ))
            }
        };
        if rest.len() < RECORD_HEADER_BYTES {
            return finish(records, bad("cut inside its header".into()));
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len == 0 || len > RECORD_PAYLOAD_BYTES_MAX {
            return finish(
                records,
                bad(format!(
                    "length {len} outside 1..={RECORD_PAYLOAD_BYTES_MAX}"
                )),
            );
        }
        let Some(payload) = rest.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len) else {
            return finish(records, bad(format!("cut inside its {len} byte payload")));
        };
        let actual = crc32c::crc32c_append(crc32c::crc32c(&rest[0..4]), payload);
        if actual != crc {
            return finish(
                records,
                bad(format!("crc {actual:08x}, expected {crc:08x}")),
            );
        }
        let record =
            Record::decode_payload(payload).map_err(|why| format!("record at byte {at}: {why}"))?;
        records.push(record);
        at += RECORD_HEADER_BYTES + len;
    }
    Ok(Decoded {
        records,
        torn_tail_bytes: 0,
    })
}

fn finish(records: Vec<Record>, tail: Result<Decoded, String>) -> Result<Decoded, String> {
    tail.map(|t| Decoded {
        records,
        torn_tail_bytes: t.torn_tail_bytes,
    })
}

/// The child's end: appends records with one write each, fsyncs at durability points.
pub struct LogWriter {
    file: std::fs::File,
    path: PathBuf,
}

impl LogWriter {
    /// Creates (or empties) the log at `path` and makes its creation durable.
    pub fn create(path: &Path) -> std::io::Result<LogWriter> {
        let file = std::fs::File::create(path)?;
        file.sync_all()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(LogWriter {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` with a single write(2) (`File` is unbuffered).
    pub fn append(&mut self, record: &Record) -> std::io::Result<()> {
        self.file.write_all(&record.encode())
    }

    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::Begin {
                cycle: 3,
                first_op: 100,
            },
            Record::Pending {
                op: 100,
                kind: OpKind::Batch,
                entries: vec![Entry { key: 1, put: true }, Entry { key: 9, put: false }],
            },
            Record::Acked { op: 100 },
            Record::Pending {
                op: 101,
                kind: OpKind::Flush,
                entries: vec![],
            },
            Record::Acked { op: 101 },
            Record::Durable { through_op: 101 },
        ]
    }

    fn encoded(records: &[Record]) -> Vec<u8> {
        records.iter().flat_map(Record::encode).collect()
    }

    #[test]
    fn records_round_trip() {
        let d = decode(&encoded(&sample())).unwrap();
        assert_eq!(d.records, sample());
        assert_eq!(d.torn_tail_bytes, 0);
    }

    #[test]
    fn every_cut_of_the_last_record_is_a_torn_tail() {
        let whole = encoded(&sample());
        let last = sample().last().unwrap().encode().len();
        for cut in 1..last {
            let d = decode(&whole[..whole.len() - cut]).unwrap();
            assert_eq!(d.records, sample()[..sample().len() - 1], "cut {cut}");
            assert_eq!(d.torn_tail_bytes, last - cut);
        }
    }

    #[test]
    fn zeros_and_flipped_bits_are_never_records() {
        let d = decode(&[0u8; 64]).unwrap();
        assert!(d.records.is_empty());
        assert_eq!(d.torn_tail_bytes, 64);
        let whole = encoded(&sample());
        for bit in 0..whole.len() * 8 {
            let mut bad = whole.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            // Either a shorter valid prefix with a torn tail, or an error: never the
            // records with a changed one among them.
            if let Ok(d) = decode(&bad) {
                assert!(d.torn_tail_bytes > 0, "bit {bit}");
                assert_eq!(d.records, sample()[..d.records.len()], "bit {bit}");
            }
        }
    }

    #[test]
    fn damage_before_the_tail_is_an_error() {
        let mut records = sample();
        for op in 0..300 {
            records.push(Record::Acked { op });
        }
        let mut bytes = encoded(&records);
        bytes[30] ^= 0xff;
        let e = decode(&bytes).unwrap_err();
        assert!(e.contains("not a torn tail"), "{e}");
    }
}
