//! Leveled compaction: picking what to compact (`pick`) and running it (`run`).
//!
//! L0 is compacted into L1 when it holds `l0_compaction_trigger` tables (all L0 tables
//! at once, since they overlap each other); level i >= 1 is compacted into i+1 when its
//! bytes exceed `level1_bytes_max * level_size_ratio^(i-1)`, one table at a time: the
//! one that rewrites the fewest bytes below per byte it moves down. The most urgent goes
//! first (bytes over the limit, or L0 tables over the trigger), except that L0 goes
//! first whenever it holds `l0_slowdown_trigger` tables: writers are being slowed for
//! it then. A user key never spans two tables of one level, so a table's
//! range fully describes where its key's versions are.

pub(crate) mod pick;
pub(crate) mod run;

use std::sync::Arc;

use crate::version::FileMeta;

pub(crate) struct Compaction {
    pub level: usize,
    pub inputs: Vec<Arc<FileMeta>>,
    /// Level + 1, or `level` itself for a manual compaction that rewrites the bottom
    /// level in place (to drop its tombstones).
    pub output_level: usize,
    /// Overlapping tables of the output level (empty when compacting in place).
    pub next_inputs: Vec<Arc<FileMeta>>,
}

impl Compaction {
    pub fn output_level(&self) -> usize {
        self.output_level
    }

    /// A single table with nothing under it moves down without being rewritten.
    pub fn is_trivial_move(&self) -> bool {
        self.inputs.len() == 1 && self.next_inputs.is_empty() && self.output_level != self.level
    }
}
