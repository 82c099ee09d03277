//! The one narrow interface every device implements: the real io_uring device, the
//! striped device over several members, and the simulated device with fault injection.
//! The engine is written against this trait only, so its crash tests can run on the
//! simulated device.

use crate::buf::AlignedBuf;
use crate::error::{DeviceError, Result};
use crate::pending::{read_ops, OwnedRead, PendingReads};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Sizes a device reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Usable bytes (for a striped device: the logical address space).
    pub size_bytes: u64,
    /// Every offset, length and buffer address must be a multiple of this.
    pub logical_block_bytes: u32,
    /// The device's atomic write unit as reported (informational; torn writes in the
    /// simulator happen at this granularity).
    pub physical_block_bytes: u32,
}

/// One request in a batch. Buffers are borrowed for the duration of
/// [`BlockDevice::submit`], which returns only after every request has completed.
#[derive(Debug)]
pub enum IoOp<'a> {
    Read {
        offset: u64,
        buf: &'a mut [u8],
    },
    Write {
        offset: u64,
        buf: &'a [u8],
        /// Force unit access: durable when it completes (RWF_DSYNC).
        fua: bool,
    },
    /// Several buffers written back to back starting at `offset`.
    WriteVectored {
        offset: u64,
        bufs: &'a [&'a [u8]],
        fua: bool,
    },
}

impl IoOp<'_> {
    pub fn offset(&self) -> u64 {
        match self {
            IoOp::Read { offset, .. }
            | IoOp::Write { offset, .. }
            | IoOp::WriteVectored { offset, .. } => *offset,
        }
    }

    pub fn len(&self) -> u64 {
        match self {
            IoOp::Read { buf, .. } => buf.len() as u64,
            IoOp::Write { buf, .. } => buf.len() as u64,
            IoOp::WriteVectored { bufs, .. } => bufs.iter().map(|b| b.len() as u64).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_write(&self) -> bool {
        !matches!(self, IoOp::Read { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            IoOp::Read { .. } => "read",
            IoOp::Write { .. } => "write",
            IoOp::WriteVectored { .. } => "writev",
        }
    }
}

/// A block device as the engine sees it.
///
/// Contract:
/// - `submit` puts every request of the batch in flight at once (one io_uring_enter on
///   the real device) and returns when all of them have completed. It returns the first
///   error; the contents of read buffers are unspecified after an error.
/// - Offsets, lengths and buffer addresses must be multiples of
///   `geometry().logical_block_bytes`; violations are typed errors, checked before any
///   I/O is issued.
/// - A completed write is durable only after a later `flush` returns, or at once if it
///   was submitted with `fua`.
/// - After an I/O error the device is poisoned: every later write and flush returns
///   [`DeviceError::Poisoned`]. Reads are still attempted.
pub trait BlockDevice: Send + Sync {
    fn geometry(&self) -> Geometry;

    fn submit(&self, ops: &mut [IoOp<'_>]) -> Result<()>;

    fn flush(&self) -> Result<()>;

    /// Per-member counters (one entry for a single device).
    fn counters(&self) -> Vec<CounterSnapshot>;

    /// The first I/O error this device saw, if any (for a stripe, the first failed
    /// member's).
    fn poisoned(&self) -> Option<Arc<DeviceError>>;

    /// A zeroed buffer of at least `len_bytes` (rounded up to whole pages) that this
    /// device reads and writes at the least cost: from the fixed-buffer arena its rings
    /// registered while it has room (no page pinning per op), else from the heap (the
    /// default).
    fn alloc_buffer(&self, len_bytes: usize) -> AlignedBuf {
        AlignedBuf::new(len_bytes)
    }

    /// Starts `reads` and returns without waiting for them where the device can leave
    /// reads in flight while the caller does other work (the io_uring devices, while
    /// a read-ahead ring is free); [`PendingReads::wait`] collects them. Elsewhere the
    /// reads are done before this returns (the default) or by `wait`. Each read is
    /// checked like an op of `submit` before anything is issued.
    fn start_reads(&self, mut reads: Vec<OwnedRead>) -> Result<PendingReads<'_>> {
        let mut ops = read_ops(&mut reads);
        if !ops.is_empty() {
            self.submit(&mut ops)?;
        }
        Ok(PendingReads::done(reads))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.submit(&mut [IoOp::Read { offset, buf }])
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.submit(&mut [IoOp::Write {
            offset,
            buf,
            fua: false,
        }])
    }
}

/// Checks one request against the geometry before it reaches the kernel, so that a
/// caller's mistake is a typed error and not an EINVAL.
pub fn check_op(geometry: &Geometry, op: &IoOp<'_>) -> Result<()> {
    let block = geometry.logical_block_bytes;
    let block_u64 = u64::from(block);
    let offset = op.offset();
    if !offset.is_multiple_of(block_u64) {
        return Err(DeviceError::OffsetUnaligned {
            offset,
            block_bytes: block,
        });
    }
    let check_buf = |addr: usize, len: usize| -> Result<()> {
        if !addr.is_multiple_of(block as usize) {
            return Err(DeviceError::BufferUnaligned {
                addr,
                block_bytes: block,
            });
        }
        if len == 0 || !(len as u64).is_multiple_of(block_u64) {
            return Err(DeviceError::LengthUnaligned {
                len: len as u64,
                block_bytes: block,
            });
        }
        Ok(())
    };
    match op {
        IoOp::Read { buf, .. } => check_buf(buf.as_ptr() as usize, buf.len())?,
        IoOp::Write { buf, .. } => check_buf(buf.as_ptr() as usize, buf.len())?,
        IoOp::WriteVectored { bufs, .. } => {
            if bufs.is_empty() {
                return Err(DeviceError::LengthUnaligned {
                    len: 0,
                    block_bytes: block,
                });
            }
            for b in bufs.iter() {
                check_buf(b.as_ptr() as usize, b.len())?;
            }
        }
    }
    let len = op.len();
    if offset
        .checked_add(len)
        .is_none_or(|end| end > geometry.size_bytes)
    {
        return Err(DeviceError::OutOfRange {
            offset,
            len,
            size_bytes: geometry.size_bytes,
        });
    }
    Ok(())
}

/// Counters kept by each device (member), updated with relaxed atomics: they are
/// statistics, not synchronisation.
#[derive(Debug, Default)]
pub struct Counters {
    read_bytes: AtomicU64,
    read_ops: AtomicU64,
    write_bytes: AtomicU64,
    write_ops: AtomicU64,
    flushes: AtomicU64,
}

impl Counters {
    pub fn record_read(&self, bytes: u64) {
        self.read_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.read_ops.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_write(&self, bytes: u64) {
        self.write_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.write_ops.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_flush(&self) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            read_ops: self.read_ops.load(Ordering::Relaxed),
            write_bytes: self.write_bytes.load(Ordering::Relaxed),
            write_ops: self.write_ops.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub read_bytes: u64,
    pub read_ops: u64,
    pub write_bytes: u64,
    pub write_ops: u64,
    pub flushes: u64,
}

impl CounterSnapshot {
    pub fn sum(all: &[CounterSnapshot]) -> CounterSnapshot {
        all.iter()
            .fold(CounterSnapshot::default(), |a, c| CounterSnapshot {
                read_bytes: a.read_bytes + c.read_bytes,
                read_ops: a.read_ops + c.read_ops,
                write_bytes: a.write_bytes + c.write_bytes,
                write_ops: a.write_ops + c.write_ops,
                flushes: a.flushes + c.flushes,
            })
    }
}
