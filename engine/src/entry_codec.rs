//! The envelope of the engine's own index entries (a group's segment chain, a log's
//! head and tail): a version byte, the body, and a crc32c of both, so that every entry
//! the engine reads back from the index is checked before it is believed.
//!
//! ```text
//! version u8 | body | crc32c(version, body) u32 LE
//! ```

use crate::error::{Error, Result};

const VERSION_BYTES: usize = 1;
const CRC_BYTES: usize = 4;

/// Wraps `body` with its version and checksum.
pub(crate) fn seal(version: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(VERSION_BYTES + body.len() + CRC_BYTES);
    out.push(version);
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks an entry named `what` and returns its body. Never panics on garbage.
pub(crate) fn open<'a>(bytes: &'a [u8], what: &'static str, version: u8) -> Result<&'a [u8]> {
    open_versions(bytes, what, version..=version).map(|(_, body)| body)
}

/// `open` for an entry that may be in any of `versions`: returns the version too.
pub(crate) fn open_versions<'a>(
    bytes: &'a [u8],
    what: &'static str,
    versions: std::ops::RangeInclusive<u8>,
) -> Result<(u8, &'a [u8])> {
    if bytes.len() < VERSION_BYTES + CRC_BYTES {
        return Err(Error::corrupt(
            what,
            format!("at least {} bytes", VERSION_BYTES + CRC_BYTES),
            format!("{} bytes", bytes.len()),
        ));
    }
    let (sealed, crc) = bytes.split_at(bytes.len() - CRC_BYTES);
    let stored = u32::from_le_bytes(crc.try_into().expect("four bytes"));
    let computed = crc32c::crc32c(sealed);
    if stored != computed {
        return Err(Error::ChecksumMismatch {
            what,
            stored,
            computed,
        });
    }
    if !versions.contains(&sealed[0]) {
        return Err(Error::corrupt(
            what,
            format!("version {versions:?}"),
            format!("version {}", sealed[0]),
        ));
    }
    Ok((sealed[0], &sealed[VERSION_BYTES..]))
}

/// Recomputes the checksum of a sealed entry in place (the fuzz targets'
/// `decoders::reseal`); an entry too short to hold one is left as it is.
pub(crate) fn reseal(bytes: &mut [u8]) {
    if bytes.len() < VERSION_BYTES + CRC_BYTES {
        return;
    }
    let (sealed, crc) = bytes.split_at_mut(bytes.len() - CRC_BYTES);
    crc.copy_from_slice(&crc32c::crc32c(sealed).to_le_bytes());
}

/// Garbage for decoder tests: `good` truncated, with a bit flipped, or random bytes.
#[cfg(test)]
pub(crate) fn garbled(rng: &mut impl rand::Rng, good: &[u8], random_len_max: usize) -> Vec<u8> {
    let mut bad = good.to_vec();
    match rng.gen_range(0..3) {
        0 => bad.truncate(rng.gen_range(0..bad.len())),
        1 => {
            let i = rng.gen_range(0..bad.len());
            bad[i] ^= 1 << rng.gen_range(0..8);
        }
        _ => {
            bad = (0..rng.gen_range(0..random_len_max))
                .map(|_| rng.gen())
                .collect()
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn round_trip_and_garbage() {
        let e = seal(3, b"body bytes");
        assert_eq!(open(&e, "test entry", 3).unwrap(), b"body bytes");
        assert!(matches!(
            open(&e, "test entry", 4),
            Err(Error::Corruption { .. })
        ));
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..5000 {
            let bad = crate::entry_codec::garbled(&mut rng, &e, 40);
            assert!(open(&bad, "test entry", 3).is_err());
        }
    }
}
