//! Where a flush's records go in the hashkv mode: each key's group, one aligned write
//! per (group, segment) run; a run continues its group's partly written last block. Every key gets a record in its group: a value, or a
//! tombstone for a delete or an inline (small) value, so that GC never revives an older
//! separated value.

use crate::db::Inner;
use crate::error::Error;
use crate::flush::{Appended, FlushError};
use crate::groups::segment_table::{Appends, Placement, TailBlock};
use crate::keys;
use crate::location::Pointer;
use crate::record::{self, RecordKind};
use crate::write_cache::CacheMap;
use hashkv_blockdev::AlignedBuf;
use std::collections::BTreeMap;

/// One record to append: its key, value (None for a tombstone) and group.
struct Pending<'a> {
    key: &'a [u8],
    value: Option<&'a [u8]>,
    seq: u64,
}

/// Group of a key: the paper's hash partitioning.
pub(crate) fn group_of(key: &[u8], group_count: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key) % u64::from(group_count)) as u32
}

/// Places every entry of `map` in its group, encodes the records and returns the
/// writes, the pointers of separated values and the changed segment-table entries.
/// On `NeedSpace` nothing changed.
pub(crate) fn place(
    inner: &Inner,
    map: &CacheMap,
    first_seq: u64,
) -> std::result::Result<Appended, FlushError> {
    let layout = inner.layout;
    let pending: Vec<Pending<'_>> = map
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Pending {
            key: k,
            value: inner.separated(v),
            seq: first_seq + i as u64,
        })
        .collect();
    let mut by_group: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, p) in pending.iter().enumerate() {
        by_group
            .entry(group_of(p.key, layout.group_count))
            .or_default()
            .push(i);
    }
    let per_group: Vec<(u32, Vec<usize>)> = by_group
        .iter()
        .map(|(g, idx)| {
            let lens = idx
                .iter()
                .map(|&i| {
                    record::encoded_len(
                        pending[i].key.len(),
                        pending[i].value.map_or(0, |v| v.len()),
                    )
                })
                .collect();
            (*g, lens)
        })
        .collect();
    let (placements, meta, tails) = {
        let mut table = inner.table().lock();
        table.reclaim(inner.readers.oldest_active());
        let appends = if pending.iter().any(|p| p.value.is_some()) {
            Appends::Values
        } else {
            Appends::TombstonesOnly
        };
        let placements =
            table
                .place_all(&per_group, appends)
                .map_err(|need| FlushError::NeedSpace {
                    group_at_limit: need.group_at_limit,
                })?;
        for (g, idx) in &by_group {
            for &i in idx {
                table.note_key_written(*g, pending[i].key);
            }
        }
        let meta: Vec<(Vec<u8>, Vec<u8>)> = by_group
            .keys()
            .map(|&g| (keys::group_key(g), table.encode_group(g)))
            .collect();
        let tails: Vec<Option<TailBlock>> = by_group
            .keys()
            .map(|&g| table.groups[g as usize].tail.clone())
            .collect();
        (placements, meta, tails)
    };
    // Lay the records out: one buffer per (group, segment) run. A run that continues a
    // partly written block starts with that block's written bytes, unchanged.
    let mut record_at = vec![
        Placement {
            segment: 0,
            offset: 0
        };
        pending.len()
    ];
    let mut writes: Vec<(u64, AlignedBuf, usize)> = Vec::new();
    let mut new_tails: Vec<(u32, Option<TailBlock>)> = Vec::with_capacity(by_group.len());
    let block = layout.block_bytes as usize;
    for (((g, idx), places), tail) in by_group.iter().zip(&placements).zip(tails) {
        let mut run_start = 0;
        let mut group_tail = None;
        while run_start < idx.len() {
            let seg = places[run_start].segment;
            let mut run_end = run_start;
            while run_end < idx.len() && places[run_end].segment == seg {
                run_end += 1;
            }
            let start = places[run_start].offset as usize;
            let prefix_len = start % block;
            let body: usize = (run_start..run_end)
                .map(|j| {
                    let p = &pending[idx[j]];
                    record::encoded_len(p.key.len(), p.value.map_or(0, |v| v.len()))
                })
                .sum();
            let used = prefix_len + body;
            // Encoded straight into the device buffer: values are copied once here.
            let len = used.div_ceil(block) * block;
            // A reused buffer: every byte up to `len` is written below.
            let mut buf = inner.buffers.take(len);
            if prefix_len > 0 {
                match &tail {
                    Some(t) if t.segment == seg && t.bytes.len() == prefix_len => {
                        buf[..prefix_len].copy_from_slice(&t.bytes)
                    }
                    _ => {
                        return Err(FlushError::Fatal(Error::Corruption {
                            what: format!(
                                "group {g}: the written bytes of segment {seg}'s last block are unknown"
                            ),
                        }))
                    }
                }
            }
            let mut at = prefix_len;
            for j in run_start..run_end {
                let p = &pending[idx[j]];
                debug_assert_eq!(places[j].offset as usize, start + at - prefix_len);
                record_at[idx[j]] = places[j];
                let kind = if p.value.is_some() {
                    RecordKind::Value
                } else {
                    RecordKind::Tombstone
                };
                at +=
                    record::encode_into(&mut buf[at..], kind, p.seq, p.key, p.value.unwrap_or(&[]));
            }
            debug_assert_eq!(at, used);
            buf[used..len].fill(0);
            let tail_len = used % block;
            group_tail = (tail_len > 0).then(|| TailBlock {
                segment: seg,
                bytes: buf[used - tail_len..used].to_vec(),
            });
            let at = layout.segment_offset(seg) + (start - prefix_len) as u64;
            writes.push((at, buf, len));
            run_start = run_end;
        }
        new_tails.push((*g, group_tail));
    }
    {
        let mut table = inner.table().lock();
        for (g, tail) in new_tails {
            table.groups[g as usize].tail = tail;
        }
    }
    let pointers = pending
        .iter()
        .zip(&record_at)
        .map(|(p, at)| {
            p.value.map(|value| Pointer {
                segment: at.segment,
                offset: at.offset as u32,
                record_bytes: record::encoded_len(p.key.len(), value.len()) as u32,
                seq: p.seq,
            })
        })
        .collect();
    Ok(Appended {
        writes,
        pointers,
        meta,
    })
}
