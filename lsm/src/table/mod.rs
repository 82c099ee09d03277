//! Table files (`NNNNNN.sst`), immutable once written:
//!
//! ```text
//! data block 0 | ... | data block n-1 | filter block | index block | footer (56 bytes)
//! ```
//! Every block is its payload followed by a masked crc32c (u32 LE) of the payload. Data
//! blocks hold sorted internal keys, prefix-compressed with restart points. The index
//! block (same encoding) maps the last key of each data block to its handle. The filter
//! is a bloom filter over user keys hashed with xxh3. The footer names the index and
//! filter handles, the entry count, the format version and a magic number, and has its
//! own checksum.

pub(crate) mod block;
pub(crate) mod builder;
pub(crate) mod cache;
pub(crate) mod filter;
pub(crate) mod footer;
pub(crate) mod index;
pub(crate) mod iter;
pub(crate) mod open_files;
pub(crate) mod readahead;
pub(crate) mod reader;

/// Checksum bytes after every block payload.
pub(crate) const BLOCK_TRAILER_BYTES: usize = 4;
