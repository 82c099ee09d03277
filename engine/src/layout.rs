//! Where each region lies on the (possibly striped) device, and which segment id means
//! which byte range. Computed once at format time and recorded in the superblock.
//!
//! ```text
//! unit 0               superblock copies (at 0 and at 128 KiB)
//! units 1 ..           segments of log_segment_bytes, one pool (format version 3)
//! ```
//! Every unit is one main segment's size, the stripe unit over several devices; segments
//! divide it, so no segment ever straddles two member devices. The groups' chains, the
//! cold data log and the vlog mode's log all draw on the one pool: the main segment
//! size only sets how many groups there are (each group's share of the space).
//!
//! Stores formatted before version 3 had a fixed main segment per group (`main_slot_count`
//! main-sized segments before the log segments). Their layout still decodes, so that
//! their vlog and lsm stores open; the hashkv mode refuses them (`Layout::is_pooled`).

use crate::error::{Error, Result};
use crate::options::Options;

pub type SegmentId = u32;

/// Offset of the superblock's twin copy. Fixed, so that a store whose first copy is
/// damaged opens whatever its segment sizes; past the first 64 KiB that partition
/// tables, volume labels and most filesystems' primary superblocks overwrite, yet
/// inside the superblock's unit for every main segment size format accepts.
pub const SUPERBLOCK_TWIN_OFFSET_BYTES: u64 = 128 << 10;

/// Smallest main segment format accepts: unit 0 holds the superblock's two copies,
/// the twin at `SUPERBLOCK_TWIN_OFFSET_BYTES`, in its first half.
pub const MAIN_SEGMENT_BYTES_MIN: u64 = 2 * SUPERBLOCK_TWIN_OFFSET_BYTES;

/// Most segments a layout may have: ids are 32-bit, and half the range leaves room
/// for sums of ids and counts without overflow.
pub const SEGMENT_COUNT_MAX: u32 = u32::MAX / 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub block_bytes: u32,
    pub main_segment_bytes: u64,
    pub log_segment_bytes: u64,
    pub group_count: u32,
    /// 0 from format version 3 (one pool); before: groups plus spare main segments.
    pub main_slot_count: u32,
    pub main_region_offset: u64,
    pub log_region_offset: u64,
    pub log_segment_count: u32,
}

impl Layout {
    pub fn compute(device_bytes: u64, block_bytes: u32, options: &Options) -> Result<Layout> {
        options.validate(block_bytes)?;
        let unit = options.main_segment_bytes;
        if unit < MAIN_SEGMENT_BYTES_MIN {
            return Err(Error::InvalidOptions {
                reason: format!(
                    "main_segment_bytes {unit} is below the minimum of {MAIN_SEGMENT_BYTES_MIN} \
                     (the first main-segment unit holds the superblock's copies at 0 and \
                     {SUPERBLOCK_TWIN_OFFSET_BYTES})"
                ),
            });
        }
        let units = device_bytes / unit;
        let too_small = |reason: String| Err(Error::DeviceTooSmall { reason });
        if units < 4 {
            return too_small(format!(
                "{device_bytes} bytes hold {units} main segments of {unit} bytes; at least 4 are needed (superblock, one group's share, one GC's, reserved space)"
            ));
        }
        let value_units = units - 1;
        let reserved_units = ((value_units as f64) * options.reserved_share).ceil() as u64;
        let gc_units = u64::from(options.gc_workers);
        if reserved_units + gc_units >= value_units {
            return too_small(format!(
                "{value_units} value units leave no room for a group after {reserved_units} reserved and {gc_units} GC units"
            ));
        }
        // Each group's share is one main segment's worth; the reserved share and one
        // GC's worth per worker are left over, for log growth, GC and the cold log.
        let group_count = value_units - reserved_units - gc_units;
        let log_per_unit = unit / options.log_segment_bytes;
        let log_segment_count = value_units * log_per_unit;
        if log_segment_count > u64::from(SEGMENT_COUNT_MAX) {
            return too_small(
                "too many segments for 32-bit segment ids; use larger segments".into(),
            );
        }
        let layout = Layout {
            block_bytes,
            main_segment_bytes: unit,
            log_segment_bytes: options.log_segment_bytes,
            group_count: group_count as u32,
            main_slot_count: 0,
            main_region_offset: unit,
            log_region_offset: unit,
            log_segment_count: log_segment_count as u32,
        };
        layout.assert_valid(device_bytes);
        Ok(layout)
    }

    /// Invariants every layout (computed or decoded) satisfies.
    pub fn check(&self, device_bytes: u64) -> Result<(), String> {
        let block = u64::from(self.block_bytes);
        if block == 0 || self.log_segment_bytes == 0 || self.main_segment_bytes == 0 {
            return Err("zero block or segment size".into());
        }
        if !self.log_segment_bytes.is_multiple_of(block)
            || !self
                .main_segment_bytes
                .is_multiple_of(self.log_segment_bytes)
        {
            return Err("segment sizes not aligned".into());
        }
        if self.group_count == 0 {
            return Err("no group".into());
        }
        if self.main_slot_count != 0 && self.main_slot_count <= self.group_count {
            return Err("no spare main segment".into());
        }
        // A decoded layout is checked before anything computes with it: checked
        // arithmetic, so that fields whose products overflow are refused rather than
        // wrapped into a layout that looks consistent (found by fuzzing the superblock).
        let log_region_offset = (1 + u64::from(self.main_slot_count))
            .checked_mul(self.main_segment_bytes)
            .ok_or("main region beyond 2^64 bytes")?;
        if self.main_region_offset != self.main_segment_bytes
            || self.log_region_offset != log_region_offset
        {
            return Err("region offsets inconsistent".into());
        }
        let segments = self.main_slot_count.checked_add(self.log_segment_count);
        if !matches!(segments, Some(n) if n <= SEGMENT_COUNT_MAX) {
            return Err(format!("more than {SEGMENT_COUNT_MAX} segments"));
        }
        let end = u64::from(self.log_segment_count)
            .checked_mul(self.log_segment_bytes)
            .and_then(|log_bytes| self.log_region_offset.checked_add(log_bytes))
            .ok_or("log region beyond 2^64 bytes")?;
        if end > device_bytes {
            return Err(format!(
                "regions end at {end} beyond the device's {device_bytes} bytes"
            ));
        }
        Ok(())
    }

    fn assert_valid(&self, device_bytes: u64) {
        if let Err(e) = self.check(device_bytes) {
            panic!("computed layout invalid: {e}: {self:?}");
        }
    }

    pub fn end_offset(&self) -> u64 {
        self.log_region_offset + u64::from(self.log_segment_count) * self.log_segment_bytes
    }

    pub fn segment_count(&self) -> u32 {
        self.main_slot_count + self.log_segment_count
    }

    pub fn is_main(&self, id: SegmentId) -> bool {
        id < self.main_slot_count
    }

    /// Every value segment is one pool of log-sized segments (format version 3), as
    /// opposed to a fixed main segment per group before it.
    pub fn is_pooled(&self) -> bool {
        self.main_slot_count == 0
    }

    /// Log segments in one main segment: a group's nominal share of the pool.
    pub fn segments_per_main(&self) -> u64 {
        self.main_segment_bytes / self.log_segment_bytes
    }

    /// Segments of the pool beyond the groups' nominal shares: the reserved space
    /// (and one GC's worth per GC worker), from which the reserves and the GC
    /// low-water band are sized.
    pub fn reserve_segment_count(&self) -> u64 {
        if !self.is_pooled() {
            // Before version 3 the log segments were the reserved space.
            return u64::from(self.log_segment_count);
        }
        let groups = u64::from(self.group_count) * self.segments_per_main();
        u64::from(self.log_segment_count).saturating_sub(groups)
    }

    pub fn segment_offset(&self, id: SegmentId) -> u64 {
        assert!(id < self.segment_count(), "segment {id} out of range");
        if self.is_main(id) {
            self.main_region_offset + u64::from(id) * self.main_segment_bytes
        } else {
            self.log_region_offset + u64::from(id - self.main_slot_count) * self.log_segment_bytes
        }
    }

    pub fn segment_bytes(&self, id: SegmentId) -> u64 {
        if self.is_main(id) {
            self.main_segment_bytes
        } else {
            self.log_segment_bytes
        }
    }

    /// Bytes of value space in all segments.
    pub fn value_capacity_bytes(&self) -> u64 {
        u64::from(self.main_slot_count) * self.main_segment_bytes
            + u64::from(self.log_segment_count) * self.log_segment_bytes
    }

    /// Offsets of the two superblock copies this build writes: the first block and
    /// the twin at a fixed offset, so that the twin is found without knowing the
    /// segment sizes its copy names (FORMAT.md, "Where things live").
    pub fn superblock_offsets() -> [u64; 2] {
        [0, SUPERBLOCK_TWIN_OFFSET_BYTES]
    }

    /// Where stores formatted before the twin had its fixed offset keep it: half a
    /// main segment in. Still read, so that those stores open.
    pub fn legacy_twin_offset(main_segment_bytes: u64) -> u64 {
        main_segment_bytes / 2
    }

    /// Where the twin of a store with these main segments lies: the fixed offset,
    /// unless the superblock's unit is too small to hold it (a store formatted before
    /// the minimum existed), where it lies at the legacy offset.
    pub fn twin_offset(main_segment_bytes: u64) -> u64 {
        if main_segment_bytes >= MAIN_SEGMENT_BYTES_MIN {
            SUPERBLOCK_TWIN_OFFSET_BYTES
        } else {
            Layout::legacy_twin_offset(main_segment_bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_do_not_overlap_and_segments_fit() {
        let o = Options::default()
            .with_main_segment_bytes(1 << 20)
            .with_log_segment_bytes(64 << 10);
        let l = Layout::compute(64 << 20, 4096, &o).unwrap();
        assert!(l.is_pooled());
        // 63 value units: 19 reserved (30%), 1 for the GC worker, 43 groups.
        assert_eq!(l.group_count, 43);
        assert_eq!(u64::from(l.log_segment_count), 63 * 16);
        assert_eq!(l.reserve_segment_count(), 20 * 16);
        let mut prev_end = l.main_region_offset;
        for id in 0..l.segment_count() {
            let off = l.segment_offset(id);
            assert!(off >= prev_end, "segment {id} overlaps");
            assert_eq!(off % 4096, 0);
            // No segment crosses a stripe unit.
            assert_eq!(
                off / l.main_segment_bytes,
                (off + l.segment_bytes(id) - 1) / l.main_segment_bytes
            );
            prev_end = off + l.segment_bytes(id);
        }
        assert!(prev_end <= 64 << 20);
    }

    #[test]
    fn check_refuses_fields_whose_arithmetic_overflows() {
        let o = Options::default()
            .with_main_segment_bytes(1 << 20)
            .with_log_segment_bytes(64 << 10);
        let good = Layout::compute(64 << 20, 4096, &o).unwrap();
        // Each layout below is consistent in wrapping arithmetic (what a release build
        // computed before the check used checked arithmetic), and must be refused.
        // Main segments so large that the log region's offset wraps (a layout of fixed
        // main segments, as before format version 3).
        let mut l = good;
        l.group_count = 1;
        l.main_slot_count = 3;
        l.main_segment_bytes = 1 << 62;
        l.log_segment_bytes = 1 << 62;
        l.main_region_offset = 1 << 62;
        l.log_region_offset = (1 + u64::from(l.main_slot_count)).wrapping_mul(1 << 62);
        l.log_segment_count = 4;
        assert!(l.check(u64::MAX).is_err());
        // Log segments so many that the end of the log region wraps.
        let mut l = good;
        l.log_segment_count = u32::MAX / 2;
        l.log_segment_bytes = 1 << 40;
        assert!(l.check(u64::MAX).is_err());
        // Segment ids past u32 (`segment_count` would wrap).
        let mut l = good;
        l.log_segment_count = u32::MAX;
        l.log_segment_bytes = 4096;
        assert!(l.check(u64::MAX).is_err());
        assert!(good.check(64 << 20).is_ok());
    }

    #[test]
    fn too_small_is_an_error() {
        let o = Options::default();
        assert!(matches!(
            Layout::compute(128 << 20, 4096, &o),
            Err(Error::DeviceTooSmall { .. })
        ));
    }
}
