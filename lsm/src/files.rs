//! File names in the tree's directory and the careful file operations done once here:
//! atomic replace (write temp, sync, rename, sync directory) and directory sync.

use std::path::Path;

use crate::error::{LsmError, Result};
use crate::fs::{Fs, IfExists};

pub(crate) const CURRENT: &str = "CURRENT";
pub(crate) const CURRENT_TMP: &str = "CURRENT.tmp";
pub(crate) const LOCK: &str = "LOCK";

pub(crate) fn wal_name(number: u64) -> String {
    format!("{number:06}.wal")
}

pub(crate) fn table_name(number: u64) -> String {
    format!("{number:06}.sst")
}

pub(crate) fn manifest_name(number: u64) -> String {
    format!("MANIFEST-{number:06}")
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    Wal(u64),
    Table(u64),
    Manifest(u64),
    Current,
    CurrentTmp,
    Lock,
    /// A partially written table left by a crash.
    TableTmp(u64),
}

pub(crate) fn parse_name(name: &str) -> Option<FileKind> {
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match name {
        CURRENT => return Some(FileKind::Current),
        CURRENT_TMP => return Some(FileKind::CurrentTmp),
        LOCK => return Some(FileKind::Lock),
        _ => {}
    }
    if let Some(n) = name.strip_suffix(".wal") {
        return num(n).map(FileKind::Wal);
    }
    if let Some(n) = name.strip_suffix(".sst") {
        return num(n).map(FileKind::Table);
    }
    if let Some(n) = name.strip_suffix(".sst.tmp") {
        return num(n).map(FileKind::TableTmp);
    }
    if let Some(n) = name.strip_prefix("MANIFEST-") {
        return num(n).map(FileKind::Manifest);
    }
    None
}

pub(crate) fn sync_dir(fs: &dyn Fs, dir: &Path) -> Result<()> {
    fs.sync_dir(dir)
        .map_err(|e| LsmError::io(format!("syncing directory {}", dir.display()), e))
}

/// Replaces `dir/name` with `data` so that after a crash it holds either the old or the
/// new content, never a mix.
pub(crate) fn atomic_replace(
    fs: &dyn Fs,
    dir: &Path,
    name: &str,
    tmp_name: &str,
    data: &[u8],
) -> Result<()> {
    let tmp = dir.join(tmp_name);
    let target = dir.join(name);
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let f = fs
        .create(&tmp, IfExists::Truncate)
        .map_err(|e| LsmError::io(ctx("creating"), e))?;
    f.append(data)
        .map_err(|e| LsmError::io(ctx("writing"), e))?;
    f.sync_all().map_err(|e| LsmError::io(ctx("syncing"), e))?;
    drop(f);
    fs.rename(&tmp, &target)
        .map_err(|e| LsmError::io(format!("renaming {} to {}", tmp.display(), name), e))?;
    sync_dir(fs, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_name(&wal_name(7)), Some(FileKind::Wal(7)));
        assert_eq!(
            parse_name(&table_name(1234567)),
            Some(FileKind::Table(1234567))
        );
        assert_eq!(parse_name(&manifest_name(3)), Some(FileKind::Manifest(3)));
        assert_eq!(parse_name("notes.txt"), None);
        assert_eq!(parse_name(".wal"), None);
    }
}
