//! Helpers shared by the tests on real files and loop devices.
#![allow(dead_code)]
#![allow(clippy::manual_is_multiple_of)]

use hashkv_blockdev::{AlignedBuf, BlockDevice, IoOp};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::ops::{DerefMut, Range};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A buffer the workload writes from or reads into: an `AlignedBuf`, or a
/// `AlignedBuf` from a registered arena.
pub type TestBuf = Box<dyn DerefMut<Target = [u8]> + Send>;

pub fn heap_buf(len: usize) -> TestBuf {
    Box::new(AlignedBuf::new(len))
}

/// A fresh directory for device files on a disk-backed filesystem: under the system
/// temp dir if O_DIRECT works there (it may be a tmpfs without it), else under the
/// cargo target dir.
pub fn test_dir() -> tempfile::TempDir {
    let tmp = std::env::temp_dir();
    if direct_io_works(&tmp) {
        tempfile::Builder::new()
            .prefix("hashkv-blockdev-")
            .tempdir_in(&tmp)
            .expect("temp dir")
    } else {
        let target_tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(&target_tmp).expect("target tmp dir");
        tempfile::Builder::new()
            .prefix("hashkv-blockdev-")
            .tempdir_in(&target_tmp)
            .expect("temp dir")
    }
}

/// True if a file in `dir` can be written with O_DIRECT (and `dir` is not a tmpfs,
/// whose O_DIRECT support says nothing about a disk).
fn direct_io_works(dir: &Path) -> bool {
    // SAFETY: statfs writes into a zeroed local struct through a valid pointer; the
    // path is a valid NUL-terminated string for the call.
    let on_tmpfs = {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("path");
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
        rc != 0 || st.f_type == libc::TMPFS_MAGIC
    };
    if on_tmpfs {
        return false;
    }
    let probe = dir.join(format!(".hashkv-odirect-probe-{}", std::process::id()));
    let ok = (|| -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)?;
        let buf = AlignedBuf::new(4096);
        f.write_all_at(&buf, 0)?;
        Ok(())
    })()
    .is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

pub fn fill_random(rng: &mut StdRng, buf: &mut [u8]) {
    rng.fill(buf);
}

/// What one region of a device should hold.
pub struct Model {
    pub base: u64,
    pub bytes: Vec<u8>,
}

impl Model {
    /// A region whose current device contents are `initial`.
    pub fn new(region: Range<u64>, initial: Vec<u8>) -> Model {
        assert_eq!(initial.len() as u64, region.end - region.start);
        Model {
            base: region.start,
            bytes: initial,
        }
    }

    fn apply(&mut self, offset: u64, data: &[u8]) {
        let at = (offset - self.base) as usize;
        self.bytes[at..at + data.len()].copy_from_slice(data);
    }

    fn expect(&self, offset: u64, len: usize) -> &[u8] {
        let at = (offset - self.base) as usize;
        &self.bytes[at..at + len]
    }
}

/// Reads `region` whole (in 1 MiB requests, one batch).
pub fn read_region(dev: &dyn BlockDevice, region: Range<u64>) -> Vec<u8> {
    const CHUNK: u64 = 1 << 20;
    let len = (region.end - region.start) as usize;
    let mut buf = AlignedBuf::new(len);
    {
        let mut ops: Vec<IoOp<'_>> = buf[..len]
            .chunks_mut(CHUNK as usize)
            .enumerate()
            .map(|(i, c)| IoOp::Read {
                offset: region.start + i as u64 * CHUNK,
                buf: c,
            })
            .collect();
        dev.submit(&mut ops).expect("read region");
    }
    buf[..len].to_vec()
}

/// (offset, shape, buffers with the length of each that is written)
type PlannedWrite = (u64, WriteShape, Vec<(TestBuf, usize)>);

enum WriteShape {
    Plain { fua: bool },
    Vectored { fua: bool, pieces: usize },
}

/// Random aligned writes and reads into `model`'s region of `dev`, in batches of every
/// depth in `depths`, `rounds` times, each checked against the model; then the whole
/// region is read back and compared. Writes within one batch never overlap (their
/// order is unspecified); reads may. Returns the number of (write ops, read ops).
pub fn random_batches(
    dev: &dyn BlockDevice,
    model: &mut Model,
    depths: &[usize],
    rounds: usize,
    seed: u64,
    alloc: &dyn Fn(usize) -> TestBuf,
) -> (u64, u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let block = dev.geometry().logical_block_bytes as usize;
    let region_len = model.bytes.len();
    const SLOTS: usize = 128;
    // Whole blocks; a tail of the region beyond the last slot is only read.
    let slot_bytes = region_len / SLOTS / block * block;
    assert!(slot_bytes >= block, "region too small");
    assert!(region_len % block == 0 && model.base % block as u64 == 0);
    let slot_blocks = (slot_bytes / block).min(16);
    let mut writes = 0u64;
    let mut reads = 0u64;
    for round in 0..rounds {
        for &depth in depths {
            assert!(depth <= SLOTS);
            // ---- a batch of non-overlapping writes ----
            let mut slots: Vec<usize> = (0..SLOTS).collect();
            slots.shuffle(&mut rng);
            let mut planned: Vec<PlannedWrite> = Vec::with_capacity(depth);
            for &slot in &slots[..depth] {
                let nblocks = rng.gen_range(1..=slot_blocks);
                let start_block = rng.gen_range(0..=(slot_bytes / block - nblocks));
                let offset = model.base + (slot * slot_bytes + start_block * block) as u64;
                // Some FUA writes; not many, each costs a device cache flush.
                let fua = rng.gen_ratio(1, 16);
                let shape = if nblocks > 1 && rng.gen_bool(0.4) {
                    WriteShape::Vectored {
                        fua,
                        pieces: rng.gen_range(2..=nblocks.min(4)),
                    }
                } else {
                    WriteShape::Plain { fua }
                };
                let bufs: Vec<(TestBuf, usize)> = match &shape {
                    WriteShape::Plain { .. } => {
                        let mut b = alloc(nblocks * block);
                        fill_random(&mut rng, &mut b[..nblocks * block]);
                        vec![(b, nblocks * block)]
                    }
                    WriteShape::Vectored { pieces, .. } => {
                        // Cut nblocks into `pieces` non-empty runs.
                        let mut cuts: Vec<usize> = (1..nblocks).collect();
                        cuts.shuffle(&mut rng);
                        let mut cuts: Vec<usize> = cuts[..pieces - 1].to_vec();
                        cuts.sort_unstable();
                        cuts.insert(0, 0);
                        cuts.push(nblocks);
                        cuts.windows(2)
                            .map(|w| {
                                let len = (w[1] - w[0]) * block;
                                let mut b = alloc(len);
                                fill_random(&mut rng, &mut b[..len]);
                                (b, len)
                            })
                            .collect()
                    }
                };
                planned.push((offset, shape, bufs));
            }
            let mut ops: Vec<IoOp<'_>> = Vec::with_capacity(depth);
            // Buffers are rounded up to 4 KiB; the ops use exactly the planned lengths.
            let exact: Vec<Vec<&[u8]>> = planned
                .iter()
                .map(|(_, _, bufs)| bufs.iter().map(|(b, len)| &b[..*len]).collect())
                .collect();
            for ((offset, shape, _), refs) in planned.iter().zip(exact.iter()) {
                ops.push(match shape {
                    WriteShape::Plain { fua } => IoOp::Write {
                        offset: *offset,
                        buf: refs[0],
                        fua: *fua,
                    },
                    WriteShape::Vectored { fua, .. } => IoOp::WriteVectored {
                        offset: *offset,
                        bufs: &refs[..],
                        fua: *fua,
                    },
                });
            }
            dev.submit(&mut ops)
                .unwrap_or_else(|e| panic!("seed {seed}: write batch of {depth}: {e}"));
            drop(ops);
            for ((offset, _, _), refs) in planned.iter().zip(exact.iter()) {
                let mut at = *offset;
                for r in refs {
                    model.apply(at, r);
                    at += r.len() as u64;
                }
            }
            writes += depth as u64;

            // ---- a batch of reads, checked against the model ----
            let mut reads_planned: Vec<(u64, usize, TestBuf)> = (0..depth)
                .map(|_| {
                    let nblocks = rng.gen_range(1..=slot_blocks * 2);
                    let start = rng.gen_range(0..=(region_len / block - nblocks));
                    let offset = model.base + (start * block) as u64;
                    (offset, nblocks * block, alloc(nblocks * block))
                })
                .collect();
            {
                let mut ops: Vec<IoOp<'_>> = reads_planned
                    .iter_mut()
                    .map(|(offset, len, buf)| IoOp::Read {
                        offset: *offset,
                        buf: &mut buf[..*len],
                    })
                    .collect();
                dev.submit(&mut ops)
                    .unwrap_or_else(|e| panic!("seed {seed}: read batch of {depth}: {e}"));
            }
            for (offset, len, buf) in &reads_planned {
                if &buf[..*len] != model.expect(*offset, *len) {
                    panic!(
                        "seed {seed}: round {round} depth {depth}: read at {offset} (+{len}) differs from what was written"
                    );
                }
            }
            reads += depth as u64;
        }
    }
    let whole = read_region(dev, model.base..model.base + region_len as u64);
    assert!(
        whole == model.bytes,
        "seed {seed}: final read of the region differs from the model"
    );
    (writes, reads)
}
