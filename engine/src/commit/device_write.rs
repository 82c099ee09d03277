//! One device write of a flush, a GC or a plan: its own bytes in an aligned buffer,
//! and between them the large values it writes from where the write cache holds them
//! (`cache_map::AlignedValue`), so that such a value is copied once on its way to the
//! device, by its writer, and not again into the flush's buffer.

use crate::cache_map::AlignedValue;
use hashkv_blockdev::AlignedBuf;
use std::ops::Range;
use std::sync::Arc;

/// `len` bytes written at device `offset`: the write's own bytes, in order, from the
/// start of `buf`, with each of `spliced` at its place between them.
pub(crate) struct DeviceWrite {
    pub offset: u64,
    pub buf: AlignedBuf,
    pub len: usize,
    /// Ascending by `at`, none overlapping.
    pub spliced: Vec<Spliced>,
}

/// The first `len` bytes of a value written at byte `at` of its write. `at` and `len`
/// are multiples of the device's logical block, so that every part of the write is a
/// valid O_DIRECT buffer.
pub(crate) struct Spliced {
    pub at: usize,
    pub len: usize,
    pub value: Arc<AlignedValue>,
}

impl DeviceWrite {
    /// A write of `len` bytes of `buf` alone.
    pub fn own(offset: u64, buf: AlignedBuf, len: usize) -> DeviceWrite {
        DeviceWrite {
            offset,
            buf,
            len,
            spliced: Vec::new(),
        }
    }

    /// The buffers that hold bytes `range` of the write, in order.
    pub fn parts(&self, range: Range<usize>) -> Vec<&[u8]> {
        debug_assert!(range.end <= self.len);
        /// Keeps the part of `bytes`, at byte `at` of the write, that `range` covers.
        fn keep<'b>(range: &Range<usize>, at: usize, bytes: &'b [u8], parts: &mut Vec<&'b [u8]>) {
            let from = range.start.max(at);
            let to = range.end.min(at + bytes.len());
            if from < to {
                parts.push(&bytes[from - at..to - at]);
            }
        }
        let mut parts = Vec::with_capacity(2 * self.spliced.len() + 1);
        let (mut at, mut own_at) = (0, 0);
        for s in &self.spliced {
            let own_len = s.at - at;
            keep(&range, at, &self.buf[own_at..own_at + own_len], &mut parts);
            keep(&range, s.at, &s.value.bytes()[..s.len], &mut parts);
            own_at += own_len;
            at = s.at + s.len;
        }
        keep(
            &range,
            at,
            &self.buf[own_at..own_at + (self.len - at)],
            &mut parts,
        );
        parts
    }

    /// A copy of bytes `range` of the write.
    pub fn bytes(&self, range: Range<usize>) -> Vec<u8> {
        self.parts(range).concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache_map::ChunkPool;

    #[test]
    fn a_writes_parts_interleave_its_own_bytes_and_its_spliced_values() {
        let pool = ChunkPool::for_cache(1 << 20, true);
        let (a, b) = (pool.copy_value(&[0xA; 1500]), pool.copy_value(&[0xB; 1024]));
        let mut buf = AlignedBuf::new(4096);
        buf[..512].fill(1);
        buf[512..1024].fill(2);
        buf[1024..2048].fill(3);
        let write = DeviceWrite {
            offset: 8192,
            buf,
            len: 4608,
            spliced: vec![
                Spliced {
                    at: 512,
                    len: 1024,
                    value: a,
                },
                Spliced {
                    at: 2048,
                    len: 1024,
                    value: b,
                },
            ],
        };
        let mut expected = vec![1u8; 512];
        expected.extend([0xA; 1024]);
        expected.extend([2; 512]);
        expected.extend([0xB; 1024]);
        expected.extend([3; 1024]);
        expected.extend([0; 512]);
        assert_eq!(write.bytes(0..4608), expected);
        let lens: Vec<usize> = write.parts(0..4608).iter().map(|p| p.len()).collect();
        assert_eq!(lens, [512, 1024, 512, 1024, 1536]);
        assert_eq!(write.bytes(1000..3000), expected[1000..3000]);
        let lens: Vec<usize> = write.parts(1536..2048).iter().map(|p| p.len()).collect();
        assert_eq!(lens, [512], "a range within one part is one part");
    }
}
