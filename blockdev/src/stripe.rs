//! One logical address space striped over several member devices (RAID-0 without
//! mdadm).
//!
//! The logical space is cut into stripe units; unit `i` lives on member `i mod N` at
//! member offset `IDENTITY_RESERVED_BYTES + (i / N) * unit`. Each member's first block
//! holds its identity header (see [`crate::identity`]) and is not part of the logical
//! space. Every member contributes the same number of whole units (that of the
//! smallest member), so the logical size is `N * units_per_member * unit`.
//!
//! A request crossing a unit boundary is split; one `submit` sends the pieces to all
//! members at once and returns when every piece has completed.

// `x % n != 0` rather than `is_multiple_of`: the workspace MSRV (1.80) predates it.
#![allow(clippy::manual_is_multiple_of)]

use crate::buf::AlignedBuf;
use crate::device::{check_op, BlockDevice, CounterSnapshot, Geometry, IoOp};
use crate::error::{DeviceError, Result};
use crate::file::{open_device, open_direct, OpenOptions};
use crate::identity::IDENTITY_RESERVED_BYTES;
use crate::pending::{read_ops, OwnedRead, PendingReads};
use crate::uring::{
    alloc_device_buffer, arena_bytes_allowed, flush_across, submit_across, BufferArena, UringDevice,
};
use std::path::PathBuf;
use std::sync::Arc;

/// Stripe unit when the caller does not choose: large enough that a segment (a few MiB)
/// never straddles two members, so segments land whole on one device and different
/// segment groups' I/O spreads over all members.
pub const STRIPE_UNIT_BYTES_DEFAULT: u64 = 64 << 20;

/// Opens the devices at `paths` as one address space: a single path gives the plain
/// device (its whole size, no identity block reserved); several give a
/// [`StripedDevice`] whose members share one registered buffer arena.
pub fn open_striped(
    paths: &[PathBuf],
    stripe_unit_bytes: u64,
    opts: &OpenOptions,
) -> Result<Arc<dyn BlockDevice>> {
    match paths {
        [] => Err(DeviceError::Config {
            reason: "no device paths given".to_string(),
        }),
        [one] => Ok(open_device(one, opts)?),
        several => Ok(Arc::new(StripedDevice::open(
            several,
            stripe_unit_bytes,
            opts,
        )?)),
    }
}

/// Several member devices as one [`BlockDevice`].
pub struct StripedDevice {
    members: Vec<Arc<dyn BlockDevice>>,
    /// The same members, typed, when all are io_uring devices: then one thread puts a
    /// batch's pieces on every ring and waits once, instead of one thread per member.
    uring_members: Option<Vec<Arc<UringDevice>>>,
    stripe_unit_bytes: u64,
    units_per_member: u64,
    geometry: Geometry,
    arena: Option<Arc<BufferArena>>,
}

/// A piece of a caller's op that lies within one stripe unit.
enum PieceBuf<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
    Writev(Vec<&'a [u8]>),
}

struct Piece<'a> {
    member: usize,
    member_offset: u64,
    fua: bool,
    buf: PieceBuf<'a>,
}

impl StripedDevice {
    /// The first poisoned member (in member order) and its first error.
    fn first_member_error(&self) -> Option<(usize, Arc<DeviceError>)> {
        self.members
            .iter()
            .enumerate()
            .find_map(|(i, m)| m.poisoned().map(|e| (i, e)))
    }

    /// Stripes over `members` (in member order) with `stripe_unit_bytes` units, which
    /// must be a non-zero multiple of every member's logical block.
    pub fn new(
        members: Vec<Arc<dyn BlockDevice>>,
        stripe_unit_bytes: u64,
    ) -> Result<StripedDevice> {
        StripedDevice::build(members, None, stripe_unit_bytes, None)
    }

    /// Stripes over io_uring devices opened by the caller (e.g. with
    /// [`crate::file::open_device`]): like [`StripedDevice::new`], but one thread puts
    /// a batch's pieces on every member's ring and waits once, instead of one thread
    /// per member. Buffers from [`StripedDevice::alloc_buffer`] come from the heap here
    /// (each member has its own arena); [`StripedDevice::open`] shares one arena.
    pub fn from_uring_members(
        members: Vec<Arc<UringDevice>>,
        stripe_unit_bytes: u64,
    ) -> Result<StripedDevice> {
        let dyn_members = members
            .iter()
            .map(|m| Arc::clone(m) as Arc<dyn BlockDevice>)
            .collect();
        StripedDevice::build(dyn_members, Some(members), stripe_unit_bytes, None)
    }

    /// Opens every path as an io_uring device and stripes over them.
    pub fn open(
        paths: &[PathBuf],
        stripe_unit_bytes: u64,
        opts: &OpenOptions,
    ) -> Result<StripedDevice> {
        // One arena registered with every ring of every member, so that a buffer from
        // `alloc_buffer` is a fixed buffer on whichever member its pieces go to.
        let arena_bytes = if opts.use_fixed_buffers {
            arena_bytes_allowed(
                opts.fixed_buffer_arena_bytes,
                paths.len().saturating_mul(opts.rings_max),
            )
        } else {
            0
        };
        let arena = (arena_bytes > 0).then(|| BufferArena::new(arena_bytes));
        let mut uring_members = Vec::with_capacity(paths.len());
        for path in paths {
            let direct = open_direct(path, opts.create_size_bytes)?;
            uring_members.push(Arc::new(UringDevice::new_with_arena(
                direct,
                opts,
                arena.clone(),
            )?));
        }
        // Keep the arena only if some ring took it; the others use plain ops on it.
        let arena = arena.filter(|_| uring_members.iter().any(|m| m.fixed_buffers_registered()));
        let members = uring_members
            .iter()
            .map(|m| Arc::clone(m) as Arc<dyn BlockDevice>)
            .collect();
        StripedDevice::build(members, Some(uring_members), stripe_unit_bytes, arena)
    }

    fn build(
        members: Vec<Arc<dyn BlockDevice>>,
        uring_members: Option<Vec<Arc<UringDevice>>>,
        stripe_unit_bytes: u64,
        arena: Option<Arc<BufferArena>>,
    ) -> Result<StripedDevice> {
        if members.is_empty() {
            return Err(DeviceError::Config {
                reason: "a stripe needs at least one member".to_string(),
            });
        }
        let geometries: Vec<Geometry> = members.iter().map(|m| m.geometry()).collect();
        let logical_block_bytes = geometries
            .iter()
            .map(|g| g.logical_block_bytes)
            .max()
            .unwrap_or(0);
        let physical_block_bytes = geometries
            .iter()
            .map(|g| g.physical_block_bytes)
            .max()
            .unwrap_or(0);
        for (i, g) in geometries.iter().enumerate() {
            if g.logical_block_bytes == 0
                || IDENTITY_RESERVED_BYTES % u64::from(g.logical_block_bytes) != 0
            {
                return Err(DeviceError::Config {
                    reason: format!(
                        "member {i}: logical block {} bytes does not divide the {IDENTITY_RESERVED_BYTES}-byte identity block",
                        g.logical_block_bytes
                    ),
                });
            }
        }
        if stripe_unit_bytes == 0 || stripe_unit_bytes % u64::from(logical_block_bytes) != 0 {
            return Err(DeviceError::Config {
                reason: format!(
                    "stripe unit {stripe_unit_bytes} bytes is not a non-zero multiple of the {logical_block_bytes}-byte block size"
                ),
            });
        }
        let mut units_per_member = u64::MAX;
        for (i, g) in geometries.iter().enumerate() {
            let units = g.size_bytes.saturating_sub(IDENTITY_RESERVED_BYTES) / stripe_unit_bytes;
            if units == 0 {
                return Err(DeviceError::Config {
                    reason: format!(
                        "member {i} ({} bytes) is too small for one {stripe_unit_bytes}-byte stripe unit after the {IDENTITY_RESERVED_BYTES}-byte identity block",
                        g.size_bytes
                    ),
                });
            }
            units_per_member = units_per_member.min(units);
        }
        let size_bytes = (members.len() as u64)
            .checked_mul(units_per_member)
            .and_then(|u| u.checked_mul(stripe_unit_bytes))
            .ok_or_else(|| DeviceError::Config {
                reason: "striped size overflows 64 bits".to_string(),
            })?;
        Ok(StripedDevice {
            members,
            uring_members,
            stripe_unit_bytes,
            units_per_member,
            geometry: Geometry {
                size_bytes,
                logical_block_bytes,
                physical_block_bytes: physical_block_bytes.max(logical_block_bytes),
            },
            arena,
        })
    }

    /// The member devices in member order, addressed directly (offset 0 is the
    /// identity block), e.g. to read and write their identity headers.
    pub fn members(&self) -> &[Arc<dyn BlockDevice>] {
        &self.members
    }

    /// The members as io_uring devices, when the stripe was opened from paths (for
    /// their fixed-buffer status and statistics).
    pub fn uring_members(&self) -> Option<&[Arc<UringDevice>]> {
        self.uring_members.as_deref()
    }

    pub fn stripe_unit_bytes(&self) -> u64 {
        self.stripe_unit_bytes
    }

    /// Whole stripe units each member contributes.
    pub fn units_per_member(&self) -> u64 {
        self.units_per_member
    }

    /// Where a logical offset lives: (member index, offset on that member).
    pub fn locate(&self, logical_offset: u64) -> (usize, u64) {
        let n = self.members.len() as u64;
        let unit = logical_offset / self.stripe_unit_bytes;
        let within = logical_offset % self.stripe_unit_bytes;
        let member = (unit % n) as usize;
        let member_offset = IDENTITY_RESERVED_BYTES + (unit / n) * self.stripe_unit_bytes + within;
        (member, member_offset)
    }

    /// Bytes from `offset` to the end of its stripe unit.
    fn unit_room(&self, offset: u64) -> u64 {
        self.stripe_unit_bytes - offset % self.stripe_unit_bytes
    }

    /// Cuts every op at unit boundaries.
    fn split<'b>(&self, ops: &'b mut [IoOp<'_>]) -> Vec<Piece<'b>> {
        let mut pieces = Vec::with_capacity(ops.len());
        for op in ops.iter_mut() {
            match op {
                IoOp::Read { offset, buf } => {
                    let mut offset = *offset;
                    let mut rest: &'b mut [u8] = &mut buf[..];
                    while !rest.is_empty() {
                        let take = (rest.len() as u64).min(self.unit_room(offset)) as usize;
                        let (head, tail) = std::mem::take(&mut rest).split_at_mut(take);
                        let (member, member_offset) = self.locate(offset);
                        pieces.push(Piece {
                            member,
                            member_offset,
                            fua: false,
                            buf: PieceBuf::Read(head),
                        });
                        offset += take as u64;
                        rest = tail;
                    }
                }
                IoOp::Write { offset, buf, fua } => {
                    let mut offset = *offset;
                    let mut rest: &'b [u8] = buf;
                    while !rest.is_empty() {
                        let take = (rest.len() as u64).min(self.unit_room(offset)) as usize;
                        let (head, tail) = rest.split_at(take);
                        let (member, member_offset) = self.locate(offset);
                        pieces.push(Piece {
                            member,
                            member_offset,
                            fua: *fua,
                            buf: PieceBuf::Write(head),
                        });
                        offset += take as u64;
                        rest = tail;
                    }
                }
                IoOp::WriteVectored { offset, bufs, fua } => {
                    let fua = *fua;
                    let mut offset = *offset;
                    let mut current: Vec<&'b [u8]> = Vec::new();
                    let mut current_start = offset;
                    let mut flush_piece = |current: &mut Vec<&'b [u8]>, start: u64| {
                        if current.is_empty() {
                            return;
                        }
                        let (member, member_offset) = self.locate(start);
                        let bufs = std::mem::take(current);
                        // One buffer: a plain write (can use a fixed buffer).
                        let buf = if bufs.len() == 1 {
                            PieceBuf::Write(bufs[0])
                        } else {
                            PieceBuf::Writev(bufs)
                        };
                        pieces.push(Piece {
                            member,
                            member_offset,
                            fua,
                            buf,
                        });
                    };
                    for b in bufs.iter() {
                        let mut rest: &'b [u8] = b;
                        while !rest.is_empty() {
                            let room = self.unit_room(offset);
                            let take = (rest.len() as u64).min(room) as usize;
                            let (head, tail) = rest.split_at(take);
                            current.push(head);
                            offset += take as u64;
                            rest = tail;
                            if take as u64 == room {
                                flush_piece(&mut current, current_start);
                                current_start = offset;
                            }
                        }
                    }
                    flush_piece(&mut current, current_start);
                }
            }
        }
        pieces
    }

    /// The pieces as ops, grouped by member (an empty list for an idle member).
    fn per_member_ops<'p>(&self, pieces: &'p mut [Piece<'_>]) -> Vec<Vec<IoOp<'p>>> {
        let mut per_member: Vec<Vec<IoOp<'p>>> =
            (0..self.members.len()).map(|_| Vec::new()).collect();
        for p in pieces.iter_mut() {
            let op = match &mut p.buf {
                PieceBuf::Read(b) => IoOp::Read {
                    offset: p.member_offset,
                    buf: &mut b[..],
                },
                PieceBuf::Write(b) => IoOp::Write {
                    offset: p.member_offset,
                    buf: b,
                    fua: p.fua,
                },
                PieceBuf::Writev(bufs) => IoOp::WriteVectored {
                    offset: p.member_offset,
                    bufs: &bufs[..],
                    fua: p.fua,
                },
            };
            per_member[p.member].push(op);
        }
        per_member
    }

    fn submit_pieces(&self, pieces: &mut [Piece<'_>]) -> Result<()> {
        let n = self.members.len();
        let mut per_member = self.per_member_ops(pieces);
        let busy: Vec<usize> = (0..n).filter(|&m| !per_member[m].is_empty()).collect();
        match busy.as_slice() {
            [] => Ok(()),
            [only] => self.members[*only].submit(&mut per_member[*only]),
            _ => {
                if let Some(uring) = &self.uring_members {
                    let mut work: Vec<(&UringDevice, &mut [IoOp<'_>])> = uring
                        .iter()
                        .zip(per_member.iter_mut())
                        .filter(|(_, ops)| !ops.is_empty())
                        .map(|(d, ops)| (d.as_ref(), &mut ops[..]))
                        .collect();
                    submit_across(&mut work)
                } else {
                    self.on_members_concurrently(per_member, |member, ops| member.submit(ops))
                }
            }
        }
    }

    /// Runs `f` on every member with work, each on its own scoped thread except the
    /// last, which runs on the caller's; returns the first error.
    fn on_members_concurrently<'o>(
        &self,
        mut per_member: Vec<Vec<IoOp<'o>>>,
        f: impl Fn(&dyn BlockDevice, &mut [IoOp<'o>]) -> Result<()> + Sync,
    ) -> Result<()> {
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let f = &f;
            let mut jobs: Vec<(&Arc<dyn BlockDevice>, &mut Vec<IoOp<'o>>)> = self
                .members
                .iter()
                .zip(per_member.iter_mut())
                .filter(|(_, ops)| !ops.is_empty())
                .collect();
            let last = jobs.pop();
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|(m, ops)| scope.spawn(move || f(m.as_ref(), ops)))
                .collect();
            let mut results = Vec::new();
            if let Some((m, ops)) = last {
                results.push(f(m.as_ref(), ops));
            }
            for h in handles {
                results.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
            results
        });
        results.into_iter().find(|r| r.is_err()).unwrap_or(Ok(()))
    }
}

impl BlockDevice for StripedDevice {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// From the arena registered with every member's rings ([`StripedDevice::open`])
    /// when it has room; a stripe of one member gives that member's buffers (each op
    /// goes to its rings); else from the heap: a buffer one member's rings registered
    /// is read and written with plain ops on the others'.
    fn alloc_buffer(&self, len_bytes: usize) -> AlignedBuf {
        match (&self.arena, self.members.as_slice()) {
            (Some(arena), _) => alloc_device_buffer(Some(arena), len_bytes),
            (None, [only]) => only.alloc_buffer(len_bytes),
            (None, _) => AlignedBuf::new(len_bytes),
        }
    }

    fn submit(&self, ops: &mut [IoOp<'_>]) -> Result<()> {
        // Checked against the logical geometry first, so a caller's mistake is reported
        // in logical terms and nothing is issued.
        for op in ops.iter() {
            check_op(&self.geometry, op)?;
        }
        // A failed member poisons the whole stripe: no more writes anywhere, even on
        // the healthy members, so the stripe never holds a write that followed an error.
        if ops.iter().any(|op| !matches!(op, IoOp::Read { .. })) {
            if let Some((member, cause)) = self.first_member_error() {
                return Err(DeviceError::Poisoned {
                    first_error: format!("member {member}: {cause}"),
                    cause,
                });
            }
        }
        let mut pieces = self.split(ops);
        self.submit_pieces(&mut pieces)
    }

    /// Reads left in flight on every member they touch at once, each member's pieces
    /// on a read-ahead ring of its own; when some member has none free, no member
    /// starts and `wait` reads (all members at once, as `submit` does).
    fn start_reads(&self, reads: Vec<OwnedRead>) -> Result<PendingReads<'_>> {
        let Some(uring) = &self.uring_members else {
            let mut reads = reads;
            let mut ops = read_ops(&mut reads);
            self.submit(&mut ops)?;
            return Ok(PendingReads::done(reads));
        };
        PendingReads::start_with(self, reads, |ops| {
            for op in ops.iter() {
                check_op(&self.geometry, op)?;
            }
            let mut pieces = self.split(ops);
            let mut per_member = self.per_member_ops(&mut pieces);
            // Every ring first, so that a member without one leaves nothing started.
            let mut rings = Vec::new();
            for (m, member_ops) in per_member.iter().enumerate() {
                if member_ops.is_empty() {
                    continue;
                }
                match uring[m].try_readahead_ring() {
                    Some(ring) => rings.push((m, ring)),
                    None => return Ok(None),
                }
            }
            let mut batches = Vec::with_capacity(rings.len());
            for (m, ring) in rings {
                // SAFETY: the pieces lie within the buffers of `ops`, which
                // `start_with` keeps allocated and untouched until the batches are
                // waited for or dropped.
                batches.push(unsafe { ring.start(&mut per_member[m]) }?);
            }
            Ok(Some(batches))
        })
    }

    fn flush(&self) -> Result<()> {
        if self.members.len() == 1 {
            return self.members[0].flush();
        }
        if let Some(uring) = &self.uring_members {
            let devices: Vec<&UringDevice> = uring.iter().map(|d| d.as_ref()).collect();
            return flush_across(&devices);
        }
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self.members[1..]
                .iter()
                .map(|m| scope.spawn(move || m.flush()))
                .collect();
            let mut results = vec![self.members[0].flush()];
            for h in handles {
                results.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
            results
        });
        results.into_iter().find(|r| r.is_err()).unwrap_or(Ok(()))
    }

    fn counters(&self) -> Vec<CounterSnapshot> {
        self.members.iter().flat_map(|m| m.counters()).collect()
    }

    fn poisoned(&self) -> Option<Arc<DeviceError>> {
        self.first_member_error().map(|(_, e)| e)
    }
}

impl std::fmt::Debug for StripedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripedDevice")
            .field("members", &self.members.len())
            .field("stripe_unit_bytes", &self.stripe_unit_bytes)
            .field("units_per_member", &self.units_per_member)
            .field("geometry", &self.geometry)
            .finish()
    }
}
