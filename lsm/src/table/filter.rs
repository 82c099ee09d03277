//! Bloom filter over the user keys of one table: payload = bit array | probe count
//! (u8). Keys are hashed once with xxh3-64 and probed by double hashing.

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{LsmError, Result};

/// More probes than this cost more than they save at any sensible bits per key.
const PROBES_MAX: u8 = 30;

pub(crate) fn build(key_hashes: &[u64], bits_per_key: u32) -> Vec<u8> {
    let bits = (key_hashes.len() * bits_per_key as usize).max(64);
    let bytes = bits.div_ceil(8);
    let bits = bytes * 8;
    // ln 2 * bits per key probes minimise the false-positive rate.
    let probes = ((bits_per_key as f64 * 0.69) as u8).clamp(1, PROBES_MAX);
    let mut out = vec![0u8; bytes + 1];
    for &h in key_hashes {
        let (mut a, b) = split(h);
        for _ in 0..probes {
            let bit = (a % bits as u64) as usize;
            out[bit / 8] |= 1 << (bit % 8);
            a = a.wrapping_add(b);
        }
    }
    out[bytes] = probes;
    out
}

pub(crate) fn hash(user_key: &[u8]) -> u64 {
    xxh3_64(user_key)
}

fn split(h: u64) -> (u64, u64) {
    (h & 0xffff_ffff, (h >> 32) | 1)
}

pub(crate) struct Filter {
    bits: Vec<u8>,
    probes: u8,
}

impl Filter {
    pub fn decode(payload: &[u8]) -> Result<Filter> {
        let Some((&probes, bits)) = payload.split_last() else {
            return Err(LsmError::corrupt("empty filter block"));
        };
        if probes == 0 || probes > PROBES_MAX || bits.is_empty() {
            return Err(LsmError::corrupt(format!(
                "filter: {probes} probes over {} bytes is invalid",
                bits.len()
            )));
        }
        Ok(Filter {
            bits: bits.to_vec(),
            probes,
        })
    }

    /// Heap bytes held, allocator rounding included.
    pub fn heap_bytes(&self) -> usize {
        crate::memory::heap_bytes(self.bits.capacity())
    }

    /// False means the key is certainly absent.
    pub fn may_contain(&self, key_hash: u64) -> bool {
        let nbits = self.bits.len() as u64 * 8;
        let (mut a, b) = split(key_hash);
        // Reading every probe's line together first (`cache_lines::warm`), as a block
        // seek does its restart points, was no faster (`benches/point_get.rs`): a key
        // the filter rules out stops at its first clear bit, about two probes in.
        for _ in 0..self.probes {
            let bit = (a % nbits) as usize;
            if self.bits[bit / 8] & (1 << (bit % 8)) == 0 {
                return false;
            }
            a = a.wrapping_add(b);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let hashes: Vec<u64> = (0..10_000u32).map(|i| hash(&i.to_le_bytes())).collect();
        let f = Filter::decode(&build(&hashes, 10)).unwrap();
        assert!(hashes.iter().all(|&h| f.may_contain(h)));
        let fp = (10_000..20_000u32)
            .filter(|i| f.may_contain(hash(&i.to_le_bytes())))
            .count();
        assert!(fp < 300, "false positives {fp} of 10000");
    }
}
