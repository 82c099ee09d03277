//! Loop devices over backing files (`losetup --direct-io=on`), detached on drop: the
//! raw-block-device path without spare disks, for tests and trial runs. Needs root,
//! util-linux's losetup and the loop driver; where they are missing, [`attach_all`]
//! says which.

use crate::file::create_file;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// `losetup -f` picks a free device and binds it; two at once in one process can race
/// for the same one, so attaching is serialised.
static ATTACH: Mutex<()> = Mutex::new(());

/// An attached loop device, detached on drop (also when a test panics).
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    /// The file behind it.
    pub backing: PathBuf,
}

impl LoopDevice {
    /// Binds a free loop device to `backing`, with `sector_bytes` as its logical block
    /// size if given.
    pub fn attach(backing: &Path, sector_bytes: Option<u32>) -> Result<LoopDevice, String> {
        let _one_at_a_time = ATTACH.lock().unwrap_or_else(|p| p.into_inner());
        let mut cmd = Command::new("losetup");
        cmd.args(["-f", "--show", "--direct-io=on"]);
        if let Some(s) = sector_bytes {
            cmd.args(["--sector-size", &s.to_string()]);
        }
        let out = cmd
            .arg(backing)
            .output()
            .map_err(|e| format!("cannot run losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if !path.starts_with("/dev/") {
            return Err(format!("losetup printed {path:?}"));
        }
        Ok(LoopDevice {
            path,
            backing: backing.to_path_buf(),
        })
    }

    /// /sys/block/loopN/queue/<name>, as the kernel reports it.
    pub fn queue_attr(&self, name: &str) -> Result<u32, String> {
        let dev = self.path.file_name().unwrap_or_default().to_string_lossy();
        let at = format!("/sys/block/{dev}/queue/{name}");
        let text = std::fs::read_to_string(&at).map_err(|e| format!("{at}: {e}"))?;
        text.trim().parse().map_err(|e| format!("{at}: {e}"))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        match Command::new("losetup").arg("-d").arg(&self.path).status() {
            Ok(s) if s.success() => {}
            other => eprintln!(
                "warning: losetup -d {} failed: {other:?}",
                self.path.display()
            ),
        }
    }
}

/// Loop devices over new zero-filled files `backingN` in `dir`, one per (size,
/// sector size), or why they cannot be had (not root, no loop driver, losetup
/// failing). Drop them before removing `dir`.
pub fn attach_all(dir: &Path, sizes: &[(u64, Option<u32>)]) -> Result<Vec<LoopDevice>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("loop devices need root".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("no /dev/loop-control (loop driver not available)".into());
    }
    let mut devs = Vec::with_capacity(sizes.len());
    for (i, &(size, sector)) in sizes.iter().enumerate() {
        let backing = dir.join(format!("backing{i}"));
        create_file(&backing, size, false).map_err(|e| e.to_string())?;
        devs.push(LoopDevice::attach(&backing, sector)?);
    }
    Ok(devs)
}
