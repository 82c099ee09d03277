//! The file or device devbench runs on: created when missing (and removed afterwards),
//! refused when it is a directory, or when it exists and `--force` was not given
//! (devbench overwrites what it measures).

use crate::error::{CliError, CliResult};
use hashkv_blockdev::file::create_file;
use hashkv_blockdev::DeviceError;
use std::io;
use std::path::{Path, PathBuf};

/// A target path, removed on drop if devbench created it.
#[derive(Debug)]
pub struct Target {
    pub path: PathBuf,
    pub created: bool,
}

impl Target {
    /// Checks `path` and creates a regular file of `create_size_bytes` if it is
    /// missing.
    pub fn prepare(path: &Path, create_size_bytes: u64, force: bool) -> CliResult<Target> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => Err(DeviceError::IsDirectory {
                path: path.to_path_buf(),
            }
            .into()),
            Ok(_) if !force => Err(CliError::Usage(format!(
                "{} exists and devbench would overwrite its contents; pass --force to \
                 allow that, or name a path that does not exist (devbench then creates \
                 a file and removes it afterwards)",
                path.display()
            ))),
            Ok(_) => Ok(Target {
                path: path.to_path_buf(),
                created: false,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_file(path, create_size_bytes, false)?;
                Ok(Target {
                    path: path.to_path_buf(),
                    created: true,
                })
            }
            Err(source) => Err(CliError::Io {
                path: path.to_path_buf(),
                action: "looking at the device path",
                source,
            }),
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.created {
            if let Err(e) = std::fs::remove_file(&self.path) {
                eprintln!(
                    "hashkv devbench: warning: could not remove {} that devbench created: {e}",
                    self.path.display()
                );
            }
        }
    }
}
