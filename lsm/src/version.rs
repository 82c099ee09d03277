//! Versions: the set of live tables per level, immutable once built and shared by
//! readers through `Arc`. A table file is deleted when the last version (or iterator)
//! holding its `FileMeta` goes away after an edit has removed it.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use crate::error::{LsmError, Result};
use crate::ikey::{self, Kind};
use crate::manifest::edit::AddedTable;
use crate::manifest::log::{set_current, ManifestWriter};
use crate::manifest::VersionEdit;
use crate::stats::{add, Counters};
use crate::table::open_files::TableCaches;
use crate::table::reader::{Probe, TableReader};

/// Levels of the tree: L0 (overlapping flushed tables) and L1..L6 (each sorted and
/// non-overlapping). With a size ratio of 10 and 256 MiB at L1, L6 holds ~25 TiB.
pub const LEVELS: usize = 7;

pub(crate) struct FileMeta {
    pub number: u64,
    pub file_bytes: u64,
    pub smallest: Vec<u8>,
    pub largest: Vec<u8>,
    pub reader: Arc<TableReader>,
    /// Set once a synced manifest edit has removed the table: the file goes when the
    /// last holder drops this.
    obsolete: AtomicBool,
    path: PathBuf,
    cache: Arc<TableCaches>,
}

impl FileMeta {
    pub fn open(
        dir: &Path,
        number: u64,
        smallest: Vec<u8>,
        largest: Vec<u8>,
        cache: &Arc<TableCaches>,
        counters: &Arc<Counters>,
    ) -> Result<Arc<FileMeta>> {
        let path = dir.join(crate::files::table_name(number));
        let reader = Arc::new(TableReader::open(
            &path,
            number,
            cache.clone(),
            counters.clone(),
        )?);
        Ok(Arc::new(FileMeta {
            number,
            file_bytes: reader.file_bytes,
            smallest,
            largest,
            reader,
            obsolete: AtomicBool::new(false),
            path,
            cache: cache.clone(),
        }))
    }

    pub fn smallest_user(&self) -> &[u8] {
        ikey::user_key(&self.smallest)
    }

    pub fn largest_user(&self) -> &[u8] {
        ikey::user_key(&self.largest)
    }

    /// Whether the table's user-key range meets [begin, end] (None = unbounded).
    pub fn overlaps(&self, begin: Option<&[u8]>, end: Option<&[u8]>) -> bool {
        begin.is_none_or(|b| self.largest_user() >= b)
            && end.is_none_or(|e| self.smallest_user() <= e)
    }

    pub fn added(&self, level: usize) -> AddedTable {
        AddedTable {
            level,
            number: self.number,
            file_bytes: self.file_bytes,
            smallest: self.smallest.clone(),
            largest: self.largest.clone(),
        }
    }
}

impl Drop for FileMeta {
    fn drop(&mut self) {
        if self.obsolete.load(AtomicOrdering::Acquire) {
            // Failure only leaks a file that the next open deletes as an orphan.
            let _ = self.cache.fs.remove_file(&self.path);
            self.cache.blocks.evict_table(self.number);
            self.cache.files.remove(self.number);
        }
    }
}

#[derive(Clone)]
pub(crate) struct Version {
    /// L0 newest first (by file number: flushes run in sequence order); other levels
    /// sorted by smallest key.
    pub levels: Vec<Vec<Arc<FileMeta>>>,
}

impl Version {
    pub fn empty() -> Version {
        Version {
            levels: vec![Vec::new(); LEVELS],
        }
    }

    pub fn level_bytes(&self, level: usize) -> u64 {
        self.levels[level].iter().map(|f| f.file_bytes).sum()
    }

    /// The newest version of `user_key` with sequence <= seq, tombstones included.
    pub fn get(&self, user_key: &[u8], seq: u64) -> Result<Option<(Kind, Vec<u8>)>> {
        let seek = ikey::seek_key(user_key, seq);
        let hash = crate::table::filter::hash(user_key);
        for f in self.candidates(user_key, &seek) {
            if let Some((k, v)) = f.reader.get(&seek, hash)? {
                return Ok(Some((ikey::kind(&k), v)));
            }
        }
        Ok(None)
    }

    /// The tables a get of `user_key` (at `seek`, its `ikey::seek_key`) looks in, in
    /// the order it looks: the L0 tables whose range holds it, newest first, then the
    /// one table of each deeper level whose range may.
    fn candidates<'v>(
        &'v self,
        user_key: &'v [u8],
        seek: &'v [u8],
    ) -> impl Iterator<Item = &'v Arc<FileMeta>> + 'v {
        let l0 = self.levels[0]
            .iter()
            .filter(move |f| f.smallest_user() <= user_key && user_key <= f.largest_user());
        let deeper = self.levels[1..].iter().filter_map(move |files| {
            let i = files.partition_point(|f| ikey::compare(&f.largest, seek) == Ordering::Less);
            files.get(i).filter(|f| f.smallest_user() <= user_key)
        });
        l0.chain(deeper)
    }

    /// The first block a get of `user_key` would read that is not cached, with its
    /// table; `None` when the get needs no read (every candidate table ruled out, or
    /// the key found in a cached block).
    pub fn first_uncached_block(
        &self,
        user_key: &[u8],
        seq: u64,
    ) -> Option<(Arc<TableReader>, usize)> {
        let seek = ikey::seek_key(user_key, seq);
        let hash = crate::table::filter::hash(user_key);
        for f in self.candidates(user_key, &seek) {
            match f.reader.probe(&seek, hash) {
                Probe::Absent => continue,
                Probe::Found => return None,
                Probe::Uncached(i) => return Some((f.reader.clone(), i)),
            }
        }
        None
    }

    pub fn overlapping(
        &self,
        level: usize,
        begin: Option<&[u8]>,
        end: Option<&[u8]>,
    ) -> Vec<Arc<FileMeta>> {
        self.levels[level]
            .iter()
            .filter(|f| f.overlaps(begin, end))
            .cloned()
            .collect()
    }

    /// True if no level deeper than `level` holds a table whose range covers
    /// `user_key`: a tombstone for it written to `level` shadows nothing and can go.
    pub fn is_base_level_for(&self, level: usize, user_key: &[u8]) -> bool {
        self.levels[level + 1..].iter().all(|files| {
            let i = files.partition_point(|f| f.largest_user() < user_key);
            files.get(i).is_none_or(|f| f.smallest_user() > user_key)
        })
    }

    fn snapshot_added(&self) -> Vec<AddedTable> {
        let mut out = Vec::new();
        for (level, files) in self.levels.iter().enumerate() {
            out.extend(files.iter().map(|f| f.added(level)));
        }
        out
    }
}

/// The current version and the manifest that makes it durable. Guarded by one mutex:
/// edits are applied one at a time.
pub(crate) struct VersionSet {
    pub dir: PathBuf,
    pub current: Arc<Version>,
    manifest: ManifestWriter,
    pub log_number: u64,
    pub last_sequence: u64,
    pub next_file: Arc<AtomicU64>,
    counters: Arc<Counters>,
    /// The error of the first edit that failed; no edit is made after it.
    failed: Option<String>,
    /// `Options::manifest_bytes_max`.
    manifest_bytes_max: u64,
}

impl VersionSet {
    pub fn new(
        dir: PathBuf,
        current: Version,
        manifest: ManifestWriter,
        log_number: u64,
        last_sequence: u64,
        next_file: Arc<AtomicU64>,
        counters: Arc<Counters>,
    ) -> VersionSet {
        VersionSet {
            dir,
            current: Arc::new(current),
            manifest,
            log_number,
            last_sequence,
            next_file,
            counters,
            failed: None,
            manifest_bytes_max: crate::options::MANIFEST_BYTES_MAX_DEFAULT,
        }
    }

    /// Rewrites the manifest as one snapshot edit once it grows past `bytes`.
    pub fn with_manifest_bytes_max(mut self, bytes: u64) -> VersionSet {
        self.manifest_bytes_max = bytes;
        self
    }

    pub fn snapshot_edit(
        version: &Version,
        log_number: u64,
        last_sequence: u64,
        next_file: u64,
    ) -> VersionEdit {
        VersionEdit {
            log_number: Some(log_number),
            next_file_number: Some(next_file),
            last_sequence: Some(last_sequence),
            deleted: Vec::new(),
            added: version.snapshot_added(),
        }
    }

    /// Makes `edit` durable and installs the resulting version. `added` holds the opened
    /// tables named by `edit.added` (same order). After a failure every later call
    /// fails too: the manifest may end in a damaged record (or, after a failed sync,
    /// one the disk lost) that nothing may follow, and an edit computed without the
    /// failed one could contradict it.
    pub fn apply(&mut self, edit: VersionEdit, added: Vec<Arc<FileMeta>>) -> Result<Arc<Version>> {
        if let Some(cause) = &self.failed {
            return Err(LsmError::Poisoned {
                cause: cause.clone(),
            });
        }
        let r = self.apply_durably(edit, added);
        if let Err(e) = &r {
            self.failed = Some(e.to_string());
        }
        r
    }

    fn apply_durably(
        &mut self,
        mut edit: VersionEdit,
        added: Vec<Arc<FileMeta>>,
    ) -> Result<Arc<Version>> {
        debug_assert_eq!(edit.added.len(), added.len());
        // Taken over only once the edit is durable: an edit that failed must not lend
        // its log number to a later one (that would retire a WAL whose table it lost).
        let log_number = edit
            .log_number
            .map_or(self.log_number, |l| self.log_number.max(l));
        let last_sequence = edit
            .last_sequence
            .map_or(self.last_sequence, |s| self.last_sequence.max(s));
        edit.log_number = Some(log_number);
        edit.last_sequence = Some(last_sequence);
        edit.next_file_number = Some(self.next_file.load(AtomicOrdering::SeqCst));
        let (v, removed) = self.next_version(&edit, &added);

        let n = self.manifest.append(&edit)?;
        add(&self.counters.manifest_bytes_written, n);
        self.log_number = log_number;
        self.last_sequence = last_sequence;
        if self.manifest.file_bytes > self.manifest_bytes_max {
            self.rewrite_manifest(&v)?;
        }
        for f in removed {
            if !added.iter().any(|a| a.number == f.number) {
                f.obsolete.store(true, AtomicOrdering::Release);
            }
        }
        self.current = Arc::new(v);
        Ok(self.current.clone())
    }

    /// The current version changed by `edit`, and the tables it removes.
    fn next_version(
        &self,
        edit: &VersionEdit,
        added: &[Arc<FileMeta>],
    ) -> (Version, Vec<Arc<FileMeta>>) {
        let mut v = (*self.current).clone();
        let mut removed = Vec::new();
        for &(level, number) in &edit.deleted {
            let pos = v.levels[level].iter().position(|f| f.number == number);
            let f = v.levels[level].remove(pos.expect("deleted table is in the current version"));
            removed.push(f);
        }
        for (a, f) in edit.added.iter().zip(added) {
            v.levels[a.level].push(f.clone());
        }
        v.levels[0].sort_by_key(|f| std::cmp::Reverse(f.number));
        for files in &mut v.levels[1..] {
            files.sort_by(|a, b| ikey::compare(&a.smallest, &b.smallest));
        }
        for files in &v.levels[1..] {
            for w in files.windows(2) {
                assert!(
                    w[0].largest_user() < w[1].smallest_user(),
                    "tables overlap within a level"
                );
            }
        }
        (v, removed)
    }

    fn rewrite_manifest(&mut self, v: &Version) -> Result<()> {
        let number = self.next_file.fetch_add(1, AtomicOrdering::SeqCst);
        let snap = Self::snapshot_edit(v, self.log_number, self.last_sequence, number + 1);
        let fs = self.manifest.fs.clone();
        let m = ManifestWriter::create(&fs, &self.dir, number, &snap)?;
        add(&self.counters.manifest_bytes_written, m.file_bytes);
        // The new manifest's name must be durable before CURRENT names it.
        crate::files::sync_dir(&*fs, &self.dir)?;
        set_current(&*fs, &self.dir, number)?;
        let old = std::mem::replace(&mut self.manifest, m);
        // Left behind, it is deleted by the next open (CURRENT names the new one).
        let _ = fs.remove_file(&old.path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{Fault, FaultFs, FileClass, Op};
    use crate::fs::Fs;
    use crate::manifest::log::read_manifest;

    /// A version set on a FaultFs whose manifest holds one snapshot edit.
    fn version_set(fs: &Arc<FaultFs>) -> VersionSet {
        let dir = PathBuf::from("/v");
        fs.create_dir_all(&dir).unwrap();
        let dyn_fs: Arc<dyn Fs> = fs.clone();
        let snap = VersionSet::snapshot_edit(&Version::empty(), 1, 10, 3);
        let m = ManifestWriter::create(&dyn_fs, &dir, 2, &snap).unwrap();
        dyn_fs.sync_dir(&dir).unwrap();
        let next_file = Arc::new(AtomicU64::new(3));
        VersionSet::new(
            dir,
            Version::empty(),
            m,
            1,
            10,
            next_file,
            Default::default(),
        )
    }

    fn log_edit(log_number: u64) -> VersionEdit {
        VersionEdit {
            log_number: Some(log_number),
            ..Default::default()
        }
    }

    #[test]
    fn after_a_failed_edit_no_edit_is_made_and_its_log_number_is_not_taken() {
        let fs = Arc::new(FaultFs::new(7));
        let mut vs = version_set(&fs);
        vs.apply(log_edit(4), Vec::new()).unwrap();
        fs.inject(Fault {
            op: Op::Sync,
            class: Some(FileClass::Manifest),
            skip: 0,
            errno: libc::EIO,
            times: 1,
        });
        assert!(vs.apply(log_edit(9), Vec::new()).is_err());
        assert_eq!(vs.log_number, 4, "the failed edit's log number was taken");
        let e = vs.apply(log_edit(5), Vec::new()).err().expect("refused");
        assert!(matches!(e, LsmError::Poisoned { .. }), "{e}");
        // The failed sync's record is lost on disk, and nothing follows it: the
        // manifest still reads, up to the last good edit.
        fs.crash();
        fs.restart();
        let edits = read_manifest(&*fs, Path::new("/v/MANIFEST-000002")).unwrap();
        assert_eq!(edits.last().unwrap().log_number, Some(4));
    }
}
