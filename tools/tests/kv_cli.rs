//! `hashkv format/stat/get/put/delete/scan` as a script uses them: every invocation
//! opens the store afresh (segment sizes read from the superblock), so a round trip
//! through the CLI is also a round trip through close and reopen.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Store {
    _dir: tempfile::TempDir,
    device: PathBuf,
    metadata: PathBuf,
}

impl Store {
    /// A formatted store with non-default segment sizes, so that opening with the
    /// defaults would fail: the CLI must take them from the superblock.
    fn new() -> Store {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let store = Store {
            device: dir.path().join("dev.img"),
            metadata: dir.path().join("meta"),
            _dir: dir,
        };
        let out = store.run(&[
            "format",
            "--create-gib",
            "0.25",
            "--main-segment-mib",
            "8",
            "--log-segment-kib",
            "256",
        ]);
        assert_ok(&out);
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("main segment     8388608 bytes"),
            "{stdout}"
        );
        store
    }

    fn run(&self, args: &[&str]) -> Output {
        let (sub, rest) = args.split_first().unwrap();
        Command::new(env!("CARGO_BIN_EXE_hashkv"))
            .arg(sub)
            .arg("--device")
            .arg(&self.device)
            .arg("--metadata")
            .arg(&self.metadata)
            .args(rest)
            .output()
            .expect("run hashkv")
    }

    fn get(&self, key: &str) -> Option<String> {
        let out = self.run(&["get", key]);
        if out.status.success() {
            Some(text(&out.stdout).trim_end_matches('\n').to_string())
        } else {
            let stderr = text(&out.stderr);
            assert!(stderr.contains("not found"), "{stderr}");
            assert_eq!(out.status.code(), Some(1));
            None
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn put_get_delete_scan_round_trip_through_the_cli() {
    let s = Store::new();
    assert_ok(&s.run(&["put", "apple", "red"]));
    assert_ok(&s.run(&["put", "banana", "yellow"]));
    assert_ok(&s.run(&["put", "cherry", "dark red"]));
    // A value large enough to live in the value store rather than inline in the index.
    let big: String = "x".repeat(3000);
    assert_ok(&s.run(&["put", "durian", &big]));
    assert_eq!(s.get("apple").as_deref(), Some("red"));
    assert_eq!(s.get("durian").as_deref(), Some(big.as_str()));
    assert_eq!(s.get("elderberry"), None);

    assert_ok(&s.run(&["put", "apple", "green"]));
    assert_eq!(s.get("apple").as_deref(), Some("green"));
    assert_ok(&s.run(&["delete", "banana"]));
    assert_eq!(s.get("banana"), None);

    let all = s.run(&["scan"]);
    assert_ok(&all);
    let expected = format!("apple\tgreen\ncherry\tdark red\ndurian\t{big}\n");
    assert_eq!(text(&all.stdout), expected);

    let range = s.run(&["scan", "--from", "b", "--to", "durian"]);
    assert_ok(&range);
    assert_eq!(text(&range.stdout), "cherry\tdark red\n");

    let limited = s.run(&["scan", "--limit", "1"]);
    assert_ok(&limited);
    assert_eq!(text(&limited.stdout), "apple\tgreen\n");
}

#[test]
fn binary_values_come_from_files_and_print_as_hex() {
    let s = Store::new();
    let value: Vec<u8> = (0..2000u32).map(|i| (i * 7 % 256) as u8).collect();
    let file = s.device.with_file_name("value.bin");
    std::fs::write(&file, &value).unwrap();
    assert_ok(&s.run(&["put", "bin", "--value-file", file.to_str().unwrap()]));
    let out = s.run(&["get", "bin", "--hex"]);
    assert_ok(&out);
    assert_eq!(text(&out.stdout).trim_end(), hex(&value));
    let scan = s.run(&["scan", "--hex"]);
    assert_ok(&scan);
    assert_eq!(
        text(&scan.stdout),
        format!("{}\t{}\n", hex(b"bin"), hex(&value))
    );
}

#[test]
fn stat_names_the_format_and_format_refuses_a_used_device_without_force() {
    let s = Store::new();
    assert_ok(&s.run(&["put", "k", "v"]));
    let stat = s.run(&["stat"]);
    assert_ok(&stat);
    let stdout = text(&stat.stdout);
    for expected in [
        "mode             hashkv",
        "log segment      262144 bytes",
        "members          1",
    ] {
        assert!(stdout.contains(expected), "{expected:?} not in:\n{stdout}");
    }

    let again = s.run(&["format"]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("--force"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(
        s.get("k").as_deref(),
        Some("v"),
        "a refused format must lose nothing"
    );

    assert_ok(&s.run(&[
        "format",
        "--force",
        "--main-segment-mib",
        "8",
        "--log-segment-kib",
        "256",
    ]));
    assert_eq!(s.get("k"), None, "a forced format starts an empty store");
}

#[test]
fn missing_arguments_and_devices_give_clear_errors() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hashkv"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let no_device = run(&["get", "--metadata", "m", "k"]);
    assert_eq!(no_device.status.code(), Some(2));
    assert!(text(&no_device.stderr).contains("--device"));

    let no_value = run(&["put", "--device", "d", "--metadata", "m", "k"]);
    assert_eq!(no_value.status.code(), Some(2));
    assert!(text(&no_value.stderr).contains("<VALUE>"));

    let missing = run(&["get", "--device", "nothing.img", "--metadata", "m", "k"]);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = text(&missing.stderr);
    assert!(
        stderr.starts_with("hashkv get: error:") && stderr.contains("nothing.img"),
        "{stderr}"
    );

    let unknown = run(&["frobnicate"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).contains("frobnicate"));
    assert!(Path::new(dir.path()).read_dir().unwrap().next().is_none());
}

#[test]
fn fsck_passes_a_healthy_store_and_finds_a_flipped_bit_in_a_value() {
    let s = Store::new();
    for i in 0..50 {
        assert_ok(&s.run(&[
            "put",
            &format!("key{i:03}"),
            &format!("value {i} {}", "v".repeat(500)),
        ]));
    }
    let marker = "Q".repeat(3000);
    assert_ok(&s.run(&["put", "victim", &marker]));
    let healthy = s.run(&["fsck"]);
    assert_ok(&healthy);
    let stdout = text(&healthy.stdout);
    assert!(stdout.contains("keys             51"), "{stdout}");
    assert!(stdout.contains("ok:"), "{stdout}");

    // Flip one bit in the middle of the victim's value on the device file.
    let mut image = std::fs::read(&s.device).unwrap();
    let at = image
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .expect("the value is on the device");
    image[at + 1500] ^= 0x04;
    std::fs::write(&s.device, &image).unwrap();
    std::fs::File::open(&s.device).unwrap().sync_all().unwrap();

    let damaged = s.run(&["fsck"]);
    assert_eq!(damaged.status.code(), Some(1), "{}", text(&damaged.stdout));
    let stderr = text(&damaged.stderr);
    assert!(stderr.contains("damaged record"), "{stderr}");
    assert!(
        stderr.contains("checksum") || stderr.contains("corruption"),
        "{stderr}"
    );
}

/// The other modes through the CLI: format names the mode, put/get/delete/scan round
/// trip across reopens, stat describes that mode's value store, fsck passes.
#[test]
fn vlog_and_lsm_modes_round_trip_through_the_cli() {
    for mode in ["vlog", "lsm"] {
        let s = Store::new();
        assert_ok(&s.run(&[
            "format",
            "--force",
            "--mode",
            mode,
            "--main-segment-mib",
            "8",
            "--log-segment-kib",
            "256",
        ]));
        let big = "b".repeat(3000);
        assert_ok(&s.run(&["put", "a", "small"]));
        assert_ok(&s.run(&["put", "b", &big]));
        assert_ok(&s.run(&["put", "c", "gone"]));
        assert_ok(&s.run(&["delete", "c"]));
        assert_eq!(s.get("a").as_deref(), Some("small"), "{mode}");
        assert_eq!(s.get("b").as_deref(), Some(big.as_str()), "{mode}");
        assert_eq!(s.get("c"), None, "{mode}");
        let stat = s.run(&["stat"]);
        assert_ok(&stat);
        let stdout = text(&stat.stdout);
        assert!(
            stdout.contains(&format!("mode             {mode}")),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("value store      {mode}:")),
            "{stdout}"
        );
        assert!(
            !stdout.contains("groups "),
            "hashkv details in a {mode} store:\n{stdout}"
        );
        let fsck = s.run(&["fsck"]);
        assert_ok(&fsck);
        assert!(
            text(&fsck.stdout).contains("keys             2"),
            "{}",
            text(&fsck.stdout)
        );
    }
}
