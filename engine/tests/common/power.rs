//! One power supply for the simulated value device and the index's fault-injecting
//! file system, so that a crash stops both at the same instant.
//!
//! The index runs on [`PowerFs`], which passes every call to a [`FaultFs`] after
//! checking the power: once it is cut, calls fail with EIO. The power is cut
//! - by the device: when it freezes (`SimDevice::arm_crash_after_ops`), the next file
//!   call cuts the power before it takes effect;
//! - by the file system: after the number of calls armed with
//!   [`Power::arm_after_fs_calls`], the next call freezes the device and crashes the
//!   file system, then fails;
//! - by the test, with [`Power::cut`].
//!
//! Cutting takes a write lock that every file call holds (shared) while it checks the
//! power and runs, so no call is half done when the file system's crash image is taken;
//! device operations are ordered against the freeze by the device's own lock. Every
//! call and operation therefore lies wholly before or wholly after the instant of the
//! crash. The file system's crash image is taken when the power is cut, and nothing
//! has changed it since the device froze: every later call failed.

use hashkv_blockdev::sim::SimDevice;
use hashkv_lsm::fault::FaultFs;
use hashkv_lsm::fs::{EntryKind, Fs, FsFile, FsLock, IfExists};
use parking_lot::RwLock;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// No crash armed on the file-system side.
const UNARMED: u64 = u64::MAX;

pub struct Power {
    fs: Arc<FaultFs>,
    dev: Arc<SimDevice>,
    /// Held shared by file calls, exclusively by the cut.
    gate: RwLock<()>,
    /// File calls still let through before the cut (`UNARMED`: no limit).
    fs_calls_left: AtomicU64,
    cut: AtomicBool,
}

impl Power {
    pub fn new(fs: Arc<FaultFs>, dev: Arc<SimDevice>) -> Arc<Power> {
        Arc::new(Power {
            fs,
            dev,
            gate: RwLock::new(()),
            fs_calls_left: AtomicU64::new(UNARMED),
            cut: AtomicBool::new(false),
        })
    }

    /// The file system to give the index (`Options::lsm.fs`).
    pub fn fs(self: &Arc<Power>) -> Arc<dyn Fs> {
        Arc::new(PowerFs(self.clone()))
    }

    /// Lets `calls` more file calls through; the one after them cuts the power.
    pub fn arm_after_fs_calls(&self, calls: u64) {
        self.fs_calls_left.store(calls, Ordering::SeqCst);
    }

    /// Freezes the device and crashes the file system, once.
    pub fn cut(&self) {
        let _all_calls_out = self.gate.write();
        if self.cut.swap(true, Ordering::SeqCst) {
            return;
        }
        self.dev.freeze();
        self.fs.crash();
    }

    /// The power is off: cut, or the device froze (the cut follows at the next call).
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst) || self.dev.is_frozen()
    }

    /// Runs `call` if the power is on and this call may still pass; otherwise cuts the
    /// power and fails.
    fn call<T>(&self, call: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        {
            let _running = self.gate.read();
            let passes = self
                .fs_calls_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                    UNARMED => Some(n),
                    0 => None,
                    n => Some(n - 1),
                })
                .is_ok();
            if passes && !self.is_cut() {
                return call();
            }
        }
        self.cut();
        Err(io::Error::from_raw_os_error(libc::EIO))
    }
}

/// The index's file system behind the power switch.
struct PowerFs(Arc<Power>);

impl std::fmt::Debug for PowerFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PowerFs({:?})", self.0.fs)
    }
}

impl PowerFs {
    fn file(&self, inner: Arc<dyn FsFile>) -> Arc<dyn FsFile> {
        Arc::new(PowerFile {
            power: self.0.clone(),
            inner,
        })
    }
}

impl Fs for PowerFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.0.call(|| self.0.fs.create_dir_all(dir))
    }

    fn entry_kind(&self, path: &Path) -> io::Result<EntryKind> {
        self.0.call(|| self.0.fs.entry_kind(path))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.0.call(|| self.0.fs.list(dir))
    }

    fn create(&self, path: &Path, if_exists: IfExists) -> io::Result<Arc<dyn FsFile>> {
        let f = self.0.call(|| self.0.fs.create(path, if_exists))?;
        Ok(self.file(f))
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Arc<dyn FsFile>> {
        let f = self.0.call(|| self.0.fs.open(path, writable))?;
        Ok(self.file(f))
    }

    fn open_uncached(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let f = self.0.call(|| self.0.fs.open_uncached(path))?;
        Ok(self.file(f))
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.0.call(|| self.0.fs.read_file(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.call(|| self.0.fs.rename(from, to))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.0.call(|| self.0.fs.remove_file(path))
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.0.call(|| self.0.fs.remove_dir_all(dir))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.call(|| self.0.fs.sync_dir(dir))
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn FsLock>> {
        self.0.call(|| self.0.fs.lock(path))
    }
}

#[derive(Debug)]
struct PowerFile {
    power: Arc<Power>,
    inner: Arc<dyn FsFile>,
}

impl std::fmt::Debug for Power {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Power")
            .field("cut", &self.cut)
            .finish_non_exhaustive()
    }
}

impl FsFile for PowerFile {
    fn append(&self, data: &[u8]) -> io::Result<()> {
        self.power.call(|| self.inner.append(data))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.power.call(|| self.inner.read_exact_at(buf, offset))
    }

    fn len_bytes(&self) -> io::Result<u64> {
        self.power.call(|| self.inner.len_bytes())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.power.call(|| self.inner.set_len(len))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.power.call(|| self.inner.sync_data())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.power.call(|| self.inner.sync_all())
    }

    fn drop_cache(&self, offset: u64, len_bytes: u64) -> io::Result<()> {
        self.power.call(|| self.inner.drop_cache(offset, len_bytes))
    }
}
