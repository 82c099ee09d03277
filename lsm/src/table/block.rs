//! Data and index blocks: entries `shared varint | unshared varint | value_len varint |
//! key suffix | value`, a restart point (full key, shared = 0) every
//! `RESTART_INTERVAL` entries, then the restart offsets (u32 LE each) and their count
//! (u32 LE).
//!
//! A block is decoded whole when loaded (about 100 entries of a 4 KiB block): that
//! makes both iteration directions and binary search trivial, and the block cache
//! keeps decoded blocks so the cost is paid once per cache miss.

use std::cmp::Ordering;

use crate::coding::{masked_crc, put_varint, Reader};
use crate::error::{LsmError, Result};
use crate::ikey;
use crate::memory::heap_bytes;

/// The strong and weak counts in front of the value of an `Arc`.
const ARC_COUNTS_BYTES: usize = 2 * size_of::<usize>();

/// Entries between restart points: a trade between block size (shared prefixes) and
/// the linear part of a seek.
pub(crate) const RESTART_INTERVAL: usize = 16;

/// Restart points a seek reads ahead (`cache_lines::warm`) before its binary search:
/// all of a block with at most this many (a 4 KiB data block has about 5), else the
/// ones the search's first three steps may visit (7). More loads than this would not
/// be in flight at once anyway (a core keeps about 10-12 cache misses outstanding).
const RESTARTS_WARMED_MAX: usize = 12;

pub(crate) struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    counter: usize,
    last_key: Vec<u8>,
    entries: usize,
}

impl BlockBuilder {
    pub fn new() -> Self {
        BlockBuilder {
            buf: Vec::new(),
            restarts: vec![0],
            counter: 0,
            last_key: Vec::new(),
            entries: 0,
        }
    }

    /// Keys must be added in strictly increasing internal-key order.
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        debug_assert!(
            self.entries == 0 || ikey::compare(&self.last_key, key) == Ordering::Less,
            "keys out of order"
        );
        let mut shared = 0;
        if self.counter < RESTART_INTERVAL {
            shared = self
                .last_key
                .iter()
                .zip(key)
                .take_while(|(a, b)| a == b)
                .count();
        } else {
            self.restarts.push(self.buf.len() as u32);
            self.counter = 0;
        }
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, (key.len() - shared) as u64);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(&key[shared..]);
        self.buf.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.counter += 1;
        self.entries += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Payload size if finished now.
    pub fn estimated_bytes(&self) -> usize {
        self.buf.len() + self.restarts.len() * 4 + 4
    }

    /// The payload; the builder is reset for the next block.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        for r in &self.restarts {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        self.restarts = vec![0];
        self.counter = 0;
        self.entries = 0;
        self.last_key.clear();
        out
    }
}

/// Appends the checksum trailer to a block payload.
pub(crate) fn seal(payload: &mut Vec<u8>) {
    let crc = masked_crc(payload);
    payload.extend_from_slice(&crc.to_le_bytes());
}

/// Checks the trailer of `raw` (payload + crc) and returns the payload.
pub(crate) fn unseal(raw: &[u8]) -> Result<&[u8]> {
    if raw.len() < super::BLOCK_TRAILER_BYTES {
        return Err(LsmError::corrupt(format!(
            "block of {} bytes has no checksum",
            raw.len()
        )));
    }
    let (payload, crc) = raw.split_at(raw.len() - super::BLOCK_TRAILER_BYTES);
    let found = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    let expected = masked_crc(payload);
    if found != expected {
        return Err(LsmError::ChecksumMismatch {
            file: Default::default(),
            offset: payload.len() as u64,
            expected,
            found,
        });
    }
    Ok(payload)
}

/// An entry of a block as stored (`RawBlock::raw_entry`).
struct RawEntry<'b> {
    shared: usize,
    suffix: &'b [u8],
    value: std::ops::Range<usize>,
    next: usize,
}

/// A block as read from disk, searched in place for point lookups: binary search over
/// the restart points, then a linear scan of at most `RESTART_INTERVAL` entries. This is
/// what the block cache holds (half the memory of a decoded block, and a get touches ~5
/// entries instead of decoding ~100).
pub(crate) struct RawBlock {
    payload: Vec<u8>,
    /// Number of restart points; their offsets (u32 LE) start at `data_end`.
    restart_count: usize,
    data_end: usize,
    /// What the block costs in memory, set at construction (see `charge_bytes`).
    charge_bytes: usize,
}

impl RawBlock {
    /// Validates the restart array; entries are validated as a seek reaches them.
    pub fn new(payload: Vec<u8>) -> Result<RawBlock> {
        let n = payload.len();
        if n < 4 {
            return Err(LsmError::corrupt("block shorter than its restart count"));
        }
        let count = u32::from_le_bytes(payload[n - 4..].try_into().expect("4 bytes")) as usize;
        if count == 0 || count > (n - 4) / 4 {
            return Err(LsmError::corrupt(format!(
                "block restart count {count} out of range"
            )));
        }
        let data_end = n - 4 - count * 4;
        if data_end == 0 {
            return Err(LsmError::corrupt("empty block"));
        }
        let charge_bytes =
            heap_bytes(payload.capacity()) + size_of::<RawBlock>() + ARC_COUNTS_BYTES;
        let block = RawBlock {
            payload,
            restart_count: count,
            data_end,
            charge_bytes,
        };
        for i in 0..count {
            let off = block.restart(i);
            let valid = if i == 0 {
                off == 0
            } else {
                off > block.restart(i - 1) && off < data_end
            };
            if !valid {
                return Err(LsmError::corrupt(format!(
                    "restart point {i} at {off} out of order or range"
                )));
            }
        }
        Ok(block)
    }

    /// Offset of restart point `i` (< restart_count).
    fn restart(&self, i: usize) -> usize {
        let at = self.data_end + i * 4;
        u32::from_le_bytes(self.payload[at..at + 4].try_into().expect("4 bytes")) as usize
    }

    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Heap and struct bytes of the block as cached (`Arc<RawBlock>`), allocator
    /// rounding included.
    pub fn charge_bytes(&self) -> usize {
        self.charge_bytes
    }

    /// The entry at `off` as stored: its shared prefix length, its key suffix, the
    /// range of its value and the offset of the next entry.
    #[inline]
    fn raw_entry(&self, off: usize) -> Result<RawEntry<'_>> {
        let mut r = Reader {
            buf: &self.payload[..self.data_end],
            pos: off,
        };
        let shared = r.len_varint(crate::KEY_BYTES_MAX + ikey::TRAILER_BYTES)?;
        let unshared = r.len_varint(crate::KEY_BYTES_MAX + ikey::TRAILER_BYTES)?;
        let val_len = r.len_varint(self.data_end)?;
        let suffix = r.bytes(unshared)?;
        let val_start = r.pos;
        r.bytes(val_len)?;
        Ok(RawEntry {
            shared,
            suffix,
            value: val_start..val_start + val_len,
            next: r.pos,
        })
    }

    /// Decodes the entry at `off` on top of `key` (which holds the previous key);
    /// returns the offset of the next entry and the value's range.
    fn entry_at(&self, off: usize, key: &mut Vec<u8>) -> Result<(usize, std::ops::Range<usize>)> {
        let e = self.raw_entry(off)?;
        if e.shared > key.len() {
            return Err(LsmError::corrupt(format!(
                "entry at {off}: shared prefix {} invalid",
                e.shared
            )));
        }
        key.truncate(e.shared);
        key.extend_from_slice(e.suffix);
        if !ikey::is_valid(key) {
            return Err(LsmError::corrupt(format!(
                "entry at {off}: not an internal key"
            )));
        }
        Ok((e.next, e.value))
    }

    /// The key of the entry at restart point `i`, in place: a restart's key is whole
    /// (shared prefix 0), so the binary search over restarts copies nothing.
    fn restart_key(&self, i: usize) -> Result<&[u8]> {
        let off = self.restart(i);
        let e = self.raw_entry(off)?;
        if e.shared != 0 || !ikey::is_valid(e.suffix) {
            return Err(LsmError::corrupt(format!(
                "restart entry at {off}: shared prefix {}, or not an internal key",
                e.shared
            )));
        }
        Ok(e.suffix)
    }

    /// The restart points a seek reads ahead (`RESTARTS_WARMED_MAX`): all, or the
    /// midpoints of the binary search's first three steps.
    fn restarts_searched_first(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.restart_count;
        let all = (n <= RESTARTS_WARMED_MAX).then_some(0..n);
        let first_steps = (n > RESTARTS_WARMED_MAX).then(|| (1..8).map(move |k| n * k / 8));
        all.into_iter()
            .flatten()
            .chain(first_steps.into_iter().flatten())
    }

    /// The first entry >= target: Some((key, value)).
    pub fn seek(&self, target: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        // The binary search below reads restart keys one after another, each where the
        // last decided: read the restart points' lines together first.
        crate::cache_lines::warm(
            &self.payload,
            self.restarts_searched_first().map(|i| self.restart(i)),
        );
        // First restart whose key is >= target; the answer lies in the interval before it.
        let (mut lo, mut hi) = (0, self.restart_count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if ikey::compare(self.restart_key(mid)?, target) == Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut key = Vec::with_capacity(target.len() + 16);
        let mut off = self.restart(lo.saturating_sub(1));
        while off < self.data_end {
            let (next, value) = self.entry_at(off, &mut key)?;
            if ikey::compare(&key, target) != Ordering::Less {
                return Ok(Some((key, self.payload[value].to_vec())));
            }
            off = next;
        }
        Ok(None)
    }
}

#[derive(Clone, Copy)]
struct Ent {
    key_off: u32,
    key_len: u32,
    val_off: u32,
    val_len: u32,
}

/// A decoded block: full keys in one buffer, values referenced in the payload.
pub(crate) struct Block {
    payload: Vec<u8>,
    keys: Vec<u8>,
    ents: Vec<Ent>,
}

impl Block {
    /// Decodes a payload (checksum already verified). Validates every length, that every
    /// key is an internal key, and that keys strictly increase, so a decoded block can
    /// be searched without further checks.
    pub fn decode(payload: Vec<u8>) -> Result<Block> {
        let n = payload.len();
        if n < 4 {
            return Err(LsmError::corrupt("block shorter than its restart count"));
        }
        let restarts = u32::from_le_bytes(payload[n - 4..].try_into().expect("4 bytes")) as usize;
        if restarts == 0 || restarts > (n - 4) / 4 {
            return Err(LsmError::corrupt(format!(
                "block restart count {restarts} out of range"
            )));
        }
        let data_end = n - 4 - restarts * 4;
        let mut restart_offsets = Vec::with_capacity(restarts);
        for i in 0..restarts {
            let at = data_end + i * 4;
            let off = u32::from_le_bytes(payload[at..at + 4].try_into().expect("4 bytes"));
            restart_offsets.push(off as usize);
        }
        if restart_offsets[0] != 0 {
            return Err(LsmError::corrupt("first restart point is not at offset 0"));
        }
        let mut keys: Vec<u8> = Vec::with_capacity(data_end * 2);
        let mut ents: Vec<Ent> = Vec::new();
        let mut r = Reader::new(&payload[..data_end]);
        let mut next_restart = 0;
        let mut prev: Option<(usize, usize)> = None;
        while !r.is_empty() {
            let at = r.pos;
            let is_restart = restart_offsets.get(next_restart) == Some(&at);
            if is_restart {
                next_restart += 1;
            }
            let shared = r.len_varint(crate::KEY_BYTES_MAX + ikey::TRAILER_BYTES)?;
            let unshared = r.len_varint(crate::KEY_BYTES_MAX + ikey::TRAILER_BYTES)?;
            let val_len = r.len_varint(data_end)?;
            let prev_len = prev.map_or(0, |p| p.1);
            if shared > prev_len || (is_restart && shared != 0) {
                return Err(LsmError::corrupt(format!(
                    "entry at {at}: shared prefix {shared} invalid"
                )));
            }
            let suffix = r.bytes(unshared)?;
            let val_off = r.pos;
            r.bytes(val_len)?;
            let key_off = keys.len();
            if let Some((p_off, _)) = prev {
                keys.extend_from_within(p_off..p_off + shared);
            }
            keys.extend_from_slice(suffix);
            let key_len = shared + unshared;
            let key = &keys[key_off..key_off + key_len];
            if !ikey::is_valid(key) {
                return Err(LsmError::corrupt(format!(
                    "entry at {at}: not an internal key"
                )));
            }
            if let Some((p_off, p_len)) = prev {
                if ikey::compare(&keys[p_off..p_off + p_len], key) != Ordering::Less {
                    return Err(LsmError::corrupt(format!(
                        "entry at {at}: keys out of order"
                    )));
                }
            }
            ents.push(Ent {
                key_off: key_off as u32,
                key_len: key_len as u32,
                val_off: val_off as u32,
                val_len: val_len as u32,
            });
            prev = Some((key_off, key_len));
        }
        if next_restart != restarts {
            return Err(LsmError::corrupt(
                "restart points do not match entry boundaries",
            ));
        }
        if ents.is_empty() {
            return Err(LsmError::corrupt("empty block"));
        }
        Ok(Block {
            payload,
            keys,
            ents,
        })
    }

    pub fn len(&self) -> usize {
        self.ents.len()
    }

    pub fn key(&self, i: usize) -> &[u8] {
        let e = self.ents[i];
        &self.keys[e.key_off as usize..(e.key_off + e.key_len) as usize]
    }

    pub fn value(&self, i: usize) -> &[u8] {
        let e = self.ents[i];
        &self.payload[e.val_off as usize..(e.val_off + e.val_len) as usize]
    }

    /// Index of the first entry >= target (len() if none).
    pub fn seek(&self, target: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.ents.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if ikey::compare(self.key(mid), target) == Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ikey::Kind;

    /// Blocks with few restart points (each read ahead) and with many (the search's
    /// first steps read ahead): a seek finds every key and the key after each gap.
    #[test]
    fn seeks_find_every_key_whatever_the_restart_count() {
        for entries in [1u32, 17, 100, 192, 193, 1000] {
            let mut b = BlockBuilder::new();
            let keys: Vec<Vec<u8>> = (0..entries)
                .map(|i| ikey::encode(format!("key{:05}", i * 2).as_bytes(), 9, Kind::Put))
                .collect();
            for k in &keys {
                b.add(k, b"v");
            }
            let block = RawBlock::new(b.finish()).unwrap();
            assert_eq!(
                block.restart_count > RESTARTS_WARMED_MAX,
                entries as usize > RESTARTS_WARMED_MAX * RESTART_INTERVAL
            );
            for (i, k) in keys.iter().enumerate() {
                assert_eq!(block.seek(k).unwrap().unwrap().0, *k, "{entries}: key {i}");
                let between = ikey::seek_key(format!("key{:05}", i * 2 + 1).as_bytes(), 9);
                let next = block.seek(&between).unwrap().map(|(k, _)| k);
                assert_eq!(next, keys.get(i + 1).cloned(), "{entries}: after key {i}");
            }
        }
    }

    #[test]
    fn round_trip_seek_and_truncation() {
        let mut b = BlockBuilder::new();
        let keys: Vec<Vec<u8>> = (0..100u32)
            .map(|i| ikey::encode(format!("key{i:05}").as_bytes(), 9, Kind::Put))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            b.add(k, format!("v{i}").as_bytes());
        }
        let mut raw = b.finish();
        let payload = raw.clone();
        let blk = Block::decode(payload.clone()).unwrap();
        assert_eq!(blk.len(), 100);
        assert_eq!(blk.value(42), b"v42");
        assert_eq!(blk.seek(&keys[42]), 42);
        assert_eq!(blk.seek(&ikey::seek_key(b"key00042", 3)), 43);
        let raw_block = RawBlock::new(payload.clone()).unwrap();
        for (i, k) in keys.iter().enumerate() {
            let (found, v) = raw_block.seek(k).unwrap().unwrap();
            assert_eq!(
                (found.as_slice(), v),
                (k.as_slice(), format!("v{i}").into_bytes())
            );
            let (next, _) = raw_block
                .seek(&ikey::seek_key(&k[..8], 3))
                .unwrap()
                .unwrap_or_default();
            assert_eq!(next, keys.get(i + 1).cloned().unwrap_or_default());
        }
        assert!(raw_block
            .seek(&ikey::seek_key(b"key99999", 9))
            .unwrap()
            .is_none());
        assert_eq!(
            raw_block.seek(&ikey::seek_key(b"a", 9)).unwrap().unwrap().0,
            keys[0]
        );
        seal(&mut raw);
        for cut in 0..raw.len() {
            assert!(unseal(&raw[..cut]).is_err());
        }
        for cut in 0..payload.len() {
            if let Ok(b) = Block::decode(payload[..cut].to_vec()) {
                panic!("truncated block at {cut} decoded to {} entries", b.len());
            }
        }
    }
}
