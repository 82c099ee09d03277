//! After an I/O error nothing more is written: not the rest of the failing batch (even
//! when it is larger than the ring), and on a stripe not even a write that lands only
//! on healthy members. Reads still work. Also: an arena larger than the kernel
//! registers is clamped, not silently dropped.

use hashkv_blockdev::file::{create_file, open_device, OpenOptions};
use hashkv_blockdev::stripe::StripedDevice;
use hashkv_blockdev::{AlignedBuf, BlockDevice, DeviceError, IoOp};

const MIB: u64 = 1 << 20;

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Shrinks a file under an open device so that a read past the new end fails.
fn shrink(path: &std::path::Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn a_batch_larger_than_the_ring_stops_writing_after_its_error() {
    let dir = scratch();
    let p = dir.path().join("d");
    create_file(&p, 8 * MIB, false).unwrap();
    let opts = OpenOptions {
        ring_entries: 1,
        rings_max: 1,
        ..OpenOptions::default()
    };
    let dev = open_device(&p, &opts).unwrap();
    shrink(&p, MIB);
    let mut r = AlignedBuf::new(4096);
    let mut w = AlignedBuf::new(4096);
    w.fill(0xAB);
    let e = dev
        .submit(&mut [
            IoOp::Read {
                offset: 4 * MIB,
                buf: &mut r[..],
            },
            IoOp::Write {
                offset: 0,
                buf: &w[..],
                fua: false,
            },
        ])
        .unwrap_err();
    assert!(matches!(e, DeviceError::Io { .. }), "{e:?}");
    assert!(dev.poisoned().is_some());
    let data = std::fs::read(&p).unwrap();
    assert_eq!(data[0], 0, "the write after the failed read was issued");
    assert_eq!(dev.counters()[0].write_ops, 0);
    // Reads still work.
    dev.read_at(0, &mut r[..]).unwrap();
}

#[test]
fn a_stripe_refuses_writes_to_healthy_members_after_one_failed() {
    let dir = scratch();
    let paths: Vec<_> = (0..2).map(|i| dir.path().join(format!("m{i}"))).collect();
    for p in &paths {
        create_file(p, 8 * MIB, false).unwrap();
    }
    let unit = MIB;
    let stripe = StripedDevice::open(&paths, unit, &OpenOptions::default()).unwrap();
    shrink(&paths[0], MIB);
    let mut buf = AlignedBuf::new(4096);
    // Logical unit 2 lies on member 0, past its new end.
    stripe.read_at(2 * unit, &mut buf[..]).unwrap_err();
    assert!(matches!(
        stripe.poisoned().as_deref(),
        Some(DeviceError::Io { op: "read", .. })
    ));
    // Logical units 1 and 3 lie on member 1 only.
    for e in [
        stripe.write_at(unit, &buf[..]).unwrap_err(),
        stripe
            .submit(&mut [IoOp::Write {
                offset: 3 * unit,
                buf: &buf[..],
                fua: true,
            }])
            .unwrap_err(),
    ] {
        // The refusal carries the member's typed error, and names the member.
        assert!(
            matches!(&e, DeviceError::Poisoned { cause, .. }
                if matches!(**cause, DeviceError::Io { op: "read", .. })),
            "{e:?}"
        );
        assert!(e.to_string().contains("member 0"), "{e}");
    }
    // Reads of the healthy member still work.
    stripe.read_at(unit, &mut buf[..]).unwrap();
}

#[test]
fn an_arena_larger_than_the_kernel_registers_is_clamped() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: needs root (RLIMIT_MEMLOCK would shrink the arena first)");
        return;
    }
    let dir = scratch();
    let p = dir.path().join("d");
    create_file(&p, 8 * MIB, false).unwrap();
    let opts = OpenOptions {
        fixed_buffer_arena_bytes: 2048 * MIB as usize,
        rings_max: 1,
        ..OpenOptions::default()
    };
    let dev = open_device(&p, &opts).unwrap();
    assert!(
        dev.fixed_buffers_registered(),
        "{:?}",
        dev.fixed_buffers_unavailable()
    );
}
