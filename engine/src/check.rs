//! The consistency check behind `hashkv fsck`: every record's checksum, the segment
//! table against the records, and every index location against the record it points
//! to. It holds the GC and commit locks for its whole run, so what it reads does not
//! move: writers that need a flush wait until it finishes.
//!
//! Damage is collected, not returned as the first error, so one run reports all of it
//! (up to `DAMAGE_REPORTED_MAX` descriptions; `damage_count` counts every one). Device
//! and index I/O errors end the check with an error.

use crate::db::Inner;
use crate::error::Result;
use crate::keys;
use crate::location::{self, Location, Pointer};
use crate::read::check_record;
use crate::spans;
use crate::store::groups::group_of;
use crate::store::CheckSpan;

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
        let _no_gc = self.gc.exclusive();
        let _no_flush = self.committer.lock();
        let mut report = CheckReport::default();
        self.check_value_store(&mut report)?;
        for damage in self.store.check_cross(&self.io())? {
            report.damaged(damage);
        }
        self.check_index(&mut report)?;
        Ok(report)
    }

    /// Reads every byte the value store counts as written and decodes its records;
    /// in the hashkv mode each must lie in its key's group.
    fn check_value_store(&self, report: &mut CheckReport) -> Result<()> {
        for CheckSpan { place, span, group } in self.store.check_spans() {
            let (bufs, _) = spans::read(self.device.as_ref(), &[span])?;
            for item in span.records(&bufs[0]) {
                match item {
                    Ok((at, rec)) => {
                        report.records_scanned += 1;
                        report.record_bytes_scanned += rec.encoded_len() as u64;
                        let Some(g) = group else { continue };
                        let owner = group_of(rec.key, self.layout.group_count);
                        if owner != g {
                            report.damaged(format!(
                                "{place} offset {at}: record of key {:?} belongs to group {owner}",
                                String::from_utf8_lossy(rec.key)
                            ));
                        }
                    }
                    Err(e) => report.damaged(format!("{place}: {e}")),
                }
            }
        }
        Ok(())
    }

    /// Walks every index entry: metadata entries decode, user entries decode, and each
    /// pointer names a record in its key's group (or the log's live window) that reads
    /// back with the key and sequence number the index names.
    fn check_index(&self, report: &mut CheckReport) -> Result<()> {
        if let Some(entry) = self.index.get(&keys::seq_key())? {
            if entry.len() != 8 {
                report.damaged("index: sequence entry has the wrong size".into());
            }
        }
        let mut batch: Vec<(Vec<u8>, Pointer)> = Vec::new();
        for item in self.index.prefix(&[keys::USER])? {
            let (k, v) = item?;
            let key = k[1..].to_vec();
            report.keys += 1;
            match location::decode(&v) {
                Ok(Location::Inline(_)) => report.inline_values += 1,
                Ok(Location::Pointer(p)) => {
                    if let Some(problem) = self.store.pointer_problem(&key, &p) {
                        let name = String::from_utf8_lossy(&key);
                        report.damaged(format!("key {name:?}: {problem}"));
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
            match check_record(span.payload(buf), p, key) {
                Ok(()) => report.pointers += 1,
                Err(e) if e.is_integrity() => report.damaged(format!(
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
