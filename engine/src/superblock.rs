//! The superblock: two checksummed copies naming the format version, the mode, the
//! stripe identity and the layout. Written once by format; read and checked at open.
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
//! 68  4  main slot count (groups + spares)
//! 72  8  main region offset
//! 80  8  log region offset
//! 88  4  log segment count
//! 92  4  crc32c of bytes 0..92
//! ```

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::options::Mode;

pub const SUPERBLOCK_MAGIC: &[u8; 8] = b"HASHKVSB";
/// Version 2: value-log pointers carry their own tag (FORMAT.md, "Index entries").
/// Version-1 stores of the hashkv and lsm modes are the same bytes and open as they
/// are; a version-1 vlog store does not (its pointers would read as segment pointers).
pub const FORMAT_VERSION: u32 = 2;
const ENCODED_BYTES: usize = 96;

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
        if b.len() < ENCODED_BYTES || &b[0..8] != SUPERBLOCK_MAGIC {
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
