//! The io_uring device's pool of caller-driven rings: more submitters than rings,
//! growth on demand, the arena on every ring, poisoning seen from every ring, tiny
//! rings with large batches, and `submit_across` from threads holding rings of the
//! same devices in opposite orders.

mod real_common;

use hashkv_blockdev::file::{create_file, open_device, OpenOptions};
use hashkv_blockdev::uring::{submit_across, UringDevice, RINGS_LIMIT};
use hashkv_blockdev::{AlignedBuf, BlockDevice, DeviceError, IoOp};
use real_common::{heap_buf, random_batches, read_region, test_dir, Model, TestBuf};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn open_with(dir: &Path, name: &str, size_bytes: u64, opts: &OpenOptions) -> Arc<UringDevice> {
    let path = dir.join(name);
    create_file(&path, size_bytes, false).expect("create device file");
    open_device(&path, opts).expect("open device file")
}

/// Runs `work` on a thread and fails the test if it has not finished in `limit`: a
/// lost wake-up or a deadlock shows up as a failure instead of a hung test run.
fn within(limit: Duration, what: &str, work: impl FnOnce() + Send + 'static) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        work();
        done_tx.send(()).unwrap();
    });
    if done_rx.recv_timeout(limit).is_err() {
        // A panic in the worker also lands here; join to report it if so.
        if worker.is_finished() {
            worker.join().unwrap();
        }
        panic!("{what} did not finish within {limit:?}");
    }
    worker.join().unwrap();
}

/// Twelve threads on a device of two rings: most of them wait for a ring, every batch
/// still completes with the right data, and the pool never grows past its limit.
#[test]
fn more_submitters_than_rings_wait_for_one() {
    let dir = test_dir();
    const THREADS: u64 = 12;
    const REGION: u64 = 2 * MIB;
    let opts = OpenOptions {
        rings_max: 2,
        ..OpenOptions::default()
    };
    let dev = open_with(dir.path(), "dev", THREADS * REGION, &opts);
    assert_eq!(dev.rings_max(), 2);
    assert_eq!(dev.rings_created(), 1, "one ring is made at open");
    let worker_dev = Arc::clone(&dev);
    within(
        Duration::from_secs(120),
        "12 submitters on 2 rings",
        move || {
            std::thread::scope(|scope| {
                for t in 0..THREADS {
                    let dev = Arc::clone(&worker_dev);
                    scope.spawn(move || {
                        let region = t * REGION..(t + 1) * REGION;
                        let mut model = Model::new(region, vec![0; REGION as usize]);
                        let d = Arc::clone(&dev);
                        let arena = move |len: usize| -> TestBuf { Box::new(d.alloc_buffer(len)) };
                        let alloc: &dyn Fn(usize) -> TestBuf =
                            if t % 2 == 0 { &arena } else { &heap_buf };
                        random_batches(
                            dev.as_ref(),
                            &mut model,
                            &[1, 4, 16, 1],
                            2,
                            0x9001 + t,
                            alloc,
                        );
                    });
                }
            });
        },
    );
    assert!(
        (1..=2).contains(&dev.rings_created()),
        "{} rings",
        dev.rings_created()
    );
    assert!(dev.poisoned().is_none());
}

/// Rings are made when concurrent submitters need them, not up front, and never more
/// than there were submitters at once.
#[test]
fn pool_grows_with_concurrent_submitters() {
    let dir = test_dir();
    const THREADS: usize = 6;
    // Whether two threads overlap in `submit` is up to the scheduler (other tests and
    // builds share the CPUs): the threads go on until the pool has grown or this long.
    const GROWTH_WAIT: Duration = Duration::from_secs(20);
    let dev = open_with(dir.path(), "dev", 16 * MIB, &OpenOptions::default());
    assert!(
        dev.rings_max() >= 16,
        "default rings_max {}",
        dev.rings_max()
    );
    // One thread at a time never needs a second ring.
    let mut buf = AlignedBuf::new(4096);
    for i in 0..200u64 {
        dev.read_at(i * 4096, &mut buf[..]).unwrap();
    }
    assert_eq!(dev.rings_created(), 1);
    let barrier = Barrier::new(THREADS);
    let deadline = std::time::Instant::now() + GROWTH_WAIT;
    std::thread::scope(|scope| {
        for t in 0..THREADS as u64 {
            let (dev, barrier) = (&dev, &barrier);
            scope.spawn(move || {
                let mut bufs: Vec<AlignedBuf> = (0..4).map(|_| AlignedBuf::new(64 << 10)).collect();
                barrier.wait();
                let mut i = 0u64;
                while i < 100 || (dev.rings_created() < 2 && std::time::Instant::now() < deadline) {
                    let mut ops: Vec<IoOp<'_>> = bufs
                        .iter_mut()
                        .enumerate()
                        .map(|(j, b)| IoOp::Read {
                            offset: ((t * 400 + i * 4 + j as u64) * (64 << 10)) % (16 * MIB),
                            buf: &mut b[..],
                        })
                        .collect();
                    dev.submit(&mut ops).unwrap();
                    i += 1;
                }
            });
        }
    });
    let rings = dev.rings_created();
    assert!(
        (2..=THREADS).contains(&rings),
        "{THREADS} threads blocking on I/O at once made {rings} rings"
    );
}

/// Rings made after open register the arena too: with four rings in the pool, which
/// one thread's batches take in turn, every arena read is a fixed-buffer op.
#[test]
fn every_ring_uses_the_arena() {
    let dir = test_dir();
    let dev = open_with(dir.path(), "dev", 4 * MIB, &OpenOptions::default());
    if !dev.fixed_buffers_registered() {
        println!(
            "skipped: fixed buffers unavailable: {:?}",
            dev.fixed_buffers_unavailable()
        );
        return;
    }
    assert_eq!(dev.create_rings(4), 4);
    assert_eq!(dev.create_rings(2), 4, "create_rings never removes rings");
    let mut buf = dev.alloc_buffer(4096);
    assert!(buf.is_from_arena());
    let before = dev.fixed_op_count();
    for i in 0..8u64 {
        dev.read_at(i * 4096, &mut buf[..4096]).unwrap();
    }
    assert_eq!(dev.fixed_op_count(), before + 8);
    // Heap buffers stay plain ops on every ring.
    let mut heap = AlignedBuf::new(4096);
    for i in 0..8u64 {
        dev.read_at(i * 4096, &mut heap[..]).unwrap();
    }
    assert_eq!(dev.fixed_op_count(), before + 8);
    assert_eq!(dev.rings_created(), 4);
}

/// An I/O error on one ring poisons the device: writes and flushes are refused from
/// every thread whatever ring it would get, reads still work on every ring.
#[test]
fn poisoning_is_seen_from_every_ring() {
    let dir = test_dir();
    let path = dir.path().join("dev");
    create_file(&path, 4 * MIB, false).unwrap();
    let dev = open_device(&path, &OpenOptions::default()).unwrap();
    assert_eq!(dev.create_rings(4), 4);
    let block = dev.geometry().logical_block_bytes as usize;
    let mut buf = AlignedBuf::new(block);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(MIB)
        .unwrap();
    let err = dev.read_at(3 * MIB, &mut buf[..]).unwrap_err();
    assert!(matches!(err, DeviceError::Io { op: "read", .. }), "{err:?}");
    let first = dev.poisoned().expect("poisoned").to_string();

    let barrier = Barrier::new(4);
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let (dev, barrier, first) = (&dev, &barrier, &first);
            scope.spawn(move || {
                let mut buf = AlignedBuf::new(block);
                barrier.wait();
                for i in 0..8u64 {
                    match dev.write_at((t * 8 + i) * block as u64, &buf[..]) {
                        Err(DeviceError::Poisoned { first_error, .. }) => {
                            assert_eq!(&first_error, first)
                        }
                        other => panic!("write on a poisoned device: {other:?}"),
                    }
                    assert!(matches!(dev.flush(), Err(DeviceError::Poisoned { .. })));
                    dev.read_at((t * 8 + i) * block as u64, &mut buf[..])
                        .expect("reads are still attempted");
                }
            });
        }
    });
    // One thread's reads take every ring in turn.
    for i in 0..8u64 {
        dev.read_at(i * block as u64, &mut buf[..]).unwrap();
    }
    assert_eq!(dev.poisoned().map(|e| e.to_string()), Some(first));
    assert_eq!(dev.counters()[0].write_ops, 0);
}

/// Rings of one and two entries: batches many times their size, and a vector write
/// continued over several SQEs, still complete with the right data.
#[test]
fn tiny_rings_take_large_batches() {
    for ring_entries in [1, 2] {
        let dir = test_dir();
        let opts = OpenOptions {
            ring_entries,
            ..OpenOptions::default()
        };
        let dev = open_with(dir.path(), "dev", 8 * MIB, &opts);
        assert_eq!(dev.ring_entries(), ring_entries);
        assert_eq!(dev.in_flight_max(), ring_entries as usize);
        let mut model = Model::new(0..4 * MIB, vec![0; 4 << 20]);
        let d = Arc::clone(&dev);
        let arena = move |len: usize| -> TestBuf { Box::new(d.alloc_buffer(len)) };
        random_batches(dev.as_ref(), &mut model, &[128, 33, 1], 1, 11, &arena);

        let block = dev.geometry().logical_block_bytes as usize;
        const PIECES: usize = 2100; // three WRITEV SQEs, one at a time on a 1-entry ring
        let bufs: Vec<AlignedBuf> = (0..PIECES)
            .map(|i| {
                let mut b = AlignedBuf::new(block);
                b.fill((i % 249) as u8 + 1);
                b
            })
            .collect();
        let refs: Vec<&[u8]> = bufs.iter().map(|b| &b[..block]).collect();
        let offset = 4 * MIB;
        dev.submit(&mut [IoOp::WriteVectored {
            offset,
            bufs: &refs,
            fua: false,
        }])
        .unwrap();
        let back = read_region(dev.as_ref(), offset..offset + (PIECES * block) as u64);
        assert!(
            back == refs.concat(),
            "vectored write read back differently"
        );
        assert_eq!(dev.rings_created(), 1);
    }
}

/// Two threads calling `submit_across` over the same two one-ring devices in opposite
/// orders, and a third submitting to one of them directly: none may wait for a ring
/// while holding the other's, or they deadlock.
#[test]
fn submit_across_in_opposite_orders_does_not_deadlock() {
    let dir = test_dir();
    let opts = OpenOptions {
        rings_max: 1,
        use_fixed_buffers: false,
        ..OpenOptions::default()
    };
    let a = open_with(dir.path(), "a", 4 * MIB, &opts);
    let b = open_with(dir.path(), "b", 4 * MIB, &opts);
    let (a2, b2) = (Arc::clone(&a), Arc::clone(&b));
    within(
        Duration::from_secs(60),
        "crossed submit_across",
        move || {
            std::thread::scope(|scope| {
                for t in 0..3u64 {
                    let (a, b) = (&a2, &b2);
                    scope.spawn(move || {
                        let mut x = AlignedBuf::new(64 << 10);
                        let mut y = AlignedBuf::new(64 << 10);
                        for i in 0..300u64 {
                            let offset = ((t * 300 + i) * (64 << 10)) % (4 * MIB);
                            x[..8].copy_from_slice(&i.to_le_bytes());
                            let mut on_x = [IoOp::Write {
                                offset,
                                buf: &x[..],
                                fua: false,
                            }];
                            let mut on_y = [IoOp::Read {
                                offset,
                                buf: &mut y[..],
                            }];
                            match t {
                                0 => submit_across(&mut [(a, &mut on_x), (b, &mut on_y)]),
                                1 => submit_across(&mut [(b, &mut on_x), (a, &mut on_y)]),
                                _ => a.submit(&mut on_y),
                            }
                            .unwrap();
                        }
                    });
                }
            });
        },
    );
    assert_eq!((a.rings_created(), b.rings_created()), (1, 1));
    // Thread 0's writes on a and thread 1's on b, 300 each; reads likewise.
    assert_eq!(a.counters()[0].write_ops, 300);
    assert_eq!(b.counters()[0].write_ops, 300);
    assert_eq!(a.counters()[0].read_ops, 600);
    assert_eq!(b.counters()[0].read_ops, 300);
}

#[test]
fn rings_max_and_ring_entries_outside_their_ranges_are_refused() {
    let dir = test_dir();
    let path = dir.path().join("dev");
    create_file(&path, MIB, false).unwrap();
    for (rings_max, ring_entries) in [(0, 256), (RINGS_LIMIT + 1, 256), (4, 0), (4, 8192)] {
        let opts = OpenOptions {
            rings_max,
            ring_entries,
            ..OpenOptions::default()
        };
        let err = open_device(&path, &opts).unwrap_err();
        assert!(matches!(err, DeviceError::Config { .. }), "{err:?}");
    }
    let opts = OpenOptions {
        rings_max: RINGS_LIMIT,
        ..OpenOptions::default()
    };
    let dev = open_device(&path, &opts).unwrap();
    assert_eq!((dev.rings_max(), dev.rings_created()), (RINGS_LIMIT, 1));
}
