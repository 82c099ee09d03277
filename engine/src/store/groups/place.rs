//! Where a flush's records go in the hashkv mode: each key's group, one aligned write
//! per (group, segment) run; a run continues its group's partly written last block.
//! Every key gets a record in its group: a value, or a tombstone for a delete or an
//! inline (small) value, so that GC never revives an older separated value.

use super::segment_run;
use super::segment_table::{Appends, Placement};
use super::{group_of_hash, Groups};
use crate::align::RecordSize;
use crate::cache_map::AlignedValue;
use crate::commit::DeviceWrite;
use crate::error::Result;
use crate::keys;
use crate::layout::{Layout, SegmentId};
use crate::location::{Pointer, Region};
use crate::partial_block::PartialBlock;
use crate::record::{self, RecordKind};
use crate::record_write::PlacedRecord;
use crate::store::{FlushRecord, IoCtx, PlaceError, Placed};
use std::sync::Arc;

/// Record indices per group, in order within each group, groups in ascending order:
/// one array of (group, index) pairs sorted once, not a map of vectors, which cost a
/// map step and a vector push per record. Nothing in it grows with the group count: a
/// small (sync) flush on a store of many groups costs what its records cost.
struct ByGroup {
    /// The groups with records, ascending.
    groups: Vec<u32>,
    /// `order[starts[i]..starts[i + 1]]` are the records of `groups[i]`.
    starts: Vec<usize>,
    order: Vec<usize>,
}

impl ByGroup {
    fn of(records: &[AppendRecord<'_>], group_count: u32) -> ByGroup {
        // A group in the high half, the record's index in the low half: sorted, the
        // pairs are in group order and in record order within a group. (A flush holds
        // at most twice a write cache, far fewer than 2^32 records.)
        assert!(
            u32::try_from(records.len()).is_ok(),
            "2^32 records in one append"
        );
        let mut pairs: Vec<u64> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (u64::from(group_of_hash(r.key_hash, group_count)) << 32) | i as u64)
            .collect();
        pairs.sort_unstable();
        let (mut groups, mut starts) = (Vec::new(), Vec::new());
        for (at, &pair) in pairs.iter().enumerate() {
            let group = (pair >> 32) as u32;
            if groups.last() != Some(&group) {
                groups.push(group);
                starts.push(at);
            }
        }
        starts.push(records.len());
        let order = pairs.iter().map(|&pair| pair as u32 as usize).collect();
        ByGroup {
            groups,
            starts,
            order,
        }
    }

    fn len(&self) -> usize {
        self.groups.len()
    }

    fn keys(&self) -> impl Iterator<Item = &u32> {
        self.groups.iter()
    }

    fn iter(&self) -> impl Iterator<Item = (&u32, &[usize])> {
        self.groups
            .iter()
            .zip(self.starts.windows(2))
            .map(|(g, w)| (g, &self.order[w[0]..w[1]]))
    }
}

/// One record to append to its key's group.
pub(super) struct AppendRecord<'a> {
    pub key: &'a [u8],
    /// `HashedKey::hash` of `key`: it chooses the group.
    pub key_hash: u64,
    pub kind: RecordKind,
    /// The value of a value record, the tag of a cold tag, empty for a tombstone.
    pub body: &'a [u8],
    /// A value record's value as the write cache holds it aligned, if it does.
    pub aligned: Option<&'a Arc<AlignedValue>>,
    pub seq: u64,
}

impl AppendRecord<'_> {
    /// Values may be padded onto a sector (`align.rs`); tombstones and tags never are.
    fn size(&self) -> RecordSize {
        match self.kind {
            RecordKind::Value => RecordSize::value(self.key.len(), self.body.len()),
            _ => RecordSize::unpadded(record::encoded_len(self.key.len(), self.body.len())),
        }
    }
}

/// What an append produced: the writes, where each record went and its checksum, and
/// the changed segment-table entries.
pub(super) struct Appended {
    pub writes: Vec<DeviceWrite>,
    pub places: Vec<Placement>,
    pub crcs: Vec<u32>,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Places a flush's records (each key's value, or a tombstone for a delete or an
/// inline value) and returns the writes, the pointers of separated values and the
/// changed segment-table entries. On `NeedSpace` nothing changed.
pub(super) fn place(
    store: &Groups,
    io: &IoCtx<'_>,
    records: &[FlushRecord<'_>],
) -> Result<Placed, PlaceError> {
    let appends: Vec<AppendRecord<'_>> = records
        .iter()
        .map(|r| AppendRecord {
            key: r.key,
            key_hash: r.key_hash,
            kind: match r.value {
                Some(_) => RecordKind::Value,
                None => RecordKind::Tombstone,
            },
            body: r.value.unwrap_or(&[]),
            aligned: r.aligned,
            seq: r.seq,
        })
        .collect();
    let has_values = records.iter().any(|r| r.value.is_some());
    let appended = append(store, io, &appends, has_values)?;
    let pointers = records
        .iter()
        .zip(appended.places.iter().zip(&appended.crcs))
        .map(|(r, (at, &crc))| {
            r.value.map(|v| Pointer {
                region: Region::Segments,
                unit: at.segment,
                offset: at.offset as u32,
                record_bytes: record::encoded_len(r.key.len(), v.len()) as u32,
                seq: r.seq,
                crc,
            })
        })
        .collect();
    Ok(Placed {
        writes: appended.writes,
        pointers,
        entries: appended.entries,
    })
}

/// Appends records to their keys' groups (call under the commit lock: flushes and
/// cold GC's relocation tags). `has_values` says whether any record carries a value
/// (they count against a group's chain limit). On `NeedSpace` nothing changed.
pub(super) fn append(
    store: &Groups,
    io: &IoCtx<'_>,
    records: &[AppendRecord<'_>],
    has_values: bool,
) -> Result<Appended, PlaceError> {
    let layout = store.layout;
    let by_group = ByGroup::of(records, layout.group_count);
    let appends = if has_values {
        Appends::Values
    } else {
        Appends::TombstonesOnly
    };
    let (placements, entries, ends) = reserve(store, io, records, &by_group, appends)?;
    let mut writes = Vec::new();
    let mut record_at = vec![None; records.len()];
    let mut crcs = vec![0; records.len()];
    let mut new_last_blocks = Vec::with_capacity(by_group.len());
    for (((&g, idx), places), (last_block, end)) in by_group.iter().zip(&placements).zip(&ends) {
        let group = GroupRun {
            layout: &layout,
            records,
            idx,
            places,
            chain_end: *end,
        };
        let new_last_block = group.encode(io, last_block, &mut writes, &mut crcs)?;
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
    Ok(Appended {
        writes,
        places: record_at
            .into_iter()
            .map(|at| at.expect("every record placed"))
            .collect(),
        crcs,
        entries,
    })
}

/// Where a group's chain ended before an append: its last segment and the bytes
/// written there, with its partly written block.
type ChainEnd = (PartialBlock, Option<(SegmentId, u64)>);

/// Under the table's lock: places every group's records (all or nothing) and returns
/// their placements, the changed segment-table entries and each group's chain end
/// before this append.
#[allow(clippy::type_complexity)]
fn reserve(
    store: &Groups,
    io: &IoCtx<'_>,
    records: &[AppendRecord<'_>],
    by_group: &ByGroup,
    appends: Appends,
) -> Result<(Vec<Vec<Placement>>, Vec<(Vec<u8>, Vec<u8>)>, Vec<ChainEnd>), PlaceError> {
    let per_group: Vec<(u32, Vec<RecordSize>)> = by_group
        .iter()
        .map(|(g, idx)| (*g, idx.iter().map(|&i| records[i].size()).collect()))
        .collect();
    let mut table = store.table.lock();
    table.reclaim(io.readers.oldest_active());
    let ends = by_group
        .keys()
        .map(|&g| {
            let group = &table.groups[g as usize];
            let last = group.chain.last().map(|s| (s.id, s.used_bytes));
            (group.last_block.clone(), last)
        })
        .collect();
    let placements = table
        .place_all(&per_group, io.value_align_bytes, appends)
        .map_err(|need| PlaceError::NeedSpace {
            group: need.group_at_limit,
        })?;
    let entries = by_group
        .keys()
        .map(|&g| (keys::group_key(g), table.encode_group(g)))
        .collect();
    Ok((placements, entries, ends))
}

/// One group's records of a flush and where they were placed.
struct GroupRun<'a> {
    layout: &'a Layout,
    records: &'a [AppendRecord<'a>],
    idx: &'a [usize],
    places: &'a [Placement],
    /// The group's last segment and its written bytes before this append.
    chain_end: Option<(SegmentId, u64)>,
}

impl GroupRun<'_> {
    /// Encodes the group's records as one write per segment they landed in; the first
    /// continues the group's partly written block `last_block`. Sets each record's
    /// checksum in `crcs` (by record index). Returns the new partly written block.
    fn encode(
        &self,
        io: &IoCtx<'_>,
        last_block: &PartialBlock,
        writes: &mut Vec<DeviceWrite>,
        crcs: &mut [u32],
    ) -> Result<PartialBlock, PlaceError> {
        let mut new_last_block = last_block.clone();
        let mut run_start = 0;
        while run_start < self.idx.len() {
            let seg = self.places[run_start].segment;
            let run_end = (run_start..self.idx.len())
                .find(|&j| self.places[j].segment != seg)
                .unwrap_or(self.idx.len());
            let (write, last_block) =
                self.encode_segment(io, last_block, run_start..run_end, crcs)?;
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
        crcs: &mut [u32],
    ) -> Result<(DeviceWrite, PartialBlock), PlaceError> {
        let seg = self.places[run.start].segment;
        // The write continues the segment's written bytes (none in a fresh segment).
        let written = match self.chain_end {
            Some((s, used)) if s == seg => used,
            _ => 0,
        };
        let records: Vec<PlacedRecord<'_>> = run
            .clone()
            .map(|j| {
                let r = &self.records[self.idx[j]];
                PlacedRecord {
                    at: self.places[j].offset as usize,
                    kind: r.kind,
                    seq: r.seq,
                    key: r.key,
                    body: r.body,
                    aligned: r.aligned,
                }
            })
            .collect();
        let (write, new_last_block, run_crcs) =
            segment_run::encode(self.layout, io, seg, written, last_block, records)?;
        for (j, crc) in run.zip(run_crcs) {
            crcs[self.idx[j]] = crc;
        }
        Ok((write, new_last_block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_hash::HashedKey;

    #[test]
    fn records_are_sorted_by_group_in_their_order_each_once() {
        let keys: Vec<Vec<u8>> = (0..500u32).map(|i| format!("k{i}").into_bytes()).collect();
        let records: Vec<AppendRecord<'_>> = keys
            .iter()
            .map(|k| AppendRecord {
                key: k,
                key_hash: HashedKey::new(k).hash,
                kind: RecordKind::Value,
                body: b"v",
                aligned: None,
                seq: 0,
            })
            .collect();
        for group_count in [1, 7, 36, 1000] {
            let by_group = ByGroup::of(&records, group_count);
            let mut seen = vec![false; records.len()];
            let mut last_group = None;
            for (&g, idx) in by_group.iter() {
                assert!(last_group < Some(g), "groups ascending, each once");
                last_group = Some(g);
                assert!(!idx.is_empty());
                assert!(idx.windows(2).all(|w| w[0] < w[1]), "in order");
                for &i in idx {
                    assert_eq!(super::super::group_of(records[i].key, group_count), g);
                    assert!(!std::mem::replace(&mut seen[i], true), "record {i} twice");
                }
            }
            assert!(seen.iter().all(|&s| s), "every record in a group");
            assert_eq!(by_group.len(), by_group.keys().count());
        }
    }
}
