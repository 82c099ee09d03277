//! hashkv: a key-value store for update-heavy workloads, after HashKV (USENIX ATC'18).
//!
//! Keys, small values and value locations live in an LSM tree ([`hashkv_lsm`]) in a
//! metadata directory. Larger values live in a value store on raw devices or files.
//! Three modes share everything but the value store, so they can be compared side by
//! side: hashkv (segment groups chosen by hashing the key, collected group by group
//! without index lookups), vlog (one circular log collected from its tail with an
//! index lookup per record, as WiscKey) and lsm (every value inline in the index).
//!
//! Where things are (MODULES.md beside this crate has the longer map):
//! - `db.rs`: the public API and the shared state; `open.rs`: format and open;
//! - `write.rs` → `flush.rs` → `commit/`: a write, its group commit, and the committer,
//!   the only code that writes the index (what happens on a crash mid-flush is argued
//!   at the head of `commit/mod.rs`);
//! - `read.rs`, `scan.rs`: gets and range scans with readahead;
//! - `gc/`: when GC runs, and the keys written during one; `store/`: each mode's value
//!   store (`store/groups/`, `store/vlog/`, `store/inline.rs`), each with its own GC;
//! - shared pieces: `circular_log.rs`, `partial_block.rs`, `spans.rs`,
//!   `entry_codec.rs`, `readers.rs`, `buffers.rs`, `write_cache.rs`;
//! - on-device formats: `superblock.rs`, `layout.rs`, `record.rs`, `location.rs`,
//!   `keys.rs`; FORMAT.md documents the bytes and the crash argument;
//! - `check.rs`: what `hashkv fsck` verifies; `ffi.rs`: the C API.

mod align;
mod buffers;
mod cache_map;
mod check;
mod circular_log;
mod commit;
mod crc_combine;
mod db;
#[doc(hidden)]
pub mod decoders;
mod devices;
mod entry_codec;
mod error;
pub mod ffi;
mod flush;
mod flusher;
mod gc;
mod index;
mod key_hash;
mod keys;
mod layout;
mod location;
mod memory;
mod open;
mod options;
mod partial_block;
mod read;
mod readers;
mod record;
mod record_write;
mod scan;
mod spans;
mod stats;
mod store;
mod superblock;
mod value_cache;
mod write;
mod write_cache;

pub use check::{CheckReport, DAMAGE_REPORTED_MAX};
pub use db::{Db, WriteBatch, KEY_BYTES_MAX};
pub use error::{Error, Result};
pub use layout::{Layout, MAIN_SEGMENT_BYTES_MIN};
pub use memory::{
    MemorySplit, MemoryUsage, BLOCK_CACHE_SHARE, LOAN_IDLE, MEMORY_BUDGET_BYTES_MIN,
    MEMTABLES_SHARE, VALUE_CACHE_SHARE, WRITE_CACHE_COPIES, WRITE_SHARE,
};
pub use options::{Mode, Options};
pub use read::MULTI_GET_CHUNK_KEYS;
pub use record::RECORD_HEADER_BYTES;
pub use scan::ScanIter;
pub use stats::Stats;
pub use store::{check_device_size, GcOutcome, GroupUsage, Space};
pub use superblock::{FormatStep, HeaderReport, Superblock, FORMAT_VERSION};
