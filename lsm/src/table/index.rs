//! The index block: a block (same encoding as data blocks) whose keys are the last
//! internal key of each data block and whose values are block handles
//! (offset varint | size varint).

use std::cmp::Ordering;

use super::block::Block;
use super::footer::BlockHandle;
use crate::coding::{put_varint, Reader};
use crate::error::{LsmError, Result};
use crate::ikey;

pub(crate) fn encode_handle(h: BlockHandle, out: &mut Vec<u8>) {
    put_varint(out, h.offset);
    put_varint(out, h.size);
}

pub(crate) struct Index {
    last_keys: Vec<Vec<u8>>,
    handles: Vec<BlockHandle>,
}

impl Index {
    /// Decodes the index payload; every handle must lie within `data_end` bytes.
    pub fn decode(payload: Vec<u8>, data_end: u64) -> Result<Index> {
        let block = Block::decode(payload)?;
        let mut last_keys = Vec::with_capacity(block.len());
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
            last_keys.push(block.key(i).to_vec());
            handles.push(h);
        }
        Ok(Index { last_keys, handles })
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
        self.last_keys
            .partition_point(|k| ikey::compare(k, target) == Ordering::Less)
    }
}
