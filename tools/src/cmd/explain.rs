//! The engine's errors in the words of the command line: each message names the flag
//! (`--device`, `--metadata`, `--main-segment-mib`, ...) and the path concerned, and
//! says what to do. Errors the engine already words for every user pass through.

use super::store::StoreCmdError;
use hashkv::Error;
use hashkv_blockdev::DeviceError;
use hashkv_lsm::LsmError;
use std::path::{Path, PathBuf};

/// What the command was doing, for the words of its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doing {
    /// `hashkv format`: a missing path can be created, a used device needs --force.
    Format,
    /// Any command that opens an existing store.
    Open,
}

fn devices_flag(devices: &[PathBuf]) -> String {
    devices
        .iter()
        .map(|d| format!("--device {}", d.display()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `e`, raised while `doing` on `devices` and `metadata`, as the command line's
/// message.
pub fn explain(e: Error, doing: Doing, devices: &[PathBuf], metadata: &Path) -> StoreCmdError {
    let usage = StoreCmdError::Usage;
    let meta = metadata.display();
    match e {
        Error::Device(DeviceError::NotFound { path }) => usage(match doing {
            Doing::Format => format!(
                "--device {}: no such file or device; pass --create-gib N to create it as a \
                 file of N GiB",
                path.display()
            ),
            Doing::Open => format!(
                "--device {}: no such file or device (a new store is made with `hashkv format \
                 --device PATH --metadata DIR --create-gib N`)",
                path.display()
            ),
        }),
        Error::Lsm(LsmError::NotFound { .. }) => usage(format!(
            "--metadata {meta}: no store index there; format the store first, or pass the \
             --metadata directory the store was formatted with"
        )),
        Error::Lsm(LsmError::NotAnLsmDirectory { found, .. }) => usage(format!(
            "--metadata {meta} is not a store's metadata directory (it holds {found}); pass \
             the --metadata directory the store was formatted with"
        )),
        Error::Mismatch {
            what: "metadata directory",
            ..
        } => usage(format!(
            "--metadata {meta} holds the index of another store, not of the store on {}; \
             pass the --metadata directory this store was formatted with",
            devices_flag(devices)
        )),
        Error::Device(DeviceError::Identity { reason }) => usage(format!("--device: {reason}")),
        Error::NotOurs { reason } => usage(format!(
            "{} holds no hashkv store: {reason}",
            devices_flag(devices)
        )),
        Error::DeviceTooSmall { reason } => usage(format!(
            "{} is too small: {reason}; pass a smaller --main-segment-mib (4 main segments \
             must fit), or a larger device (--create-gib)",
            devices_flag(devices)
        )),
        Error::DeviceNotEmpty { what } if doing == Doing::Format => usage(format!(
            "refusing to format: {what}; pass --force to overwrite"
        )),
        other => other.into(),
    }
}

/// Refuses a device named twice: opening it a second time would fail as "already
/// opened by another process", which would be misleading.
pub fn check_distinct_devices(devices: &[PathBuf]) -> Result<(), StoreCmdError> {
    let canonical = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
    for (i, a) in devices.iter().enumerate() {
        if let Some(b) = devices[..i].iter().find(|b| canonical(b) == canonical(a)) {
            let also = if a == b {
                String::new()
            } else {
                format!(" (also as --device {})", b.display())
            };
            return Err(StoreCmdError::Usage(format!(
                "--device {} is given twice{also}; name each member of a stripe once, in \
                 member order",
                a.display()
            )));
        }
    }
    Ok(())
}
