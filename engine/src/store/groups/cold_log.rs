//! The cold data log (hashkv mode): values a group GC found cold leave their group for
//! this log, and the group keeps a small tag (key, sequence number, where the value
//! went) instead. Group GCs then copy tags, not values.
//!
//! The log is a list of log segments taken from the same free pool as the groups'
//! log segments, so it grows and shrinks with the workload; there is no size to tune.
//! Segments are appended to in order (the newest is the head). Each carries an epoch,
//! a number no earlier cold segment had, so that a tag naming a freed and reused
//! segment is recognised as stale.
//!
//! Liveness comes from the groups, never from the index: when a group's GC finds a
//! tag superseded (a newer value, tombstone or tag of its key), the cold record the
//! tag names is dead ([`ColdLog::mark_dead`]). Each segment keeps its live bytes and
//! the offsets of its dead records, committed in the same index batch as the GC that
//! learnt them.
//!
//! A cold GC copies a segment's live records to the head and appends a relocation tag
//! (same key and sequence number, the new place) to each key's group; it does not
//! touch the index. The index still points into the old segment until each of those
//! groups has been collected: the group GC, which alone knows whether the tag is still
//! the key's newest version, points the index at the new copy. The old segment is
//! `waiting_for` those groups and becomes free when the last of them is collected.

use crate::align::RecordSize;
use crate::entry_codec;
use crate::error::{Error, Result};
use crate::keys;
use crate::layout::SegmentId;
use crate::partial_block::PartialBlock;
use crate::record::ColdTag;

/// The cold log places its values unpadded (`align.rs` with an alignment of 1): its
/// GC's choice and the demotion pause read a segment's used bytes less its live bytes
/// as dead, so padding there would count as garbage a cold GC cannot reclaim (it pads
/// again as it copies), and cold values are the ones read least.
const COLD_VALUE_ALIGN_BYTES: u64 = 1;

const COLD_ENTRY_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColdSegment {
    pub id: SegmentId,
    pub epoch: u32,
    pub used_bytes: u64,
    pub live_bytes: u64,
    /// Offsets of records whose tags were superseded, sorted.
    pub dead: Vec<u32>,
    /// Non-empty once a cold GC copied the live records away: the groups whose next GC
    /// moves the index to the copies.
    pub waiting_for: Vec<u32>,
}

impl ColdSegment {
    pub fn is_dead(&self, offset: u32) -> bool {
        self.dead.binary_search(&offset).is_ok()
    }

    pub fn evacuated(&self) -> bool {
        !self.waiting_for.is_empty()
    }
}

/// Where a value demoted or relocated into the cold log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ColdPlace {
    pub segment: SegmentId,
    pub epoch: u32,
    pub offset: u64,
}

/// The cold log as it was before a GC placed records in it.
#[derive(Debug)]
pub struct ColdCheckpoint {
    len: usize,
    head: Option<ColdSegment>,
    head_block: PartialBlock,
}

#[derive(Debug, Default)]
pub struct ColdLog {
    /// In epoch order; the last one is the head, which takes appends.
    pub segments: Vec<ColdSegment>,
    next_epoch: u32,
    /// The head's partly written block (in memory; read back at open).
    pub head_block: PartialBlock,
    /// Segments whose entries changed since the last `take_changes`.
    changed: Vec<SegmentId>,
    /// Segments that left the log since then (their entries are deleted).
    removed: Vec<SegmentId>,
}

impl ColdLog {
    pub fn from_segments(mut segments: Vec<ColdSegment>) -> ColdLog {
        segments.sort_by_key(|s| s.epoch);
        let next_epoch = segments.last().map_or(0, |s| s.epoch + 1);
        ColdLog {
            segments,
            next_epoch,
            ..ColdLog::default()
        }
    }

    fn find_mut(&mut self, id: SegmentId, epoch: u32) -> Option<&mut ColdSegment> {
        self.segments
            .iter_mut()
            .find(|s| s.id == id && s.epoch == epoch)
    }

    pub fn find(&self, id: SegmentId) -> Option<&ColdSegment> {
        self.segments.iter().find(|s| s.id == id)
    }

    pub fn used_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.used_bytes).sum()
    }

    pub fn live_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.live_bytes).sum()
    }

    /// The record `tag` names is dead. A tag naming a segment that has left the log (or
    /// been reused under another epoch) is stale and changes nothing.
    pub fn mark_dead(&mut self, tag: &ColdTag) {
        let Some(seg) = self.find_mut(tag.segment, tag.epoch) else {
            return;
        };
        if seg.evacuated() {
            return; // Its live records were copied away; it is freed as a whole.
        }
        if let Err(at) = seg.dead.binary_search(&tag.offset) {
            seg.dead.insert(at, tag.offset);
            seg.live_bytes = seg.live_bytes.saturating_sub(u64::from(tag.record_bytes));
            self.changed.push(tag.segment);
        }
    }

    /// The head segment and its written bytes: where the next append's write begins.
    pub fn head_end(&self) -> Option<(SegmentId, u64)> {
        self.segments.last().map(|h| (h.id, h.used_bytes))
    }

    /// Places records of the given sizes at the head, unpadded
    /// (`COLD_VALUE_ALIGN_BYTES`), opening segments with `take` and counting the records
    /// live. Returns each record's place and the segments opened. When `take` has no segment to spare nothing changes, and the
    /// segments taken so far come back in the error for the caller to return.
    pub fn place(
        &mut self,
        sizes: &[RecordSize],
        segment_bytes: u64,
        mut take: impl FnMut() -> Option<SegmentId>,
    ) -> std::result::Result<(Vec<ColdPlace>, Vec<SegmentId>), Vec<SegmentId>> {
        let saved_len = self.segments.len();
        let saved_head = self.segments.last().cloned();
        let mut opened = Vec::new();
        let mut places = Vec::with_capacity(sizes.len());
        for size in sizes {
            let mut fits = self
                .segments
                .last()
                .filter(|h| !h.evacuated())
                .and_then(|h| {
                    size.place_within(h.used_bytes, COLD_VALUE_ALIGN_BYTES, segment_bytes)
                });
            if fits.is_none() {
                let Some(id) = take() else {
                    self.segments.truncate(saved_len);
                    if let (Some(head), Some(old)) = (self.segments.last_mut(), saved_head) {
                        *head = old;
                    }
                    return Err(opened);
                };
                opened.push(id);
                self.segments.push(ColdSegment {
                    id,
                    epoch: self.next_epoch,
                    used_bytes: 0,
                    live_bytes: 0,
                    dead: Vec::new(),
                    waiting_for: Vec::new(),
                });
                self.next_epoch += 1;
                fits = size.place_within(0, COLD_VALUE_ALIGN_BYTES, segment_bytes);
            }
            let (start, end) = fits.expect("a record fits an empty segment");
            let head = self.segments.last_mut().expect("a head");
            places.push(ColdPlace {
                segment: head.id,
                epoch: head.epoch,
                offset: start,
            });
            head.used_bytes = end;
            head.live_bytes += size.len;
            self.changed.push(head.id);
        }
        Ok((places, opened))
    }

    /// What `rollback` restores: the log before a GC placed records in it.
    pub fn checkpoint(&self) -> ColdCheckpoint {
        ColdCheckpoint {
            len: self.segments.len(),
            head: self.segments.last().cloned(),
            head_block: self.head_block.clone(),
        }
    }

    /// Undoes the placements since `cp` (a GC that failed before its commit) and
    /// returns the segments it opened, for the free list.
    pub fn rollback(&mut self, cp: ColdCheckpoint) -> Vec<SegmentId> {
        let opened: Vec<SegmentId> = self.segments[cp.len.min(self.segments.len())..]
            .iter()
            .map(|s| s.id)
            .collect();
        self.segments.truncate(cp.len);
        if let (Some(head), Some(old)) = (self.segments.last_mut(), cp.head) {
            *head = old;
        }
        self.head_block = cp.head_block;
        opened
    }

    /// Segments a cold GC may collect: not the head, not already evacuated.
    pub fn victims(&self) -> impl Iterator<Item = SegmentId> + '_ {
        let n = self.segments.len();
        self.segments
            .iter()
            .take(n.saturating_sub(1))
            .filter(|s| !s.evacuated())
            .map(|s| s.id)
    }

    /// The segment a cold GC should collect: not the head, not already evacuated, the
    /// most dead bytes (the oldest among equals). With its dead bytes.
    pub fn victim(&self) -> Option<(SegmentId, u64)> {
        let n = self.segments.len();
        self.segments
            .iter()
            .take(n.saturating_sub(1))
            .filter(|s| !s.evacuated())
            .map(|s| (s.id, s.used_bytes - s.live_bytes.min(s.used_bytes)))
            .max_by_key(|&(_, dead)| dead)
    }

    /// A cold GC copied `id`'s live records away; the index moves to the copies as
    /// each of `groups` is collected. Returns the segments free now (`id` itself when
    /// no group holds a copy).
    pub fn evacuate(&mut self, id: SegmentId, mut groups: Vec<u32>) -> Vec<SegmentId> {
        groups.sort_unstable();
        groups.dedup();
        let Some(i) = self.segments.iter().position(|s| s.id == id) else {
            return Vec::new();
        };
        if groups.is_empty() {
            return vec![self.remove(i)];
        }
        self.segments[i].waiting_for = groups;
        self.changed.push(id);
        Vec::new()
    }

    /// Group `g` was collected: no index entry of its keys points into an evacuated
    /// segment any more. Returns the segments that no group holds up now.
    pub fn group_collected(&mut self, g: u32) -> Vec<SegmentId> {
        let mut freed = Vec::new();
        let mut i = 0;
        while i < self.segments.len() {
            let s = &mut self.segments[i];
            if let Ok(at) = s.waiting_for.binary_search(&g) {
                s.waiting_for.remove(at);
                self.changed.push(s.id);
                if s.waiting_for.is_empty() {
                    freed.push(self.remove(i));
                    continue;
                }
            }
            i += 1;
        }
        freed
    }

    /// Fully dead segments (not the head, not evacuated) leave the log; the caller
    /// releases them.
    pub fn take_dead(&mut self) -> Vec<SegmentId> {
        let mut freed = Vec::new();
        let mut i = 0;
        while i + 1 < self.segments.len() {
            let s = &self.segments[i];
            if !s.evacuated() && s.live_bytes == 0 {
                freed.push(self.remove(i));
            } else {
                i += 1;
            }
        }
        freed
    }

    fn remove(&mut self, i: usize) -> SegmentId {
        let id = self.segments.remove(i).id;
        self.removed.push(id);
        id
    }

    /// The index entries of segments changed since the last call, and deletes for
    /// segments that left the log.
    pub fn take_changes(&mut self, batch: &mut hashkv_lsm::WriteBatch) {
        self.changed.sort_unstable();
        self.changed.dedup();
        for id in std::mem::take(&mut self.changed) {
            if let Some(s) = self.segments.iter().find(|s| s.id == id) {
                batch.put(&keys::cold_key(id), &encode_segment(s));
            }
        }
        for id in std::mem::take(&mut self.removed) {
            if self.segments.iter().all(|s| s.id != id) {
                batch.delete(&keys::cold_key(id));
            }
        }
    }
}

pub fn encode_segment(s: &ColdSegment) -> Vec<u8> {
    let mut body =
        Vec::with_capacity(4 + 8 + 8 + 4 + 4 * s.dead.len() + 4 + 4 * s.waiting_for.len());
    body.extend_from_slice(&s.epoch.to_le_bytes());
    body.extend_from_slice(&s.used_bytes.to_le_bytes());
    body.extend_from_slice(&s.live_bytes.to_le_bytes());
    for list in [&s.dead, &s.waiting_for] {
        body.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for v in list.iter() {
            body.extend_from_slice(&v.to_le_bytes());
        }
    }
    entry_codec::seal(COLD_ENTRY_VERSION, &body)
}

/// Decodes a cold segment's entry (`id` from its key). Never panics on garbage.
pub fn decode_segment(id: SegmentId, bytes: &[u8]) -> Result<ColdSegment> {
    const WHAT: &str = "cold segment entry";
    let body = entry_codec::open(bytes, WHAT, COLD_ENTRY_VERSION)?;
    let mut r = Reader { body, at: 0 };
    let epoch = r.u32()?;
    let used_bytes = r.u64()?;
    let live_bytes = r.u64()?;
    let dead = r.list()?;
    let waiting_for = r.list()?;
    if r.at != body.len() || live_bytes > used_bytes || !dead.windows(2).all(|w| w[0] < w[1]) {
        return Err(Error::corrupt(
            WHAT,
            "epoch, used and live bytes (live <= used), sorted dead offsets, groups",
            format!("{} bytes that do not parse so", body.len()),
        ));
    }
    // The log numbers its next segment one past its newest (`from_segments`): the
    // largest epoch leaves no successor and is never written (found by fuzzing: it
    // overflowed there).
    if epoch == u32::MAX {
        return Err(Error::corrupt(
            WHAT,
            format!("an epoch below {}", u32::MAX),
            format!("epoch {epoch}"),
        ));
    }
    Ok(ColdSegment {
        id,
        epoch,
        used_bytes,
        live_bytes,
        dead,
        waiting_for,
    })
}

struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.body.len());
        let Some(end) = end else {
            return Err(Error::corrupt(
                "cold segment entry",
                format!("{n} more bytes at {}", self.at),
                format!("{} bytes in all", self.body.len()),
            ));
        };
        let out = &self.body[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn list(&mut self) -> Result<Vec<u32>> {
        let n = self.u32()? as usize;
        let bytes = self.take(n.saturating_mul(4))?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn segment(id: SegmentId, epoch: u32) -> ColdSegment {
        ColdSegment {
            id,
            epoch,
            used_bytes: 9000,
            live_bytes: 7000,
            dead: vec![0, 1000],
            waiting_for: vec![3, 9],
        }
    }

    #[test]
    fn entry_round_trip_and_garbage() {
        let s = segment(42, 7);
        let e = encode_segment(&s);
        assert_eq!(decode_segment(42, &e).unwrap(), s);
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        for _ in 0..5000 {
            let bad = crate::entry_codec::garbled(&mut rng, &e, 64);
            assert!(decode_segment(42, &bad).is_err());
        }
        // Well sealed but inconsistent: live above used, dead offsets out of order.
        let mut s2 = segment(1, 1);
        s2.live_bytes = s2.used_bytes + 1;
        assert!(decode_segment(1, &encode_segment(&s2)).is_err());
        let mut s3 = segment(1, 1);
        s3.dead = vec![5, 5];
        assert!(decode_segment(1, &encode_segment(&s3)).is_err());
        // The largest epoch leaves the log no epoch for its next segment.
        let newest = segment(1, u32::MAX);
        assert!(decode_segment(1, &encode_segment(&newest)).is_err());
        assert!(decode_segment(1, &encode_segment(&segment(1, u32::MAX - 1))).is_ok());
    }

    #[test]
    fn dead_marks_placement_and_evacuation() {
        let mut log = ColdLog::default();
        let mut free = vec![30, 31, 32];
        let sizes = |lens: &[usize]| -> Vec<RecordSize> {
            lens.iter().map(|&l| RecordSize::unpadded(l)).collect()
        };
        let (places, opened) = log.place(&sizes(&[600, 600]), 1000, || free.pop()).unwrap();
        assert_eq!(opened, vec![32, 31]);
        assert_eq!(places[1].segment, 31);
        assert_eq!(log.live_bytes(), 1200);
        // A tag of the first record dies; a stale epoch changes nothing.
        let tag = |p: &ColdPlace, epoch| ColdTag {
            segment: p.segment,
            epoch,
            offset: p.offset as u32,
            record_bytes: 600,
            crc: 0,
            relocated: false,
        };
        log.mark_dead(&tag(&places[0], places[0].epoch + 5));
        assert_eq!(log.live_bytes(), 1200);
        log.mark_dead(&tag(&places[0], places[0].epoch));
        log.mark_dead(&tag(&places[0], places[0].epoch));
        assert_eq!(log.live_bytes(), 600, "marked once");
        assert_eq!(log.take_dead(), vec![32], "fully dead, not the head");
        // Evacuating a segment waits for its groups.
        let (_, _) = log.place(&sizes(&[900]), 1000, || free.pop()).unwrap();
        assert!(log.evacuate(31, vec![4, 2, 4]).is_empty());
        assert!(log.group_collected(4).is_empty());
        assert_eq!(log.group_collected(2), vec![31]);
        // No room: nothing changes and the taken segments come back.
        let before = log.segments.clone();
        let taken = log.place(&sizes(&[900, 900]), 1000, || None).unwrap_err();
        assert!(taken.is_empty());
        assert_eq!(log.segments, before);
    }
}
