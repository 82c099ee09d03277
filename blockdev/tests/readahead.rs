//! Reads left in flight (`BlockDevice::start_reads`): on an io_uring file and on a
//! stripe they are in flight when it returns and read the right bytes; the caller may
//! submit other I/O meanwhile, even on a device of one ring; a read-ahead pool that is
//! used up leaves the reads to `wait`; batches larger than the ring, dropped without
//! waiting, or waited for on another thread all work; invalid reads are refused before
//! anything is issued; the simulated device reads at once; reads into reused buffers
//! longer than the read fill only the read's length.

mod real_common;

use hashkv_blockdev::file::{create_file, open_device, OpenOptions};
use hashkv_blockdev::sim::{SimConfig, SimDevice};
use hashkv_blockdev::stripe::StripedDevice;
use hashkv_blockdev::uring::UringDevice;
use hashkv_blockdev::{AlignedBuf, BlockDevice, DeviceError, OwnedRead};
use real_common::test_dir;
use std::path::Path;
use std::sync::Arc;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;

fn open_with(dir: &Path, name: &str, size_bytes: u64, opts: &OpenOptions) -> Arc<UringDevice> {
    let path = dir.join(name);
    create_file(&path, size_bytes, false).expect("create device file");
    open_device(&path, opts).expect("open device file")
}

/// The byte the pattern puts at device offset `at`: every block differs.
fn pattern_byte(at: u64) -> u8 {
    let block = at / BLOCK;
    (block.wrapping_mul(131) ^ (at % BLOCK) ^ (block >> 8)) as u8
}

/// Writes the pattern over the first `bytes` of `dev` (a multiple of the block).
fn write_pattern(dev: &dyn BlockDevice, bytes: u64) {
    let chunk = 256 * KIB;
    let mut buf = AlignedBuf::new(chunk as usize);
    for start in (0..bytes).step_by(chunk as usize) {
        let len = chunk.min(bytes - start) as usize;
        for (i, b) in buf[..len].iter_mut().enumerate() {
            *b = pattern_byte(start + i as u64);
        }
        dev.write_at(start, &buf[..len]).unwrap();
    }
}

/// `count` reads of 1 to 4 blocks at scattered block offsets below `bytes`.
fn scattered_reads(count: u64, bytes: u64) -> Vec<OwnedRead> {
    (0..count)
        .map(|i| {
            let blocks = 1 + i % 4;
            let offset = (i * 7919 * BLOCK) % (bytes - blocks * BLOCK);
            OwnedRead::new(offset, (blocks * BLOCK) as usize)
        })
        .collect()
}

fn check_pattern(reads: &[OwnedRead]) {
    for r in reads {
        for (i, &b) in r.buf[..r.len].iter().enumerate() {
            let at = r.offset + i as u64;
            assert_eq!(b, pattern_byte(at), "byte at device offset {at}");
        }
    }
}

#[test]
fn reads_in_flight_on_a_file_return_the_right_bytes() {
    let dir = test_dir();
    let dev = open_with(dir.path(), "dev", 8 * MIB, &OpenOptions::default());
    write_pattern(dev.as_ref(), 8 * MIB);
    let pending = dev.start_reads(scattered_reads(64, 8 * MIB)).unwrap();
    assert!(pending.in_flight(), "a read-ahead ring was free");
    assert_eq!(dev.readahead_rings_created(), 1);
    let reads = pending.wait().unwrap();
    assert_eq!(reads.len(), 64);
    check_pattern(&reads);
    // The ring went back: the next read-ahead reuses it.
    let again = dev.start_reads(scattered_reads(8, 8 * MIB)).unwrap();
    assert!(again.in_flight());
    check_pattern(&again.wait().unwrap());
    assert_eq!(dev.readahead_rings_created(), 1);
}

/// On a device of one ring, the thread holding a read-ahead still submits, reads and
/// writes: the read-ahead's ring is not the device's only ring.
#[test]
fn other_io_proceeds_while_reads_are_in_flight_on_a_device_of_one_ring() {
    let dir = test_dir();
    let opts = OpenOptions {
        rings_max: 1,
        ..OpenOptions::default()
    };
    let dev = open_with(dir.path(), "dev", 4 * MIB, &opts);
    write_pattern(dev.as_ref(), 4 * MIB);
    let pending = dev.start_reads(scattered_reads(32, 2 * MIB)).unwrap();
    assert!(pending.in_flight());
    // A second read-ahead finds the read-ahead pool (one ring) used up: not started,
    // read by `wait`.
    let second = dev.start_reads(scattered_reads(16, 2 * MIB)).unwrap();
    assert!(!second.in_flight());
    let mut buf = AlignedBuf::new(BLOCK as usize);
    dev.read_at(3 * MIB, &mut buf).unwrap();
    assert!(buf
        .iter()
        .enumerate()
        .all(|(i, &b)| b == pattern_byte(3 * MIB + i as u64)));
    buf.fill(0xab);
    dev.write_at(3 * MIB + BLOCK, &buf).unwrap();
    dev.flush().unwrap();
    check_pattern(&second.wait().unwrap());
    check_pattern(&pending.wait().unwrap());
    assert_eq!(dev.rings_created(), 1);
    assert_eq!(dev.readahead_rings_created(), 1);
}

/// A batch of more reads than the ring has entries: the rest go out at `wait`.
#[test]
fn a_batch_larger_than_the_ring_completes() {
    let dir = test_dir();
    let opts = OpenOptions {
        ring_entries: 4,
        ..OpenOptions::default()
    };
    let dev = open_with(dir.path(), "dev", 4 * MIB, &opts);
    write_pattern(dev.as_ref(), 4 * MIB);
    let pending = dev.start_reads(scattered_reads(50, 4 * MIB)).unwrap();
    assert!(pending.in_flight());
    check_pattern(&pending.wait().unwrap());
}

/// Dropped without `wait`, the reads are reaped; the ring goes back to the pool and
/// works for the next read-ahead.
#[test]
fn dropping_reads_in_flight_reaps_them_and_frees_the_ring() {
    let dir = test_dir();
    let opts = OpenOptions {
        rings_max: 1,
        ring_entries: 8,
        ..OpenOptions::default()
    };
    let dev = open_with(dir.path(), "dev", 4 * MIB, &opts);
    write_pattern(dev.as_ref(), 4 * MIB);
    for _ in 0..20 {
        let pending = dev.start_reads(scattered_reads(30, 4 * MIB)).unwrap();
        assert!(pending.in_flight(), "the dropped batch gave its ring back");
        drop(pending);
    }
    let pending = dev.start_reads(scattered_reads(30, 4 * MIB)).unwrap();
    check_pattern(&pending.wait().unwrap());
    assert_eq!(dev.readahead_rings_created(), 1);
}

/// Started on one thread (which then exits), waited for on another.
#[test]
fn reads_started_on_one_thread_are_waited_for_on_another() {
    let dir = test_dir();
    let dev = open_with(dir.path(), "dev", 4 * MIB, &OpenOptions::default());
    write_pattern(dev.as_ref(), 4 * MIB);
    for _ in 0..10 {
        let pending = std::thread::scope(|s| {
            s.spawn(|| dev.start_reads(scattered_reads(40, 4 * MIB)).unwrap())
                .join()
                .unwrap()
        });
        let reads = std::thread::scope(|s| s.spawn(move || pending.wait()).join().unwrap());
        check_pattern(&reads.unwrap());
    }
}

#[test]
fn invalid_reads_are_refused_before_anything_is_issued() {
    let dir = test_dir();
    let dev = open_with(dir.path(), "dev", MIB, &OpenOptions::default());
    let unaligned = vec![
        OwnedRead::new(0, BLOCK as usize),
        OwnedRead::new(100, BLOCK as usize),
    ];
    let e = dev.start_reads(unaligned).unwrap_err();
    assert!(
        matches!(e, DeviceError::OffsetUnaligned { offset: 100, .. }),
        "{e}"
    );
    let beyond = vec![OwnedRead::new(MIB, BLOCK as usize)];
    let e = dev.start_reads(beyond).unwrap_err();
    assert!(matches!(e, DeviceError::OutOfRange { .. }), "{e}");
    // The refused batches gave their ring back.
    let ok = dev
        .start_reads(vec![OwnedRead::new(0, BLOCK as usize)])
        .unwrap();
    assert!(ok.in_flight());
    ok.wait().unwrap();
    assert_eq!(dev.readahead_rings_created(), 1);
    let empty = dev.start_reads(Vec::new()).unwrap();
    assert!(empty.wait().unwrap().is_empty());
}

/// Over two members with a small unit, reads that cross unit boundaries are split
/// over both members, each on a read-ahead ring of its own.
#[test]
fn reads_in_flight_on_a_stripe_cross_members() {
    let dir = test_dir();
    let unit = 64 * KIB;
    let opts = OpenOptions::default();
    let paths: Vec<_> = (0..2).map(|i| dir.path().join(format!("m{i}"))).collect();
    for p in &paths {
        create_file(p, 4 * MIB, false).unwrap();
    }
    let stripe = StripedDevice::open(&paths, unit, &opts).unwrap();
    let bytes = stripe.geometry().size_bytes.min(6 * MIB);
    write_pattern(&stripe, bytes);
    let mut reads = scattered_reads(40, bytes);
    // One read spanning three units: pieces on both members.
    reads.push(OwnedRead::new(
        unit - BLOCK,
        (2 * unit + 2 * BLOCK) as usize,
    ));
    let pending = stripe.start_reads(reads).unwrap();
    assert!(pending.in_flight());
    let members = stripe.uring_members().unwrap();
    assert!(members.iter().all(|m| m.readahead_rings_created() == 1));
    check_pattern(&pending.wait().unwrap());
    let e = stripe
        .start_reads(vec![OwnedRead::new(
            stripe.geometry().size_bytes,
            BLOCK as usize,
        )])
        .unwrap_err();
    assert!(matches!(e, DeviceError::OutOfRange { .. }), "{e}");
}

/// A stripe whose members are not io_uring devices, and the simulated device, read at
/// once: the reads are done when `start_reads` returns.
#[test]
fn devices_without_read_ahead_read_at_once() {
    let sim = Arc::new(SimDevice::new(SimConfig::new(4 * MIB, 1)).unwrap());
    write_pattern(sim.as_ref(), 4 * MIB);
    let pending = sim.start_reads(scattered_reads(20, 4 * MIB)).unwrap();
    assert!(!pending.in_flight());
    check_pattern(&pending.wait().unwrap());
    let members: Vec<Arc<dyn BlockDevice>> = (0..2)
        .map(|i| {
            Arc::new(SimDevice::new(SimConfig::new(2 * MIB, i)).unwrap()) as Arc<dyn BlockDevice>
        })
        .collect();
    let stripe = StripedDevice::new(members, 64 * KIB).unwrap();
    let bytes = stripe.geometry().size_bytes;
    write_pattern(&stripe, bytes);
    let pending = stripe.start_reads(scattered_reads(20, bytes)).unwrap();
    assert!(!pending.in_flight());
    check_pattern(&pending.wait().unwrap());
}

/// Reads into buffers the caller reuses (`OwnedRead::with_buf`), longer than the read
/// and holding old bytes, on a file and on a stripe: each read fills its first `len`
/// bytes with the device's and leaves the rest of its buffer as it was.
#[test]
fn reads_into_reused_longer_buffers_fill_only_their_length() {
    const DIRT: u8 = 0xa5;
    let dirty_reads = |bytes: u64| -> Vec<OwnedRead> {
        scattered_reads(24, bytes)
            .into_iter()
            .map(|r| {
                let mut buf = AlignedBuf::new(r.len + 2 * BLOCK as usize);
                buf.fill(DIRT);
                OwnedRead::with_buf(r.offset, r.len, buf)
            })
            .collect()
    };
    let check = |reads: &[OwnedRead]| {
        check_pattern(reads);
        for r in reads {
            assert!(r.buf[r.len..].iter().all(|&b| b == DIRT), "past the read");
        }
    };
    let dir = test_dir();
    let dev = open_with(dir.path(), "dev", 4 * MIB, &OpenOptions::default());
    write_pattern(dev.as_ref(), 4 * MIB);
    let pending = dev.start_reads(dirty_reads(4 * MIB)).unwrap();
    assert!(pending.in_flight());
    check(&pending.wait().unwrap());

    let paths: Vec<_> = (0..2).map(|i| dir.path().join(format!("m{i}"))).collect();
    for p in &paths {
        create_file(p, 4 * MIB, false).unwrap();
    }
    let stripe = StripedDevice::open(&paths, 64 * KIB, &OpenOptions::default()).unwrap();
    let bytes = stripe.geometry().size_bytes.min(6 * MIB);
    write_pattern(&stripe, bytes);
    let pending = stripe.start_reads(dirty_reads(bytes)).unwrap();
    assert!(pending.in_flight());
    check(&pending.wait().unwrap());
}

#[test]
#[should_panic(expected = "a read of 8192 bytes into a buffer of 4096")]
fn a_buffer_shorter_than_its_read_is_refused() {
    OwnedRead::with_buf(0, 8192, AlignedBuf::new(4096));
}
