//! The hashkv mode's value store: segment groups chosen by hashing the key, each a chain
//! of segments from one pool shared with the cold data log ([`segment_table`]); a flush
//! appends each key's record to its group ([`place`]); GC collects one group at a
//! time, copy-on-write, without index lookups ([`gc`]).

mod check_tags;
mod cold_gc;
pub(crate) mod cold_log;
mod cold_write;
mod gc;
mod hotness;
mod place;
mod prefetch;
mod segment_run;
pub(crate) mod segment_table;

use super::{
    CheckSpan, FlushRecord, GcCtx, GcOutcome, GroupUsage, IoCtx, PlaceError, Placed, Reclaimed,
    Source, Space, ValueStore,
};
use crate::buffers::BufferPool;
use crate::error::{Error, Result};
use crate::index::IndexReader;
use crate::key_hash::HashedKey;
use crate::keys;
use crate::layout::Layout;
use crate::location::{Pointer, Region};
use crate::partial_block::PartialBlock;
use crate::spans::Span;
use crate::stats::Counters;
use cold_log::ColdLog;
use hashkv_blockdev::BlockDevice;
use parking_lot::Mutex;
use segment_table::{SegmentTable, Victim};
use std::sync::atomic::AtomicUsize;

/// GCs that may fail to make room beyond one per group before the store counts as
/// full: the background GC may hold the group a flush needs, and a collected group's
/// segments may still wait for readers.
const GC_ATTEMPTS_SLACK: u32 = 2;

pub(crate) struct Groups {
    layout: Layout,
    table: Mutex<SegmentTable>,
    /// Group GCs move cold values to the cold data log (`Options::hotness`).
    hotness_enabled: bool,
    /// The lifetime estimate GC classifies by.
    hotness: Mutex<hotness::Hotness>,
    /// What the last group GC read ahead for the next (`prefetch.rs`).
    prefetched: Mutex<Option<prefetch::Outcome>>,
    /// Keys the last group GC's survey found: the next one's map starts that large.
    survey_keys_last: AtomicUsize,
}

/// Group of a key: the paper's hash partitioning.
pub(crate) fn group_of(key: &[u8], group_count: u32) -> u32 {
    group_of_hash(HashedKey::new(key).hash, group_count)
}

/// `group_of` a key whose `HashedKey::hash` is `hash`.
pub(crate) fn group_of_hash(hash: u64, group_count: u32) -> u32 {
    (hash % u64::from(group_count)) as u32
}

impl Groups {
    pub fn open(layout: Layout, hotness_enabled: bool, from: Source<'_>) -> Result<Groups> {
        let table = match from {
            Source::Fresh => SegmentTable::new_formatted(layout),
            Source::Index(index, device) => {
                let cold = load_cold_log(index)?;
                let mut table = load_table(index, layout, cold)?;
                load_last_blocks(&mut table, device)?;
                table
            }
        };
        Ok(Groups {
            layout,
            table: Mutex::new(table),
            hotness_enabled,
            hotness: Mutex::new(hotness::Hotness::new(layout.group_count)),
            prefetched: Mutex::new(None),
            survey_keys_last: AtomicUsize::new(0),
        })
    }
}

/// Rebuilds the cold data log from its segments' entries in the index (checked with
/// the segment table; its head block is read with the groups' last blocks).
impl Groups {
    /// The group the last GC read ahead for the next one.
    fn prefetched_group(&self) -> Option<u32> {
        match self.prefetched.lock().as_ref() {
            Some(Ok(p)) => Some(p.group),
            _ => None,
        }
    }
}

fn load_cold_log(index: &IndexReader) -> Result<ColdLog> {
    let mut segments = Vec::new();
    for item in index.prefix(&keys::cold_key_prefix())? {
        let (k, v) = item?;
        let id = k
            .get(2..6)
            .filter(|_| k.len() == 6)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| {
                Error::corrupt(
                    "cold log",
                    "keys of a segment id",
                    format!("index key {k:02x?}"),
                )
            })?;
        segments.push(cold_log::decode_segment(id, &v)?);
    }
    Ok(ColdLog::from_segments(segments))
}

/// Rebuilds the segment table from the group entries committed in the index.
fn load_table(index: &IndexReader, layout: Layout, cold: ColdLog) -> Result<SegmentTable> {
    let mut groups = Vec::with_capacity(layout.group_count as usize);
    for item in index.prefix(&keys::group_key_prefix())? {
        let (k, v) = item?;
        let expect = keys::group_key(groups.len() as u32);
        if k != expect {
            return Err(Error::corrupt(
                "segment table",
                format!("the entry of group {}", groups.len()),
                format!("index key {k:02x?}"),
            ));
        }
        groups.push(segment_table::decode_group(&v)?);
    }
    if groups.len() != layout.group_count as usize {
        return Err(Error::corrupt(
            "segment table",
            format!(
                "{} group entries (the superblock's groups)",
                layout.group_count
            ),
            format!("{} entries", groups.len()),
        ));
    }
    SegmentTable::with_cold_log(layout, groups, cold)
}

/// Reads the partly written last block (which the next append continues: one block read
/// per group at open) of every group and of the cold log's head, once
/// the table has checked every segment id (a damaged index entry must not address the
/// device: it panicked in `segment_offset` when the cold log's head was read first).
fn load_last_blocks(table: &mut SegmentTable, device: &dyn BlockDevice) -> Result<()> {
    let layout = table.layout;
    let read_end = |id, used_bytes| {
        let end = layout.segment_offset(id) + used_bytes;
        PartialBlock::read(device, end, u64::from(layout.block_bytes))
    };
    for group in table.groups.iter_mut() {
        if let Some(last) = group.chain.last() {
            group.last_block = read_end(last.id, last.used_bytes)?;
        }
    }
    if let Some(head) = table.cold.segments.last() {
        table.cold.head_block = read_end(head.id, head.used_bytes)?;
    }
    Ok(())
}

impl ValueStore for Groups {
    fn describe(&self) -> String {
        let mib = |b: u64| format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64);
        let l = &self.layout;
        format!(
            "hashkv: {} group{} with {} shares, one pool of {} segments of {} ({} reserved), \
             hot/cold {}",
            l.group_count,
            if l.group_count == 1 { "" } else { "s" },
            mib(l.main_segment_bytes),
            l.log_segment_count,
            mib(l.log_segment_bytes),
            l.reserve_segment_count(),
            if self.hotness_enabled { "on" } else { "off" }
        )
    }

    fn format_entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let table = self.table.lock();
        (0..self.layout.group_count)
            .map(|g| (keys::group_key(g), table.encode_group(g)))
            .collect()
    }

    fn place(&self, io: &IoCtx<'_>, records: &[FlushRecord<'_>]) -> Result<Placed, PlaceError> {
        place::place(self, io, records)
    }

    fn collect(&self, ctx: &GcCtx<'_>, group: Option<u32>) -> Result<Option<GcOutcome>> {
        if group.is_some() {
            return gc::collect(self, ctx, group);
        }
        let victim = self.table.lock().pick_victim_cost_benefit();
        match victim {
            Some(Victim::Cold(id)) => match cold_gc::collect(self, ctx, id)? {
                Some(outcome) => Ok(Some(outcome)),
                // No room to copy its live records to: collect a group instead.
                None => gc::collect(self, ctx, None),
            },
            // The group read ahead for this GC, if any, was the best victim when
            // the last GC began reading it, and is collected sooner.
            Some(Victim::Group(g)) => {
                gc::collect(self, ctx, Some(self.prefetched_group().unwrap_or(g)))
            }
            None => Ok(None),
        }
    }

    fn gc_idle(&self, counters: &Counters, buffers: &BufferPool) {
        prefetch::drop_if_idle(self, counters, buffers);
    }

    fn collect_cold(&self, ctx: &GcCtx<'_>, segment: Option<u32>) -> Result<Option<GcOutcome>> {
        let victim = {
            let t = self.table.lock();
            match segment {
                // Not the head (it takes appends) and not one waiting already.
                Some(id) => t.cold.victims().find(|&s| s == id),
                None => t.cold.victim().map(|(id, _)| id),
            }
        };
        match victim {
            Some(id) => cold_gc::collect(self, ctx, id),
            None => Ok(None),
        }
    }

    fn gc_generation(&self, group: u32) -> u64 {
        self.table.lock().groups[group as usize].generation
    }

    fn headroom(&self, low_water_segments: usize) -> f64 {
        // Flushes of values stop at the reserves and at the chain limits; the headroom
        // is the lower of the pool's room over its band and the chains' over theirs,
        // so the background GC runs before a flush has to.
        let t = self.table.lock();
        let pool = t.pool_room_segments() as f64 / low_water_segments.max(1) as f64;
        if !t.chains_can_bind() {
            return pool;
        }
        let chains = t.chain_room_segments() / t.chain_band_segments() as f64;
        pool.min(chains)
    }

    fn keep_collecting(&self, _outcome: &GcOutcome) -> bool {
        true
    }

    fn gc_attempts_max(&self) -> u32 {
        self.layout.group_count + GC_ATTEMPTS_SLACK
    }

    fn reclaim(&self, oldest_reader: Option<u64>) -> Reclaimed {
        let mut t = self.table.lock();
        let freed = t.reclaim(oldest_reader) > 0;
        Reclaimed {
            freed,
            waiting: t.pending_free_segments() > 0,
        }
    }

    fn space(&self) -> Space {
        let t = self.table.lock();
        Space {
            free_units: t.free_log_segments() as u64,
            units: u64::from(self.layout.log_segment_count),
            used_bytes: t.used_bytes() + t.cold.used_bytes(),
            capacity_bytes: t.value_capacity_bytes(self.hotness_enabled),
            cold_bytes: t.cold.used_bytes(),
            cold_live_bytes: t.cold.live_bytes(),
        }
    }

    fn record_offset(&self, p: &Pointer) -> Option<u64> {
        let l = &self.layout;
        // Groups and the cold log share the one segment pool and its ids.
        let fits = matches!(p.region, Region::Segments | Region::Cold)
            && p.unit < l.segment_count()
            && u64::from(p.offset) + u64::from(p.record_bytes) <= l.segment_bytes(p.unit);
        fits.then(|| l.segment_offset(p.unit) + u64::from(p.offset))
    }

    fn check_spans(&self) -> Vec<CheckSpan> {
        let t = self.table.lock();
        let block = u64::from(self.layout.block_bytes);
        let mut spans = Vec::new();
        for s in t.cold.segments.iter().filter(|s| s.used_bytes > 0) {
            let at = self.layout.segment_offset(s.id);
            spans.push(CheckSpan {
                place: format!("cold segment {} (epoch {})", s.id, s.epoch),
                span: Span::covering(at, s.used_bytes, block),
                group: None,
            });
        }
        for (g, group) in t.groups.iter().enumerate() {
            for seg in group.chain.iter().filter(|s| s.used_bytes > 0) {
                let at = self.layout.segment_offset(seg.id);
                spans.push(CheckSpan {
                    place: format!("group {g} segment {}", seg.id),
                    span: Span::covering(at, seg.used_bytes, block),
                    group: Some(g as u32),
                });
            }
        }
        spans
    }

    fn group_usage(&self) -> Vec<GroupUsage> {
        let t = self.table.lock();
        t.groups
            .iter()
            .map(|g| GroupUsage {
                chain_bytes: g.chain.iter().map(|s| s.used_bytes).sum(),
                cold_bytes: g.cold_bytes,
                demotions: g.demotions,
                promotions: g.promotions,
            })
            .collect()
    }

    fn check_cross(&self, io: &IoCtx<'_>) -> Result<Vec<String>> {
        check_tags::check(self, io)
    }

    fn pointer_problem(&self, key: &[u8], p: &Pointer) -> Option<String> {
        if self.record_offset(p).is_none() {
            return Some(format!("points outside the value store: {p:?}"));
        }
        let t = self.table.lock();
        if p.region == Region::Cold {
            return match t.cold.find(p.unit) {
                None => Some(format!(
                    "points into segment {} outside the cold log",
                    p.unit
                )),
                Some(s) if u64::from(p.offset) + u64::from(p.record_bytes) > s.used_bytes => Some(
                    format!("points past the written part of cold segment {}", p.unit),
                ),
                Some(s) if s.is_dead(p.offset) => Some(format!(
                    "points at a dead record of cold segment {}",
                    p.unit
                )),
                Some(_) => None,
            };
        }
        let g = group_of(key, self.layout.group_count);
        match t.groups[g as usize].chain.iter().find(|s| s.id == p.unit) {
            None => Some(format!(
                "points into segment {} outside its group {g}'s chain",
                p.unit
            )),
            Some(s) if u64::from(p.offset) + u64::from(p.record_bytes) > s.used_bytes => Some(
                format!("points past the written part of segment {}", p.unit),
            ),
            Some(_) => None,
        }
    }
}
