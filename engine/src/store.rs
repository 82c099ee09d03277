//! The value store behind each mode, and the operations whose work differs by mode:
//! garbage collection, free space, where a pointer's record lies.
//!
//! - hashkv ([`crate::groups`]): segment groups chosen by hashing the key, collected
//!   group by group without index lookups.
//! - vlog ([`crate::vlog`]): one circular log, collected from its tail with an index
//!   lookup per record (WiscKey).
//! - lsm: every value inline in the index; the device holds only the superblock.

use crate::db::Inner;
use crate::error::{Error, Result};
use crate::groups::segment_table::SegmentTable;
use crate::keys;
use crate::layout::Layout;
use crate::location::Pointer;
use crate::options::Mode;
use crate::vlog::log::{self, LogGeometry, ValueLog};
use crate::{groups, vlog};
use hashkv_blockdev::BlockDevice;
use parking_lot::Mutex;

pub(crate) enum ValueStore {
    Groups(Mutex<SegmentTable>),
    Log(Mutex<ValueLog>),
    Inline,
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
#[derive(Debug, Clone, Copy)]
pub struct Space {
    pub free_units: u64,
    pub units: u64,
    pub used_bytes: u64,
    pub capacity_bytes: u64,
}

impl ValueStore {
    /// Index entries a freshly formatted store starts with.
    pub fn format_entries(mode: Mode, layout: &Layout) -> Vec<(Vec<u8>, Vec<u8>)> {
        match mode {
            Mode::HashKv => {
                let table = SegmentTable::new_formatted(*layout);
                (0..layout.group_count)
                    .map(|g| (keys::group_key(g), table.encode_group(g)))
                    .collect()
            }
            Mode::VLog => vec![(keys::vlog_key().to_vec(), log::encode_entry(0, 0))],
            Mode::Lsm => Vec::new(),
        }
    }

    /// Loads the store's state from the index at open: no device reads, no replay.
    /// Besides the index, reads the partly written block the next append continues (per
    /// group, or the log's head block).
    pub fn load(
        mode: Mode,
        lsm: &hashkv_lsm::Db,
        layout: &Layout,
        device: &dyn BlockDevice,
    ) -> Result<ValueStore> {
        Ok(match mode {
            Mode::HashKv => {
                let mut table = groups::load_table(lsm, *layout)?;
                groups::load_tails(&mut table, device)?;
                ValueStore::Groups(Mutex::new(table))
            }
            Mode::VLog => {
                let entry = lsm
                    .get(&keys::vlog_key())?
                    .ok_or_else(|| Error::Corruption {
                        what: "index lacks the value log's head and tail".into(),
                    })?;
                let (head, tail) = log::decode_entry(&entry)?;
                let mut log = ValueLog::new(layout, head, tail)?;
                log.load_head_block(device)?;
                ValueStore::Log(Mutex::new(log))
            }
            Mode::Lsm => ValueStore::Inline,
        })
    }
}

impl Inner {
    /// The segment table; only the hashkv mode has one.
    pub(crate) fn table(&self) -> &Mutex<SegmentTable> {
        match &self.store {
            ValueStore::Groups(t) => t,
            _ => unreachable!("segment table used outside the hashkv mode"),
        }
    }

    /// The value log; only the vlog mode has one.
    pub(crate) fn value_log(&self) -> &Mutex<ValueLog> {
        match &self.store {
            ValueStore::Log(l) => l,
            _ => unreachable!("value log used outside the vlog mode"),
        }
    }

    /// Runs one GC, of `group` if given (hashkv mode) and it can be collected. `None`
    /// when there is nothing to collect (or no spare to copy into).
    pub(crate) fn collect_garbage_once(&self, group: Option<u32>) -> Result<Option<GcOutcome>> {
        match &self.store {
            ValueStore::Groups(_) => groups::gc::collect_one(self, group),
            ValueStore::Log(_) => vlog::gc::collect_one(self),
            ValueStore::Inline => Ok(None),
        }
    }

    /// Free space is below the low-water mark: the background GC should run.
    pub(crate) fn gc_wanted(&self) -> bool {
        match &self.store {
            ValueStore::Groups(t) => t.lock().free_log_segments() < self.gc_low_water_segments,
            ValueStore::Log(l) => {
                let l = l.lock();
                let low = (self.gc_low_water_segments as u64) * l.chunk_bytes;
                l.free_bytes() < l.gc_reserve_bytes + low.max(l.gc_chunk_bytes)
            }
            ValueStore::Inline => false,
        }
    }

    /// Space that GC released but that older readers are still reading.
    pub(crate) fn space_pending(&self) -> bool {
        let oldest = self.readers.oldest_active();
        match &self.store {
            ValueStore::Groups(t) => {
                let mut t = t.lock();
                t.reclaim(oldest);
                t.pending_free_segments() > 0
            }
            ValueStore::Log(l) => {
                let mut l = l.lock();
                l.reclaim(oldest);
                l.pending_release()
            }
            ValueStore::Inline => false,
        }
    }

    /// How many GCs in a row may fail to make room before the store counts as full:
    /// enough to visit every group, or the whole log.
    pub(crate) fn gc_attempts_max(&self) -> u32 {
        match &self.store {
            ValueStore::Groups(_) => self.layout.group_count + 2,
            ValueStore::Log(l) => {
                let l = l.lock();
                (l.region_bytes / l.gc_chunk_bytes) as u32 + 2
            }
            ValueStore::Inline => 0,
        }
    }

    pub(crate) fn space(&self) -> Space {
        match &self.store {
            ValueStore::Groups(t) => {
                let t = t.lock();
                Space {
                    free_units: t.free_log_segments() as u64,
                    units: u64::from(self.layout.log_segment_count),
                    used_bytes: t.used_bytes(),
                    capacity_bytes: self.layout.value_capacity_bytes(),
                }
            }
            ValueStore::Log(l) => {
                let l = l.lock();
                Space {
                    free_units: l.free_bytes() / l.chunk_bytes,
                    units: u64::from(l.chunk_count()),
                    used_bytes: l.used_bytes(),
                    capacity_bytes: l.region_bytes,
                }
            }
            ValueStore::Inline => Space {
                free_units: 0,
                units: 0,
                used_bytes: 0,
                capacity_bytes: 0,
            },
        }
    }

    /// One line on how the value space is organised, for tools' headers.
    pub(crate) fn describe_value_store(&self) -> String {
        let mib = |b: u64| format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64);
        let l = &self.layout;
        match &self.store {
            ValueStore::Groups(_) => format!(
                "hashkv: {} groups of {} main segments, {} log segments of {} reserved",
                l.group_count,
                mib(l.main_segment_bytes),
                l.log_segment_count,
                mib(l.log_segment_bytes)
            ),
            ValueStore::Log(v) => {
                let v = v.lock();
                format!(
                    "vlog: one circular log of {} in {} chunks, GC of {} from the tail",
                    mib(v.region_bytes),
                    mib(v.chunk_bytes),
                    mib(v.gc_chunk_bytes)
                )
            }
            ValueStore::Inline => "lsm: every value inline in the index".into(),
        }
    }

    pub(crate) fn store_full(&self) -> Error {
        let s = self.space();
        Error::StoreFull {
            used_bytes: s.used_bytes,
            capacity_bytes: s.capacity_bytes,
        }
    }

    /// Device offset of the record a pointer names, checked against the store's
    /// bounds; a pointer outside them is corruption.
    pub(crate) fn pointer_offset(&self, p: &Pointer) -> Result<u64> {
        let at = match &self.store {
            ValueStore::Groups(_) => {
                let l = &self.layout;
                let fits = p.segment < l.segment_count()
                    && u64::from(p.offset) + u64::from(p.record_bytes)
                        <= l.segment_bytes(p.segment);
                fits.then(|| l.segment_offset(p.segment) + u64::from(p.offset))
            }
            // No lock: the geometry follows from the layout.
            ValueStore::Log(_) => LogGeometry::of(&self.layout).pointer_offset(p),
            ValueStore::Inline => None,
        };
        at.ok_or_else(|| Error::Corruption {
            what: format!("index points outside the value store: {p:?}"),
        })
    }
}
