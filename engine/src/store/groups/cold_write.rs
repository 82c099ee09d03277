//! Writing records into the cold data log: a group GC's demoted values and a cold
//! GC's copies, encoded straight into aligned buffers, one write per cold segment
//! they fill. The first continues the head's partly written block. A record moves
//! unchanged (same key, sequence number and value), so its checksum moves with it.

use super::cold_log::ColdPlace;
use crate::align::RecordSize;
use crate::commit::DeviceWrite;
use crate::error::Result;
use crate::layout::{Layout, SegmentId};
use crate::partial_block::PartialBlock;
use crate::record::{self, RecordKind};
use crate::store::IoCtx;

/// A value record to write at its place in the cold log.
pub(super) struct ColdRecord<'a> {
    pub place: ColdPlace,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub seq: u64,
    /// The record's checksum where it was (it is the same here).
    pub crc: u32,
}

impl ColdRecord<'_> {
    pub fn size(&self) -> RecordSize {
        RecordSize::value(self.key.len(), self.value.len())
    }
}

/// Encodes `records` (in the order `place_cold` placed them: in order within each
/// segment, values padded onto sectors where `align.rs` says) and remembers the new
/// head block in `head_block`. `head_end` is the head segment and its written bytes
/// before the placement (`ColdLog::head_end`).
pub(super) fn encode(
    layout: &Layout,
    io: &IoCtx<'_>,
    head_block: &mut PartialBlock,
    head_end: Option<(SegmentId, u64)>,
    records: &[ColdRecord<'_>],
) -> Result<Vec<DeviceWrite>> {
    let block = layout.block_bytes as usize;
    let mut writes = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let segment = records[start].place.segment;
        let end = (start..records.len())
            .find(|&i| records[i].place.segment != segment)
            .unwrap_or(records.len());
        let run = &records[start..end];
        // The write continues the segment's written bytes (none in a fresh one).
        let first = match head_end {
            Some((s, used)) if s == segment => used as usize,
            _ => 0,
        };
        let prefix_len = first % block;
        let last = &run[run.len() - 1];
        let run_end = last.place.offset as usize + last.size().len as usize;
        let used = prefix_len + (run_end - first);
        let len = used.div_ceil(block) * block;
        let offset = layout.segment_offset(segment) + (first - prefix_len) as u64;
        // Every byte up to `len` is written below.
        let mut buf = io.buffers.take(len);
        head_block.copy_prefix(&mut buf, offset, prefix_len)?;
        let mut at = prefix_len;
        for r in run {
            let place = r.place.offset as usize + prefix_len - first;
            debug_assert!(place >= at, "records in place order");
            buf[at..place].fill(0);
            let encoded =
                record::encode_into(&mut buf[place..], RecordKind::Value, r.seq, r.key, r.value);
            debug_assert_eq!(encoded.crc, r.crc, "a moved record keeps its checksum");
            at = place + encoded.len;
        }
        debug_assert_eq!(at, used);
        buf[used..len].fill(0);
        *head_block = PartialBlock::after_write(&buf, offset, used, block);
        writes.push(DeviceWrite { offset, buf, len });
        start = end;
    }
    Ok(writes)
}
