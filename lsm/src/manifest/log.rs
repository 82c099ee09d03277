//! Reading and writing manifest files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::edit::VersionEdit;
use crate::coding::{masked_crc, Reader};
use crate::error::{LsmError, Result};
use crate::fs::{Fs, FsFile, IfExists};
use crate::wal::record::{decode_record, encode_record, RECORD_HEADER_BYTES};

pub(crate) const MANIFEST_MAGIC: u64 = u64::from_le_bytes(*b"hkvlMAN\x01");
pub(crate) const MANIFEST_FORMAT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 16;

fn encode_header() -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(&MANIFEST_MAGIC.to_le_bytes());
    h[8..12].copy_from_slice(&MANIFEST_FORMAT_VERSION.to_le_bytes());
    let crc = masked_crc(&h[..12]);
    h[12..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Reads all edits of a manifest. Refuses a newer format before looking further.
pub(crate) fn read_manifest(fs: &dyn Fs, path: &Path) -> Result<Vec<VersionEdit>> {
    let data = fs
        .read_file(path)
        .map_err(|e| LsmError::io(format!("reading {}", path.display()), e))?;
    decode_manifest(&data).map_err(|e| match e {
        LsmError::NewerFormat {
            found, supported, ..
        } => LsmError::NewerFormat {
            file: path.to_path_buf(),
            found,
            supported,
        },
        e => e.in_file(path, 0),
    })
}

pub(crate) fn decode_manifest(data: &[u8]) -> Result<Vec<VersionEdit>> {
    let mut r = Reader::new(data);
    let magic = r.u64()?;
    if magic != MANIFEST_MAGIC {
        return Err(LsmError::corrupt(format!(
            "manifest magic: expected {MANIFEST_MAGIC:#018x}, found {magic:#018x}"
        )));
    }
    let version = r.u32()?;
    let crc = r.u32()?;
    let expected = masked_crc(&data[..12]);
    if crc != expected {
        return Err(LsmError::ChecksumMismatch {
            file: PathBuf::new(),
            offset: 12,
            expected,
            found: crc,
        });
    }
    if version > MANIFEST_FORMAT_VERSION {
        return Err(LsmError::NewerFormat {
            file: PathBuf::new(),
            found: version,
            supported: MANIFEST_FORMAT_VERSION,
        });
    }
    let mut edits = Vec::new();
    let mut pos = HEADER_BYTES;
    while pos < data.len() {
        match decode_record(&data[pos..]) {
            Ok((payload, n)) => {
                let edit = VersionEdit::decode(payload)
                    .map_err(|e| e.in_file(Path::new(""), pos as u64))?;
                edits.push(edit);
                pos += n;
            }
            Err(e) => {
                // A damaged length field also looks torn: only if no valid record
                // starts anywhere after it is this a torn tail.
                let valid_later = (pos + 1..data.len()).any(|p| decode_record(&data[p..]).is_ok());
                if is_torn_tail(&data[pos..]) && !valid_later {
                    break;
                }
                return Err(match e {
                    LsmError::ChecksumMismatch {
                        expected, found, ..
                    } => LsmError::ChecksumMismatch {
                        file: PathBuf::new(),
                        offset: pos as u64,
                        expected,
                        found,
                    },
                    _ => LsmError::corrupt(format!(
                        "damaged manifest record at {pos} followed by more data"
                    )),
                });
            }
        }
    }
    if edits.is_empty() {
        return Err(LsmError::corrupt("manifest holds no complete edit"));
    }
    Ok(edits)
}

/// Whether `rest`, which holds no valid record, is the torn tail of an append that was
/// never synced (so never acted on): the start of one record cut by the end of the
/// file, whose last bytes may read as zeros (the file's size reached the disk, its
/// data did not). Anything else is damage.
fn is_torn_tail(rest: &[u8]) -> bool {
    let written = rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if written < RECORD_HEADER_BYTES {
        // Not even the header made it: nothing claims a length to check.
        return true;
    }
    let claimed = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes")) as usize;
    RECORD_HEADER_BYTES + claimed >= rest.len()
}

pub(crate) struct ManifestWriter {
    /// The file system it writes on, for the manifest that replaces this one.
    pub fs: Arc<dyn Fs>,
    pub path: PathBuf,
    file: Arc<dyn FsFile>,
    pub file_bytes: u64,
}

impl ManifestWriter {
    /// Creates a manifest holding `snapshot` (synced), without switching CURRENT.
    pub fn create(
        fs: &Arc<dyn Fs>,
        dir: &Path,
        number: u64,
        snapshot: &VersionEdit,
    ) -> Result<ManifestWriter> {
        let path = dir.join(crate::files::manifest_name(number));
        let file = fs
            .create(&path, IfExists::Fail)
            .map_err(|e| LsmError::io(format!("creating {}", path.display()), e))?;
        let mut w = ManifestWriter {
            fs: fs.clone(),
            path,
            file,
            file_bytes: 0,
        };
        let header = encode_header();
        w.write(&header)?;
        w.append(snapshot)?;
        Ok(w)
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .append(data)
            .map_err(|e| LsmError::io(format!("writing {}", self.path.display()), e))?;
        self.file_bytes += data.len() as u64;
        Ok(())
    }

    /// Appends an edit and syncs it; returns the bytes appended.
    pub fn append(&mut self, edit: &VersionEdit) -> Result<u64> {
        let mut rec = Vec::new();
        encode_record(&edit.encode(), &mut rec);
        self.write(&rec)?;
        self.file
            .sync_data()
            .map_err(|e| LsmError::io(format!("syncing {}", self.path.display()), e))?;
        Ok(rec.len() as u64)
    }
}

/// Points CURRENT at manifest `number` atomically.
pub(crate) fn set_current(fs: &dyn Fs, dir: &Path, number: u64) -> Result<()> {
    let content = format!("{}\n", crate::files::manifest_name(number));
    crate::files::atomic_replace(
        fs,
        dir,
        crate::files::CURRENT,
        crate::files::CURRENT_TMP,
        content.as_bytes(),
    )
}

/// The manifest number named by CURRENT.
pub(crate) fn read_current(fs: &dyn Fs, dir: &Path) -> Result<u64> {
    let path = dir.join(crate::files::CURRENT);
    let s = fs
        .read_file(&path)
        .map_err(|e| LsmError::io(format!("reading {}", path.display()), e))?;
    let name = std::str::from_utf8(&s)
        .ok()
        .and_then(|s| s.strip_suffix('\n'));
    match name.and_then(crate::files::parse_name) {
        Some(crate::files::FileKind::Manifest(n)) => Ok(n),
        _ => Err(LsmError::Corruption {
            file: path,
            offset: 0,
            what: format!(
                "expected \"MANIFEST-<number>\\n\", found {:?}",
                String::from_utf8_lossy(&s[..s.len().min(64)])
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_of(edits: usize) -> (Vec<u8>, Vec<usize>) {
        let mut data = encode_header().to_vec();
        let mut ends = Vec::new();
        for i in 0..edits {
            let edit = VersionEdit {
                log_number: Some(i as u64 + 1),
                last_sequence: Some(100 * i as u64),
                ..Default::default()
            };
            encode_record(&edit.encode(), &mut data);
            ends.push(data.len());
        }
        (data, ends)
    }

    #[test]
    fn a_torn_last_append_with_a_zeroed_tail_is_ignored() {
        let (data, ends) = manifest_of(3);
        let last_start = ends[1];
        // Every cut inside the last record, with every length of zeroed tail.
        for cut in last_start..data.len() {
            for zeros in 0..=cut - last_start {
                let mut torn = data[..cut].to_vec();
                torn[cut - zeros..].fill(0);
                let edits = decode_manifest(&torn)
                    .unwrap_or_else(|e| panic!("cut {cut}, {zeros} zeros: {e}"));
                assert_eq!(edits.len(), 2, "cut {cut}, {zeros} zeros");
            }
        }
        // Zeros past a whole last record (a size that grew, data that never came).
        let mut padded = data.clone();
        padded.extend_from_slice(&[0u8; 100]);
        assert_eq!(decode_manifest(&padded).unwrap().len(), 3);
    }

    #[test]
    fn a_damaged_record_before_a_valid_one_is_still_refused() {
        let (data, ends) = manifest_of(3);
        let mut zeroed = data.clone();
        zeroed[ends[0]..ends[1]].fill(0);
        assert!(decode_manifest(&zeroed).is_err());
    }
}
