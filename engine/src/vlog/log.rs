//! The circular value log of the `vlog` mode (WiscKey): head and tail positions, where
//! the next records go, and when space behind the tail may be written again.
//!
//! Positions are logical byte counts since format (`u64`, never wrapping in practice);
//! the device offset is `region_offset + position % region_bytes`. The region is
//! everything past the superblock unit that the hashkv mode would use for main and log
//! segments, so both modes get the same space. It is cut into chunks of
//! `log_segment_bytes`; a record never crosses a chunk boundary (the rest of a chunk is
//! zero padding), so a pointer is (chunk, offset within the chunk), the same shape as a
//! hashkv pointer (segment, offset).
//!
//! Live space is `[tail, head)`. Head and tail are committed in the index (the `META
//! "v"` entry) in the same batch as the pointers that make them true, so after a crash
//! they agree with the index exactly.

use crate::buffers::BufferPool;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::location::Pointer;
use crate::record::{self, RecordKind};
use hashkv_blockdev::{AlignedBuf, BlockDevice};
use std::collections::HashSet;

const LOG_ENTRY_VERSION: u8 = 1;
const LOG_ENTRY_BYTES: usize = 1 + 8 + 8 + 4;

/// Records do not fit before the GC reserve: collect, then retry.
#[derive(Debug)]
pub struct NeedSpace;

#[derive(Debug)]
pub struct ValueLog {
    pub region_offset: u64,
    pub region_bytes: u64,
    /// A record never crosses a multiple of this; the unit of a pointer's `segment`.
    pub chunk_bytes: u64,
    /// Bytes one GC reads from the tail.
    pub gc_chunk_bytes: u64,
    /// Space flushes leave free so that a GC can always re-append what it keeps.
    pub gc_reserve_bytes: u64,
    block_bytes: u64,
    /// Next append position (committed by the flush or GC that advanced it).
    pub head: u64,
    /// Oldest position the index may point at.
    pub tail: u64,
    /// Space before this may be overwritten: readers that started before the tail
    /// moved past it are gone.
    reusable_tail: u64,
    /// Tail advances waiting for readers older than `.0` to finish.
    pending: Vec<(u64, u64)>,
    /// The written bytes of the head's block, from its start to `head`: the next
    /// append rewrites them unchanged ahead of its records. In memory only.
    head_block: Vec<u8>,
    /// Set while a GC runs: keys whose index entry a flush changed since the GC looked
    /// them up. GC must not point them back at the version it read.
    gc_keys_written: Option<HashSet<Vec<u8>>>,
}

/// The value log's place on the device: derived from the layout, so readers need no
/// lock to turn a pointer into a device offset.
#[derive(Debug, Clone, Copy)]
pub struct LogGeometry {
    pub region_offset: u64,
    pub region_bytes: u64,
    /// A record never crosses a multiple of this; the unit of a pointer's `segment`.
    pub chunk_bytes: u64,
}

impl LogGeometry {
    /// Everything past the superblock unit that the hashkv mode would use for main and
    /// log segments, in chunks of `log_segment_bytes`.
    pub fn of(layout: &Layout) -> LogGeometry {
        LogGeometry {
            region_offset: layout.main_region_offset,
            region_bytes: layout.end_offset() - layout.main_region_offset,
            chunk_bytes: layout.log_segment_bytes,
        }
    }

    pub fn chunk_count(&self) -> u32 {
        (self.region_bytes / self.chunk_bytes) as u32
    }

    /// Device offset of a logical position.
    pub fn device_offset(&self, position: u64) -> u64 {
        self.region_offset + position % self.region_bytes
    }

    /// The pointer to a record of `record_bytes` at logical `position`.
    pub fn pointer(&self, position: u64, record_bytes: usize, seq: u64) -> Pointer {
        let physical = position % self.region_bytes;
        Pointer {
            segment: (physical / self.chunk_bytes) as u32,
            offset: (physical % self.chunk_bytes) as u32,
            record_bytes: record_bytes as u32,
            seq,
        }
    }

    /// Device offset of a pointer's record, or `None` if it points outside the log.
    pub fn pointer_offset(&self, p: &Pointer) -> Option<u64> {
        let fits = p.segment < self.chunk_count()
            && u64::from(p.offset) + u64::from(p.record_bytes) <= self.chunk_bytes;
        fits.then(|| {
            self.region_offset + u64::from(p.segment) * self.chunk_bytes + u64::from(p.offset)
        })
    }
}

impl ValueLog {
    pub fn new(layout: &Layout, head: u64, tail: u64) -> Result<ValueLog> {
        let LogGeometry {
            region_offset,
            region_bytes,
            chunk_bytes,
        } = LogGeometry::of(layout);
        // The paper's vLog collects a fixed-size chunk from the tail; we use the main
        // segment size, the same amount a hashkv GC of one full main segment reads.
        // Smaller on small devices, so that the GC reserve leaves room for data.
        let gc_chunk_bytes = layout.main_segment_bytes.min(region_bytes / 8);
        let gc_chunk_bytes = (gc_chunk_bytes / chunk_bytes).max(1) * chunk_bytes;
        // GC re-appends at most gc_chunk_bytes of records; packing them into chunks
        // wastes less than one record (<= one chunk) per chunk boundary crossed.
        let gc_reserve_bytes = 2 * gc_chunk_bytes + chunk_bytes;
        let log = ValueLog {
            region_offset,
            region_bytes,
            chunk_bytes,
            gc_chunk_bytes,
            gc_reserve_bytes,
            block_bytes: u64::from(layout.block_bytes),
            head,
            tail,
            reusable_tail: tail,
            pending: Vec::new(),
            head_block: Vec::new(),
            gc_keys_written: None,
        };
        if region_bytes % chunk_bytes != 0 || gc_reserve_bytes * 2 > region_bytes {
            return Err(Error::DeviceTooSmall {
                reason: format!(
                    "a value log of {region_bytes} bytes cannot hold a GC reserve of {gc_reserve_bytes} bytes twice"
                ),
            });
        }
        log.check()?;
        Ok(log)
    }

    fn check(&self) -> Result<()> {
        let ok = self.tail <= self.head && self.head - self.tail <= self.region_bytes;
        if ok {
            Ok(())
        } else {
            Err(Error::Corruption {
                what: format!(
                    "value log head {} / tail {} inconsistent with a {}-byte region",
                    self.head, self.tail, self.region_bytes
                ),
            })
        }
    }

    pub fn chunk_count(&self) -> u32 {
        self.geometry().chunk_count()
    }

    pub fn used_bytes(&self) -> u64 {
        self.head - self.tail
    }

    /// Bytes that may be written now, the GC reserve included.
    pub fn free_bytes(&self) -> u64 {
        self.region_bytes - (self.head - self.reusable_tail)
    }

    pub fn pending_release(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Where positions lie on the device; fixed for the store's life.
    pub fn geometry(&self) -> LogGeometry {
        LogGeometry {
            region_offset: self.region_offset,
            region_bytes: self.region_bytes,
            chunk_bytes: self.chunk_bytes,
        }
    }

    /// Device offset of a logical position.
    pub fn device_offset(&self, position: u64) -> u64 {
        self.geometry().device_offset(position)
    }

    /// The pointer to a record of `record_bytes` at logical `position`.
    pub fn pointer(&self, position: u64, record_bytes: usize, seq: u64) -> Pointer {
        self.geometry().pointer(position, record_bytes, seq)
    }

    /// Device offset of a pointer's record, or `None` if it points outside the log.
    pub fn pointer_offset(&self, p: &Pointer) -> Option<u64> {
        self.geometry().pointer_offset(p)
    }

    /// Places records of the given encoded lengths at the head, each within one chunk.
    /// Returns each record's logical position and the
    /// range `[start, end)` written. Flushes keep `gc_reserve_bytes` free; GC may use
    /// it. On `NeedSpace` nothing changed.
    pub fn place(
        &mut self,
        record_lens: &[usize],
        for_gc: bool,
    ) -> std::result::Result<(Vec<u64>, u64, u64), NeedSpace> {
        let start = self.head;
        // Deletes and inline values write nothing to the log: no space needed.
        if record_lens.is_empty() {
            return Ok((Vec::new(), start, start));
        }
        let mut at = start;
        let mut positions = Vec::with_capacity(record_lens.len());
        for &len in record_lens {
            let len = len as u64;
            assert!(len <= self.chunk_bytes, "record larger than a chunk");
            if at % self.chunk_bytes + len > self.chunk_bytes {
                at = at.next_multiple_of(self.chunk_bytes);
            }
            positions.push(at);
            at += len;
        }
        let end = at;
        let floor = if for_gc { 0 } else { self.gc_reserve_bytes };
        // The write reaches the end of `end`'s block (zeros), which must stay clear of
        // the oldest space readers may still read.
        if end.next_multiple_of(self.block_bytes) - start + floor > self.free_bytes() {
            return Err(NeedSpace);
        }
        self.head = end;
        Ok((positions, start, end))
    }

    /// The range one GC collects: from the tail to the end of the chunk
    /// `gc_chunk_bytes` further on, or the head if that comes first. Records never
    /// cross its end, which is a chunk boundary or the head.
    pub fn gc_range(&self) -> Option<(u64, u64)> {
        if self.head == self.tail {
            return None;
        }
        let chunk_start = self.tail / self.chunk_bytes * self.chunk_bytes;
        let end = (chunk_start + self.gc_chunk_bytes).min(self.head);
        Some((self.tail, end))
    }

    /// Marks a GC as started: flushes from now on note the keys they change.
    pub fn begin_gc(&mut self) {
        assert!(self.gc_keys_written.is_none(), "one vlog GC at a time");
        self.gc_keys_written = Some(HashSet::new());
    }

    pub fn note_key_written(&mut self, key: &[u8]) {
        if let Some(keys) = self.gc_keys_written.as_mut() {
            keys.insert(key.to_vec());
        }
    }

    /// Ends a GC's key tracking and returns the keys flushes changed meanwhile.
    pub fn end_gc(&mut self) -> HashSet<Vec<u8>> {
        self.gc_keys_written.take().unwrap_or_default()
    }

    /// Moves the committed tail; the space becomes reusable after readers older than
    /// `release_gen` are gone.
    pub fn advance_tail(&mut self, new_tail: u64, release_gen: u64) {
        assert!(self.tail <= new_tail && new_tail <= self.head);
        self.tail = new_tail;
        self.pending.push((release_gen, new_tail));
    }

    /// Makes space reusable whose readers are gone.
    pub fn reclaim(&mut self, oldest_reader: Option<u64>) {
        let mut i = 0;
        while i < self.pending.len() {
            let (gen, tail) = self.pending[i];
            if oldest_reader.is_none_or(|r| r >= gen) {
                self.reusable_tail = self.reusable_tail.max(tail);
                self.pending.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Reads the head's partly written block at open.
    pub fn load_head_block(&mut self, device: &dyn BlockDevice) -> Result<()> {
        let len = (self.head % self.block_bytes) as usize;
        self.head_block.clear();
        if len > 0 {
            let mut buf = AlignedBuf::new(self.block_bytes as usize);
            device.read_at(self.device_offset(self.head - len as u64), &mut buf[..])?;
            self.head_block.extend_from_slice(&buf[..len]);
        }
        Ok(())
    }

    /// Encodes records (position, key, value, seq) placed in `[start, end)` into
    /// aligned writes: from the start of `start`'s block (its written bytes first,
    /// unchanged), zero padding between records and up to the end's block boundary,
    /// split where the range wraps around the region. Remembers the new head block.
    pub fn encode_run(
        &mut self,
        records: &[(u64, &[u8], &[u8], u64)],
        start: u64,
        end: u64,
        buffers: &BufferPool,
    ) -> Vec<(u64, AlignedBuf, usize)> {
        if start == end {
            return Vec::new();
        }
        let block = self.block_bytes;
        let first = start - start % block;
        assert_eq!(
            self.head_block.len() as u64,
            start - first,
            "appends continue at the head"
        );
        let total = (end.next_multiple_of(block) - first) as usize;
        // The region's end is a chunk boundary, so a wrap splits the run at most once,
        // and never inside a record.
        let until_wrap = (self.region_bytes - first % self.region_bytes) as usize;
        let split = until_wrap.min(total);
        // (logical position, buffer, bytes to write, bytes written so far)
        let mut pieces: Vec<(u64, AlignedBuf, usize, usize)> =
            [(first, split), (first + split as u64, total - split)]
                .into_iter()
                .filter(|&(_, len)| len > 0)
                .map(|(at, len)| (at, buffers.take(len), len, 0))
                .collect();
        let piece_of = |pos: u64| usize::from(pos - first >= split as u64);
        let prefix = self.head_block.len();
        pieces[0].1[..prefix].copy_from_slice(&self.head_block);
        pieces[0].3 = prefix;
        // Records come in position order; reused buffers get zeros in every gap.
        for (pos, key, value, seq) in records {
            let (piece_at, buf, _, cursor) = &mut pieces[piece_of(*pos)];
            let at = (pos - *piece_at) as usize;
            debug_assert!(at >= *cursor, "records in position order");
            buf[*cursor..at].fill(0);
            *cursor = at + record::encode_into(&mut buf[at..], RecordKind::Value, *seq, key, value);
        }
        for (_, buf, len, cursor) in pieces.iter_mut() {
            buf[*cursor..*len].fill(0);
        }
        // Remember the written bytes of the new head's block.
        let tail_len = (end % block) as usize;
        self.head_block.clear();
        if tail_len > 0 {
            let (piece_at, buf, _, _) = &pieces[piece_of(end - 1)];
            let used = (end - piece_at) as usize;
            self.head_block
                .extend_from_slice(&buf[used - tail_len..used]);
        }
        pieces
            .into_iter()
            .map(|(at, buf, len, _)| (self.device_offset(at), buf, len))
            .collect()
    }

    pub fn encode_entry(&self) -> Vec<u8> {
        encode_entry(self.head, self.tail)
    }
}

/// The index entry holding head and tail: version, head, tail (LE), crc32c.
pub fn encode_entry(head: u64, tail: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(LOG_ENTRY_BYTES);
    out.push(LOG_ENTRY_VERSION);
    out.extend_from_slice(&head.to_le_bytes());
    out.extend_from_slice(&tail.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes (head, tail). Never panics on garbage.
pub fn decode_entry(bytes: &[u8]) -> Result<(u64, u64)> {
    if bytes.len() != LOG_ENTRY_BYTES {
        return Err(Error::Corruption {
            what: format!(
                "value log entry of {} bytes, expected {LOG_ENTRY_BYTES}",
                bytes.len()
            ),
        });
    }
    let (body, crc) = bytes.split_at(LOG_ENTRY_BYTES - 4);
    let stored = u32::from_le_bytes(crc.try_into().unwrap());
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(Error::ChecksumMismatch {
            what: "value log entry",
            stored,
            computed,
        });
    }
    if body[0] != LOG_ENTRY_VERSION {
        return Err(Error::Corruption {
            what: format!("value log entry version {} unknown", body[0]),
        });
    }
    let head = u64::from_le_bytes(body[1..9].try_into().unwrap());
    let tail = u64::from_le_bytes(body[9..17].try_into().unwrap());
    Ok((head, tail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Options;
    use rand::{Rng, SeedableRng};

    fn log() -> ValueLog {
        let o = Options::default()
            .with_main_segment_bytes(256 << 10)
            .with_log_segment_bytes(16 << 10);
        let layout = Layout::compute(16 << 20, 4096, &o).unwrap();
        ValueLog::new(&layout, 0, 0).unwrap()
    }

    #[test]
    fn records_never_cross_a_chunk_and_space_is_bounded() {
        let mut l = log();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut written = 0u64;
        loop {
            let lens: Vec<usize> = (0..rng.gen_range(1..20))
                .map(|_| rng.gen_range(21..(16 << 10)))
                .collect();
            let before = l.head;
            match l.place(&lens, false) {
                Ok((pos, start, end)) => {
                    assert_eq!(start, before);
                    for (p, len) in pos.iter().zip(&lens) {
                        assert_eq!(p / l.chunk_bytes, (p + *len as u64 - 1) / l.chunk_bytes);
                        assert!(*p >= start && p + *len as u64 <= end);
                    }
                    written += end - start;
                }
                Err(NeedSpace) => {
                    assert_eq!(l.head, before, "a refused placement changes nothing");
                    break;
                }
            }
        }
        assert_eq!(written, l.head);
        assert!(l.free_bytes() >= l.gc_reserve_bytes.saturating_sub(16 << 10) / 2);
        // GC may use the reserve; the tail frees space only once readers are gone.
        let (t0, t1) = l.gc_range().unwrap();
        assert_eq!(t0, 0);
        assert_eq!(t1, l.gc_chunk_bytes);
        let free = l.free_bytes();
        l.advance_tail(t1, 5);
        l.reclaim(Some(4));
        assert_eq!(l.free_bytes(), free);
        l.reclaim(Some(5));
        assert_eq!(l.free_bytes(), free + t1);
        // Device offsets wrap around the region.
        assert_eq!(l.device_offset(l.region_bytes), l.region_offset);
        let p = l.pointer(l.region_bytes + 5 * l.chunk_bytes + 100, 50, 9);
        assert_eq!(
            l.pointer_offset(&p),
            Some(l.region_offset + 5 * l.chunk_bytes + 100)
        );
    }

    /// A run that wraps around the region's end: two writes, the second at the
    /// region's start, every record decodable where its pointer says, and the head
    /// block remembered for the next append.
    #[test]
    fn encode_run_wraps_and_continues_the_head_block() {
        use crate::record::{SegmentRecords, RECORD_HEADER_BYTES};
        let mut l = log();
        // Move head and tail near the end of the first lap, mid-block.
        let near_end = l.region_bytes - l.chunk_bytes - 1000;
        l.head = near_end;
        l.tail = near_end;
        l.reusable_tail = near_end;
        l.head_block = vec![0xAB; (near_end % 4096) as usize];
        let value = vec![7u8; 3000];
        let key = b"key".to_vec();
        let rec_len = RECORD_HEADER_BYTES + key.len() + value.len();
        let lens = vec![rec_len; 12];
        let (positions, start, end) = l.place(&lens, false).unwrap();
        assert!(end > l.region_bytes, "the run wraps");
        let records: Vec<(u64, &[u8], &[u8], u64)> = positions
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, &key[..], &value[..], i as u64))
            .collect();
        let writes = l.encode_run(&records, start, end, &BufferPool::new(0));
        assert_eq!(writes.len(), 2);
        assert_eq!(
            writes[1].0, l.region_offset,
            "second piece at the region's start"
        );
        assert_eq!(
            writes[0].0 + writes[0].2 as u64,
            l.region_offset + l.region_bytes
        );
        assert_eq!(
            &writes[0].1[..(near_end % 4096) as usize],
            &vec![0xAB; (near_end % 4096) as usize][..]
        );
        for (i, &pos) in positions.iter().enumerate() {
            let p = l.pointer(pos, rec_len, i as u64);
            let at = l.pointer_offset(&p).unwrap();
            let (w_at, buf, _) = writes
                .iter()
                .find(|w| w.0 <= at && at < w.0 + w.2 as u64)
                .unwrap();
            let off = (at - w_at) as usize;
            let mut it = SegmentRecords::new_at(&buf[..off + rec_len], off, 4096);
            let (_, rec) = it.next().unwrap().unwrap();
            assert_eq!(
                (rec.key, rec.value, rec.seq),
                (&key[..], &value[..], i as u64)
            );
        }
        let (_, last, _) = writes.last().unwrap();
        assert!(writes.iter().all(|w| w.2 <= w.1.len()));
        let used = (end % l.region_bytes) as usize;
        assert_eq!(l.head_block, &last[used - used % 4096..used]);
    }

    #[test]
    fn entry_round_trip_and_garbage() {
        let e = encode_entry(1 << 40, 12345);
        assert_eq!(decode_entry(&e).unwrap(), (1 << 40, 12345));
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..2000 {
            let mut bad = e.clone();
            match rng.gen_range(0..3) {
                0 => bad.truncate(rng.gen_range(0..bad.len())),
                1 => {
                    let i = rng.gen_range(0..bad.len());
                    bad[i] ^= 1 << rng.gen_range(0..8);
                }
                _ => bad = (0..rng.gen_range(0..40)).map(|_| rng.gen()).collect(),
            }
            assert!(decode_entry(&bad).is_err());
        }
    }
}
