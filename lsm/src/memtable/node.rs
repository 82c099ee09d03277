//! A skiplist node laid out in arena words, key and value inline:
//!
//! | word | holds |
//! |---|---|
//! | 0 | height (bits 0..8), user key bytes (bits 16..32), value bytes (bits 32..64) |
//! | 1 | the internal key's trailer (sequence << 8 \| kind) |
//! | 2 .. 2+height | links: the next node's address at each level, 0 for none |
//! | then | the user key, 8 bytes per word, big-endian, zero-padded |
//! | then | the value, 8 bytes per word, zero-padded |
//!
//! Big-endian words make a user key comparison a comparison of integers, first word
//! (the key's 8-byte prefix) first, in place of a memcmp call; see `Node::cmp_key`.

use std::cmp::Ordering;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use super::arena::{load, store, Addr, Arena, WORD_BYTES};
use crate::{ikey, KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// Levels of the skiplist. With a 1-in-4 chance of each further level, 12 levels keep
/// searches logarithmic up to 4^12 = 16 M entries, more than a memtable holds.
pub(super) const HEIGHT_MAX: usize = 12;
const HEADER_WORDS: usize = 2;
const KEY_LEN_SHIFT: u32 = 16;
const VALUE_LEN_SHIFT: u32 = 32;
/// Largest user key and value the header's length fields hold.
const KEY_LEN_FIELD_MAX: usize = (1 << (VALUE_LEN_SHIFT - KEY_LEN_SHIFT)) - 1;
const VALUE_LEN_FIELD_MAX: u64 = (1 << (64 - VALUE_LEN_SHIFT)) - 1;
const _: () = assert!(HEIGHT_MAX < 1 << KEY_LEN_SHIFT);
const _: () = assert!(KEY_BYTES_MAX <= KEY_LEN_FIELD_MAX);
const _: () = assert!(VALUE_BYTES_MAX as u64 <= VALUE_LEN_FIELD_MAX);

/// A key to search for: a user key and a trailer, ordered as `ikey::compare` orders
/// internal keys (user key ascending, then trailer descending).
#[derive(Clone, Copy)]
pub(super) struct SearchKey<'a> {
    pub user: &'a [u8],
    pub trailer: u64,
}

impl<'a> SearchKey<'a> {
    /// The key of an internal key (`ikey` format, checked by the caller or built by it).
    pub fn internal(ikey: &'a [u8]) -> SearchKey<'a> {
        SearchKey {
            user: ikey::user_key(ikey),
            trailer: ikey::trailer(ikey),
        }
    }
}

fn words_of(bytes: usize) -> usize {
    bytes.div_ceil(WORD_BYTES)
}

/// Word `i` of `bytes` as stored: big-endian, zero-padded past the end.
fn word_of(bytes: &[u8], i: usize) -> u64 {
    let rest = &bytes[i * WORD_BYTES..];
    match rest.first_chunk::<WORD_BYTES>() {
        Some(w) => u64::from_be_bytes(*w),
        None => {
            let mut w = [0u8; WORD_BYTES];
            w[..rest.len()].copy_from_slice(rest);
            u64::from_be_bytes(w)
        }
    }
}

/// Words a node of this shape takes.
pub(super) fn words_for(height: usize, key_len: usize, value_len: usize) -> usize {
    HEADER_WORDS + height + words_of(key_len) + words_of(value_len)
}

/// Fills a node's words (fresh from the arena, so zero: no links) before it is linked.
pub(super) fn init(words: &[AtomicU64], height: usize, key: SearchKey, value: &[u8]) {
    assert!(
        (1..=HEIGHT_MAX).contains(&height)
            && key.user.len() <= KEY_LEN_FIELD_MAX
            && value.len() as u64 <= VALUE_LEN_FIELD_MAX,
        "memtable entry out of bounds: height {height}, key {} bytes, value {} bytes",
        key.user.len(),
        value.len()
    );
    let meta = height as u64
        | (key.user.len() as u64) << KEY_LEN_SHIFT
        | (value.len() as u64) << VALUE_LEN_SHIFT;
    store(&words[0], meta);
    store(&words[1], key.trailer);
    let key_at = HEADER_WORDS + height;
    let value_at = key_at + words_of(key.user.len());
    for (i, w) in words[key_at..value_at].iter().enumerate() {
        store(w, word_of(key.user, i));
    }
    for (i, w) in words[value_at..].iter().enumerate() {
        store(w, word_of(value, i));
    }
}

/// A view of one node's words.
#[derive(Clone, Copy)]
pub(super) struct Node<'a> {
    w: &'a [AtomicU64],
}

impl<'a> Node<'a> {
    pub fn at(arena: &'a Arena, at: Addr) -> Node<'a> {
        Node { w: arena.words(at) }
    }

    fn meta(&self) -> u64 {
        load(&self.w[0])
    }

    pub fn height(&self) -> usize {
        (self.meta() & 0xff) as usize
    }

    pub fn key_len(&self) -> usize {
        ((self.meta() >> KEY_LEN_SHIFT) & 0xffff) as usize
    }

    pub fn value_len(&self) -> usize {
        (self.meta() >> VALUE_LEN_SHIFT) as usize
    }

    pub fn trailer(&self) -> u64 {
        load(&self.w[1])
    }

    /// The next node at `level`. Acquire: pairs with the Release in `link`, so the
    /// next node's words (written before it was linked) are visible.
    pub fn next(&self, level: usize) -> Option<Addr> {
        Addr::from_word(self.w[HEADER_WORDS + level].load(AtomicOrdering::Acquire))
    }

    /// The link at `level` as the writer, the only thread that changes links, last set
    /// it: relaxed, since the writer's own store needs no synchronisation.
    pub fn next_for_writer(&self, level: usize) -> Option<Addr> {
        Addr::from_word(load(&self.w[HEADER_WORDS + level]))
    }

    /// Sets the link at `level`. Release: a reader that loads `to` from here sees every
    /// word of `to` written before.
    pub fn link(&self, level: usize, to: Option<Addr>) {
        let raw = to.map_or(0, Addr::to_word);
        self.w[HEADER_WORDS + level].store(raw, AtomicOrdering::Release);
    }

    fn key_words(&self) -> &'a [AtomicU64] {
        let at = HEADER_WORDS + self.height();
        &self.w[at..at + words_of(self.key_len())]
    }

    /// This node's key against `key`, in internal key order: user key words as integers
    /// (a zero-padded word order equals byte order up to the shorter key's end; then the
    /// shorter key is the smaller), then the trailer descending.
    pub fn cmp_key(&self, key: &SearchKey) -> Ordering {
        let mine = self.key_words();
        for (i, w) in mine.iter().take(words_of(key.user.len())).enumerate() {
            let (a, b) = (load(w), word_of(key.user, i));
            if a != b {
                return a.cmp(&b);
            }
        }
        self.key_len()
            .cmp(&key.user.len())
            .then_with(|| key.trailer.cmp(&self.trailer()))
    }

    pub fn user_key_is(&self, user: &[u8]) -> bool {
        self.key_len() == user.len()
            && self
                .key_words()
                .iter()
                .enumerate()
                .all(|(i, w)| load(w) == word_of(user, i))
    }

    /// Appends the user key's bytes to `out`.
    pub fn user_key_into(&self, out: &mut Vec<u8>) {
        unpack(self.key_words(), self.key_len(), out);
    }

    /// Appends the internal key (`ikey` format) to `out`.
    pub fn internal_key_into(&self, out: &mut Vec<u8>) {
        self.user_key_into(out);
        ikey::push_trailer(out, self.trailer());
    }

    /// Appends the value's bytes to `out`.
    pub fn value_into(&self, out: &mut Vec<u8>) {
        let at = HEADER_WORDS + self.height() + words_of(self.key_len());
        let len = self.value_len();
        unpack(&self.w[at..at + words_of(len)], len, out);
    }
}

/// Appends the first `len` bytes held by `words` to `out`.
fn unpack(words: &[AtomicU64], len: usize, out: &mut Vec<u8>) {
    out.reserve(len);
    let full = len / WORD_BYTES;
    for w in &words[..full] {
        out.extend_from_slice(&load(w).to_be_bytes());
    }
    if let Some(w) = words.get(full) {
        out.extend_from_slice(&load(w).to_be_bytes()[..len % WORD_BYTES]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ikey::Kind;
    use crate::memtable::arena::Bump;

    fn node_with<'a>(arena: &'a Arena, bump: &mut Bump, ikey: &[u8], value: &[u8]) -> Node<'a> {
        let key = SearchKey::internal(ikey);
        let (at, words) = arena.alloc(bump, words_for(3, key.user.len(), value.len()));
        init(words, 3, key, value);
        Node::at(arena, at)
    }

    #[test]
    fn word_comparison_is_internal_key_order() {
        let arena = Arena::new();
        let mut bump = Bump::new();
        let users: [&[u8]; 9] = [
            b"",
            b"\0",
            b"a",
            b"a\0",
            b"a\0\0\0\0\0\0\0",
            b"a\0\0\0\0\0\0\0\0",
            b"abcdefgh",
            b"abcdefgh\x01",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ];
        let mut ikeys = Vec::new();
        for u in users {
            for seq in [0, 7, ikey::SEQ_MAX] {
                for kind in [Kind::Put, Kind::Delete] {
                    ikeys.push(ikey::encode(u, seq, kind));
                }
            }
        }
        for a in &ikeys {
            let node = node_with(&arena, &mut bump, a, b"v");
            for b in &ikeys {
                let want = ikey::compare(a, b);
                assert_eq!(
                    node.cmp_key(&SearchKey::internal(b)),
                    want,
                    "{a:?} vs {b:?}"
                );
                assert_eq!(
                    node.user_key_is(ikey::user_key(b)),
                    ikey::user_key(a) == ikey::user_key(b)
                );
            }
        }
    }

    #[test]
    fn keys_and_values_come_back_whole() {
        let arena = Arena::new();
        let mut bump = Bump::new();
        for len in [0, 1, 7, 8, 9, 25, 64, 1000] {
            let user: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            let ikey = ikey::encode(&user, 42, Kind::Put);
            let value: Vec<u8> = (0..len + 3).map(|i| (i * 13) as u8).collect();
            let node = node_with(&arena, &mut bump, &ikey, &value);
            let (mut k, mut v) = (Vec::new(), Vec::new());
            node.internal_key_into(&mut k);
            node.value_into(&mut v);
            assert_eq!((k, v), (ikey, value));
            assert_eq!(node.height(), 3);
            assert!((0..3).all(|l| node.next(l).is_none()));
        }
    }
}
