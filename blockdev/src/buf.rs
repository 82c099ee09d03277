//! Buffers aligned for O_DIRECT: on the heap, or pages of a registered arena
//! (`uring/arena.rs`) that io_uring reads and writes without pinning them per op.

use crate::uring::BufferArena;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;

/// Alignment every buffer gets: covers every logical block size we accept (512..4096)
/// and the page size, which O_DIRECT on most filesystems wants.
pub const BUFFER_ALIGN_BYTES: usize = 4096;

/// A zero-initialised, `BUFFER_ALIGN_BYTES`-aligned byte buffer.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    /// Where the bytes live, and who takes them back on drop.
    owner: Owner,
}

enum Owner {
    Heap,
    /// Pages `first_page..first_page + len / page` of a registered arena.
    Arena {
        arena: Arc<BufferArena>,
        first_page: usize,
    },
}

// SAFETY: AlignedBuf owns its bytes exclusively (like Vec<u8>: a heap allocation, or a
// page range the arena handed to it alone); moving it to or sharing it with another
// thread is as safe as for Vec<u8>. The arena handle is Send and Sync.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out &[u8].
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len_bytes` is rounded up to a multiple of `BUFFER_ALIGN_BYTES`.
    pub fn new(len_bytes: usize) -> AlignedBuf {
        let len = len_bytes
            .div_ceil(BUFFER_ALIGN_BYTES)
            .max(1)
            .checked_mul(BUFFER_ALIGN_BYTES)
            .expect("buffer size overflow");
        let layout = Layout::from_size_align(len, BUFFER_ALIGN_BYTES).expect("buffer layout");
        // SAFETY: layout has a non-zero size (len >= BUFFER_ALIGN_BYTES).
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf {
            ptr,
            len,
            owner: Owner::Heap,
        }
    }

    /// The `len` bytes at `ptr`, pages `first_page..` of `arena`, handed to this
    /// buffer alone until it drops and gives them back ([`BufferArena::release`]).
    ///
    /// # Safety
    /// `ptr..ptr + len` must lie inside `arena`'s memory, be initialised, aligned to
    /// [`BUFFER_ALIGN_BYTES`], and used by nothing else until this buffer drops.
    pub(crate) unsafe fn in_arena(
        arena: Arc<BufferArena>,
        ptr: NonNull<u8>,
        len: usize,
        first_page: usize,
    ) -> AlignedBuf {
        AlignedBuf {
            ptr,
            len,
            owner: Owner::Arena { arena, first_page },
        }
    }

    /// True if the buffer lies in a registered arena: io_uring reads and writes it
    /// with READ_FIXED/WRITE_FIXED on the rings that registered the arena.
    pub fn is_from_arena(&self) -> bool {
        matches!(self.owner, Owner::Arena { .. })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr points to `len` initialised bytes we own (zeroed at allocation:
        // by `alloc_zeroed`, or by the arena before it hands pages out).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        match &self.owner {
            Owner::Heap => {
                let layout = Layout::from_size_align(self.len, BUFFER_ALIGN_BYTES).expect("layout");
                // SAFETY: allocated in `new` with exactly this layout and not freed before.
                unsafe { dealloc(self.ptr.as_ptr(), layout) }
            }
            Owner::Arena { arena, first_page } => arena.release(*first_page, self.len),
        }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = if self.is_from_arena() {
            "arena"
        } else {
            "heap"
        };
        write!(f, "AlignedBuf({} bytes, {place})", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_rounded() {
        for n in [1usize, 4095, 4096, 4097, 1 << 20] {
            let b = AlignedBuf::new(n);
            assert_eq!(b.as_ptr() as usize % BUFFER_ALIGN_BYTES, 0);
            assert!(b.len() >= n && b.len().is_multiple_of(BUFFER_ALIGN_BYTES));
            assert!(b.iter().all(|&x| x == 0));
        }
    }
}
