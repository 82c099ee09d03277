//! Reading ahead for cursors that walk a table's blocks in order. Table files are read
//! with O_DIRECT, so the kernel's readahead no longer helps a walk: a cursor reads
//! runs of consecutive blocks in one request itself.
//!
//! - A compaction reads every block of its inputs once: it reads
//!   `COMPACTION_READAHEAD_BYTES` at a time from the first block on.
//! - A user iterator (a scan) may stop after a few entries: it reads one block at a
//!   time until it has loaded two consecutive blocks, then runs of
//!   `USER_READAHEAD_BYTES_MIN`, doubling up to `USER_READAHEAD_BYTES_MAX` (RocksDB's
//!   automatic readahead does the same). Only its blocks missing from the block
//!   cache are read.

use super::reader::ReadFor;

/// A compaction cursor's read size: a 512 KiB read costs mostly transfer time on an
/// NVMe device (a 4 KiB read costs mostly latency), and a compaction of an L0 table
/// and its overlapping tables holds one such buffer per input table.
pub(crate) const COMPACTION_READAHEAD_BYTES: u64 = 512 << 10;
/// A scan's first run of blocks read ahead: four 4 KiB blocks.
pub(crate) const USER_READAHEAD_BYTES_MIN: u64 = 16 << 10;
/// A scan's largest run: a long scan reads 128 KiB at a time (the kernel's default
/// readahead), and an iterator over many tables holds one such buffer per table.
pub(crate) const USER_READAHEAD_BYTES_MAX: u64 = 128 << 10;

/// A cursor's blocks read ahead: the raw bytes (payloads and trailers) of a run of
/// consecutive blocks.
pub(crate) struct Readahead {
    pub read_for: ReadFor,
    /// File offset of `data[0]`.
    start: u64,
    data: Vec<u8>,
    /// Bytes the next run covers.
    next_bytes: u64,
    /// The block the cursor loaded last, to see a walk in order.
    last_block: Option<usize>,
}

impl Readahead {
    pub fn new(read_for: ReadFor) -> Readahead {
        Readahead {
            read_for,
            start: 0,
            data: Vec::new(),
            next_bytes: match read_for {
                ReadFor::User => USER_READAHEAD_BYTES_MIN,
                ReadFor::Compaction => COMPACTION_READAHEAD_BYTES,
            },
            last_block: None,
        }
    }

    /// The bytes `offset..end` if the run read ahead holds them.
    pub fn get(&self, offset: u64, end: u64) -> Option<&[u8]> {
        let data_end = self.start + self.data.len() as u64;
        (offset >= self.start && end <= data_end)
            .then(|| &self.data[(offset - self.start) as usize..(end - self.start) as usize])
    }

    /// Notes that the cursor loads `block`; returns the bytes a new run should cover
    /// if it is to read one, None if it should read the block alone.
    pub fn visit(&mut self, block: usize) -> Option<u64> {
        let in_order = self.last_block.is_some_and(|b| b + 1 == block);
        self.last_block = Some(block);
        (self.read_for == ReadFor::Compaction || in_order).then_some(self.next_bytes)
    }

    /// Keeps a run just read, starting at file offset `start`; the next one is larger.
    pub fn fill(&mut self, start: u64, data: Vec<u8>) {
        self.start = start;
        self.data = data;
        if self.read_for == ReadFor::User {
            self.next_bytes = (self.next_bytes * 2).min(USER_READAHEAD_BYTES_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_cursors_read_ahead_only_in_order_and_grow() {
        let mut r = Readahead::new(ReadFor::User);
        assert_eq!(r.visit(5), None, "a first block is read alone");
        assert_eq!(r.visit(3), None, "so is one out of order");
        assert_eq!(r.visit(4), Some(USER_READAHEAD_BYTES_MIN));
        r.fill(100, vec![1; 16]);
        assert_eq!(r.get(104, 116), Some(&[1u8; 12][..]));
        assert_eq!(r.get(99, 110), None);
        assert_eq!(r.get(110, 117), None);
        assert_eq!(r.visit(5), Some(2 * USER_READAHEAD_BYTES_MIN));
        for _ in 0..10 {
            r.fill(0, Vec::new());
        }
        assert_eq!(r.visit(6), Some(USER_READAHEAD_BYTES_MAX));
        let mut c = Readahead::new(ReadFor::Compaction);
        assert_eq!(c.visit(0), Some(COMPACTION_READAHEAD_BYTES));
    }
}
