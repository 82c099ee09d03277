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
        Ok(Index {
            keys,
            key_ends,
            handles,
        })
    }

    /// Heap bytes held, allocator rounding included.
    pub fn heap_bytes(&self) -> usize {
        heap_bytes(self.keys.capacity())
            + heap_bytes(self.key_ends.capacity() * size_of::<u32>())
            + heap_bytes(self.handles.capacity() * size_of::<BlockHandle>())
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
        let (mut lo, mut hi) = (0, self.len());
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
