//! Striping over several members: over simulated devices (the generic, one thread per
//! member path) and over io_uring files (one thread drives every ring); the mapping is
//! checked by reading the members directly, the identity headers by mixing members up.

mod real_common;

use hashkv_blockdev::file::{create_file, OpenOptions};
use hashkv_blockdev::identity::{
    read_and_check_stripe, read_identity, write_identity, Identity, IDENTITY_RESERVED_BYTES,
};
use hashkv_blockdev::sim::{SimConfig, SimDevice};
use hashkv_blockdev::stripe::{open_striped, StripedDevice, STRIPE_UNIT_BYTES_DEFAULT};
use hashkv_blockdev::{AlignedBuf, BlockDevice, DeviceError, IoOp};
use rand::{Rng, SeedableRng};
use real_common::{heap_buf, random_batches, read_region, test_dir, Model, TestBuf};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// Where logical `offset` lives, computed here independently of the crate.
fn expected_location(offset: u64, unit: u64, members: u64) -> (usize, u64) {
    let unit_index = offset / unit;
    (
        (unit_index % members) as usize,
        IDENTITY_RESERVED_BYTES + (unit_index / members) * unit + offset % unit,
    )
}

fn sim_members(sizes: &[u64]) -> Vec<Arc<dyn BlockDevice>> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            Arc::new(SimDevice::new(SimConfig::new(size, 100 + i as u64)).expect("sim device"))
                as Arc<dyn BlockDevice>
        })
        .collect()
}

/// Checks every byte of the logical space against the members' own contents.
fn check_members_hold(
    stripe_model: &[u8],
    unit: u64,
    read_member: &dyn Fn(usize, u64, &mut [u8]),
    members: u64,
) {
    let mut piece = AlignedBuf::new(unit as usize);
    for (unit_index, expected) in stripe_model.chunks(unit as usize).enumerate() {
        let logical = unit_index as u64 * unit;
        let (member, member_offset) = expected_location(logical, unit, members);
        read_member(member, member_offset, &mut piece[..expected.len()]);
        assert!(
            &piece[..expected.len()] == expected,
            "logical unit {unit_index} is not at member {member} offset {member_offset}"
        );
    }
}

#[test]
fn geometry_and_config_errors() {
    let unit = 64 * KIB;
    // Members of different sizes: the smallest decides the units per member.
    let members = sim_members(&[MIB + 4096, 2 * MIB, 3 * MIB]);
    let stripe = StripedDevice::new(members.clone(), unit).unwrap();
    let units_per_member = (MIB + 4096 - IDENTITY_RESERVED_BYTES) / unit;
    assert_eq!(stripe.units_per_member(), units_per_member);
    let g = stripe.geometry();
    assert_eq!(g.size_bytes, 3 * units_per_member * unit);
    assert_eq!(
        g.logical_block_bytes,
        members[0].geometry().logical_block_bytes
    );
    for offset in [
        0,
        4096,
        unit - 4096,
        unit,
        5 * unit + 8192,
        g.size_bytes - 4096,
    ] {
        assert_eq!(
            stripe.locate(offset),
            expected_location(offset, unit, 3),
            "{offset}"
        );
    }
    assert_eq!(stripe.members().len(), 3);
    assert_eq!(STRIPE_UNIT_BYTES_DEFAULT, 64 * MIB);

    let err = StripedDevice::new(members.clone(), unit + 100).unwrap_err();
    assert!(matches!(err, DeviceError::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("not a non-zero multiple"), "{err}");
    let err = StripedDevice::new(members.clone(), 0).unwrap_err();
    assert!(matches!(err, DeviceError::Config { .. }), "{err:?}");
    let err = StripedDevice::new(members.clone(), 2 * MIB).unwrap_err();
    assert!(
        err.to_string().contains("member 0") && err.to_string().contains("too small"),
        "{err}"
    );
    let err = StripedDevice::new(Vec::new(), unit).unwrap_err();
    assert!(matches!(err, DeviceError::Config { .. }), "{err:?}");

    // Logical range checks are in logical terms.
    let mut buf = AlignedBuf::new(4096);
    let err = stripe.read_at(g.size_bytes, &mut buf[..4096]).unwrap_err();
    assert!(
        matches!(err, DeviceError::OutOfRange { size_bytes, .. } if size_bytes == g.size_bytes)
    );
}

#[test]
fn stripe_over_sim_devices_maps_and_round_trips() {
    let unit = 16 * KIB;
    let members = sim_members(&[MIB + 4096, MIB + 4096, MIB + 4096]);
    let stripe = StripedDevice::new(members.clone(), unit).unwrap();
    let size = stripe.geometry().size_bytes;
    let mut model = Model::new(0..size, vec![0; size as usize]);
    random_batches(&stripe, &mut model, &[1, 4, 16, 64, 128], 2, 11, &heap_buf);
    check_members_hold(
        &model.bytes,
        unit,
        &|m, off, buf| members[m].read_at(off, buf).unwrap(),
        3,
    );
    // The identity blocks were never written through the stripe.
    let mut head = AlignedBuf::new(4096);
    for m in &members {
        m.read_at(0, &mut head[..4096]).unwrap();
        assert!(head.iter().all(|&b| b == 0));
    }
    let c = stripe.counters();
    assert_eq!(c.len(), 3);
    assert!(c.iter().all(|c| c.write_ops > 0 && c.read_ops > 0), "{c:?}");
    stripe.flush().unwrap();
    assert!(stripe.counters().iter().all(|c| c.flushes == 1));
}

fn member_files(dir: &std::path::Path, n: usize, size: u64) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("member{i}"));
            create_file(&p, size, false).unwrap();
            p
        })
        .collect()
}

#[test]
fn stripe_over_uring_files_maps_and_round_trips() {
    let dir = test_dir();
    let unit = 16 * KIB;
    let paths = member_files(dir.path(), 3, 2 * MIB + 4096);
    let stripe = StripedDevice::open(&paths, unit, &OpenOptions::default()).unwrap();
    let size = stripe.geometry().size_bytes;
    assert_eq!(size, 3 * 2 * MIB);
    let mut model = Model::new(0..size, vec![0; size as usize]);

    // From 4 threads at once, half on the shared registered arena.
    let stripe = Arc::new(stripe);
    let quarter = size / 4;
    let models: Vec<Model> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let stripe = Arc::clone(&stripe);
                scope.spawn(move || {
                    let region = t * quarter..(t + 1) * quarter;
                    let mut m = Model::new(region, vec![0; quarter as usize]);
                    let s2 = Arc::clone(&stripe);
                    let arena_alloc =
                        move |len: usize| -> TestBuf { Box::new(s2.alloc_buffer(len)) };
                    let alloc: &dyn Fn(usize) -> TestBuf =
                        if t % 2 == 0 { &arena_alloc } else { &heap_buf };
                    random_batches(
                        stripe.as_ref(),
                        &mut m,
                        &[1, 2, 8, 32, 128],
                        2,
                        40 + t,
                        alloc,
                    );
                    m
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for m in &models {
        let at = m.base as usize;
        model.bytes[at..at + m.bytes.len()].copy_from_slice(&m.bytes);
    }

    // One vectored write crossing many units and all members, its buffer boundaries
    // falling inside units.
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let lens = [3 * 4096usize, 40 * 4096, 4096, 21 * 4096];
    let mut bufs: Vec<AlignedBuf> = lens.iter().map(|&l| AlignedBuf::new(l)).collect();
    for b in bufs.iter_mut() {
        rng.fill(&mut b[..]);
    }
    let refs: Vec<&[u8]> = bufs.iter().zip(lens).map(|(b, l)| &b[..l]).collect();
    let offset = unit / 2;
    stripe
        .submit(&mut [IoOp::WriteVectored {
            offset,
            bufs: &refs,
            fua: false,
        }])
        .unwrap();
    let joined = refs.concat();
    model.bytes[offset as usize..offset as usize + joined.len()].copy_from_slice(&joined);
    assert!(read_region(stripe.as_ref(), 0..size) == model.bytes);

    assert_eq!(stripe.members().len(), 3);
    stripe.flush().unwrap();
    let counters = stripe.counters();
    assert!(
        counters.iter().all(|c| c.flushes == 1 && c.write_ops > 0),
        "{counters:?}"
    );
    drop(stripe);

    // Read the member files with plain pread, outside the crate.
    let files: Vec<std::fs::File> = paths
        .iter()
        .map(|p| std::fs::File::open(p).unwrap())
        .collect();
    check_members_hold(
        &model.bytes,
        unit,
        &|m, off, buf| files[m].read_exact_at(buf, off).unwrap(),
        3,
    );
}

#[test]
fn arena_buffers_use_fixed_ops_on_every_member() {
    let dir = test_dir();
    let unit = 64 * KIB;
    let paths = member_files(dir.path(), 3, MIB + 4096);
    let opts = OpenOptions::default();
    let stripe = StripedDevice::open(&paths, unit, &opts).unwrap();
    // A buffer spanning all three members' units.
    let len = 3 * unit as usize;
    let mut buf = stripe.alloc_buffer(len);
    if !buf.is_from_arena() {
        println!("skipped: fixed buffers not registered on this machine");
        return;
    }
    buf.fill(0x5A);
    stripe.write_at(0, &buf[..len]).unwrap();
    let mut back = stripe.alloc_buffer(len);
    stripe.read_at(0, &mut back[..len]).unwrap();
    assert!(back[..len].iter().all(|&b| b == 0x5A));
    // Each member saw one write piece and one read piece, as fixed ops when their
    // buffer came from the arena (a small memlock limit may leave room for one only).
    let expected_fixed = u64::from(buf.is_from_arena()) + u64::from(back.is_from_arena());
    assert!(expected_fixed >= 1);
    for m in stripe.uring_members().expect("opened from paths") {
        assert!(m.fixed_buffers_registered());
        assert_eq!(m.fixed_op_count(), expected_fixed, "{}", m.path().display());
    }
    drop(stripe);
    // The data is where the mapping says, read outside the crate.
    for p in &paths {
        let f = std::fs::File::open(p).unwrap();
        let mut piece = vec![0u8; unit as usize];
        f.read_exact_at(&mut piece, IDENTITY_RESERVED_BYTES)
            .unwrap();
        assert!(piece.iter().all(|&b| b == 0x5A));
    }
    // A device opened alone has its own arena.
    let dev = hashkv_blockdev::file::open_device(&paths[0], &opts).unwrap();
    let mut b = dev.alloc_buffer(4096);
    let before = dev.fixed_op_count();
    dev.read_at(IDENTITY_RESERVED_BYTES, &mut b[..4096])
        .unwrap();
    assert_eq!(dev.fixed_op_count(), before + 1);
    assert!(b[..4096].iter().all(|&x| x == 0x5A));
}

#[test]
fn identity_headers_on_members() {
    let dir = test_dir();
    let unit = 64 * KIB;
    let paths = member_files(dir.path(), 3, MIB + 4096);
    let stripe = StripedDevice::open(&paths, unit, &OpenOptions::default()).unwrap();
    for m in stripe.members() {
        assert_eq!(read_identity(m.as_ref()).unwrap(), None);
    }
    let ids = Identity::new_stripe(3, unit);
    for (m, id) in stripe.members().iter().zip(&ids) {
        write_identity(m.as_ref(), id).unwrap();
    }
    // Logical data does not touch the headers.
    let mut buf = AlignedBuf::new(4096);
    buf.fill(0xFF);
    stripe.write_at(0, &buf[..4096]).unwrap();
    assert_eq!(
        read_and_check_stripe(stripe.members(), Some(unit)).unwrap(),
        ids
    );
    drop(stripe);

    // Members passed in the wrong order are refused with a clear message.
    let swapped = vec![paths[1].clone(), paths[0].clone(), paths[2].clone()];
    let stripe = StripedDevice::open(&swapped, unit, &OpenOptions::default()).unwrap();
    let err = read_and_check_stripe(stripe.members(), Some(unit)).unwrap_err();
    assert!(matches!(err, DeviceError::Identity { .. }), "{err:?}");
    assert!(err.to_string().contains("device 0 is member 1"), "{err}");
    drop(stripe);

    // A member from another stripe.
    let stranger = dir.path().join("stranger");
    create_file(&stranger, MIB + 4096, false).unwrap();
    {
        let d = hashkv_blockdev::file::open_device(&stranger, &OpenOptions::default()).unwrap();
        write_identity(d.as_ref(), &Identity::new_stripe(3, unit)[2]).unwrap();
    }
    let mixed = vec![paths[0].clone(), paths[1].clone(), stranger];
    let stripe = StripedDevice::open(&mixed, unit, &OpenOptions::default()).unwrap();
    let err = read_and_check_stripe(stripe.members(), Some(unit)).unwrap_err();
    assert!(err.to_string().contains("different stripes"), "{err}");
}

#[test]
fn open_striped_with_one_path_is_the_plain_device() {
    let dir = test_dir();
    let paths = member_files(dir.path(), 1, 2 * MIB);
    let dev = open_striped(&paths, 64 * KIB, &OpenOptions::default()).unwrap();
    assert_eq!(dev.geometry().size_bytes, 2 * MIB);
    assert_eq!(dev.counters().len(), 1);
    let Err(err) = open_striped(&[], 64 * KIB, &OpenOptions::default()) else {
        panic!("a stripe of no devices was opened");
    };
    assert!(matches!(err, DeviceError::Config { .. }), "{err:?}");
    drop(dev);
    let mut paths2 = paths.clone();
    let second = dir.path().join("member-b");
    create_file(&second, 2 * MIB, false).unwrap();
    paths2.push(second);
    let dev = open_striped(&paths2, 64 * KIB, &OpenOptions::default()).unwrap();
    assert_eq!(dev.counters().len(), 2);
    assert_eq!(
        dev.geometry().size_bytes,
        2 * ((2 * MIB - 4096) / (64 * KIB)) * 64 * KIB
    );
}

#[test]
fn stripe_from_separately_opened_uring_members() {
    let dir = test_dir();
    let unit = 16 * KIB;
    let paths = member_files(dir.path(), 3, MIB + 4096);
    let members: Vec<_> = paths
        .iter()
        .map(|p| hashkv_blockdev::file::open_device(p, &OpenOptions::default()).unwrap())
        .collect();
    let stripe = StripedDevice::from_uring_members(members, unit).unwrap();
    assert_eq!(stripe.uring_members().map(|m| m.len()), Some(3));
    let size = stripe.geometry().size_bytes;
    let mut model = Model::new(0..size, vec![0; size as usize]);
    random_batches(&stripe, &mut model, &[1, 16, 128], 1, 61, &heap_buf);
    stripe.flush().unwrap();
    assert!(stripe.counters().iter().all(|c| c.flushes == 1));
    drop(stripe);
    let files: Vec<std::fs::File> = paths
        .iter()
        .map(|p| std::fs::File::open(p).unwrap())
        .collect();
    check_members_hold(
        &model.bytes,
        unit,
        &|m, off, buf| files[m].read_exact_at(buf, off).unwrap(),
        3,
    );
}
