//! Running a compaction: merge the inputs, keep what a reader can still see, write
//! tables of the target size to the output level.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::Compaction;
use crate::error::{LsmError, Result};
use crate::ikey::{self, Kind};
use crate::iter::{InternalIter, LevelIter, MergeIter};
use crate::options::Options;
use crate::stats::Counters;
use crate::table::builder::{TableBuilder, TableInfo};
use crate::table::iter::TableIter;
use crate::table::open_files::TableCaches;
use crate::table::reader::ReadFor;
use crate::version::{FileMeta, Version};

/// Entries between checks of the shutdown flag, so close() does not wait for a long
/// compaction to finish.
const SHUTDOWN_CHECK_ENTRIES: u64 = 4096;

pub(crate) struct Env<'a> {
    pub dir: &'a Path,
    pub options: &'a Options,
    pub next_file: &'a AtomicU64,
    pub cache: &'a Arc<TableCaches>,
    pub counters: &'a Arc<Counters>,
    pub shutdown: &'a AtomicBool,
}

/// Writes the merged output tables. `smallest_snapshot` is the oldest sequence any
/// reader may read at: of the versions at or below it only the newest is kept, and
/// that one too if it is a tombstone with nothing older beneath the output level.
pub(crate) fn run(
    env: &Env,
    c: &Compaction,
    version: &Version,
    smallest_snapshot: u64,
) -> Result<Vec<Arc<FileMeta>>> {
    let mut sources: Vec<Box<dyn InternalIter>> = Vec::new();
    if c.level == 0 {
        for f in &c.inputs {
            sources.push(Box::new(TableIter::new(
                f.reader.clone(),
                true,
                None,
                ReadFor::Compaction,
            )));
        }
    } else {
        sources.push(Box::new(LevelIter::new(
            c.inputs.clone(),
            true,
            None,
            ReadFor::Compaction,
        )));
    }
    if !c.next_inputs.is_empty() {
        sources.push(Box::new(LevelIter::new(
            c.next_inputs.clone(),
            true,
            None,
            ReadFor::Compaction,
        )));
    }
    let mut merge = MergeIter::new(sources, true);
    let out_level = c.output_level();

    let mut outputs: Vec<TableInfo> = Vec::new();
    let mut builder: Option<TableBuilder> = None;
    let mut last_user_key: Option<Vec<u8>> = None;
    let mut shadowed = false;
    let mut entries = 0u64;
    let result = (|| -> Result<()> {
        while let Some(e) = merge.next_entry() {
            let (k, v) = e?;
            entries += 1;
            if entries.is_multiple_of(SHUTDOWN_CHECK_ENTRIES)
                && env.shutdown.load(Ordering::Relaxed)
            {
                return Err(LsmError::Closed);
            }
            let uk = ikey::user_key(&k);
            let new_user_key = last_user_key.as_deref() != Some(uk);
            if new_user_key {
                last_user_key = Some(uk.to_vec());
                shadowed = false;
            }
            if shadowed {
                continue;
            }
            if ikey::seq(&k) <= smallest_snapshot {
                // Every reader sees this version or a newer one: older ones are dead.
                shadowed = true;
                if ikey::kind(&k) == Kind::Delete && version.is_base_level_for(out_level, uk) {
                    continue;
                }
            }
            // Cut only between user keys, so a key never spans two tables of a level.
            if new_user_key {
                if let Some(b) = &builder {
                    if b.estimated_bytes() >= env.options.table_target_bytes {
                        outputs.push(builder.take().expect("some").finish()?);
                    }
                }
            }
            if builder.is_none() {
                let number = env.next_file.fetch_add(1, Ordering::SeqCst);
                builder = Some(TableBuilder::create(
                    &env.cache.fs,
                    env.dir,
                    number,
                    env.options.block_bytes,
                    env.options.bloom_bits_per_key,
                )?);
            }
            builder.as_mut().expect("some").add(&k, &v)?;
        }
        if let Some(b) = builder.take() {
            outputs.push(b.finish()?);
        }
        Ok(())
    })();
    if let Err(e) = result {
        if let Some(b) = builder.take() {
            b.abandon();
        }
        for o in &outputs {
            let _ = env
                .cache
                .fs
                .remove_file(&env.dir.join(crate::files::table_name(o.number)));
        }
        return Err(e);
    }
    crate::files::sync_dir(&*env.cache.fs, env.dir)?;
    let mut metas = Vec::with_capacity(outputs.len());
    for o in outputs {
        crate::stats::add(
            &env.counters.compaction_bytes_written[out_level],
            o.file_bytes,
        );
        metas.push(FileMeta::open(
            env.dir,
            o.number,
            o.smallest,
            o.largest,
            env.cache,
            env.counters,
        )?);
    }
    Ok(metas)
}
