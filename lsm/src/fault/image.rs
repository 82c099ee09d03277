//! The in-memory file system image of [`super::FaultFs`]: directories whose entries
//! are durable only after a directory sync, and files whose data is durable only after
//! a file sync; and the image a crash leaves behind.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::rng::SplitMix64;

/// A file's data: what handles see, and what survives a crash.
pub(super) struct Content {
    pub data: Vec<u8>,
    /// The data as of the last sync.
    pub durable: Vec<u8>,
    /// `durable` is no longer a prefix of `data` (a truncation below it since the last
    /// sync): a crash leaves one or the other whole, never a mix.
    pub diverged: bool,
    /// Bytes a failed sync should have written: the next sync that succeeds leaves
    /// them zero on disk (Linux marks pages clean after a failed writeback, so a later
    /// fsync succeeds without writing them), while reads still see them until a crash.
    pub lost: Option<std::ops::Range<usize>>,
}

/// A file, shared by the names that link it (live and durable) and its open handles;
/// its bytes count against the image's capacity while it exists.
pub(super) struct Inode {
    pub content: Mutex<Content>,
    used_bytes: Arc<AtomicU64>,
}

impl Inode {
    fn new(data: Vec<u8>, used_bytes: &Arc<AtomicU64>) -> Arc<Inode> {
        used_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        Arc::new(Inode {
            content: Mutex::new(Content {
                durable: data.clone(),
                data,
                diverged: false,
                lost: None,
            }),
            used_bytes: used_bytes.clone(),
        })
    }

    /// Changes the data through `change` (not yet durable), keeping the image's byte
    /// count right.
    pub fn change(&self, c: &mut Content, change: impl FnOnce(&mut Vec<u8>)) {
        let before = c.data.len() as u64;
        change(&mut c.data);
        let after = c.data.len() as u64;
        if after >= before {
            self.used_bytes.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.used_bytes.fetch_sub(before - after, Ordering::Relaxed);
        }
        if c.data.len() < c.durable.len() {
            c.diverged = true;
        }
        // Cut bytes are gone from the page cache too: a failed sync cannot lose them.
        if let Some(lost) = &mut c.lost {
            lost.end = lost.end.min(c.data.len());
            if lost.start >= lost.end {
                c.lost = None;
            }
        }
    }
}

impl Drop for Inode {
    fn drop(&mut self) {
        let n = self.content.get_mut().data.len() as u64;
        self.used_bytes.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Makes `c.data` durable.
pub(super) fn sync_content(c: &mut Content) {
    if c.diverged {
        c.durable = c.data.clone();
        c.diverged = false;
    } else {
        // Appends since the last sync: copy only them, so a WAL synced after every
        // record costs linear time, not quadratic.
        let from = c.durable.len();
        c.durable.truncate(from.min(c.data.len()));
        let from = c.durable.len();
        c.durable.extend_from_slice(&c.data[from..]);
    }
    if let Some(lost) = c.lost.take() {
        let end = lost.end.min(c.durable.len());
        if lost.start < end {
            c.durable[lost.start..end].fill(0);
        }
    }
}

/// A sync failed: what it should have written is lost (see `Content::lost`).
pub(super) fn fail_sync(c: &mut Content) {
    if c.diverged {
        return;
    }
    let from = c.durable.len();
    let start = c.lost.as_ref().map_or(from, |l| l.start.min(from));
    c.lost = Some(start..c.data.len());
}

/// A change to a directory's entries not yet made durable by a directory sync.
#[derive(Clone)]
enum DirOp {
    Link(String, Arc<Inode>),
    Unlink(String),
    Rename(String, String),
}

#[derive(Default)]
pub(super) struct Dir {
    pub live: BTreeMap<String, Arc<Inode>>,
    durable: BTreeMap<String, Arc<Inode>>,
    /// In the order they were made; a crash keeps a prefix of them (file systems that
    /// journal metadata commit it in order; POSIX promises nothing without a sync).
    pending: Vec<DirOp>,
}

fn apply(entries: &mut BTreeMap<String, Arc<Inode>>, op: &DirOp) {
    match op {
        DirOp::Link(name, ino) => {
            entries.insert(name.clone(), ino.clone());
        }
        DirOp::Unlink(name) => {
            entries.remove(name);
        }
        DirOp::Rename(from, to) => {
            if let Some(ino) = entries.remove(from) {
                entries.insert(to.clone(), ino);
            }
        }
    }
}

impl Dir {
    pub fn link(&mut self, name: &str, ino: Arc<Inode>) {
        let op = DirOp::Link(name.to_string(), ino);
        apply(&mut self.live, &op);
        self.pending.push(op);
    }

    pub fn unlink(&mut self, name: &str) {
        let op = DirOp::Unlink(name.to_string());
        apply(&mut self.live, &op);
        self.pending.push(op);
    }

    pub fn rename(&mut self, from: &str, to: &str) {
        let op = DirOp::Rename(from.to_string(), to.to_string());
        apply(&mut self.live, &op);
        self.pending.push(op);
    }

    pub fn sync(&mut self) {
        self.durable = self.live.clone();
        self.pending.clear();
    }
}

/// The directories and files of one run of the simulated machine.
pub(super) struct Image {
    pub dirs: HashMap<PathBuf, Dir>,
    pub used_bytes: Arc<AtomicU64>,
}

impl Image {
    pub fn new() -> Image {
        Image {
            dirs: HashMap::new(),
            used_bytes: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn new_inode(&self) -> Arc<Inode> {
        Inode::new(Vec::new(), &self.used_bytes)
    }

    /// The image a crash leaves: per directory the durable entries plus a random
    /// prefix of the later changes; per file its durable data plus a random prefix of
    /// what was appended since, possibly torn. Describes what it kept in `report`.
    pub fn crashed(&self, rng: &mut SplitMix64, report: &mut String) -> Image {
        let used_bytes = Arc::new(AtomicU64::new(0));
        let mut dirs = HashMap::new();
        let mut paths: Vec<&PathBuf> = self.dirs.keys().collect();
        paths.sort();
        for path in paths {
            let dir = &self.dirs[path];
            let kept = rng.below(dir.pending.len() as u64 + 1) as usize;
            let mut entries = dir.durable.clone();
            for op in &dir.pending[..kept] {
                apply(&mut entries, op);
            }
            let _ = writeln!(
                report,
                "{}: kept {kept} of {} unsynced directory changes",
                path.display(),
                dir.pending.len()
            );
            let mut out = Dir::default();
            for (name, ino) in entries {
                let data = crashed_data(&ino.content.lock(), rng, &path.join(&name), report);
                out.live.insert(name, Inode::new(data, &used_bytes));
            }
            out.durable = out.live.clone();
            dirs.insert(path.clone(), out);
        }
        Image { dirs, used_bytes }
    }
}

fn crashed_data(c: &Content, rng: &mut SplitMix64, path: &Path, report: &mut String) -> Vec<u8> {
    if c.diverged {
        let keep_new = rng.below(2) == 1;
        let _ = writeln!(
            report,
            "{}: truncated since its last sync; kept the {} content",
            path.display(),
            if keep_new { "new" } else { "synced" }
        );
        return if keep_new {
            c.data.clone()
        } else {
            c.durable.clone()
        };
    }
    // Not diverged: the durable data is no longer than the data, and differs from its
    // prefix only where a failed sync lost bytes.
    let synced = c.durable.len();
    let unsynced = c.data.len() - synced;
    let mut out = c.durable.clone();
    if unsynced == 0 {
        return out;
    }
    let kept = rng.below(unsynced as u64 + 1) as usize;
    out.extend_from_slice(&c.data[synced..synced + kept]);
    if let Some(lost) = &c.lost {
        // A failed sync's bytes never reach the disk, even if later appends do.
        let end = lost.end.min(out.len());
        if lost.start < end {
            out[lost.start..end].fill(0);
        }
    }
    // One crash in four leaves the last part of what it kept as zeros: the file's size
    // reached the disk, its data did not.
    let mut zeroed = 0;
    if rng.below(4) == 0 && kept > 0 {
        zeroed = 1 + rng.below(kept as u64) as usize;
        let len = out.len();
        out[len - zeroed..].fill(0);
    }
    let _ = writeln!(
        report,
        "{}: {synced} synced bytes, kept {kept} of {unsynced} unsynced ({zeroed} of them zeroed)",
        path.display()
    );
    out
}
