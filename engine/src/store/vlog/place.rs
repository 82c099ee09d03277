//! Where a flush's records go in the vlog mode: every separated value, in one
//! sequential run at the head.

use super::ValueLog;
use crate::align::RecordSize;
use crate::circular_log::{NeedSpace, RunRecord};
use crate::keys;
use crate::store::{FlushRecord, IoCtx, PlaceError, Placed};

pub(super) fn place(
    store: &ValueLog,
    io: &IoCtx<'_>,
    records: &[FlushRecord<'_>],
) -> Result<Placed, PlaceError> {
    let separated: Vec<(usize, &FlushRecord<'_>, &[u8])> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.value.map(|v| (i, r, v)))
        .collect();
    let sizes: Vec<RecordSize> = separated
        .iter()
        .map(|(_, r, v)| RecordSize::value(r.key.len(), v.len()))
        .collect();
    let mut log = store.log.lock();
    log.reclaim(io.readers.oldest_active());
    let placed = log
        .place(&sizes, io.value_align_bytes, store.gc_reserve_bytes)
        .map_err(|NeedSpace| PlaceError::NeedSpace { group: None })?;
    let run: Vec<RunRecord<'_>> = separated
        .iter()
        .zip(&placed.positions)
        .map(|((_, r, v), &position)| RunRecord {
            position,
            key: r.key,
            value: v,
            aligned: r.aligned,
            seq: r.seq,
        })
        .collect();
    let (writes, crcs) = log.encode_run(&run, &placed, &io.encoder())?;
    let mut pointers = vec![None; records.len()];
    for ((((i, r, _), &position), size), crc) in separated
        .iter()
        .zip(&placed.positions)
        .zip(&sizes)
        .zip(crcs)
    {
        pointers[*i] = Some(store.pointer(position, size.len as usize, r.seq, crc));
    }
    let entries = if separated.is_empty() {
        Vec::new()
    } else {
        vec![(keys::vlog_key().to_vec(), log.encode_entry())]
    };
    Ok(Placed {
        writes,
        pointers,
        entries,
    })
}
