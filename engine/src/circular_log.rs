//! A circular log over one region of the device: records are appended at the head,
//! space is reclaimed from the tail. The vlog mode's value log is the one user. (The
//! hashkv mode's cold data log is not: it is a list of segments drawn from the same pool
//! as the groups' chains, so that its share of the space follows the workload;
//! `store/groups/cold_log.rs`.) This module owns what every such log shares:
//!
//! - positions are logical byte counts since format (`u64`, never wrapping in
//!   practice); the device offset of position `p` is `region_offset + p % region_bytes`;
//! - the region is cut into chunks; a record never crosses a chunk boundary (the rest
//!   of the chunk is zero padding), so a record is addressed by (chunk, offset);
//! - live space is `[tail, head)`; both are committed in the index in the same batch
//!   as the pointers that make them true ([`encode_entry`]);
//! - the partly written block at the head ([`PartialBlock`]);
//! - space behind an advanced tail is reused only once older readers are gone
//!   ([`Deferred`]).
//!
//! What a log is for (which records, when to collect) belongs to its owner.

use crate::align::RecordSize;
use crate::cache_map::AlignedValue;
use crate::commit::DeviceWrite;
use crate::entry_codec;
use crate::error::{Error, Result};
use crate::partial_block::PartialBlock;
use crate::readers::Deferred;
use crate::record::RecordKind;
use crate::record_write::{Encoder, PlacedRecord, WriteAt};
use crate::spans::Span;
use hashkv_blockdev::BlockDevice;
use std::sync::Arc;

const LOG_ENTRY_VERSION: u8 = 1;
const LOG_ENTRY_BODY_BYTES: usize = 8 + 8;

/// Records do not fit in the space the caller may use: collect, then retry.
#[derive(Debug)]
pub struct NeedSpace;

/// Where a log lies on the device; fixed for the store's life, so readers need no lock
/// to turn a pointer into a device offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogGeometry {
    pub region_offset: u64,
    pub region_bytes: u64,
    /// A record never crosses a multiple of this.
    pub chunk_bytes: u64,
    pub block_bytes: u64,
}

impl LogGeometry {
    pub fn chunk_count(&self) -> u32 {
        (self.region_bytes / self.chunk_bytes) as u32
    }

    /// Device offset of a logical position.
    pub fn device_offset(&self, position: u64) -> u64 {
        self.region_offset + position % self.region_bytes
    }

    /// (chunk, offset within the chunk) of a logical position.
    pub fn locate(&self, position: u64) -> (u32, u32) {
        let physical = position % self.region_bytes;
        (
            (physical / self.chunk_bytes) as u32,
            (physical % self.chunk_bytes) as u32,
        )
    }

    /// Device offset of a record of `record_bytes` at (chunk, offset), or `None` if it
    /// does not lie within one chunk of the log.
    pub fn record_offset(&self, chunk: u32, offset: u32, record_bytes: u32) -> Option<u64> {
        let fits = chunk < self.chunk_count()
            && u64::from(offset) + u64::from(record_bytes) <= self.chunk_bytes;
        fits.then(|| self.region_offset + u64::from(chunk) * self.chunk_bytes + u64::from(offset))
    }

    /// The spans to read for the records in `[start, end)`, one per chunk (records
    /// never cross a chunk), each with the position its first block starts at.
    pub fn spans(&self, start: u64, end: u64) -> Vec<(u64, Span)> {
        let mut spans = Vec::new();
        let mut at = start;
        while at < end {
            let piece_end = (at / self.chunk_bytes + 1) * self.chunk_bytes;
            let piece_end = piece_end.min(end);
            let span = Span::covering(self.device_offset(at), piece_end - at, self.block_bytes);
            spans.push((at - span.from as u64, span));
            at = piece_end;
        }
        spans
    }

    /// Whether a record of `record_bytes` at device offset `at` lies in `[tail, head)`.
    pub fn holds(&self, at: u64, record_bytes: u32, tail: u64, head: u64) -> bool {
        let x = at - self.region_offset;
        let from_tail = (x + self.region_bytes - tail % self.region_bytes) % self.region_bytes;
        from_tail + u64::from(record_bytes) <= head - tail
    }
}

/// A record to append at a placed position.
pub struct RunRecord<'a> {
    pub position: u64,
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// The value's aligned copy in the write cache, if it has one (a flush's).
    pub aligned: Option<&'a Arc<AlignedValue>>,
    pub seq: u64,
}

/// The records of one append, placed.
#[derive(Debug)]
pub struct Placed {
    /// Logical position of each record.
    pub positions: Vec<u64>,
    /// The range `[start, end)` written.
    pub start: u64,
    pub end: u64,
}

#[derive(Debug)]
pub struct CircularLog {
    geometry: LogGeometry,
    /// Next append position.
    head: u64,
    /// Oldest position the index may point at.
    tail: u64,
    /// Space before this may be overwritten: readers that started before the tail
    /// moved past it are gone.
    reusable_tail: u64,
    /// Tail advances waiting for older readers.
    released: Deferred<u64>,
    head_block: PartialBlock,
}

impl CircularLog {
    /// A log with committed `head` and `tail`; checks them against the region.
    pub fn new(geometry: LogGeometry, head: u64, tail: u64) -> Result<CircularLog> {
        if tail > head || head - tail > geometry.region_bytes {
            return Err(Error::corrupt(
                "circular log head and tail",
                format!(
                    "tail <= head, at most {} bytes apart",
                    geometry.region_bytes
                ),
                format!("head {head}, tail {tail}"),
            ));
        }
        Ok(CircularLog {
            geometry,
            head,
            tail,
            reusable_tail: tail,
            released: Deferred::default(),
            head_block: PartialBlock::default(),
        })
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn tail(&self) -> u64 {
        self.tail
    }

    pub fn used_bytes(&self) -> u64 {
        self.head - self.tail
    }

    /// Bytes that may be written now.
    pub fn free_bytes(&self) -> u64 {
        self.geometry.region_bytes - (self.head - self.reusable_tail)
    }

    pub fn pending_release(&self) -> bool {
        self.released.len() > 0
    }

    /// Places records of the given sizes at the head, each within one chunk (values
    /// on `align_bytes` where `align.rs` says), leaving `keep_free_bytes` of the free
    /// space untouched. On `NeedSpace` nothing changed.
    pub fn place(
        &mut self,
        sizes: &[RecordSize],
        align_bytes: u64,
        keep_free_bytes: u64,
    ) -> std::result::Result<Placed, NeedSpace> {
        let start = self.head;
        let chunk = self.geometry.chunk_bytes;
        let mut at = start;
        let mut positions = Vec::with_capacity(sizes.len());
        for size in sizes {
            assert!(size.len <= chunk, "record larger than a chunk");
            let (chunk_start, in_chunk) = match size.place_within(at % chunk, align_bytes, chunk) {
                Some((s, _)) => (at - at % chunk, s),
                None => {
                    let next = at.next_multiple_of(chunk);
                    let (s, _) = size
                        .place_within(0, align_bytes, chunk)
                        .expect("a record fits an empty chunk");
                    (next, s)
                }
            };
            positions.push(chunk_start + in_chunk);
            at = chunk_start + in_chunk + size.len;
        }
        let end = at;
        // The write reaches the end of `end`'s block (zeros), which must stay clear of
        // the oldest space readers may still read.
        let written = end.next_multiple_of(self.geometry.block_bytes) - start;
        if start != end && written + keep_free_bytes > self.free_bytes() {
            return Err(NeedSpace);
        }
        self.head = end;
        Ok(Placed {
            positions,
            start,
            end,
        })
    }

    /// Encodes value records placed in `[start, end)` into aligned writes: from the
    /// start of `start`'s block (its committed bytes first, unchanged), zero padding
    /// between records and up to the end's block boundary, split where the range wraps
    /// around the region. Remembers the new head block. Returns the writes and each
    /// record's checksum.
    pub fn encode_run(
        &mut self,
        records: &[RunRecord<'_>],
        placed: &Placed,
        encoder: &Encoder<'_>,
    ) -> Result<(Vec<DeviceWrite>, Vec<u32>)> {
        let (start, end) = (placed.start, placed.end);
        if start == end {
            return Ok((Vec::new(), Vec::new()));
        }
        let g = self.geometry;
        let first = start - start % g.block_bytes;
        let total = end.next_multiple_of(g.block_bytes) - first;
        // The region's end is a chunk boundary, so a wrap splits the run at most once,
        // and never inside a record.
        let until_wrap = g.region_bytes - first % g.region_bytes;
        let split = until_wrap.min(total);
        let no_prefix = PartialBlock::default();
        let (mut writes, mut crcs) = (Vec::with_capacity(2), Vec::with_capacity(records.len()));
        let mut last_position = None;
        for (position, len) in [(first, split), (first + split, total - split)] {
            if len == 0 {
                continue;
            }
            last_position = Some(position);
            let (prefix, prefix_len) = if position == first {
                (&self.head_block, (start - first) as usize)
            } else {
                (&no_prefix, 0)
            };
            let to = WriteAt {
                offset: g.device_offset(position),
                len: len as usize,
                prefix,
                prefix_len,
            };
            let placed: Vec<PlacedRecord<'_>> = records
                .iter()
                .filter(|r| (position..position + len).contains(&r.position))
                .map(|r| PlacedRecord {
                    at: (r.position - position) as usize,
                    kind: RecordKind::Value,
                    seq: r.seq,
                    key: r.key,
                    body: r.value,
                    aligned: r.aligned,
                })
                .collect();
            let (write, write_crcs) = encoder.encode(to, &placed)?;
            writes.push(write);
            crcs.extend(write_crcs);
        }
        let (last, last_position) = writes.last().zip(last_position).expect("a run writes");
        self.head_block =
            PartialBlock::after_write(last, (end - last_position) as usize, g.block_bytes as usize);
        Ok((writes, crcs))
    }

    /// Moves the tail as the batch queued with it will commit it (under the commit
    /// lock): every entry encoded from now on, in batches that commit after it,
    /// carries it. One that carried the old tail after it would, after a crash, make
    /// space count as live that is reused once the move commits.
    pub fn advance_tail(&mut self, new_tail: u64) {
        assert!(self.tail <= new_tail && new_tail <= self.head);
        self.tail = new_tail;
    }

    /// The batch that moved the tail to `tail` committed: the space behind it becomes
    /// reusable after readers older than `release_gen` are gone.
    pub fn release_behind(&mut self, tail: u64, release_gen: u64) {
        assert!(tail <= self.tail);
        self.released.defer(release_gen, tail);
    }

    /// Makes space reusable whose readers are gone; returns whether any became so.
    pub fn reclaim(&mut self, oldest_reader: Option<u64>) -> bool {
        let before = self.reusable_tail;
        for tail in self.released.ready(oldest_reader) {
            self.reusable_tail = self.reusable_tail.max(tail);
        }
        self.reusable_tail > before
    }

    /// Reads the head's partly written block at open.
    pub fn load_head_block(&mut self, device: &dyn BlockDevice) -> Result<()> {
        let in_block = self.head % self.geometry.block_bytes;
        let block_start = self.geometry.device_offset(self.head - in_block);
        self.head_block =
            PartialBlock::read(device, block_start + in_block, self.geometry.block_bytes)?;
        Ok(())
    }

    pub fn encode_entry(&self) -> Vec<u8> {
        encode_entry(self.head, self.tail)
    }
}

/// The index entry of a log's head and tail (LE), sealed with version and checksum.
pub fn encode_entry(head: u64, tail: u64) -> Vec<u8> {
    let mut body = [0u8; LOG_ENTRY_BODY_BYTES];
    body[..8].copy_from_slice(&head.to_le_bytes());
    body[8..].copy_from_slice(&tail.to_le_bytes());
    entry_codec::seal(LOG_ENTRY_VERSION, &body)
}

/// Decodes (head, tail). Never panics on garbage.
pub fn decode_entry(bytes: &[u8]) -> Result<(u64, u64)> {
    let body = entry_codec::open(bytes, "circular log entry", LOG_ENTRY_VERSION)?;
    if body.len() != LOG_ENTRY_BODY_BYTES {
        return Err(Error::corrupt(
            "circular log entry",
            format!("{LOG_ENTRY_BODY_BYTES} body bytes"),
            format!("{} body bytes", body.len()),
        ));
    }
    let head = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    let tail = u64::from_le_bytes(body[8..].try_into().expect("8 bytes"));
    Ok((head, tail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{SegmentRecords, RECORD_HEADER_BYTES};
    use rand::{Rng, SeedableRng};

    const CHUNK: u64 = 16 << 10;
    const KEEP_FREE: u64 = 2 * 64 * 1024 + CHUNK;

    fn log() -> CircularLog {
        let geometry = LogGeometry {
            region_offset: 256 << 10,
            region_bytes: 64 * CHUNK,
            chunk_bytes: CHUNK,
            block_bytes: 4096,
        };
        CircularLog::new(geometry, 0, 0).unwrap()
    }

    #[test]
    fn records_never_cross_a_chunk_and_space_is_bounded() {
        let mut l = log();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut written = 0u64;
        loop {
            let lens: Vec<usize> = (0..rng.gen_range(1..20))
                .map(|_| rng.gen_range(21..CHUNK as usize))
                .collect();
            let before = l.head();
            let sizes: Vec<RecordSize> = lens.iter().map(|&l| RecordSize::unpadded(l)).collect();
            match l.place(&sizes, 1, KEEP_FREE) {
                Ok(p) => {
                    assert_eq!(p.start, before);
                    for (pos, len) in p.positions.iter().zip(&lens) {
                        assert_eq!(pos / CHUNK, (pos + *len as u64 - 1) / CHUNK);
                        assert!(*pos >= p.start && pos + *len as u64 <= p.end);
                    }
                    written += p.end - p.start;
                }
                Err(NeedSpace) => {
                    assert_eq!(l.head(), before, "a refused placement changes nothing");
                    break;
                }
            }
        }
        assert_eq!(written, l.head());
        assert!(
            l.free_bytes() >= KEEP_FREE,
            "placements leave the reserve free"
        );
        // Without the reserve, the rest may be used; the tail frees space only once
        // readers are gone.
        let free = l.free_bytes();
        l.advance_tail(4 * CHUNK);
        l.reclaim(Some(4));
        assert_eq!(l.free_bytes(), free, "moved, not yet committed");
        l.release_behind(4 * CHUNK, 5);
        l.reclaim(Some(4));
        assert_eq!(l.free_bytes(), free);
        l.reclaim(Some(5));
        assert_eq!(l.free_bytes(), free + 4 * CHUNK);
        // Device offsets wrap around the region.
        let g = l.geometry;
        assert_eq!(g.device_offset(g.region_bytes), g.region_offset);
        let (chunk, offset) = g.locate(g.region_bytes + 5 * CHUNK + 100);
        assert_eq!(
            g.record_offset(chunk, offset, 50),
            Some(g.region_offset + 5 * CHUNK + 100)
        );
        assert_eq!(g.record_offset(chunk, CHUNK as u32 - 10, 50), None);
    }

    /// A run that wraps around the region's end: two writes, the second at the
    /// region's start, every record decodable where its position says, and the head
    /// block remembered for the next append.
    #[test]
    fn encode_run_wraps_and_continues_the_head_block() {
        let mut l = log();
        let g = l.geometry;
        // Move head and tail near the end of the first lap, mid-block, with a head
        // block of known bytes.
        let near_end = g.region_bytes - CHUNK - 1000;
        l = CircularLog::new(g, near_end, near_end).unwrap();
        let in_block = (near_end % 4096) as usize;
        let block_start = g.device_offset(near_end) - in_block as u64;
        let mut prior = hashkv_blockdev::AlignedBuf::new(8192);
        prior[..in_block].fill(0xAB);
        let prior = DeviceWrite::own(block_start, prior, 8192);
        l.head_block = PartialBlock::after_write(&prior, in_block, 4096);
        let value = vec![7u8; 3000];
        let key = b"key".to_vec();
        let rec_len = RECORD_HEADER_BYTES + key.len() + value.len();
        let placed = l
            .place(&[RecordSize::value(key.len(), value.len()); 12], 512, 0)
            .unwrap();
        assert_eq!(
            rec_len as u64,
            RecordSize::value(key.len(), value.len()).len
        );
        assert!(placed.end > g.region_bytes, "the run wraps");
        let records: Vec<RunRecord<'_>> = placed
            .positions
            .iter()
            .enumerate()
            .map(|(i, &position)| RunRecord {
                position,
                key: &key,
                value: &value,
                aligned: None,
                seq: i as u64,
            })
            .collect();
        let encoder = Encoder {
            buffers: &crate::buffers::BufferPool::new(0, crate::buffers::WRITE_BUFFER_BYTES_MIN),
            counters: &crate::stats::Counters::default(),
            sector_bytes: 512,
        };
        let (writes, crcs) = l.encode_run(&records, &placed, &encoder).unwrap();
        assert_eq!(crcs.len(), 12);
        assert_eq!(writes.len(), 2);
        assert_eq!(
            writes[1].offset, g.region_offset,
            "second piece at the start"
        );
        assert_eq!(
            writes[0].offset + writes[0].len as u64,
            g.region_offset + g.region_bytes
        );
        assert!(writes[0].buf[..in_block].iter().all(|&b| b == 0xAB));
        for (i, &pos) in placed.positions.iter().enumerate() {
            let at = g.device_offset(pos);
            let w = writes
                .iter()
                .find(|w| w.offset <= at && at < w.offset + w.len as u64)
                .unwrap();
            let off = (at - w.offset) as usize;
            let mut it = SegmentRecords::new_at(&w.buf[..off + rec_len], off);
            let (_, rec) = it.next().unwrap().unwrap();
            assert_eq!(
                (rec.key, rec.value, rec.seq, rec.crc),
                (&key[..], &value[..], i as u64, crcs[i])
            );
        }
        // The next append continues the head block it just wrote.
        let last = writes.last().unwrap();
        let used = (placed.end % g.region_bytes) as usize;
        let mut next = vec![0u8; 4096];
        let prefix = used % 4096;
        l.head_block
            .copy_prefix(&mut next, last.offset + (used - prefix) as u64, prefix)
            .unwrap();
        assert_eq!(&next[..prefix], &last.buf[used - prefix..used]);
    }

    #[test]
    fn entry_round_trip_and_garbage() {
        let e = encode_entry(1 << 40, 12345);
        assert_eq!(decode_entry(&e).unwrap(), (1 << 40, 12345));
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..2000 {
            let bad = crate::entry_codec::garbled(&mut rng, &e, 40);
            assert!(decode_entry(&bad).is_err());
        }
    }

    #[test]
    fn inconsistent_head_and_tail_are_refused() {
        let g = log().geometry;
        assert!(CircularLog::new(g, 10, 20).is_err());
        assert!(CircularLog::new(g, g.region_bytes + 1, 0).is_err());
    }
}
