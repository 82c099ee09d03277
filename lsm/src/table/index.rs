//! The index block: a block (same encoding as data blocks) whose keys are the last
//! internal key of each data block and whose values are block handles
//! (offset varint | size varint).

use std::cmp::Ordering;

use super::block::Block;
use super::footer::BlockHandle;
use super::BLOCK_TRAILER_BYTES;
use crate::coding::{put_varint, Reader};
use crate::error::{LsmError, Result};
use crate::ikey;
use crate::memory::heap_bytes;

pub(crate) fn encode_handle(h: BlockHandle, out: &mut Vec<u8>) {
    put_varint(out, h.offset);
    put_varint(out, h.size);
}

/// The index of a table, decoded and pinned in memory for the table's life. Keys are
/// kept back to back in one buffer (an allocation per key would double its memory).
pub(crate) struct Index {
    /// The last internal key of each block, back to back.
    keys: Vec<u8>,
    /// End of each block's key in `keys`.
    key_ends: Vec<u32>,
    handles: Vec<BlockHandle>,
    /// How many bytes every key's user key starts with alike.
    common_len: usize,
    /// Per block: the 8 bytes of its key's user key after the common part
    /// (`ikey::prefix_of`). A search compares these in a dense array and reads keys only
    /// where they tie: each step of a search over the keys themselves waited for two
    /// loads from memory (the key's end, then its bytes), and the engine's keys share
    /// their first bytes, so a compare also ran past them.
    prefixes: Vec<u64>,
}

impl Index {
    /// Decodes the index payload; every handle must lie within `data_end` bytes.
    pub fn decode(payload: Vec<u8>, data_end: u64) -> Result<Index> {
        let block = Block::decode(payload)?;
        let mut keys = Vec::new();
        let mut key_ends = Vec::with_capacity(block.len());
        let mut handles = Vec::with_capacity(block.len());
        let mut prev_end = 0u64;
        for i in 0..block.len() {
            let mut r = Reader::new(block.value(i));
            let h = BlockHandle {
                offset: r.varint()?,
                size: r.varint()?,
            };
            if !r.is_empty() {
                return Err(LsmError::corrupt(
                    "index entry: bytes after the block handle",
                ));
            }
            let end = h.offset.checked_add(h.size).and_then(|e| e.checked_add(4));
            if h.offset != prev_end || end.is_none_or(|e| e > data_end) {
                return Err(LsmError::corrupt(format!(
                    "index entry {i}: block {}+{} does not follow the previous block or lies \
                     past the data end {data_end}",
                    h.offset, h.size
                )));
            }
            prev_end = end.expect("checked");
            keys.extend_from_slice(block.key(i));
            key_ends.push(
                u32::try_from(keys.len()).map_err(|_| {
                    LsmError::corrupt(format!("index keys past 4 GiB at entry {i}"))
                })?,
            );
            handles.push(h);
        }
        keys.shrink_to_fit();
        let mut index = Index {
            keys,
            key_ends,
            handles,
            common_len: 0,
            prefixes: Vec::new(),
        };
        index.common_len = match index.len() {
            0 => 0,
            n => ikey::common_prefix_len(index.user_key(0), index.user_key(n - 1)),
        };
        index.prefixes = (0..index.len())
            .map(|i| ikey::prefix_of(&index.user_key(i)[index.common_len..]))
            .collect();
        Ok(index)
    }

    /// Heap bytes held, allocator rounding included.
    pub fn heap_bytes(&self) -> usize {
        heap_bytes(self.keys.capacity())
            + heap_bytes(self.key_ends.capacity() * size_of::<u32>())
            + heap_bytes(self.handles.capacity() * size_of::<BlockHandle>())
            + heap_bytes(self.prefixes.capacity() * size_of::<u64>())
    }

    fn user_key(&self, i: usize) -> &[u8] {
        ikey::user_key(self.key(i))
    }

    fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            self.key_ends[i - 1] as usize
        };
        &self.keys[start..self.key_ends[i] as usize]
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn handle(&self, i: usize) -> BlockHandle {
        self.handles[i]
    }

    /// The first block whose last key is >= target: the only block that can hold the
    /// first entry >= target. len() if target is past every block.
    pub fn find(&self, target: &[u8]) -> usize {
        let user = ikey::user_key(target);
        let Some(rest) = user.get(self.common_len..).filter(|_| {
            self.len() > 0 && user[..self.common_len] == self.user_key(0)[..self.common_len]
        }) else {
            return self.find_between(target, 0, self.len());
        };
        // Keys are sorted, so their prefixes are too: those below the target's are of
        // smaller keys, those above of larger ones; only ties need the keys.
        let p = ikey::prefix_of(rest);
        let lo = self.prefixes.partition_point(|&q| q < p);
        let hi = lo + self.prefixes[lo..].partition_point(|&q| q == p);
        self.find_between(target, lo, hi)
    }

    /// The first block in `lo..hi` whose last key is >= target, or `hi`.
    fn find_between(&self, target: &[u8], mut lo: usize, mut hi: usize) -> usize {
        while lo < hi {
            let mid = (lo + hi) / 2;
            if ikey::compare(self.key(mid), target) == Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// End offset of the last of the blocks from `first` on that end within
    /// `span_bytes` of its start; the end of block `first` at least.
    pub fn span_end(&self, first: usize, span_bytes: u64) -> u64 {
        let limit = self.handles[first].offset + span_bytes;
        let block_end = |h: &BlockHandle| h.offset + h.size + BLOCK_TRAILER_BYTES as u64;
        let mut end = block_end(&self.handles[first]);
        for h in &self.handles[first + 1..] {
            if block_end(h) > limit {
                break;
            }
            end = block_end(h);
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ikey::{encode, seek_key, Kind};
    use crate::table::block::BlockBuilder;

    /// An index over blocks ending at these internal keys (sorted), 100 bytes each.
    fn index_of(keys: &[Vec<u8>]) -> Index {
        let mut b = BlockBuilder::new();
        for (i, k) in keys.iter().enumerate() {
            let mut handle = Vec::new();
            let h = BlockHandle {
                offset: i as u64 * 104,
                size: 100,
            };
            encode_handle(h, &mut handle);
            b.add(k, &handle);
        }
        Index::decode(b.finish(), keys.len() as u64 * 104).unwrap()
    }

    #[test]
    fn find_agrees_with_a_search_over_the_keys() {
        // Shared starts, keys that tie on the 8 bytes after them, keys shorter than 8
        // bytes past them, zero bytes, and versions of one user key.
        let mut users: Vec<Vec<u8>> = vec![
            b"user".to_vec(),
            b"user\0".to_vec(),
            b"user\0\0\0\0\0\0\0\0\x01".to_vec(),
            b"userA".to_vec(),
            b"userAAAAAAAA".to_vec(),
            b"userAAAAAAAAx1".to_vec(),
            b"userAAAAAAAAx2".to_vec(),
            b"userAAAAAAAAy".to_vec(),
            b"userB".to_vec(),
            b"userzzzzzzzzzzzz".to_vec(),
        ];
        for i in 0..300u32 {
            users.push(format!("user{:08}", i * 7).into_bytes());
        }
        users.sort();
        users.dedup();
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for u in &users {
            keys.push(encode(u, 9, Kind::Put));
            if u.len() % 3 == 0 {
                keys.push(encode(u, 5, Kind::Put));
            }
        }
        keys.sort_by(|a, b| ikey::compare(a, b));
        let index = index_of(&keys);
        assert_eq!(index.common_len, 4);
        let naive = |t: &[u8]| {
            keys.iter()
                .position(|k| ikey::compare(k, t) != Ordering::Less)
                .unwrap_or(keys.len())
        };
        let mut targets: Vec<Vec<u8>> = Vec::new();
        for u in users.iter().chain(
            [
                b"".to_vec(),
                b"use".to_vec(),
                b"usd~".to_vec(),
                b"usez".to_vec(),
                b"userAAAAAAAAx".to_vec(),
                b"userAAAAAAAAx15".to_vec(),
                b"user\xff".to_vec(),
                b"uses".to_vec(),
            ]
            .iter(),
        ) {
            for seq in [0, 5, 7, 9, crate::ikey::SEQ_MAX] {
                targets.push(seek_key(u, seq));
            }
        }
        for t in &targets {
            assert_eq!(index.find(t), naive(t), "target {t:?}");
        }
    }

    #[test]
    fn find_in_an_index_of_one_block() {
        let one = index_of(&[encode(b"k", 1, Kind::Put)]);
        assert_eq!(one.find(&seek_key(b"a", 5)), 0);
        assert_eq!(one.find(&seek_key(b"k", 5)), 0);
        assert_eq!(one.find(&seek_key(b"z", 5)), 1);
    }
}
