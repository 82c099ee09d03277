//! Where a flush's records go in the hashkv mode: each key's group, one aligned write
//! per (group, segment) run; a run continues its group's partly written last block.
//! Every key gets a record in its group: a value, or a tombstone for a delete or an
//! inline (small) value, so that GC never revives an older separated value.

use super::segment_table::{Appends, Placement};
use super::{group_of, Groups};
use crate::commit::DeviceWrite;
use crate::keys;
use crate::layout::Layout;
use crate::location::{Pointer, Region};
use crate::partial_block::PartialBlock;
use crate::record::{self, RecordKind};
use crate::store::{FlushRecord, IoCtx, PlaceError, Placed};
use std::collections::BTreeMap;

/// A flush's record indices per group, in key order within each group.
type ByGroup = BTreeMap<u32, Vec<usize>>;

fn encoded_len(r: &FlushRecord<'_>) -> usize {
    record::encoded_len(r.key.len(), r.value.map_or(0, |v| v.len()))
}

/// Places every record in its group, encodes the records and returns the writes, the
/// pointers of separated values and the changed segment-table entries. On
/// `NeedSpace` nothing changed.
pub(super) fn place(
    store: &Groups,
    io: &IoCtx<'_>,
    records: &[FlushRecord<'_>],
) -> Result<Placed, PlaceError> {
    let layout = store.layout;
    let mut by_group = ByGroup::new();
    for (i, r) in records.iter().enumerate() {
        by_group
            .entry(group_of(r.key, layout.group_count))
            .or_default()
            .push(i);
    }
    let (placements, entries, last_blocks) = reserve(store, io, records, &by_group)?;
    let mut writes = Vec::new();
    let mut record_at = vec![None; records.len()];
    let mut new_last_blocks = Vec::with_capacity(by_group.len());
    for (((&g, idx), places), last_block) in by_group.iter().zip(&placements).zip(&last_blocks) {
        let group = GroupRun {
            layout: &layout,
            records,
            idx,
            places,
        };
        let new_last_block = group.encode(io, last_block, &mut writes)?;
        for (&i, &at) in idx.iter().zip(places) {
            record_at[i] = Some(at);
        }
        new_last_blocks.push((g, new_last_block));
    }
    {
        let mut table = store.table.lock();
        for (g, last_block) in new_last_blocks {
            table.groups[g as usize].last_block = last_block;
        }
    }
    let pointers = records
        .iter()
        .zip(&record_at)
        .map(|(r, at)| {
            let at = at.expect("every record placed");
            r.value.map(|v| Pointer {
                region: Region::Segments,
                unit: at.segment,
                offset: at.offset as u32,
                record_bytes: record::encoded_len(r.key.len(), v.len()) as u32,
                seq: r.seq,
            })
        })
        .collect();
    Ok(Placed {
        writes,
        pointers,
        entries,
    })
}

/// Under the table's lock: places every group's records (all or nothing) and returns
/// their placements, the changed segment-table entries and each group's partly
/// written block before this flush.
#[allow(clippy::type_complexity)]
fn reserve(
    store: &Groups,
    io: &IoCtx<'_>,
    records: &[FlushRecord<'_>],
    by_group: &ByGroup,
) -> Result<
    (
        Vec<Vec<Placement>>,
        Vec<(Vec<u8>, Vec<u8>)>,
        Vec<PartialBlock>,
    ),
    PlaceError,
> {
    let per_group: Vec<(u32, Vec<usize>)> = by_group
        .iter()
        .map(|(g, idx)| (*g, idx.iter().map(|&i| encoded_len(&records[i])).collect()))
        .collect();
    let appends = if records.iter().any(|r| r.value.is_some()) {
        Appends::Values
    } else {
        Appends::TombstonesOnly
    };
    let mut table = store.table.lock();
    table.reclaim(io.readers.oldest_active());
    let placements =
        table
            .place_all(&per_group, appends)
            .map_err(|need| PlaceError::NeedSpace {
                group: need.group_at_limit,
            })?;
    let entries = by_group
        .keys()
        .map(|&g| (keys::group_key(g), table.encode_group(g)))
        .collect();
    let last_blocks = by_group
        .keys()
        .map(|&g| table.groups[g as usize].last_block.clone())
        .collect();
    Ok((placements, entries, last_blocks))
}

/// One group's records of a flush and where they were placed.
struct GroupRun<'a> {
    layout: &'a Layout,
    records: &'a [FlushRecord<'a>],
    idx: &'a [usize],
    places: &'a [Placement],
}

impl GroupRun<'_> {
    /// Encodes the group's records as one write per segment they landed in; the first
    /// continues the group's partly written block `last_block`. Returns the new partly
    /// written block.
    fn encode(
        &self,
        io: &IoCtx<'_>,
        last_block: &PartialBlock,
        writes: &mut Vec<DeviceWrite>,
    ) -> Result<PartialBlock, PlaceError> {
        let mut new_last_block = last_block.clone();
        let mut run_start = 0;
        while run_start < self.idx.len() {
            let seg = self.places[run_start].segment;
            let run_end = (run_start..self.idx.len())
                .find(|&j| self.places[j].segment != seg)
                .unwrap_or(self.idx.len());
            let (write, last_block) = self.encode_segment(io, last_block, run_start..run_end)?;
            new_last_block = last_block;
            writes.push(write);
            run_start = run_end;
        }
        Ok(new_last_block)
    }

    /// The aligned write of the records `run`, which all lie in one segment.
    fn encode_segment(
        &self,
        io: &IoCtx<'_>,
        last_block: &PartialBlock,
        run: std::ops::Range<usize>,
    ) -> Result<(DeviceWrite, PartialBlock), PlaceError> {
        let block = self.layout.block_bytes as usize;
        let seg = self.places[run.start].segment;
        let start = self.places[run.start].offset as usize;
        let prefix_len = start % block;
        let body: usize = run
            .clone()
            .map(|j| encoded_len(&self.records[self.idx[j]]))
            .sum();
        let used = prefix_len + body;
        let len = used.div_ceil(block) * block;
        let offset = self.layout.segment_offset(seg) + (start - prefix_len) as u64;
        // A reused buffer: every byte up to `len` is written below. Values are copied
        // once, here, straight into the device buffer.
        let mut buf = io.buffers.take(len);
        last_block.copy_prefix(&mut buf, offset, prefix_len)?;
        let mut at = prefix_len;
        for j in run {
            let r = &self.records[self.idx[j]];
            debug_assert_eq!(self.places[j].offset as usize, start + at - prefix_len);
            let kind = match r.value {
                Some(_) => RecordKind::Value,
                None => RecordKind::Tombstone,
            };
            at += record::encode_into(&mut buf[at..], kind, r.seq, r.key, r.value.unwrap_or(&[]));
        }
        debug_assert_eq!(at, used);
        buf[used..len].fill(0);
        let new_last_block = PartialBlock::after_write(&buf, offset, used, block);
        Ok((DeviceWrite { offset, buf, len }, new_last_block))
    }
}
