//! The messages of issue 16's table, each asserted: every one names the command-line
//! flag and the path concerned, in plain words, and says what to do.

mod common;

use common::{scratch_dir, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn hashkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hashkv"))
        .args(args)
        .output()
        .expect("run hashkv")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs a command that must fail with exit status 1 and a message containing every
/// one of `expected`.
fn assert_fails_with(args: &[&str], expected: &[&str]) {
    let out = hashkv(args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    for e in expected {
        assert!(stderr.contains(e), "{args:?}: {e:?} not in:\n{stderr}");
    }
}

/// A formatted single-file store: (dir, device, metadata).
fn store(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let device = dir.join(format!("{name}.img"));
    let meta = dir.join(format!("{name}-meta"));
    let out = hashkv(&[
        "format",
        "--device",
        s(&device),
        "--metadata",
        s(&meta),
        "--create-gib",
        "0.3",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    (device, meta)
}

#[test]
fn a_missing_or_empty_metadata_directory_says_to_format_or_pass_the_right_one() {
    let dir = scratch_dir();
    let (device, _) = store(dir.path(), "a");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for meta in [dir.path().join("nometa"), empty] {
        assert_fails_with(
            &["get", "--device", s(&device), "--metadata", s(&meta), "k"],
            &[
                &format!("--metadata {}: no store index there", meta.display()),
                "format the store first",
            ],
        );
    }
}

#[test]
fn bad_format_flags_are_named_with_their_range() {
    let dir = scratch_dir();
    let device = dir.path().join("d.img");
    let base = [
        "format",
        "--device",
        s(&device),
        "--metadata",
        "m",
        "--create-gib",
        "1",
    ];
    for (extra, expected) in [
        (
            &["--reserve", "1.5"][..],
            "--reserve 1.5 must lie between 0 and 0.95",
        ),
        (
            &["--reserve", "0"],
            "--reserve 0 must lie between 0 and 0.95",
        ),
        (
            &["--main-segment-mib", "0"],
            "--main-segment-mib 0 must lie in 1..=",
        ),
        (
            &["--log-segment-kib", "5"],
            "--log-segment-kib 5 must be a multiple of 4",
        ),
        (
            &["--main-segment-mib", "1", "--log-segment-kib", "768"],
            "--main-segment-mib 1 must be a whole multiple of --log-segment-kib 768",
        ),
        (&["--mode", "leveldb"], "--mode"),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        assert_fails_with(&args, &[expected]);
    }
    assert!(!device.exists(), "a refused format creates nothing");
}

#[test]
fn another_stores_metadata_directory_is_said_in_plain_words() {
    let dir = scratch_dir();
    let (device_a, _) = store(dir.path(), "a");
    let (_, meta_b) = store(dir.path(), "b");
    assert_fails_with(
        &[
            "get",
            "--device",
            s(&device_a),
            "--metadata",
            s(&meta_b),
            "k",
        ],
        &[
            &format!(
                "--metadata {} holds the index of another store",
                meta_b.display()
            ),
            &format!("not of the store on --device {}", device_a.display()),
        ],
    );
}

#[test]
fn the_same_path_twice_is_said_to_be_given_twice() {
    let dir = scratch_dir();
    let (device, meta) = store(dir.path(), "a");
    for sub in [&["get", "k"][..], &["format", "--force"], &["fsck"]] {
        let (cmd, rest) = sub.split_first().unwrap();
        let mut args = vec![
            *cmd,
            "--device",
            s(&device),
            "--device",
            s(&device),
            "--metadata",
            s(&meta),
        ];
        args.extend_from_slice(rest);
        assert_fails_with(
            &args,
            &[&format!("--device {} is given twice", device.display())],
        );
    }
}

#[test]
fn stripe_members_are_named_one_by_one() {
    let dir = scratch_dir();
    let members: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("m{i}.img")))
        .collect();
    for m in &members {
        std::fs::File::create(m)
            .unwrap()
            .set_len(200 << 20)
            .unwrap();
    }
    let meta = dir.path().join("meta");
    let out = hashkv(&[
        "format",
        "--device",
        s(&members[0]),
        "--device",
        s(&members[1]),
        "--metadata",
        s(&meta),
        "--main-segment-mib",
        "16",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Only one member of a stripe of 2.
    assert_fails_with(
        &[
            "get",
            "--device",
            s(&members[0]),
            "--metadata",
            s(&meta),
            "k",
        ],
        &[
            &format!(
                "{} is member 0 of a stripe of 2 devices",
                members[0].display()
            ),
            "all 2 members, in member order",
            "--device",
        ],
    );
    // A single store opened with an extra device: which is which.
    let (single, single_meta) = store(dir.path(), "single");
    let out = hashkv(&[
        "get",
        "--device",
        s(&single),
        "--device",
        s(&members[1]),
        "--metadata",
        s(&single_meta),
        "k",
    ]);
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("magic"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} holds a single-device hashkv store, not a stripe member; open it as the only device",
            single.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_missing_device_path_suggests_create_gib() {
    let dir = scratch_dir();
    let missing = dir.path().join("missing.img");
    let meta = dir.path().join("meta");
    assert_fails_with(
        &["format", "--device", s(&missing), "--metadata", s(&meta)],
        &[
            &format!("--device {}: no such file or device", missing.display()),
            "--create-gib",
        ],
    );
    assert!(!meta.exists());
    assert_fails_with(
        &["get", "--device", s(&missing), "--metadata", s(&meta), "k"],
        &[
            &format!("--device {}: no such file or device", missing.display()),
            "--create-gib",
        ],
    );
}

/// Too small a device for 4 main segments suggests smaller ones; the failed format
/// removes the file and the metadata directory it created.
#[test]
fn a_device_too_small_suggests_a_smaller_main_segment_and_leaves_nothing() {
    let dir = scratch_dir();
    let device = dir.path().join("small.img");
    let meta = dir.path().join("meta");
    assert_fails_with(
        &[
            "format",
            "--device",
            s(&device),
            "--metadata",
            s(&meta),
            "--create-gib",
            "0.1",
        ],
        &[
            &format!("--device {} is too small", device.display()),
            "--main-segment-mib",
        ],
    );
    assert!(!device.exists(), "the file format created is removed");
    assert!(!meta.exists(), "the directory format created is removed");
    let out = hashkv(&[
        "format",
        "--device",
        s(&device),
        "--metadata",
        s(&meta),
        "--create-gib",
        "0.1",
        "--main-segment-mib",
        "4",
        "--log-segment-kib",
        "256",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
