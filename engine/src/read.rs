//! Reads: the write cache first, then the index, then the value cache
//! (`value_cache.rs`), then one aligned read of the sectors holding the value
//! (`Inner::read_block_bytes`: the device's logical block, not the layout's write
//! block), or the inline value. Only the value's sectors are read, not its record's
//! header and key: a 4 KiB value written on a sector boundary (`align.rs`) is one
//! 4 KiB read, where its whole record spanned nine sectors, and this disk serves
//! 4,608-byte reads at about 60% of the rate of 4 KiB ones. The value is checked
//! against the record checksum its index pointer carries, which covers the key, the
//! sequence number and the value, before it is returned (and cached). A multi-get
//! does the same for many keys: the value reads missing from the value cache start 8
//! keys at a time, as soon as those keys are looked up, while the next are looked up.

use crate::db::Inner;
use crate::error::{Error, Result};
use crate::keys;
use crate::layout::Layout;
use crate::location::{self, Location, Pointer};
use crate::record;
use crate::spans::{self, Span};
use crate::stats::Counters;
use hashkv_blockdev::{AlignedBuf, BlockDevice, OwnedRead, PendingReads};
use std::collections::{HashMap, VecDeque};

/// Reads of a key that race with a GC moving its value: the first may find the record
/// gone from the old place (stale, not corrupt); the second reads the new pointer.
const GET_ATTEMPTS: usize = 2;

/// Keys a multi-get looks up and reads at once; a longer list is done in chunks of
/// this many, one after another. A chunk's reads all fit in flight at once on a ring
/// of the default size (blockdev's `RING_ENTRIES_DEFAULT`, 256), and the buffers one
/// call holds stay bounded (one record's blocks per key of a chunk), whatever the
/// length of the list.
pub const MULTI_GET_CHUNK_KEYS: usize = 256;

/// A multi-get starts the value reads of every this many keys as soon as their
/// lookups are done, and looks up the next keys while those reads are in flight. With
/// all lookups first, the device sat idle through them: once the index's blocks were
/// in memory (the block cache's loan, `memory::Loan`), starting each 8 keys' reads at
/// once made 32-key multi-gets of 4 KiB values 1.17-1.19x as fast (4 alternating runs,
/// 64 MiB budget). Each group in flight holds a read-ahead ring while one is free
/// (blockdev's read-ahead pool, shared with scans).
const MULTI_GET_READ_GROUP_KEYS: usize = 8;

/// Groups a multi-get keeps in flight; the oldest is waited for before another
/// starts, so that a long multi-get holds at most four read-ahead rings (a 32-key one
/// is never held back) and leaves the rest to scans and other callers.
const MULTI_GET_GROUPS_IN_FLIGHT_MAX: usize = 4;

/// Free read buffers kept for reuse (`Inner::read_buffers`): 256 buffers of one page,
/// what eight 32-key multi-gets of 4 KiB values keep in flight on 512-byte sectors
/// (half that on 4 KiB sectors, where such a value's read spans two pages). Reads
/// beyond that take fresh buffers, as every read did before the pool.
pub(crate) const READ_BUFFER_POOL_BYTES: usize = 1 << 20;
const _: () = assert!(READ_BUFFER_POOL_BYTES >= crate::buffers::READ_BUFFER_BYTES_MIN);

/// A group of a multi-get's keys (their index in the call and pointer), the spans of
/// their values and the reads of them in flight.
type StartedReads<'a> = (Vec<(usize, Pointer)>, Vec<Span>, PendingReads<'a>);

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

    /// The values of `keys` in their order, each as a get at some instant during the
    /// call would return it. Every key is checked before anything is read.
    pub(crate) fn multi_get(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        for key in keys {
            self.check_entry(key, None)?;
        }
        let mut values = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MULTI_GET_CHUNK_KEYS) {
            values.extend(self.multi_get_chunk(chunk)?);
        }
        Ok(values)
    }

    /// One chunk of a multi-get: the write cache, then the index and the device for
    /// the rest, each distinct key once; a duplicate gets its first occurrence's value.
    fn multi_get_chunk(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut first_at: HashMap<&[u8], usize> = HashMap::with_capacity(keys.len());
        let mut same_as: Vec<usize> = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            same_as.push(*first_at.entry(key).or_insert(i));
        }
        let mut values: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
        let mut todo = Vec::new();
        {
            let cache = self.cache.read();
            for (i, key) in keys.iter().enumerate().filter(|(i, _)| same_as[*i] == *i) {
                match cache.get(key) {
                    Some(v) => {
                        Counters::add(&self.counters.write_cache_hits, 1);
                        values[i] = v;
                    }
                    None => todo.push(i),
                }
            }
        }
        let mut attempt = 0;
        while !todo.is_empty() {
            attempt += 1;
            todo = self.look_up_and_read(keys, &todo, &mut values, attempt < GET_ATTEMPTS)?;
        }
        for (i, &first) in same_as.iter().enumerate() {
            if first != i {
                values[i] = values[first].clone();
            }
        }
        Ok(values)
    }

    /// Looks up `keys[i]` for each `i` of `todo` and reads their values (a submission
    /// per `MULTI_GET_READ_GROUP_KEYS`), under one reader generation (so GC reuses no
    /// segment in between),
    /// setting `values[i]`. Returns the keys whose record was gone from where the index
    /// pointed (a GC moved it: to be looked up again) if `may_retry`; otherwise that is
    /// an error, as for `get`.
    fn look_up_and_read(
        &self,
        keys: &[&[u8]],
        todo: &[usize],
        values: &mut [Option<Vec<u8>>],
        may_retry: bool,
    ) -> Result<Vec<usize>> {
        let _reading = self.readers.enter();
        let mut started: VecDeque<StartedReads<'_>> = VecDeque::new();
        let mut again = Vec::new();
        let mut group: Vec<(usize, Pointer)> = Vec::new();
        let mut user_key = Vec::new();
        for (n, &i) in todo.iter().enumerate() {
            values[i] = None;
            if let Some(entry) = self
                .index
                .get(keys::user_key_into(&mut user_key, keys[i]))?
            {
                match location::decode(&entry)? {
                    Location::Inline(v) => values[i] = Some(v),
                    Location::Pointer(p) => match self.values.get(&p) {
                        Some(v) => {
                            Counters::add(&self.counters.value_cache_hits, 1);
                            values[i] = Some(v);
                        }
                        None => group.push((i, p)),
                    },
                }
            }
            let last = n + 1 == todo.len();
            if group.len() == MULTI_GET_READ_GROUP_KEYS || (last && !group.is_empty()) {
                if started.len() == MULTI_GET_GROUPS_IN_FLIGHT_MAX {
                    let oldest = started.pop_front().expect("groups in flight");
                    self.finish_group(oldest, keys, values, may_retry, &mut again)?;
                }
                let (spans, reads) =
                    self.start_value_reads(group.iter().map(|(i, p)| (p, keys[*i])))?;
                started.push_back((std::mem::take(&mut group), spans, reads));
            }
        }
        for group in started {
            self.finish_group(group, keys, values, may_retry, &mut again)?;
        }
        Ok(again)
    }

    /// Waits for a multi-get group's reads and checks and caches each value into
    /// `values`; a value gone from where the index pointed goes to `again` if
    /// `may_retry`.
    fn finish_group(
        &self,
        (group, spans, reads): StartedReads<'_>,
        keys: &[&[u8]],
        values: &mut [Option<Vec<u8>>],
        may_retry: bool,
        again: &mut Vec<usize>,
    ) -> Result<()> {
        let reads = reads.wait()?;
        for (((i, p), span), read) in group.iter().zip(&spans).zip(&reads) {
            match check_value(span.payload(&read.buf), p, keys[*i]) {
                Ok(v) => {
                    self.values.insert(p, &v);
                    values[*i] = Some(v);
                }
                Err(e) if e.is_integrity() && may_retry => again.push(*i),
                Err(e) => return Err(e),
            }
        }
        self.give_back(reads);
        Ok(())
    }

    /// The span of the device holding the value of `p`'s record, whose key is `key`:
    /// the record's bytes after its header and key. A pointer outside the value store,
    /// or to a record too short for its key, is corruption.
    pub(crate) fn value_span(&self, p: &Pointer, key: &[u8]) -> Result<Span> {
        let bad = |expected: String| Error::corrupt("index pointer", expected, format!("{p:?}"));
        let at = self.record_offset(p)?;
        let head = record::value_offset(key.len()) as u64;
        let value_bytes = u64::from(p.record_bytes)
            .checked_sub(head)
            .ok_or_else(|| bad(format!("a record of at least {head} bytes")))?;
        Ok(Span::covering(
            at + head,
            value_bytes,
            self.read_block_bytes,
        ))
    }

    /// The span of `p`'s whole record, header included (the check reads records
    /// whole, to check the header on the device too).
    pub(crate) fn record_span(&self, p: &Pointer) -> Result<Span> {
        let at = self.record_offset(p)?;
        Ok(Span::covering(
            at,
            u64::from(p.record_bytes),
            self.read_block_bytes,
        ))
    }

    /// Where `p`'s record begins on the device; a pointer outside the value store is
    /// corruption.
    fn record_offset(&self, p: &Pointer) -> Result<u64> {
        self.store.record_offset(p).ok_or_else(|| {
            Error::corrupt(
                "index pointer",
                "a record inside the value store",
                format!("{p:?}"),
            )
        })
    }

    /// The spans of the values of (pointer, key) pairs.
    fn value_spans<'p>(
        &self,
        items: impl Iterator<Item = (&'p Pointer, &'p [u8])>,
    ) -> Result<Vec<Span>> {
        items.map(|(p, key)| self.value_span(p, key)).collect()
    }

    /// Reads the whole records of many pointers with one submission.
    pub(crate) fn read_records<'p>(
        &self,
        pointers: impl Iterator<Item = &'p Pointer>,
    ) -> Result<Vec<(Span, AlignedBuf)>> {
        let spans = pointers
            .map(|p| self.record_span(p))
            .collect::<Result<_>>()?;
        self.read_spans(spans)
    }

    fn read_spans(&self, spans: Vec<Span>) -> Result<Vec<(Span, AlignedBuf)>> {
        let (bufs, bytes) = spans::read(self.device.as_ref(), &spans)?;
        Counters::add(&self.counters.read_device_bytes, bytes);
        Ok(spans.into_iter().zip(bufs).collect())
    }

    /// Starts reading the values of many (pointer, key) pairs (a scan's next batch)
    /// and returns without waiting where the device can leave them in flight; returns
    /// each value's span, in order, and the reads, whose buffers `wait` hands back in
    /// the same order. The buffers come from the pool: hand the reads to `give_back`
    /// once their values are taken out.
    pub(crate) fn start_value_reads<'p>(
        &self,
        items: impl Iterator<Item = (&'p Pointer, &'p [u8])>,
    ) -> Result<(Vec<Span>, PendingReads<'_>)> {
        let spans = self.value_spans(items)?;
        let bufs = self.read_buffers.take_each(spans.iter().map(|s| s.len));
        let reads = spans
            .iter()
            .zip(bufs)
            .map(|(s, buf)| OwnedRead::with_buf(s.offset, s.len, buf))
            .collect();
        let pending = self.device.start_reads(reads)?;
        let bytes = spans.iter().map(|s| s.len as u64).sum();
        Counters::add(&self.counters.read_device_bytes, bytes);
        Ok((spans, pending))
    }

    /// Takes back the buffers of value reads whose values were taken out: a fresh
    /// buffer per read cost a zeroing pass, an allocation and a free, about 5% of the
    /// CPU of 4 KiB gets.
    pub(crate) fn give_back(&self, reads: Vec<OwnedRead>) {
        self.read_buffers.give(reads.into_iter().map(|r| r.buf));
    }

    /// The value `p` points at: from the value cache, else read (into a pooled
    /// buffer), checked and cached.
    fn read_value(&self, p: &Pointer, key: &[u8]) -> Result<Vec<u8>> {
        if let Some(v) = self.values.get(p) {
            Counters::add(&self.counters.value_cache_hits, 1);
            return Ok(v);
        }
        let span = self.value_span(p, key)?;
        let (bufs, bytes) = spans::read_pooled(self.device.as_ref(), &[span], &self.read_buffers)?;
        Counters::add(&self.counters.read_device_bytes, bytes);
        let value = check_value(span.payload(&bufs[0]), p, key)?;
        self.values.insert(p, &value);
        Ok(value)
    }
}

/// The granularity of value reads on `device` (`Inner::read_block_bytes`): its
/// logical block where that divides the layout's block, else the layout's block.
pub(crate) fn read_block_bytes(device: &dyn BlockDevice, layout: &Layout) -> u64 {
    let logical = u64::from(device.geometry().logical_block_bytes);
    let block = u64::from(layout.block_bytes);
    if logical > 0 && block % logical == 0 {
        logical
    } else {
        block
    }
}

/// Checks the value bytes read for `p` (the record of `key`) and returns them: with
/// the key and sequence number the get expects, they must give the record checksum
/// the pointer carries, or the read is an error.
pub(crate) fn check_value(value: &[u8], p: &Pointer, key: &[u8]) -> Result<Vec<u8>> {
    let computed = record::value_record_crc(p.seq, key, value);
    if computed != p.crc {
        return Err(Error::ChecksumMismatch {
            what: "value record (read by its index pointer, with the key and sequence number expected)",
            stored: p.crc,
            computed,
        });
    }
    Ok(value.to_vec())
}

/// Checks a whole record read for `p` (the check's reads, header included): a value
/// record of `key` with `p`'s sequence number, whose checksum (checked by `decode`)
/// is the one `p` carries.
pub(crate) fn check_record(buf: &[u8], p: &Pointer, key: &[u8]) -> Result<()> {
    let found = match record::decode(buf)? {
        record::Slot::Record(r) => r,
        record::Slot::Padding => {
            return Err(Error::corrupt(
                "value record",
                format!("the record {p:?} names"),
                "empty space",
            ))
        }
    };
    if found.kind != record::RecordKind::Value
        || found.key != key
        || found.seq != p.seq
        || found.crc != p.crc
    {
        return Err(Error::corrupt(
            "value record",
            format!(
                "a value of key {:?} seq {} crc {:#010x} at {p:?}",
                String::from_utf8_lossy(key),
                p.seq,
                p.crc
            ),
            format!(
                "{:?} of key {:?} seq {} crc {:#010x}",
                found.kind,
                String::from_utf8_lossy(found.key),
                found.seq,
                found.crc
            ),
        ));
    }
    Ok(())
}
