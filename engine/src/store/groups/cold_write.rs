//! Writing records into the cold data log: a group GC's demoted values and a cold
//! GC's copies, encoded straight into aligned buffers, one write per cold segment
//! they fill. The first continues the head's partly written block.

use super::cold_log::ColdPlace;
use crate::commit::DeviceWrite;
use crate::error::Result;
use crate::layout::Layout;
use crate::partial_block::PartialBlock;
use crate::record::{self, RecordKind};
use crate::store::IoCtx;

/// A value record to write at its place in the cold log.
pub(super) struct ColdRecord<'a> {
    pub place: ColdPlace,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub seq: u64,
}

impl ColdRecord<'_> {
    pub fn encoded_len(&self) -> usize {
        record::encoded_len(self.key.len(), self.value.len())
    }
}

/// Encodes `records` (in the order `place_cold` placed them: packed back to back
/// within each segment) and remembers the new head block in `head_block`.
pub(super) fn encode(
    layout: &Layout,
    io: &IoCtx<'_>,
    head_block: &mut PartialBlock,
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
        let first = run[0].place.offset as usize;
        let prefix_len = first % block;
        let used = prefix_len + run.iter().map(ColdRecord::encoded_len).sum::<usize>();
        let len = used.div_ceil(block) * block;
        let offset = layout.segment_offset(segment) + (first - prefix_len) as u64;
        // Every byte up to `len` is written below.
        let mut buf = io.buffers.take(len);
        head_block.copy_prefix(&mut buf, offset, prefix_len)?;
        let mut at = prefix_len;
        for r in run {
            debug_assert_eq!(r.place.offset as usize, first + at - prefix_len);
            at += record::encode_into(&mut buf[at..], RecordKind::Value, r.seq, r.key, r.value);
        }
        buf[used..len].fill(0);
        *head_block = PartialBlock::after_write(&buf, offset, used, block);
        writes.push(DeviceWrite { offset, buf, len });
        start = end;
    }
    Ok(writes)
}
