//! One aligned write of records placed in one segment after its written bytes: how
//! the groups' appends (`place.rs`) and the cold log's (`cold_write.rs`) both write.
//! The write starts at the block where the written bytes end, carrying them again
//! unchanged (the partly written block kept in memory), and zeros fill the padding
//! between records (`align.rs`) and the rest of the last block.

use crate::commit::DeviceWrite;
use crate::error::Result;
use crate::layout::{Layout, SegmentId};
use crate::partial_block::PartialBlock;
use crate::record::{self, RecordKind};
use crate::store::IoCtx;

/// A record and the offset in its segment it was placed at.
pub(super) struct RecordAt<'a> {
    pub offset: u64,
    pub kind: RecordKind,
    pub seq: u64,
    pub key: &'a [u8],
    /// The value of a value record, the tag of a cold tag, empty for a tombstone.
    pub body: &'a [u8],
}

/// Encodes `records`, placed in this order in `segment` after its `written` bytes,
/// into one aligned write; `last_block` is the partly written block where `written`
/// ends. Returns the write, the new partly written block and each record's checksum.
pub(super) fn encode(
    layout: &Layout,
    io: &IoCtx<'_>,
    segment: SegmentId,
    written: u64,
    last_block: &PartialBlock,
    records: &[RecordAt<'_>],
) -> Result<(DeviceWrite, PartialBlock, Vec<u32>)> {
    let block = layout.block_bytes as usize;
    let start = written as usize;
    let prefix_len = start % block;
    let last = records.last().expect("a run has records");
    let end = last.offset as usize + record::encoded_len(last.key.len(), last.body.len());
    let used = prefix_len + (end - start);
    let len = used.div_ceil(block) * block;
    let offset = layout.segment_offset(segment) + (start - prefix_len) as u64;
    // A reused buffer: every byte up to `len` is written below. Values are copied
    // once, here, straight into the device buffer.
    let mut buf = io.buffers.take(len);
    last_block.copy_prefix(&mut buf, offset, prefix_len)?;
    let mut crcs = Vec::with_capacity(records.len());
    let mut at = prefix_len;
    for r in records {
        let place = r.offset as usize + prefix_len - start;
        debug_assert!(place >= at, "records in place order");
        buf[at..place].fill(0);
        let encoded = record::encode_into(&mut buf[place..], r.kind, r.seq, r.key, r.body);
        crcs.push(encoded.crc);
        at = place + encoded.len;
    }
    debug_assert_eq!(at, used);
    buf[used..len].fill(0);
    let new_last_block = PartialBlock::after_write(&buf, offset, used, block);
    Ok((DeviceWrite { offset, buf, len }, new_last_block, crcs))
}
