//! Background work: the flush thread (frozen memtable -> L0 table, WAL retired) and
//! the compaction threads (pick, run, install), and writing a memtable to a table.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::throttle::RunningL0;
use super::{Inner, WAIT_SLICE};
use crate::compaction::{pick, run, Compaction};
use crate::error::{LsmError, Result};
use crate::files;
use crate::iter::SuperVersion;
use crate::manifest::VersionEdit;
use crate::memtable::Memtable;
use crate::options::Options;
use crate::stats::add;
use crate::table::builder::TableBuilder;
use crate::version::FileMeta;

impl Inner {
    pub(super) fn flush_loop(&self) {
        loop {
            {
                let mut bg = self.bg.lock();
                loop {
                    if self.shutdown.load(Ordering::Acquire)
                        || self.poisoned.load(Ordering::Acquire)
                    {
                        return;
                    }
                    if !self.sv.read().imms.is_empty() {
                        break;
                    }
                    self.bg_cv.wait_for(&mut bg, WAIT_SLICE);
                }
            }
            let r = self.flush_oldest();
            let _ = self.poisoning(r);
            self.bg_cv.notify_all();
        }
    }

    /// Writes the oldest frozen memtable to an L0 table and retires its WAL.
    fn flush_oldest(&self) -> Result<()> {
        let imm = match self.sv.read().imms.last() {
            Some(m) => m.clone(),
            None => return Ok(()),
        };
        let mut added = Vec::new();
        if !imm.is_empty() {
            let number = self.next_file.fetch_add(1, Ordering::SeqCst);
            let info = write_memtable(&self.dir, &self.options, number, &imm)?;
            files::sync_dir(&*self.options.fs, &self.dir)?;
            add(&self.counters.flush_bytes_written, info.file_bytes);
            added.push(FileMeta::open(
                &self.dir,
                number,
                info.smallest,
                info.largest,
                &self.cache,
                &self.counters,
            )?);
        }
        let log_number;
        {
            let mut vs = self.versions.lock();
            let sv = self.sv.read().clone();
            // The oldest WAL still needed is the one of the next memtable to flush: frozen
            // memtables are newest first, so the one before `imm` (the last), else the
            // active one.
            let n = sv.imms.len();
            log_number = if n >= 2 {
                sv.imms[n - 2].wal_number
            } else {
                sv.mem.wal_number
            };
            let edit = VersionEdit {
                log_number: Some(log_number),
                // Not the latest sequence: writes after the rotation live only in a WAL
                // that a crash may tear, and recovery must not claim them.
                last_sequence: Some(imm.seq_max()),
                added: added.iter().map(|f| f.added(0)).collect(),
                ..Default::default()
            };
            let v = vs.apply(edit, added)?;
            let mut sv = self.sv.write();
            let imms = sv
                .imms
                .iter()
                .filter(|m| !Arc::ptr_eq(m, &imm))
                .cloned()
                .collect();
            *sv = Arc::new(SuperVersion {
                mem: sv.mem.clone(),
                imms,
                version: v,
            });
        }
        add(&self.counters.flushes, 1);
        // A WAL left behind is deleted by the next open, which finds it retired.
        let _ = self
            .options
            .fs
            .remove_file(&self.dir.join(files::wal_name(imm.wal_number)));
        Ok(())
    }

    pub(super) fn compaction_loop(&self) {
        loop {
            let c = {
                let mut bg = self.bg.lock();
                loop {
                    if self.shutdown.load(Ordering::Acquire)
                        || self.poisoned.load(Ordering::Acquire)
                    {
                        return;
                    }
                    let v = self.sv.read().version.clone();
                    let picked = {
                        let b = &mut *bg;
                        let c = pick::pick(&self.options, &v, &b.busy_levels);
                        if let Some(c) = &c {
                            b.busy_levels[c.level] = true;
                            b.busy_levels[c.output_level] = true;
                        }
                        c
                    };
                    if let Some(c) = picked {
                        break c;
                    }
                    drop(v);
                    self.bg_cv.wait_for(&mut bg, WAIT_SLICE);
                }
            };
            let r = self.run_compaction(&c, true);
            self.release_levels(&c);
            if let Err(e) = r {
                if !matches!(e, LsmError::Closed) {
                    return;
                }
            }
        }
    }

    pub(super) fn release_levels(&self, c: &Compaction) {
        let mut bg = self.bg.lock();
        bg.busy_levels[c.level] = false;
        bg.busy_levels[c.output_level] = false;
        drop(bg);
        self.bg_cv.notify_all();
    }

    /// Runs a compaction whose levels the caller has marked busy, and installs it.
    pub(super) fn run_compaction(&self, c: &Compaction, allow_trivial_move: bool) -> Result<()> {
        let started = Instant::now();
        let bytes = |files: &[Arc<FileMeta>]| files.iter().map(|f| f.file_bytes).sum::<u64>();
        let input_bytes = bytes(&c.inputs) + bytes(&c.next_inputs);
        let moves = allow_trivial_move && c.is_trivial_move();
        if c.level == 0 && !moves {
            self.throttle.l0_compaction_started(RunningL0 {
                started,
                input_bytes,
                table_bytes: bytes(&c.inputs) / c.inputs.len().max(1) as u64,
            });
        }
        let r = self.compact_and_install(c, allow_trivial_move);
        // A trivial move drains L0 at no cost; counting it would make the estimate
        // jump (its time is still counted as work).
        let l0_bytes = match (c.level, &r) {
            (0, Ok(false)) => bytes(&c.inputs),
            _ => 0,
        };
        self.throttle
            .note_compaction(c.level, l0_bytes, input_bytes, started.elapsed());
        r?;
        add(&self.counters.compactions, 1);
        self.bg_cv.notify_all();
        Ok(())
    }

    /// Compacts (or trivially moves) and installs the new version; true for a move.
    fn compact_and_install(&self, c: &Compaction, allow_trivial_move: bool) -> Result<bool> {
        let out_level = c.output_level();
        let mut edit = VersionEdit::default();
        for f in &c.inputs {
            edit.deleted.push((c.level, f.number));
        }
        for f in &c.next_inputs {
            edit.deleted.push((out_level, f.number));
        }
        let trivial = allow_trivial_move && c.is_trivial_move();
        let outputs = if trivial {
            add(&self.counters.trivial_moves, 1);
            c.inputs.clone()
        } else {
            let smallest_snapshot = {
                // Read under the writer lock: snapshot() registers under it too.
                let _w = self.writer.lock();
                self.snapshots
                    .oldest()
                    .unwrap_or(u64::MAX)
                    .min(self.visible_seq.load(Ordering::Acquire))
            };
            let version = self.sv.read().version.clone();
            let env = run::Env {
                dir: &self.dir,
                options: &self.options,
                next_file: &self.next_file,
                cache: &self.cache,
                counters: &self.counters,
                shutdown: &self.shutdown,
            };
            self.poisoning(run::run(&env, c, &version, smallest_snapshot))?
        };
        edit.added = outputs.iter().map(|f| f.added(out_level)).collect();
        {
            let mut vs = self.versions.lock();
            let v = self.poisoning(vs.apply(edit, outputs))?;
            let mut sv = self.sv.write();
            *sv = Arc::new(SuperVersion {
                mem: sv.mem.clone(),
                imms: sv.imms.clone(),
                version: v,
            });
        }
        Ok(trivial)
    }
}

pub(super) fn write_memtable(
    dir: &Path,
    options: &Options,
    number: u64,
    mem: &Memtable,
) -> Result<crate::table::builder::TableInfo> {
    let mut b = TableBuilder::create(
        &options.fs,
        dir,
        number,
        options.block_bytes,
        options.bloom_bits_per_key,
    )?;
    let mut err = None;
    mem.for_each(|k, v| {
        if err.is_none() {
            if let Err(e) = b.add(k, v) {
                err = Some(e);
            }
        }
    });
    if let Some(e) = err {
        b.abandon();
        return Err(e);
    }
    b.finish()
}
