//! Where a flush's records go in the vlog mode: every separated value, in one
//! sequential run at the head. Deletes and small values change only the index (GC
//! learns from the index that older records are dead, so no tombstone is needed).

use crate::db::Inner;
use crate::flush::{Appended, FlushError};
use crate::keys;
use crate::record;
use crate::vlog::log::NeedSpace;
use crate::write_cache::CacheMap;

pub(crate) fn place(
    inner: &Inner,
    map: &CacheMap,
    first_seq: u64,
) -> std::result::Result<Appended, FlushError> {
    let mut records: Vec<(usize, &[u8], &[u8])> = Vec::new();
    for (i, (k, v)) in map.iter().enumerate() {
        if let Some(v) = inner.separated(v) {
            records.push((i, k, v));
        }
    }
    let lens: Vec<usize> = records
        .iter()
        .map(|(_, k, v)| record::encoded_len(k.len(), v.len()))
        .collect();
    let mut log = inner.value_log().lock();
    log.reclaim(inner.readers.oldest_active());
    let (positions, start, end) =
        log.place(&lens, false)
            .map_err(|NeedSpace| FlushError::NeedSpace {
                group_at_limit: None,
            })?;
    for (k, _) in map.iter() {
        log.note_key_written(k);
    }
    let mut pointers = vec![None; map.len()];
    for ((i, k, v), pos) in records.iter().zip(&positions) {
        let len = record::encoded_len(k.len(), v.len());
        pointers[*i] = Some(log.pointer(*pos, len, first_seq + *i as u64));
    }
    let run: Vec<(u64, &[u8], &[u8], u64)> = records
        .iter()
        .zip(&positions)
        .map(|((i, k, v), pos)| (*pos, *k, *v, first_seq + *i as u64))
        .collect();
    let writes = log.encode_run(&run, start, end, &inner.buffers);
    let meta = if records.is_empty() {
        Vec::new()
    } else {
        vec![(keys::vlog_key().to_vec(), log.encode_entry())]
    };
    Ok(Appended {
        writes,
        pointers,
        meta,
    })
}
