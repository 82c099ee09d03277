//! The lsm mode's value store: there is none. Every value lives inline in the index,
//! whose compactions reclaim space; the device holds only the superblock.

use super::{
    CheckSpan, FlushRecord, GcCtx, GcOutcome, IoCtx, PlaceError, Placed, Reclaimed, Space,
    ValueStore,
};
use crate::error::Result;
use crate::location::Pointer;

pub(crate) struct Inline;

impl ValueStore for Inline {
    fn describe(&self) -> String {
        "lsm: every value inline in the index".into()
    }

    fn format_entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        Vec::new()
    }

    fn place(&self, _: &IoCtx<'_>, records: &[FlushRecord<'_>]) -> Result<Placed, PlaceError> {
        Ok(Placed {
            writes: Vec::new(),
            pointers: vec![None; records.len()],
            entries: Vec::new(),
        })
    }

    fn collect(&self, _: &GcCtx<'_>, _: Option<u32>) -> Result<Option<GcOutcome>> {
        Ok(None)
    }

    fn headroom(&self, _: usize) -> f64 {
        f64::INFINITY
    }

    fn keep_collecting(&self, _: &GcOutcome) -> bool {
        false
    }

    fn gc_attempts_max(&self) -> u32 {
        0
    }

    fn reclaim(&self, _: Option<u64>) -> Reclaimed {
        Reclaimed::default()
    }

    fn space(&self) -> Space {
        Space::default()
    }

    fn record_offset(&self, _: &Pointer) -> Option<u64> {
        None
    }

    fn check_spans(&self) -> Vec<CheckSpan> {
        Vec::new()
    }

    fn pointer_problem(&self, _: &[u8], _: &Pointer) -> Option<String> {
        Some("a pointer in a store that keeps values inline".into())
    }
}
