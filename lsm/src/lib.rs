//! hashkv-lsm: the LSM tree holding hashkv's index (keys -> value locations, and small
//! values inline).
//!
//! Writes go to a write-ahead log (`wal`) and a memtable of sorted runs
//! (`memtable`); full memtables are frozen and flushed by a background thread to
//! immutable table files (`table`) in L0; background threads compact levels
//! (`compaction`) whose set of tables is recorded in an append-only manifest
//! (`manifest`, `version`). Reads merge memtables and levels (`iter`) at a sequence
//! number, so snapshots see a fixed state. Every on-disk structure carries a format
//! version and crc32c checksums.

mod cache_lines;
mod coding;
mod compaction;
mod db;
mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod files;
pub mod fs;
mod ikey;
mod iter;
mod manifest;
mod memory;
mod memtable;
mod options;
mod snapshot;
mod stats;
mod table;
mod version;
mod wal;

#[doc(hidden)]
pub mod decoders;

pub use db::{destroy, destroy_on, Db};
pub use error::LsmError;
pub use fs::{Fs, RealFs};
pub use iter::{Direction, RangeIter};
pub use memory::{heap_bytes, MemoryUsage};
pub use options::{Options, WriteOptions};
pub use snapshot::Snapshot;
pub use stats::Stats;
pub use version::LEVELS;
pub use wal::WriteBatch;

/// Memtables held at most at once: the active one and those frozen and waiting for
/// their flush (writes stall beyond). The tree's write buffer takes this many times
/// `Options::memtable_bytes_max`.
pub const MEMTABLES_HELD_MAX: usize = 1 + db::IMMUTABLE_MEMTABLES_MAX;

/// Largest user key accepted. The engine's keys are 24 bytes; 1 KiB leaves room for
/// composite keys while keeping index blocks and the manifest's table bounds small.
pub const KEY_BYTES_MAX: usize = 1024;
/// Largest value accepted. The tree holds value locations and small inline values;
/// anything bigger belongs in the engine's value log. 1 MiB keeps a WAL record and a
/// data block (which holds at least one entry) bounded.
pub const VALUE_BYTES_MAX: usize = 1 << 20;
