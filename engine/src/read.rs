//! Reads: the write cache first, then the index, then the value cache
//! (`value_cache.rs`), then one aligned read of the value's record (or the inline
//! value). Every record read is checked against what the index expects before its
//! value is returned (and cached).

use crate::db::Inner;
use crate::error::{Error, Result};
use crate::keys;
use crate::location::{self, Location, Pointer};
use crate::record::{self, RecordKind, Slot};
use crate::spans::{self, Span};
use crate::stats::Counters;
use hashkv_blockdev::AlignedBuf;

/// Reads of a key that race with a GC moving its value: the first may find the record
/// gone from the old place (stale, not corrupt); the second reads the new pointer.
const GET_ATTEMPTS: usize = 2;

impl Inner {
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_entry(key, None)?;
        if let Some(v) = self.cache.read().get(key) {
            Counters::add(&self.counters.write_cache_hits, 1);
            return Ok(v);
        }
        let user_key = keys::user_key(key);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let _reading = self.readers.enter();
            let Some(entry) = self.index.get(&user_key)? else {
                return Ok(None);
            };
            match location::decode(&entry)? {
                Location::Inline(v) => return Ok(Some(v)),
                Location::Pointer(p) => match self.read_value(&p, key) {
                    Ok(v) => return Ok(Some(v)),
                    Err(e) if e.is_integrity() && attempt < GET_ATTEMPTS => continue,
                    Err(e) => return Err(e),
                },
            }
        }
    }

    /// The span of the device holding `p`'s record; a pointer outside the value store
    /// is corruption.
    pub(crate) fn record_span(&self, p: &Pointer) -> Result<Span> {
        let at = self.store.record_offset(p).ok_or_else(|| {
            Error::corrupt(
                "index pointer",
                "a record inside the value store",
                format!("{p:?}"),
            )
        })?;
        Ok(Span::covering(
            at,
            u64::from(p.record_bytes),
            u64::from(self.layout.block_bytes),
        ))
    }

    /// Reads the records of many pointers with one submission (readahead): returns
    /// each record's span and the buffer it was read into.
    pub(crate) fn read_records<'p>(
        &self,
        pointers: impl Iterator<Item = &'p Pointer>,
    ) -> Result<Vec<(Span, AlignedBuf)>> {
        let spans: Vec<Span> = pointers
            .map(|p| self.record_span(p))
            .collect::<Result<_>>()?;
        let (bufs, bytes) = spans::read(self.device.as_ref(), &spans)?;
        Counters::add(&self.counters.read_device_bytes, bytes);
        Ok(spans.into_iter().zip(bufs).collect())
    }

    /// The value `p` points at: from the value cache, else read, checked and cached.
    fn read_value(&self, p: &Pointer, key: &[u8]) -> Result<Vec<u8>> {
        if let Some(v) = self.values.get(p) {
            Counters::add(&self.counters.value_cache_hits, 1);
            return Ok(v);
        }
        let (span, buf) = self
            .read_records(std::iter::once(p))?
            .pop()
            .expect("one pointer, one read");
        let value = decode_value(span.payload(&buf), p, key)?;
        self.values.insert(p, &value);
        Ok(value)
    }
}

/// Checks the record read for `p` and returns its value: the checksum, the key and
/// the sequence number must all match, or the read is an error.
pub(crate) fn decode_value(buf: &[u8], p: &Pointer, key: &[u8]) -> Result<Vec<u8>> {
    let rec = match record::decode(buf)? {
        Slot::Record(r) => r,
        Slot::Padding => {
            return Err(Error::corrupt(
                "value record",
                format!("the record {p:?} names"),
                "empty space",
            ))
        }
    };
    if rec.kind != RecordKind::Value || rec.key != key || rec.seq != p.seq {
        return Err(Error::corrupt(
            "value record",
            format!(
                "a value of key {:?} seq {} at {p:?}",
                String::from_utf8_lossy(key),
                p.seq
            ),
            format!(
                "{:?} of key {:?} seq {}",
                rec.kind,
                String::from_utf8_lossy(rec.key),
                rec.seq
            ),
        ));
    }
    Ok(rec.value.to_vec())
}
