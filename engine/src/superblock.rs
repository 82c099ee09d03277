//! The superblock: two checksummed copies naming the format version, the mode, the
//! stripe identity and the layout. Written once by format; read and checked at open;
//! checked and repaired copy by copy by fsck (`read_copies`, `Copies::repair`).
//!
//! The first copy lies at offset 0, its twin at `SUPERBLOCK_TWIN_OFFSET_BYTES`. Stores
//! formatted before the twin had that fixed offset keep it at half a main segment
//! (`Layout::legacy_twin_offset`); it is read there too.
//!
//! Byte layout (little-endian), in one block, zero-padded:
//! ```text
//!  0  8  magic "HASHKVSB"
//!  8  4  format version
//! 12  1  mode (1 = hashkv, 2 = vlog, 3 = lsm)
//! 13  3  zero
//! 16 16  stripe uuid
//! 32  4  member count
//! 36  4  block bytes
//! 40  8  device bytes at format time
//! 48  8  main segment bytes
//! 56  8  log segment bytes
//! 64  4  group count
//! 68  4  main slot count (0 from version 3; before: groups + spares)
//! 72  8  main region offset
//! 80  8  log region offset
//! 88  4  log segment count
//! 92  4  crc32c of bytes 0..92
//! ```

// `x % n != 0` rather than `is_multiple_of`: the workspace MSRV (1.80) predates it.
#![allow(clippy::manual_is_multiple_of)]

use crate::error::{Error, Result};
use crate::layout::{Layout, MAIN_SEGMENT_BYTES_MIN, SUPERBLOCK_TWIN_OFFSET_BYTES};
use crate::options::Mode;
use hashkv_blockdev::{AlignedBuf, BlockDevice};

pub const SUPERBLOCK_MAGIC: &[u8; 8] = b"HASHKVSB";
/// Version 2: value-log pointers carry their own tag (FORMAT.md, "Index entries").
/// Version-1 stores of the hashkv and lsm modes are the same bytes and open as they
/// are; a version-1 vlog store does not (its pointers would read as segment pointers).
/// Version 3: the layout is one pool of log-sized segments (main slot count 0); the
/// hashkv mode's groups are chains of pool segments. Version 1 and 2 layouts still
/// decode; their vlog (version 2) and lsm stores open, their hashkv stores do not.
/// Version 4: index pointers carry their record's checksum (a get reads the value
/// alone), cold tags carry it too, and zeros may precede a value record to put its
/// value on a sector (`align.rs`). Lsm stores of every version open; hashkv and vlog
/// stores before version 4 do not.
pub const FORMAT_VERSION: u32 = 4;
/// Bytes of a copy that carry fields; the rest of its block is zero.
pub const SUPERBLOCK_ENCODED_BYTES: usize = 96;
/// A copy occupies one block of this size (or the device's logical block, if larger):
/// 4 KiB writes are atomic on the devices we run on.
pub const SUPERBLOCK_BLOCK_BYTES_MIN: u32 = 4096;
/// Main segment sizes formats before the fixed twin offset were searched for when
/// their first copy was damaged: the powers of two 2^13 ..= 2^36 (8 KiB to 64 GiB).
const LEGACY_MAIN_SHIFTS: std::ops::RangeInclusive<u32> = 13..=36;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub format_version: u32,
    pub mode: Mode,
    pub stripe_uuid: [u8; 16],
    pub member_count: u32,
    pub device_bytes: u64,
    pub layout: Layout,
}

impl Superblock {
    pub fn encode(&self, block_bytes: usize) -> Vec<u8> {
        let mut b = vec![0u8; block_bytes];
        let l = &self.layout;
        b[0..8].copy_from_slice(SUPERBLOCK_MAGIC);
        b[8..12].copy_from_slice(&self.format_version.to_le_bytes());
        b[12] = self.mode.code();
        b[16..32].copy_from_slice(&self.stripe_uuid);
        b[32..36].copy_from_slice(&self.member_count.to_le_bytes());
        b[36..40].copy_from_slice(&l.block_bytes.to_le_bytes());
        b[40..48].copy_from_slice(&self.device_bytes.to_le_bytes());
        b[48..56].copy_from_slice(&l.main_segment_bytes.to_le_bytes());
        b[56..64].copy_from_slice(&l.log_segment_bytes.to_le_bytes());
        b[64..68].copy_from_slice(&l.group_count.to_le_bytes());
        b[68..72].copy_from_slice(&l.main_slot_count.to_le_bytes());
        b[72..80].copy_from_slice(&l.main_region_offset.to_le_bytes());
        b[80..88].copy_from_slice(&l.log_region_offset.to_le_bytes());
        b[88..92].copy_from_slice(&l.log_segment_count.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..92]);
        b[92..96].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes one copy. `Ok(None)` means the block is not a superblock at all (no
    /// magic); errors mean it claims to be one but is damaged or from a newer format.
    pub fn decode(b: &[u8]) -> Result<Option<Superblock>> {
        if b.len() < SUPERBLOCK_ENCODED_BYTES || &b[0..8] != SUPERBLOCK_MAGIC {
            return Ok(None);
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let stored = u32_at(92);
        let computed = crc32c::crc32c(&b[0..92]);
        if stored != computed {
            return Err(Error::ChecksumMismatch {
                what: "superblock",
                stored,
                computed,
            });
        }
        let format_version = u32_at(8);
        if format_version > FORMAT_VERSION {
            return Err(Error::NewerFormat {
                found: format_version,
                supported: FORMAT_VERSION,
            });
        }
        if format_version == 0 {
            return Err(Error::corrupt(
                "superblock",
                "format version 1 or later",
                "version 0",
            ));
        }
        let mode = Mode::from_code(b[12]).ok_or_else(|| {
            Error::corrupt(
                "superblock",
                "mode 1 (hashkv), 2 (vlog) or 3 (lsm)",
                format!("mode {}", b[12]),
            )
        })?;
        let layout = Layout {
            block_bytes: u32_at(36),
            main_segment_bytes: u64_at(48),
            log_segment_bytes: u64_at(56),
            group_count: u32_at(64),
            main_slot_count: u32_at(68),
            main_region_offset: u64_at(72),
            log_region_offset: u64_at(80),
            log_segment_count: u32_at(88),
        };
        let device_bytes = u64_at(40);
        layout
            .check(device_bytes)
            .map_err(|e| Error::corrupt("superblock", "a consistent layout", e))?;
        Ok(Some(Superblock {
            format_version,
            mode,
            stripe_uuid: b[16..32].try_into().unwrap(),
            member_count: u32_at(32),
            device_bytes,
            layout,
        }))
    }
}

/// The steps of a format, in order, around its commit point (the superblock); a test
/// may stop a format after any of them, as a kill would
/// (`Db::format_interrupted_for_test`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FormatStep {
    /// The metadata directory holds a new, empty index.
    IndexCreated,
    /// The index holds the store's first entries and the marker, synced.
    IndexWritten,
    /// Each stripe member carries its identity header.
    HeadersWritten,
    /// Both superblock copies are written and flushed: the store exists.
    SuperblockWritten,
    /// The marker entry is deleted.
    MarkerRemoved,
}

impl FormatStep {
    pub const ALL: [FormatStep; 5] = [
        FormatStep::IndexCreated,
        FormatStep::IndexWritten,
        FormatStep::HeadersWritten,
        FormatStep::SuperblockWritten,
        FormatStep::MarkerRemoved,
    ];
}

/// What `Db::check_headers` found: each superblock copy or stripe member header that
/// is missing or damaged, and each one rewritten.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderReport {
    pub damage: Vec<String>,
    pub repaired: Vec<String>,
}

impl HeaderReport {
    /// True when nothing was found damaged.
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }

    /// True when every damage found was rewritten.
    pub fn all_repaired(&self) -> bool {
        self.damage.len() == self.repaired.len()
    }
}

/// What one place where a superblock copy may lie holds.
#[derive(Debug)]
pub enum CopyState {
    Valid(Superblock),
    /// No magic: never written there, or wiped.
    Absent,
    /// Claims to be a superblock but fails its checksum or checks, or names a newer
    /// format version.
    Damaged(Error),
}

impl CopyState {
    pub fn valid(&self) -> Option<&Superblock> {
        match self {
            CopyState::Valid(s) => Some(s),
            _ => None,
        }
    }
}

/// Both copies of a device's superblock as read: the first at offset 0, and the twin
/// at the offset where it was found (or where it belongs, if it was not).
#[derive(Debug)]
pub struct Copies {
    pub first: CopyState,
    pub twin_offset: u64,
    pub twin: CopyState,
}

/// The block size copies are read and written in on `device`.
fn copy_block_bytes(device: &dyn BlockDevice) -> usize {
    device
        .geometry()
        .logical_block_bytes
        .max(SUPERBLOCK_BLOCK_BYTES_MIN) as usize
}

fn read_copy(device: &dyn BlockDevice, offset: u64) -> Result<CopyState> {
    let block = copy_block_bytes(device);
    if offset + block as u64 > device.geometry().size_bytes {
        return Ok(CopyState::Absent);
    }
    let mut buf = AlignedBuf::new(block);
    device.read_at(offset, &mut buf[..block])?;
    Ok(match Superblock::decode(&buf[..block]) {
        Ok(Some(s)) => CopyState::Valid(s),
        Ok(None) => CopyState::Absent,
        Err(e) => CopyState::Damaged(e),
    })
}

/// Reads both copies. The twin is looked for at its fixed offset, then at the legacy
/// offset: that of the main segment size a valid first copy names, or, without one,
/// that of each power-of-two size (the sizes older formats were searched at). A copy
/// found at an offset counts only if the segment size it names puts it there, so a
/// value block that happens to look like a superblock is not taken for one.
pub(crate) fn read_copies(device: &dyn BlockDevice) -> Result<Copies> {
    let first = read_copy(device, 0)?;
    let main_hint = first.valid().map(|s| s.layout.main_segment_bytes);
    let mut twin_offset = SUPERBLOCK_TWIN_OFFSET_BYTES;
    let mut twin = CopyState::Absent;
    // A store with main segments below the minimum (formatted before it existed) has
    // values, not a twin, at the fixed offset.
    if !matches!(main_hint, Some(m) if m < MAIN_SEGMENT_BYTES_MIN) {
        twin = match read_copy(device, SUPERBLOCK_TWIN_OFFSET_BYTES)? {
            CopyState::Valid(s) if s.layout.main_segment_bytes < MAIN_SEGMENT_BYTES_MIN => {
                CopyState::Absent
            }
            state => state,
        };
    }
    if twin.valid().is_some() {
        return Ok(Copies {
            first,
            twin_offset,
            twin,
        });
    }
    let candidates: Vec<u64> = match main_hint {
        Some(m) => vec![m],
        None => LEGACY_MAIN_SHIFTS.map(|shift| 1u64 << shift).collect(),
    };
    for main in candidates {
        let at = Layout::legacy_twin_offset(main);
        // Older formats could not write an unaligned twin either.
        if at == SUPERBLOCK_TWIN_OFFSET_BYTES || at % copy_block_bytes(device) as u64 != 0 {
            continue;
        }
        match read_copy(device, at)? {
            CopyState::Valid(s) if s.layout.main_segment_bytes == main => {
                return Ok(Copies {
                    first,
                    twin_offset: at,
                    twin: CopyState::Valid(s),
                });
            }
            // Only the known legacy place of this store says anything about its twin.
            damaged @ CopyState::Damaged(_)
                if main_hint.is_some() && !matches!(twin, CopyState::Damaged(_)) =>
            {
                twin_offset = at;
                twin = damaged;
            }
            _ => {}
        }
    }
    if let Some(m) = main_hint {
        if matches!(twin, CopyState::Absent) {
            twin_offset = Layout::twin_offset(m);
        }
    }
    Ok(Copies {
        first,
        twin_offset,
        twin,
    })
}

impl Copies {
    /// The superblock the copies agree on. A copy that names a newer format wins over
    /// a valid one: a newer hashkv wrote it. Two valid copies must be equal; one valid
    /// copy is enough.
    pub fn into_superblock(self) -> Result<Superblock> {
        for copy in [&self.first, &self.twin] {
            if let CopyState::Damaged(Error::NewerFormat { found, supported }) = copy {
                return Err(Error::NewerFormat {
                    found: *found,
                    supported: *supported,
                });
            }
        }
        match (self.first, self.twin) {
            (CopyState::Valid(a), CopyState::Valid(b)) if a != b => Err(Error::corrupt(
                "superblock",
                "two equal copies",
                format!(
                    "copies that disagree, at offset 0 and at {}: {a:?} and {b:?}",
                    self.twin_offset
                ),
            )),
            (CopyState::Valid(a), _) | (_, CopyState::Valid(a)) => Ok(a),
            (CopyState::Damaged(e), _) | (_, CopyState::Damaged(e)) => Err(e),
            (CopyState::Absent, CopyState::Absent) => Err(Error::NotOurs {
                reason: "no hashkv superblock on the device".into(),
            }),
        }
    }

    /// Rewrites a copy that is missing or damaged from its valid twin and flushes the
    /// device. Returns the offsets rewritten (none if both copies are valid). Refuses
    /// when no copy is valid, when the valid ones disagree, and when a copy names a
    /// newer format (a newer hashkv owns the store).
    pub(crate) fn repair(&self, device: &dyn BlockDevice) -> Result<Vec<u64>> {
        for copy in [&self.first, &self.twin] {
            if let CopyState::Damaged(Error::NewerFormat { found, supported }) = copy {
                // A newer hashkv owns the store: not repairing.
                return Err(Error::NewerFormat {
                    found: *found,
                    supported: *supported,
                });
            }
        }
        let good = match (&self.first, &self.twin) {
            (CopyState::Valid(a), CopyState::Valid(b)) if a != b => {
                return Err(Error::corrupt(
                    "superblock",
                    "two equal copies (to repair one from the other)",
                    "two valid copies that disagree",
                ))
            }
            (CopyState::Valid(_), CopyState::Valid(_)) => return Ok(Vec::new()),
            (CopyState::Valid(a), _) | (_, CopyState::Valid(a)) => *a,
            _ => {
                return Err(Error::NotOurs {
                    reason: "no valid superblock copy to repair from".into(),
                })
            }
        };
        let target = if self.first.valid().is_some() {
            self.twin_offset
        } else {
            0
        };
        write_copies(device, &good, &[target])?;
        Ok(vec![target])
    }
}

/// Writes `superblock` at each of `offsets` and flushes the device.
pub(crate) fn write_copies(
    device: &dyn BlockDevice,
    superblock: &Superblock,
    offsets: &[u64],
) -> Result<()> {
    let block = copy_block_bytes(device);
    let mut buf = AlignedBuf::new(block);
    buf[..block].copy_from_slice(&superblock.encode(block));
    for &offset in offsets {
        device.write_at(offset, &buf[..block])?;
    }
    device.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Options;
    use rand::{Rng, SeedableRng};

    fn sample() -> Superblock {
        let o = Options::default()
            .with_main_segment_bytes(1 << 20)
            .with_log_segment_bytes(64 << 10);
        Superblock {
            format_version: FORMAT_VERSION,
            mode: Mode::HashKv,
            stripe_uuid: [7; 16],
            member_count: 1,
            device_bytes: 64 << 20,
            layout: Layout::compute(64 << 20, 4096, &o).unwrap(),
        }
    }

    #[test]
    fn round_trip() {
        let s = sample();
        assert_eq!(Superblock::decode(&s.encode(4096)).unwrap(), Some(s));
    }

    #[test]
    fn flips_and_garbage_are_rejected() {
        let good = sample().encode(4096);
        for bit in 0..96 * 8 {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            match Superblock::decode(&b) {
                Ok(Some(s)) => panic!("bit {bit} flipped decoded as {s:?}"),
                Ok(None) => assert!(bit < 64, "only a magic flip may read as 'not ours'"),
                Err(_) => {}
            }
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..10_000 {
            let mut b: Vec<u8> = (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect();
            if b.len() >= 8 && rng.gen_bool(0.5) {
                b[0..8].copy_from_slice(SUPERBLOCK_MAGIC);
            }
            assert!(!matches!(Superblock::decode(&b), Ok(Some(_))));
        }
        for cut in 0..96 {
            assert!(!matches!(Superblock::decode(&good[..cut]), Ok(Some(_))));
        }
    }

    #[test]
    fn newer_version_is_refused() {
        let mut s = sample();
        s.format_version = FORMAT_VERSION + 1;
        assert!(matches!(
            Superblock::decode(&s.encode(4096)),
            Err(Error::NewerFormat { .. })
        ));
    }
}
