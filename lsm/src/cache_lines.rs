//! Reading ahead in memory: a point lookup in a cached block is a chain of dependent
//! loads (each restart key a binary search compares decides the next), and with the
//! block cache far larger than the CPU's caches nearly every one of them waits for
//! DRAM. Where the places a search may look at are known beforehand, one independent
//! load of each, issued together, lets the CPU wait for all of them at once; the
//! search's own loads then hit the cache.

/// Loads the byte at each of `offsets` in `bytes` (offsets past the end are skipped)
/// and discards them. The loads depend on nothing but `offsets`, so the CPU keeps them
/// in flight together.
pub(crate) fn warm(bytes: &[u8], offsets: impl Iterator<Item = usize>) {
    let mut fold = 0u8;
    for at in offsets {
        if let Some(&b) = bytes.get(at) {
            fold ^= b;
        }
    }
    std::hint::black_box(fold);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warming_reads_only_in_bounds_and_changes_nothing() {
        let bytes = vec![7u8; 100];
        warm(&bytes, [0, 64, 99, 100, usize::MAX].into_iter());
        assert_eq!(bytes, vec![7u8; 100]);
    }
}
