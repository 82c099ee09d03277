//! Opening a directory: deciding whether it may be opened, locking it, and rebuilding
//! the tree from CURRENT, the manifest and the WALs; and `destroy`.
//!
//! Recovery reads and validates everything before it writes anything, so a refused
//! open leaves the directory as it was: [`read_manifest_state`] and [`replay_wals`]
//! only read. Then [`cut_torn_tail`], [`table_from_replay`], [`write_fresh_manifest`]
//! and [`remove_obsolete`] change the directory, in that order (see lsm/DESIGN.md,
//! Crash points).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::background::write_memtable;
use crate::error::{LsmError, Result};
use crate::files::{self, FileKind};
use crate::fs::{EntryKind, Fs, FsLock, RealFs};
use crate::ikey;
use crate::manifest::edit::AddedTable;
use crate::manifest::log::{read_current, read_manifest, set_current, ManifestWriter};
use crate::memtable::Memtable;
use crate::options::Options;
use crate::stats::{add, Counters};
use crate::table::open_files::TableCaches;
use crate::version::{FileMeta, Version, VersionSet};
use crate::wal::writer::WalWriter;

/// No file has number 0: it names no WAL, for the memtable that recovery rebuilds
/// (which goes straight to a table), and as a manifest's log number it covers every WAL.
const NO_WAL_NUMBER: u64 = 0;
/// The first file number of a new tree: the first one that is not [`NO_WAL_NUMBER`].
const FILE_NUMBER_FIRST: u64 = NO_WAL_NUMBER + 1;

/// What `inspect_dir` found: whether a tree exists there.
pub(super) struct Found {
    exists: bool,
}

/// Decides, before touching anything, whether `dir` may be opened.
pub(super) fn inspect_dir(dir: &Path, options: &Options) -> Result<Found> {
    let fs = &*options.fs;
    let kind = fs
        .entry_kind(dir)
        .map_err(|e| LsmError::io(format!("inspecting {}", dir.display()), e))?;
    match kind {
        EntryKind::Missing => {
            if !options.create_if_missing {
                return Err(LsmError::NotFound {
                    dir: dir.to_path_buf(),
                });
            }
            fs.create_dir_all(dir)
                .map_err(|e| LsmError::io(format!("creating directory {}", dir.display()), e))?;
            return Ok(Found { exists: false });
        }
        EntryKind::File => {
            return Err(LsmError::NotAnLsmDirectory {
                dir: dir.to_path_buf(),
                found: "a file, not a directory".into(),
            })
        }
        EntryKind::Dir => {}
    }
    let names = list_dir(fs, dir)?;
    let exists = names.iter().any(|n| n == files::CURRENT);
    if !exists {
        // Only our own files may be here: those of a create that crashed before CURRENT.
        if let Some(other) = names.iter().find(|n| files::parse_name(n).is_none()) {
            return Err(LsmError::NotAnLsmDirectory {
                dir: dir.to_path_buf(),
                found: format!(
                    "{other:?}, which is not a file of an LSM tree, and no CURRENT file"
                ),
            });
        }
        if !options.create_if_missing {
            return Err(LsmError::NotFound {
                dir: dir.to_path_buf(),
            });
        }
    } else if options.error_if_exists {
        return Err(LsmError::AlreadyExists {
            dir: dir.to_path_buf(),
        });
    }
    Ok(Found { exists })
}

fn list_dir(fs: &dyn Fs, dir: &Path) -> Result<Vec<String>> {
    let mut names = fs
        .list(dir)
        .map_err(|e| LsmError::io(format!("listing {}", dir.display()), e))?;
    names.sort();
    Ok(names)
}

/// Removes `dir` and everything in it, as a forced re-format does, but refuses with
/// `LsmError::Locked` (and removes nothing) while a `Db` in this or another process
/// holds it open. A directory that does not exist is fine.
pub fn destroy(dir: &Path) -> Result<()> {
    destroy_on(&RealFs, dir)
}

/// [`destroy`] on the file system `fs` (the one given as `Options::fs` to the tree).
pub fn destroy_on(fs: &dyn Fs, dir: &Path) -> Result<()> {
    let kind = fs
        .entry_kind(dir)
        .map_err(|e| LsmError::io(format!("inspecting {}", dir.display()), e))?;
    if kind == EntryKind::Missing {
        return Ok(());
    }
    // Held until everything is gone, so no opener can slip in between.
    let _lock = lock_dir(fs, dir)?;
    fs.remove_dir_all(dir)
        .map_err(|e| LsmError::io(format!("removing {}", dir.display()), e))
}

pub(super) fn lock_dir(fs: &dyn Fs, dir: &Path) -> Result<Box<dyn FsLock>> {
    let path = dir.join(files::LOCK);
    fs.lock(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            LsmError::Locked {
                dir: dir.to_path_buf(),
            }
        } else {
            LsmError::io(format!("locking {}", path.display()), e)
        }
    })
}

/// The tree as recovery hands it to `Db::open`.
pub(super) struct Recovered {
    pub(super) versions: VersionSet,
    pub(super) wal: WalWriter,
    pub(super) wal_number: u64,
    pub(super) last_seq: u64,
    pub(super) next_file: Arc<AtomicU64>,
}

/// The state the manifest names, before any WAL is replayed.
struct ManifestState {
    version: Version,
    /// WALs numbered below this are in tables already.
    log_number: u64,
    last_seq: u64,
    /// The next file number to hand out.
    next_file: u64,
}

impl ManifestState {
    /// A tree with no manifest yet.
    fn empty() -> ManifestState {
        ManifestState {
            version: Version::empty(),
            log_number: NO_WAL_NUMBER,
            last_seq: 0,
            next_file: FILE_NUMBER_FIRST,
        }
    }
}

/// A WAL whose tail did not replay: its records end at `valid_bytes`.
struct TornWal {
    path: PathBuf,
    valid_bytes: u64,
}

/// What replaying the WALs gave.
struct ReplayedWals {
    mem: Memtable,
    /// The highest sequence of a replayed write (0 if none).
    seq_max: u64,
    torn: Option<TornWal>,
}

/// The new WAL and manifest recovery made; CURRENT names the manifest.
struct FreshState {
    wal: WalWriter,
    wal_number: u64,
    manifest: ManifestWriter,
    manifest_number: u64,
}

/// Rebuilds the tree from CURRENT, the manifest and the WALs. Everything is read and
/// validated before anything is written, so a refused open leaves the directory as it
/// was. Then: the replayed WAL contents go to an L0 table, a fresh manifest with the
/// whole state replaces the old one, and obsolete files are deleted.
pub(super) fn recover(
    dir: &Path,
    options: &Options,
    found: &Found,
    cache: &Arc<TableCaches>,
    counters: &Arc<Counters>,
) -> Result<Recovered> {
    let mut state = if found.exists {
        read_manifest_state(dir, cache, counters)?
    } else {
        ManifestState::empty()
    };
    let fs = &options.fs;
    let names = list_dir(&**fs, dir)?;
    state.next_file = next_file_past(&names, state.next_file);
    let replayed = replay_wals(&**fs, dir, &names, found.exists, state.log_number)?;
    let last_seq = state.last_seq.max(replayed.seq_max);

    // From here on the directory changes.
    if let Some(torn) = &replayed.torn {
        cut_torn_tail(&**fs, torn)?;
    }
    let next_file = Arc::new(AtomicU64::new(state.next_file));
    let mut version = state.version;
    if let Some(f) = table_from_replay(dir, options, &replayed.mem, &next_file, cache, counters)? {
        version.levels[0].insert(0, f);
    }
    let fresh = write_fresh_manifest(fs, dir, &version, last_seq, &next_file, counters)?;
    remove_obsolete(&**fs, dir, &names, &version, &fresh)?;
    let versions = VersionSet::new(
        dir.to_path_buf(),
        version,
        fresh.manifest,
        fresh.wal_number,
        last_seq,
        next_file.clone(),
        counters.clone(),
    )
    .with_manifest_bytes_max(options.manifest_bytes_max);
    Ok(Recovered {
        versions,
        wal: fresh.wal,
        wal_number: fresh.wal_number,
        last_seq,
        next_file,
    })
}

/// Reads CURRENT and the manifest it names, and opens every table the manifest's edits
/// leave live. Writes nothing. Guarantees: L0 is ordered newest first and deeper levels
/// by smallest key, as a `Version` must be.
fn read_manifest_state(
    dir: &Path,
    cache: &Arc<TableCaches>,
    counters: &Arc<Counters>,
) -> Result<ManifestState> {
    let fs = &*cache.fs;
    let m = read_current(fs, dir)?;
    let edits = read_manifest(fs, &dir.join(files::manifest_name(m)))?;
    let mut state = ManifestState::empty();
    // Live tables by number: the last edit that adds or deletes one decides.
    let mut tables: BTreeMap<u64, AddedTable> = BTreeMap::new();
    for e in edits {
        if let Some(l) = e.log_number {
            state.log_number = l;
        }
        if let Some(n) = e.next_file_number {
            state.next_file = n;
        }
        if let Some(s) = e.last_sequence {
            state.last_seq = s;
        }
        for (_, n) in e.deleted {
            tables.remove(&n);
        }
        for a in e.added {
            tables.insert(a.number, a);
        }
    }
    for a in tables.into_values() {
        let level = a.level;
        let f = FileMeta::open(dir, a.number, a.smallest, a.largest, cache, counters)?;
        state.version.levels[level].push(f);
    }
    state.version.levels[0].sort_by_key(|f| std::cmp::Reverse(f.number));
    for files in &mut state.version.levels[1..] {
        files.sort_by(|a, b| ikey::compare(&a.smallest, &b.smallest));
    }
    Ok(state)
}

/// `next_file`, raised past the number of every file of ours in the directory, so that
/// no number in use (an orphan table, a WAL the manifest has not seen) is handed out.
fn next_file_past(names: &[String], next_file: u64) -> u64 {
    let mut next_file = next_file;
    for n in names {
        if let Some(
            FileKind::Wal(x) | FileKind::Table(x) | FileKind::Manifest(x) | FileKind::TableTmp(x),
        ) = files::parse_name(n)
        {
            next_file = next_file.max(x + 1);
        }
    }
    next_file
}

/// Replays, in number order, every WAL at or above `log_number` (none when the tree
/// does not exist yet) into one memtable. Writes nothing. Guarantees: the memtable holds
/// a prefix of the writes; only the last WAL with records may have a torn tail, which is
/// returned to be cut; damage followed by records in a later WAL is `Corruption`.
fn replay_wals(
    fs: &dyn Fs,
    dir: &Path,
    names: &[String],
    tree_exists: bool,
    log_number: u64,
) -> Result<ReplayedWals> {
    let mut wals: Vec<u64> = names
        .iter()
        .filter_map(|n| match files::parse_name(n) {
            Some(FileKind::Wal(x)) if tree_exists && x >= log_number => Some(x),
            _ => None,
        })
        .collect();
    wals.sort();
    let mem = Memtable::new(NO_WAL_NUMBER);
    let mut seq_max = 0;
    let mut torn: Option<TornWal> = None;
    for &w in &wals {
        let path = dir.join(files::wal_name(w));
        let r = crate::wal::reader::replay(fs, &path, |first_seq, _count, each| {
            let mut seq = first_seq;
            let mut mem_writer = mem.writer();
            each(&mut |e| {
                mem_writer.insert(e.key, seq, e.kind, e.value);
                seq += 1;
            });
        })?;
        if let Some(earlier) = &torn {
            // A WAL is synced before the next one gets records, so only the last WAL
            // with records may have a torn tail: damage earlier is corruption, and
            // replaying past it would not be a prefix of the writes.
            if r.seq_max > 0 {
                return Err(LsmError::Corruption {
                    file: earlier.path.clone(),
                    offset: earlier.valid_bytes,
                    what: format!("damaged record followed by records in {}", path.display()),
                });
            }
        }
        if r.valid_bytes < r.file_bytes {
            torn = Some(TornWal {
                path,
                valid_bytes: r.valid_bytes,
            });
        }
        seq_max = seq_max.max(r.seq_max);
    }
    Ok(ReplayedWals { mem, seq_max, torn })
}

/// Cuts a torn WAL back to its valid records and syncs it. Guarantees: even if this
/// open fails later, the next one replays the same records.
fn cut_torn_tail(fs: &dyn Fs, torn: &TornWal) -> Result<()> {
    let path = &torn.path;
    let f = fs
        .open(path, true)
        .map_err(|e| LsmError::io(format!("opening {}", path.display()), e))?;
    f.set_len(torn.valid_bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| LsmError::io(format!("truncating {}", path.display()), e))
}

/// Writes the replayed memtable to a new table for L0, unless it is empty. Guarantees:
/// the table is complete and synced (the directory is synced by the manifest step);
/// until a manifest names it, it is an orphan that the next open deletes.
fn table_from_replay(
    dir: &Path,
    options: &Options,
    mem: &Memtable,
    next_file: &AtomicU64,
    cache: &Arc<TableCaches>,
    counters: &Arc<Counters>,
) -> Result<Option<Arc<FileMeta>>> {
    if mem.is_empty() {
        return Ok(None);
    }
    let number = next_file.fetch_add(1, Ordering::SeqCst);
    let info = write_memtable(dir, options, number, mem)?;
    add(&counters.flush_bytes_written, info.file_bytes);
    let f = FileMeta::open(dir, number, info.smallest, info.largest, cache, counters)?;
    Ok(Some(f))
}

/// Starts a new WAL and a new manifest holding the whole of `version`, syncs the
/// directory and points CURRENT at the manifest. Guarantees: once this returns, the
/// recovered state is durable without any of the old WALs or manifests.
fn write_fresh_manifest(
    fs: &Arc<dyn Fs>,
    dir: &Path,
    version: &Version,
    last_seq: u64,
    next_file: &AtomicU64,
    counters: &Arc<Counters>,
) -> Result<FreshState> {
    let wal_number = next_file.fetch_add(1, Ordering::SeqCst);
    let wal = WalWriter::create(&**fs, dir, wal_number)?;
    let manifest_number = next_file.fetch_add(1, Ordering::SeqCst);
    let snap = VersionSet::snapshot_edit(
        version,
        wal_number,
        last_seq,
        next_file.load(Ordering::SeqCst),
    );
    let manifest = ManifestWriter::create(fs, dir, manifest_number, &snap)?;
    add(&counters.manifest_bytes_written, manifest.file_bytes);
    files::sync_dir(&**fs, dir)?;
    set_current(&**fs, dir, manifest_number)?;
    Ok(FreshState {
        wal,
        wal_number,
        manifest,
        manifest_number,
    })
}

/// Deletes what the fresh manifest does not need: older WALs and manifests, tables no
/// level holds (orphans of a flush or compaction whose edit never made it) and
/// temporary files; then syncs the directory. A file whose removal fails is left for
/// the next open, which finds it obsolete too.
fn remove_obsolete(
    fs: &dyn Fs,
    dir: &Path,
    names: &[String],
    version: &Version,
    fresh: &FreshState,
) -> Result<()> {
    let live: HashSet<u64> = version.levels.iter().flatten().map(|f| f.number).collect();
    for n in names {
        let obsolete = match files::parse_name(n) {
            Some(FileKind::Wal(x)) => x < fresh.wal_number,
            Some(FileKind::Table(x)) => !live.contains(&x),
            Some(FileKind::Manifest(x)) => x != fresh.manifest_number,
            Some(FileKind::TableTmp(_)) | Some(FileKind::CurrentTmp) => true,
            _ => false,
        };
        if obsolete {
            let _ = fs.remove_file(&dir.join(n));
        }
    }
    files::sync_dir(fs, dir)
}
