//! Aligned buffers reused across flushes. A fresh buffer costs a zeroing pass and a
//! page fault per 4 KiB, as much CPU as encoding the records into it (measured with
//! 64 KiB values); a reused one costs neither. A buffer comes back with arbitrary
//! contents: whoever takes one writes every byte it submits.

use hashkv_blockdev::AlignedBuf;
use parking_lot::Mutex;
use std::collections::HashMap;

/// Buffers are handed out in power-of-two sizes from this up, so that they fit again.
const POOL_BUFFER_BYTES_MIN: usize = 64 << 10;

pub struct BufferPool {
    /// Free buffers by size.
    free: Mutex<HashMap<usize, Vec<AlignedBuf>>>,
    /// Bytes of free buffers kept at most; more are dropped.
    pool_bytes_max: usize,
}

impl BufferPool {
    pub fn new(pool_bytes_max: usize) -> BufferPool {
        BufferPool {
            free: Mutex::new(HashMap::new()),
            pool_bytes_max,
        }
    }

    /// A buffer of at least `len` bytes. Its contents are arbitrary.
    pub fn take(&self, len: usize) -> AlignedBuf {
        let size = len.max(POOL_BUFFER_BYTES_MIN).next_power_of_two();
        let reused = self.free.lock().get_mut(&size).and_then(|v| v.pop());
        reused.unwrap_or_else(|| AlignedBuf::new(size))
    }

    /// Bytes of free buffers held.
    pub fn held_bytes(&self) -> usize {
        let free = self.free.lock();
        free.iter().map(|(size, v)| size * v.len()).sum()
    }

    /// Takes buffers back, up to the pool's size limit.
    pub fn give(&self, bufs: impl IntoIterator<Item = AlignedBuf>) {
        let mut free = self.free.lock();
        let mut held: usize = free.iter().map(|(size, v)| size * v.len()).sum();
        for buf in bufs {
            let size = buf.len();
            let fits = size.is_power_of_two() && size >= POOL_BUFFER_BYTES_MIN;
            if fits && held + size <= self.pool_bytes_max {
                held += size;
                free.entry(size).or_default().push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_buffers_up_to_the_limit() {
        let pool = BufferPool::new(256 << 10);
        let a = pool.take(100 << 10);
        assert_eq!(a.len(), 128 << 10);
        let addr = a.as_ptr();
        pool.give([a]);
        let b = pool.take(70 << 10);
        assert_eq!(b.as_ptr(), addr, "the free buffer of that size is reused");
        let c = pool.take(1);
        assert_eq!(c.len(), POOL_BUFFER_BYTES_MIN);
        // 128 KiB + 64 KiB fit in 256 KiB; a second 128 KiB does not.
        pool.give([b, c, AlignedBuf::new(128 << 10), AlignedBuf::new(5000)]);
        let held: usize = pool.free.lock().iter().map(|(s, v)| s * v.len()).sum();
        assert_eq!(held, 192 << 10);
    }
}
