//! The memtable's memory: chunks of atomic 64-bit words handed out by bumping an offset,
//! so an entry costs no heap allocation of its own and a frozen memtable is freed by
//! dropping its chunks.
//!
//! Words are atomics so that readers may read a node while the single writer fills
//! other nodes of the same chunk, in safe Rust: a node's words are written before the
//! node is linked into the list with a Release store, and readers reach it only through
//! an Acquire load, so they see it complete. On x86-64 a relaxed atomic load or store is
//! an ordinary move.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

pub(super) const WORD_BYTES: usize = size_of::<u64>();

/// Size of the first chunk: small, so that the tests' 4 KiB memtables hold about as many
/// entries as their limit says (the memtable's size counts whole chunks).
const CHUNK_WORDS_MIN: usize = 512 / WORD_BYTES;
/// Chunks grow by doubling the total up to this size (4 MiB): allocating (and zeroing)
/// a chunk is then rare (16 times per default 64 MiB memtable), and a chunk not yet
/// filled is at most 1/16 of such a memtable.
pub(super) const CHUNK_WORDS_FLAT: usize = (4 << 20) / WORD_BYTES;
/// Slots in the chunk directory (24 bytes each, allocated with the memtable).
const CHUNKS_MAX: usize = 256;
/// Chunks of the flat size go up to this slot; past it (a memtable of about 768 MiB,
/// from a large `memtable_bytes_max` or recovery replaying several WALs into one
/// memtable) each chunk doubles the total again, so the directory never runs out.
const CHUNKS_FLAT_MAX: usize = 192;
/// A node's offset in its chunk is 32 bits (see `Addr`).
const CHUNK_WORDS_MAX: usize = u32::MAX as usize;

/// Where a node lives: (chunk slot + 1) << 32 | word offset in the chunk. Never 0, so 0
/// stored in a link means "no next node".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Addr(NonZeroU64);

impl Addr {
    fn new(chunk: usize, offset: usize) -> Addr {
        debug_assert!(chunk < CHUNKS_MAX && offset <= CHUNK_WORDS_MAX);
        let raw = ((chunk as u64 + 1) << 32) | offset as u64;
        Addr(NonZeroU64::new(raw).expect("the chunk part is at least 1"))
    }

    /// The address stored in a link word, if any.
    pub fn from_word(raw: u64) -> Option<Addr> {
        NonZeroU64::new(raw).map(Addr)
    }

    pub fn to_word(self) -> u64 {
        self.0.get()
    }

    fn chunk(self) -> usize {
        (self.0.get() >> 32) as usize - 1
    }

    fn offset(self) -> usize {
        self.0.get() as u32 as usize
    }
}

/// The chunks. Written only by the memtable's writer (through `Bump`); read by anyone.
pub(super) struct Arena {
    chunks: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

/// The writer's allocation state: the current chunk and how far it is used.
pub(super) struct Bump {
    /// Slot of the current chunk; `None` before the first allocation.
    chunk: Option<usize>,
    used_words: usize,
    len_words: usize,
    /// Words in all chunks so far.
    pub total_words: usize,
}

impl Bump {
    pub fn new() -> Bump {
        Bump {
            chunk: None,
            used_words: 0,
            len_words: 0,
            total_words: 0,
        }
    }
}

impl Arena {
    pub fn new() -> Arena {
        Arena {
            chunks: (0..CHUNKS_MAX).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The words from `at` to the end of its chunk.
    ///
    /// Panics if `at` names no allocated chunk: addresses come only from `alloc`, whose
    /// chunk is in the directory before the address is stored anywhere.
    pub fn words(&self, at: Addr) -> &[AtomicU64] {
        let chunk = self.chunks[at.chunk()]
            .get()
            .expect("an address points into an allocated chunk");
        &chunk[at.offset()..]
    }

    /// `n` zeroed words no one else has been given. Only the writer calls this, holding
    /// `bump` (which it owns exclusively).
    pub fn alloc(&self, bump: &mut Bump, n: usize) -> (Addr, &[AtomicU64]) {
        let fits = bump.chunk.is_some() && bump.len_words - bump.used_words >= n;
        if !fits {
            self.new_chunk(bump, n);
        }
        let chunk = bump.chunk.expect("a chunk was just made if there was none");
        let at = Addr::new(chunk, bump.used_words);
        bump.used_words += n;
        (at, &self.words(at)[..n])
    }

    /// Starts a chunk of at least `n` words: the rest of the current one is left unused.
    fn new_chunk(&self, bump: &mut Bump, n: usize) {
        let slot = bump.chunk.map_or(0, |c| c + 1);
        let grown = if slot < CHUNKS_FLAT_MAX {
            bump.total_words.clamp(CHUNK_WORDS_MIN, CHUNK_WORDS_FLAT)
        } else {
            bump.total_words
        };
        let len = grown.max(n).min(CHUNK_WORDS_MAX);
        assert!(
            slot < CHUNKS_MAX && n <= len,
            "memtable arena exhausted: chunk slot {slot} of {CHUNKS_MAX}, {n} words wanted"
        );
        let chunk: Box<[AtomicU64]> = (0..len).map(|_| AtomicU64::new(0)).collect();
        if self.chunks[slot].set(chunk).is_err() {
            unreachable!("chunk slots are filled in order by the one writer");
        }
        bump.chunk = Some(slot);
        bump.used_words = 0;
        bump.len_words = len;
        bump.total_words += len;
    }
}

/// Reads a word another thread may be writing elsewhere in the chunk. Relaxed: the
/// Acquire load of the link that led here orders it after the node's writes.
pub(super) fn load(w: &AtomicU64) -> u64 {
    w.load(Ordering::Relaxed)
}

/// Writes a word of a node not yet linked (readers cannot reach it yet).
pub(super) fn store(w: &AtomicU64, value: u64) {
    w.store(value, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_do_not_overlap_and_chunks_grow() {
        let arena = Arena::new();
        let mut bump = Bump::new();
        let mut seen = std::collections::HashSet::new();
        let sizes = [3, 70, 1, 20_000, 5, CHUNK_WORDS_MIN, 9];
        for (i, &n) in sizes.iter().cycle().take(60).enumerate() {
            let (at, words) = arena.alloc(&mut bump, n);
            assert_eq!(words.len(), n);
            for (j, w) in words.iter().enumerate() {
                assert_eq!(load(w), 0, "allocation {i} word {j} was handed out before");
                store(w, i as u64 + 1);
                assert!(seen.insert((at.chunk(), at.offset() + j)));
            }
            assert_eq!(Addr::from_word(at.to_word()), Some(at));
        }
        let held: usize = arena
            .chunks
            .iter()
            .filter_map(|c| c.get())
            .map(|c| c.len())
            .sum();
        assert_eq!(held, bump.total_words);
        assert!(bump.total_words >= seen.len());
    }
}
