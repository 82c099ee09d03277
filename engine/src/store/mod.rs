//! The value store behind each mode. Each mode's store owns its state and implements
//! [`ValueStore`]: placing a flush's records, collecting garbage, space accounting,
//! where a pointer's record lies, its part of the check, and its index entries at
//! format and open. It sees a narrow context ([`IoCtx`], [`GcCtx`]), never the whole
//! engine, and changes the index only through plans handed to the committer.
//!
//! - hashkv ([`groups`]): segment groups chosen by hashing the key, collected group by
//!   group without index lookups;
//! - vlog ([`vlog`]): one circular log, collected from its tail with an index lookup
//!   per record (WiscKey);
//! - lsm ([`inline`]): every value inline in the index; the device holds only the
//!   superblock.
//!
//! The mode is matched here, in [`open`], and nowhere else. A new value region is a
//! new module beside these, with its space from [`crate::circular_log`] or, like the
//! hashkv mode's cold data log, from the segment pool.

pub(crate) mod groups;
pub(crate) mod inline;
pub(crate) mod vlog;

use crate::buffers::BufferPool;
use crate::cache_map::AlignedValue;
use crate::commit::{Committer, DeviceWrite};
use crate::error::{Error, Result};
use crate::index::{GcIndex, IndexReader};
use crate::layout::Layout;
use crate::location::Pointer;
use crate::options::Mode;
use crate::readers::Readers;
use crate::spans::Span;
use crate::stats::Counters;
use hashkv_blockdev::BlockDevice;
use std::sync::Arc;

/// What a store's I/O needs: never the whole engine.
pub(crate) struct IoCtx<'a> {
    pub device: &'a dyn BlockDevice,
    pub buffers: &'a BufferPool,
    pub readers: &'a Readers,
    pub counters: &'a Counters,
    /// The sector values are placed on (`align.rs`): the device's logical block.
    pub value_align_bytes: u64,
}

impl IoCtx<'_> {
    /// How records are encoded into this device's writes (`record_write.rs`).
    pub fn encoder(&self) -> crate::record_write::Encoder<'_> {
        crate::record_write::Encoder {
            buffers: self.buffers,
            counters: self.counters,
            sector_bytes: self.value_align_bytes as usize,
        }
    }
}

/// What a GC needs besides I/O: the committer to commit through, and read access to
/// the index (only the vlog mode's GC looks keys up).
pub(crate) struct GcCtx<'a> {
    pub io: IoCtx<'a>,
    pub committer: &'a Committer,
    pub index: GcIndex<'a>,
    /// The next sequence number: a record's age is `now_seq - seq`.
    pub now_seq: u64,
    /// The background GC's low-water band, in log segments above the flush floor
    /// (`GcDriver`): moves that free nothing in net stay out of its lower half.
    pub low_water_segments: usize,
}

/// One entry of a flush.
pub(crate) struct FlushRecord<'a> {
    pub key: &'a [u8],
    /// `HashedKey::hash` of `key`, computed once when it entered the write cache
    /// (`cache_map.rs`).
    pub key_hash: u64,
    /// The value, if the value store holds it (separated); `None` for a delete or an
    /// inline value, which live in the index only.
    pub value: Option<&'a [u8]>,
    /// The value's aligned copy in the write cache, if it has one: the flush may
    /// write it from there instead of copying it (`record_write.rs`).
    pub aligned: Option<&'a Arc<AlignedValue>>,
    pub seq: u64,
}

/// A flush's records, placed: the writes to submit, a pointer per record whose value
/// went to the value store, and the store's own index entries to commit with them.
pub(crate) struct Placed {
    pub writes: Vec<DeviceWrite>,
    pub pointers: Vec<Option<Pointer>>,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Why a flush could not be placed; on either, the store's state is unchanged.
pub(crate) enum PlaceError {
    /// Not enough free space: GC must make room first. `group` names a group whose
    /// chain is at its limit: collecting it is what makes room.
    NeedSpace {
        group: Option<u32>,
    },
    Fatal(Error),
}

impl From<Error> for PlaceError {
    fn from(e: Error) -> PlaceError {
        PlaceError::Fatal(e)
    }
}

/// What one GC did.
#[derive(Debug, Clone)]
pub struct GcOutcome {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_kept: u64,
    /// The GC freed more space than it took, so a waiting flush may fit now (once
    /// older readers are gone).
    pub made_room: bool,
}

/// Free and total value space, in the store's own units (log segments or log chunks).
#[derive(Debug, Clone, Copy, Default)]
pub struct Space {
    pub free_units: u64,
    pub units: u64,
    pub used_bytes: u64,
    pub capacity_bytes: u64,
    /// Of `used_bytes`, the cold data log's, and its live records' (hashkv mode).
    pub cold_bytes: u64,
    pub cold_live_bytes: u64,
}

/// One group's space (hashkv mode), for `hashkv stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GroupUsage {
    /// Bytes written in the group's chain: hot values, tags and garbage.
    pub chain_bytes: u64,
    /// Bytes of the group's cold values in the cold data log, as of its last GC.
    pub cold_bytes: u64,
    /// Values its GCs moved to the cold log, and cold keys updates brought back, since
    /// format (as its GCs found them).
    pub demotions: u64,
    pub promotions: u64,
}

/// What `ValueStore::reclaim` found.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reclaimed {
    /// Space a GC released became free just now.
    pub freed: bool,
    /// Released space still waits for older readers.
    pub waiting: bool,
}

/// A stretch of the value store the check reads, and the group its records belong to
/// (hashkv mode).
pub(crate) struct CheckSpan {
    pub place: String,
    pub span: Span,
    pub group: Option<u32>,
}

pub(crate) trait ValueStore: Send + Sync {
    /// One line on how the value space is organised, for tools' headers.
    fn describe(&self) -> String;

    /// The index entries that describe this store's state (a fresh store's are what
    /// format writes).
    fn format_entries(&self) -> Vec<(Vec<u8>, Vec<u8>)>;

    /// Places a flush's records (in the write cache's order, not the keys'; sequence
    /// numbers assigned).
    fn place(&self, io: &IoCtx<'_>, records: &[FlushRecord<'_>]) -> Result<Placed, PlaceError>;

    /// Runs one GC, of `group` if given and it can be collected (hashkv mode). `None`
    /// when there is nothing to collect.
    fn collect(&self, ctx: &GcCtx<'_>, group: Option<u32>) -> Result<Option<GcOutcome>>;

    /// How many GCs of `group` finished since open (hashkv mode): a flush refused
    /// for the group notes it, and collects the group only if no other GC has since.
    fn gc_generation(&self, _group: u32) -> u64 {
        0
    }

    /// Runs one GC of cold data log segment `segment`, or of the best one, whatever
    /// its cost-benefit (tests and tools); `None` when there is none to collect.
    fn collect_cold(&self, _ctx: &GcCtx<'_>, _segment: Option<u32>) -> Result<Option<GcOutcome>> {
        Ok(None)
    }

    /// The region `p` points into, for tests and tools.
    fn region_name(&self, p: &Pointer) -> &'static str {
        match p.region {
            crate::location::Region::Segments => "group",
            crate::location::Region::Log => "value log",
            crate::location::Region::Cold => "cold log",
        }
    }

    /// No GC is wanted now: drop what was kept for the next one once it has waited
    /// too long (a group GC's read-ahead).
    fn gc_idle(&self, _counters: &Counters, _buffers: &BufferPool) {}

    /// Free space above what flushes must leave (the GC reserves), as a share of the
    /// low-water band of `low_water_segments` log segments' worth: below 1.0 the
    /// background GC runs (the first since open from 1.5, `gc/mod.rs`) and writes are
    /// paced (`gc/pacer.rs`); at 0.0 flushes wait for a GC. Infinite where there is no
    /// GC. The hashkv mode takes the lower of this and, where the chain limits end the
    /// room first, the room its fullest groups leave over the chain band
    /// (`SegmentTable::chain_room_segments`).
    fn headroom(&self, low_water_segments: usize) -> f64;

    /// Whether the background GC should go on after `outcome`: a log whose tail is all
    /// live would be copied round and round.
    fn keep_collecting(&self, outcome: &GcOutcome) -> bool;

    /// GCs that may fail to make room in a row before the store counts as full: enough
    /// to visit every group, or the whole log.
    fn gc_attempts_max(&self) -> u32;

    /// Hands space whose readers are gone back to the free lists.
    fn reclaim(&self, oldest_reader: Option<u64>) -> Reclaimed;

    fn space(&self) -> Space;

    /// Device offset of the record `p` names, if `p` lies inside this store.
    fn record_offset(&self, p: &Pointer) -> Option<u64>;

    /// What the check reads: every byte the store counts as written.
    fn check_spans(&self) -> Vec<CheckSpan>;

    /// Checks beyond every record's own integrity (the hashkv mode's cold tags against
    /// the cold log); returns the damage found. The store must be still (the check
    /// holds the GC and commit locks).
    fn check_cross(&self, _io: &IoCtx<'_>) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Per group (hashkv mode): bytes in its chain, and bytes of the cold records its
    /// tags named at its last GC.
    fn group_usage(&self) -> Vec<GroupUsage> {
        Vec::new()
    }

    /// Why `p` cannot be where `key`'s live record lies, if it cannot.
    fn pointer_problem(&self, key: &[u8], p: &Pointer) -> Option<String>;
}

/// Where a fresh store's state comes from.
pub(crate) enum Source<'a> {
    /// Just formatted.
    Fresh,
    /// Committed in the index; the device holds the partly written blocks.
    Index(&'a IndexReader, &'a dyn BlockDevice),
}

/// The value store of `mode`: the one place the mode is matched. Opening reads the
/// index entries and the partly written blocks the next appends continue; no replay.
pub(crate) fn open(
    options: &crate::Options,
    layout: &Layout,
    from: Source<'_>,
) -> Result<Box<dyn ValueStore>> {
    Ok(match options.mode {
        Mode::HashKv => Box::new(groups::Groups::open(*layout, options.hotness, from)?),
        Mode::VLog => Box::new(vlog::ValueLog::open(layout, from)?),
        Mode::Lsm => Box::new(inline::Inline),
    })
}

/// `StoreFull`, with the store's space.
pub(crate) fn store_full(space: Space) -> Error {
    Error::StoreFull {
        used_bytes: space.used_bytes,
        capacity_bytes: space.capacity_bytes,
    }
}

/// The layout `options` give a device of `device_bytes` with blocks of `block_bytes`,
/// if the mode's value store fits on it; touches no device. Tools size their devices
/// with it.
pub fn check_device_size(
    device_bytes: u64,
    block_bytes: u32,
    options: &crate::Options,
) -> Result<Layout> {
    let layout = Layout::compute(device_bytes, block_bytes, options)?;
    open(options, &layout, Source::Fresh)?;
    Ok(layout)
}
