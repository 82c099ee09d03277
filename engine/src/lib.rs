//! hashkv: a key-value store for update-heavy workloads, after HashKV (USENIX ATC'18).
//!
//! Keys, small values and value locations live in an LSM tree ([`hashkv_lsm`]) in a
//! metadata directory. Larger values live in a value store on raw devices or files:
//! fixed-size main segments, one per group chosen by hashing the key, extended by log
//! segments from reserved space, and collected group by group without index lookups.
//!
//! Where things are:
//! - [`db`]: opening, formatting, the operations; `flush.rs`: the write path's commit;
//!   [`gc`]: segment-group garbage collection; [`scan`]: range scans with readahead.
//! - [`segment_table`]: groups' segment chains and the free lists; [`layout`] and
//!   [`superblock`]: the on-device regions; [`record`]: value records; [`location`]:
//!   what the index stores per key; `write_cache.rs`; `readers.rs`: when GC may reuse a
//!   segment. FORMAT.md beside this crate documents the bytes and the crash argument.

pub mod db;
mod devices;
pub mod error;
pub mod ffi;
mod flush;
pub mod gc;
mod keys;
pub mod layout;
pub mod location;
pub mod options;
mod readers;
pub mod record;
pub mod scan;
pub mod segment_table;
pub mod stats;
pub mod superblock;
mod write_cache;

pub use db::{Db, WriteBatch, KEY_BYTES_MAX};
pub use error::{Error, Result};
pub use options::{Mode, Options};
pub use scan::ScanIter;
pub use stats::Stats;
