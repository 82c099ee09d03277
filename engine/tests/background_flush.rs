//! The background flusher: the write that fills the write cache returns without
//! waiting for the flush, a writer waits only once the flush pipeline is full, and
//! what the flusher commits survives a process crash. A device whose flushes wait at a
//! gate shows which writer waits for what; one whose writes are slow shows a flush's
//! writes in flight while the next flush places and writes, never two writes of one
//! block at once.

mod common;

use common::{small_options, KIB, MIB};
use hashkv::{Db, Mode, Options};
use hashkv_blockdev::sim::{SimConfig, SimDevice};
use hashkv_blockdev::{BlockDevice, CounterSnapshot, Geometry, IoOp};
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CACHE_BYTES: u64 = 16 * KIB;
/// Long enough for any write that does not wait for the device on a loaded machine.
const NO_WAIT_LIMIT: Duration = Duration::from_secs(20);

fn key(i: u64) -> Vec<u8> {
    format!("key{i:08}").into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    // Large enough to live in the value store in the modes that separate values.
    format!("value {i} {}", "x".repeat(300 + (i % 5) as usize * 100)).into_bytes()
}

fn options(mode: Mode) -> Options {
    small_options()
        .with_mode(mode)
        .with_write_cache_bytes(CACHE_BYTES)
}

/// A simulated device whose flushes wait while the gate is shut.
struct GatedDevice {
    inner: Arc<SimDevice>,
    shut: Mutex<bool>,
    opened: Condvar,
}

impl GatedDevice {
    fn new(inner: Arc<SimDevice>) -> GatedDevice {
        GatedDevice {
            inner,
            shut: Mutex::new(false),
            opened: Condvar::new(),
        }
    }

    fn set_shut(&self, shut: bool) {
        *self.shut.lock() = shut;
        self.opened.notify_all();
    }
}

impl BlockDevice for GatedDevice {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }
    fn submit(&self, ops: &mut [IoOp<'_>]) -> hashkv_blockdev::Result<()> {
        self.inner.submit(ops)
    }
    fn flush(&self) -> hashkv_blockdev::Result<()> {
        let mut shut = self.shut.lock();
        while *shut {
            self.opened.wait(&mut shut);
        }
        drop(shut);
        self.inner.flush()
    }
    fn counters(&self) -> Vec<CounterSnapshot> {
        self.inner.counters()
    }
    fn poisoned(&self) -> Option<Arc<hashkv_blockdev::DeviceError>> {
        self.inner.poisoned()
    }
}

/// A simulated device whose writes take `WRITE_DELAY` each, counting how many write
/// submissions were in flight at once, how many wrote a byte that another one in
/// flight wrote too, and which were submitted off the thread that placed them (on a
/// flush's own I/O thread).
#[derive(Default)]
struct SlowWrites {
    inner: Option<Arc<SimDevice>>,
    /// Device byte ranges of the write submissions in flight, by submission.
    in_flight: Mutex<Vec<(usize, Vec<std::ops::Range<u64>>)>>,
    in_flight_max: AtomicUsize,
    overlapping: AtomicUsize,
    from_io_threads: AtomicUsize,
    writes: AtomicUsize,
}

impl SlowWrites {
    fn inner(&self) -> &SimDevice {
        self.inner.as_ref().expect("a simulated device")
    }
}

/// Long enough that the next flush is placed while a flush's writes are in flight.
const WRITE_DELAY: Duration = Duration::from_millis(3);

impl BlockDevice for SlowWrites {
    fn geometry(&self) -> Geometry {
        self.inner().geometry()
    }
    fn submit(&self, ops: &mut [IoOp<'_>]) -> hashkv_blockdev::Result<()> {
        let ranges: Vec<_> = ops
            .iter()
            .filter_map(|op| match op {
                IoOp::Write { offset, buf, .. } => Some(*offset..*offset + buf.len() as u64),
                _ => None,
            })
            .collect();
        if ranges.is_empty() {
            return self.inner().submit(ops);
        }
        let id = self.writes.fetch_add(1, Ordering::SeqCst);
        {
            let mut in_flight = self.in_flight.lock();
            let shared = in_flight.iter().flat_map(|(_, rs)| rs).any(|r| {
                ranges
                    .iter()
                    .any(|mine| mine.start < r.end && r.start < mine.end)
            });
            if shared {
                self.overlapping.fetch_add(1, Ordering::SeqCst);
            }
            in_flight.push((id, ranges));
            self.in_flight_max
                .fetch_max(in_flight.len(), Ordering::SeqCst);
        }
        if std::thread::current().name() == Some("hashkv-flush-io") {
            self.from_io_threads.fetch_add(1, Ordering::SeqCst);
        }
        std::thread::sleep(WRITE_DELAY);
        let r = self.inner().submit(ops);
        self.in_flight.lock().retain(|(other, _)| *other != id);
        r
    }
    fn flush(&self) -> hashkv_blockdev::Result<()> {
        self.inner().flush()
    }
    fn counters(&self) -> Vec<CounterSnapshot> {
        self.inner().counters()
    }
    fn poisoned(&self) -> Option<Arc<hashkv_blockdev::DeviceError>> {
        self.inner().poisoned()
    }
}

/// Writes keys `from..` until `bytes` of keys and values are written, in a thread;
/// returns the next key once every put returned, or `None` if they did not within
/// `NO_WAIT_LIMIT`.
fn put_in_thread(db: &Arc<Db>, from: u64, bytes: u64) -> mpsc::Receiver<u64> {
    let (tx, rx) = mpsc::channel();
    let db = db.clone();
    std::thread::spawn(move || {
        let (mut i, mut written) = (from, 0);
        while written < bytes {
            db.put(&key(i), &value(i)).unwrap();
            written += (key(i).len() + value(i).len()) as u64;
            i += 1;
        }
        drop(db);
        let _ = tx.send(i);
    });
    rx
}

fn wait_for_flush(db: &Db, mode: Mode) {
    let deadline = Instant::now() + NO_WAIT_LIMIT;
    while db.stats().flushes == 0 {
        assert!(Instant::now() < deadline, "{mode:?}: no background flush");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// The lsm mode writes no values to the device, so its flushes never reach the gate.
test_in_modes!(the_write_that_fills_the_cache_does_not_wait_for_its_flush: hashkv, vlog);
fn the_write_that_fills_the_cache_does_not_wait_for_its_flush(mode: Mode) {
    let sim = Arc::new(SimDevice::new(SimConfig::new(8 * MIB, 31)).unwrap());
    let dev = Arc::new(GatedDevice::new(sim));
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::format_device(dev.clone(), dir.path(), &options(mode)).unwrap());
    dev.set_shut(true);
    // One and a half caches: the first fills it (a flush starts and waits at the
    // gate), the rest go to the second map.
    let done = put_in_thread(&db, 0, CACHE_BYTES * 3 / 2);
    let n = done.recv_timeout(NO_WAIT_LIMIT).unwrap_or_else(|_| {
        panic!("{mode:?}: a write waited for a flush of a cache not yet twice full")
    });
    // Three caches (one placed and waiting for its commit at the gate, one placed
    // behind it, the active one full), or four when the flusher came late (the second
    // placed map grew to twice the cache): the next writer waits for the device.
    let blocked = put_in_thread(&db, n, CACHE_BYTES * 5 / 2);
    std::thread::sleep(Duration::from_millis(300));
    let writers_waited = blocked.try_recv().is_err();
    // Open before asserting: a failed test must not leave the store's drop waiting.
    dev.set_shut(false);
    assert!(
        writers_waited,
        "{mode:?}: writers ran past four caches while the device could not flush"
    );
    let end = blocked
        .recv_timeout(NO_WAIT_LIMIT)
        .expect("writers resume once the device flushes");
    wait_for_flush(&db, mode);
    for i in 0..end {
        assert_eq!(
            db.get(&key(i)).unwrap(),
            Some(value(i)),
            "{mode:?}: key {i}"
        );
    }
    Arc::try_unwrap(db).ok().unwrap().close().unwrap();
}

/// Waits until flushes have written more than `above` bytes to the device (a flush
/// writes when it is placed, before its commit); returns the bytes, or `None` if that
/// did not happen within `NO_WAIT_LIMIT`.
fn wait_for_flush_writes(db: &Db, above: u64) -> Option<u64> {
    let deadline = Instant::now() + NO_WAIT_LIMIT;
    loop {
        let written = db.stats().flush_device_bytes_written;
        if written > above {
            return Some(written);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// The flush pipeline: while one flush's device flush waits, the next flush places and
// writes its records; readers find both maps in the cache meanwhile, and both commit
// once the device flushes.
test_in_modes!(the_next_flush_writes_while_the_device_flushes: hashkv, vlog);
fn the_next_flush_writes_while_the_device_flushes(mode: Mode) {
    let sim = Arc::new(SimDevice::new(SimConfig::new(8 * MIB, 37)).unwrap());
    let dev = Arc::new(GatedDevice::new(sim.clone()));
    let dir = tempfile::tempdir().unwrap();
    let o = options(mode);
    let db = Arc::new(Db::format_device(dev.clone(), dir.path(), &o).unwrap());
    dev.set_shut(true);
    let first = put_in_thread(&db, 0, CACHE_BYTES).recv_timeout(NO_WAIT_LIMIT);
    let first_placed = wait_for_flush_writes(&db, 0);
    let second = put_in_thread(&db, first.unwrap_or(0), CACHE_BYTES).recv_timeout(NO_WAIT_LIMIT);
    let second_placed = wait_for_flush_writes(&db, first_placed.unwrap_or(u64::MAX));
    // Neither is committed while its device flush waits.
    let committed_at_the_gate = db.stats().flushes;
    let end = second.unwrap_or(0);
    let served: Vec<u64> = (0..end)
        .filter(|&i| db.get(&key(i)).unwrap() != Some(value(i)))
        .collect();
    // Open before asserting: a failed test must not leave the store's drop waiting.
    dev.set_shut(false);
    assert!(first.is_ok() && second.is_ok(), "{mode:?}: a writer waited");
    assert!(
        first_placed.is_some(),
        "{mode:?}: the first flush wrote nothing"
    );
    assert!(
        second_placed.is_some(),
        "{mode:?}: the second flush did not write while the first one's device flush waited"
    );
    assert_eq!(
        committed_at_the_gate, 0,
        "{mode:?}: a flush committed before its device flush"
    );
    assert!(
        served.is_empty(),
        "{mode:?}: keys not read back: {served:?}"
    );
    Arc::try_unwrap(db).ok().unwrap().close().unwrap();
    let db = Db::open_device(sim, dir.path(), &o).unwrap();
    for i in 0..end {
        assert_eq!(
            db.get(&key(i)).unwrap(),
            Some(value(i)),
            "{mode:?}: key {i}"
        );
    }
    db.close().unwrap();
}

// The flusher commits a full map with no further call: it survives a process crash
// (the index's log is kept whole, the device keeps its flushed writes), and what
// survives is a prefix of the writes.
test_in_modes!(a_full_cache_is_committed_in_the_background);
fn a_full_cache_is_committed_in_the_background(mode: Mode) {
    let dev = Arc::new(SimDevice::new(SimConfig::new(8 * MIB, 23)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let o = options(mode);
    let db = Arc::new(Db::format_device(dev.clone(), dir.path(), &o).unwrap());
    let n = put_in_thread(&db, 0, CACHE_BYTES)
        .recv_timeout(NO_WAIT_LIMIT)
        .unwrap();
    wait_for_flush(&db, mode);
    let _ = Arc::try_unwrap(db).ok().unwrap().crash_for_test();
    let db = Db::open_device(Arc::new(dev.crash()), dir.path(), &o).unwrap();
    // At least half the cache's bytes, whatever the cache counts per entry.
    let (mut kept, mut kept_bytes) = (0, 0);
    while kept < n && db.get(&key(kept)).unwrap() == Some(value(kept)) {
        kept_bytes += (key(kept).len() + value(kept).len()) as u64;
        kept += 1;
    }
    for i in kept..n {
        assert_eq!(
            db.get(&key(i)).unwrap(),
            None,
            "{mode:?}: key {i} after a gap"
        );
    }
    assert!(
        kept_bytes >= CACHE_BYTES / 2,
        "{mode:?}: {kept} keys ({kept_bytes} bytes) survived of a full cache"
    );
    db.close().unwrap();
}

// A flush's writes run on their own thread while the next flush places, and the next
// flush's writes go beside them, except where they overlap: its first write per group
// or log rewrites the partly written block the last one wrote, and waits. So no two
// writes of one block are ever in flight together. Everything written reads back
// after a reopen.
test_in_modes!(a_flush_writes_beside_the_last_ones_but_never_over_a_block_in_flight: hashkv, vlog);
fn a_flush_writes_beside_the_last_ones_but_never_over_a_block_in_flight(mode: Mode) {
    let sim = Arc::new(SimDevice::new(SimConfig::new(8 * MIB, 41)).unwrap());
    let dev = Arc::new(SlowWrites {
        inner: Some(sim.clone()),
        ..SlowWrites::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let o = options(mode);
    let db = Arc::new(Db::format_device(dev.clone(), dir.path(), &o).unwrap());
    let writes_at_format = dev.writes.load(Ordering::SeqCst);
    // Two writers, twenty caches: flushes follow each other closely.
    let a = put_in_thread(&db, 0, CACHE_BYTES * 10);
    let b = put_in_thread(&db, 1_000_000, CACHE_BYTES * 10);
    let end_a = a.recv_timeout(NO_WAIT_LIMIT).expect("writers finish");
    let end_b = b.recv_timeout(NO_WAIT_LIMIT).expect("writers finish");
    db.flush().unwrap();
    let flush_writes = dev.writes.load(Ordering::SeqCst) - writes_at_format;
    assert!(
        flush_writes >= 10,
        "{mode:?}: only {flush_writes} write submissions"
    );
    assert_eq!(
        dev.overlapping.load(Ordering::SeqCst),
        0,
        "{mode:?}: a write over a block another write in flight wrote"
    );
    let in_flight_max = dev.in_flight_max.load(Ordering::SeqCst);
    eprintln!("{mode:?}: {in_flight_max} write submissions in flight at most");
    assert!(
        in_flight_max >= 2,
        "{mode:?}: no flush's writes went beside the previous flush's"
    );
    assert!(
        dev.from_io_threads.load(Ordering::SeqCst) * 2 >= flush_writes,
        "{mode:?}: most flush writes were submitted by the thread that placed them"
    );
    Arc::try_unwrap(db).ok().unwrap().close().unwrap();
    let db = Db::open_device(sim, dir.path(), &o).unwrap();
    for i in (0..end_a).chain(1_000_000..end_b) {
        assert_eq!(
            db.get(&key(i)).unwrap(),
            Some(value(i)),
            "{mode:?}: key {i}"
        );
    }
    db.close().unwrap();
}

/// A simulated device whose flushes wait while the gate is shut, but only on the
/// commit thread; it counts the device flushes of the thread named `GC_THREAD` and
/// the write submissions of flushes' I/O threads.
struct CommitGate {
    gate: GatedDevice,
    gc_flushes: AtomicUsize,
    flush_writes: AtomicUsize,
}

const GC_THREAD: &str = "test-gc";

impl BlockDevice for CommitGate {
    fn geometry(&self) -> Geometry {
        self.gate.geometry()
    }
    fn submit(&self, ops: &mut [IoOp<'_>]) -> hashkv_blockdev::Result<()> {
        if ops.iter().any(|op| op.is_write())
            && std::thread::current().name() == Some("hashkv-flush-io")
        {
            self.flush_writes.fetch_add(1, Ordering::SeqCst);
        }
        self.gate.submit(ops)
    }
    fn flush(&self) -> hashkv_blockdev::Result<()> {
        match std::thread::current().name() {
            Some("hashkv-commit") => self.gate.flush(),
            name => {
                if name == Some(GC_THREAD) {
                    self.gc_flushes.fetch_add(1, Ordering::SeqCst);
                }
                self.gate.inner.flush()
            }
        }
    }
    fn counters(&self) -> Vec<CounterSnapshot> {
        self.gate.counters()
    }
    fn poisoned(&self) -> Option<Arc<hashkv_blockdev::DeviceError>> {
        self.gate.poisoned()
    }
}

/// Waits until `count` exceeds `above`; false if it did not within `NO_WAIT_LIMIT`.
fn wait_above(count: &AtomicUsize, above: usize) -> bool {
    let deadline = Instant::now() + NO_WAIT_LIMIT;
    while count.load(Ordering::SeqCst) <= above {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// Puts keys `from..` worth half a cache (no write waits, and no flush starts) and
/// flushes them in a thread; returns the next key and the flush's outcome, which waits
/// for the commit thread.
fn put_and_flush(db: &Arc<Db>, from: u64) -> (u64, std::thread::JoinHandle<hashkv::Result<()>>) {
    let mut i = from;
    let mut written = 0;
    while written < CACHE_BYTES / 2 {
        db.put(&key(i), &value(i)).unwrap();
        written += (key(i).len() + value(i).len()) as u64;
        i += 1;
    }
    let db = db.clone();
    (i, std::thread::spawn(move || db.flush()))
}

/// A GC queues its plan behind the placed flushes and waits for the commit thread
/// without the commit lock: while the commit thread is stuck in a device flush, the
/// GC begins, reads and writes its survivors, and a flush after it still places and
/// writes. (A GC that drained the pipeline under the lock waited at its begin, and
/// every flush behind it waited for the lock.)
#[test]
fn a_gc_waits_for_its_commit_without_keeping_flushes_from_placing() {
    let sim = Arc::new(SimDevice::new(SimConfig::new(8 * MIB, 43)).unwrap());
    let dev = Arc::new(CommitGate {
        gate: GatedDevice::new(sim.clone()),
        gc_flushes: AtomicUsize::new(0),
        flush_writes: AtomicUsize::new(0),
    });
    let dir = tempfile::tempdir().unwrap();
    let o = options(Mode::HashKv);
    let db = Arc::new(Db::format_device(dev.clone(), dir.path(), &o).unwrap());
    // Every key twice: the groups hold garbage, and survivors.
    let mut end = 0;
    for _ in 0..2 {
        let (next, flushed) = put_and_flush(&db, 0);
        flushed.join().unwrap().unwrap();
        end = next;
    }
    dev.gate.set_shut(true);
    let writes = dev.flush_writes.load(Ordering::SeqCst);
    let (end1, first) = put_and_flush(&db, 1_000_000);
    let first_placed = wait_above(&dev.flush_writes, writes);
    let gc = {
        let db = db.clone();
        std::thread::Builder::new()
            .name(GC_THREAD.into())
            .spawn(move || db.collect_garbage())
            .unwrap()
    };
    let gc_wrote = first_placed && wait_above(&dev.gc_flushes, 0);
    let writes = dev.flush_writes.load(Ordering::SeqCst);
    let (end2, second) = put_and_flush(&db, 2_000_000);
    let second_placed = gc_wrote && wait_above(&dev.flush_writes, writes);
    let gc_waited = !gc.is_finished();
    // Open before asserting: a failed test must not leave the store's drop waiting.
    dev.gate.set_shut(false);
    assert!(first_placed, "the first flush did not write");
    assert!(
        gc_wrote,
        "the GC did not begin while a flush waited for its commit"
    );
    assert!(second_placed, "a flush could not place while a GC waited");
    assert!(
        gc_waited,
        "the GC's commit did not wait for the commit thread"
    );
    assert!(gc.join().unwrap().unwrap(), "the GC collected nothing");
    first.join().unwrap().unwrap();
    second.join().unwrap().unwrap();
    assert!(db.check().unwrap().is_clean());
    Arc::try_unwrap(db).ok().unwrap().close().unwrap();
    let db = Db::open_device(sim, dir.path(), &o).unwrap();
    for i in (0..end).chain(1_000_000..end1).chain(2_000_000..end2) {
        assert_eq!(db.get(&key(i)).unwrap(), Some(value(i)), "key {i}");
    }
    db.close().unwrap();
}
