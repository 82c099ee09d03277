//! One aligned write of records placed in one segment after its written bytes: how
//! the groups' appends (`place.rs`) and the cold log's (`cold_write.rs`) both write.
//! The write starts at the block where the written bytes end, carrying them again
//! unchanged (the partly written block kept in memory), and zeros fill the padding
//! between records (`align.rs`) and the rest of the last block.

use crate::commit::DeviceWrite;
use crate::error::Result;
use crate::layout::{Layout, SegmentId};
use crate::partial_block::PartialBlock;
use crate::record;
use crate::record_write::{PlacedRecord, WriteAt};
use crate::store::IoCtx;

/// Encodes `records`, placed in this order in `segment` after its `written` bytes
/// (each record's `at` its offset in the segment), into one aligned write
/// (`record_write.rs`: long values the write cache holds aligned are spliced, not
/// copied); `last_block` is the partly written block where `written` ends. Returns
/// the write, the new partly written block and each record's checksum.
pub(super) fn encode(
    layout: &Layout,
    io: &IoCtx<'_>,
    segment: SegmentId,
    written: u64,
    last_block: &PartialBlock,
    mut records: Vec<PlacedRecord<'_>>,
) -> Result<(DeviceWrite, PartialBlock, Vec<u32>)> {
    let block = layout.block_bytes as usize;
    let start = written as usize;
    let prefix_len = start % block;
    let last = records.last().expect("a run has records");
    let end = last.at + record::encoded_len(last.key.len(), last.body.len());
    let used = prefix_len + (end - start);
    let to = WriteAt {
        offset: layout.segment_offset(segment) + (start - prefix_len) as u64,
        len: used.div_ceil(block) * block,
        prefix: last_block,
        prefix_len,
    };
    // From offsets in the segment to offsets in the write.
    for r in &mut records {
        r.at = r.at + prefix_len - start;
    }
    let (write, crcs) = io.encoder().encode(to, &records)?;
    let new_last_block = PartialBlock::after_write(&write, used, block);
    Ok((write, new_last_block, crcs))
}
