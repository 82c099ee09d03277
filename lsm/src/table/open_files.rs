//! Open table files, bounded: a tree of many tables must not run the process out of
//! file descriptors. Readers keep their index and filter in memory and borrow the file
//! from here for each block read; the least recently used file is closed when the
//! bound is reached and reopened on its next use. Files are opened uncached (O_DIRECT,
//! see `fs`): the block cache is the only cache of their blocks.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{LsmError, Result};
use crate::fs::{Fs, FsFile};

/// An open table file and the tick of its last use.
type OpenFile = (Arc<dyn FsFile>, u64);

pub(crate) struct OpenFiles {
    files: Mutex<HashMap<u64, OpenFile>>,
    tick: AtomicU64,
    files_max: usize,
}

impl OpenFiles {
    pub fn new(files_max: usize) -> OpenFiles {
        OpenFiles {
            files: Mutex::new(HashMap::new()),
            tick: AtomicU64::new(0),
            files_max: files_max.max(1),
        }
    }

    /// The open file of table `number`, opening `path` if it is not open.
    pub fn get(&self, fs: &dyn Fs, number: u64, path: &Path) -> Result<Arc<dyn FsFile>> {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        if let Some((f, t)) = self.files.lock().get_mut(&number) {
            *t = tick;
            return Ok(f.clone());
        }
        let f = fs
            .open_uncached(path)
            .map_err(|e| LsmError::io(format!("opening {}", path.display()), e))?;
        self.insert(number, f.clone(), tick);
        Ok(f)
    }

    pub fn insert(&self, number: u64, file: Arc<dyn FsFile>, tick: u64) {
        let mut files = self.files.lock();
        files.insert(number, (file, tick));
        if files.len() > self.files_max {
            // O(open files), paid only when a file has to be opened at the bound.
            let oldest = files
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(n, _)| *n)
                .expect("non-empty");
            files.remove(&oldest);
        }
    }

    pub fn next_tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed)
    }

    pub fn remove(&self, number: u64) {
        self.files.lock().remove(&number);
    }
}

/// What table readers share: the file system, the block cache and the open files.
pub(crate) struct TableCaches {
    pub fs: Arc<dyn Fs>,
    pub blocks: super::cache::BlockCache,
    pub files: OpenFiles,
}
