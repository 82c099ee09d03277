//! The partly written last block of an append stream (a group's chain, a circular
//! log's head). Appends do not pad each batch to a block: the next batch rewrites the
//! block that holds the stream's end, with the committed bytes it already holds
//! unchanged ahead of the new records (FORMAT.md, "Value record", says why a torn
//! rewrite is harmless). Those bytes are kept in memory, read back once at open.

use crate::commit::DeviceWrite;
use crate::error::{Error, Result};
use hashkv_blockdev::{AlignedBuf, BlockDevice};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PartialBlock {
    /// Device offset of the block's start.
    block_offset: u64,
    /// The committed bytes from the block's start up to the stream's end.
    bytes: Vec<u8>,
}

impl PartialBlock {
    /// The block holding a stream that ends at device offset `end`: read from the
    /// device if `end` is inside a block, empty if it is on a boundary.
    pub fn read(device: &dyn BlockDevice, end: u64, block_bytes: u64) -> Result<PartialBlock> {
        let len = (end % block_bytes) as usize;
        let block_offset = end - len as u64;
        if len == 0 {
            return Ok(PartialBlock::default());
        }
        let mut buf = AlignedBuf::new(block_bytes as usize);
        device.read_at(block_offset, &mut buf[..])?;
        Ok(PartialBlock {
            block_offset,
            bytes: buf[..len].to_vec(),
        })
    }

    /// Remembers the block where `write`'s first `used` bytes end (its own bytes, or a
    /// value it writes from the write cache's buffer).
    pub fn after_write(write: &DeviceWrite, used: usize, block_bytes: usize) -> Self {
        let len = used % block_bytes;
        if len == 0 {
            return PartialBlock::default();
        }
        PartialBlock {
            block_offset: write.offset + (used - len) as u64,
            bytes: write.bytes(used - len..used),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Copies the committed bytes to the start of `buf`, the buffer of a write that
    /// starts at `write_offset` with `prefix_len` bytes of this block. A write that does
    /// not continue this very block means the in-memory state is wrong: corruption.
    pub fn copy_prefix(&self, buf: &mut [u8], write_offset: u64, prefix_len: usize) -> Result<()> {
        if prefix_len == 0 {
            return Ok(());
        }
        if self.block_offset != write_offset || self.bytes.len() != prefix_len {
            return Err(Error::corrupt(
                "partly written block",
                format!("{prefix_len} committed bytes at device offset {write_offset}"),
                format!(
                    "{} bytes remembered at device offset {}",
                    self.bytes.len(),
                    self.block_offset
                ),
            ));
        }
        buf[..prefix_len].copy_from_slice(&self.bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_and_checks_the_block() {
        let mut buf = AlignedBuf::new(12_288);
        buf.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        let write = DeviceWrite::own(8192, buf, 12_288);
        let buf = &write.buf;
        let p = PartialBlock::after_write(&write, 9000, 4096);
        assert_eq!(p.len(), 9000 - 8192);
        let mut out = vec![0u8; 4096];
        p.copy_prefix(&mut out, 8192 + 8192, 9000 - 8192).unwrap();
        assert_eq!(&out[..808], &buf[8192..9000]);
        assert!(p.copy_prefix(&mut out, 4096, 808).is_err(), "another block");
        assert!(
            p.copy_prefix(&mut out, 16384, 100).is_err(),
            "another length"
        );
        assert_eq!(
            PartialBlock::after_write(&write, 8192, 4096),
            PartialBlock::default()
        );
    }
}
