//! The write path: throttling, one WAL record and the memtable inserts per batch,
//! memtable rotation, and group commit of WAL syncs.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Inner, Writer, IMMUTABLE_MEMTABLES_MAX, WAIT_SLICE};
use crate::error::{LsmError, Result};
use crate::files;
use crate::ikey;
use crate::iter::SuperVersion;
use crate::memtable::Memtable;
use crate::stats::add;
use crate::wal::batch::for_each_entry;
use crate::wal::writer::WalWriter;
use crate::wal::WriteBatch;

impl Inner {
    /// Delays or stops a writer while compaction is behind.
    fn throttle(&self, batch_bytes: usize) -> Result<()> {
        let mut slowed = false;
        let mut stalled = false;
        loop {
            self.check_writable()?;
            let (l0, mem_full) = {
                let sv = self.sv.read();
                (
                    sv.version.levels[0].len(),
                    sv.mem.approx_bytes() >= self.options.memtable_bytes_max
                        && sv.imms.len() >= IMMUTABLE_MEMTABLES_MAX,
                )
            };
            if l0 >= self.options.l0_stop_trigger || mem_full {
                if !stalled {
                    stalled = true;
                    add(&self.counters.write_stalls, 1);
                }
                let mut bg = self.bg.lock();
                self.bg_cv.notify_all();
                self.bg_cv.wait_for(&mut bg, WAIT_SLICE);
                continue;
            }
            if l0 >= self.options.l0_compaction_trigger && !slowed && !stalled {
                slowed = true;
                add(&self.counters.write_slowdowns, 1);
                self.bg_cv.notify_all();
                std::thread::sleep(self.throttle.pace(&self.options, l0, batch_bytes));
                continue;
            }
            return Ok(());
        }
    }

    pub(super) fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        batch.check_limits()?;
        if batch.is_empty() {
            return Ok(());
        }
        self.throttle(batch.rep.len())?;
        let end = {
            let mut w = self.writer.lock();
            self.check_writable()?;
            let first_seq = w.last_seq + 1;
            if first_seq + batch.len() as u64 > ikey::SEQ_MAX {
                return Err(LsmError::corrupt("sequence numbers exhausted"));
            }
            let header = batch.payload_header(first_seq);
            let n = self.poisoning(w.wal.append_parts(&[&header, &batch.rep]))?;
            add(&self.counters.wal_bytes_written, n as u64);
            add(&self.counters.user_bytes_written, batch.rep.len() as u64);
            let mem = self.sv.read().mem.clone();
            let mut seq = first_seq;
            let mut mem_writer = mem.writer();
            for_each_entry(&batch.rep, batch.len(), |e| {
                mem_writer.insert(e.key, seq, e.kind, e.value);
                seq += 1;
            })
            .expect("a batch built by WriteBatch decodes");
            // The batch becomes visible in the memtable here, as one run.
            drop(mem_writer);
            w.last_seq = seq - 1;
            self.visible_seq.store(w.last_seq, Ordering::Release);
            let end = w.wal_base_bytes + w.wal.logical_bytes();
            if mem.approx_bytes() >= self.options.memtable_bytes_max
                && self.sv.read().imms.len() < IMMUTABLE_MEMTABLES_MAX
            {
                // This write is applied either way; a failed switch has poisoned the
                // tree, which later writes (and a sync of this one) will report.
                let _ = self.rotate_memtable(&mut w);
            }
            end
        };
        if sync {
            self.sync_until(end)?;
        }
        Ok(())
    }

    /// Freezes the memtable and starts a new one with a new WAL. The old WAL is synced
    /// first, so every write before the switch is durable: sync writers waiting on it are
    /// served, and flushes never depend on an unsynced WAL.
    pub(super) fn rotate_memtable(&self, w: &mut Writer) -> Result<()> {
        let number = self.next_file.fetch_add(1, Ordering::SeqCst);
        let new_wal = self.poisoning(WalWriter::create(&*self.options.fs, &self.dir, number))?;
        self.poisoning(files::sync_dir(&*self.options.fs, &self.dir))?;
        self.poisoning(w.wal.sync())?;
        add(
            &self.counters.wal_bytes_written,
            crate::wal::record::WAL_HEADER_BYTES as u64,
        );
        let old_end = w.wal_base_bytes + w.wal.logical_bytes();
        w.wal = new_wal;
        w.wal_base_bytes = old_end;
        {
            let mut s = self.sync.lock();
            s.synced_bytes = s.synced_bytes.max(old_end);
        }
        self.sync_cv.notify_all();
        {
            let mut sv = self.sv.write();
            let mut imms = vec![sv.mem.clone()];
            imms.extend(sv.imms.iter().cloned());
            *sv = Arc::new(SuperVersion {
                mem: Arc::new(Memtable::new(number)),
                imms,
                version: sv.version.clone(),
            });
        }
        self.bg_cv.notify_all();
        Ok(())
    }

    /// Group commit: the first writer to find no sync running syncs everything written
    /// so far; writers arriving meanwhile wait and are usually covered by it.
    pub(super) fn sync_until(&self, target: u64) -> Result<()> {
        let mut s = self.sync.lock();
        loop {
            if s.synced_bytes >= target {
                return Ok(());
            }
            self.check_writable()?;
            if s.in_progress {
                self.sync_cv.wait_for(&mut s, WAIT_SLICE);
                continue;
            }
            s.in_progress = true;
            drop(s);
            let r = (|| {
                let (file, end, file_bytes, path) = {
                    let mut w = self.writer.lock();
                    w.wal.flush_buffer()?;
                    (
                        w.wal.file(),
                        w.wal_base_bytes + w.wal.logical_bytes(),
                        w.wal.written_bytes,
                        w.wal.path.clone(),
                    )
                };
                file.sync_data()
                    .map_err(|e| LsmError::io(format!("syncing {}", path.display()), e))?;
                // Synced pages are clean: out of the page cache with them (fs module
                // documentation). Advice: a failure costs only cache space.
                let _ = file.drop_cache(0, file_bytes);
                add(&self.counters.wal_syncs, 1);
                Ok(end)
            })();
            let r = self.poisoning(r);
            s = self.sync.lock();
            s.in_progress = false;
            if let Ok(end) = r {
                s.synced_bytes = s.synced_bytes.max(end);
            }
            self.sync_cv.notify_all();
            r?;
        }
    }
}
