//! The check's part for hot and cold: every cold tag in a group's chain against the
//! cold log. A tag in a chain has not been found superseded by a GC yet, so the record
//! it names must be live: not in its segment's dead list, and counted in its live
//! bytes. So for every cold segment (not evacuated), the bytes the chains' tags name
//! must equal its live bytes, and each newest tag's record must read back with the
//! tag's key and sequence number.

use super::Groups;
use crate::error::Result;
use crate::location::{Pointer, Region};
use crate::read::check_record;
use crate::record::{ColdTag, RecordKind};
use crate::spans::{self, Span};
use crate::store::IoCtx;
use std::collections::HashMap;

/// Records read per submission while checking tags.
const TAG_READ_BATCH_MAX: usize = 64;

pub(super) fn check(store: &Groups, io: &IoCtx<'_>) -> Result<Vec<String>> {
    let t = store.table.lock();
    let layout = store.layout;
    let block = u64::from(layout.block_bytes);
    let mut damage = Vec::new();
    let mut tagged_bytes: HashMap<u32, u64> = HashMap::new();
    let mut reads: Vec<(Vec<u8>, Pointer)> = Vec::new();
    for (g, group) in t.groups.iter().enumerate() {
        let spans: Vec<Span> = group
            .chain
            .iter()
            .filter(|s| s.used_bytes > 0)
            .map(|s| Span::covering(layout.segment_offset(s.id), s.used_bytes, block))
            .collect();
        let (bufs, _) = spans::read(io.device, &spans)?;
        for (span, buf) in spans.iter().zip(&bufs) {
            for (_, rec) in span.records(buf).flatten() {
                if rec.kind != RecordKind::ColdTag {
                    continue;
                }
                let Some(tag) = ColdTag::of(&rec) else {
                    continue;
                };
                let name = String::from_utf8_lossy(rec.key);
                let Some(seg) = t.cold.find(tag.segment).filter(|s| s.epoch == tag.epoch) else {
                    // A stale tag (its segment freed) is dropped by the group's next GC
                    // only if superseded; the newest tag of a key must name the log.
                    damage.push(format!(
                        "group {g}: cold tag of key {name:?} names segment {} epoch {}, not in the cold log",
                        tag.segment, tag.epoch
                    ));
                    continue;
                };
                if seg.evacuated() {
                    continue; // Its records were copied; the group's next GC settles it.
                }
                if seg.is_dead(tag.offset) {
                    damage.push(format!(
                        "group {g}: cold tag of key {name:?} names a record of segment {} marked dead",
                        tag.segment
                    ));
                }
                *tagged_bytes.entry(tag.segment).or_default() += u64::from(tag.record_bytes);
                reads.push((
                    rec.key.to_vec(),
                    Pointer {
                        region: Region::Cold,
                        unit: tag.segment,
                        offset: tag.offset,
                        record_bytes: tag.record_bytes,
                        seq: rec.seq,
                        crc: tag.crc,
                    },
                ));
            }
        }
    }
    for seg in t.cold.segments.iter().filter(|s| !s.evacuated()) {
        let tagged = tagged_bytes.get(&seg.id).copied().unwrap_or(0);
        if tagged != seg.live_bytes {
            damage.push(format!(
                "cold segment {}: {} live bytes counted, the groups' tags name {tagged}",
                seg.id, seg.live_bytes
            ));
        }
    }
    drop(t);
    check_records(store, io, &reads, &mut damage)?;
    Ok(damage)
}

/// Reads the records the tags name, a batch at a time, and checks that each holds the
/// tag's key, sequence number and checksum.
fn check_records(
    store: &Groups,
    io: &IoCtx<'_>,
    reads: &[(Vec<u8>, Pointer)],
    damage: &mut Vec<String>,
) -> Result<()> {
    let layout = store.layout;
    let block = u64::from(layout.block_bytes);
    for batch in reads.chunks(TAG_READ_BATCH_MAX) {
        let spans: Vec<Span> = batch
            .iter()
            .map(|(_, p)| {
                let at = layout.segment_offset(p.unit) + u64::from(p.offset);
                Span::covering(at, u64::from(p.record_bytes), block)
            })
            .collect();
        let (bufs, _) = spans::read(io.device, &spans)?;
        for ((key, p), (span, buf)) in batch.iter().zip(spans.iter().zip(&bufs)) {
            if let Err(e) = check_record(span.payload(buf), p, key) {
                damage.push(format!(
                    "cold record of key {:?} (tag {p:?}): {e}",
                    String::from_utf8_lossy(key)
                ));
            }
        }
    }
    Ok(())
}
