//! Reading stretches of the value store: whole blocks (the layout's write block for
//! segments, the device's logical block for single records) are read (O_DIRECT), then the
//! records in the meaningful part are parsed. GC (both modes), the check and gets all
//! go through here, so there is one read-then-parse loop; GC reads into buffers from
//! the engine's pool, gets from the value reads' pool, the check into fresh buffers of
//! their spans' size.

use crate::buffers::{BufferPool, Lent};
use crate::error::Result;
use crate::record::SegmentRecords;
use hashkv_blockdev::{AlignedBuf, BlockDevice, IoOp};

/// A stretch of the device to read: the aligned range that covers it, and where in
/// that range the records to parse begin and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// Device offset of the first block read.
    pub offset: u64,
    /// Bytes read: whole blocks.
    pub len: usize,
    /// The records lie in `[from, to)` of what was read; `from` is a record boundary.
    pub from: usize,
    pub to: usize,
}

impl Span {
    /// The span of `bytes` bytes of records starting at device offset `start`.
    pub fn covering(start: u64, bytes: u64, block_bytes: u64) -> Span {
        let offset = start - start % block_bytes;
        let end = (start + bytes).next_multiple_of(block_bytes);
        Span {
            offset,
            len: (end - offset).max(block_bytes) as usize,
            from: (start - offset) as usize,
            to: (start + bytes - offset) as usize,
        }
    }

    /// The records of this span, read into `buf`; offsets are from the span's start.
    pub fn records<'a>(&self, buf: &'a [u8]) -> SegmentRecords<'a> {
        SegmentRecords::new_at(&buf[..self.to], self.from)
    }

    /// The bytes of this span's records (a single record's span: the record).
    pub fn payload<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.from..self.to]
    }
}

/// Reads every span with one submission into fresh buffers of the spans' sizes: for
/// one-off reads (the check's). Returns a buffer per span and the bytes read.
pub(crate) fn read(device: &dyn BlockDevice, spans: &[Span]) -> Result<(Vec<AlignedBuf>, u64)> {
    let mut bufs: Vec<AlignedBuf> = spans.iter().map(|s| AlignedBuf::new(s.len)).collect();
    let bytes = read_into(device, spans.iter().zip(bufs.iter_mut()))?;
    Ok((bufs, bytes))
}

/// `read` into buffers lent by `pool`, which get them back when the result drops: for
/// GC, which reads whole segments again and again, and for gets.
pub(crate) fn read_pooled<'p>(
    device: &dyn BlockDevice,
    spans: &[Span],
    pool: &'p BufferPool,
) -> Result<(Lent<'p>, u64)> {
    let mut bufs = pool.lend(spans.iter().map(|s| s.len));
    let bytes = read_into(device, spans.iter().zip(bufs.iter_mut()))?;
    Ok((bufs, bytes))
}

/// `read_pooled`, except that span i is not read where `read[i]` holds its bytes
/// already, read earlier into a buffer of `pool` (a GC's prefetch). Returns a buffer
/// per span.
pub(crate) fn read_pooled_except<'p>(
    device: &dyn BlockDevice,
    spans: &[Span],
    read: Vec<Option<AlignedBuf>>,
    pool: &'p BufferPool,
) -> Result<Lent<'p>> {
    assert_eq!(spans.len(), read.len(), "a buffer or none per span");
    let missing: Vec<bool> = read.iter().map(Option::is_none).collect();
    let lens = spans
        .iter()
        .zip(&missing)
        .filter(|(_, &m)| m)
        .map(|(s, _)| s.len);
    let mut fresh = pool.take_each(lens).into_iter();
    let bufs = read
        .into_iter()
        .map(|r| r.unwrap_or_else(|| fresh.next().expect("a buffer per missing span")))
        .collect();
    let mut bufs = pool.lent(bufs);
    let to_read = spans.iter().zip(bufs.iter_mut()).zip(&missing);
    read_into(device, to_read.filter(|(_, &m)| m).map(|(r, _)| r))?;
    Ok(bufs)
}

/// Reads each span into its buffer (at least as long), all with one submission.
/// Returns the bytes read.
fn read_into<'a>(
    device: &dyn BlockDevice,
    mut reads: impl Iterator<Item = (&'a Span, &'a mut AlignedBuf)>,
) -> Result<u64> {
    let Some((span, buf)) = reads.next() else {
        return Ok(0);
    };
    let Some(second) = reads.next() else {
        // One read (a get): no batch to set up, nothing allocated.
        device.read_at(span.offset, &mut buf[..span.len])?;
        return Ok(span.len as u64);
    };
    let mut bytes = 0;
    let mut ops: Vec<IoOp<'_>> = [(span, buf), second]
        .into_iter()
        .chain(reads)
        .map(|(s, buf)| {
            bytes += s.len as u64;
            IoOp::Read {
                offset: s.offset,
                buf: &mut buf[..s.len],
            }
        })
        .collect();
    device.submit(&mut ops)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_aligns_outward() {
        let s = Span::covering(5000, 100, 4096);
        assert_eq!((s.offset, s.len, s.from, s.to), (4096, 4096, 904, 1004));
        let s = Span::covering(8192, 8192, 4096);
        assert_eq!((s.offset, s.len, s.from, s.to), (8192, 8192, 0, 8192));
        let s = Span::covering(8192, 0, 4096);
        assert_eq!((s.len, s.from, s.to), (4096, 0, 0));
        let s = Span::covering(4000, 200, 4096);
        assert_eq!((s.offset, s.len, s.from, s.to), (0, 8192, 4000, 4200));
    }
}
