//! The io_uring device on regular files with O_DIRECT, on a disk-backed filesystem:
//! discovery, data integrity under concurrent batched I/O, and every kind of bad input.

mod real_common;

use hashkv_blockdev::file::{create_file, open_device, DeviceKind, OpenOptions};
use hashkv_blockdev::uring::UringDevice;
use hashkv_blockdev::{AlignedBuf, BlockDevice, DeviceError, IoOp};
use real_common::{heap_buf, random_batches, read_region, test_dir, Model, TestBuf};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

const MIB: u64 = 1 << 20;
const DEPTHS: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

fn new_device(dir: &Path, name: &str, size_bytes: u64) -> (PathBuf, Arc<UringDevice>) {
    let path = dir.join(name);
    create_file(&path, size_bytes, false).expect("create device file");
    let dev = open_device(&path, &OpenOptions::default()).expect("open device file");
    (path, dev)
}

/// What statx says about O_DIRECT alignment, computed independently of the crate.
fn expected_file_block_bytes(path: &Path) -> u32 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: zeroed statx is valid; statx writes into it through a valid pointer.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            0,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc == 0 && stx.stx_mask & libc::STATX_DIOALIGN != 0 && stx.stx_dio_offset_align != 0 {
        stx.stx_dio_offset_align.max(stx.stx_dio_mem_align).max(512)
    } else {
        4096
    }
}

#[test]
fn file_discovery_size_and_block_sizes() {
    let dir = test_dir();
    let (path, dev) = new_device(dir.path(), "dev0", 16 * MIB);
    let g = dev.geometry();
    println!(
        "{}: {g:?}, ring {} entries",
        path.display(),
        dev.ring_entries()
    );
    assert_eq!(dev.kind(), DeviceKind::RegularFile);
    assert_eq!(g.size_bytes, 16 * MIB);
    assert_eq!(g.logical_block_bytes, expected_file_block_bytes(&path));
    assert!(g.logical_block_bytes.is_power_of_two());
    assert!((512..=4096).contains(&g.logical_block_bytes));
    assert!(g.physical_block_bytes >= g.logical_block_bytes);
    assert!(dev.ring_entries() >= OpenOptions::default().ring_entries);
    // A fresh device file reads as zeroes.
    let whole = read_region(dev.as_ref(), 0..g.size_bytes);
    assert!(whole.iter().all(|&b| b == 0));
}

#[test]
fn create_file_refuses_existing_and_unaligned_sizes() {
    let dir = test_dir();
    let path = dir.path().join("dev");
    create_file(&path, 4 * MIB, false).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 * MIB);
    let err = create_file(&path, 4 * MIB, false).unwrap_err();
    assert!(matches!(err, DeviceError::AlreadyExists { .. }), "{err:?}");
    assert!(err.to_string().contains("already exists"), "{err}");

    // Replacing is allowed when asked, but not while someone has it open.
    let dev = open_device(&path, &OpenOptions::default()).unwrap();
    let err = create_file(&path, 8 * MIB, true).unwrap_err();
    assert!(matches!(err, DeviceError::InUse { .. }), "{err:?}");
    drop(dev);
    create_file(&path, 8 * MIB, true).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 8 * MIB);

    let err = create_file(&dir.path().join("odd"), 4 * MIB + 100, false).unwrap_err();
    assert!(matches!(err, DeviceError::SizeUnaligned { .. }), "{err:?}");
    assert!(!dir.path().join("odd").exists());
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("dev")], "{names:?}");

    // OpenOptions::create_size_bytes creates a missing file; None requires it to exist.
    let created = dir.path().join("created");
    let opts = OpenOptions {
        create_size_bytes: Some(2 * MIB),
        ..OpenOptions::default()
    };
    let dev = open_device(&created, &opts).unwrap();
    assert_eq!(dev.geometry().size_bytes, 2 * MIB);
}

/// 8 threads, each on its own region, every batch depth from 1 to 128; half of them
/// on registered (fixed) buffers, half on heap buffers.
#[test]
fn round_trip_from_8_threads_at_every_depth() {
    let dir = test_dir();
    const THREADS: u64 = 8;
    const REGION: u64 = 4 * MIB;
    let (_path, dev) = new_device(dir.path(), "dev", THREADS * REGION);
    if !dev.fixed_buffers_registered() {
        println!(
            "note: fixed buffers unavailable: {:?}",
            dev.fixed_buffers_unavailable()
        );
    }
    let totals: Vec<(u64, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let dev = Arc::clone(&dev);
                scope.spawn(move || {
                    let region = t * REGION..(t + 1) * REGION;
                    let mut model = Model::new(region, vec![0; REGION as usize]);
                    let seed = 0xB10C_0000 + t;
                    if t % 2 == 0 {
                        let d = Arc::clone(&dev);
                        let alloc = move |len: usize| -> TestBuf { Box::new(d.alloc_buffer(len)) };
                        random_batches(dev.as_ref(), &mut model, &DEPTHS, 2, seed, &alloc)
                    } else {
                        random_batches(dev.as_ref(), &mut model, &DEPTHS, 2, seed, &heap_buf)
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let writes: u64 = totals.iter().map(|t| t.0).sum();
    let reads: u64 = totals.iter().map(|t| t.1).sum();
    let c = dev.counters();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].write_ops, writes);
    // Each thread's final check reads its region in 1 MiB requests.
    assert_eq!(c[0].read_ops, reads + THREADS * REGION / MIB);
    assert!(c[0].write_bytes > 0 && c[0].read_bytes > 0);
    if dev.fixed_buffers_registered() {
        assert!(
            dev.fixed_op_count() > 0,
            "arena buffers did not use fixed ops"
        );
    }
    dev.flush().unwrap();
    assert_eq!(dev.counters()[0].flushes, 1);
    assert!(dev.poisoned().is_none());
}

#[test]
fn batches_larger_than_the_ring_are_queued() {
    let dir = test_dir();
    let path = dir.path().join("dev");
    create_file(&path, 8 * MIB, false).unwrap();
    let opts = OpenOptions {
        ring_entries: 4,
        use_fixed_buffers: false,
        ..OpenOptions::default()
    };
    let dev = open_device(&path, &opts).unwrap();
    assert_eq!(dev.ring_entries(), 4);
    assert_eq!(dev.in_flight_max(), 4);
    assert!(!dev.fixed_buffers_registered());
    let mut model = Model::new(0..8 * MIB, vec![0; 8 << 20]);
    random_batches(dev.as_ref(), &mut model, &[128, 64, 3], 1, 7, &heap_buf);
    assert_eq!(dev.fixed_op_count(), 0);
}

#[test]
fn writev_with_more_iovecs_than_one_sqe_carries() {
    let dir = test_dir();
    let (_path, dev) = new_device(dir.path(), "dev", 16 * MIB);
    let block = dev.geometry().logical_block_bytes as usize;
    const PIECES: usize = 2500; // > SQE_IOVECS_MAX (1024): continued over 3 SQEs
    let mut bufs: Vec<AlignedBuf> = (0..PIECES)
        .map(|i| {
            let mut b = AlignedBuf::new(block);
            b.fill((i % 251) as u8);
            b
        })
        .collect();
    bufs[7][..8].copy_from_slice(b"marker!!");
    let refs: Vec<&[u8]> = bufs.iter().map(|b| &b[..block]).collect();
    let offset = dev.geometry().size_bytes - (PIECES * block) as u64;
    dev.submit(&mut [IoOp::WriteVectored {
        offset,
        bufs: &refs,
        fua: true,
    }])
    .unwrap();
    let back = read_region(dev.as_ref(), offset..offset + (PIECES * block) as u64);
    let expected: Vec<u8> = refs.concat();
    assert!(back == expected, "vectored write read back differently");
    let c = dev.counters()[0];
    assert_eq!(c.write_ops, 1);
    assert_eq!(c.write_bytes, (PIECES * block) as u64);
}

#[test]
fn missing_path_directory_and_special_files_are_typed_errors() {
    let dir = test_dir();
    let opts = OpenOptions::default();

    let missing = dir.path().join("no-such-device");
    let err = open_device(&missing, &opts).unwrap_err();
    assert!(matches!(err, DeviceError::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("no-such-device") && msg.contains("no such file"),
        "{msg}"
    );
    assert!(
        !missing.exists(),
        "open without create_size_bytes must not create"
    );

    let err = open_device(dir.path(), &opts).unwrap_err();
    assert!(matches!(err, DeviceError::IsDirectory { .. }), "{err:?}");
    assert!(err.to_string().contains("is a directory"), "{err}");

    let err = open_device(Path::new("/dev/null"), &opts).unwrap_err();
    assert!(
        matches!(err, DeviceError::UnsupportedKind { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("/dev/null: not a block device or a regular file"),
        "{err}"
    );

    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let err = open_device(&fifo, &opts).unwrap_err();
    assert!(
        matches!(err, DeviceError::UnsupportedKind { .. }),
        "{err:?}"
    );
}

#[test]
fn second_handle_in_this_process_is_refused() {
    let dir = test_dir();
    let (path, dev) = new_device(dir.path(), "dev", 4 * MIB);
    let err = open_device(&path, &OpenOptions::default()).unwrap_err();
    assert!(matches!(err, DeviceError::InUse { .. }), "{err:?}");
    assert!(err.to_string().contains("already opened"), "{err}");
    // The refused opener did not disturb the holder.
    dev.write_at(0, &AlignedBuf::new(4096)).unwrap();
    drop(dev);
    // Released on close.
    open_device(&path, &OpenOptions::default()).unwrap();
}

const HOLDER_ENV: &str = "HASHKV_BLOCKDEV_TEST_HOLD_PATH";

/// Not a test by itself: the child process of `second_process_is_refused`. It opens
/// the device named in the environment, says so, and holds it until stdin closes.
#[test]
#[ignore = "helper process for second_process_is_refused"]
fn helper_hold_device_open() {
    let path = PathBuf::from(std::env::var(HOLDER_ENV).expect("run by second_process_is_refused"));
    let _dev = open_device(&path, &OpenOptions::default()).expect("child opens device");
    println!("HOLDING");
    std::io::stdout().flush().unwrap();
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink).unwrap_or(0) > 0 {}
}

#[test]
fn second_process_is_refused() {
    let dir = test_dir();
    let path = dir.path().join("dev");
    create_file(&path, 4 * MIB, false).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "helper_hold_device_open",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLDER_ENV, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let held = lines.any(|l| l.map(|l| l.contains("HOLDING")).unwrap_or(false));
    assert!(held, "child did not open the device");

    let err = open_device(&path, &OpenOptions::default()).unwrap_err();
    assert!(matches!(err, DeviceError::InUse { .. }), "{err:?}");

    drop(child.stdin.take()); // the child exits, which releases its lock
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
    open_device(&path, &OpenOptions::default()).expect("lock released with the process");
}

#[test]
fn file_size_not_a_multiple_of_the_block_is_refused() {
    let dir = test_dir();
    let path = dir.path().join("odd");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(4 * MIB + 100).unwrap();
    drop(f);
    let err = open_device(&path, &OpenOptions::default()).unwrap_err();
    match &err {
        DeviceError::SizeUnaligned {
            size_bytes,
            block_bytes,
            ..
        } => {
            assert_eq!(*size_bytes, 4 * MIB + 100);
            assert!(*block_bytes >= 512);
        }
        other => panic!("expected SizeUnaligned, got {other:?}"),
    }
    assert!(
        err.to_string().contains("is not a multiple of the"),
        "{err}"
    );
}

#[test]
fn unaligned_requests_are_typed_errors_and_issue_nothing() {
    let dir = test_dir();
    let (_path, dev) = new_device(dir.path(), "dev", 4 * MIB);
    let g = dev.geometry();
    let block = g.logical_block_bytes as usize;
    let mut buf = AlignedBuf::new(4 * block);

    let err = dev.read_at(1, &mut buf[..block]).unwrap_err();
    assert!(
        matches!(err, DeviceError::OffsetUnaligned { offset: 1, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("offset 1 is not a multiple"),
        "{err}"
    );

    let err = dev.read_at(0, &mut buf[..block + 1]).unwrap_err();
    assert!(
        matches!(err, DeviceError::LengthUnaligned { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("length"), "{err}");

    let err = dev.write_at(0, &buf[1..block + 1]).unwrap_err();
    assert!(
        matches!(err, DeviceError::BufferUnaligned { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("buffer address"), "{err}");

    let err = dev.read_at(g.size_bytes, &mut buf[..block]).unwrap_err();
    assert!(matches!(err, DeviceError::OutOfRange { .. }), "{err:?}");
    assert!(err.to_string().contains("beyond the device end"), "{err}");

    let err = dev
        .submit(&mut [IoOp::WriteVectored {
            offset: 0,
            bufs: &[],
            fua: false,
        }])
        .unwrap_err();
    assert!(
        matches!(err, DeviceError::LengthUnaligned { len: 0, .. }),
        "{err:?}"
    );

    // One bad op in a batch: the whole batch is refused before any I/O.
    let (good, bad) = buf.split_at_mut(block);
    good.fill(0xAA);
    let err = dev
        .submit(&mut [
            IoOp::Write {
                offset: 0,
                buf: good,
                fua: false,
            },
            IoOp::Read {
                offset: 3,
                buf: &mut bad[..block],
            },
        ])
        .unwrap_err();
    assert!(
        matches!(err, DeviceError::OffsetUnaligned { .. }),
        "{err:?}"
    );
    assert_eq!(
        dev.counters()[0],
        Default::default(),
        "nothing may have been issued"
    );
    let mut check = AlignedBuf::new(block);
    dev.read_at(0, &mut check[..block]).unwrap();
    assert!(
        check.iter().all(|&b| b == 0),
        "the good write of the refused batch ran"
    );

    // Caller mistakes do not poison the device.
    assert!(dev.poisoned().is_none());
    dev.write_at(0, &buf[..block]).unwrap();
    dev.flush().unwrap();
}

/// A real I/O failure (the file shrank under the device, so a read finds EOF) is a
/// typed error, and it is sticky: writes and flushes are refused afterwards, reads are
/// still attempted.
#[test]
fn io_error_poisons_the_device() {
    let dir = test_dir();
    let (path, dev) = new_device(dir.path(), "dev", 4 * MIB);
    let block = dev.geometry().logical_block_bytes as usize;
    let mut buf = AlignedBuf::new(block);
    dev.write_at(0, &buf[..block]).unwrap();
    // Shrink it behind the device's back (flock is advisory).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(MIB)
        .unwrap();
    let err = dev.read_at(2 * MIB, &mut buf[..block]).unwrap_err();
    assert!(matches!(err, DeviceError::Io { op: "read", .. }), "{err:?}");
    assert!(err.to_string().contains("read at offset 2097152"), "{err}");
    let first = dev
        .poisoned()
        .expect("poisoned after an I/O error")
        .to_string();
    assert!(first.contains("read at offset 2097152"), "{first}");

    let err = dev.write_at(0, &buf[..block]).unwrap_err();
    assert!(matches!(err, DeviceError::Poisoned { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("refuses writes after an earlier I/O error"),
        "{err}"
    );
    assert!(matches!(
        dev.flush().unwrap_err(),
        DeviceError::Poisoned { .. }
    ));
    // Reads are still attempted.
    dev.read_at(0, &mut buf[..block]).unwrap();
}

#[test]
fn devices_open_and_close_cleanly_many_times() {
    let dir = test_dir();
    let path = dir.path().join("dev");
    create_file(&path, MIB, false).unwrap();
    let mut buf = AlignedBuf::new(4096);
    for i in 0..40u8 {
        let dev = open_device(&path, &OpenOptions::default()).unwrap();
        let block = dev.geometry().logical_block_bytes as usize;
        if i > 0 {
            dev.read_at(0, &mut buf[..block]).unwrap();
            assert_eq!(buf[0], i - 1, "the previous handle's write was not there");
        }
        buf[0] = i;
        dev.write_at(0, &buf[..block]).unwrap();
        // Drop closes the device's rings; a leak or hang here fails by timeout.
    }
}

/// A batch with one failing request returns only after the others have completed:
/// their buffers hold the data when `submit` returns the error.
#[test]
fn failed_batch_returns_after_all_its_requests_completed() {
    let dir = test_dir();
    let (path, dev) = new_device(dir.path(), "dev", 4 * MIB);
    let mut pattern = AlignedBuf::new(MIB as usize);
    for (i, b) in pattern.iter_mut().enumerate() {
        *b = (i % 253) as u8 + 1;
    }
    dev.write_at(0, &pattern).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(MIB)
        .unwrap();
    const PIECE: usize = 16 << 10;
    let mut bufs: Vec<AlignedBuf> = (0..64).map(|_| AlignedBuf::new(PIECE)).collect();
    let mut beyond = AlignedBuf::new(PIECE);
    {
        let mut ops: Vec<IoOp<'_>> = Vec::new();
        let mut iter = bufs.iter_mut().enumerate();
        // The failing read goes in the middle of the batch.
        for (i, b) in iter.by_ref().take(32) {
            ops.push(IoOp::Read {
                offset: (i * PIECE) as u64,
                buf: &mut b[..],
            });
        }
        ops.push(IoOp::Read {
            offset: 3 * MIB,
            buf: &mut beyond[..],
        });
        for (i, b) in iter {
            ops.push(IoOp::Read {
                offset: (i * PIECE) as u64,
                buf: &mut b[..],
            });
        }
        let err = dev.submit(&mut ops).unwrap_err();
        assert!(
            matches!(err, DeviceError::Io { offset, .. } if offset == 3 * MIB),
            "{err:?}"
        );
    }
    for (i, b) in bufs.iter().enumerate() {
        assert!(
            b[..] == pattern[i * PIECE..(i + 1) * PIECE],
            "read {i} of the failed batch had not completed when submit returned"
        );
    }
}

/// Many threads each submitting one small request at a time: they take rings from the
/// device's pool, create more and put them back over and over; a lost ring or a lost
/// wake-up of a caller waiting for one shows up as a hang, caught here by a watchdog.
#[test]
fn many_single_request_submits_never_hang() {
    let dir = test_dir();
    let (_path, dev) = new_device(dir.path(), "dev", 4 * MIB);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker_dev = Arc::clone(&dev);
    let worker = std::thread::spawn(move || {
        std::thread::scope(|scope| {
            for t in 0..8u64 {
                let dev = Arc::clone(&worker_dev);
                scope.spawn(move || {
                    let block = dev.geometry().logical_block_bytes as usize;
                    let mut buf = AlignedBuf::new(block);
                    for i in 0..2000u64 {
                        let offset = ((t * 2000 + i) * block as u64) % (4 * MIB);
                        if i % 4 == 0 {
                            buf[0] = i as u8;
                            dev.write_at(offset, &buf[..block]).unwrap();
                        } else {
                            dev.read_at(offset, &mut buf[..block]).unwrap();
                        }
                        if i % 500 == 0 {
                            // Let the pool sit idle now and then.
                            std::thread::sleep(std::time::Duration::from_millis(1));
                        }
                    }
                });
            }
        });
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("submitters hung: a ring or a wake-up of a caller waiting for one was lost");
    worker.join().unwrap();
    let c = dev.counters()[0];
    assert_eq!(c.read_ops + c.write_ops, 8 * 2000);
}
