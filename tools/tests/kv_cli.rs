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

/// Random bytes from a seed (SplitMix64).
fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

/// The case: a 100,000-byte random file through `put --value-file` and `get`
/// comes back byte for byte, on standard output and through --output.
#[test]
fn a_binary_value_round_trips_byte_for_byte() {
    let s = Store::new();
    let value = random_bytes(100_000, 1);
    let file = s.device.with_file_name("bin.dat");
    std::fs::write(&file, &value).unwrap();
    assert_ok(&s.run(&["put", "k", "--value-file", file.to_str().unwrap()]));
    let out = s.run(&["get", "k"]);
    assert_ok(&out);
    assert!(out.stdout == value, "get wrote {} bytes", out.stdout.len());
    let copy = s.device.with_file_name("out.dat");
    assert_ok(&s.run(&["get", "k", "--output", copy.to_str().unwrap()]));
    assert!(std::fs::read(&copy).unwrap() == value);
    // From standard input as well.
    let mut child = Command::new(env!("CARGO_BIN_EXE_hashkv"))
        .args(["put", "--device", s.device.to_str().unwrap()])
        .args([
            "--metadata",
            s.metadata.to_str().unwrap(),
            "stdin",
            "--value-file",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &value).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(s.run(&["get", "stdin"]).stdout == value);
}

/// `get … | head -c 10`: the reader goes away; get stops quietly (exit 0, or killed by
/// SIGPIPE as `cat` would be), never with a panic.
#[test]
fn get_into_a_closed_pipe_exits_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let s = Store::new();
    let file = s.device.with_file_name("big.dat");
    std::fs::write(&file, random_bytes(200_000, 2)).unwrap();
    assert_ok(&s.run(&["put", "k", "--value-file", file.to_str().unwrap()]));
    for args in [
        &["get", "k"][..],
        &["get", "k", "--hex"],
        &["scan"],
        &["stat"],
    ] {
        let (sub, rest) = args.split_first().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hashkv"))
            .arg(sub)
            .args(["--device", s.device.to_str().unwrap()])
            .args(["--metadata", s.metadata.to_str().unwrap()])
            .args(rest)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 10];
        stdout.read_exact(&mut first).unwrap();
        drop(stdout);
        let status = child.wait().unwrap();
        let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
        assert!(
            status.success() || status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {status:?}\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Keys are bytes too: given as hex or from a file, and scan's output says every byte
/// of keys and values, as hex or as escaped text.
#[test]
fn binary_keys_round_trip_through_hex_files_and_scan() {
    let s = Store::new();
    let key = [0xffu8, 0x00, b'\t', b'k', b'\n', 0xc3];
    let value = b"v\x00\xfe\tw\\".to_vec();
    let key_file = s.device.with_file_name("key.bin");
    std::fs::write(&key_file, key).unwrap();
    assert_ok(&s.run(&["put", "--key-hex", &hex(&key), "--value-hex", &hex(&value)]));
    let out = s.run(&["get", "--key-file", key_file.to_str().unwrap()]);
    assert_ok(&out);
    assert_eq!(out.stdout, value);
    assert_ok(&s.run(&["put", "plain", "text value"]));
    let scan = s.run(&["scan", "--hex"]);
    assert_ok(&scan);
    let pairs: Vec<(String, String)> = text(&scan.stdout)
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('\t').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    assert_eq!(
        pairs,
        vec![
            (hex(b"plain"), hex(b"text value")),
            (hex(&key), hex(&value)),
        ]
    );
    let scan = s.run(&["scan", "--from-hex", "ff"]);
    assert_ok(&scan);
    assert_eq!(
        text(&scan.stdout),
        "\\xff\\x00\\tk\\n\\xc3\tv\\x00\\xfe\\tw\\\\\n"
    );
    assert_ok(&s.run(&["delete", "--key-hex", &hex(&key)]));
    let gone = s.run(&["get", "--key-hex", &hex(&key)]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        text(&gone.stderr).contains("\\xff\\x00\\tk\\n\\xc3"),
        "{}",
        text(&gone.stderr)
    );
    let bad = s.run(&["get", "--key-hex", "xyz"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("--key-hex"),
        "{}",
        text(&bad.stderr)
    );
}

/// fsck finds a damaged superblock copy (which open tolerates) and --repair rewrites
/// it from its twin.
#[test]
fn fsck_finds_and_repairs_a_damaged_superblock_copy() {
    let s = Store::new();
    assert_ok(&s.run(&["put", "k", "v"]));
    let mut image = std::fs::read(&s.device).unwrap();
    let good = image[..4096].to_vec();
    image[20..40].fill(0x5a);
    std::fs::write(&s.device, &image).unwrap();
    assert_eq!(
        s.get("k").as_deref(),
        Some("v"),
        "the store opens from the twin"
    );
    let found = s.run(&["fsck"]);
    assert_eq!(found.status.code(), Some(1), "{}", text(&found.stdout));
    assert!(
        text(&found.stderr).contains("damage: superblock copy at offset 0"),
        "{}",
        text(&found.stderr)
    );
    let repaired = s.run(&["fsck", "--repair"]);
    assert_ok(&repaired);
    assert!(
        text(&repaired.stdout).contains("repaired: superblock copy at offset 0 rewritten"),
        "{}",
        text(&repaired.stdout)
    );
    assert!(std::fs::read(&s.device).unwrap()[..4096] == good[..]);
    let clean = s.run(&["fsck"]);
    assert_ok(&clean);
    assert!(text(&clean.stdout).contains("ok:"));
}

/// Issue 10's case through the command line: 96 MiB main segments, first copy damaged.
#[test]
fn a_96_mib_store_with_a_damaged_first_copy_opens() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let device = dir.path().join("dev.img");
    let meta = dir.path().join("meta");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hashkv"))
            .args(args)
            .args(["--device", device.to_str().unwrap()])
            .args(["--metadata", meta.to_str().unwrap()])
            .output()
            .unwrap()
    };
    assert_ok(&run(&[
        "format",
        "--main-segment-mib",
        "96",
        "--create-gib",
        "0.4",
    ]));
    assert_ok(&run(&["put", "k", "v"]));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&device)
        .unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(30)).unwrap();
    std::io::Write::write_all(&mut f, &[0xEE; 30]).unwrap();
    f.sync_all().unwrap();
    let stat = run(&["stat"]);
    assert_ok(&stat);
    assert!(text(&stat.stdout).contains("main segment     100663296 bytes"));
    let get = run(&["get", "k"]);
    assert_eq!(get.stdout, b"v");
}

/// `stat` says when the groups' chain limits, not the pool, bound what a store holds
/// (a reserve past about one half), with the figure `StoreFull` would report.
#[test]
fn stat_names_the_chain_bound_capacity_past_a_reserve_of_one_half() {
    for (reserve, bound) in [("0.75", true), ("0.3", false)] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let store = Store {
            device: dir.path().join("dev.img"),
            metadata: dir.path().join("meta"),
            _dir: dir,
        };
        let args = ["format", "--create-gib", "0.25", "--main-segment-mib", "8"];
        assert_ok(&store.run(&[&args[..], &["--reserve", reserve]].concat()));
        let out = store.run(&["stat"]);
        assert_ok(&out);
        let stdout = text(&out.stdout);
        assert!(stdout.contains("value capacity"), "{stdout}");
        assert_eq!(
            stdout.contains("chains hold"),
            bound,
            "reserve {reserve}: {stdout}"
        );
    }
}
