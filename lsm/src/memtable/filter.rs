//! A run's Bloom filter over its user keys, blocked: all probes of a key fall in one
//! 64-byte block, so a check costs one cache miss. A get skips the runs whose filter
//! rules its key out, which most runs do for most keys (in a tree, most gets are for
//! keys the memtable does not hold).

use xxhash_rust::xxh3::xxh3_64;

/// About 1% false positives unblocked; blocking costs a little (about 1.5%).
const BITS_PER_KEY: usize = 10;
/// ln 2 x bits per key, rounded down.
const PROBES: u64 = 6;
const BLOCK_BITS: usize = 512;
const WORD_BITS: usize = 64;

pub(super) fn hash(user_key: &[u8]) -> u64 {
    xxh3_64(user_key)
}

#[derive(Default)]
pub(super) struct Filter {
    blocks: Vec<[u64; BLOCK_BITS / WORD_BITS]>,
}

/// The block of a hash, and its probes' bit positions in the block (double hashing on
/// the low half).
fn probes(h: u64, blocks: usize) -> (usize, impl Iterator<Item = usize>) {
    let block = ((h >> 32) * blocks as u64) >> 32;
    let (a, b) = (h & 0xffff, ((h >> 16) & 0xffff) | 1);
    let bits = (0..PROBES).map(move |i| (a.wrapping_add(i * b) % BLOCK_BITS as u64) as usize);
    (block as usize, bits)
}

impl Filter {
    pub fn build(hashes: impl ExactSizeIterator<Item = u64>) -> Filter {
        let blocks = (hashes.len() * BITS_PER_KEY).div_ceil(BLOCK_BITS).max(1);
        let mut f = Filter {
            blocks: vec![[0; BLOCK_BITS / WORD_BITS]; blocks],
        };
        for h in hashes {
            let (block, bits) = probes(h, blocks);
            for bit in bits {
                f.blocks[block][bit / WORD_BITS] |= 1 << (bit % WORD_BITS);
            }
        }
        f
    }

    /// False: no user key with this hash is in the run. A filter never built (of a run
    /// being assembled) rules nothing out.
    pub fn may_contain(&self, h: u64) -> bool {
        if self.blocks.is_empty() {
            return true;
        }
        let (block, mut bits) = probes(h, self.blocks.len());
        let words = &self.blocks[block];
        bits.all(|bit| words[bit / WORD_BITS] & (1 << (bit % WORD_BITS)) != 0)
    }

    pub fn bytes(&self) -> usize {
        self.blocks.capacity() * BLOCK_BITS / 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let keys: Vec<Vec<u8>> = (0..20_000u32)
            .map(|i| format!("key{i}").into_bytes())
            .collect();
        let f = Filter::build(keys.iter().map(|k| hash(k)));
        assert!(keys.iter().all(|k| f.may_contain(hash(k))));
        let others = (0..20_000u32).filter(|i| f.may_contain(hash(format!("other{i}").as_bytes())));
        let rate = others.count() as f64 / 20_000.0;
        assert!(rate < 0.03, "false positive rate {rate}");
        assert!(!Filter::build([].into_iter()).may_contain(hash(b"key1")));
        assert!(Filter::default().may_contain(hash(b"key1")));
    }
}
