//! Aligned buffers reused across flushes and GCs. A fresh buffer costs a zeroing pass
//! and a page fault per 4 KiB, as much CPU as encoding the records into it (measured
//! with 64 KiB values); a reused one costs neither. A buffer comes back with arbitrary
//! contents: whoever takes one writes every byte it submits, or reads into it before
//! looking.

use hashkv_blockdev::AlignedBuf;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};

/// Buffers are handed out in power-of-two sizes from this up, so that they fit again.
/// Small enough that a GC reading a chain of small segments (16 KiB in tests) does
/// not take four times their bytes in buffers.
const POOL_BUFFER_BYTES_MIN: usize = 16 << 10;

pub struct BufferPool {
    /// Free buffers by size.
    free: Mutex<HashMap<usize, Vec<AlignedBuf>>>,
    /// Bytes of free buffers kept at most; more are dropped.
    pool_bytes_max: usize,
    /// Buffers `take` had to allocate because none of the size was free.
    allocations: AtomicU64,
}

impl BufferPool {
    pub fn new(pool_bytes_max: usize) -> BufferPool {
        BufferPool {
            free: Mutex::new(HashMap::new()),
            pool_bytes_max,
            allocations: AtomicU64::new(0),
        }
    }

    /// A buffer of at least `len` bytes. Its contents are arbitrary.
    pub fn take(&self, len: usize) -> AlignedBuf {
        let size = len.max(POOL_BUFFER_BYTES_MIN).next_power_of_two();
        let reused = self.free.lock().get_mut(&size).and_then(|v| v.pop());
        reused.unwrap_or_else(|| {
            self.allocations.fetch_add(1, Ordering::Relaxed);
            AlignedBuf::new(size)
        })
    }

    /// A buffer of at least each of `lens` bytes, given back when the result drops.
    pub fn lend(&self, lens: impl IntoIterator<Item = usize>) -> Lent<'_> {
        Lent {
            bufs: lens.into_iter().map(|len| self.take(len)).collect(),
            pool: self,
        }
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

    /// How many buffers the pool has allocated: flat once it holds what the work needs.
    pub fn allocations(&self) -> u64 {
        self.allocations.load(Ordering::Relaxed)
    }
}

/// Buffers lent by a pool, returned to it when dropped (also on an error path).
pub struct Lent<'p> {
    bufs: Vec<AlignedBuf>,
    pool: &'p BufferPool,
}

impl Deref for Lent<'_> {
    type Target = [AlignedBuf];
    fn deref(&self) -> &[AlignedBuf] {
        &self.bufs
    }
}

impl DerefMut for Lent<'_> {
    fn deref_mut(&mut self) -> &mut [AlignedBuf] {
        &mut self.bufs
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        self.pool.give(self.bufs.drain(..));
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
        assert_eq!(pool.allocations(), 2);
        // 128 KiB + 16 KiB fit in 256 KiB; a second 128 KiB does not.
        pool.give([b, c, AlignedBuf::new(128 << 10), AlignedBuf::new(5000)]);
        let held: usize = pool.free.lock().iter().map(|(s, v)| s * v.len()).sum();
        assert_eq!(held, (128 << 10) + POOL_BUFFER_BYTES_MIN);
    }

    #[test]
    fn lent_buffers_come_back_when_dropped() {
        let pool = BufferPool::new(1 << 20);
        let addrs: Vec<*const u8> = {
            let lent = pool.lend([4096, 200 << 10]);
            assert_eq!(lent.len(), 2);
            assert!(lent[0].len() >= 4096 && lent[1].len() >= 200 << 10);
            lent.iter().map(|b| b.as_ptr()).collect()
        };
        assert_eq!(pool.allocations(), 2);
        for _ in 0..10 {
            let lent = pool.lend([4096, 200 << 10]);
            let again: Vec<*const u8> = lent.iter().map(|b| b.as_ptr()).collect();
            assert_eq!(again, addrs);
        }
        assert_eq!(
            pool.allocations(),
            2,
            "every later loan reused the first two"
        );
    }
}
