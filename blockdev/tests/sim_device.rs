//! The simulated device keeps its promises: durable data survives every crash,
//! non-durable writes end up applied, lost or torn exactly as the seed says, injected
//! errors surface and poison, bit flips reach readers, bad input gets typed errors.

use hashkv_blockdev::sim::{
    CrashReport, CrashWeights, FaultRule, OpKind, SimConfig, SimDevice, WriteOutcome,
};
use hashkv_blockdev::{AlignedBuf, BlockDevice, DeviceError, IoOp};
use std::collections::HashSet;
use std::sync::Arc;

const BLOCK_BYTES: usize = 4096;
const SECTOR_BYTES: usize = 512;
const DEVICE_BYTES: u64 = 1 << 20;

fn device(seed: u64) -> SimDevice {
    SimDevice::new(SimConfig::new(DEVICE_BYTES, seed)).expect("valid config")
}

/// A buffer whose every 8-byte word names the write it belongs to, so any sector can
/// be traced back to the write that put it there.
fn stamped(len_bytes: usize, write_id: u64) -> AlignedBuf {
    let mut buf = AlignedBuf::new(len_bytes);
    for word in buf.chunks_exact_mut(8) {
        word.copy_from_slice(&write_id.to_le_bytes());
    }
    buf
}

fn write(dev: &SimDevice, offset: u64, buf: &AlignedBuf) {
    dev.write_at(offset, buf).expect("write");
}

fn image(dev: &SimDevice) -> Vec<u8> {
    dev.peek(0, DEVICE_BYTES as usize).unwrap()
}

/// Builds the image the report says the crash must leave, from the durable image and
/// the data of every write (indexed like the report's writes).
fn replay(durable: &[u8], report: &CrashReport, data: &[Vec<u8>]) -> Vec<u8> {
    let mut out = durable.to_vec();
    let sector = report.sector_bytes as usize;
    for (w, bytes) in report.writes.iter().zip(data) {
        let at = w.offset as usize;
        match &w.outcome {
            WriteOutcome::Applied => out[at..at + bytes.len()].copy_from_slice(bytes),
            WriteOutcome::Lost => {}
            WriteOutcome::Torn { sectors_new } => {
                assert_eq!(sectors_new.len(), bytes.len() / sector);
                for (i, _) in sectors_new.iter().enumerate().filter(|(_, n)| **n) {
                    let s = i * sector;
                    out[at + s..at + s + sector].copy_from_slice(&bytes[s..s + sector]);
                }
            }
        }
    }
    out
}

/// A seeded workload: some flushed writes, then unflushed writes of 1..=4 blocks at
/// random (overlapping) places. Returns the durable image at the last flush and the
/// data of each unflushed write in submission order.
fn run_workload(dev: &SimDevice, seed: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
    let blocks = DEVICE_BYTES / BLOCK_BYTES as u64;
    let mut rng = seed ^ 0x5eed;
    let mut next = move || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        rng >> 33
    };
    for id in 0..20u64 {
        let len = BLOCK_BYTES * (1 + next() as usize % 4);
        let block = next() % (blocks - 4);
        write(dev, block * BLOCK_BYTES as u64, &stamped(len, 1000 + id));
    }
    dev.flush().unwrap();
    let durable = image(dev);
    assert_eq!(dev.peek_durable(0, DEVICE_BYTES as usize).unwrap(), durable);
    let mut unflushed = Vec::new();
    for id in 0..30u64 {
        let len = BLOCK_BYTES * (1 + next() as usize % 4);
        let block = next() % (blocks - 4);
        let buf = stamped(len, 2000 + id);
        write(dev, block * BLOCK_BYTES as u64, &buf);
        unflushed.push(buf.to_vec());
    }
    (durable, unflushed)
}

#[test]
fn reads_see_completed_writes_before_flush() {
    let dev = device(1);
    let buf = stamped(2 * BLOCK_BYTES, 7);
    write(&dev, 8192, &buf);
    let mut back = AlignedBuf::new(2 * BLOCK_BYTES);
    dev.read_at(8192, &mut back).unwrap();
    assert_eq!(&back[..], &buf[..]);
    assert!(dev
        .peek_durable(8192, 8192)
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    assert_eq!(dev.pending_writes(), 1);
    dev.flush().unwrap();
    assert_eq!(dev.pending_writes(), 0);
    assert_eq!(dev.peek_durable(8192, 8192).unwrap(), buf.to_vec());
    let c = dev.counters()[0];
    assert_eq!(
        (c.write_ops, c.write_bytes, c.read_ops, c.flushes),
        (1, 8192, 1, 1)
    );
}

#[test]
fn vectored_write_lands_back_to_back() {
    let dev = device(2);
    let a = stamped(BLOCK_BYTES, 1);
    let b = stamped(2 * BLOCK_BYTES, 2);
    let bufs: [&[u8]; 2] = [&a, &b];
    dev.submit(&mut [IoOp::WriteVectored {
        offset: 4096,
        bufs: &bufs,
        fua: false,
    }])
    .unwrap();
    let got = dev.peek(4096, 3 * BLOCK_BYTES).unwrap();
    assert_eq!(&got[..BLOCK_BYTES], &a[..]);
    assert_eq!(&got[BLOCK_BYTES..], &b[..]);
}

#[test]
fn flushed_data_survives_every_crash() {
    for seed in 0..200 {
        let dev = device(seed);
        let (durable, _) = run_workload(&dev, seed);
        // Overwrites after the flush may be lost or torn, but nothing else changes:
        // every sector ends up either durable or from one of the later writes.
        let after = dev.crash();
        let img = image(&after);
        // No unflushed write touched a sector => it must equal the durable image.
        let unflushed_ids: HashSet<u64> = (2000..2030).collect();
        for (s, (got, want)) in img
            .chunks(SECTOR_BYTES)
            .zip(durable.chunks(SECTOR_BYTES))
            .enumerate()
        {
            if got != want {
                let id = u64::from_le_bytes(got[..8].try_into().unwrap());
                assert!(
                    unflushed_ids.contains(&id) && got.chunks(8).all(|w| w == &got[..8]),
                    "seed {seed}: sector {s} holds neither durable data nor one whole unflushed sector"
                );
            }
        }
    }
}

#[test]
fn crash_with_nothing_pending_keeps_the_image_exactly() {
    for seed in 0..20 {
        let dev = device(seed);
        run_workload(&dev, seed);
        dev.flush().unwrap();
        let before = image(&dev);
        let (after, report) = dev.crash_with_report();
        assert!(report.writes.is_empty());
        assert_eq!(image(&after), before, "seed {seed}");
    }
}

#[test]
fn unflushed_writes_end_as_the_report_says() {
    let mut seen = [false; 3];
    for seed in 0..100 {
        let dev = device(seed);
        let (durable, unflushed) = run_workload(&dev, seed);
        let (after, report) = dev.crash_with_report();
        assert_eq!(report.writes.len(), unflushed.len(), "seed {seed}");
        assert_eq!(
            image(&after),
            replay(&durable, &report, &unflushed),
            "seed {seed}"
        );
        for w in &report.writes {
            let i = match &w.outcome {
                WriteOutcome::Applied => 0,
                WriteOutcome::Lost => 1,
                WriteOutcome::Torn { sectors_new } => {
                    assert!(sectors_new.iter().any(|&n| n) && sectors_new.iter().any(|&n| !n));
                    2
                }
            };
            seen[i] = true;
        }
        // A fresh device with the same seed and workload crashes identically.
        let twin = device(seed);
        run_workload(&twin, seed);
        let (twin_after, twin_report) = twin.crash_with_report();
        assert_eq!(twin_report, report, "seed {seed}");
        assert_eq!(image(&twin_after), image(&after), "seed {seed}");
        assert_eq!(twin_after.seed(), after.seed());
    }
    assert_eq!(
        seen, [true; 3],
        "applied, lost and torn must all occur across seeds"
    );
}

#[test]
fn different_seeds_give_different_outcomes() {
    let outcomes: HashSet<Vec<u8>> = (0..10)
        .map(|seed| {
            let dev = device(seed);
            // Same workload for every seed: only the crash decisions differ.
            run_workload(&dev, 42);
            image(&dev.crash())
        })
        .collect();
    assert!(
        outcomes.len() > 5,
        "only {} distinct images from 10 seeds",
        outcomes.len()
    );
}

#[test]
fn torn_write_sectors_are_wholly_old_or_wholly_new() {
    let config = SimConfig {
        crash_weights: CrashWeights {
            applied: 0,
            lost: 1,
            torn: 1000,
        },
        ..SimConfig::new(DEVICE_BYTES, 9)
    };
    let dev = SimDevice::new(config).unwrap();
    let old = stamped(64 * 1024, 1);
    write(&dev, 0, &old);
    dev.flush().unwrap();
    let new = stamped(64 * 1024, 2);
    write(&dev, 0, &new);
    let (after, report) = dev.crash_with_report();
    let WriteOutcome::Torn { sectors_new } = &report.writes[0].outcome else {
        panic!("expected a torn write, got {:?}", report.writes[0].outcome);
    };
    let img = after.peek(0, 64 * 1024).unwrap();
    for (i, sector) in img.chunks(SECTOR_BYTES).enumerate() {
        let want = if sectors_new[i] { &new } else { &old };
        assert_eq!(
            sector,
            &want[i * SECTOR_BYTES..(i + 1) * SECTOR_BYTES],
            "sector {i}"
        );
    }
}

#[test]
fn sector_equal_to_block_never_tears_a_one_block_write() {
    let config = SimConfig {
        sector_bytes: 4096,
        crash_weights: CrashWeights {
            applied: 1,
            lost: 1,
            torn: 1000,
        },
        ..SimConfig::new(DEVICE_BYTES, 3)
    };
    let dev = SimDevice::new(config).unwrap();
    for i in 0..50 {
        write(&dev, i * 4096, &stamped(4096, i));
    }
    let (_, report) = dev.crash_with_report();
    assert_eq!(report.count(|o| matches!(o, WriteOutcome::Torn { .. })), 0);
}

#[test]
fn fua_writes_survive_even_over_older_pending_writes() {
    for seed in 0..50 {
        let dev = device(seed);
        write(&dev, 0, &stamped(8192, 1));
        let fua = stamped(8192, 2);
        dev.submit(&mut [IoOp::Write {
            offset: 0,
            buf: &fua,
            fua: true,
        }])
        .unwrap();
        let after = dev.crash();
        assert_eq!(after.peek(0, 8192).unwrap(), fua.to_vec(), "seed {seed}");
    }
}

#[test]
fn crashed_device_refuses_everything_and_the_new_one_works() {
    let dev = device(5);
    write(&dev, 0, &stamped(4096, 1));
    dev.flush().unwrap();
    let after = dev.crash();
    assert!(dev.is_frozen());
    assert!(matches!(
        dev.write_at(0, &stamped(4096, 2)),
        Err(DeviceError::Io { .. })
    ));
    let mut buf = AlignedBuf::new(4096);
    assert!(matches!(
        dev.read_at(0, &mut buf),
        Err(DeviceError::Io { .. })
    ));
    assert!(dev.flush().is_err());
    // The post-crash device is healthy.
    after.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf[..], &stamped(4096, 1)[..]);
    after.write_at(4096, &stamped(4096, 3)).unwrap();
    after.flush().unwrap();
    assert!(after.poisoned().is_none());
    assert_ne!(after.seed(), dev.seed());
}

#[test]
fn armed_crash_stops_a_concurrent_workload() {
    for seed in 0..10 {
        let dev = Arc::new(device(seed));
        dev.arm_crash_after_ops(300);
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let dev = Arc::clone(&dev);
                std::thread::spawn(move || {
                    let mut completed = Vec::new();
                    for i in 0..1000u64 {
                        let offset = (t * 64 + i % 64) * 4096;
                        let buf = stamped(4096, t << 32 | i);
                        if dev.write_at(offset, &buf).is_err() {
                            break;
                        }
                        if i % 10 == 9 && dev.flush().is_err() {
                            break;
                        }
                        completed.push((offset, i));
                    }
                    completed
                })
            })
            .collect();
        let total: usize = threads.into_iter().map(|h| h.join().unwrap().len()).sum();
        assert!(
            total < 300,
            "seed {seed}: {total} writes completed past the freeze"
        );
        assert!(dev.is_frozen());
        assert!(dev.poisoned().unwrap().to_string().contains("frozen"));
        let after = dev.crash();
        after.read_at(0, &mut AlignedBuf::new(4096)).unwrap();
    }
}

#[test]
fn many_threads_share_one_device() {
    let dev = Arc::new(device(11));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let dev = Arc::clone(&dev);
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    let offset = (t * 32 + i % 32) * 4096;
                    let buf = stamped(4096, t << 32 | i);
                    dev.write_at(offset, &buf).unwrap();
                    let mut back = AlignedBuf::new(4096);
                    dev.read_at(offset, &mut back).unwrap();
                    assert_eq!(&back[..], &buf[..]);
                }
                dev.flush().unwrap();
            })
        })
        .collect();
    for h in threads {
        h.join().unwrap();
    }
    let after = dev.crash();
    for t in 0..8u64 {
        for slot in 0..32u64 {
            // The largest i in 0..200 with i % 32 == slot wrote last.
            let last = (0..200u64).filter(|i| i % 32 == slot).max().unwrap();
            let got = after.peek((t * 32 + slot) * 4096, 8).unwrap();
            assert_eq!(u64::from_le_bytes(got.try_into().unwrap()), t << 32 | last);
        }
    }
}

fn assert_eio(result: hashkv_blockdev::Result<()>, op: &str) {
    match result {
        Err(DeviceError::Io {
            op: got, source, ..
        }) => {
            assert_eq!(got, op);
            assert_eq!(source.raw_os_error(), Some(libc_eio()));
        }
        other => panic!("expected an injected EIO on {op}, got {other:?}"),
    }
}

fn libc_eio() -> i32 {
    5 // EIO on Linux
}

#[test]
fn injected_write_eio_surfaces_and_poisons() {
    let dev = device(21);
    let id = dev
        .inject(FaultRule::eio().on(OpKind::Write).at_op(2))
        .unwrap();
    write(&dev, 0, &stamped(4096, 1)); // op 0
    dev.flush().unwrap(); // op 1
    assert_eio(dev.write_at(4096, &stamped(4096, 2)), "write"); // op 2
    assert_eq!(dev.fault_hits(id), 1);
    // The failed write is not visible to reads.
    assert!(dev.peek(4096, 4096).unwrap().iter().all(|&b| b == 0));
    let first_error = dev.poisoned().expect("poisoned").to_string();
    assert!(first_error.contains("Input/output error"), "{first_error}");
    assert!(matches!(
        dev.write_at(8192, &stamped(4096, 3)),
        Err(DeviceError::Poisoned { .. })
    ));
    assert!(matches!(dev.flush(), Err(DeviceError::Poisoned { .. })));
    // Reads are still served.
    let mut buf = AlignedBuf::new(4096);
    dev.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf[..], &stamped(4096, 1)[..]);
    // At a crash the failed write is a candidate like any unflushed write.
    let (_, report) = dev.crash_with_report();
    assert_eq!(report.writes.len(), 1);
    assert!(report.writes[0].failed);
}

#[test]
fn injected_read_and_flush_eio() {
    let dev = device(22);
    dev.inject(FaultRule::eio().on(OpKind::Read).in_range(8192..12288))
        .unwrap();
    let mut buf = AlignedBuf::new(4096);
    dev.read_at(0, &mut buf).unwrap();
    assert!(dev.poisoned().is_none());
    let mut big = AlignedBuf::new(16384);
    // Overlapping the range is enough.
    assert_eio(dev.read_at(0, &mut big), "read");
    assert!(dev.poisoned().is_some());

    let dev = device(23);
    dev.inject(FaultRule::eio().on(OpKind::Flush)).unwrap();
    write(&dev, 0, &stamped(4096, 1));
    assert_eio(dev.flush(), "flush");
    // The failed flush made nothing durable.
    assert!(dev.peek_durable(0, 4096).unwrap().iter().all(|&b| b == 0));
    assert_eq!(dev.pending_writes(), 1);
}

#[test]
fn first_error_of_a_batch_is_returned_and_the_rest_still_runs() {
    let dev = device(24);
    dev.inject(FaultRule::eio().at_op(1)).unwrap();
    let a = stamped(4096, 1);
    let b = stamped(4096, 2);
    let c = stamped(4096, 3);
    let result = dev.submit(&mut [
        IoOp::Write {
            offset: 0,
            buf: &a,
            fua: false,
        },
        IoOp::Write {
            offset: 4096,
            buf: &b,
            fua: false,
        },
        IoOp::Write {
            offset: 8192,
            buf: &c,
            fua: false,
        },
    ]);
    assert_eio(result, "write");
    assert_eq!(dev.peek(0, 4096).unwrap(), a.to_vec());
    assert!(dev.peek(4096, 4096).unwrap().iter().all(|&x| x == 0));
    // The third request was in flight with the others: it was attempted, but the
    // device was poisoned by then, as a real device would refuse it after the error.
    assert!(dev.peek(8192, 4096).unwrap().iter().all(|&x| x == 0));
}

#[test]
fn probabilistic_eio_is_seeded() {
    let failures = |seed: u64| -> Vec<u64> {
        let dev = device(seed);
        dev.inject(FaultRule::eio().on(OpKind::Read).with_probability(0.1))
            .unwrap();
        let mut buf = AlignedBuf::new(4096);
        (0..500u64)
            .filter(|&i| dev.read_at(i % 256 * 4096, &mut buf).is_err())
            .collect()
    };
    let a = failures(31);
    assert_eq!(a, failures(31));
    assert_ne!(a, failures(32));
    assert!(
        (20..90).contains(&a.len()),
        "{} failures of 500 at p=0.1",
        a.len()
    );
}

#[test]
fn bit_flips_are_seen_on_reads_only() {
    let dev = device(41);
    let data = stamped(8192, 0xabcd);
    write(&dev, 0, &data);
    let id = dev
        .inject(FaultRule::bit_flip_on_read().max_hits(1))
        .unwrap();
    let mut buf = AlignedBuf::new(8192);
    dev.read_at(0, &mut buf).unwrap();
    let diff_bits: u32 = buf
        .iter()
        .zip(data.iter())
        .map(|(a, b)| (a ^ b).count_ones())
        .sum();
    assert_eq!(diff_bits, 1);
    assert_eq!(dev.fault_hits(id), 1);
    // Transient: the stored data and the next read are intact; no poisoning.
    dev.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf[..], &data[..]);
    assert!(dev.poisoned().is_none());

    // Restricted to a range, the flipped bit lies where the read overlaps the range.
    for seed in 0..20 {
        let dev = device(seed);
        write(&dev, 0, &data);
        dev.inject(FaultRule::bit_flip_on_read().at_op(1).in_range(6000..6100))
            .unwrap();
        dev.read_at(0, &mut buf).unwrap();
        let flipped: Vec<usize> = (0..8192).filter(|&i| buf[i] != data[i]).collect();
        assert_eq!(flipped.len(), 1, "seed {seed}");
        assert!(
            (6000..6100).contains(&flipped[0]),
            "seed {seed}: byte {}",
            flipped[0]
        );
    }
}

#[test]
fn persistent_corruption_survives_crash() {
    let dev = device(43);
    write(&dev, 0, &stamped(4096, 9));
    dev.flush().unwrap();
    dev.corrupt_bit(100, 3).unwrap();
    let mut want = stamped(4096, 9).to_vec();
    want[100] ^= 1 << 3;
    assert_eq!(dev.peek(0, 4096).unwrap(), want);
    assert_eq!(dev.crash().peek(0, 4096).unwrap(), want);
}

#[test]
fn bad_requests_get_typed_errors_before_any_io() {
    let dev = device(51);
    let buf = AlignedBuf::new(8192);
    assert!(matches!(
        dev.write_at(512, &buf[..4096]),
        Err(DeviceError::OffsetUnaligned {
            offset: 512,
            block_bytes: 4096
        })
    ));
    assert!(matches!(
        dev.write_at(0, &buf[..100]),
        Err(DeviceError::LengthUnaligned { len: 100, .. })
    ));
    assert!(matches!(
        dev.write_at(0, &buf[1..4097]),
        Err(DeviceError::BufferUnaligned { .. })
    ));
    assert!(matches!(
        dev.write_at(DEVICE_BYTES - 4096, &buf),
        Err(DeviceError::OutOfRange { .. })
    ));
    // One bad request in a batch: nothing of the batch is issued.
    let good = stamped(4096, 1);
    let result = dev.submit(&mut [
        IoOp::Write {
            offset: 0,
            buf: &good,
            fua: false,
        },
        IoOp::Write {
            offset: 4095,
            buf: &good,
            fua: false,
        },
    ]);
    assert!(matches!(result, Err(DeviceError::OffsetUnaligned { .. })));
    assert!(dev.peek(0, 4096).unwrap().iter().all(|&b| b == 0));
    assert_eq!(dev.ops_issued(), 0);
    assert!(dev.poisoned().is_none(), "caller mistakes do not poison");
    assert!(matches!(
        dev.peek(DEVICE_BYTES, 1),
        Err(DeviceError::OutOfRange { .. })
    ));
}

#[test]
fn bad_configs_and_rules_are_refused() {
    let bad = [
        SimConfig {
            size_bytes: 0,
            ..SimConfig::new(0, 1)
        },
        SimConfig::new(4097, 1),
        SimConfig {
            logical_block_bytes: 3000,
            ..SimConfig::new(1 << 20, 1)
        },
        SimConfig {
            sector_bytes: 8192,
            ..SimConfig::new(1 << 20, 1)
        },
        SimConfig {
            sector_bytes: 256,
            ..SimConfig::new(1 << 20, 1)
        },
        SimConfig {
            crash_weights: CrashWeights {
                applied: 0,
                lost: 0,
                torn: 1,
            },
            ..SimConfig::new(1 << 20, 1)
        },
    ];
    for config in bad {
        assert!(
            matches!(
                SimDevice::new(config.clone()),
                Err(DeviceError::Config { .. })
            ),
            "{config:?} was accepted"
        );
    }
    let dev = device(1);
    for rule in [
        FaultRule::eio().with_probability(1.5),
        FaultRule::bit_flip_on_read().on(OpKind::Write),
        FaultRule::eio().in_range(10..10),
    ] {
        assert!(matches!(dev.inject(rule), Err(DeviceError::Config { .. })));
    }
    assert!(matches!(
        dev.corrupt_bit(0, 8),
        Err(DeviceError::Config { .. })
    ));
}

#[test]
fn a_large_sparse_device_is_cheap() {
    // 64 GiB of address space: only written chunks take memory.
    let dev = SimDevice::new(SimConfig::new(64 << 30, 1)).unwrap();
    let far = (64u64 << 30) - 4096;
    write(&dev, far, &stamped(4096, 77));
    dev.flush().unwrap();
    let after = dev.crash();
    assert_eq!(after.peek(far, 4096).unwrap(), stamped(4096, 77).to_vec());
    assert_eq!(after.geometry().size_bytes, 64 << 30);
}
