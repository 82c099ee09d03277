//! FaultFs's own promises: what a crash keeps, how faults fire, ENOSPC, locks.

use std::path::Path;

use super::*;

const DIR: &str = "/t";

fn fs_with_dir(seed: u64) -> FaultFs {
    let fs = FaultFs::new(seed);
    fs.create_dir_all(Path::new(DIR)).unwrap();
    fs
}

fn path(name: &str) -> PathBuf {
    Path::new(DIR).join(name)
}

fn crash_and_restart(fs: &FaultFs) {
    fs.crash();
    fs.restart();
}

#[test]
fn synced_data_and_synced_names_survive_every_crash() {
    for seed in 0..200 {
        let fs = fs_with_dir(seed);
        let f = fs.create(&path("a"), IfExists::Fail).unwrap();
        f.append(b"durable").unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(Path::new(DIR)).unwrap();
        f.append(b" maybe").unwrap();
        crash_and_restart(&fs);
        let got = fs.read_file(&path("a")).unwrap();
        assert!(got.starts_with(b"durable"), "seed {seed}: {got:?}");
        assert!(got.len() <= b"durable maybe".len(), "seed {seed}: {got:?}");
        let tail = &got[b"durable".len()..];
        let torn_ok = b" maybe"
            .iter()
            .zip(tail)
            .enumerate()
            .all(|(i, (w, g))| w == g || tail[i..].iter().all(|&b| b == 0));
        assert!(
            torn_ok,
            "seed {seed}: tail {tail:?} is neither a prefix nor zero-torn"
        );
    }
}

#[test]
fn crashes_drop_and_tear_unsynced_appends_in_several_ways() {
    let (mut whole, mut none, mut torn) = (0, 0, 0);
    for seed in 0..200 {
        let fs = fs_with_dir(seed);
        let f = fs.create(&path("a"), IfExists::Fail).unwrap();
        fs.sync_dir(Path::new(DIR)).unwrap();
        f.append(&[7u8; 100]).unwrap();
        crash_and_restart(&fs);
        match fs.read_file(&path("a")).unwrap().len() {
            0 => none += 1,
            100 => whole += 1,
            _ => torn += 1,
        }
    }
    assert!(
        none > 0 && torn > 0,
        "none {none} whole {whole} torn {torn}"
    );
}

#[test]
fn unsynced_directory_changes_survive_as_a_prefix() {
    let mut kept = [0usize; 4];
    for seed in 0..300 {
        let fs = fs_with_dir(seed);
        for name in ["a", "b", "c"] {
            fs.create(&path(name), IfExists::Fail).unwrap();
        }
        crash_and_restart(&fs);
        let mut names = fs.list(Path::new(DIR)).unwrap();
        names.sort();
        let expected: Vec<String> = ["a", "b", "c"][..names.len()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(names, expected, "seed {seed}: not a prefix of the creates");
        kept[names.len()] += 1;
    }
    assert!(kept.iter().all(|&n| n > 0), "prefix lengths seen: {kept:?}");
}

#[test]
fn a_rename_is_durable_only_after_a_directory_sync() {
    let mut renamed = 0;
    for seed in 0..100 {
        let fs = fs_with_dir(seed);
        for (name, data) in [("CURRENT", b"old"), ("CURRENT.tmp", b"new")] {
            let f = fs.create(&path(name), IfExists::Fail).unwrap();
            f.append(data).unwrap();
            f.sync_all().unwrap();
        }
        fs.sync_dir(Path::new(DIR)).unwrap();
        fs.rename(&path("CURRENT.tmp"), &path("CURRENT")).unwrap();
        crash_and_restart(&fs);
        let got = fs.read_file(&path("CURRENT")).unwrap();
        assert!(got == b"old" || got == b"new", "seed {seed}: {got:?}");
        renamed += (got == b"new") as u32;
        fs.rename(&path("CURRENT.tmp"), &path("CURRENT")).ok();
        fs.sync_dir(Path::new(DIR)).unwrap();
        crash_and_restart(&fs);
        assert_eq!(fs.read_file(&path("CURRENT")).unwrap(), b"new");
    }
    assert!(
        renamed > 0 && renamed < 100,
        "renames kept: {renamed} of 100"
    );
}

#[test]
fn a_removed_file_stays_readable_through_open_handles() {
    let fs = fs_with_dir(1);
    let f = fs.create(&path("a"), IfExists::Fail).unwrap();
    f.append(b"data").unwrap();
    fs.remove_file(&path("a")).unwrap();
    let mut buf = [0u8; 4];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"data");
    assert_eq!(fs.entry_kind(&path("a")).unwrap(), EntryKind::Missing);
    assert!(f.read_exact_at(&mut buf, 1).is_err(), "read past the end");
}

#[test]
fn faults_fire_on_the_chosen_call_once_and_are_recorded() {
    let fs = fs_with_dir(1);
    let f = fs.create(&path("000001.wal"), IfExists::Fail).unwrap();
    fs.inject(Fault {
        op: Op::Sync,
        class: Some(FileClass::Wal),
        skip: 2,
        errno: libc::EIO,
        times: 1,
    });
    let results: Vec<bool> = (0..5).map(|_| f.sync_data().is_ok()).collect();
    assert_eq!(results, [true, true, false, true, true]);
    let fired = fs.fired();
    assert_eq!(fired.len(), 1);
    assert_eq!(
        fired[0].site,
        Site {
            op: Op::Sync,
            class: FileClass::Wal
        }
    );
    fs.fail_after(Op::Write, 0, libc::ENOSPC);
    let e = f.append(b"z").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    assert_eq!(
        fs.calls()[&Site {
            op: Op::Sync,
            class: FileClass::Wal
        }],
        5
    );
}

#[test]
fn capacity_gives_enospc_after_a_partial_write() {
    let fs = fs_with_dir(1);
    let f = fs.create(&path("a"), IfExists::Fail).unwrap();
    fs.set_capacity_bytes(Some(10));
    f.append(&[1u8; 6]).unwrap();
    let e = f.append(&[2u8; 6]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    assert_eq!(fs.read_file(&path("a")).unwrap().len(), 10);
    assert_eq!(fs.used_bytes(), 10);
    fs.remove_file(&path("a")).unwrap();
    fs.sync_dir(Path::new(DIR)).unwrap();
    drop(f);
    assert_eq!(
        fs.used_bytes(),
        0,
        "space comes back once unlinked and closed"
    );
}

#[test]
fn a_crash_kills_old_handles_and_locks_and_fails_calls_until_restart() {
    let fs = fs_with_dir(1);
    let lock = fs.lock(&path("LOCK")).unwrap();
    let e = fs.lock(&path("LOCK")).err().expect("held");
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    let f = fs.create(&path("a"), IfExists::Fail).unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(Path::new(DIR)).unwrap();
    fs.crash();
    assert!(fs.list(Path::new(DIR)).is_err(), "down until restart");
    fs.restart();
    assert!(f.append(b"x").is_err(), "a handle from before the crash");
    let relock = fs.lock(&path("LOCK")).unwrap();
    drop(lock);
    assert!(
        fs.lock(&path("LOCK")).is_err(),
        "the dead process's guard must not release the new holder's lock"
    );
    drop(relock);
    fs.lock(&path("LOCK")).unwrap();
}

#[test]
fn crash_after_calls_crashes_before_the_call_takes_effect() {
    let fs = fs_with_dir(1);
    let f = fs.create(&path("a"), IfExists::Fail).unwrap();
    f.append(b"abc").unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(Path::new(DIR)).unwrap();
    fs.crash_after_calls(1);
    f.append(b"def").unwrap();
    assert!(f.sync_data().is_err(), "the crash call fails");
    assert!(fs.is_down());
    fs.restart();
    let got = fs.read_file(&path("a")).unwrap();
    assert!(got.starts_with(b"abc") && got.len() <= 6, "{got:?}");
}

#[test]
fn a_truncation_comes_back_whole_or_not_at_all() {
    let mut seen = (false, false);
    for seed in 0..100 {
        let fs = fs_with_dir(seed);
        let f = fs.create(&path("a"), IfExists::Fail).unwrap();
        f.append(b"0123456789").unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(Path::new(DIR)).unwrap();
        let w = fs.open(&path("a"), true).unwrap();
        w.set_len(4).unwrap();
        crash_and_restart(&fs);
        match fs.read_file(&path("a")).unwrap().as_slice() {
            b"0123" => seen.0 = true,
            b"0123456789" => seen.1 = true,
            other => panic!("seed {seed}: {other:?}"),
        }
    }
    assert_eq!(seen, (true, true));
}

#[test]
fn a_failed_sync_loses_its_bytes_even_after_a_later_sync_succeeds() {
    let fs = fs_with_dir(1);
    let f = fs.create(&path("a"), IfExists::Fail).unwrap();
    fs.sync_dir(Path::new(DIR)).unwrap();
    f.append(b"one").unwrap();
    fs.fail_after(Op::Sync, 0, libc::EIO);
    assert!(f.sync_data().is_err());
    f.append(b"two").unwrap();
    f.sync_data().unwrap();
    assert_eq!(
        fs.read_file(&path("a")).unwrap(),
        b"onetwo",
        "reads see the bytes"
    );
    crash_and_restart(&fs);
    assert_eq!(
        fs.read_file(&path("a")).unwrap(),
        b"\0\0\0two",
        "the disk does not"
    );
}
