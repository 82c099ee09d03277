//! A flush's device writes in flight: submitted on a thread of their own, so that the
//! flusher goes on to the next flush (waiting for room in the pipeline, freezing the
//! next map, encoding it) while the device writes this one.
//!
//! The next flush's writes may start while these are in flight: the device then
//! always has a flush's writes queued, where it idled while each flush encoded its
//! records (a third of the 64 KiB load's time: 4 ms of encoding, then 10 ms of
//! writes, per 16 MiB flush). Three rules order them:
//! - a write that overlaps one still in flight waits for it ([`split_at_busy`]): an
//!   append rewrites its group's (or log's) partly written last block, which the
//!   previous flush's last write to it wrote, and two writes of one block in flight
//!   may land in either order. Only that block waits; the rest goes at once;
//! - each flush's writes complete only after the previous flush's did, so when the
//!   last one's completed, all had (a GC's begin, `close`);
//! - the commit thread flushes the device for a flush only after its writes completed
//!   (its index batch may name only durable records).

use super::poison::is_device_refusal;
use crate::commit::DeviceWrite;
use crate::error::{Error, Result};
use hashkv_blockdev::{BlockDevice, IoOp};
use parking_lot::{Condvar, Mutex};
use std::ops::Range;
use std::sync::Arc;

/// The outcome of one flush's writes, once they completed.
#[derive(Debug, Default)]
pub(crate) struct WritesInFlight {
    /// Device byte ranges that writes may still be in flight to when these start:
    /// these writes' own, and those of earlier writes that had not completed yet.
    busy: Vec<Range<u64>>,
    outcome: Mutex<Option<Result<()>>>,
    completed: Condvar,
}

impl WritesInFlight {
    /// Runs `write` on a new thread and returns at once (a thread per flush: a
    /// flush's writes take milliseconds, a thread's start microseconds). If no thread
    /// can be started, `write` runs here before this returns. `own` are the device
    /// ranges `write` writes; `previous` the writes started before, handed to `write`
    /// ([`write_after`]), whose busy ranges these inherit while they are in flight.
    pub fn start(
        own: Vec<Range<u64>>,
        previous: Option<Arc<WritesInFlight>>,
        write: impl FnOnce(Option<&WritesInFlight>) -> Result<()> + Send + 'static,
    ) -> Arc<Self> {
        type Job = Box<dyn FnOnce() -> Result<()> + Send>;
        let mut busy = own;
        if let Some(p) = previous.as_deref().filter(|p| !p.is_complete()) {
            // Each completes only after the one before, so once `p` completed, so had
            // everything it inherited.
            busy.extend(p.busy.iter().cloned());
        }
        let in_flight = Arc::new(WritesInFlight {
            busy,
            ..WritesInFlight::default()
        });
        let write = move || write(previous.as_deref());
        let job: Arc<Mutex<Option<Job>>> = Arc::new(Mutex::new(Some(Box::new(write))));
        let (done, queued) = (in_flight.clone(), job.clone());
        let spawned = std::thread::Builder::new()
            .name("hashkv-flush-io".into())
            .spawn(move || {
                if let Some(write) = queued.lock().take() {
                    done.finish(write());
                }
            });
        if spawned.is_err() {
            if let Some(write) = job.lock().take() {
                in_flight.finish(write());
            }
        }
        in_flight
    }

    fn finish(&self, outcome: Result<()>) {
        *self.outcome.lock() = Some(outcome);
        self.completed.notify_all();
    }

    /// Waits until the writes completed; their outcome (every waiter sees it).
    pub fn wait(&self) -> Result<()> {
        let mut outcome = self.outcome.lock();
        while outcome.is_none() {
            self.completed.wait(&mut outcome);
        }
        outcome.clone().expect("completed")
    }

    fn is_complete(&self) -> bool {
        self.outcome.lock().is_some()
    }
}

/// The writes of a flush or plan, on their own thread: the pieces that overlap no
/// write still in flight at once, the rest once the previous writes completed;
/// completes only after them. No device flush.
pub(crate) fn write_after(
    device: &dyn BlockDevice,
    piece_bytes: usize,
    writes: &[DeviceWrite],
    previous: Option<&WritesInFlight>,
) -> Result<()> {
    let pieces = pieces(writes, piece_bytes);
    let Some(previous) = previous else {
        return submit(device, writes, &pieces);
    };
    let block = device.geometry().logical_block_bytes as usize;
    let (now, later) = split_at_busy(writes, pieces, &previous.busy, block);
    let first = submit(device, writes, &now);
    // Waited for even after a failure: when these writes are complete, all before
    // them must be (`close`, a GC's begin).
    let before = previous.wait();
    // Of two errors, the cause: writes behind a failed one are refused by the device
    // (`DeviceError::Poisoned`), and the failed one may be either, since these run
    // beside the earlier ones.
    match (before, first) {
        (Err(b), Err(f)) => return Err(if is_device_refusal(&b) { f } else { b }),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => return Err(e),
        (Ok(()), Ok(())) => {}
    }
    submit(device, writes, &later)
}

/// One request: bytes `start..start + len` of write `write`'s buffer, written at that
/// write's offset plus `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    pub write: usize,
    pub start: usize,
    pub len: usize,
}

/// `writes` cut into requests of at most `piece_bytes` (block-aligned), so that one
/// large write is several requests in flight.
pub(crate) fn pieces(writes: &[DeviceWrite], piece_bytes: usize) -> Vec<Piece> {
    let mut pieces = Vec::new();
    for (write, w) in writes.iter().enumerate() {
        let mut start = 0;
        while start < w.len {
            let len = piece_bytes.min(w.len - start);
            pieces.push(Piece { write, start, len });
            start += len;
        }
    }
    pieces
}

/// Submits `pieces` of `writes` at once and waits for them.
pub(crate) fn submit(
    device: &dyn BlockDevice,
    writes: &[DeviceWrite],
    pieces: &[Piece],
) -> Result<()> {
    if pieces.is_empty() {
        return Ok(());
    }
    // Each request's buffers: one (the write's own, perhaps from the device's
    // registered arena) or several (with values spliced in), at most
    // `PARTS_PER_REQUEST_MAX` to a request.
    let mut requests: Vec<(u64, Vec<&[u8]>)> = Vec::with_capacity(pieces.len());
    for p in pieces {
        let w = &writes[p.write];
        let mut offset = w.offset + p.start as u64;
        let mut parts = w.parts(p.start..p.start + p.len);
        while parts.len() > PARTS_PER_REQUEST_MAX {
            let rest = parts.split_off(PARTS_PER_REQUEST_MAX);
            let len: usize = parts.iter().map(|b| b.len()).sum();
            requests.push((offset, std::mem::replace(&mut parts, rest)));
            offset += len as u64;
        }
        requests.push((offset, parts));
    }
    let mut ops: Vec<IoOp<'_>> = requests
        .iter()
        .map(|(offset, parts)| match parts.as_slice() {
            [buf] => IoOp::Write {
                offset: *offset,
                buf,
                fua: false,
            },
            bufs => IoOp::WriteVectored {
                offset: *offset,
                bufs,
                fua: false,
            },
        })
        .collect();
    device.submit(&mut ops).map_err(Error::from)
}

/// The most buffers one vectored request carries: Linux's IOV_MAX.
const PARTS_PER_REQUEST_MAX: usize = 1024;

/// Splits `pieces` of `writes` into those that may be submitted now and those that
/// must wait until the `busy` device ranges' writes completed: a piece that overlaps a
/// busy range is cut after the last block (`block_bytes`, the device's) it shares with
/// one, and that head waits; the rest of it goes now.
fn split_at_busy(
    writes: &[DeviceWrite],
    pieces: Vec<Piece>,
    busy: &[Range<u64>],
    block_bytes: usize,
) -> (Vec<Piece>, Vec<Piece>) {
    let (mut now, mut later) = (Vec::with_capacity(pieces.len()), Vec::new());
    for p in pieces {
        let from = writes[p.write].offset + p.start as u64;
        let to = from + p.len as u64;
        let shared_to = busy
            .iter()
            .filter(|r| r.start < to && from < r.end)
            .map(|r| r.end.min(to))
            .max();
        let Some(shared_to) = shared_to else {
            now.push(p);
            continue;
        };
        let head = ((shared_to - from) as usize)
            .next_multiple_of(block_bytes)
            .min(p.len);
        later.push(Piece { len: head, ..p });
        if head < p.len {
            now.push(Piece {
                write: p.write,
                start: p.start + head,
                len: p.len - head,
            });
        }
    }
    (now, later)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn write_at(offset: u64, len: usize) -> DeviceWrite {
        DeviceWrite::own(offset, hashkv_blockdev::AlignedBuf::new(len), len)
    }

    #[test]
    fn only_the_blocks_a_write_in_flight_shares_wait() {
        const BLOCK: usize = 4096;
        // Two appends continuing the blocks where earlier writes ended (at 8 KiB + 100
        // and 64 KiB + 10), and one into space nothing in flight touches.
        let writes = [
            write_at(8192, 5 * BLOCK),
            write_at(65536, 2 * BLOCK),
            write_at(1 << 20, 3 * BLOCK),
        ];
        let busy = [0..8192 + 4096, 32768..65536 + 4096];
        let all = pieces(&writes, 2 * BLOCK);
        assert_eq!(all.len(), 3 + 1 + 2, "cut at the piece size");
        let (now, later) = split_at_busy(&writes, all.clone(), &busy, BLOCK);
        assert_eq!(
            later,
            vec![
                Piece {
                    write: 0,
                    start: 0,
                    len: BLOCK
                },
                Piece {
                    write: 1,
                    start: 0,
                    len: BLOCK
                },
            ],
            "each append's first block waits"
        );
        let bytes = |ps: &[Piece]| ps.iter().map(|p| p.len).sum::<usize>();
        assert_eq!(bytes(&now) + bytes(&later), bytes(&all), "nothing lost");
        for p in &now {
            let from = writes[p.write].offset + p.start as u64;
            let to = from + p.len as u64;
            assert!(busy.iter().all(|r| to <= r.start || r.end <= from), "{p:?}");
        }
        // A busy range inside a piece holds back the piece up to its end.
        let (now, later) = split_at_busy(&writes, all, &[(1 << 20) + 100..(1 << 20) + 200], BLOCK);
        assert!(later.contains(&Piece {
            write: 2,
            start: 0,
            len: BLOCK
        }));
        assert_eq!(bytes(&now) + bytes(&later), 10 * BLOCK);
        // Nothing busy: everything goes now.
        let (now, later) = split_at_busy(&writes, pieces(&writes, BLOCK), &[], BLOCK);
        assert_eq!((now.len(), later.len()), (10, 0));
    }

    #[test]
    fn every_waiter_sees_the_outcome_once_the_writes_completed() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let w = WritesInFlight::start(Vec::new(), None, move |_| {
            rx.recv().unwrap();
            Err(Error::CommitThreadPanicked {
                message: "a failed write".into(),
            })
        });
        let waiter = {
            let w = w.clone();
            std::thread::spawn(move || w.wait())
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(
            !waiter.is_finished(),
            "waits while the writes are in flight"
        );
        tx.send(()).unwrap();
        assert!(waiter.join().unwrap().is_err());
        assert!(w.wait().is_err(), "a later waiter sees the same outcome");
    }
}
