//! Entry points to every decoder of what the engine reads back from its devices and
//! its index, for the fuzz targets (fuzz/) and decoder tests. Thin wrappers: the
//! decoders stay where they are. Each takes raw bytes and returns a value or an error;
//! none may panic, hang or read out of bounds on any input. Not part of the supported
//! API. (The LSM index's own decoders are `hashkv_lsm::decoders`.)
//!
//! Most of these formats carry a checksum, which random bytes never pass; `reseal`
//! recomputes it in place so that a fuzzer reaches the checks behind it.

use crate::circular_log::{self, CircularLog};
use crate::error::Result;
use crate::layout::Layout;
use crate::store::groups::{cold_log, segment_table};
use crate::superblock::Superblock;

pub use crate::location::{Location, Pointer, Region};
pub use crate::record::{ColdTag, RecordKind, RecordRef, Slot};
pub use crate::store::groups::cold_log::ColdSegment;
pub use crate::store::groups::segment_table::ChainSegment;
pub use hashkv_blockdev::identity::Identity;

/// One superblock copy (a block read at a copy's offset): `Ok(None)` when it is not a
/// superblock at all.
pub fn superblock(block: &[u8]) -> Result<Option<Superblock>> {
    Superblock::decode(block)
}

/// A stripe member's identity header (its first block): `Ok(None)` when all zero.
pub fn member_identity(block: &[u8]) -> Result<Option<Identity>> {
    Ok(hashkv_blockdev::identity::decode_identity(block)?)
}

/// The value record (or block padding) at the start of `buf`.
pub fn value_record(buf: &[u8]) -> Result<Slot<'_>> {
    crate::record::decode(buf)
}

/// The records of a segment's used bytes, as GC and fsck walk them. Yields each
/// record with its offset, skipping zeros between records, and stops after the first
/// damaged one.
pub fn segment_records(used: &[u8]) -> impl Iterator<Item = Result<(usize, RecordRef<'_>)>> {
    crate::record::SegmentRecords::new_at(used, 0)
}

/// The read path's check of what a get reads for `pointer` and `key` from a device
/// holding `record` where the pointer says: the value's bytes alone, checked against
/// the pointer's checksum. A pointer too short for its key is an error.
pub fn value_for(record: &[u8], pointer: &Pointer, key: &[u8]) -> Result<Vec<u8>> {
    let from = crate::record::value_offset(key.len());
    let to = pointer.record_bytes as usize;
    let value = record.get(from..to).ok_or_else(|| {
        crate::Error::corrupt(
            "index pointer",
            format!("a record of {from}..={} bytes", record.len()),
            format!("{pointer:?}"),
        )
    })?;
    crate::read::check_value(value, pointer, key)
}

/// The check's (fsck's) test of the whole record read for `pointer` and `key`.
pub fn record_for(record: &[u8], pointer: &Pointer, key: &[u8]) -> Result<()> {
    crate::read::check_record(record, pointer, key)
}

/// The cold tag a decoded record carries, if it is a well-formed cold tag record.
pub fn cold_tag(record: &RecordRef<'_>) -> Option<ColdTag> {
    ColdTag::of(record)
}

/// What a group's entry in the index holds (`Group` less its in-memory state).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupEntry {
    pub chain: Vec<ChainSegment>,
    pub write_volume_bytes: u64,
    pub cold_bytes: u64,
    pub demotions: u64,
    pub promotions: u64,
}

/// A group's entry in the index: its segment chain and counters.
pub fn group_entry(bytes: &[u8]) -> Result<GroupEntry> {
    let g = segment_table::decode_group(bytes)?;
    Ok(GroupEntry {
        chain: g.chain,
        write_volume_bytes: g.write_volume_bytes,
        cold_bytes: g.cold_bytes,
        demotions: g.demotions,
        promotions: g.promotions,
    })
}

/// A cold segment's entry in the index; `id` comes from its key.
pub fn cold_segment(id: u32, bytes: &[u8]) -> Result<ColdSegment> {
    cold_log::decode_segment(id, bytes)
}

/// The segment table rebuilt as open rebuilds it: the entries of groups 0, 1, ... and
/// those of the cold segments (with the ids of their keys), checked against `layout`.
pub fn segment_table(layout: Layout, groups: &[&[u8]], cold: &[(u32, &[u8])]) -> Result<()> {
    let groups = groups
        .iter()
        .map(|e| segment_table::decode_group(e))
        .collect::<Result<Vec<_>>>()?;
    let cold = cold
        .iter()
        .map(|&(id, e)| cold_log::decode_segment(id, e))
        .collect::<Result<Vec<_>>>()?;
    let cold = cold_log::ColdLog::from_segments(cold);
    segment_table::SegmentTable::with_cold_log(layout, groups, cold).map(|_| ())
}

/// A circular log's head and tail entry (the vlog mode's value log): (head, tail).
pub fn log_entry(bytes: &[u8]) -> Result<(u64, u64)> {
    circular_log::decode_entry(bytes)
}

/// The value log's entry checked against the log `layout` gives, as open checks it.
pub fn value_log(layout: &Layout, bytes: &[u8]) -> Result<(u64, u64)> {
    let (head, tail) = circular_log::decode_entry(bytes)?;
    CircularLog::new(crate::store::vlog::geometry(layout), head, tail)?;
    Ok((head, tail))
}

/// What the index holds for a user key: an inline value or a pointer.
pub fn index_entry(bytes: &[u8]) -> Result<Location> {
    crate::location::decode(bytes)
}

/// The real encoders, to build valid inputs (fuzz corpora, round trips).
pub mod encode {
    use super::*;

    /// One record: the bytes `value_record` decodes.
    pub fn value_record(kind: RecordKind, seq: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; crate::record::encoded_len(key.len(), value.len())];
        crate::record::encode_into(&mut out, kind, seq, key, value);
        out
    }

    pub fn group_entry(entry: &GroupEntry) -> Vec<u8> {
        segment_table::encode_group_entry(&segment_table::Group {
            chain: entry.chain.clone(),
            write_volume_bytes: entry.write_volume_bytes,
            cold_bytes: entry.cold_bytes,
            demotions: entry.demotions,
            promotions: entry.promotions,
            ..Default::default()
        })
    }

    pub fn cold_segment(segment: &ColdSegment) -> Vec<u8> {
        cold_log::encode_segment(segment)
    }

    pub fn log_entry(head: u64, tail: u64) -> Vec<u8> {
        circular_log::encode_entry(head, tail)
    }

    pub fn inline_value(value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::location::encode_inline_into(&mut out, value);
        out
    }
}

/// Recomputes a format's checksum in place, so that a damaged input reaches the
/// checks behind it. Inputs too short to hold a checksum are left as they are.
pub mod reseal {
    use crate::superblock::SUPERBLOCK_ENCODED_BYTES;
    use hashkv_blockdev::identity::IDENTITY_ENCODED_BYTES;

    /// A superblock copy: the crc32c of the fields ends its encoded bytes.
    pub fn superblock(block: &mut [u8]) {
        crc_at_end(block, SUPERBLOCK_ENCODED_BYTES);
    }

    /// A member identity header: the crc32c of the block ends it.
    pub fn member_identity(block: &mut [u8]) {
        crc_at_end(block, IDENTITY_ENCODED_BYTES);
    }

    /// The record at the start of `buf`, if its header's lengths fit in `buf`.
    pub fn value_record(buf: &mut [u8]) {
        crate::record::reseal(buf);
    }

    /// An engine index entry (group, cold segment, log head and tail): version, body
    /// and a crc32c of both.
    pub fn entry(bytes: &mut [u8]) {
        crate::entry_codec::reseal(bytes);
    }

    /// Writes the crc32c of `buf[..encoded_bytes - 4]` into the 4 bytes after it.
    fn crc_at_end(buf: &mut [u8], encoded_bytes: usize) {
        if buf.len() < encoded_bytes {
            return;
        }
        let crc_at = encoded_bytes - 4;
        let crc = crc32c::crc32c(&buf[..crc_at]);
        buf[crc_at..encoded_bytes].copy_from_slice(&crc.to_le_bytes());
    }
}
