//! Garbage collection of one segment group, copy-on-write, with hot/cold separation.
//!
//! 1. Under the commit lock (so no flush is half-way placing), pick the group and mark
//!    it. From now on appends to the group go to fresh segments after the marked
//!    chain, and the committer notes the keys they carry.
//! 2. Once the writes of the flushes placed before have completed (without the lock),
//!    read every segment of the marked chain at once (parallel reads through io_uring).
//! 3. For each key, its newest version: the highest sequence number, the later append
//!    among equal ones (a cold GC's relocation tag repeats its value's number). No
//!    index lookup is needed: every version of a key lives in its group. Tombstones
//!    are dropped, since every older version of their key lies in the same segments
//!    (or, for a cold value, is named by a tag there, and dies with it).
//! 4. Classify each surviving value hot or cold from record ages and lifetimes against
//!    the typical GC interval (`hotness.rs`).
//!    Hot values and cold tags are written into fresh segments from the pool (the GC
//!    reserve guarantees room for a whole chain); cold values go to the cold data
//!    log, leaving a tag behind. Then flush the device (`Committer::stage`: no
//!    committed state names this space).
//! 5. Queued on the committer behind the flushes placed before (whose batches it must
//!    follow), in one synced index batch: the survivors' new pointers
//!    (except keys written during the GC, whose newer versions the index already
//!    names), the pointers of relocated cold values, the group's new chain, and the
//!    cold log's changes: new records, records whose tags were superseded (dead), and
//!    evacuated segments no longer waiting for this group.
//! 6. The old segments, and cold segments nothing needs, become free once readers that
//!    may still hold pointers into them are gone.
//!
//! Nothing is overwritten in place, so a crash at any step leaves the committed state
//! intact (FORMAT.md, "GC" and "Hot and cold").

use super::cold_log::{ColdCheckpoint, ColdPlace};
use super::cold_write::{self, ColdRecord};
use super::hotness::{Class, Survivor};
use super::prefetch;
use super::segment_table::{ChainSegment, ColdMove};
use super::{group_of_hash, Groups};
use crate::align::RecordSize;
use crate::commit::{DeviceWrite, PlacedSoFar, Plan, Purpose};
use crate::error::Result;
use crate::key_hash::{HashedKey, HashedKeys};
use crate::keys;
use crate::layout::SegmentId;
use crate::location::{Pointer, Region};
use crate::partial_block::PartialBlock;
use crate::record::{self, ColdTag, RecordKind, RecordRef};
use crate::spans::{self, Span};
use crate::stats::Counters;
use crate::store::{store_full, GcCtx, GcOutcome, ValueStore};
use hashkv_blockdev::AlignedBuf;
use std::collections::hash_map::{Entry, HashMap};
use std::sync::atomic::Ordering;

/// The GC of one group, begun.
struct Job {
    group: u32,
    collected: Vec<ChainSegment>,
}

impl Job {
    /// The bytes of the chain it collects.
    fn collected_bytes(&self) -> u64 {
        self.collected.iter().map(|s| s.used_bytes).sum()
    }
}

/// What the GC took that a failure gives back.
#[derive(Default)]
struct Taken {
    log: Vec<SegmentId>,
    cold: Option<ColdCheckpoint>,
    /// Cold log segments its demotions opened.
    cold_opened: usize,
    /// The table holds the new chain: past this, a failure has poisoned the store.
    swapped: bool,
}

/// Collects `preferred` if it is not under GC already, else the group `pick` names.
/// `None` when no group has anything to collect.
pub(super) fn collect(
    store: &Groups,
    ctx: &GcCtx<'_>,
    preferred: Option<u32>,
) -> Result<Option<GcOutcome>> {
    ctx.committer.check_writable()?;
    let Some((job, placed_before)) = begin(store, ctx, preferred) else {
        return Ok(None);
    };
    let mut taken = Taken::default();
    let outcome = placed_before
        .wait_written(ctx.committer)
        .and_then(|()| run(store, ctx, &job, &mut taken));
    if outcome.is_err() {
        ctx.committer.lock_for_gc().written_during_gc.finish();
        if !taken.swapped {
            // The table still holds the old chain: give back what the GC took.
            let mut table = store.table.lock();
            if let Some(cp) = taken.cold {
                table.rollback_cold(cp);
            }
            table.abort_gc(job.group, &taken.log);
        }
    }
    ctx.committer.poisoning(outcome).map(Some)
}

/// Step 1. Returns, with the job, the flushes placed before it: the chain it marked
/// holds their records, which may still be on their way to the device.
fn begin(store: &Groups, ctx: &GcCtx<'_>, preferred: Option<u32>) -> Option<(Job, PlacedSoFar)> {
    let mut commit = ctx.committer.lock_for_gc();
    let mut table = store.table.lock();
    table.reclaim(ctx.io.readers.oldest_active());
    let preferred = preferred.filter(|&g| table.groups[g as usize].gc.is_none());
    let group = preferred.or_else(|| table.pick_victim())?;
    let collected = table.begin_gc(group)?;
    let group_count = store.layout.group_count;
    commit
        .written_during_gc
        .begin(move |hash| group_of_hash(hash, group_count) == group);
    Some((Job { group, collected }, commit.placed_so_far()))
}

fn run(store: &Groups, ctx: &GcCtx<'_>, job: &Job, taken: &mut Taken) -> Result<GcOutcome> {
    // 2. Read the whole group at once (but what the last GC read ahead).
    let segments: Vec<ChainSegment> = job
        .collected
        .iter()
        .filter(|s| s.used_bytes > 0)
        .copied()
        .collect();
    let spans = prefetch::chain_spans(store, &segments);
    let bufs = read_chain(store, ctx, job.group, &segments, &spans)?;
    // The next GC's reads go on while this one works (`prefetch.rs`).
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("hashkv-gc-read".into())
            .spawn_scoped(scope, || prefetch::read_next(store, ctx.committer, &ctx.io));
        let outcome = rewrite(store, ctx, job, &segments, &spans, &bufs, taken);
        if let Ok(helper) = helper {
            let next = helper
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            prefetch::leave(store, &ctx.io, next);
        }
        outcome
    })
}

/// Reads the segments of `group`'s chain that `spans` cover, taking the bytes of
/// those the last GC read ahead.
fn read_chain<'p>(
    store: &Groups,
    ctx: &GcCtx<'p>,
    group: u32,
    segments: &[ChainSegment],
    spans: &[Span],
) -> Result<crate::buffers::Lent<'p>> {
    let found = match prefetch::take(store, group)? {
        Some(p) => {
            let table = store.table.lock();
            p.take_for(&table, segments, &ctx.io)
        }
        None => (segments.iter().map(|_| None).collect(), 0),
    };
    let (read, found_bytes) = found;
    let bufs = spans::read_pooled_except(ctx.io.device, spans, read, ctx.io.buffers)?;
    let collected: u64 = segments.iter().map(|s| s.used_bytes).sum();
    let c = &ctx.io.counters;
    Counters::add(&c.gc_device_bytes_read, collected - found_bytes);
    Counters::add(&c.gc_prefetch_bytes_used, found_bytes);
    Ok(bufs)
}

/// Steps 3 to 6, on the chain read.
fn rewrite(
    store: &Groups,
    ctx: &GcCtx<'_>,
    job: &Job,
    segments: &[ChainSegment],
    spans: &[Span],
    bufs: &[AlignedBuf],
    taken: &mut Taken,
) -> Result<GcOutcome> {
    let bytes_read = job.collected_bytes();
    // 3. and 4.
    let survey = Survey::of(store, job.group, segments, spans, bufs)?;
    let mut outs = survey.classify(store, ctx.now_seq);
    let cold_writes = demote(store, ctx, &mut outs, taken)?;
    let copy = Copy::pack(
        store,
        &outs,
        ctx.io.value_align_bytes,
        job.collected_bytes(),
        &mut taken.log,
    )?;
    let (mut writes, last_block) = copy.encode(store, ctx, &outs);
    writes.extend(cold_writes);
    let bytes_written: u64 = writes.iter().map(|w| w.len as u64).sum();
    ctx.committer.stage(writes, Purpose::Gc)?;
    let demoted = Demoted::of(&outs);
    let segments_freed = commit(
        store, ctx, job, &copy, last_block, &outs, &survey, &demoted, taken,
    )?;
    // A GC that failed measured no interval.
    store.hotness.lock().observe_gc(job.group, ctx.now_seq);
    let c = &ctx.io.counters;
    Counters::add(&c.demotions, demoted.values);
    Counters::add(&c.promotions, survey.promotions);
    Ok(GcOutcome {
        bytes_read,
        bytes_written,
        records_kept: outs.len() as u64,
        made_room: segments_freed > taken.log.len() + taken.cold_opened,
    })
}

/// A key's newest record in a group, its key's hash, and the version it replaced (its
/// sequence number, and whether it was a cold tag) if that was in the group too.
type Newest<'b> = (RecordRef<'b>, u64, Option<(u64, bool)>);

/// What step 3 learnt from the collected records.
struct Survey<'b> {
    /// The newest version of each key, in append order.
    newest: Vec<Newest<'b>>,
    /// Tags of older versions: the cold records they name are dead.
    superseded_tags: Vec<ColdTag>,
    /// Cold keys an update brought back.
    promotions: u64,
}

/// One key's versions as the survey walks them.
struct Versions<'b> {
    newest: RecordRef<'b>,
    /// Its key's `HashedKey::hash`.
    hash: u64,
    order: usize,
    predecessor: Option<(u64, bool)>,
}

impl<'b> Survey<'b> {
    fn of(
        store: &Groups,
        group: u32,
        segments: &[ChainSegment],
        spans: &[Span],
        bufs: &'b [AlignedBuf],
    ) -> Result<Survey<'b>> {
        // Sized like the last survey's, so that it seldom grows.
        let capacity = store.survey_keys_last.load(Ordering::Relaxed);
        let mut keys: HashMap<HashedKey<'b>, u32, HashedKeys> =
            HashMap::with_capacity_and_hasher(capacity, HashedKeys::default());
        let mut versions: Vec<Versions<'b>> = Vec::with_capacity(capacity);
        let mut tags: Vec<(RecordRef<'b>, usize)> = Vec::new();
        let mut order = 0usize;
        for ((seg, span), buf) in segments.iter().zip(spans).zip(bufs) {
            for item in span.records(buf) {
                let (_, rec) = item.map_err(|e| {
                    e.at(format!(
                        "GC of group {group}, segment {} ({} bytes used)",
                        seg.id, seg.used_bytes
                    ))
                })?;
                if rec.kind == RecordKind::ColdTag {
                    tags.push((rec, order));
                }
                note_version(&mut keys, &mut versions, rec, order);
                order += 1;
            }
        }
        store.survey_keys_last.store(keys.len(), Ordering::Relaxed);
        let mut survey = Survey {
            newest: Vec::with_capacity(keys.len()),
            superseded_tags: Vec::new(),
            promotions: 0,
        };
        for (rec, at) in tags {
            let v = &versions[keys[&HashedKey::new(rec.key)] as usize];
            if v.order != at {
                survey.superseded_tags.extend(ColdTag::of(&rec));
                if v.newest.kind == RecordKind::Value && rec.seq < v.newest.seq {
                    survey.promotions += 1;
                }
            }
        }
        // In append order of the newest versions: per record, the key it is newest of.
        let mut newest_of = vec![u32::MAX; order];
        for (i, v) in versions.iter().enumerate() {
            newest_of[v.order] = i as u32;
        }
        for i in newest_of.into_iter().filter(|&i| i != u32::MAX) {
            let v = &versions[i as usize];
            survey.newest.push((v.newest, v.hash, v.predecessor));
        }
        Ok(survey)
    }

    /// Step 4: what each surviving key becomes.
    fn classify(&self, store: &Groups, now_seq: u64) -> Vec<Out<'b>> {
        let hotness = store.hotness.lock();
        let mut outs = Vec::with_capacity(self.newest.len());
        for &(rec, hash, predecessor) in &self.newest {
            let what = match rec.kind {
                RecordKind::Tombstone => continue,
                RecordKind::ColdTag => match ColdTag::of(&rec) {
                    Some(tag) => What::Tag(tag),
                    None => continue, // decode checked the size
                },
                RecordKind::Value => {
                    let v = Survivor {
                        seq: rec.seq,
                        predecessor,
                    };
                    match store.hotness_enabled && hotness.classify(&v, now_seq) == Class::Cold {
                        true => What::Demoted(ColdPlace::default()),
                        false => What::Hot,
                    }
                }
            };
            outs.push(Out { rec, hash, what });
        }
        outs
    }
}

/// Notes `rec` as a version of its key: the newest is the highest sequence number,
/// the later append among equals. `keys` maps each key to its entry in `versions`.
fn note_version<'b>(
    keys: &mut HashMap<HashedKey<'b>, u32, HashedKeys>,
    versions: &mut Vec<Versions<'b>>,
    rec: RecordRef<'b>,
    order: usize,
) {
    let is_tag = |r: &RecordRef<'_>| r.kind == RecordKind::ColdTag;
    let key = HashedKey::new(rec.key);
    let v = match keys.entry(key) {
        Entry::Vacant(slot) => {
            slot.insert(versions.len() as u32);
            versions.push(Versions {
                newest: rec,
                hash: key.hash,
                order,
                predecessor: None,
            });
            return;
        }
        Entry::Occupied(at) => &mut versions[*at.get() as usize],
    };
    if rec.seq >= v.newest.seq {
        if rec.seq > v.newest.seq {
            v.predecessor = Some((v.newest.seq, is_tag(&v.newest)));
        }
        v.newest = rec;
        v.order = order;
    } else if v.predecessor.is_none_or(|(p, _)| rec.seq > p) {
        // An older version appended later (a relocation tag after an update).
        v.predecessor = Some((rec.seq, is_tag(&rec)));
    }
}

/// What a surviving key becomes.
enum What {
    /// Its value stays in the group.
    Hot,
    /// Its tag stays in the group (re-pointing the index if a cold GC relocated it).
    Tag(ColdTag),
    /// Its value moves to the cold log, at this place; a tag stays in the group.
    Demoted(ColdPlace),
}

struct Out<'b> {
    rec: RecordRef<'b>,
    /// Its key's `HashedKey::hash`.
    hash: u64,
    what: What,
}

impl Out<'_> {
    fn key(&self) -> HashedKey<'_> {
        HashedKey {
            hash: self.hash,
            key: self.rec.key,
        }
    }

    /// The record that stays in the group: kind and body.
    fn group_record(&self) -> (RecordKind, GroupBody<'_>) {
        match &self.what {
            What::Hot => (RecordKind::Value, GroupBody::Record(self.rec.bytes)),
            What::Tag(t) => (
                RecordKind::ColdTag,
                GroupBody::Tag(ColdTag {
                    relocated: false,
                    ..*t
                }),
            ),
            What::Demoted(place) => (RecordKind::ColdTag, GroupBody::Tag(self.cold_tag(place))),
        }
    }

    fn cold_tag(&self, place: &ColdPlace) -> ColdTag {
        ColdTag {
            segment: place.segment,
            epoch: place.epoch,
            offset: place.offset as u32,
            record_bytes: self.rec.encoded_len() as u32,
            crc: self.rec.crc,
            relocated: false,
        }
    }

    /// The size of the record that stays in the group: a value may be padded onto a
    /// sector (`align.rs`), a tag never is.
    fn group_size(&self) -> RecordSize {
        match self.what {
            What::Hot => RecordSize::value(self.rec.key.len(), self.rec.value.len()),
            _ => RecordSize::unpadded(record::encoded_len(
                self.rec.key.len(),
                record::COLD_TAG_BYTES,
            )),
        }
    }

    /// The index entry this GC writes for the key, if any.
    fn pointer(&self, copy: &Copy, i: usize) -> Option<Pointer> {
        // A moved record is the same bytes, so it keeps its checksum: the value's own
        // (`rec`) when it stays or is demoted, the one its tag carries when a cold GC
        // relocated it (`rec` is then the tag).
        let (region, unit, offset, record_bytes, crc) = match &self.what {
            What::Hot => {
                let (seg, offset) = copy.places[i];
                (
                    Region::Segments,
                    copy.chain[seg].id,
                    offset as u32,
                    self.rec.encoded_len(),
                    self.rec.crc,
                )
            }
            What::Tag(t) if t.relocated => (
                Region::Cold,
                t.segment,
                t.offset,
                t.record_bytes as usize,
                t.crc,
            ),
            What::Tag(_) => return None,
            What::Demoted(p) => (
                Region::Cold,
                p.segment,
                p.offset as u32,
                self.rec.encoded_len(),
                self.rec.crc,
            ),
        };
        Some(Pointer {
            region,
            unit,
            offset,
            record_bytes: record_bytes as u32,
            seq: self.rec.seq,
            crc,
        })
    }
}

enum GroupBody<'a> {
    /// A value that stays is the same record: its bytes, checksum included, are
    /// copied as read (and checked), not encoded again.
    Record(&'a [u8]),
    Tag(ColdTag),
}

/// Places the demoted values at the cold log's head and encodes them. With no cold
/// space to spare they stay hot.
fn demote(
    store: &Groups,
    ctx: &GcCtx<'_>,
    outs: &mut [Out<'_>],
    taken: &mut Taken,
) -> Result<Vec<DeviceWrite>> {
    let idx: Vec<usize> = (0..outs.len())
        .filter(|&i| matches!(outs[i].what, What::Demoted(_)))
        .collect();
    if idx.is_empty() {
        return Ok(Vec::new());
    }
    let sizes: Vec<RecordSize> = idx
        .iter()
        .map(|&i| RecordSize::value(outs[i].rec.key.len(), outs[i].rec.value.len()))
        .collect();
    let mut table = store.table.lock();
    let checkpoint = table.cold.checkpoint();
    let head_end = table.cold.head_end();
    let Some((places, opened)) = table.place_cold(
        &sizes,
        ColdMove::Demotion {
            low_water_segments: ctx.low_water_segments,
        },
    ) else {
        for &i in &idx {
            outs[i].what = What::Hot;
        }
        return Ok(Vec::new());
    };
    taken.cold = Some(checkpoint);
    taken.cold_opened = opened;
    let records: Vec<ColdRecord<'_>> = idx
        .iter()
        .zip(&places)
        .map(|(&i, &place)| ColdRecord {
            place,
            key: outs[i].rec.key,
            value: outs[i].rec.value,
            seq: outs[i].rec.seq,
            crc: outs[i].rec.crc,
        })
        .collect();
    let mut head_block = table.cold.head_block.clone();
    let writes = cold_write::encode(&store.layout, &ctx.io, &mut head_block, head_end, &records)?;
    table.cold.head_block = head_block;
    drop(table);
    for (&i, place) in idx.iter().zip(places) {
        outs[i].what = What::Demoted(place);
    }
    Ok(writes)
}

/// The values a GC moved to the cold log: how many, and their record bytes.
struct Demoted {
    values: u64,
    bytes: u64,
}

impl Demoted {
    fn of(outs: &[Out<'_>]) -> Demoted {
        let demoted = outs.iter().filter(|o| matches!(o.what, What::Demoted(_)));
        Demoted {
            values: demoted.clone().count() as u64,
            bytes: demoted.map(|o| o.rec.encoded_len() as u64).sum(),
        }
    }
}

/// Where the records that stay in the group go, in order: fresh segments from the pool
/// (none if nothing stays).
struct Copy {
    chain: Vec<ChainSegment>,
    /// Per output: its segment's index in `chain` and its offset there.
    places: Vec<(usize, u64)>,
}

impl Copy {
    /// Packs the outputs into fresh segments in order. Values are padded onto sectors
    /// (`align.rs`) only while the copy's bytes so far stay within `collected_bytes`,
    /// what the collected chain held: padding at new offsets may differ from the old,
    /// and the GC reserve (the chain limit and one segment) must hold every copy.
    fn pack(
        store: &Groups,
        outs: &[Out<'_>],
        align_bytes: u64,
        collected_bytes: u64,
        taken_log: &mut Vec<SegmentId>,
    ) -> Result<Copy> {
        let layout = store.layout;
        let mut chain: Vec<ChainSegment> = Vec::new();
        let mut places = Vec::with_capacity(outs.len());
        let mut copied_bytes = 0u64;
        for out in outs {
            let size = out.group_size();
            let remaining = collected_bytes.saturating_sub(copied_bytes);
            let align = |at: u64| {
                if size.pad_at(at, align_bytes) + size.len <= remaining {
                    align_bytes
                } else {
                    1
                }
            };
            let mut fits = chain.last().and_then(|last| {
                let at = last.used_bytes;
                size.place_within(at, align(at), layout.segment_bytes(last.id))
            });
            if fits.is_none() {
                let Some(id) = store.table.lock().take_log_for_gc() else {
                    return Err(store_full(store.space()));
                };
                taken_log.push(id);
                chain.push(ChainSegment { id, used_bytes: 0 });
                fits = size.place_within(0, align(0), layout.segment_bytes(id));
            }
            let (start, end) = fits.expect("a record fits an empty segment");
            let index = chain.len() - 1;
            copied_bytes += end - chain[index].used_bytes;
            places.push((index, start));
            chain[index].used_bytes = end;
        }
        Ok(Copy { chain, places })
    }

    /// Encodes the group's records straight into one aligned buffer per segment.
    /// Returns the writes and the partly written last block.
    fn encode(
        &self,
        store: &Groups,
        ctx: &GcCtx<'_>,
        outs: &[Out<'_>],
    ) -> (Vec<DeviceWrite>, PartialBlock) {
        let layout = store.layout;
        let block = layout.block_bytes as usize;
        let mut writes: Vec<DeviceWrite> = self
            .chain
            .iter()
            .map(|s| {
                let len = (s.used_bytes as usize).div_ceil(block) * block;
                DeviceWrite::own(
                    layout.segment_offset(s.id),
                    ctx.io.buffers.take(len.max(block)),
                    len,
                )
            })
            .collect();
        // Per write, where its encoded bytes end: the gaps (padding) get zeros, as
        // the pool's buffers are reused.
        let mut cursors = vec![0usize; writes.len()];
        for (out, &(i, at)) in outs.iter().zip(&self.places) {
            let at = at as usize;
            writes[i].buf[cursors[i]..at].fill(0);
            let buf = &mut writes[i].buf[at..];
            let (kind, body) = out.group_record();
            let (key, seq) = (out.rec.key, out.rec.seq);
            let len = match body {
                GroupBody::Record(bytes) => {
                    buf[..bytes.len()].copy_from_slice(bytes);
                    bytes.len()
                }
                GroupBody::Tag(t) => record::encode_into(buf, kind, seq, key, &t.encode()).len,
            };
            cursors[i] = at + len;
        }
        let mut last_block = PartialBlock::default();
        for (w, s) in writes.iter_mut().zip(&self.chain) {
            let used = s.used_bytes as usize;
            let len = w.len;
            w.buf[used..len].fill(0);
            last_block = PartialBlock::after_write(w, used, block);
        }
        // A segment the copy left empty writes nothing: its buffer goes back to the
        // pool (dropped, one buffer a GC leaked, and the pool ran dry).
        let (writes, empty): (Vec<_>, Vec<_>) = writes.into_iter().partition(|w| w.len > 0);
        ctx.io.buffers.give(empty.into_iter().map(|w| w.buf));
        (writes, last_block)
    }
}

/// Steps 5 and 6. Returns how many log segments the GC freed.
#[allow(clippy::too_many_arguments)]
fn commit(
    store: &Groups,
    ctx: &GcCtx<'_>,
    job: &Job,
    copy: &Copy,
    last_block: PartialBlock,
    outs: &[Out<'_>],
    survey: &Survey<'_>,
    demoted: &Demoted,
    taken: &mut Taken,
) -> Result<usize> {
    let mut commit = ctx.committer.lock_for_gc();
    let written_since = commit.written_during_gc.finish();
    let mut batch = hashkv_lsm::WriteBatch::new();
    let mut key_buf = Vec::new();
    for (i, out) in outs.iter().enumerate() {
        if written_since.contains(out.key()) {
            continue;
        }
        if let Some(p) = out.pointer(copy, i) {
            batch.put(keys::user_key_into(&mut key_buf, out.rec.key), &p.encode());
        }
    }
    let mut freed = {
        let mut table = store.table.lock();
        let kept: u64 = copy.chain.iter().map(|s| s.used_bytes).sum();
        let garbage = job.collected_bytes().saturating_sub(kept + demoted.bytes);
        let freed = table.finish_gc(job.group, copy.chain.clone(), last_block, garbage);
        taken.swapped = true;
        let group = &mut table.groups[job.group as usize];
        group.demotions += demoted.values;
        group.promotions += survey.promotions;
        group.cold_bytes = outs
            .iter()
            .map(|o| match &o.what {
                What::Tag(t) => u64::from(t.record_bytes),
                What::Demoted(_) => o.rec.encoded_len() as u64,
                What::Hot => 0,
            })
            .sum();
        batch.put(&keys::group_key(job.group), &table.encode_group(job.group));
        let mut freed_cold = table.cold.group_collected(job.group);
        for tag in &survey.superseded_tags {
            table.cold.mark_dead(tag);
        }
        freed_cold.extend(table.cold.take_dead());
        table.cold.take_changes(&mut batch);
        (freed, freed_cold)
    };
    // The table already holds the new chain: a failure here has poisoned the store.
    let committed = commit.queue_plan(Plan {
        purpose: Purpose::Gc,
        writes: Vec::new(),
        batch,
        durable: true,
    })?;
    drop(commit);
    let release_gen = committed.wait()?;
    let segments_freed = freed.0.len() + freed.1.len();
    freed.0.append(&mut freed.1);
    store.table.lock().release(freed.0, release_gen);
    Ok(segments_freed)
}
