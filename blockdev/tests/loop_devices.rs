//! The io_uring device on real block devices: loop devices over small backing files
//! (`losetup --direct-io=on`). Needs root and losetup; elsewhere each test prints
//! `skipped: <reason>` and returns. Loop devices are always detached by a Drop guard,
//! also when a test panics.

mod real_common;

use hashkv_blockdev::file::{open_device, DeviceKind, OpenOptions};
use hashkv_blockdev::identity::{
    read_and_check_stripe, write_identity, Identity, IDENTITY_RESERVED_BYTES,
};
use hashkv_blockdev::loop_devices::{attach_all, LoopDevice};
use hashkv_blockdev::stripe::{open_striped, StripedDevice};
use hashkv_blockdev::{AlignedBuf, BlockDevice, DeviceError, IoOp};
use rand::{Rng, SeedableRng};
use real_common::{heap_buf, random_batches, read_region, test_dir, Model, TestBuf};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// Backing files and loop devices for one test.
struct Loops {
    // Field order matters: devices are detached before the directory is removed.
    devs: Vec<LoopDevice>,
    _dir: tempfile::TempDir,
}

fn setup(sizes: &[(u64, Option<u32>)]) -> Result<Loops, String> {
    let dir = test_dir();
    let devs = attach_all(dir.path(), sizes)?;
    Ok(Loops { devs, _dir: dir })
}

macro_rules! loops_or_skip {
    ($sizes:expr) => {
        match setup($sizes) {
            Ok(l) => l,
            Err(reason) => {
                println!("skipped: {reason}");
                return;
            }
        }
    };
}

#[test]
fn loop_discovery_via_ioctls() {
    let loops = loops_or_skip!(&[(64 * MIB, None), (32 * MIB, Some(4096))]);
    for l in &loops.devs {
        let dev = open_device(&l.path, &OpenOptions::default()).unwrap();
        let g = dev.geometry();
        println!("{}: {g:?}", l.path.display());
        assert_eq!(dev.kind(), DeviceKind::BlockDevice);
        assert_eq!(
            g.logical_block_bytes,
            l.queue_attr("logical_block_size").unwrap()
        );
        assert_eq!(
            g.physical_block_bytes,
            l.queue_attr("physical_block_size")
                .unwrap()
                .max(g.logical_block_bytes)
        );
    }
    let g0 = open_device(&loops.devs[0].path, &OpenOptions::default())
        .unwrap()
        .geometry();
    assert_eq!(g0.size_bytes, 64 * MIB);
    let g1 = open_device(&loops.devs[1].path, &OpenOptions::default())
        .unwrap()
        .geometry();
    assert_eq!(g1.size_bytes, 32 * MIB);
    assert_eq!(g1.logical_block_bytes, 4096);

    // A 512-byte-sector device takes 512-byte I/O; a 4096 one refuses it, typed.
    let mut buf = AlignedBuf::new(4096);
    let d0 = open_device(&loops.devs[0].path, &OpenOptions::default()).unwrap();
    if g0.logical_block_bytes == 512 {
        d0.write_at(512, &buf[..512]).unwrap();
    }
    drop(d0);
    let d1 = open_device(&loops.devs[1].path, &OpenOptions::default()).unwrap();
    let err = d1.read_at(512, &mut buf[..512]).unwrap_err();
    assert!(
        matches!(
            err,
            DeviceError::OffsetUnaligned {
                block_bytes: 4096,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn loop_round_trip_through_io_uring() {
    let loops = loops_or_skip!(&[(32 * MIB, None)]);
    let dev = open_device(&loops.devs[0].path, &OpenOptions::default()).unwrap();
    const THREADS: u64 = 4;
    let region_bytes = dev.geometry().size_bytes / THREADS;
    let models: Vec<Model> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let dev = Arc::clone(&dev);
                scope.spawn(move || {
                    let region = t * region_bytes..(t + 1) * region_bytes;
                    let mut m = Model::new(region, vec![0; region_bytes as usize]);
                    let d = Arc::clone(&dev);
                    let arena = move |len: usize| -> TestBuf { Box::new(d.alloc_buffer(len)) };
                    let alloc: &dyn Fn(usize) -> TestBuf =
                        if t % 2 == 0 { &arena } else { &heap_buf };
                    random_batches(
                        dev.as_ref(),
                        &mut m,
                        &[1, 2, 4, 8, 16, 32, 64, 128],
                        1,
                        900 + t,
                        alloc,
                    );
                    m
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    dev.flush().unwrap();
    assert_eq!(dev.counters()[0].flushes, 1);
    drop(dev);
    // The backing file holds what was written (read with plain pread).
    let f = std::fs::File::open(&loops.devs[0].backing).unwrap();
    for m in &models {
        let mut got = vec![0u8; m.bytes.len()];
        f.read_exact_at(&mut got, m.base).unwrap();
        assert!(
            got == m.bytes,
            "backing file differs in region at {}",
            m.base
        );
    }
}

#[test]
fn loop_second_exclusive_opener_refused() {
    let loops = loops_or_skip!(&[(16 * MIB, None)]);
    let path = &loops.devs[0].path;
    let dev = open_device(path, &OpenOptions::default()).unwrap();
    let err = open_device(path, &OpenOptions::default()).unwrap_err();
    assert!(matches!(err, DeviceError::InUse { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    drop(dev);
    open_device(path, &OpenOptions::default()).expect("released on close");
}

/// Where logical `offset` lives, computed here independently of the crate.
fn expected_location(offset: u64, unit: u64, members: u64) -> (usize, u64) {
    let unit_index = offset / unit;
    (
        (unit_index % members) as usize,
        IDENTITY_RESERVED_BYTES + (unit_index / members) * unit + offset % unit,
    )
}

#[test]
fn loop_stripe_over_three_devices_maps_and_round_trips() {
    // Different sizes (the smallest decides) and sector sizes (the largest decides).
    // Flushes per member: one by write_identity, one at the end.
    let loops = loops_or_skip!(&[(16 * MIB, Some(4096)), (16 * MIB, None), (24 * MIB, None)]);
    let paths: Vec<PathBuf> = loops.devs.iter().map(|l| l.path.clone()).collect();
    let unit = 256 * KIB;
    let units_per_member = (16 * MIB - IDENTITY_RESERVED_BYTES) / unit;
    let ids = Identity::new_stripe(3, unit);
    let model = {
        let stripe = StripedDevice::open(&paths, unit, &OpenOptions::default()).unwrap();
        let g = stripe.geometry();
        assert_eq!(g.logical_block_bytes, 4096);
        assert_eq!(g.size_bytes, 3 * units_per_member * unit);
        for (m, id) in stripe.members().iter().zip(&ids) {
            write_identity(m.as_ref(), id).unwrap();
        }
        let stripe: Arc<dyn BlockDevice> = Arc::new(stripe);
        let size = g.size_bytes;
        let mut model = Model::new(0..size, vec![0; size as usize]);
        let half = size / 2;
        let parts: Vec<Model> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2u64)
                .map(|t| {
                    let stripe = Arc::clone(&stripe);
                    scope.spawn(move || {
                        let mut m = Model::new(t * half..(t + 1) * half, vec![0; half as usize]);
                        random_batches(
                            stripe.as_ref(),
                            &mut m,
                            &[1, 8, 64, 128],
                            1,
                            77 + t,
                            &heap_buf,
                        );
                        m
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for p in parts {
            let at = p.base as usize;
            model.bytes[at..at + p.bytes.len()].copy_from_slice(&p.bytes);
        }
        // Large ops crossing many units on all members: a read-sized write and a
        // vectored write whose buffer boundaries fall inside units.
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut big = AlignedBuf::new((3 * unit + 8 * KIB) as usize);
        rng.fill(&mut big[..]);
        let big_offset = unit - 4 * KIB;
        stripe.write_at(big_offset, &big).unwrap();
        model.bytes[big_offset as usize..big_offset as usize + big.len()].copy_from_slice(&big);
        let lens = [
            12 * KIB as usize,
            300 * KIB as usize,
            4 * KIB as usize,
            500 * KIB as usize,
        ];
        let mut bufs: Vec<AlignedBuf> = lens.iter().map(|&l| AlignedBuf::new(l)).collect();
        for b in bufs.iter_mut() {
            rng.fill(&mut b[..]);
        }
        let refs: Vec<&[u8]> = bufs.iter().zip(lens).map(|(b, l)| &b[..l]).collect();
        let v_offset = 7 * unit + 8 * KIB;
        stripe
            .submit(&mut [IoOp::WriteVectored {
                offset: v_offset,
                bufs: &refs,
                fua: true,
            }])
            .unwrap();
        let joined = refs.concat();
        model.bytes[v_offset as usize..v_offset as usize + joined.len()].copy_from_slice(&joined);
        assert!(
            read_region(stripe.as_ref(), 0..size) == model.bytes,
            "stripe read-back differs"
        );
        stripe.flush().unwrap();
        let counters = stripe.counters();
        assert_eq!(counters.len(), 3);
        assert!(
            counters.iter().all(|c| c.flushes == 2 && c.write_ops > 0),
            "{counters:?}"
        );
        model
    };

    // Each member, opened on its own, holds each unit at the computed offset.
    let members: Vec<_> = paths
        .iter()
        .map(|p| open_device(p, &OpenOptions::default()).unwrap())
        .collect();
    let mut piece = AlignedBuf::new(unit as usize);
    for (unit_index, expected) in model.bytes.chunks(unit as usize).enumerate() {
        let (member, member_offset) = expected_location(unit_index as u64 * unit, unit, 3);
        members[member]
            .read_at(member_offset, &mut piece[..])
            .unwrap();
        assert!(
            piece[..] == *expected,
            "logical unit {unit_index} not found on member {member} at offset {member_offset}"
        );
    }
    // And their identity headers say they form this stripe, in this order.
    let as_dyn: Vec<Arc<dyn BlockDevice>> = members
        .iter()
        .map(|m| Arc::clone(m) as Arc<dyn BlockDevice>)
        .collect();
    assert_eq!(read_and_check_stripe(&as_dyn, Some(unit)).unwrap(), ids);
    drop(as_dyn);
    drop(members);

    // Reopened through open_striped, the data is still there.
    let stripe = open_striped(&paths, unit, &OpenOptions::default()).unwrap();
    let size = stripe.geometry().size_bytes;
    assert!(read_region(stripe.as_ref(), 0..size) == model.bytes);
}
