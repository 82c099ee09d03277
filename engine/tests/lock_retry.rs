//! Opening a store whose locks another process holds: an open waits and retries while
//! the lock's owner has exited but its descriptors are still being released (as after
//! a kill -9, when the dead process's io_uring is torn down a few milliseconds late),
//! and fails at once, naming the process, while a live process holds it.
//!
//! The lingering lock is made deterministic with fork: a child takes the lock and
//! exits, and a grandchild that inherited the descriptor keeps it a while longer.

mod common;

use common::{disk_dir, small_options, MIB};
use hashkv::Db;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The tests here run one at a time: a forked child inherits every descriptor of this
/// process until it closes them, so another test reopening a store at that moment
/// would find its own old lock still held.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long the grandchild keeps a dead owner's lock.
const LINGER_MS: u32 = 400;

struct Store {
    _dir: tempfile::TempDir,
    device: PathBuf,
    metadata: PathBuf,
}

fn formatted_store() -> Store {
    let dir = disk_dir();
    let device = dir.path().join("dev.img");
    let metadata = dir.path().join("meta");
    let o = small_options().with_create_device_bytes(Some(8 * MIB));
    let db = Db::format(&[device.clone()], &metadata, &o).unwrap();
    db.put(b"k", b"v").unwrap();
    db.close().unwrap();
    Store {
        _dir: dir,
        device,
        metadata,
    }
}

impl Store {
    fn open(&self) -> hashkv::Result<Db> {
        Db::open(
            std::slice::from_ref(&self.device),
            &self.metadata,
            &small_options(),
        )
    }
}

/// Descriptors a forked child may have: it closes every one above stderr but those it
/// needs, since it inherited the descriptors of every test running in this process
/// (locks of their stores among them), which it must not keep.
const CHILD_FDS_MAX: i32 = 1 << 16;

/// In a forked child: closes every descriptor above stderr except `keep`. Only
/// close(2), which is async-signal-safe.
unsafe fn close_other_fds(keep: &[i32]) {
    for fd in 3..CHILD_FDS_MAX {
        if !keep.contains(&fd) {
            libc::close(fd);
        }
    }
}

/// Takes `flock(LOCK_EX)` on `path` in a child process that then exits at once,
/// leaving the lock to a grandchild that holds the descriptor for `LINGER_MS`.
fn lock_with_dead_owner(path: &Path) {
    let file = std::fs::File::open(path).unwrap();
    let fd = file.as_raw_fd();
    // SAFETY: the child calls only async-signal-safe functions (flock, fork, usleep,
    // _exit) before it exits, as a fork of a multi-threaded process must.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        unsafe {
            close_other_fds(&[fd]);
            if libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) != 0 {
                libc::_exit(2);
            }
            if libc::fork() == 0 {
                libc::usleep(LINGER_MS * 1000);
                libc::_exit(0);
            }
            libc::_exit(0);
        }
    }
    // The lock belongs to the open file description, which the grandchild shares:
    // this process's copy must go, or the lock would live on through it.
    drop(file);
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child could not take the lock"
    );
}

/// A child process that takes `flock(LOCK_EX)` on `path` and keeps it until killed.
/// Returns its pid once it holds the lock.
fn lock_with_live_owner(path: &Path) -> libc::pid_t {
    let file = std::fs::File::open(path).unwrap();
    let mut pipe = [0; 2];
    // SAFETY: pipe fills the two descriptors of the array it is given.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: as in `lock_with_dead_owner`; the child writes one byte and sleeps.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        unsafe {
            close_other_fds(&[file.as_raw_fd(), pipe[1]]);
            let ok = libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0;
            libc::write(pipe[1], [u8::from(ok)].as_ptr().cast(), 1);
            loop {
                libc::usleep(100_000);
            }
        }
    }
    drop(file);
    let mut byte = [0u8; 1];
    // SAFETY: reads one byte into the local array; the descriptors are ours.
    unsafe {
        assert_eq!(libc::read(pipe[0], byte.as_mut_ptr().cast(), 1), 1);
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }
    assert_eq!(byte[0], 1, "the child could not take the lock");
    child
}

fn kill(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: kills and reaps the child forked by this test.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, 0);
    }
}

#[test]
fn open_waits_for_a_dead_owners_device_lock() {
    let _serial = serial();
    let s = formatted_store();
    lock_with_dead_owner(&s.device);
    let start = Instant::now();
    let db = s.open().expect("open retries until the lock is released");
    assert!(
        start.elapsed() >= Duration::from_millis(u64::from(LINGER_MS) / 2),
        "the lock was not held at all: {:?}",
        start.elapsed()
    );
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    db.close().unwrap();
}

#[test]
fn open_waits_for_a_dead_owners_index_lock() {
    let _serial = serial();
    let s = formatted_store();
    lock_with_dead_owner(&s.metadata.join("LOCK"));
    let start = Instant::now();
    let db = s.open().expect("open retries until the lock is released");
    assert!(start.elapsed() >= Duration::from_millis(u64::from(LINGER_MS) / 2));
    db.close().unwrap();
}

#[test]
fn a_live_owner_is_named_at_once() {
    let _serial = serial();
    let s = formatted_store();
    for path in [s.device.clone(), s.metadata.join("LOCK")] {
        let pid = lock_with_live_owner(&path);
        let start = Instant::now();
        let e = s.open().err().expect("a live holder keeps the store");
        let text = e.to_string();
        kill(pid);
        assert!(
            text.contains(&format!("process {pid}")) && text.contains("running"),
            "{path:?}: {text}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "no waiting for a live holder"
        );
        s.open()
            .expect("open once the holder is gone")
            .close()
            .unwrap();
    }
}

/// Run in a child process by `reopen_right_after_kill_9`: opens the store named by
/// the environment, says so by creating the ready file, and waits to be killed.
#[test]
#[ignore = "a helper process of reopen_right_after_kill_9, not a test of its own"]
fn hold_store_until_killed() {
    let (Some(device), Some(metadata), Some(ready)) = (
        std::env::var_os("HASHKV_TEST_DEVICE"),
        std::env::var_os("HASHKV_TEST_METADATA"),
        std::env::var_os("HASHKV_TEST_READY"),
    ) else {
        panic!("run only by reopen_right_after_kill_9");
    };
    let db = Db::open(
        &[PathBuf::from(device)],
        Path::new(&metadata),
        &small_options(),
    )
    .unwrap();
    for i in 0..100u32 {
        db.put(&i.to_le_bytes(), &[7u8; 300]).unwrap();
    }
    std::fs::write(ready, b"open").unwrap();
    std::thread::sleep(Duration::from_secs(60));
    drop(db);
}

/// The case: kill -9 a process that has the store open, and open it at once.
#[test]
fn reopen_right_after_kill_9() {
    let _serial = serial();
    let s = formatted_store();
    for round in 0..5 {
        let ready = s.metadata.with_file_name(format!("ready-{round}"));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "hold_store_until_killed",
                "--nocapture",
            ])
            .env("HASHKV_TEST_DEVICE", &s.device)
            .env("HASHKV_TEST_METADATA", &s.metadata)
            .env("HASHKV_TEST_READY", &ready)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            assert!(
                Instant::now() < deadline,
                "the holder never opened the store"
            );
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the holder exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let db = s
            .open()
            .unwrap_or_else(|e| panic!("round {round}: open right after kill -9: {e}"));
        assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        db.close().unwrap();
    }
}

/// A block device is locked with O_EXCL, which the kernel does not list: the holder is
/// found among the processes' open descriptors and named.
#[test]
fn a_live_holder_of_a_block_device_is_named() {
    let _serial = serial();
    let loops = match common::loops(1, 16 * MIB) {
        Ok(l) => l,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let paths = loops.paths();
    let meta = loops.dir.path().join("meta");
    Db::format(&paths, &meta, &small_options())
        .unwrap()
        .close()
        .unwrap();
    let path = std::ffi::CString::new(paths[0].to_str().unwrap()).unwrap();
    let mut pipe = [0; 2];
    // SAFETY: pipe fills the two descriptors of the array it is given.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: the child calls only async-signal-safe functions (open, write, usleep).
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        unsafe {
            close_other_fds(&[pipe[1]]);
            let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_EXCL);
            libc::write(pipe[1], [u8::from(fd >= 0)].as_ptr().cast(), 1);
            loop {
                libc::usleep(100_000);
            }
        }
    }
    let mut byte = [0u8; 1];
    // SAFETY: reads one byte into the local array; the descriptors are ours.
    unsafe {
        assert_eq!(libc::read(pipe[0], byte.as_mut_ptr().cast(), 1), 1);
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }
    assert_eq!(
        byte[0], 1,
        "the child could not open the device exclusively"
    );
    let e = Db::open(&paths, &meta, &small_options()).err();
    kill(child);
    let text = e.expect("a live holder keeps the device").to_string();
    assert!(text.contains(&format!("process {child}")), "{text}");
    Db::open(&paths, &meta, &small_options())
        .unwrap()
        .close()
        .unwrap();
}
