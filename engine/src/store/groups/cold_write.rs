//! Writing records into the cold data log: a group GC's demoted values and a cold
//! GC's copies, encoded straight into aligned buffers, one write per cold segment
//! they fill. The first continues the head's partly written block. A record moves
//! unchanged (same key, sequence number and value), so its checksum moves with it.

use super::cold_log::ColdPlace;
use super::segment_run;
use crate::align::RecordSize;
use crate::commit::DeviceWrite;
use crate::error::Result;
use crate::layout::{Layout, SegmentId};
use crate::partial_block::PartialBlock;
use crate::record::RecordKind;
use crate::record_write::PlacedRecord;
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
    let mut writes = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let segment = records[start].place.segment;
        let end = (start..records.len())
            .find(|&i| records[i].place.segment != segment)
            .unwrap_or(records.len());
        // The write continues the segment's written bytes (none in a fresh one).
        let written = match head_end {
            Some((s, used)) if s == segment => used,
            _ => 0,
        };
        let run: Vec<PlacedRecord<'_>> = records[start..end]
            .iter()
            .map(|r| PlacedRecord {
                at: r.place.offset as usize,
                kind: RecordKind::Value,
                seq: r.seq,
                key: r.key,
                body: r.value,
                aligned: None,
            })
            .collect();
        let (write, new_head_block, crcs) =
            segment_run::encode(layout, io, segment, written, head_block, run)?;
        debug_assert!(
            records[start..end]
                .iter()
                .zip(&crcs)
                .all(|(r, &c)| r.crc == c),
            "a moved record keeps its checksum"
        );
        *head_block = new_head_block;
        writes.push(write);
        start = end;
    }
    Ok(writes)
}
