//! [`RealFs`]: the seam's production side, std::fs and the kernel.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use fs2::FileExt as _;
use hashkv_blockdev::{AlignedBuf, BUFFER_ALIGN_BYTES};
use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};

use super::{EntryKind, Fs, FsFile, FsLock, IfExists};

/// Offset and length alignment of `O_DIRECT` reads where the file system does not say
/// (statx's STATX_DIOALIGN), and the most any file's may be: 4096 covers every logical
/// block size (512..4096) and the page size. Buffers are always aligned to it.
const DIRECT_ALIGN_MAX_BYTES: u64 = BUFFER_ALIGN_BYTES as u64;
/// The finest alignment used, whatever a file system reports: the classic sector.
const DIRECT_ALIGN_MIN_BYTES: u64 = 512;

/// The operating system's file system. `Options::default()` uses it.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

/// How a handle's reads treat the page cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reads {
    /// Through the page cache, left there (WALs, the manifest, files being written).
    Cached,
    /// `O_DIRECT`: aligned reads into a bounce buffer.
    Direct,
    /// Buffered (the file system refused `O_DIRECT`), each read's range then advised
    /// out of the cache.
    DroppedAfter,
}

#[derive(Debug)]
struct RealFile {
    file: File,
    reads: Reads,
    /// Offset and length alignment of `O_DIRECT` reads (`Reads::Direct`): the file
    /// system's (512 on most), so that a 4 KiB block with its trailer reads 4.5 KiB,
    /// not the 8 KiB of two whole pages.
    direct_align_bytes: u64,
}

impl RealFile {
    fn shared(file: File, reads: Reads) -> Arc<dyn FsFile> {
        let direct_align_bytes = hashkv_blockdev::file::direct_io_align_bytes(&file)
            .map(u64::from)
            .filter(|a| a.is_power_of_two() && *a <= DIRECT_ALIGN_MAX_BYTES)
            .map_or(DIRECT_ALIGN_MAX_BYTES, |a| a.max(DIRECT_ALIGN_MIN_BYTES));
        Arc::new(RealFile {
            file,
            reads,
            direct_align_bytes,
        })
    }

    /// Fills `buf` from `offset` with aligned `O_DIRECT` reads of the span covering it.
    fn read_direct(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let align = self.direct_align_bytes;
        let start = offset / align * align;
        let skip = (offset - start) as usize;
        let end = offset + buf.len() as u64;
        let span = (end.div_ceil(align) * align - start) as usize;
        let mut bounce = AlignedBuf::new(span);
        let need = skip + buf.len();
        let mut got = 0;
        // A read may return less: at the end of the file (the span's aligned end lies
        // past it), or after a signal. Continue from an aligned point until enough; a
        // read that brings nothing new has met the end of the file.
        while got < need {
            let at = got / BUFFER_ALIGN_BYTES * BUFFER_ALIGN_BYTES;
            match self.file.read_at(&mut bounce[at..span], start + at as u64) {
                Ok(n) if at + n > got => got = at + n,
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "read of {} bytes at {offset} ends past the end of the file",
                            buf.len()
                        ),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.copy_from_slice(&bounce[skip..need]);
        Ok(())
    }

    fn fadvise_dontneed(&self, offset: u64, len_bytes: u64) -> io::Result<()> {
        let too_big = |_| io::Error::from_raw_os_error(libc::EOVERFLOW);
        let offset = libc::off_t::try_from(offset).map_err(too_big)?;
        let len = libc::off_t::try_from(len_bytes).map_err(too_big)?;
        posix_fadvise(
            self.file.as_raw_fd(),
            offset,
            len,
            PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        )
        .map_err(io::Error::from)
    }
}

/// The lock file, `flock`ed; closing it releases the lock.
struct RealLock(#[allow(dead_code)] File);

impl FsLock for RealLock {}

impl Fs for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn entry_kind(&self, path: &Path) -> io::Result<EntryKind> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => Ok(EntryKind::Dir),
            Ok(_) => Ok(EntryKind::File),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(EntryKind::Missing),
            Err(e) => Err(e),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir)? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn create(&self, path: &Path, if_exists: IfExists) -> io::Result<Arc<dyn FsFile>> {
        let mut o = OpenOptions::new();
        o.write(true);
        match if_exists {
            IfExists::Fail => o.create_new(true),
            IfExists::Truncate => o.create(true).truncate(true),
        };
        Ok(RealFile::shared(o.open(path)?, Reads::Cached))
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Arc<dyn FsFile>> {
        let f = OpenOptions::new().read(true).write(writable).open(path)?;
        Ok(RealFile::shared(f, Reads::Cached))
    }

    fn open_uncached(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let direct = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        match direct {
            Ok(f) => Ok(RealFile::shared(f, Reads::Direct)),
            // The file system does not do O_DIRECT (tmpfs, some FUSE ones): buffered
            // reads, each dropped from the cache after it.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let f = OpenOptions::new().read(true).open(path)?;
                Ok(RealFile::shared(f, Reads::DroppedAfter))
            }
            Err(e) => Err(e),
        }
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn FsLock>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match f.try_lock_exclusive() {
            Ok(()) => Ok(Box::new(RealLock(f))),
            // fs2 reports a held lock as EWOULDBLOCK, whose kind is WouldBlock on Linux;
            // say so explicitly in case a platform maps it otherwise.
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                Err(io::Error::new(io::ErrorKind::WouldBlock, e))
            }
            Err(e) => Err(e),
        }
    }
}

impl FsFile for RealFile {
    fn append(&self, data: &[u8]) -> io::Result<()> {
        (&self.file).write_all(data)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self.reads {
            Reads::Cached => self.file.read_exact_at(buf, offset),
            Reads::Direct => self.read_direct(buf, offset),
            Reads::DroppedAfter => {
                self.file.read_exact_at(buf, offset)?;
                // Advice: a failure costs only cache space.
                let _ = self.fadvise_dontneed(offset, buf.len() as u64);
                Ok(())
            }
        }
    }

    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn drop_cache(&self, offset: u64, len_bytes: u64) -> io::Result<()> {
        self.fadvise_dontneed(offset, len_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uncached reads of every alignment return the file's bytes, and a read past the
    /// end is an `UnexpectedEof` error: in the temporary directory (O_DIRECT, where it
    /// is not tmpfs) and in /dev/shm (tmpfs: the buffered fallback, or O_DIRECT on
    /// kernels whose tmpfs takes it).
    #[test]
    fn uncached_reads_of_any_offset_and_length() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut dirs = vec![tempfile::tempdir().unwrap()];
        if Path::new("/dev/shm").is_dir() {
            dirs.push(tempfile::tempdir_in("/dev/shm").unwrap());
        }
        for dir in &dirs {
            let path = dir.path().join("f");
            std::fs::write(&path, &data).unwrap();
            let f = RealFs.open_uncached(&path).unwrap();
            let cases = [
                (0, 1),
                (0, 4096),
                (1, 4096),
                (4095, 2),
                (8000, 12_000),
                (511, 2),
                (513, 4101),
                (19_000, 1_000),
            ];
            for (offset, len) in cases {
                let mut buf = vec![0u8; len];
                f.read_exact_at(&mut buf, offset as u64).unwrap();
                assert_eq!(buf, data[offset..offset + len], "{offset}+{len}");
            }
            let mut buf = vec![0u8; 10];
            let e = f.read_exact_at(&mut buf, 19_995).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            f.drop_cache(0, 0).unwrap();
        }
    }
}
