//! One op of a caller's batch while it is issued: its SQE, its progress after short
//! I/O, and the batch of them before it goes to a ring.

use super::arena::{BufferArena, ARENA_BUF_INDEX};
use super::{SQE_BYTES_MAX, SQE_IOVECS_MAX};
use crate::device::IoOp;
use crate::error::DeviceError;
use io_uring::{opcode, squeue, types};
use std::io;
use std::marker::PhantomData;

pub(super) enum RequestKind {
    /// `in_arena`: the buffer lies in the device's registered arena, so a ring that has
    /// the arena registered issues it as a fixed-buffer op.
    Read {
        ptr: *mut u8,
        in_arena: bool,
    },
    Write {
        ptr: *const u8,
        in_arena: bool,
    },
    /// `iovecs[first..]` is what remains; `iovecs[first]` is trimmed in place after a
    /// short write.
    Writev {
        iovecs: Vec<libc::iovec>,
        first: usize,
    },
    Flush,
}

/// One op of a caller's batch while it is being issued. Its index in the batch is its
/// SQE's user_data. The raw pointers point into buffers the caller lends the batch (see
/// [`RingBatch`](super::batch::RingBatch)); they are only handed to the kernel, never
/// dereferenced here.
pub(super) struct Request {
    pub(super) kind: RequestKind,
    pub(super) op_name: &'static str,
    start_offset: u64,
    pub(super) total_bytes: u64,
    pub(super) done_bytes: u64,
    rw_flags: i32,
    pub(super) retries: u32,
}

impl Request {
    pub(super) fn new(op: &mut IoOp<'_>, arena: Option<&BufferArena>) -> Request {
        let (op_name, start_offset, total_bytes) = (op.name(), op.offset(), op.len());
        let in_arena = |addr: usize, len: usize| arena.is_some_and(|a| a.contains(addr, len));
        let dsync = |fua: bool| if fua { libc::RWF_DSYNC } else { 0 };
        let (kind, rw_flags) = match op {
            IoOp::Read { buf, .. } => (
                RequestKind::Read {
                    in_arena: in_arena(buf.as_ptr() as usize, buf.len()),
                    ptr: buf.as_mut_ptr(),
                },
                0,
            ),
            IoOp::Write { buf, fua, .. } => (
                RequestKind::Write {
                    in_arena: in_arena(buf.as_ptr() as usize, buf.len()),
                    ptr: buf.as_ptr(),
                },
                dsync(*fua),
            ),
            IoOp::WriteVectored { bufs, fua, .. } => (
                RequestKind::Writev {
                    iovecs: bufs
                        .iter()
                        .map(|b| libc::iovec {
                            iov_base: b.as_ptr() as *mut libc::c_void,
                            iov_len: b.len(),
                        })
                        .collect(),
                    first: 0,
                },
                dsync(*fua),
            ),
        };
        Request {
            kind,
            op_name,
            start_offset,
            total_bytes,
            done_bytes: 0,
            rw_flags,
            retries: 0,
        }
    }

    /// fdatasync: on a block device it also flushes the device's volatile cache.
    pub(super) fn flush() -> Request {
        Request {
            kind: RequestKind::Flush,
            op_name: "flush",
            start_offset: 0,
            total_bytes: 0,
            done_bytes: 0,
            rw_flags: 0,
            retries: 0,
        }
    }

    /// The SQE for what remains of the request, and whether it is a fixed-buffer op
    /// (an arena buffer on a ring that has the arena registered).
    pub(super) fn sqe(&self, fd: types::Fd, arena_registered: bool) -> (squeue::Entry, bool) {
        let offset = self.start_offset + self.done_bytes;
        let len = (self.total_bytes - self.done_bytes).min(SQE_BYTES_MAX) as u32;
        let done = self.done_bytes as usize;
        match &self.kind {
            RequestKind::Read { ptr, in_arena } if *in_arena && arena_registered => (
                opcode::ReadFixed::new(fd, ptr.wrapping_add(done), len, ARENA_BUF_INDEX)
                    .offset(offset)
                    .build(),
                true,
            ),
            RequestKind::Read { ptr, .. } => (
                opcode::Read::new(fd, ptr.wrapping_add(done), len)
                    .offset(offset)
                    .build(),
                false,
            ),
            RequestKind::Write { ptr, in_arena } if *in_arena && arena_registered => (
                opcode::WriteFixed::new(fd, ptr.wrapping_add(done), len, ARENA_BUF_INDEX)
                    .offset(offset)
                    .rw_flags(self.rw_flags)
                    .build(),
                true,
            ),
            RequestKind::Write { ptr, .. } => (
                opcode::Write::new(fd, ptr.wrapping_add(done), len)
                    .offset(offset)
                    .rw_flags(self.rw_flags)
                    .build(),
                false,
            ),
            RequestKind::Writev { iovecs, first } => {
                let count = (iovecs.len() - first).min(SQE_IOVECS_MAX);
                (
                    opcode::Writev::new(fd, iovecs[*first..].as_ptr(), count as u32)
                        .offset(offset)
                        .rw_flags(self.rw_flags)
                        .build(),
                    false,
                )
            }
            RequestKind::Flush => (
                opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build(),
                false,
            ),
        }
    }

    /// Records `n` bytes done; for a vector, drops or trims the iovecs they covered.
    pub(super) fn advance(&mut self, n: u64) {
        self.done_bytes += n;
        debug_assert!(self.done_bytes <= self.total_bytes);
        if let RequestKind::Writev { iovecs, first } = &mut self.kind {
            let mut left = n as usize;
            while left > 0 && *first < iovecs.len() {
                let iov = &mut iovecs[*first];
                if left >= iov.iov_len {
                    left -= iov.iov_len;
                    *first += 1;
                } else {
                    iov.iov_base = (iov.iov_base as *mut u8).wrapping_add(left).cast();
                    iov.iov_len -= left;
                    left = 0;
                }
            }
        }
    }

    pub(super) fn io_error(&self, source: io::Error) -> DeviceError {
        DeviceError::Io {
            op: self.op_name,
            offset: self.start_offset,
            len: self.total_bytes,
            source,
        }
    }
}

/// A batch validated and turned into requests; nothing is issued yet. Carries the
/// lifetime of the buffers its requests point into.
pub(super) struct Prepared<'a> {
    pub(super) requests: Vec<Request>,
    pub(super) _buffers: PhantomData<&'a mut [u8]>,
}
