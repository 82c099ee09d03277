//! Placed records encoded into one aligned device write: how a flush's records reach
//! the device in both modes (a group's segment run, `store/groups/segment_run.rs`; the
//! log's head, `circular_log.rs`), and GC's copies into the cold log. The write starts
//! with the committed bytes of the partly written block it continues, unchanged, and
//! zeros fill the padding between records (`align.rs`) and the rest of its last block.
//!
//! A long value the write cache holds aligned (`cache_map::AlignedValue`) and whose
//! record puts it on a sector is not copied: the write takes the value's whole sectors
//! from the cache's buffer ([`Spliced`]), and only its last partial sector goes into the
//! write's own buffer, after the record's header and key. Such a value is so copied
//! once between the caller and the device, by its writer; the bytes on the device are
//! the same either way.

use crate::buffers::BufferPool;
use crate::cache_map::AlignedValue;
use crate::commit::{DeviceWrite, Spliced};
use crate::error::Result;
use crate::partial_block::PartialBlock;
use crate::record::{self, RecordKind, RECORD_HEADER_BYTES};
use crate::stats::Counters;
use std::sync::Arc;

/// A record and where it starts in its write (after its padding).
pub(crate) struct PlacedRecord<'a> {
    pub at: usize,
    pub kind: RecordKind,
    pub seq: u64,
    pub key: &'a [u8],
    /// The value of a value record, the tag of a cold tag, empty for a tombstone.
    pub body: &'a [u8],
    /// The value's aligned copy in the write cache, if it has one.
    pub aligned: Option<&'a Arc<AlignedValue>>,
}

impl PlacedRecord<'_> {
    fn value_at(&self) -> usize {
        self.at + RECORD_HEADER_BYTES + self.key.len()
    }

    fn end(&self) -> usize {
        self.at + record::encoded_len(self.key.len(), self.body.len())
    }

    /// The bytes of the value the write takes from the write cache's buffer (whole
    /// sectors from the value's start), if the cache holds it aligned (longer than
    /// its arena takes) with its crc, and it starts on a sector of `sector_bytes`.
    fn splice_len(&self, sector_bytes: usize) -> Option<usize> {
        let aligned = self.aligned.filter(|v| v.crc().is_some())?;
        debug_assert_eq!(aligned.bytes(), self.body);
        let whole = self.body.len() / sector_bytes * sector_bytes;
        (self.kind == RecordKind::Value
            && sector_bytes > 1
            && whole > 0
            && self.value_at().is_multiple_of(sector_bytes))
        .then_some(whole)
    }
}

/// Where a write goes and what it continues.
pub(crate) struct WriteAt<'a> {
    /// Device offset (a block boundary) and length (whole blocks) of the write.
    pub offset: u64,
    pub len: usize,
    /// The partly written block the write starts with, and its committed bytes there.
    pub prefix: &'a PartialBlock,
    pub prefix_len: usize,
}

/// What encoding needs: buffers for the writes' own bytes, the counters, and the
/// sector values are placed on (the device's logical block, `align.rs`).
pub(crate) struct Encoder<'a> {
    pub buffers: &'a BufferPool,
    pub counters: &'a Counters,
    pub sector_bytes: usize,
}

impl Encoder<'_> {
    /// Encodes `records`, in place order, into the write `to`. Returns the write and
    /// each record's checksum.
    pub fn encode(
        &self,
        to: WriteAt<'_>,
        records: &[PlacedRecord<'_>],
    ) -> Result<(DeviceWrite, Vec<u32>)> {
        let splices: Vec<Option<usize>> = records
            .iter()
            .map(|r| r.splice_len(self.sector_bytes))
            .collect();
        let spliced_bytes: usize = splices.iter().flatten().sum();
        Counters::add(
            &self.counters.flush_value_bytes_spliced,
            spliced_bytes as u64,
        );
        // A reused buffer: every byte of it the write takes is written below.
        let own_len = to.len - spliced_bytes;
        let mut buf = self.buffers.take(own_len);
        to.prefix.copy_prefix(&mut buf, to.offset, to.prefix_len)?;
        let mut crcs = Vec::with_capacity(records.len());
        let mut spliced = Vec::new();
        // `at` in the write, `own` in the write's own buffer.
        let (mut at, mut own) = (to.prefix_len, to.prefix_len);
        for (r, &splice) in records.iter().zip(&splices) {
            debug_assert!(r.at >= at, "records in place order");
            let gap = r.at - at;
            buf[own..own + gap].fill(0);
            own += gap;
            at = r.end();
            let Some(splice) = splice else {
                let encoded = record::encode_into(&mut buf[own..], r.kind, r.seq, r.key, r.body);
                crcs.push(encoded.crc);
                own += encoded.len;
                continue;
            };
            let value = r.aligned.expect("a spliced value is aligned");
            let value_crc = value.crc().expect("a spliced value has its crc");
            let crc =
                record::encode_head_into(&mut buf[own..], r.seq, r.key, r.body.len(), value_crc);
            crcs.push(crc);
            own += RECORD_HEADER_BYTES + r.key.len();
            spliced.push(Spliced {
                at: r.value_at(),
                len: splice,
                value: Arc::clone(value),
            });
            let tail = &r.body[splice..];
            buf[own..own + tail.len()].copy_from_slice(tail);
            own += tail.len();
        }
        buf[own..own_len].fill(0);
        let write = DeviceWrite {
            offset: to.offset,
            buf,
            len: to.len,
            spliced,
        };
        Ok((write, crcs))
    }
}
