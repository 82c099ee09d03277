//! Where a flush's records go in the vlog mode: every separated value, in one
//! sequential run at the head.

use super::ValueLog;
use crate::circular_log::{NeedSpace, RunRecord};
use crate::keys;
use crate::record;
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
    let lens: Vec<usize> = separated
        .iter()
        .map(|(_, r, v)| record::encoded_len(r.key.len(), v.len()))
        .collect();
    let mut log = store.log.lock();
    log.reclaim(io.readers.oldest_active());
    let placed = log
        .place(&lens, store.gc_reserve_bytes)
        .map_err(|NeedSpace| PlaceError::NeedSpace { group: None })?;
    let mut pointers = vec![None; records.len()];
    let mut run = Vec::with_capacity(separated.len());
    for (((i, r, v), &position), &len) in separated.iter().zip(&placed.positions).zip(&lens) {
        pointers[*i] = Some(store.pointer(position, len, r.seq));
        run.push(RunRecord {
            position,
            key: r.key,
            value: v,
            seq: r.seq,
        });
    }
    let writes = log.encode_run(&run, &placed, io.buffers)?;
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
