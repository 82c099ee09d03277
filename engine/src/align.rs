//! Where a record goes so that its value can be read alone in as few sectors as it
//! needs. A get reads only a value's sectors (`read.rs`); a 4 KiB value whose record
//! starts anywhere spans nine 512-byte sectors, and this machine's disk serves such
//! 4,608-byte reads at about 60% of the rate of 4 KiB ones (fio, QD32). So a value
//! record may be preceded by zeros that put its value on a sector boundary (the
//! device's logical block); readers skip zeros where a record could start
//! (`record::SegmentRecords`). Every placement loop (the groups, GC's copies, the cold
//! log, the vlog mode's log) places records through `RecordSize::place_within`; the
//! cold log asks for no alignment (`cold_log::COLD_VALUE_ALIGN_BYTES` says why).

use crate::record;

/// A value is put on a sector boundary only when the zeros that takes cost at most
/// this share (1/8) of its bytes: a 4 KiB value on 512-byte sectors always (at most
/// 511 bytes, 256 on average: about 6% more bytes written), a 1 KiB value when it
/// lands within 128 bytes of a boundary; on 4 KiB sectors, a 4 KiB value only when it
/// lands within 512 bytes of one, so that padding never doubles what small values
/// take.
pub const PAD_SHARE_MAX_DIVISOR: u64 = 8;

/// A value longer than this is put on a sector boundary whether or not that saves a
/// sector of its reads (within the share above): the write cache holds such a value in
/// an aligned buffer, and a flush writes it from there instead of copying it only where
/// it starts on a sector (`record_write.rs`). On 512-byte sectors that costs at most
/// 511 bytes, 3% of the shortest such value.
pub const ALWAYS_PAD_VALUE_BYTES_MIN: u64 = crate::cache_map::ARENA_VALUE_BYTES_MAX as u64 + 1;

/// A record as placement sees it: its encoded length, and the length of the value
/// that ends it (0 for records never read alone: tombstones and cold tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSize {
    pub len: u64,
    pub value_bytes: u64,
}

impl RecordSize {
    /// A value record of a key and value of these lengths.
    pub fn value(key_len: usize, value_len: usize) -> RecordSize {
        RecordSize {
            len: record::encoded_len(key_len, value_len) as u64,
            value_bytes: value_len as u64,
        }
    }

    /// A record that is never padded (a tombstone, a cold tag).
    pub fn unpadded(len: usize) -> RecordSize {
        RecordSize {
            len: len as u64,
            value_bytes: 0,
        }
    }

    /// The zeros to put before this record if it were to start at `at` (an offset
    /// from a sector boundary): enough to start its value on an `align_bytes`
    /// boundary, when that costs at most 1/`PAD_SHARE_MAX_DIVISOR` of the value and
    /// saves a sector of the value's read or the value is at least
    /// `ALWAYS_PAD_VALUE_BYTES_MIN` long; else 0.
    pub fn pad_at(&self, at: u64, align_bytes: u64) -> u64 {
        if self.value_bytes == 0 || align_bytes <= 1 {
            return 0;
        }
        let value_at = at + self.len - self.value_bytes;
        let pad = value_at.next_multiple_of(align_bytes) - value_at;
        if pad == 0 || pad * PAD_SHARE_MAX_DIVISOR > self.value_bytes {
            return 0;
        }
        let sectors =
            |start: u64| (start + self.value_bytes).div_ceil(align_bytes) - start / align_bytes;
        if self.value_bytes >= ALWAYS_PAD_VALUE_BYTES_MIN
            || sectors(value_at + pad) < sectors(value_at)
        {
            pad
        } else {
            0
        }
    }

    /// The most this record takes with its padding, wherever it lands.
    pub fn len_max(&self, align_bytes: u64) -> u64 {
        let pad_max = (self.value_bytes / PAD_SHARE_MAX_DIVISOR).min(align_bytes.saturating_sub(1));
        self.len + pad_max
    }

    /// Where this record starts and ends if placed at `at` of a unit of `unit_bytes`:
    /// after its padding, or without it where only that fits; `None` if it does not
    /// fit at all.
    pub fn place_within(&self, at: u64, align_bytes: u64, unit_bytes: u64) -> Option<(u64, u64)> {
        let padded = at + self.pad_at(at, align_bytes);
        [padded, at]
            .into_iter()
            .find(|&start| start + self.len <= unit_bytes)
            .map(|start| (start, start + self.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_4k_value_lands_on_a_sector_and_reads_as_eight() {
        let r = RecordSize::value(24, 4096);
        for at in [0u64, 1, 100, 467, 468, 511, 4096 + 7] {
            let (start, end) = r.place_within(at, 512, 1 << 20).unwrap();
            assert!(start >= at && start - at < 512, "at {at}");
            assert_eq!(end - start, r.len);
            let value_at = end - 4096;
            assert_eq!(value_at % 512, 0, "at {at}");
        }
    }

    #[test]
    fn padding_is_bounded_and_only_where_it_saves_a_sector() {
        // A tombstone or tag is never padded.
        assert_eq!(RecordSize::unpadded(40).pad_at(3, 512), 0);
        // 1 KiB: padded only within 128 bytes of the boundary.
        let r = RecordSize::value(4, 1024);
        let value_at = |at: u64| at + 24;
        for at in 0..1024u64 {
            let pad = r.pad_at(at, 512);
            assert!(pad * PAD_SHARE_MAX_DIVISOR <= 1024);
            if pad > 0 {
                assert_eq!((value_at(at) + pad) % 512, 0);
            }
        }
        assert_eq!(r.pad_at(512 - 24 - 100, 512), 100);
        assert_eq!(r.pad_at(512 - 24 - 200, 512), 0);
        // A value that fits in its sector unpadded is left alone.
        let small = RecordSize::value(4, 100);
        assert_eq!(small.pad_at(0, 512), 0);
        // No alignment asked: nothing.
        assert_eq!(RecordSize::value(4, 4096).pad_at(5, 1), 0);
        // A value longer than the write cache's arena takes is padded onto a sector
        // even where that saves none (20,000 bytes after a 29-byte head span 40
        // sectors either way), so that the flush can write it from the cache's buffer;
        // one just within the arena's limit is not.
        let long = RecordSize::value(9, 20_000);
        assert_eq!(long.pad_at(0, 512), 512 - 29);
        let within = RecordSize::value(9, crate::cache_map::ARENA_VALUE_BYTES_MAX - 100);
        assert_eq!(within.pad_at(0, 512), 0);
        // Still within the share: on 4 KiB sectors, only values of 32 KiB and more are
        // always padded.
        assert_eq!(RecordSize::value(9, 20_000).pad_at(0, 4096), 0);
        assert_eq!(RecordSize::value(9, 40_000).pad_at(0, 4096), 4096 - 29);
        // The most a record takes bounds every placement.
        for (r, align) in [(r, 512), (RecordSize::value(24, 4096), 512), (small, 4096)] {
            for at in 0..2048 {
                assert!(r.pad_at(at, align) + r.len <= r.len_max(align), "at {at}");
            }
        }
        assert_eq!(RecordSize::unpadded(40).len_max(512), 40);
    }

    #[test]
    fn padding_gives_way_at_a_units_end() {
        let r = RecordSize::value(24, 4096);
        let len = r.len;
        // Fits only unpadded.
        assert_eq!(r.place_within(1, 512, 1 + len), Some((1, 1 + len)));
        assert_eq!(r.place_within(2, 512, 1 + len), None);
    }
}
