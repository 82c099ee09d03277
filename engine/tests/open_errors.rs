//! Opening with the wrong set of devices: each mistake is named in plain words, with
//! the path it concerns, and nothing is changed on the devices.

mod common;

use common::{disk_dir, small_options, KIB, MIB};
use hashkv::{Db, Error};
use std::path::PathBuf;

fn files(dir: &std::path::Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("m{i}.img"));
            std::fs::File::create(&p)
                .unwrap()
                .set_len(4 * MIB + 4 * KIB)
                .unwrap();
            p
        })
        .collect()
}

#[test]
fn one_member_of_a_stripe_alone_is_named_as_such() {
    let dir = disk_dir();
    let members = files(dir.path(), 2);
    let meta = dir.path().join("meta");
    let o = small_options();
    Db::format(&members, &meta, &o).unwrap().close().unwrap();
    for (i, m) in members.iter().enumerate() {
        let e = Db::open(std::slice::from_ref(m), &meta, &o).err().unwrap();
        let text = e.to_string();
        assert!(
            text.contains(&format!("is member {i} of a stripe of 2 devices"))
                && text.contains("all 2 members, in member order")
                && text.contains(&m.display().to_string()),
            "{text}"
        );
        let e = Db::probe(std::slice::from_ref(m)).err().unwrap();
        assert!(e.to_string().contains("member"), "{e}");
    }
    Db::open(&members, &meta, &o).unwrap().close().unwrap();
}

#[test]
fn a_single_store_with_an_extra_device_says_which_is_which() {
    let dir = disk_dir();
    let single = dir.path().join("single.img");
    let meta = dir.path().join("meta");
    let o = small_options().with_create_device_bytes(Some(8 * MIB));
    Db::format(&[single.clone()], &meta, &o)
        .unwrap()
        .close()
        .unwrap();
    let extra = files(dir.path(), 1).remove(0);
    for devices in [
        vec![single.clone(), extra.clone()],
        vec![extra.clone(), single.clone()],
    ] {
        let e = Db::open(&devices, &meta, &o).err().unwrap();
        let text = e.to_string();
        assert!(!text.contains("magic"), "{text}");
        let names_single = text.contains(&format!(
            "{} holds a single-device hashkv store, not a stripe member; open it as the only device",
            single.display()
        ));
        let names_extra = text.contains(&format!(
            "{} is not a member of a hashkv stripe",
            extra.display()
        ));
        assert!(names_single || names_extra, "{text}");
    }
    Db::open(&[single], &meta, &o).unwrap().close().unwrap();
}

#[test]
fn a_device_named_twice_is_refused_as_such() {
    let dir = disk_dir();
    let members = files(dir.path(), 1);
    let o = small_options();
    let twice = vec![members[0].clone(), members[0].clone()];
    for e in [
        Db::format(&twice, &dir.path().join("meta"), &o)
            .err()
            .unwrap(),
        Db::open(&twice, &dir.path().join("meta"), &o)
            .err()
            .unwrap(),
    ] {
        assert!(matches!(e, Error::InvalidOptions { .. }), "{e:?}");
        assert!(e.to_string().contains("is given twice"), "{e}");
    }
    // Two paths to one file count too.
    let link = dir.path().join("link.img");
    std::os::unix::fs::symlink(&members[0], &link).unwrap();
    let e = Db::open(&[members[0].clone(), link], &dir.path().join("meta"), &o)
        .err()
        .unwrap();
    assert!(e.to_string().contains("is given twice (as"), "{e}");
    assert!(!dir.path().join("meta").exists());
}

#[test]
fn members_in_the_wrong_order_are_named_by_path() {
    let dir = disk_dir();
    let members = files(dir.path(), 2);
    let meta = dir.path().join("meta");
    let o = small_options();
    Db::format(&members, &meta, &o).unwrap().close().unwrap();
    let swapped = vec![members[1].clone(), members[0].clone()];
    let e = Db::open(&swapped, &meta, &o).err().unwrap();
    let text = e.to_string();
    assert!(
        text.contains("member order")
            && text.contains(&format!("device 0 = {}", members[1].display())),
        "{text}"
    );
}
