//! Recovery: replays a WAL file and cuts off its torn tail.

use std::path::Path;

use super::batch::{decode_payload, for_each_entry, BatchEntry};
use super::record::{decode_header, decode_record, WAL_FORMAT_VERSION, WAL_HEADER_BYTES};
use crate::error::{LsmError, Result};
use crate::fs::Fs;

pub(crate) struct Replayed {
    /// Offset just past the last valid record.
    pub valid_bytes: u64,
    pub file_bytes: u64,
    pub seq_max: u64,
}

/// Calls `apply(first_seq, entries)` for every valid batch in order and stops at the
/// first invalid or truncated record. A file whose header is missing or torn (a crash
/// right after creating it) holds no records. A header of a newer format is an error.
pub(crate) fn replay(
    fs: &dyn Fs,
    path: &Path,
    mut apply: impl FnMut(u64, usize, &dyn Fn(&mut dyn FnMut(BatchEntry))),
) -> Result<Replayed> {
    let data = fs
        .read_file(path)
        .map_err(|e| LsmError::io(format!("reading {}", path.display()), e))?;
    let mut out = Replayed {
        valid_bytes: 0,
        file_bytes: data.len() as u64,
        seq_max: 0,
    };
    if data.len() < WAL_HEADER_BYTES {
        return Ok(out);
    }
    match decode_header(&data[..WAL_HEADER_BYTES]) {
        Ok(v) if v > WAL_FORMAT_VERSION => {
            return Err(LsmError::NewerFormat {
                file: path.to_path_buf(),
                found: v,
                supported: WAL_FORMAT_VERSION,
            })
        }
        Ok(_) => {}
        Err(_) => return Ok(out),
    }
    let mut pos = WAL_HEADER_BYTES;
    out.valid_bytes = pos as u64;
    while pos < data.len() {
        let Ok((payload, n)) = decode_record(&data[pos..]) else {
            break;
        };
        let Ok((seq, count, rep)) = decode_payload(payload) else {
            break;
        };
        apply(seq, count, &|f: &mut dyn FnMut(BatchEntry)| {
            for_each_entry(rep, count, f).expect("validated by decode_payload");
        });
        out.seq_max = out.seq_max.max(seq + count as u64 - 1);
        pos += n;
        out.valid_bytes = pos as u64;
    }
    Ok(out)
}
