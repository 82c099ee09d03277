//! Options, with the defaults of the paper where it gives one.

use crate::error::{Error, Result};

const MIB: u64 = 1 << 20;

/// Which engine runs over the devices. Recorded in the superblock at format time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Hash-grouped value store with per-group GC (the HashKV design).
    HashKv,
    /// One circular value log, collected from the tail with an index lookup per record
    /// (WiscKey, the paper's vLog baseline).
    VLog,
    /// Every value inline in the LSM tree (the LevelDB/RocksDB shape).
    Lsm,
}

impl Mode {
    /// Every mode this build runs.
    pub const ALL: &'static [Mode] = &[Mode::HashKv, Mode::VLog, Mode::Lsm];

    pub fn code(self) -> u8 {
        match self {
            Mode::HashKv => 1,
            Mode::VLog => 2,
            Mode::Lsm => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Mode> {
        match code {
            1 => Some(Mode::HashKv),
            2 => Some(Mode::VLog),
            3 => Some(Mode::Lsm),
            _ => None,
        }
    }

    /// Parses "hashkv", "vlog" or "lsm"; lists the modes this build runs on error.
    pub fn from_name(name: &str) -> Result<Mode, String> {
        Mode::ALL
            .iter()
            .copied()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                let known: Vec<_> = Mode::ALL.iter().map(|m| m.name()).collect();
                format!(
                    "unknown mode {name:?}; this build runs: {}",
                    known.join(", ")
                )
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::HashKv => "hashkv",
            Mode::VLog => "vlog",
            Mode::Lsm => "lsm",
        }
    }
}

/// Engine options. Build with `Options::default()` and the `with_*` setters.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    /// A group's nominal share of the segment pool (it sets the group count), and the
    /// stripe unit over several devices. Default 64 MiB (the paper's main segment).
    pub main_segment_bytes: u64,
    /// Size of a segment of the pool. Default 1 MiB (the paper's log segment). Also
    /// bounds the largest record, since a record never spans two segments.
    pub log_segment_bytes: u64,
    /// Share of the value space reserved for log segments. Default 0.30 (the paper's).
    /// A group's chain holds at most twice its share, so past about one half the
    /// chains, not the pool, bound what the store holds: 2 x (1 - reserved_share) of
    /// the value space with hot/cold off (the cold log may take the rest), which a
    /// full store's `StoreFull` reports as its capacity.
    pub reserved_share: f64,
    /// Write cache size: a full cache is flushed in the background while writers fill
    /// a second one, paced to fill by the time that flush has placed its records
    /// (writers wait for a flush only once the second is full too); a placed flush
    /// waits for its commit while the next one places, so about three times this is
    /// held, four times at worst (when the flusher starts late). 0 turns
    /// the cache off (every write goes to the value store at once, batched with
    /// concurrent writers). Default 16 MiB.
    pub write_cache_bytes: u64,
    /// Largest single write request: a flush's or a GC's aligned writes are cut into
    /// block-aligned requests of at most this many bytes, so that one large write is
    /// several requests in flight. Default 256 KiB.
    pub batch_write_threshold_bytes: u64,
    /// Values shorter than this stay inline in the LSM tree (selective KV separation).
    /// Default 128 bytes.
    pub separation_threshold_bytes: u64,
    /// The low-water band: writes are paced to GC's rate while fewer free segments
    /// than this remain above the GC reserves (`gc/pacer.rs`), and the background GC
    /// runs; its first since open starts already at 1.5 times this, so that its rate
    /// is measured before writes are paced by it (`gc/mod.rs`). 0 picks a default:
    /// 5% of the reserved segments or four main segments' worth, whichever is more, at
    /// least 4, at most a quarter of the reserved segments.
    pub gc_low_water_segments: u64,
    /// Main segments' worth of the pool set aside at format, beyond the reserved
    /// share, for copy-on-write GC to copy into. One GC runs at a time today, so more
    /// than one only enlarges the reserved space. Fixed at format: it shapes the
    /// layout (the group count).
    pub gc_workers: u32,
    /// Values read per batch by a range scan (all submitted to io_uring at once).
    pub scan_readahead_max: usize,
    /// Hot/cold separation (hashkv mode): group GCs move values that sat through a
    /// whole GC interval of their group untouched (more while the cold log's GC copies
    /// much per byte it frees) to the cold data log and keep a tag in the group.
    /// Chosen at open: a store opened with it off still reads, collects and frees what
    /// is cold, and moves nothing new there. Default off: measured at 2 GiB over three
    /// update phases (2026-12-03, session 23), with a 30% reserve it changes update3's
    /// throughput by 0.70-1.02x and its device bytes by 0.81-1.02x; with a 20% reserve
    /// it costs (0.28-0.53x the throughput, 1.3-2.4x the bytes: README, "Hot/cold with
    /// the cold log's price").
    pub hotness: bool,
    /// Every put/delete/write is durable when it returns (group-committed).
    pub sync_writes: bool,
    /// Formatting overwrites a device that holds data.
    pub force_format: bool,
    /// When formatting a single path that does not exist, create a file of this size
    /// there (the embedded default).
    pub create_device_bytes: Option<u64>,
    /// One bound on the engine's memory, split between the index's block cache, its
    /// memtables, the write cache and the value cache by the shares in `memory.rs`
    /// (README, "Memory"); it then overrides `write_cache_bytes`,
    /// `value_cache_bytes`, `lsm.block_cache_bytes` and `lsm.memtable_bytes_max`.
    /// 0: no budget, those options rule. At least 8 MiB when set. Default 0.
    pub memory_budget_bytes: u64,
    /// Bytes of recently read values kept in memory (without a memory budget); a value
    /// enters at its second read from the device within a short window. 0 turns the
    /// value cache off. Default 0.
    pub value_cache_bytes: u64,
    /// Options of the LSM tree in the metadata directory.
    pub lsm: hashkv_lsm::Options,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            mode: Mode::HashKv,
            main_segment_bytes: 64 * MIB,
            log_segment_bytes: MIB,
            reserved_share: 0.30,
            write_cache_bytes: 16 * MIB,
            batch_write_threshold_bytes: 256 * 1024,
            separation_threshold_bytes: 128,
            gc_low_water_segments: 0,
            gc_workers: 1,
            scan_readahead_max: 64,
            hotness: false,
            sync_writes: false,
            force_format: false,
            create_device_bytes: None,
            memory_budget_bytes: 0,
            value_cache_bytes: 0,
            lsm: hashkv_lsm::Options::default(),
        }
    }
}

macro_rules! setter {
    ($name:ident, $field:ident, $ty:ty) => {
        pub fn $name(mut self, v: $ty) -> Options {
            self.$field = v;
            self
        }
    };
}

impl Options {
    setter!(with_mode, mode, Mode);
    setter!(with_main_segment_bytes, main_segment_bytes, u64);
    setter!(with_log_segment_bytes, log_segment_bytes, u64);
    setter!(with_reserved_share, reserved_share, f64);
    setter!(with_write_cache_bytes, write_cache_bytes, u64);
    setter!(
        with_batch_write_threshold_bytes,
        batch_write_threshold_bytes,
        u64
    );
    setter!(
        with_separation_threshold_bytes,
        separation_threshold_bytes,
        u64
    );
    setter!(with_gc_low_water_segments, gc_low_water_segments, u64);
    setter!(with_gc_workers, gc_workers, u32);
    setter!(with_scan_readahead_max, scan_readahead_max, usize);
    setter!(with_sync_writes, sync_writes, bool);
    setter!(with_hotness, hotness, bool);
    setter!(with_force_format, force_format, bool);
    setter!(with_create_device_bytes, create_device_bytes, Option<u64>);
    setter!(with_memory_budget_bytes, memory_budget_bytes, u64);
    setter!(with_value_cache_bytes, value_cache_bytes, u64);
    setter!(with_lsm, lsm, hashkv_lsm::Options);

    /// What each cache and buffer may hold under these options (the budget's split,
    /// or the individual options without one).
    pub fn memory_split(&self) -> crate::memory::MemorySplit {
        crate::memory::MemorySplit::of(self)
    }

    /// These options with the format-time parameters (mode, segment sizes) that a
    /// formatted store's superblock names, so that `Db::open` accepts them.
    pub fn matching(mut self, superblock: &crate::superblock::Superblock) -> Options {
        self.mode = superblock.mode;
        self.main_segment_bytes = superblock.layout.main_segment_bytes;
        self.log_segment_bytes = superblock.layout.log_segment_bytes;
        self
    }

    /// Checks what can be checked without a device.
    pub fn validate(&self, block_bytes: u32) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidOptions { reason });
        let block = u64::from(block_bytes);
        if self.log_segment_bytes == 0 || !self.log_segment_bytes.is_multiple_of(block) {
            return bad(format!(
                "log_segment_bytes {} must be a non-zero multiple of the {block}-byte block size",
                self.log_segment_bytes
            ));
        }
        if self.main_segment_bytes == 0
            || !self
                .main_segment_bytes
                .is_multiple_of(self.log_segment_bytes)
        {
            return bad(format!(
                "main_segment_bytes {} must be a non-zero multiple of log_segment_bytes {}",
                self.main_segment_bytes, self.log_segment_bytes
            ));
        }
        if self.log_segment_bytes > u64::from(u32::MAX) || self.main_segment_bytes > 1 << 40 {
            return bad("segment sizes too large (log segment < 4 GiB, main < 1 TiB)".into());
        }
        if !(self.reserved_share > 0.0 && self.reserved_share < 0.95) {
            return bad(format!(
                "reserved_share {} must lie in (0, 0.95)",
                self.reserved_share
            ));
        }
        if self.gc_workers == 0 || self.gc_workers > 16 {
            return bad(format!("gc_workers {} must lie in 1..=16", self.gc_workers));
        }
        let budget_min = crate::memory::MEMORY_BUDGET_BYTES_MIN;
        if self.memory_budget_bytes != 0 && self.memory_budget_bytes < budget_min {
            return bad(format!(
                "memory_budget_bytes {} must be 0 (no budget) or at least {budget_min}",
                self.memory_budget_bytes
            ));
        }
        if self.scan_readahead_max == 0 {
            return bad("scan_readahead_max must be at least 1".into());
        }
        Ok(())
    }
}
