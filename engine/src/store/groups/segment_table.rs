//! The segment table: for every group its chain of segments (taken from the one pool of
//! log-sized segments, in append order) with the bytes used in each, and the group's
//! write volume since its last GC; plus the free segments, which flushes, copy-on-write
//! GC and the cold data log all take from. A group's chain may be empty (nothing
//! written yet, or everything it held moved to the cold log).
//!
//! The table lives in memory. Each flush and each GC commits the entries of the groups
//! it changed into the LSM tree, in the same atomic batch as the value locations, so
//! the persistent copy is always consistent with the index (FORMAT.md, "Commit").
//! Free lists are not stored: at open they are derived as "every segment no chain
//! names".

use super::cold_log::{ColdCheckpoint, ColdLog, ColdPlace};
use crate::align::RecordSize;
use crate::entry_codec;
use crate::error::{Error, Result};
use crate::layout::{Layout, SegmentId};
use crate::partial_block::PartialBlock;
use crate::readers::Deferred;

/// Version 2 added, after the chain: cold bytes, demotions, promotions (u64 each).
const GROUP_ENTRY_VERSION: u8 = 2;
const GROUP_ENTRY_COLD_BYTES: usize = 3 * 8;
/// Body of a group entry before its chain: write volume u64, segment count u32.
const GROUP_ENTRY_HEAD_BYTES: usize = 8 + 4;
/// Per chain segment: id u32, used bytes u64.
const CHAIN_SEGMENT_BYTES: usize = 4 + 8;
/// A group's chain may exceed its nominal share (one main segment's worth) by at most
/// this share of the reserved segments (and at most one more share): so one GC's
/// reserve stays a small part of the reserved space.
const CHAIN_EXCESS_SHARE_DIVISOR: usize = 4;
/// The tombstone reserve is this share of the reserved segments (at least one): enough
/// for the deletes that make room in a full store.
const TOMBSTONE_RESERVE_SHARE_DIVISOR: usize = 16;
/// Segments a GC may need beyond its group's chain limit: survivors are packed into
/// fresh segments in their old order, and a record never spans two segments.
const GC_PACKING_SLACK_SEGMENTS: usize = 1;
/// Demotions leave the lower half (1/2) of the GC's low-water band free, and pause
/// while more than 1/2 of the cold log is dead (`place_cold`).
const DEMOTION_BAND_DIVISOR: usize = 2;
const COLD_DEAD_SHARE_MAX_DIVISOR: u64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainSegment {
    pub id: SegmentId,
    /// Bytes appended so far, exactly: the next batch continues in the same block.
    pub used_bytes: u64,
}

/// A GC of this group is running: the first `collected_len` segments of the chain are
/// being collected; appends go to fresh segments after them.
#[derive(Debug, Default)]
pub struct GcMark {
    pub collected_len: usize,
    /// The group's write volume when its GC began.
    pub volume_bytes: u64,
}

#[derive(Debug, Default)]
pub struct Group {
    pub chain: Vec<ChainSegment>,
    pub write_volume_bytes: u64,
    /// Bytes of the cold records the group's tags named at its last GC.
    pub cold_bytes: u64,
    /// Values its GCs moved to the cold log, and cold keys updates brought back, since
    /// format.
    pub demotions: u64,
    pub promotions: u64,
    pub gc: Option<GcMark>,
    /// The partly written last block of the chain, which the next append continues.
    /// In memory only: read from the device at open, kept by flushes and GC.
    pub last_block: PartialBlock,
    /// GCs of the group finished since open. In memory only: between two GCs a chain
    /// only grows at its end, so segments read at one generation hold the same bytes
    /// while it lasts (what lets a GC use reads made for it beforehand, `prefetch.rs`).
    pub generation: u64,
}

/// Where one record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub segment: SegmentId,
    pub offset: u64,
}

#[derive(Debug)]
pub struct SegmentTable {
    pub layout: Layout,
    pub groups: Vec<Group>,
    free_log: Vec<SegmentId>,
    /// Segments released by GC, reusable once older readers are gone.
    pending_free: Deferred<SegmentId>,
    /// The most segments a group's chain may hold for value-carrying appends: then its
    /// live data always fits in the GC reserve, so any group can be collected, however
    /// full the store.
    chain_limit_segments: usize,
    /// Free segments only GC may take, so that a GC can always finish: a chain limit's
    /// worth and the packing slack.
    gc_reserve_segments: usize,
    /// Log segments beyond the GC reserve that only flushes carrying no values (deletes
    /// and inline values, whose records are tombstones) may take, and they may exceed a
    /// group's chain limit: so a full store can still take the deletes that make room.
    tombstone_reserve_segments: usize,
    /// Segments a running GC took for its survivors.
    gc_held: Vec<SegmentId>,
    /// Cold segments that may wait for group GCs at once.
    cold_evacuations_max: usize,
    /// The share of a group's write volume its GCs found dead (running average): what
    /// turns a group's write volume into an estimate of its garbage.
    garbage_per_written: f64,
    /// The cold data log, whose segments come from the same free pool.
    pub cold: ColdLog,
}

/// What a GC collects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Victim {
    Group(u32),
    Cold(SegmentId),
}

/// Cold segments that may wait for group GCs at once, as a share of the reserved
/// segments (1/16): each holds its space until every group holding one of its copies'
/// tags is collected, about one rotation through the groups. A fixed two in flight
/// capped the cold log's GC at two segments per rotation, whatever the layout.
const COLD_EVACUATIONS_SHARE_DIVISOR: usize = 16;
/// At least this many, on small layouts.
const COLD_EVACUATIONS_MIN: usize = 2;
/// Weight of one group GC in the running share of write volume found dead.
const GARBAGE_SHARE_WEIGHT: f64 = 0.1;

/// Bytes freed per byte read and rewritten, when collecting `used` bytes of which
/// `garbage` are dead.
fn benefit_per_cost(garbage: u64, used: u64) -> f64 {
    let cost = used + used.saturating_sub(garbage);
    if cost == 0 {
        0.0
    } else {
        garbage as f64 / cost as f64
    }
}

/// Not enough free log segments for a flush: run GC, then retry.
#[derive(Debug)]
pub struct NeedSpace {
    /// The group whose chain reached its limit, if that was the reason: collecting it
    /// is what makes room.
    pub group_at_limit: Option<u32>,
}

/// Why records go to the cold log: it sets how much free space they may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColdMove {
    /// A group GC moves values that went cold; the GC's low-water band, in segments
    /// above the flush floor, sets how much of the pool demotions may use.
    Demotion { low_water_segments: usize },
    /// A cold GC copies a victim's live records.
    Relocation,
}

/// What a flush appends: records with values count against a group's chain limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appends {
    Values,
    TombstonesOnly,
}

impl SegmentTable {
    /// The table of a freshly formatted store: every chain empty, every segment free.
    pub fn new_formatted(layout: Layout) -> SegmentTable {
        let groups = (0..layout.group_count).map(|_| Group::default()).collect();
        SegmentTable::from_groups(layout, groups).expect("formatted table is consistent")
    }

    /// Rebuilds the table from the groups' committed chains, deriving the free lists.
    pub fn from_groups(layout: Layout, groups: Vec<Group>) -> Result<SegmentTable> {
        SegmentTable::with_cold_log(layout, groups, ColdLog::default())
    }

    /// Rebuilds the table from the groups' chains and the cold log's segments.
    pub fn with_cold_log(
        layout: Layout,
        groups: Vec<Group>,
        cold: ColdLog,
    ) -> Result<SegmentTable> {
        if !layout.is_pooled() {
            return Err(Error::corrupt(
                "segment table",
                "a layout of one segment pool (format version 3)",
                format!("{} fixed main segments", layout.main_slot_count),
            ));
        }
        let mut owner: Vec<Option<u32>> = vec![None; layout.segment_count() as usize];
        claim_cold_segments(&layout, &cold, &mut owner)?;
        for (g, group) in groups.iter().enumerate() {
            for seg in &group.chain {
                if seg.id >= layout.segment_count() {
                    let expected = format!("segment ids below {}", layout.segment_count());
                    return Err(corrupt(g, &expected, format!("segment {}", seg.id)));
                }
                if seg.used_bytes > layout.segment_bytes(seg.id) {
                    let expected = format!("at most {} used bytes", layout.segment_bytes(seg.id));
                    let found = format!("segment {} with {} used bytes", seg.id, seg.used_bytes);
                    return Err(corrupt(g, &expected, found));
                }
                if let Some(other) = owner[seg.id as usize].replace(g as u32) {
                    let found = match other {
                        COLD_OWNER => format!("segment {} also in the cold log", seg.id),
                        _ => format!("segment {} also in group {other}'s chain", seg.id),
                    };
                    return Err(corrupt(g, "each segment in one chain", found));
                }
            }
        }
        let free_log = (0..layout.segment_count())
            .rev()
            .filter(|&id| owner[id as usize].is_none())
            .collect();
        let per_main = layout.segments_per_main() as usize;
        let reserve_segments = layout.reserve_segment_count() as usize;
        let chain_limit_segments =
            per_main + per_main.min(reserve_segments / CHAIN_EXCESS_SHARE_DIVISOR);
        let tombstone_reserve_segments =
            (reserve_segments / TOMBSTONE_RESERVE_SHARE_DIVISOR).max(1);
        Ok(SegmentTable {
            layout,
            groups,
            free_log,
            pending_free: Deferred::default(),
            chain_limit_segments,
            gc_reserve_segments: chain_limit_segments + GC_PACKING_SLACK_SEGMENTS,
            tombstone_reserve_segments,
            gc_held: Vec::new(),
            garbage_per_written: 1.0,
            cold_evacuations_max: (reserve_segments / COLD_EVACUATIONS_SHARE_DIVISOR)
                .max(COLD_EVACUATIONS_MIN),
            cold,
        })
    }

    /// Asserts that every segment is in exactly one place: one group's chain, the cold
    /// log, the free list or the pending list (or taken by a running GC).
    #[cfg(any(test, debug_assertions))]
    pub fn assert_consistent(&self) {
        let mut seen = vec![0u8; self.layout.segment_count() as usize];
        let mut mark = |id: SegmentId, what: &str| {
            seen[id as usize] += 1;
            assert!(
                seen[id as usize] == 1,
                "segment {id} found twice (second in {what})"
            );
        };
        for (g, group) in self.groups.iter().enumerate() {
            for s in &group.chain {
                mark(s.id, &format!("group {g}"));
            }
        }
        for &id in &self.free_log {
            mark(id, "free list");
        }
        for &id in self.pending_free.items() {
            mark(id, "pending list");
        }
        for &id in &self.gc_held {
            mark(id, "running GC");
        }
        for s in &self.cold.segments {
            mark(s.id, "cold log");
        }
    }

    pub fn free_log_segments(&self) -> usize {
        self.free_log.len()
    }

    /// Log segments flushes of values can still take from the free pool, above the
    /// reserves.
    pub fn pool_room_segments(&self) -> usize {
        self.free_log
            .len()
            .saturating_sub(self.flush_floor_segments())
    }

    /// The room under the groups' chain limits that flushes can count on while GC
    /// collects the groups one at a time, fullest first, in log segments: the least,
    /// over the k fullest groups, of the group count times the k-th least room over k.
    /// A flush touches every group, and writes spread evenly over them; the k-th
    /// fullest group is collected only after k GCs, during which it takes k/G of
    /// what is written, so the room is what writes may add before one of the groups
    /// meets its limit with its GC still to come. Where the groups' rooms are alike
    /// (keys hash evenly, so on a device large for its data they fill together) this
    /// is one group's room, not their sum: counted as the sum, the band was reached
    /// only when every group was near its limit, and writes stopped for 2.5-3.4 s
    /// while GC went round them (reserve 0.75, 36 groups, a quarter second per GC).
    pub fn chain_room_segments(&self) -> f64 {
        let mut rooms: Vec<usize> = self
            .groups
            .iter()
            .map(|g| self.chain_limit_segments.saturating_sub(g.chain.len()))
            .collect();
        rooms.sort_unstable();
        let group_count = rooms.len() as f64;
        rooms
            .iter()
            .enumerate()
            .map(|(k, &room)| group_count * room as f64 / (k + 1) as f64)
            .fold(f64::INFINITY, f64::min)
    }

    /// The chain band: the background GC runs, and writes are paced, once
    /// [`Self::chain_room_segments`] falls below this (as the pool's low-water band
    /// for the pool's room). Half a chain limit, one main segment's worth: what the
    /// groups filling together may each take while GC goes round them once, paced.
    /// With a quarter, writes still stopped for 0.4 s once in six phases; with half,
    /// not once in twelve (reserve 0.75).
    pub fn chain_band_segments(&self) -> usize {
        (self.chain_limit_segments / 2).max(1)
    }

    /// Whether the chain limits can end the room before the pool does: the pool holds
    /// more above the flush floor than all chains at their limits (a device large for
    /// its data). Otherwise the chains together hold less than their limits whenever
    /// the pool is short, and only the pool's band paces: counting the chains' band
    /// there too started GC at the load's end with the chains half full, and cost the
    /// default bench's update1 a quarter of its throughput and update2 a tenth.
    pub fn chains_can_bind(&self) -> bool {
        let pool =
            (self.layout.segment_count() as usize).saturating_sub(self.flush_floor_segments());
        pool > self.groups.len() * self.chain_limit_segments
    }

    /// Bytes of values the store can hold: the pool's, but where the chain limits
    /// bind first ([`Self::chains_can_bind`]) and no cold log takes what the chains
    /// cannot, all chains at their limits. A full store's error reports it (with a
    /// reserve of 0.75 it named the whole pool, twice what the groups could hold).
    pub fn value_capacity_bytes(&self, cold_log: bool) -> u64 {
        let pool = self.layout.value_capacity_bytes();
        if cold_log || !self.chains_can_bind() {
            return pool;
        }
        let chains = self.groups.len() as u64
            * self.chain_limit_segments as u64
            * self.layout.log_segment_bytes;
        pool.min(chains)
    }

    /// Free log segments a flush of values leaves untouched (the GC and tombstone
    /// reserves).
    pub fn flush_floor_segments(&self) -> usize {
        self.gc_reserve_segments + self.tombstone_reserve_segments
    }

    pub fn pending_free_segments(&self) -> usize {
        self.pending_free.len()
    }

    /// Moves segments whose readers are gone to the free list; returns how many.
    /// `oldest_reader` is the generation of the oldest running reader, if any.
    pub fn reclaim(&mut self, oldest_reader: Option<u64>) -> usize {
        let ready = self.pending_free.ready(oldest_reader);
        let freed = ready.len();
        self.free_log.extend(ready);
        freed
    }

    /// A free log segment, leaving the reserves the taker may not use.
    fn take_log(&mut self, taker: Option<Appends>) -> Option<SegmentId> {
        let floor = match taker {
            None => 0, // GC
            Some(Appends::TombstonesOnly) => self.gc_reserve_segments,
            Some(Appends::Values) => self.gc_reserve_segments + self.tombstone_reserve_segments,
        };
        if self.free_log.len() > floor {
            self.free_log.pop()
        } else {
            None
        }
    }

    /// Places records of the given sizes at the end of group `g` (values on
    /// `align_bytes` where `align.rs` says), taking log segments as needed. Returns one
    /// placement per record. On `NeedSpace` nothing has changed.
    pub fn place(
        &mut self,
        g: u32,
        sizes: &[RecordSize],
        align_bytes: u64,
        appends: Appends,
    ) -> std::result::Result<Vec<Placement>, NeedSpace> {
        let layout = self.layout;
        let saved_chain = self.groups[g as usize].chain.clone();
        let mut taken = Vec::new();
        let mut placements = Vec::with_capacity(sizes.len());
        // A GC of this group copies the first `collected_len` segments: appends must not
        // land in them, so the first append after the mark opens a fresh segment. So
        // does the first append to an empty chain.
        let mut must_open = match &self.groups[g as usize].gc {
            Some(mark) => self.groups[g as usize].chain.len() == mark.collected_len,
            None => self.groups[g as usize].chain.is_empty(),
        };
        // A tombstone-only flush may have taken the chain past its limit; values must
        // not follow it there, or GC could no longer rewrite the group.
        if appends == Appends::Values
            && self.groups[g as usize].chain.len() > self.chain_limit_segments
        {
            return Err(NeedSpace {
                group_at_limit: Some(g),
            });
        }
        let mut cursor = self.groups[g as usize]
            .chain
            .last()
            .map_or((0, 0), |s| (s.id, s.used_bytes));
        let mut volume_bytes = 0;
        for size in sizes {
            assert!(
                size.len <= layout.log_segment_bytes,
                "record larger than a segment"
            );
            let mut fits = size.place_within(cursor.1, align_bytes, layout.segment_bytes(cursor.0));
            if must_open || fits.is_none() {
                let chain_segments = self.groups[g as usize].chain.len();
                let at_limit =
                    appends == Appends::Values && chain_segments >= self.chain_limit_segments;
                let taken_now = if at_limit {
                    None
                } else {
                    self.take_log(Some(appends))
                };
                let Some(id) = taken_now else {
                    self.free_log.extend(taken.drain(..).rev());
                    self.groups[g as usize].chain = saved_chain;
                    return Err(NeedSpace {
                        group_at_limit: at_limit.then_some(g),
                    });
                };
                must_open = false;
                taken.push(id);
                self.groups[g as usize]
                    .chain
                    .push(ChainSegment { id, used_bytes: 0 });
                cursor = (id, 0);
                fits = size.place_within(0, align_bytes, layout.segment_bytes(id));
            }
            let (start, end) = fits.expect("a record fits an empty segment");
            placements.push(Placement {
                segment: cursor.0,
                offset: start,
            });
            volume_bytes += end - cursor.1;
            cursor.1 = end;
            let last_segment = self.groups[g as usize].chain.last_mut().unwrap();
            debug_assert_eq!(last_segment.id, cursor.0);
            last_segment.used_bytes = cursor.1;
        }
        let group = &mut self.groups[g as usize];
        group.write_volume_bytes += volume_bytes;
        Ok(placements)
    }

    /// Places the records of several groups at once (one flush): either all are
    /// placed, or nothing changes.
    pub fn place_all(
        &mut self,
        per_group: &[(u32, Vec<RecordSize>)],
        align_bytes: u64,
        appends: Appends,
    ) -> std::result::Result<Vec<Vec<Placement>>, NeedSpace> {
        let mut done: Vec<(u32, Vec<ChainSegment>, u64)> = Vec::with_capacity(per_group.len());
        let mut out = Vec::with_capacity(per_group.len());
        for (g, lens) in per_group {
            let group = &self.groups[*g as usize];
            let saved = (*g, group.chain.clone(), group.write_volume_bytes);
            match self.place(*g, lens, align_bytes, appends) {
                Ok(p) => {
                    done.push(saved);
                    out.push(p);
                }
                Err(need) => {
                    for (g, chain, volume) in done.into_iter().rev() {
                        let group = &mut self.groups[g as usize];
                        let taken: Vec<SegmentId> =
                            group.chain[chain.len()..].iter().map(|s| s.id).collect();
                        group.chain = chain;
                        group.write_volume_bytes = volume;
                        self.free_log.extend(taken.into_iter().rev());
                    }
                    return Err(need);
                }
            }
        }
        #[cfg(debug_assertions)]
        self.assert_consistent();
        Ok(out)
    }

    /// Chooses between the best group and the best cold segment by cost-benefit: bytes
    /// freed per byte read and written. A group's garbage is estimated from its write
    /// volume since its last GC, times the share of write volume that earlier group
    /// GCs found dead. (The whole volume, an upper bound, made every group look better
    /// than any cold segment: at Zipf 0.9 the cold log's dead records reached a quarter
    /// of it, and two cold GCs ran in a phase.) A cold segment's garbage is known
    /// exactly. While cold segments wait for group
    /// GCs (at most `cold_evacuations_max`), no further one is collected.
    pub fn pick_victim_cost_benefit(&self) -> Option<Victim> {
        let group = self.pick_victim().map(|g| {
            let group = &self.groups[g as usize];
            let used: u64 = group.chain.iter().map(|s| s.used_bytes).sum();
            (
                g,
                benefit_per_cost(
                    ((group.write_volume_bytes as f64 * self.garbage_per_written) as u64).min(used),
                    used,
                ),
            )
        });
        let evacuating = self.cold.segments.iter().filter(|s| s.evacuated()).count();
        let cold = (evacuating < self.cold_evacuations_max)
            .then(|| self.cold.victim())
            .flatten()
            .filter(|&(_, dead)| dead > 0)
            .map(|(id, dead)| {
                let used = self.cold.find(id).map_or(0, |s| s.used_bytes);
                (id, benefit_per_cost(dead, used))
            });
        match (group, cold) {
            (Some((_, g_ratio)), Some((id, c_ratio))) if c_ratio > g_ratio => {
                Some(Victim::Cold(id))
            }
            (Some((g, _)), _) => Some(Victim::Group(g)),
            (None, Some((id, _))) => Some(Victim::Cold(id)),
            (None, None) => None,
        }
    }

    /// Chooses the GC victim: the group with the largest write volume since its last
    /// GC (greedy, as in the paper), skipping groups under GC and groups with nothing
    /// written since their last GC. A linear pass: groups number in the thousands at
    /// most, and each GC reads about a main segment's worth.
    pub fn pick_victim(&self) -> Option<u32> {
        self.groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.gc.is_none() && g.write_volume_bytes > 0)
            .max_by_key(|(_, g)| g.write_volume_bytes)
            .map(|(i, _)| i as u32)
    }

    /// Marks `g` as under GC and returns the segments to collect; `None` if its chain
    /// is empty, or if the free pool cannot take its survivors yet (a previous GC's
    /// segments still wait for readers: the caller waits for them rather than read the
    /// group for nothing). Survivors go to fresh segments (`take_log_for_gc`).
    pub fn begin_gc(&mut self, g: u32) -> Option<Vec<ChainSegment>> {
        let needed = self
            .gc_reserve_segments
            .min(self.groups[g as usize].chain.len() + GC_PACKING_SLACK_SEGMENTS);
        let group = &mut self.groups[g as usize];
        assert!(group.gc.is_none(), "group {g} already under GC");
        if group.chain.is_empty() || self.free_log.len() < needed {
            return None;
        }
        let collected = group.chain.clone();
        group.gc = Some(GcMark {
            collected_len: collected.len(),
            volume_bytes: group.write_volume_bytes,
        });
        Some(collected)
    }

    /// Places cold records (a GC's demotions or a cold GC's copies) at the cold log's
    /// head. New segments come from the free pool above a floor that depends on why:
    /// - a cold GC's copies stop at the GC reserve: collecting the cold log is GC's own
    ///   work, which frees its victim once the groups it waits for are collected;
    /// - demotions stop half the background GC's low-water band above the flush floor:
    ///   moving a value frees as much in its group as it takes in the cold log, so it
    ///   never makes room, and a GC that runs because free space is short must not
    ///   spend it on that (at a 20% reserve, demotions took it, and GCs that freed
    ///   nothing in net ran until the store reported itself full; with a floor fixed
    ///   at one main segment above the flush floor, a band of four main segments ran
    ///   21 GCs per share written);
    /// - demotions also pause while the cold log is more dead than live (at most 1/2
    ///   dead): its dead records wait for the groups holding their tags, and more
    ///   demotions fed a loop, since more GCs shorten the lifetime that calls a value
    ///   cold (with the wider band, the cold log grew to 84% of the pool, 46% live,
    ///   and the same test ran 12 GCs per share; with the pause, 0.7).
    ///
    /// `None` (nothing changed) when the pool has none to spare.
    pub fn place_cold(
        &mut self,
        sizes: &[RecordSize],
        why: ColdMove,
    ) -> Option<(Vec<ColdPlace>, usize)> {
        let segment_bytes = self.layout.log_segment_bytes;
        let floor = match why {
            ColdMove::Relocation => self.gc_reserve_segments,
            ColdMove::Demotion { low_water_segments } => {
                if self.cold.live_bytes() * COLD_DEAD_SHARE_MAX_DIVISOR < self.cold.used_bytes() {
                    return None;
                }
                self.flush_floor_segments() + low_water_segments / DEMOTION_BAND_DIVISOR
            }
        };
        let free_log = &mut self.free_log;
        let take = || (free_log.len() > floor).then(|| free_log.pop()).flatten();
        match self.cold.place(sizes, segment_bytes, take) {
            Ok((places, opened)) => Some((places, opened.len())),
            Err(taken) => {
                self.free_log.extend(taken.into_iter().rev());
                None
            }
        }
    }

    /// Undoes a GC's cold placements (it failed before its commit).
    pub fn rollback_cold(&mut self, cp: ColdCheckpoint) {
        let opened = self.cold.rollback(cp);
        self.free_log.extend(opened.into_iter().rev());
    }

    /// A segment for GC survivors, from the whole free pool (the GC reserve included).
    pub fn take_log_for_gc(&mut self) -> Option<SegmentId> {
        let id = self.take_log(None)?;
        self.gc_held.push(id);
        Some(id)
    }

    /// Ends a GC: the group's chain becomes `survivors` followed by whatever was
    /// appended during the GC. Returns the collected segments, which the caller
    /// releases with `release` once the new chain is committed.
    /// `survivors_last_block` is the partly written last block of the survivors' last
    /// segment; `garbage_bytes` what the GC found dead (neither kept nor moved out).
    pub fn finish_gc(
        &mut self,
        g: u32,
        survivors: Vec<ChainSegment>,
        survivors_last_block: PartialBlock,
        garbage_bytes: u64,
    ) -> Vec<SegmentId> {
        let mark = self.groups[g as usize].gc.take().expect("group under GC");
        if mark.volume_bytes > 0 {
            let share = (garbage_bytes as f64 / mark.volume_bytes as f64).min(1.0);
            self.garbage_per_written += GARBAGE_SHARE_WEIGHT * (share - self.garbage_per_written);
        }
        let group = &mut self.groups[g as usize];
        group.generation += 1;
        let appended: Vec<ChainSegment> = group.chain.split_off(mark.collected_len);
        if appended.is_empty() {
            group.last_block = survivors_last_block;
        }
        let held: Vec<SegmentId> = survivors.iter().map(|s| s.id).collect();
        let collected = std::mem::replace(&mut group.chain, survivors);
        group.write_volume_bytes = appended.iter().map(|s| s.used_bytes).sum();
        group.chain.extend(appended);
        self.gc_held.retain(|id| !held.contains(id));
        collected.into_iter().map(|s| s.id).collect()
    }

    /// Segments no chain names any more become reusable once readers older than
    /// `release_gen` are gone.
    pub fn release(&mut self, segments: Vec<SegmentId>, release_gen: u64) {
        for id in segments {
            self.pending_free.defer(release_gen, id);
        }
        #[cfg(debug_assertions)]
        self.assert_consistent();
    }

    /// Abandons a GC that failed before its commit: the segments it took go back, the
    /// chain is unchanged.
    pub fn abort_gc(&mut self, g: u32, taken_log: &[SegmentId]) {
        self.groups[g as usize].gc = None;
        self.gc_held.retain(|id| !taken_log.contains(id));
        self.free_log.extend_from_slice(taken_log);
        #[cfg(debug_assertions)]
        self.assert_consistent();
    }

    pub fn used_bytes(&self) -> u64 {
        self.groups
            .iter()
            .flat_map(|g| g.chain.iter())
            .map(|s| s.used_bytes)
            .sum()
    }

    pub fn encode_group(&self, g: u32) -> Vec<u8> {
        encode_group_entry(&self.groups[g as usize])
    }
}

/// Encodes a group's entry as stored in the index.
pub fn encode_group_entry(group: &Group) -> Vec<u8> {
    let mut body =
        Vec::with_capacity(GROUP_ENTRY_HEAD_BYTES + group.chain.len() * CHAIN_SEGMENT_BYTES);
    body.extend_from_slice(&group.write_volume_bytes.to_le_bytes());
    body.extend_from_slice(&(group.chain.len() as u32).to_le_bytes());
    for s in &group.chain {
        body.extend_from_slice(&s.id.to_le_bytes());
        body.extend_from_slice(&s.used_bytes.to_le_bytes());
    }
    for n in [group.cold_bytes, group.demotions, group.promotions] {
        body.extend_from_slice(&n.to_le_bytes());
    }
    entry_codec::seal(GROUP_ENTRY_VERSION, &body)
}

/// Decodes a group entry as stored in the index. Never panics on garbage.
pub fn decode_group(bytes: &[u8]) -> Result<Group> {
    const WHAT: &str = "segment table entry";
    let (version, body) = entry_codec::open_versions(bytes, WHAT, 1..=GROUP_ENTRY_VERSION)?;
    if body.len() < GROUP_ENTRY_HEAD_BYTES {
        return Err(Error::corrupt(
            WHAT,
            format!("at least {GROUP_ENTRY_HEAD_BYTES} body bytes"),
            format!("{} body bytes", body.len()),
        ));
    }
    let write_volume_bytes = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    let n = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
    let rest = &body[GROUP_ENTRY_HEAD_BYTES..];
    let trailer = if version >= 2 {
        GROUP_ENTRY_COLD_BYTES
    } else {
        0
    };
    let (rest, cold) = rest.split_at(rest.len().saturating_sub(trailer));
    if n.checked_mul(CHAIN_SEGMENT_BYTES) != Some(rest.len()) || cold.len() != trailer {
        return Err(Error::corrupt(
            WHAT,
            format!("{n} chain segments of {CHAIN_SEGMENT_BYTES} bytes"),
            format!("{} bytes of chain", rest.len()),
        ));
    }
    let chain = rest
        .chunks_exact(CHAIN_SEGMENT_BYTES)
        .map(|c| ChainSegment {
            id: u32::from_le_bytes(c[0..4].try_into().expect("4 bytes")),
            used_bytes: u64::from_le_bytes(c[4..12].try_into().expect("8 bytes")),
        })
        .collect();
    // Version 1 has no trailer: nothing was cold.
    let trailer_u64 = |i: usize| {
        cold.get(8 * i..8 * i + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    Ok(Group {
        chain,
        write_volume_bytes,
        cold_bytes: trailer_u64(0),
        demotions: trailer_u64(1),
        promotions: trailer_u64(2),
        gc: None,
        last_block: PartialBlock::default(),
        generation: 0,
    })
}

/// The owner `claim_cold_segments` records for the cold log's segments (no group has
/// this number).
const COLD_OWNER: u32 = u32::MAX;

/// Marks the cold log's segments as owned; each must be a pool segment, within its
/// size, named once.
fn claim_cold_segments(layout: &Layout, cold: &ColdLog, owner: &mut [Option<u32>]) -> Result<()> {
    for s in &cold.segments {
        if s.id >= layout.segment_count() {
            return Err(Error::corrupt(
                "cold log",
                format!("segment ids below {}", layout.segment_count()),
                format!("segment {}", s.id),
            ));
        }
        if s.used_bytes > layout.log_segment_bytes || owner[s.id as usize].is_some() {
            return Err(Error::corrupt(
                "cold log",
                "segments within size, each named once",
                format!("segment {} ({} used bytes)", s.id, s.used_bytes),
            ));
        }
        owner[s.id as usize] = Some(COLD_OWNER);
    }
    Ok(())
}

fn corrupt(g: usize, expected: &str, found: String) -> Error {
    Error::corrupt(
        "segment table",
        expected.to_string(),
        format!("group {g}: {found}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unpadded records of these lengths.
    fn sizes(lens: &[usize]) -> Vec<RecordSize> {
        lens.iter().map(|&l| RecordSize::unpadded(l)).collect()
    }
    use crate::options::Options;
    use rand::{Rng, SeedableRng};

    fn layout() -> Layout {
        let o = Options::default()
            .with_main_segment_bytes(1 << 20)
            .with_log_segment_bytes(64 << 10);
        Layout::compute(16 << 20, 4096, &o).unwrap()
    }

    /// The tag of a cold record of `bytes` at `place`.
    fn tag_of(place: ColdPlace, bytes: usize) -> crate::record::ColdTag {
        crate::record::ColdTag {
            segment: place.segment,
            epoch: place.epoch,
            offset: place.offset as u32,
            record_bytes: bytes as u32,
            crc: 0,
            relocated: false,
        }
    }

    #[test]
    fn demotions_stay_above_half_the_band_and_pause_while_the_cold_log_is_mostly_dead() {
        let mut t = SegmentTable::new_formatted(layout());
        let band = 8;
        let demotion = ColdMove::Demotion {
            low_water_segments: band,
        };
        let segment = t.layout.log_segment_bytes as usize;
        // Leave exactly half the band above the flush floor: no demotion may open a
        // segment, a cold GC's copies may.
        let mut held = Vec::new();
        while t.free_log_segments() > t.flush_floor_segments() + band / 2 {
            held.push(t.free_log.pop().unwrap());
        }
        assert!(t.place_cold(&sizes(&[segment / 2]), demotion).is_none());
        let (places, opened) = t
            .place_cold(&sizes(&[segment / 2]), ColdMove::Relocation)
            .unwrap();
        assert_eq!(opened, 1);
        // With room in the pool again, the cold log's dead share decides.
        t.free_log.extend(held);
        assert!(
            t.place_cold(&sizes(&[100]), demotion).is_some(),
            "all live: demotions go on"
        );
        t.cold.mark_dead(&tag_of(places[0], segment / 2));
        assert!(
            t.place_cold(&sizes(&[100]), demotion).is_none(),
            "more dead than live: demotions pause"
        );
        assert!(t.place_cold(&sizes(&[100]), ColdMove::Relocation).is_some());
        t.assert_consistent();
    }

    #[test]
    fn gc_chooses_a_cold_segment_once_group_gcs_find_less_garbage_than_it_holds() {
        let mut t = SegmentTable::new_formatted(layout());
        let segment = t.layout.log_segment_bytes as usize;
        // Two cold segments; half of the first (not the head) is dead.
        let (places, _) = t
            .place_cold(&sizes(&[segment / 2; 4]), ColdMove::Relocation)
            .unwrap();
        t.cold.mark_dead(&tag_of(places[0], segment / 2));
        let cold_victim = Some(Victim::Cold(places[0].segment));
        // A group whose chain is all write volume: taken whole as garbage, it beats a
        // half-dead cold segment.
        t.place(0, &sizes(&[1000; 64]), 1, Appends::Values).unwrap();
        assert_eq!(t.pick_victim_cost_benefit(), Some(Victim::Group(0)));
        // Its GCs find a sixteenth of the write volume dead, again and again...
        for gen in 0..30 {
            let collected = t.begin_gc(0).unwrap();
            let survivor = t.take_log_for_gc().unwrap();
            let kept = ChainSegment {
                id: survivor,
                used_bytes: 60_000,
            };
            let freed = t.finish_gc(0, vec![kept], PartialBlock::default(), 4_000);
            assert_eq!(freed.len(), collected.len());
            t.release(freed, gen);
            t.reclaim(None);
            t.place(0, &sizes(&[1000; 64]), 1, Appends::Values).unwrap();
        }
        // ...so its write volume is no longer counted as garbage: the cold segment frees
        // more per byte moved.
        assert!(t.garbage_per_written < 0.15, "{}", t.garbage_per_written);
        assert_eq!(t.pick_victim_cost_benefit(), cold_victim);
        t.assert_consistent();
    }

    #[test]
    fn place_takes_pool_segments_as_the_chain_grows() {
        let mut t = SegmentTable::new_formatted(layout());
        assert!(t.groups.iter().all(|g| g.chain.is_empty()));
        let free0 = t.free_log_segments();
        assert_eq!(free0, t.layout.segment_count() as usize);
        let lens = vec![1000usize; 1100]; // ~1.1 MB: 17 segments of 64 KiB
        let p = t.place(0, &sizes(&lens), 1, Appends::Values).unwrap();
        assert_eq!(p[0].offset, 0);
        assert_eq!(p[0].segment, t.groups[0].chain[0].id);
        assert_eq!(t.groups[0].chain.len(), 17);
        assert_eq!(t.free_log_segments(), free0 - 17);
        for w in p.windows(2) {
            if w[0].segment == w[1].segment {
                assert_eq!(w[1].offset, w[0].offset + 1000);
            }
        }
        let used: u64 = t.groups[0].chain.iter().map(|s| s.used_bytes).sum();
        assert_eq!(used, 1_100_000, "records packed with no padding");
    }

    #[test]
    fn need_space_changes_nothing() {
        let mut t = SegmentTable::new_formatted(layout());
        let before: Vec<_> = t.groups[1].chain.clone();
        let free = t.free_log_segments();
        let lens = vec![60_000usize; 10_000];
        assert!(t.place(1, &sizes(&lens), 1, Appends::Values).is_err());
        assert_eq!(t.groups[1].chain, before);
        assert_eq!(t.free_log_segments(), free);
        // Across groups: the first group's placement is undone too.
        let chain3 = t.groups[3].chain.clone();
        assert!(t
            .place_all(
                &[(3, sizes(&[60_000; 40])), (1, sizes(&[60_000; 10_000]))],
                1,
                Appends::Values
            )
            .is_err());
        assert_eq!(t.groups[3].chain, chain3);
        assert_eq!(t.free_log_segments(), free);
    }

    /// With a reserve larger than the chain limits let chains hold, the chains can end
    /// the room first, and their room counts as one group's when the groups fill
    /// together; at the default reserve the pool ends first.
    #[test]
    fn chain_room_is_one_groups_when_the_groups_fill_together_and_binds_only_past_the_limits() {
        let o = Options {
            reserved_share: 0.75,
            ..Options::default()
        }
        .with_main_segment_bytes(1 << 20)
        .with_log_segment_bytes(64 << 10);
        let mut t = SegmentTable::new_formatted(Layout::compute(16 << 20, 4096, &o).unwrap());
        let limit = t.chain_limit_segments;
        let groups = t.layout.group_count as usize;
        assert!(t.chains_can_bind(), "a large reserve");
        assert!(groups * limit < t.pool_room_segments());
        assert_eq!(t.chain_room_segments(), limit as f64, "empty chains");
        // Every group filled to one short of its limit: one segment's room, not the
        // sum of the groups', and less than the pool's.
        let per_segment = (t.layout.log_segment_bytes / 4096) as usize;
        let fill = |t: &mut SegmentTable, g: u32, segments: usize| {
            t.place(
                g,
                &sizes(&vec![4096; segments * per_segment]),
                1,
                Appends::Values,
            )
            .unwrap();
        };
        for g in 0..t.layout.group_count {
            fill(&mut t, g, limit - 1);
        }
        assert_eq!(t.chain_room_segments(), 1.0);
        assert!(t.chain_band_segments() > 1);
        // Rooms staggered 1, 2, ... (group g has g + 1 left): each group is reached
        // after as many GCs as its rank, and the room is what the k-th fullest needs.
        let mut t = SegmentTable::new_formatted(Layout::compute(16 << 20, 4096, &o).unwrap());
        let groups = groups.min(limit);
        for g in 0..groups as u32 {
            fill(&mut t, g, limit - 1 - g as usize);
        }
        let count = t.layout.group_count as usize;
        let rooms = (1..=groups).chain(std::iter::repeat_n(limit, count - groups));
        let want = rooms
            .enumerate()
            .map(|(k, room)| count as f64 * room as f64 / (k + 1) as f64)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(t.chain_room_segments(), want);
        assert!(want >= count.min(limit) as f64, "{want} for {count} groups");
        // What the store can hold is what the chains can, unless a cold log takes the
        // rest of the pool.
        let pool_bytes = t.layout.value_capacity_bytes();
        let chain_bytes = (count * limit) as u64 * t.layout.log_segment_bytes;
        assert!(chain_bytes < pool_bytes);
        assert_eq!(t.value_capacity_bytes(false), chain_bytes);
        assert_eq!(t.value_capacity_bytes(true), pool_bytes);
        // The default reserve: the chains can never all be at their limits, and the
        // pool is what the store can hold.
        let t = SegmentTable::new_formatted(layout());
        assert!(!t.chains_can_bind());
        assert_eq!(
            t.value_capacity_bytes(false),
            t.layout.value_capacity_bytes()
        );
    }

    /// A group's chain stops growing at its limit for values, so the GC reserve can
    /// always take its rewrite; tombstone-only appends may go beyond, into their own
    /// reserve.
    #[test]
    fn chain_limit_and_tombstone_reserve() {
        let mut t = SegmentTable::new_formatted(layout());
        let limit = t.chain_limit_segments;
        assert!(t.gc_reserve_segments > limit);
        let per_segment = (t.layout.log_segment_bytes / 4096) as usize;
        t.place(
            4,
            &sizes(&vec![4096; limit * per_segment]),
            1,
            Appends::Values,
        )
        .unwrap();
        assert_eq!(t.groups[4].chain.len(), limit);
        let e = t.place(4, &sizes(&[100]), 1, Appends::Values).unwrap_err();
        assert_eq!(e.group_at_limit, Some(4));
        t.place(4, &sizes(&[100]), 1, Appends::TombstonesOnly)
            .unwrap();
        assert_eq!(t.groups[4].chain.len(), 1 + limit);
        // Values do not follow the tombstones past the limit, even with room there.
        let e = t.place(4, &sizes(&[100]), 1, Appends::Values).unwrap_err();
        assert_eq!(e.group_at_limit, Some(4));
        assert_eq!(t.groups[4].chain.len(), 1 + limit);
        // Other groups fill the pool down to the reserves; tombstones still fit.
        let mut g = 0;
        while t.free_log_segments() > t.gc_reserve_segments + t.tombstone_reserve_segments {
            if g != 4 {
                let _ = t.place(g, &sizes(&vec![4096; per_segment]), 1, Appends::Values);
            }
            g = (g + 1) % t.layout.group_count;
        }
        assert!(t
            .place(0, &sizes(&vec![4096; per_segment * 2]), 1, Appends::Values)
            .is_err());
        let free = t.free_log_segments();
        t.place(
            0,
            &sizes(&vec![4096; per_segment * 2]),
            1,
            Appends::TombstonesOnly,
        )
        .unwrap();
        assert!(t.free_log_segments() < free);
        assert!(t.free_log_segments() >= t.gc_reserve_segments);
        t.assert_consistent();
    }

    #[test]
    fn entries_round_trip_and_rebuild_free_lists() {
        let mut t = SegmentTable::new_formatted(layout());
        t.place(2, &sizes(&vec![5000usize; 300]), 1, Appends::Values)
            .unwrap();
        let groups: Vec<Group> = (0..t.layout.group_count)
            .map(|g| decode_group(&t.encode_group(g)).unwrap())
            .collect();
        let t2 = SegmentTable::from_groups(t.layout, groups).unwrap();
        assert_eq!(t2.free_log_segments(), t.free_log_segments());
        assert_eq!(t2.groups[2].chain, t.groups[2].chain);
    }

    #[test]
    fn garbage_entries_are_errors() {
        let t = SegmentTable::new_formatted(layout());
        let good = t.encode_group(0);
        for cut in 0..good.len() {
            assert!(decode_group(&good[..cut]).is_err());
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..10_000 {
            let b: Vec<u8> = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect();
            assert!(decode_group(&b).is_err());
        }
        // Two groups claiming one segment; a segment beyond the pool; a used count
        // beyond the segment.
        let mut t = t;
        t.place(0, &sizes(&[100]), 1, Appends::Values).unwrap();
        t.place(1, &sizes(&[100]), 1, Appends::Values).unwrap();
        let gs = || -> Vec<Group> {
            (0..t.layout.group_count)
                .map(|g| decode_group(&t.encode_group(g)).unwrap())
                .collect()
        };
        assert!(SegmentTable::from_groups(t.layout, gs()).is_ok());
        let mut bad = gs();
        bad[1].chain[0].id = bad[0].chain[0].id;
        assert!(SegmentTable::from_groups(t.layout, bad).is_err());
        let mut bad = gs();
        bad[1].chain[0].id = t.layout.segment_count();
        assert!(SegmentTable::from_groups(t.layout, bad).is_err());
        let mut bad = gs();
        bad[1].chain[0].used_bytes = t.layout.log_segment_bytes + 1;
        assert!(SegmentTable::from_groups(t.layout, bad).is_err());
        // A layout of fixed main segments (before format version 3).
        let mut old = t.layout;
        old.main_slot_count = old.group_count + 1;
        assert!(SegmentTable::from_groups(old, gs()).is_err());
    }

    #[test]
    fn gc_swaps_chain_and_releases_after_readers() {
        let mut t = SegmentTable::new_formatted(layout());
        assert!(
            t.begin_gc(0).is_none(),
            "an empty chain has nothing to collect"
        );
        // With too few free segments for its survivors, a GC does not begin.
        t.place(1, &sizes(&[4000]), 1, Appends::Values).unwrap();
        let free = std::mem::take(&mut t.free_log);
        assert!(t.begin_gc(1).is_none(), "no room for the survivors");
        t.free_log = free;
        t.place(0, &sizes(&vec![4000usize; 400]), 1, Appends::Values)
            .unwrap();
        let collected = t.begin_gc(0).unwrap();
        // An append during GC goes to a fresh segment.
        let p = t.place(0, &sizes(&[100]), 1, Appends::Values).unwrap();
        assert!(!collected.iter().any(|s| s.id == p[0].segment));
        let spare = t.take_log_for_gc().unwrap();
        t.assert_consistent();
        let freed = t.finish_gc(
            0,
            vec![ChainSegment {
                id: spare,
                used_bytes: 8192,
            }],
            PartialBlock::default(),
            0,
        );
        assert_eq!(freed.len(), collected.len());
        t.release(freed, 7);
        assert_eq!(t.groups[0].chain[0].id, spare);
        assert_eq!(t.groups[0].chain[1].id, p[0].segment);
        assert_eq!(t.pending_free_segments(), collected.len());
        t.reclaim(Some(6));
        assert_eq!(t.pending_free_segments(), collected.len());
        t.reclaim(Some(7));
        assert_eq!(t.pending_free_segments(), 0);
    }
}
