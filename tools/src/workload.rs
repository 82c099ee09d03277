//! The paper's workload, YCSB style: 24-byte keys ("user" + 20 zero-padded digits of a
//! hashed index) and a scrambled Zipfian key chooser (YCSB's ScrambledZipfian).

use rand::Rng;

/// Length of every generated key: "user" + 20 digits.
pub const KEY_BYTES: usize = 24;

/// FNV-1a 64 over the index's little-endian bytes, as YCSB hashes key numbers.
pub fn fnv64(mut x: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for _ in 0..8 {
        h ^= x & 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        x >>= 8;
    }
    h
}

/// The key of item `index`.
pub fn key(index: u64) -> [u8; KEY_BYTES] {
    let mut k = [0u8; KEY_BYTES];
    k[..4].copy_from_slice(b"user");
    // u64::MAX has 20 digits, so every hash fits. Written digit by digit: `format!`
    // allocated a string per operation in the bench's hot loop.
    let mut h = fnv64(index);
    for d in k[4..].iter_mut().rev() {
        *d = b'0' + (h % 10) as u8;
        h /= 10;
    }
    k
}

/// Zipfian over `0..items` with constant `theta` (Gray et al., as in YCSB), then
/// scrambled by hashing so that popular items are spread over the key space.
pub struct ScrambledZipf {
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl ScrambledZipf {
    pub fn new(items: u64, theta: f64) -> ScrambledZipf {
        assert!(items >= 2 && theta > 0.0 && theta < 1.0);
        let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zetan = zeta(items);
        let zeta2 = zeta(2);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        ScrambledZipf {
            items,
            theta,
            alpha,
            zetan,
            eta,
        }
    }

    /// A Zipf-distributed rank (0 is the most popular), before scrambling.
    pub fn next_rank(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.gen();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let r = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.items - 1)
    }

    /// An item index in `0..items`.
    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        fnv64(self.next_rank(rng)) % self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn keys_are_24_bytes_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            let k = key(i);
            assert_eq!(&k[..4], b"user");
            assert!(seen.insert(k));
        }
        // The paper's key format, "user" and 20 zero-padded digits of the hash.
        for i in [0, 1, 42, 1 << 40, u64::MAX] {
            let text = format!("user{:020}", fnv64(i));
            assert_eq!(&key(i)[..], text.as_bytes(), "index {i}");
        }
    }

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let z = ScrambledZipf::new(100_000, 0.99);
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut rank0 = 0;
        let n = 200_000;
        for _ in 0..n {
            if z.next_rank(&mut rng) == 0 {
                rank0 += 1;
            }
            assert!(z.next(&mut rng) < 100_000);
        }
        // With theta 0.99 over 1e5 items the top item draws about 1/zeta(n) ~ 8%.
        let share = rank0 as f64 / n as f64;
        assert!(share > 0.05 && share < 0.12, "top share {share}");
    }
}
