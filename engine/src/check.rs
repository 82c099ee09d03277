//! The consistency check behind `hashkv fsck`: every record's checksum, the segment
//! table against the records, and every index location against the record it points
//! to. It holds the GC and commit locks for its whole run, so what it reads does not
//! move: writers that need a flush wait until it finishes.
//!
//! Damage is collected, not returned as the first error, so one run reports all of it
//! (up to `DAMAGE_REPORTED_MAX` descriptions; `damage_count` counts every one). Device
//! and index I/O errors end the check with an error.

use crate::db::Inner;
use crate::error::{Error, Result};
use crate::groups::append::group_of;
use crate::keys;
use crate::location::{self, Location, Pointer};
use crate::record::SegmentRecords;
use crate::store::ValueStore;
use hashkv_blockdev::AlignedBuf;
use std::ops::Bound;

/// Descriptions of damage kept in a report; more are only counted.
pub const DAMAGE_REPORTED_MAX: usize = 100;
/// Pointers whose records are read with one submission.
const CHECK_READ_BATCH_MAX: usize = 64;

#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// User keys in the index.
    pub keys: u64,
    pub inline_values: u64,
    /// Keys whose value is a record in the value store; each record was read and its
    /// checksum, key and sequence number matched.
    pub pointers: u64,
    /// Records read while walking the value store (live or not), and their bytes.
    pub records_scanned: u64,
    pub record_bytes_scanned: u64,
    pub damage_count: u64,
    pub damage: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.damage_count == 0
    }

    fn damaged(&mut self, what: String) {
        self.damage_count += 1;
        if self.damage.len() < DAMAGE_REPORTED_MAX {
            self.damage.push(what);
        }
    }
}

impl Inner {
    pub(crate) fn check(&self) -> Result<CheckReport> {
        let _no_gc = self.gc_lock.lock();
        let _no_flush = self.commit.lock();
        let mut report = CheckReport::default();
        self.check_value_store(&mut report)?;
        self.check_index(&mut report)?;
        Ok(report)
    }

    /// Reads every byte the value store counts as written and decodes its records.
    fn check_value_store(&self, report: &mut CheckReport) -> Result<()> {
        let block = self.layout.block_bytes as usize;
        // (what, device offset of the first block, bytes to read, parse from, parse to,
        // group the records must belong to)
        type Span = (String, u64, usize, usize, usize, Option<u32>);
        let mut spans: Vec<Span> = Vec::new();
        let aligned = |n: u64| n.div_ceil(block as u64) * block as u64;
        match &self.store {
            ValueStore::Groups(t) => {
                let t = t.lock();
                for (g, group) in t.groups.iter().enumerate() {
                    for seg in group.chain.iter().filter(|s| s.used_bytes > 0) {
                        spans.push((
                            format!("group {g} segment {}", seg.id),
                            self.layout.segment_offset(seg.id),
                            aligned(seg.used_bytes) as usize,
                            0,
                            seg.used_bytes as usize,
                            Some(g as u32),
                        ));
                    }
                }
            }
            ValueStore::Log(l) => {
                let l = l.lock();
                let mut at = l.tail;
                while at < l.head {
                    let end = ((at / l.chunk_bytes + 1) * l.chunk_bytes).min(l.head);
                    let first = at - at % block as u64;
                    spans.push((
                        format!("value log at position {at}"),
                        l.device_offset(first),
                        (aligned(end) - first) as usize,
                        (at - first) as usize,
                        (end - first) as usize,
                        None,
                    ));
                    at = end;
                }
            }
            ValueStore::Inline => {}
        }
        for (what, offset, len, from, to, group) in spans {
            let mut buf = AlignedBuf::new(len.max(block));
            self.device.read_at(offset, &mut buf[..len])?;
            for item in SegmentRecords::new_at(&buf[..to], from, block) {
                match item {
                    Ok((at, rec)) => {
                        report.records_scanned += 1;
                        report.record_bytes_scanned += rec.encoded_len() as u64;
                        if let Some(g) = group {
                            let owner = group_of(rec.key, self.layout.group_count);
                            if owner != g {
                                report.damaged(format!(
                                    "{what} offset {at}: record of key {:?} belongs to group {owner}",
                                    String::from_utf8_lossy(rec.key)
                                ));
                            }
                        }
                    }
                    Err(e) => report.damaged(format!("{what}: {e}")),
                }
            }
        }
        Ok(())
    }

    /// Walks every index entry: metadata entries decode, user entries decode, and each
    /// pointer names a record in its key's group (or the log's live window) that reads
    /// back with the key and sequence number the index names.
    fn check_index(&self, report: &mut CheckReport) -> Result<()> {
        if let Some(entry) = self.lsm.get(&keys::seq_key())? {
            if entry.len() != 8 {
                report.damaged("index: sequence entry has the wrong size".into());
            }
        }
        let lower = [keys::USER];
        let upper = [keys::USER + 1];
        let mut batch: Vec<(Vec<u8>, Pointer)> = Vec::new();
        for item in self.lsm.range(
            Bound::Included(&lower[..]),
            Bound::Excluded(&upper[..]),
            hashkv_lsm::Direction::Forward,
            None,
        )? {
            let (k, v) = item?;
            let key = k[1..].to_vec();
            report.keys += 1;
            match location::decode(&v) {
                Ok(Location::Inline(_)) => report.inline_values += 1,
                Ok(Location::Pointer(p)) => {
                    if let Some(problem) = self.pointer_problem(&key, &p) {
                        report.damaged(problem);
                        continue;
                    }
                    batch.push((key, p));
                    if batch.len() == CHECK_READ_BATCH_MAX {
                        self.check_records(&mut batch, report)?;
                    }
                }
                Err(e) => report.damaged(format!(
                    "index entry of key {:?}: {e}",
                    String::from_utf8_lossy(&key)
                )),
            }
        }
        self.check_records(&mut batch, report)
    }

    /// Why `p` cannot be where `key`'s record lies, if it cannot.
    fn pointer_problem(&self, key: &[u8], p: &Pointer) -> Option<String> {
        let name = String::from_utf8_lossy(key);
        let at = match self.pointer_offset(p) {
            Ok(at) => at,
            Err(e) => return Some(format!("key {name:?}: {e}")),
        };
        match &self.store {
            ValueStore::Groups(t) => {
                let g = group_of(key, self.layout.group_count);
                let t = t.lock();
                let seg = t.groups[g as usize]
                    .chain
                    .iter()
                    .find(|s| s.id == p.segment);
                match seg {
                    None => Some(format!(
                        "key {name:?}: points into segment {} outside its group {g}'s chain",
                        p.segment
                    )),
                    Some(s) if u64::from(p.offset) + u64::from(p.record_bytes) > s.used_bytes => {
                        Some(format!(
                            "key {name:?}: points past the written part of segment {}",
                            p.segment
                        ))
                    }
                    Some(_) => None,
                }
            }
            ValueStore::Log(l) => {
                let l = l.lock();
                // Distance from the tail, going forward around the region.
                let x = at - l.region_offset;
                let from_tail = (x + l.region_bytes - l.tail % l.region_bytes) % l.region_bytes;
                let live = from_tail + u64::from(p.record_bytes) <= l.head - l.tail;
                (!live).then(|| format!("key {name:?}: points outside the value log's live part"))
            }
            ValueStore::Inline => Some(format!(
                "key {name:?}: a pointer in a store that keeps values inline"
            )),
        }
    }

    /// Reads the records of a batch of pointers at once and checks each.
    fn check_records(
        &self,
        batch: &mut Vec<(Vec<u8>, Pointer)>,
        report: &mut CheckReport,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let reads = self.read_records(batch.iter().map(|(_, p)| p))?;
        for ((key, p), (span, buf)) in batch.iter().zip(&reads) {
            match Inner::decode_value(&buf[span.2..span.1], p, key) {
                Ok(_) => report.pointers += 1,
                Err(e @ (Error::Corruption { .. } | Error::ChecksumMismatch { .. })) => report
                    .damaged(format!(
                        "damaged record of key {:?}: {e}",
                        String::from_utf8_lossy(key)
                    )),
                Err(e) => return Err(e),
            }
        }
        batch.clear();
        Ok(())
    }
}
