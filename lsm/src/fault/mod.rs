//! [`FaultFs`]: an in-memory file system for tests that loses what was not synced at a
//! simulated crash and returns errors where a test asks for them. Built with the cargo
//! feature `fault-injection`.
//!
//! ```
//! use std::path::Path;
//! use std::sync::Arc;
//! use hashkv_lsm::fault::{FaultFs, Op};
//! use hashkv_lsm::{Db, Options, WriteOptions};
//!
//! let fs = Arc::new(FaultFs::new(42)); // the seed decides what crashes keep
//! let options = Options { fs: fs.clone(), ..Options::default() };
//! let db = Db::open(Path::new("/db"), options.clone())?; // paths are virtual
//! db.put(b"k", b"durable", &WriteOptions { sync: true })?;
//! db.put(b"k", b"not yet", &WriteOptions::default())?;
//! fs.fail_after(Op::Sync, 0, libc::EIO); // the next sync fails, once
//! assert!(db.sync_wal().is_err()); // ... and poisons the tree
//! fs.crash(); // keep what was synced (plus seeded torn tails); calls fail from now
//! db.crash_for_test(); // the process dies too
//! fs.restart(); // a new boot: calls work again on what the crash kept
//! let db = Db::open(Path::new("/db"), options)?;
//! assert_eq!(db.get(b"k")?.as_deref(), Some(&b"durable"[..]));
//! # Ok::<(), hashkv_lsm::LsmError>(())
//! ```
//!
//! Another crate's tests (the engine's) use it by enabling the feature in their
//! dev-dependencies, `hashkv-lsm = { workspace = true, features = ["fault-injection"] }`,
//! and putting the FaultFs in the tree's `Options::fs`. Everything the tree does goes
//! through it; files the caller touches with `std::fs` do not. To crash the index
//! together with something else (a simulated value device), crash both between the
//! same two calls, then drop the tree with `Db::crash_for_test` before `restart`.
//! [`FaultFs::set_capacity_bytes`] fills the file system; [`FaultFs::inject`] aims a
//! fault at one kind of call on one kind of file ([`Site`]); [`FaultFs::calls`]
//! counts the calls per site, so a sweep can fail each of them in turn
//! (lsm/tests/faults.rs does).
//!
//! What a crash keeps (seeded, see [`FaultFs::crash`]):
//! - per directory, its entries as of the last `sync_dir` plus a random prefix of the
//!   creates, renames and removes made since (in order, as a metadata journal would);
//! - per file, its data as of the last `sync_data`/`sync_all` plus a random prefix of
//!   what was appended since, whose last part is zeros one crash in four; a file cut
//!   by `set_len` since its last sync comes back whole in its synced or its new form;
//! - what a failed sync should have written is lost even if a later sync succeeds
//!   (reads still see it until the crash), as on Linux, which marks the pages clean
//!   after a failed writeback.
//!
//! Directories themselves (`create_dir_all`, which makes missing parents too) are
//! durable at once, and `remove_dir_all` is durable at once: the tree's directory is
//! made before the tree and removed only by `destroy`. Paths are taken as given: use
//! the same spelling for the same directory.

mod image;
mod rng;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::files::{parse_name, FileKind};
use crate::fs::{EntryKind, Fs, FsFile, FsLock, IfExists};
use image::{fail_sync, sync_content, Dir, Image, Inode};
use rng::SplitMix64;

/// The kinds of call a fault can be aimed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    CreateDir,
    Stat,
    List,
    Create,
    Open,
    /// A whole-file read or a positional read.
    Read,
    /// An append.
    Write,
    SetLen,
    /// `sync_data` or `sync_all` of a file.
    Sync,
    Rename,
    Remove,
    RemoveDir,
    SyncDir,
    Lock,
    /// `drop_cache` of a file: advice that changes nothing the file holds, so the tree
    /// must shrug off its failure.
    Advise,
}

/// What a path is to the tree, from its name; faults and call counts are kept per
/// (op, class).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileClass {
    Wal,
    Table,
    Manifest,
    Current,
    CurrentTmp,
    Lock,
    /// A directory (list, sync, create, remove).
    Dir,
    /// Anything else, such as another user's files in the same directory.
    Other,
}

impl FileClass {
    fn of_file(path: &Path) -> FileClass {
        let name = path.file_name().map(|n| n.to_string_lossy());
        match name.as_deref().and_then(parse_name) {
            Some(FileKind::Wal(_)) => FileClass::Wal,
            Some(FileKind::Table(_) | FileKind::TableTmp(_)) => FileClass::Table,
            Some(FileKind::Manifest(_)) => FileClass::Manifest,
            Some(FileKind::Current) => FileClass::Current,
            Some(FileKind::CurrentTmp) => FileClass::CurrentTmp,
            Some(FileKind::Lock) => FileClass::Lock,
            None => FileClass::Other,
        }
    }
}

/// A place a call can fail: the kind of call and the kind of file it is made on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Site {
    pub op: Op,
    pub class: FileClass,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} on {:?}", self.op, self.class)
    }
}

/// An armed fault: the calls matching `op` (and `class`, if given) fail with `errno`
/// after `skip` of them have passed, `times` times in a row.
#[derive(Clone, Debug)]
pub struct Fault {
    pub op: Op,
    /// None: calls on any file.
    pub class: Option<FileClass>,
    pub skip: u64,
    pub errno: i32,
    pub times: u64,
}

/// A fault that fired: where, on which path, with which errno.
#[derive(Clone, Debug)]
pub struct Fired {
    pub site: Site,
    pub path: PathBuf,
    pub errno: i32,
}

struct State {
    image: Image,
    /// Bumped by every crash: handles from before it belong to a dead process.
    generation: u64,
    /// Crashed and not yet restarted: every call fails.
    down: bool,
    rng: SplitMix64,
    faults: Vec<Fault>,
    fired: Vec<Fired>,
    calls: BTreeMap<Site, u64>,
    capacity_bytes: Option<u64>,
    /// Calls left before a crash armed by `crash_after_calls`.
    crash_countdown: Option<u64>,
    crash_reports: Vec<String>,
    /// Held locks: path -> id of the guard holding it.
    locks: HashMap<PathBuf, u64>,
    lock_ids: u64,
    /// The last calls made, when tracing is on (`trace_calls`).
    trace: Option<VecDeque<String>>,
}

/// Calls kept by the trace: enough to see the operations before a failure.
const TRACE_CALLS_MAX: usize = 4096;

/// The simulated file system. Share it through `Arc`: the tree gets it as its
/// `Options::fs`, the test keeps a clone to arm faults and crash.
pub struct FaultFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for FaultFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.lock();
        f.debug_struct("FaultFs")
            .field("generation", &s.generation)
            .field("down", &s.down)
            .field("faults", &s.faults)
            .finish_non_exhaustive()
    }
}

fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} does not exist", path.display()),
    )
}

fn split(path: &Path) -> io::Result<(&Path, String)> {
    match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => Ok((d, n.to_string_lossy().into_owned())),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file in a directory", path.display()),
        )),
    }
}

impl FaultFs {
    /// An empty file system; `seed` decides what each crash keeps.
    pub fn new(seed: u64) -> FaultFs {
        FaultFs {
            state: Arc::new(Mutex::new(State {
                image: Image::new(),
                generation: 0,
                down: false,
                rng: SplitMix64::new(seed),
                faults: Vec::new(),
                fired: Vec::new(),
                calls: BTreeMap::new(),
                capacity_bytes: None,
                crash_countdown: None,
                crash_reports: Vec::new(),
                locks: HashMap::new(),
                lock_ids: 0,
                trace: None,
            })),
        }
    }

    /// The `n`-th call of `op` from now (0: the next one), on any file, fails with
    /// `errno`, once.
    pub fn fail_after(&self, op: Op, n: u64, errno: i32) {
        self.inject(Fault {
            op,
            class: None,
            skip: n,
            errno,
            times: 1,
        });
    }

    /// Arms `fault`, besides those armed already.
    pub fn inject(&self, fault: Fault) {
        self.state.lock().faults.push(fault);
    }

    /// Disarms every fault, the capacity limit and an armed crash.
    pub fn clear_faults(&self) {
        let mut s = self.state.lock();
        s.faults.clear();
        s.capacity_bytes = None;
        s.crash_countdown = None;
    }

    /// The faults that fired so far, in order (ENOSPC from the capacity limit too).
    pub fn fired(&self) -> Vec<Fired> {
        self.state.lock().fired.clone()
    }

    /// Appends that would take the bytes held by all files past `capacity` write what
    /// fits and fail with ENOSPC. None: no limit.
    pub fn set_capacity_bytes(&self, capacity: Option<u64>) {
        self.state.lock().capacity_bytes = capacity;
    }

    /// Bytes held by all files, linked or still open.
    pub fn used_bytes(&self) -> u64 {
        self.state.lock().image.used_bytes.load(Ordering::Relaxed)
    }

    /// Calls made so far per site (failed ones included), since creation or the last
    /// `reset_calls`.
    pub fn calls(&self) -> BTreeMap<Site, u64> {
        self.state.lock().calls.clone()
    }

    pub fn reset_calls(&self) {
        self.state.lock().calls.clear();
    }

    /// Crashes the machine now: the image becomes what survives (see the module
    /// documentation), and every call fails with EIO until [`FaultFs::restart`], as the
    /// process that made them is dead. Returns what the crash kept, for a failure message.
    pub fn crash(&self) -> String {
        let mut s = self.state.lock();
        crash_locked(&mut s);
        s.crash_reports.last().cloned().unwrap_or_default()
    }

    /// The `n`-th call from now (0: the next one), of any kind, crashes the machine as
    /// [`FaultFs::crash`] does, before it takes effect, and fails.
    pub fn crash_after_calls(&self, n: u64) {
        self.state.lock().crash_countdown = Some(n);
    }

    /// Appends `data` to the file at `path` without counting the call or letting a
    /// fault fail it: a test's own damage (a torn record written by no one).
    pub fn append_raw(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut s = self.state.lock();
        let inode = s.inode(path)?;
        let mut c = inode.content.lock();
        inode.change(&mut c, |d| d.extend_from_slice(data));
        Ok(())
    }

    /// Starts (or stops) keeping the last calls made, for a failure message.
    pub fn trace_calls(&self, on: bool) {
        self.state.lock().trace = on.then(VecDeque::new);
    }

    /// The last calls made (at most 4096), oldest first: generation, site, path and
    /// the outcome.
    pub fn traced_calls(&self) -> Vec<String> {
        let s = self.state.lock();
        s.trace.iter().flatten().cloned().collect()
    }

    /// Whether a crash happened and no restart yet.
    pub fn is_down(&self) -> bool {
        self.state.lock().down
    }

    /// What the crashes so far kept, one report each.
    pub fn crash_reports(&self) -> Vec<String> {
        self.state.lock().crash_reports.clone()
    }

    /// Boots the machine again after a crash: calls work on the crashed image, handles
    /// opened before the crash keep failing, faults are disarmed. Call it once every
    /// user of the crashed image (the `Db` and its threads) is gone.
    pub fn restart(&self) {
        let mut s = self.state.lock();
        s.down = false;
        s.faults.clear();
        s.capacity_bytes = None;
        s.crash_countdown = None;
    }

    /// Checks whether the call may proceed: counts it, fails it if the machine is
    /// down, a crash is due, or an armed fault matches.
    fn enter(s: &mut State, op: Op, class: FileClass, path: &Path) -> io::Result<()> {
        let r = Self::admit(s, op, class, path);
        if let Some(t) = &mut s.trace {
            if t.len() == TRACE_CALLS_MAX {
                t.pop_front();
            }
            let outcome = match &r {
                Ok(()) => "ok".to_string(),
                Err(e) => e.to_string(),
            };
            t.push_back(format!(
                "gen {} {op:?} {} -> {outcome}",
                s.generation,
                path.display()
            ));
        }
        r
    }

    fn admit(s: &mut State, op: Op, class: FileClass, path: &Path) -> io::Result<()> {
        if s.down {
            return Err(err(libc::EIO));
        }
        let site = Site { op, class };
        *s.calls.entry(site).or_insert(0) += 1;
        if let Some(n) = s.crash_countdown {
            if n == 0 {
                crash_locked(s);
                return Err(err(libc::EIO));
            }
            s.crash_countdown = Some(n - 1);
        }
        // Every armed fault counts the call; the first one due fires.
        let mut errno = None;
        for f in s.faults.iter_mut() {
            if f.op != op || f.class.is_some_and(|c| c != class) {
                continue;
            }
            if f.skip > 0 {
                f.skip -= 1;
            } else if f.times > 0 && errno.is_none() {
                f.times -= 1;
                errno = Some(f.errno);
            }
        }
        if let Some(errno) = errno {
            s.fired.push(Fired {
                site,
                path: path.to_path_buf(),
                errno,
            });
            return Err(err(errno));
        }
        Ok(())
    }

    fn enter_file(&self, op: Op, path: &Path) -> io::Result<parking_lot::MutexGuard<'_, State>> {
        let mut s = self.state.lock();
        Self::enter(&mut s, op, FileClass::of_file(path), path)?;
        Ok(s)
    }

    fn enter_dir(&self, op: Op, dir: &Path) -> io::Result<parking_lot::MutexGuard<'_, State>> {
        let mut s = self.state.lock();
        Self::enter(&mut s, op, FileClass::Dir, dir)?;
        Ok(s)
    }

    fn handle(&self, s: &State, path: &Path, inode: Arc<Inode>, writable: bool) -> Arc<dyn FsFile> {
        Arc::new(FaultFile {
            state: self.state.clone(),
            path: path.to_path_buf(),
            generation: s.generation,
            writable,
            inode,
        })
    }
}

/// Takes the crash image; see [`FaultFs::crash`].
fn crash_locked(s: &mut State) {
    let mut report = String::new();
    let image = s.image.crashed(&mut s.rng, &mut report);
    s.image = image;
    s.generation += 1;
    s.down = true;
    s.crash_countdown = None;
    s.locks.clear();
    s.crash_reports.push(report);
}

impl State {
    fn dir(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        self.image.dirs.get_mut(dir).ok_or_else(|| not_found(dir))
    }

    fn inode(&mut self, path: &Path) -> io::Result<Arc<Inode>> {
        let (dir, name) = split(path)?;
        self.dir(dir)?
            .live
            .get(&name)
            .cloned()
            .ok_or_else(|| not_found(path))
    }
}

impl Fs for FaultFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.enter_dir(Op::CreateDir, dir)?;
        // Its missing parents too, as `mkdir -p` does, so they can be listed and
        // synced (a caller that creates a directory syncs its parent).
        for d in dir.ancestors().filter(|d| !d.as_os_str().is_empty()) {
            s.image.dirs.entry(d.to_path_buf()).or_default();
        }
        Ok(())
    }

    fn entry_kind(&self, path: &Path) -> io::Result<EntryKind> {
        let mut s = self.state.lock();
        let class = if s.image.dirs.contains_key(path) {
            FileClass::Dir
        } else {
            FileClass::of_file(path)
        };
        Self::enter(&mut s, Op::Stat, class, path)?;
        if s.image.dirs.contains_key(path) {
            return Ok(EntryKind::Dir);
        }
        Ok(match s.inode(path) {
            Ok(_) => EntryKind::File,
            Err(_) => EntryKind::Missing,
        })
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut s = self.enter_dir(Op::List, dir)?;
        Ok(s.dir(dir)?.live.keys().cloned().collect())
    }

    fn create(&self, path: &Path, if_exists: IfExists) -> io::Result<Arc<dyn FsFile>> {
        let mut s = self.enter_file(Op::Create, path)?;
        let (dir, name) = split(path)?;
        let existing = s.dir(dir)?.live.get(&name).cloned();
        let inode = match (existing, if_exists) {
            (Some(_), IfExists::Fail) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ))
            }
            (Some(ino), IfExists::Truncate) => {
                let mut c = ino.content.lock();
                ino.change(&mut c, |d| d.clear());
                drop(c);
                ino
            }
            (None, _) => {
                let ino = s.image.new_inode();
                s.dir(dir)?.link(&name, ino.clone());
                ino
            }
        };
        Ok(self.handle(&s, path, inode, true))
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Arc<dyn FsFile>> {
        let mut s = self.enter_file(Op::Open, path)?;
        let inode = s.inode(path)?;
        Ok(self.handle(&s, path, inode, writable))
    }

    /// There is no page cache here: the same as a read-only `open`.
    fn open_uncached(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        self.open(path, false)
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut s = self.enter_file(Op::Read, path)?;
        let inode = s.inode(path)?;
        let data = inode.content.lock().data.clone();
        Ok(data)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.enter_file(Op::Rename, to)?;
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        if from_dir != to_dir {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "FaultFs renames only within one directory",
            ));
        }
        let d = s.dir(from_dir)?;
        if !d.live.contains_key(&from_name) {
            return Err(not_found(from));
        }
        d.rename(&from_name, &to_name);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.enter_file(Op::Remove, path)?;
        let (dir, name) = split(path)?;
        let d = s.dir(dir)?;
        if !d.live.contains_key(&name) {
            return Err(not_found(path));
        }
        d.unlink(&name);
        Ok(())
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.enter_dir(Op::RemoveDir, dir)?;
        if s.image.dirs.remove(dir).is_none() {
            return Err(not_found(dir));
        }
        s.image.dirs.retain(|p, _| !p.starts_with(dir));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.enter_dir(Op::SyncDir, dir)?;
        s.dir(dir)?.sync();
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn FsLock>> {
        let mut s = self.enter_file(Op::Lock, path)?;
        let (dir, name) = split(path)?;
        if !s.dir(dir)?.live.contains_key(&name) {
            let ino = s.image.new_inode();
            s.dir(dir)?.link(&name, ino);
        }
        if s.locks.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked", path.display()),
            ));
        }
        s.lock_ids += 1;
        let id = s.lock_ids;
        s.locks.insert(path.to_path_buf(), id);
        Ok(Box::new(FaultLock {
            state: self.state.clone(),
            path: path.to_path_buf(),
            id,
        }))
    }
}

struct FaultLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    id: u64,
}

impl FsLock for FaultLock {}

impl Drop for FaultLock {
    fn drop(&mut self) {
        let mut s = self.state.lock();
        // A crash released the lock already; a later holder's lock is not ours.
        if s.locks.get(&self.path) == Some(&self.id) {
            s.locks.remove(&self.path);
        }
    }
}

/// An open file of a [`FaultFs`]; it fails once its machine has crashed.
struct FaultFile {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    generation: u64,
    /// Opened for writing (created, or opened writable), as the OS would check.
    writable: bool,
    inode: Arc<Inode>,
}

impl fmt::Debug for FaultFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultFile({})", self.path.display())
    }
}

impl FaultFile {
    fn enter(&self, op: Op) -> io::Result<parking_lot::MutexGuard<'_, State>> {
        if matches!(op, Op::Write | Op::SetLen) && !self.writable {
            return Err(err(libc::EBADF));
        }
        let mut s = self.state.lock();
        if s.generation != self.generation {
            // Opened before a crash, by a process that is dead now.
            return Err(err(libc::EIO));
        }
        FaultFs::enter(&mut s, op, FileClass::of_file(&self.path), &self.path)?;
        Ok(s)
    }
}

impl FsFile for FaultFile {
    fn append(&self, data: &[u8]) -> io::Result<()> {
        let mut s = self.enter(Op::Write)?;
        let used = s.image.used_bytes.load(Ordering::Relaxed);
        let room = s.capacity_bytes.map(|c| c.saturating_sub(used) as usize);
        let fits = room.map_or(data.len(), |r| r.min(data.len()));
        let mut c = self.inode.content.lock();
        self.inode
            .change(&mut c, |d| d.extend_from_slice(&data[..fits]));
        if fits < data.len() {
            s.fired.push(Fired {
                site: Site {
                    op: Op::Write,
                    class: FileClass::of_file(&self.path),
                },
                path: self.path.clone(),
                errno: libc::ENOSPC,
            });
            return Err(err(libc::ENOSPC));
        }
        Ok(())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let _s = self.enter(Op::Read)?;
        let c = self.inode.content.lock();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start
            .checked_add(buf.len())
            .and_then(|end| c.data.get(start..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {offset} past the end ({} bytes) of {}",
                    buf.len(),
                    c.data.len(),
                    self.path.display()
                ),
            )),
        }
    }

    fn len_bytes(&self) -> io::Result<u64> {
        let _s = self.enter(Op::Stat)?;
        let n = self.inode.content.lock().data.len() as u64;
        Ok(n)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let _s = self.enter(Op::SetLen)?;
        let mut c = self.inode.content.lock();
        let len = usize::try_from(len).map_err(|_| err(libc::EFBIG))?;
        self.inode.change(&mut c, |d| d.resize(len, 0));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        match self.enter(Op::Sync) {
            Ok(_s) => {
                sync_content(&mut self.inode.content.lock());
                Ok(())
            }
            Err(e) => {
                fail_sync(&mut self.inode.content.lock());
                Err(e)
            }
        }
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    /// Counted (and failed where a fault says so); changes nothing.
    fn drop_cache(&self, _offset: u64, _len_bytes: u64) -> io::Result<()> {
        self.enter(Op::Advise).map(|_| ())
    }
}
