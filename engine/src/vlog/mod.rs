//! The vlog mode's value store (WiscKey, the paper's vLog baseline): one circular log
//! over the same space the hashkv mode splits into groups ([`log`]); a flush appends
//! its separated values at the head as one sequential write ([`append`]); GC reads a
//! chunk from the tail, asks the index whether each record is still the live version,
//! re-appends the live ones at the head and advances the tail ([`gc`]).
//!
//! It shares everything else with the hashkv mode: the write cache, the group commit,
//! the record format, selective separation, reader generations and the io_uring device.

pub mod append;
pub mod gc;
pub mod log;
