//! Write-ahead log. One file per memtable (`NNNNNN.wal`): a 16-byte header (magic,
//! format version, checksum) followed by records, one per write batch, so a batch is
//! replayed wholly or not at all.
//!
//! Record: masked crc32c (u32 LE, over the length bytes and the payload) | payload
//! length (u32 LE) | payload (see `batch`). Recovery replays records up to the first
//! one that is truncated or fails its checksum: that is the torn tail of the last
//! unsynced write, and it is cut off.

pub(crate) mod batch;
pub(crate) mod reader;
pub(crate) mod record;
pub(crate) mod writer;

pub use batch::WriteBatch;
