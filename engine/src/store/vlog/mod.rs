//! The vlog mode's value store (WiscKey, the paper's vLog baseline): one circular log
//! ([`crate::circular_log`]) over the same space the hashkv mode splits into groups; a
//! flush appends its separated values at the head as one sequential write
//! ([`place`]); GC reads a chunk from the tail, asks the index whether each record is
//! still the live version, re-appends the live ones at the head and advances the tail
//! ([`gc`]). Deletes and inline values change only the index: GC learns from the
//! index that older records are dead, so no tombstone is needed.

mod gc;
mod place;

use super::{
    CheckSpan, FlushRecord, GcCtx, GcOutcome, IoCtx, PlaceError, Placed, Reclaimed, Source, Space,
    ValueStore,
};
use crate::circular_log::{self, CircularLog, LogGeometry};
use crate::error::{Error, Result};
use crate::keys;
use crate::layout::Layout;
use crate::location::{Pointer, Region};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// At most this share of the log is read by one GC, so that on small devices the GC
/// reserve (twice a GC's read, below) leaves room for data.
const GC_CHUNK_SHARE_DIVISOR: u64 = 8;

/// The first GC since open reads this many chunks, each later one twice its
/// predecessor's span, up to `gc_chunk_bytes`. The pacer learns GC's rate only when a
/// GC ends (`gc/pacer.rs`), and a vLog GC's rate is its index lookups': a first GC of
/// 64 MiB took 0.6-1.5 s at the start of the bench's update2, while writers, paced by
/// a guess from the flushes' bandwidth that was 15-50 times GC's rate, used the band
/// up and then waited for it (one write 2.1 s, the slowest second 0.02 of the phase's
/// mean). One chunk is collected in a few milliseconds, and pacing follows from then on.
const GC_RAMP_FIRST_CHUNKS: u64 = 1;

/// Bytes the GC numbered `gcs_begun` since open (from 0) reads: the ramp of
/// `GC_RAMP_FIRST_CHUNKS`, in whole chunks, at most `gc_chunk_bytes` (itself a whole
/// number of chunks, at least one: `ValueLog::open`).
fn gc_span_bytes(chunk_bytes: u64, gc_chunk_bytes: u64, gcs_begun: u32) -> u64 {
    let chunks = GC_RAMP_FIRST_CHUNKS
        .checked_shl(gcs_begun)
        .unwrap_or(u64::MAX);
    chunks.saturating_mul(chunk_bytes).min(gc_chunk_bytes)
}

pub(crate) struct ValueLog {
    log: Mutex<CircularLog>,
    geometry: LogGeometry,
    /// Bytes one GC reads from the tail.
    gc_chunk_bytes: u64,
    /// Space flushes leave free so that a GC can always re-append what it keeps.
    gc_reserve_bytes: u64,
    /// GCs begun since open: the first ones read less (`GC_RAMP_FIRST_CHUNKS`).
    gcs_begun: AtomicU32,
}

/// Everything past the superblock unit that the hashkv mode would use for main and log
/// segments, in chunks of `log_segment_bytes`: both modes get the same space.
pub(crate) fn geometry(layout: &Layout) -> LogGeometry {
    LogGeometry {
        region_offset: layout.main_region_offset,
        region_bytes: layout.end_offset() - layout.main_region_offset,
        chunk_bytes: layout.log_segment_bytes,
        block_bytes: u64::from(layout.block_bytes),
    }
}

impl ValueLog {
    pub fn open(layout: &Layout, from: Source<'_>) -> Result<ValueLog> {
        let geometry = geometry(layout);
        // The paper's vLog collects a fixed-size chunk from the tail; we use the main
        // segment size, the amount a hashkv GC of one full main segment reads.
        let gc_chunk_bytes = layout
            .main_segment_bytes
            .min(geometry.region_bytes / GC_CHUNK_SHARE_DIVISOR);
        let gc_chunk_bytes = (gc_chunk_bytes / geometry.chunk_bytes).max(1) * geometry.chunk_bytes;
        // GC re-appends at most gc_chunk_bytes of records; packing them into chunks
        // wastes less than one record (<= one chunk) per chunk boundary crossed.
        let gc_reserve_bytes = 2 * gc_chunk_bytes + geometry.chunk_bytes;
        if !geometry.region_bytes.is_multiple_of(geometry.chunk_bytes)
            || gc_reserve_bytes * 2 > geometry.region_bytes
        {
            return Err(Error::DeviceTooSmall {
                reason: format!(
                    "a value log of {} bytes cannot hold a GC reserve of {gc_reserve_bytes} bytes twice",
                    geometry.region_bytes
                ),
            });
        }
        let log = match from {
            Source::Fresh => CircularLog::new(geometry, 0, 0)?,
            Source::Index(index, device) => {
                let entry = index.get(&keys::vlog_key())?.ok_or_else(|| {
                    Error::corrupt("index", "the value log's head and tail", "no entry")
                })?;
                let (head, tail) = circular_log::decode_entry(&entry)?;
                let mut log = CircularLog::new(geometry, head, tail)?;
                log.load_head_block(device)?;
                log
            }
        };
        Ok(ValueLog {
            log: Mutex::new(log),
            geometry,
            gc_chunk_bytes,
            gc_reserve_bytes,
            gcs_begun: AtomicU32::new(0),
        })
    }

    /// The pointer to a record of `record_bytes` at logical `position`, with the
    /// record's sequence number and checksum.
    fn pointer(&self, position: u64, record_bytes: usize, seq: u64, crc: u32) -> Pointer {
        let (unit, offset) = self.geometry.locate(position);
        Pointer {
            region: Region::Log,
            unit,
            offset,
            record_bytes: record_bytes as u32,
            seq,
            crc,
        }
    }

    /// The range the next GC collects: from the tail to the end of the chunk
    /// `gc_chunk_bytes` further on (less for the first GCs since open,
    /// `GC_RAMP_FIRST_CHUNKS`), or the head if that comes first. Records never cross
    /// its end, which is a chunk boundary or the head.
    fn gc_range(&self, log: &CircularLog) -> Option<(u64, u64)> {
        if log.head() == log.tail() {
            return None;
        }
        let chunk = self.geometry.chunk_bytes;
        let chunk_start = log.tail() / chunk * chunk;
        let begun = self.gcs_begun.fetch_add(1, Ordering::Relaxed);
        let span = gc_span_bytes(chunk, self.gc_chunk_bytes, begun);
        let end = (chunk_start + span).min(log.head());
        Some((log.tail(), end))
    }
}

impl ValueStore for ValueLog {
    fn describe(&self) -> String {
        let mib = |b: u64| format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64);
        format!(
            "vlog: one circular log of {} in {} chunks, GC of {} from the tail",
            mib(self.geometry.region_bytes),
            mib(self.geometry.chunk_bytes),
            mib(self.gc_chunk_bytes)
        )
    }

    fn format_entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![(keys::vlog_key().to_vec(), self.log.lock().encode_entry())]
    }

    fn place(&self, io: &IoCtx<'_>, records: &[FlushRecord<'_>]) -> Result<Placed, PlaceError> {
        place::place(self, io, records)
    }

    fn collect(&self, ctx: &GcCtx<'_>, _group: Option<u32>) -> Result<Option<GcOutcome>> {
        gc::collect(self, ctx)
    }

    fn headroom(&self, low_water_segments: usize) -> f64 {
        let log = self.log.lock();
        let low = (low_water_segments as u64) * self.geometry.chunk_bytes;
        let above_reserve = log.free_bytes().saturating_sub(self.gc_reserve_bytes);
        above_reserve as f64 / low.max(self.gc_chunk_bytes) as f64
    }

    fn keep_collecting(&self, outcome: &GcOutcome) -> bool {
        outcome.made_room
    }

    fn gc_attempts_max(&self) -> u32 {
        (self.geometry.region_bytes / self.gc_chunk_bytes) as u32 + 2
    }

    fn reclaim(&self, oldest_reader: Option<u64>) -> Reclaimed {
        let mut log = self.log.lock();
        let freed = log.reclaim(oldest_reader);
        Reclaimed {
            freed,
            waiting: log.pending_release(),
        }
    }

    fn space(&self) -> Space {
        let log = self.log.lock();
        Space {
            free_units: log.free_bytes() / self.geometry.chunk_bytes,
            units: u64::from(self.geometry.chunk_count()),
            used_bytes: log.used_bytes(),
            capacity_bytes: self.geometry.region_bytes,
            ..Space::default()
        }
    }

    fn record_offset(&self, p: &Pointer) -> Option<u64> {
        // No lock: the geometry is fixed.
        (p.region == Region::Log)
            .then(|| {
                self.geometry
                    .record_offset(p.unit, p.offset, p.record_bytes)
            })
            .flatten()
    }

    fn check_spans(&self) -> Vec<CheckSpan> {
        let log = self.log.lock();
        self.geometry
            .spans(log.tail(), log.head())
            .into_iter()
            .map(|(position, span)| CheckSpan {
                place: format!("value log at position {}", position + span.from as u64),
                span,
                group: None,
            })
            .collect()
    }

    fn pointer_problem(&self, _key: &[u8], p: &Pointer) -> Option<String> {
        let Some(at) = self.record_offset(p) else {
            return Some(format!("points outside the value log: {p:?}"));
        };
        let log = self.log.lock();
        let live = self
            .geometry
            .holds(at, p.record_bytes, log.tail(), log.head());
        (!live).then(|| "points outside the value log's live part".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_gcs_since_open_read_one_chunk_then_twice_as_much_each() {
        let (chunk, full) = (1 << 20, 64 << 20);
        let spans: Vec<u64> = (0..9)
            .map(|i| gc_span_bytes(chunk, full, i) / chunk)
            .collect();
        assert_eq!(spans, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
        assert_eq!(gc_span_bytes(chunk, full, u32::MAX), full, "no overflow");
        assert_eq!(gc_span_bytes(chunk, chunk, 0), chunk, "a one-chunk GC");
    }
}
