//! Bloom filters over user keys. Keys are hashed once with xxh3-64.
//!
//! Tables of format 2 and memtable runs use a blocked filter: all probes of a key fall
//! in one 64-byte block (a cache line), chosen by the hash's high 32 bits, so a check
//! costs one cache miss where a flat filter's six probes cost up to six, and no
//! division. A get of a present key probes every level's filter above the one holding
//! it: in the 4 KiB gets' profile the flat filter's check was 4.8% of the CPU. The
//! cost: about 1.2% false positives at 10 bits per key, against 0.8% flat.
//!
//! Payload (format 2): `blocks of 8 u64 words, little-endian | probes u8`. Tables of
//! format 1 carry a flat filter, `bit array | probes u8` probed by double hashing over
//! the whole array; they are still read (`Filter::decode` takes the table's version).

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{LsmError, Result};

/// More probes than this cost more than they save at any sensible bits per key.
const PROBES_MAX: u8 = 30;
const BLOCK_BITS: usize = 512;
const WORD_BITS: usize = 64;
const BLOCK_WORDS: usize = BLOCK_BITS / WORD_BITS;
const BLOCK_BYTES: usize = BLOCK_BITS / 8;
/// The table format whose filters are flat (`Filter::decode`).
const FLAT_FILTER_TABLE_VERSION: u32 = 1;

pub(crate) fn hash(user_key: &[u8]) -> u64 {
    xxh3_64(user_key)
}

/// ln 2 x bits per key probes minimise the false-positive rate.
fn probes_for(bits_per_key: u32) -> u8 {
    ((bits_per_key as f64 * 0.69) as u8).clamp(1, PROBES_MAX)
}

/// A blocked Bloom filter (the module comment).
#[derive(Default)]
pub(crate) struct Blocked {
    blocks: Vec<[u64; BLOCK_WORDS]>,
    probes: u8,
}

/// The block of a hash among `blocks`, and its probes' bit positions in the block
/// (double hashing on the hash's low 32 bits, which the block's choice does not use:
/// two 16-bit values, of which the probes' positions keep the low 9 bits' worth).
fn block_probes(h: u64, blocks: usize, probes: u8) -> (usize, impl Iterator<Item = usize>) {
    let block = ((h >> 32) * blocks as u64) >> 32;
    let (a, b) = (h & 0xffff, ((h >> 16) & 0xffff) | 1);
    let bits =
        (0..u64::from(probes)).map(move |i| (a.wrapping_add(i * b) % BLOCK_BITS as u64) as usize);
    (block as usize, bits)
}

impl Blocked {
    pub fn build(hashes: impl ExactSizeIterator<Item = u64>, bits_per_key: u32) -> Blocked {
        let blocks = (hashes.len() * bits_per_key as usize)
            .div_ceil(BLOCK_BITS)
            .max(1);
        let mut f = Blocked {
            blocks: vec![[0; BLOCK_WORDS]; blocks],
            probes: probes_for(bits_per_key),
        };
        for h in hashes {
            let (block, bits) = block_probes(h, blocks, f.probes);
            for bit in bits {
                f.blocks[block][bit / WORD_BITS] |= 1 << (bit % WORD_BITS);
            }
        }
        f
    }

    /// A filter that rules nothing out (a table written with filters turned off).
    pub fn admitting_all() -> Blocked {
        Blocked {
            blocks: vec![[u64::MAX; BLOCK_WORDS]],
            probes: 1,
        }
    }

    /// False: no user key with this hash was built in. A filter never built (of a run
    /// being assembled) rules nothing out.
    pub fn may_contain(&self, h: u64) -> bool {
        if self.blocks.is_empty() {
            return true;
        }
        let (block, mut bits) = block_probes(h, self.blocks.len(), self.probes);
        let words = &self.blocks[block];
        bits.all(|bit| words[bit / WORD_BITS] & (1 << (bit % WORD_BITS)) != 0)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.blocks.len() * BLOCK_BYTES + 1);
        for word in self.blocks.iter().flatten() {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.push(self.probes);
        out
    }

    fn decode(payload: &[u8]) -> Result<Blocked> {
        let (probes, bits) = split_probes(payload)?;
        if bits.len() % BLOCK_BYTES != 0 {
            return Err(LsmError::corrupt(format!(
                "blocked filter: {} bytes of bits is not whole {BLOCK_BYTES}-byte blocks",
                bits.len()
            )));
        }
        let blocks = bits
            .chunks_exact(BLOCK_BYTES)
            .map(|block| {
                let mut words = [0u64; BLOCK_WORDS];
                for (w, bytes) in words.iter_mut().zip(block.chunks_exact(8)) {
                    *w = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
                }
                words
            })
            .collect();
        Ok(Blocked { blocks, probes })
    }

    /// Heap bytes held, allocator rounding included.
    pub fn heap_bytes(&self) -> usize {
        crate::memory::heap_bytes(self.blocks.capacity() * BLOCK_BYTES)
    }
}

/// The probe count ending a filter payload, checked, and the bits before it.
fn split_probes(payload: &[u8]) -> Result<(u8, &[u8])> {
    let Some((&probes, bits)) = payload.split_last() else {
        return Err(LsmError::corrupt("empty filter block"));
    };
    if probes == 0 || probes > PROBES_MAX || bits.is_empty() {
        return Err(LsmError::corrupt(format!(
            "filter: {probes} probes over {} bytes is invalid",
            bits.len()
        )));
    }
    Ok((probes, bits))
}

/// A table's filter, as its format version has it.
pub(crate) enum Filter {
    /// Format 1: one bit array, probes anywhere in it.
    Flat {
        bits: Vec<u8>,
        probes: u8,
    },
    Blocked(Blocked),
}

impl Filter {
    /// Decodes the filter payload of a table of format `table_version`.
    pub fn decode(payload: &[u8], table_version: u32) -> Result<Filter> {
        if table_version > FLAT_FILTER_TABLE_VERSION {
            return Blocked::decode(payload).map(Filter::Blocked);
        }
        let (probes, bits) = split_probes(payload)?;
        Ok(Filter::Flat {
            bits: bits.to_vec(),
            probes,
        })
    }

    /// Heap bytes held, allocator rounding included.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Filter::Flat { bits, .. } => crate::memory::heap_bytes(bits.capacity()),
            Filter::Blocked(b) => b.heap_bytes(),
        }
    }

    /// False means the key is certainly absent.
    pub fn may_contain(&self, key_hash: u64) -> bool {
        match self {
            Filter::Flat { bits, probes } => flat_may_contain(bits, *probes, key_hash),
            Filter::Blocked(b) => b.may_contain(key_hash),
        }
    }
}

fn flat_split(h: u64) -> (u64, u64) {
    (h & 0xffff_ffff, (h >> 32) | 1)
}

fn flat_may_contain(bits: &[u8], probes: u8, key_hash: u64) -> bool {
    let nbits = bits.len() as u64 * 8;
    let (mut a, b) = flat_split(key_hash);
    for _ in 0..probes {
        let bit = (a % nbits) as usize;
        if bits[bit / 8] & (1 << (bit % 8)) == 0 {
            return false;
        }
        a = a.wrapping_add(b);
    }
    true
}

/// A flat filter payload (format 1's), which tables are no longer written with: for
/// the tests and fuzz seeds that check format 1 is still read.
pub(crate) fn build_flat(key_hashes: &[u64], bits_per_key: u32) -> Vec<u8> {
    let bits = (key_hashes.len() * bits_per_key as usize).max(64);
    let bytes = bits.div_ceil(8);
    let bits = bytes * 8;
    let probes = probes_for(bits_per_key);
    let mut out = vec![0u8; bytes + 1];
    for &h in key_hashes {
        let (mut a, b) = flat_split(h);
        for _ in 0..probes {
            let bit = (a % bits as u64) as usize;
            out[bit / 8] |= 1 << (bit % 8);
            a = a.wrapping_add(b);
        }
    }
    out[bytes] = probes;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::footer::TABLE_FORMAT_VERSION;

    fn false_positives(f: &Filter) -> usize {
        (10_000..20_000u32)
            .filter(|i| f.may_contain(hash(&i.to_le_bytes())))
            .count()
    }

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let hashes: Vec<u64> = (0..10_000u32).map(|i| hash(&i.to_le_bytes())).collect();
        let blocked = Blocked::build(hashes.iter().copied(), 10).encode();
        let f = Filter::decode(&blocked, TABLE_FORMAT_VERSION).unwrap();
        assert!(hashes.iter().all(|&h| f.may_contain(h)));
        let fp = false_positives(&f);
        assert!(fp < 200, "blocked: false positives {fp} of 10000");
        // Format 1's flat filters still read as they were written.
        let flat = Filter::decode(&build_flat(&hashes, 10), 1).unwrap();
        assert!(matches!(flat, Filter::Flat { .. }));
        assert!(hashes.iter().all(|&h| flat.may_contain(h)));
        let fp = false_positives(&flat);
        assert!(fp < 150, "flat: false positives {fp} of 10000");
    }

    #[test]
    fn empty_and_admitting_filters() {
        let none = Blocked::build(std::iter::empty(), 10);
        assert!(!none.may_contain(hash(b"key1")));
        assert!(Blocked::default().may_contain(hash(b"key1")));
        let all = Filter::decode(&Blocked::admitting_all().encode(), 2).unwrap();
        assert!((0..1000u32).all(|i| all.may_contain(hash(&i.to_le_bytes()))));
    }

    #[test]
    fn a_blocked_payload_must_be_whole_blocks() {
        let mut payload = Blocked::build([1u64, 2, 3].into_iter(), 10).encode();
        assert!(Filter::decode(&payload, 2).is_ok());
        payload.remove(0);
        assert!(Filter::decode(&payload, 2).is_err());
        // The same bytes are a valid flat filter: the version decides.
        assert!(Filter::decode(&payload, 1).is_ok());
        assert!(Filter::decode(&[6], 2).is_err());
        assert!(
            Filter::decode(&[0; BLOCK_BYTES + 1], 2).is_err(),
            "0 probes"
        );
    }
}
