//! One aligned write of records placed in one segment after its written bytes: how
//! the groups' appends (`place.rs`) and the cold log's (`cold_write.rs`) both write.
//! The write starts at the block where the written bytes end, carrying them again
//! unchanged (the partly written block kept in memory), and zeros fill the padding
//! between records (`align.rs`) and the rest of the last block.

use crate::cache_map::AlignedValue;
use crate::commit::DeviceWrite;
use crate::error::Result;
use crate::layout::{Layout, SegmentId};
use crate::partial_block::PartialBlock;
use crate::record::{self, RecordKind};
use crate::record_write::{self, PlacedRecord, WriteAt};
use crate::store::IoCtx;
use std::sync::Arc;

/// A record and the offset in its segment it was placed at.
pub(super) struct RecordAt<'a> {
    pub offset: u64,
    pub kind: RecordKind,
    pub seq: u64,
    pub key: &'a [u8],
    /// The value of a value record, the tag of a cold tag, empty for a tombstone.
    pub body: &'a [u8],
    /// The value's aligned copy in the write cache, if it has one.
    pub aligned: Option<&'a Arc<AlignedValue>>,
}

/// Encodes `records`, placed in this order in `segment` after its `written` bytes,
/// into one aligned write (`record_write.rs`: long values the write cache holds
/// aligned are spliced, not copied); `last_block` is the partly written block where
/// `written` ends. Returns the write, the new partly written block and each record's
/// checksum.
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
    let to = WriteAt {
        offset: layout.segment_offset(segment) + (start - prefix_len) as u64,
        len: used.div_ceil(block) * block,
        prefix: last_block,
        prefix_len,
    };
    let placed: Vec<PlacedRecord<'_>> = records
        .iter()
        .map(|r| PlacedRecord {
            at: r.offset as usize + prefix_len - start,
            kind: r.kind,
            seq: r.seq,
            key: r.key,
            body: r.body,
            aligned: r.aligned,
        })
        .collect();
    let (write, crcs) = io.encoder().encode(to, &placed)?;
    let new_last_block = record_write::block_after(&write, used, block);
    Ok((write, new_last_block, crcs))
}
