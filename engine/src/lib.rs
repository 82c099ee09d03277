//! hashkv: a key-value store for update-heavy workloads, after HashKV (USENIX ATC'18).
//!
//! Keys, small values and value locations live in an LSM tree ([`hashkv_lsm`]) in a
//! metadata directory. Larger values live in a value store on raw devices or files.
//! Three modes share everything but the value store ([`store`]), so they can be
//! compared side by side:
//! - hashkv ([`groups`]): fixed-size main segments, one per group chosen by hashing the
//!   key, extended by log segments from reserved space, collected group by group
//!   without index lookups;
//! - vlog ([`vlog`]): one circular log collected from its tail with an index lookup
//!   per record (WiscKey);
//! - lsm: every value inline in the index.
//!
//! Where things are:
//! - [`db`]: opening, formatting, the operations; `flush.rs`: the write path's group
//!   commit; [`scan`]: range scans with readahead.
//! - [`groups`]: `segment_table.rs` (chains, free lists), `append.rs` (where a flush's
//!   records go), `gc.rs` (segment-group GC); [`vlog`]: `log.rs`, `append.rs`, `gc.rs`.
//! - [`layout`] and [`superblock`]: the on-device regions; [`record`]: value records;
//!   [`location`]: what the index stores per key; `write_cache.rs`; `readers.rs`: when
//!   GC may reuse space. FORMAT.md beside this crate documents the bytes and the crash
//!   argument.

mod buffers;
pub mod check;
pub mod db;
mod devices;
pub mod error;
pub mod ffi;
mod flush;
pub mod groups;
mod keys;
pub mod layout;
pub mod location;
mod open;
pub mod options;
mod readers;
pub mod record;
pub mod scan;
pub mod stats;
pub mod store;
pub mod superblock;
pub mod vlog;
mod write_cache;

pub use check::CheckReport;
pub use db::{Db, WriteBatch, KEY_BYTES_MAX};
pub use error::{Error, Result};
pub use options::{Mode, Options};
pub use scan::ScanIter;
pub use stats::Stats;
