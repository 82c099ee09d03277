//! Aligned buffers reused across flushes, GCs and value reads. A fresh buffer costs a
//! zeroing pass and a page fault per 4 KiB, as much CPU as encoding the records into
//! it (measured with 64 KiB values); a reused one costs neither. A buffer comes back
//! with arbitrary contents: whoever takes one writes every byte it submits, or reads
//! into it before looking. A pool given the device allocates from it
//! (`BlockDevice::alloc_buffer`): from the fixed-buffer arena its rings registered
//! while that has room, so that io_uring does not pin the buffer's pages at every
//! write and read (`gup_fast` and `__bio_release_pages` were 7% of the 64 KiB load's
//! CPU samples).

use hashkv_blockdev::{AlignedBuf, BlockDevice, BUFFER_ALIGN_BYTES};
use parking_lot::Mutex;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The smallest buffer the flushes' and GC's pool hands out: buffers come in
/// power-of-two sizes from it up, so that they fit again. Small enough that a GC
/// reading a chain of small segments (16 KiB in tests) does not take four times their
/// bytes in buffers; large enough that a flush's small writes share a few sizes.
pub const WRITE_BUFFER_BYTES_MIN: usize = 16 << 10;

/// The smallest buffer the value reads' pool hands out: one aligned page, what a 4
/// KiB value's read takes on 512-byte sectors (format 4 puts such a value on a sector;
/// on 4 KiB sectors it spans two pages).
pub const READ_BUFFER_BYTES_MIN: usize = BUFFER_ALIGN_BYTES;

const _: () = assert!(WRITE_BUFFER_BYTES_MIN.is_power_of_two());
const _: () = assert!(READ_BUFFER_BYTES_MIN.is_power_of_two());

/// Size classes: powers of two below 2^SIZE_CLASSES (far beyond any segment).
const SIZE_CLASSES: usize = 48;

pub struct BufferPool {
    free: Mutex<FreeLists>,
    /// Bytes of free buffers kept at most; more are dropped.
    pool_bytes_max: usize,
    /// The smallest size handed out (a power of two).
    buffer_bytes_min: usize,
    /// Buffers `take` had to allocate because none of the size was free.
    allocations: AtomicU64,
    /// Where new buffers come from: the device's, or the heap's.
    device: Option<Arc<dyn BlockDevice>>,
}

/// Free buffers by size class (the size's log2), and their bytes.
struct FreeLists {
    by_class: Vec<Vec<AlignedBuf>>,
    held_bytes: usize,
}

impl BufferPool {
    /// A pool keeping up to `pool_bytes_max` bytes of free buffers, handing out sizes
    /// from `buffer_bytes_min` (a power of two) up.
    pub fn new(pool_bytes_max: usize, buffer_bytes_min: usize) -> BufferPool {
        assert!(buffer_bytes_min.is_power_of_two());
        BufferPool {
            free: Mutex::new(FreeLists {
                by_class: (0..SIZE_CLASSES).map(|_| Vec::new()).collect(),
                held_bytes: 0,
            }),
            pool_bytes_max,
            buffer_bytes_min,
            allocations: AtomicU64::new(0),
            device: None,
        }
    }

    /// The pool, allocating its buffers from `device` ([`BlockDevice::alloc_buffer`]).
    pub fn allocating_from(mut self, device: Arc<dyn BlockDevice>) -> BufferPool {
        self.device = Some(device);
        self
    }

    /// The size a buffer for `len` bytes is given: a power of two, at least the
    /// minimum, where the pool could keep it; else `len` (a 1.1 MiB value's read in a
    /// pool of 1 MiB does not take a buffer of 2 MiB it will drop anyway).
    fn pooled_bytes(&self, len: usize) -> usize {
        let class = len.max(self.buffer_bytes_min).next_power_of_two();
        if class <= self.pool_bytes_max {
            class
        } else {
            len
        }
    }

    /// A buffer of at least `len` bytes. Its contents are arbitrary.
    pub fn take(&self, len: usize) -> AlignedBuf {
        self.take_each([len]).pop().expect("one length, one buffer")
    }

    /// A buffer of at least each of `lens` bytes, in order, taken under one lock.
    pub fn take_each(&self, lens: impl IntoIterator<Item = usize>) -> Vec<AlignedBuf> {
        let sizes: Vec<usize> = lens.into_iter().map(|len| self.pooled_bytes(len)).collect();
        let reused: Vec<Option<AlignedBuf>> = {
            let mut free = self.free.lock();
            sizes.iter().map(|&size| free.pop(size)).collect()
        };
        // Buffers none of was free are allocated outside the lock.
        sizes
            .into_iter()
            .zip(reused)
            .map(|(size, reused)| {
                reused.unwrap_or_else(|| {
                    self.allocations.fetch_add(1, Ordering::Relaxed);
                    match &self.device {
                        Some(device) => device.alloc_buffer(size),
                        None => AlignedBuf::new(size),
                    }
                })
            })
            .collect()
    }

    /// A buffer of at least each of `lens` bytes, given back when the result drops.
    pub fn lend(&self, lens: impl IntoIterator<Item = usize>) -> Lent<'_> {
        Lent {
            bufs: self.take_each(lens),
            pool: self,
        }
    }

    /// Buffers taken from this pool earlier (`take_each`), given back when the result
    /// drops, like `lend`'s.
    pub fn lent(&self, bufs: Vec<AlignedBuf>) -> Lent<'_> {
        Lent { bufs, pool: self }
    }

    /// Bytes of free buffers held.
    pub fn held_bytes(&self) -> usize {
        self.free.lock().held_bytes
    }

    /// Takes buffers back, up to the pool's size limit.
    pub fn give(&self, bufs: impl IntoIterator<Item = AlignedBuf>) {
        let mut free = self.free.lock();
        for buf in bufs {
            let size = buf.len();
            let fits = size.is_power_of_two()
                && size >= self.buffer_bytes_min
                && (size.trailing_zeros() as usize) < SIZE_CLASSES;
            if fits && free.held_bytes + size <= self.pool_bytes_max {
                free.held_bytes += size;
                free.by_class[size.trailing_zeros() as usize].push(buf);
            }
        }
    }

    /// How many buffers the pool has allocated: flat once it holds what the work needs.
    pub fn allocations(&self) -> u64 {
        self.allocations.load(Ordering::Relaxed)
    }
}

impl FreeLists {
    fn pop(&mut self, size: usize) -> Option<AlignedBuf> {
        let buf = self
            .by_class
            .get_mut(size.trailing_zeros() as usize)?
            .pop()?;
        self.held_bytes -= size;
        Some(buf)
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

impl Lent<'_> {
    /// The buffers, kept past this value: they go back to the pool only when given.
    pub fn keep(mut self) -> Vec<AlignedBuf> {
        std::mem::take(&mut self.bufs)
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
        let pool = BufferPool::new(256 << 10, WRITE_BUFFER_BYTES_MIN);
        let a = pool.take(100 << 10);
        assert_eq!(a.len(), 128 << 10);
        let addr = a.as_ptr();
        pool.give([a]);
        let b = pool.take(70 << 10);
        assert_eq!(b.as_ptr(), addr, "the free buffer of that size is reused");
        let c = pool.take(1);
        assert_eq!(c.len(), WRITE_BUFFER_BYTES_MIN);
        assert_eq!(pool.allocations(), 2);
        // 128 KiB + 16 KiB fit in 256 KiB; a second 128 KiB does not, nor a buffer
        // whose size is no class (12 KiB) or is below the smallest (4 KiB).
        pool.give([
            b,
            c,
            AlignedBuf::new(128 << 10),
            AlignedBuf::new(12 << 10),
            AlignedBuf::new(4 << 10),
        ]);
        assert_eq!(pool.held_bytes(), (128 << 10) + WRITE_BUFFER_BYTES_MIN);
        // Taking one back lowers what is held.
        let d = pool.take(4000);
        assert_eq!(d.len(), WRITE_BUFFER_BYTES_MIN);
        assert_eq!(pool.held_bytes(), 128 << 10);
        assert_eq!(pool.allocations(), 2);
    }

    #[test]
    fn a_buffer_the_pool_could_not_keep_is_not_rounded_up() {
        let pool = BufferPool::new(1 << 20, READ_BUFFER_BYTES_MIN);
        assert_eq!(pool.take(1100 << 10).len(), 1100 << 10);
        assert_eq!(
            pool.take(600 << 10).len(),
            1 << 20,
            "a class the pool keeps"
        );
        assert_eq!(pool.take(1000).len(), READ_BUFFER_BYTES_MIN);
        assert_eq!(pool.take(5000).len(), 8 << 10);
    }

    #[test]
    fn lent_buffers_come_back_when_dropped() {
        let pool = BufferPool::new(1 << 20, READ_BUFFER_BYTES_MIN);
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
