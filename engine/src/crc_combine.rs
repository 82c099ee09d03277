//! The crc32c of two byte strings end to end, from the crc32c of each and the second's
//! length: a spliced value's record checksum extends its header's with the crc its
//! writer took (`record::encode_head_into`), without reading the value again.
//!
//! crc32c's own `crc32c_combine` (zlib's algorithm) builds the operator that appends
//! `len` zero bytes by squaring 32x32 bit matrices at every call: about 16 squarings of
//! 1,024 steps for a 64 KiB value, which cost more than the pass over the value it was
//! meant to save (the 64 KiB load's user CPU rose by two thirds). Here the operators for
//! 2^k zero bytes are built once, and a combine applies one per set bit of the length:
//! a few matrix-vector products of 32 steps. The operators are powers of one matrix, so
//! they commute and the order of the bits does not matter.

use std::sync::OnceLock;

/// A GF(2) 32x32 matrix: column `i` is the image of bit `i` of the register.
type Operator = [u32; 32];

/// Lengths up to 2^ZERO_BYTE_OPERATORS bytes (far beyond any record).
const ZERO_BYTE_OPERATORS: usize = 48;

/// The reflected CRC-32C polynomial.
const POLYNOMIAL: u32 = 0x82F6_3B78;

fn times(op: &Operator, mut vec: u32) -> u32 {
    let mut sum = 0;
    let mut i = 0;
    while vec != 0 {
        if vec & 1 == 1 {
            sum ^= op[i];
        }
        vec >>= 1;
        i += 1;
    }
    sum
}

fn square(op: &Operator) -> Operator {
    std::array::from_fn(|i| times(op, op[i]))
}

/// `OPERATORS[k]` appends 2^k zero bytes to a crc register.
fn operators() -> &'static [Operator; ZERO_BYTE_OPERATORS] {
    static OPERATORS: OnceLock<[Operator; ZERO_BYTE_OPERATORS]> = OnceLock::new();
    OPERATORS.get_or_init(|| {
        // One zero bit: shift right, folding the polynomial in for the bit shifted out.
        let one_bit: Operator =
            std::array::from_fn(|i| if i == 0 { POLYNOMIAL } else { 1 << (i - 1) });
        let one_byte = square(&square(&square(&one_bit)));
        let mut ops = [[0u32; 32]; ZERO_BYTE_OPERATORS];
        ops[0] = one_byte;
        for k in 1..ZERO_BYTE_OPERATORS {
            ops[k] = square(&ops[k - 1]);
        }
        ops
    })
}

/// crc32c(a ++ b) from crc32c(a), crc32c(b) and the length of b.
pub fn combine(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    let ops = operators();
    let mut crc = crc_a;
    let mut len = len_b;
    let mut k = 0;
    while len != 0 {
        if len & 1 == 1 {
            crc = times(&ops[k], crc);
        }
        len >>= 1;
        k += 1;
    }
    crc ^ crc_b
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn combining_two_crcs_is_the_crc_of_both_strings() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let data: Vec<u8> = (0..200_000).map(|_| rng.gen()).collect();
        for len_b in [0, 1, 7, 512, 4096, 16_385, 65_536, 65_536 + 490, 199_000] {
            let split = rng.gen_range(0..=data.len() - len_b);
            let (a, b) = (&data[..split], &data[split..split + len_b]);
            let whole = crc32c::crc32c(&data[..split + len_b]);
            let (ca, cb) = (crc32c::crc32c(a), crc32c::crc32c(b));
            assert_eq!(combine(ca, cb, len_b), whole, "len {len_b}");
            assert_eq!(
                combine(ca, cb, len_b),
                crc32c::crc32c_combine(ca, cb, len_b)
            );
        }
    }
}
