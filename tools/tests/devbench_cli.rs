//! `hashkv devbench` as a user runs it: the built binary on a small file on the real
//! disk (CARGO_TARGET_TMPDIR lives under target/, not on a tmpfs where O_DIRECT fails).

mod common;

use common::{scratch_dir, succeeded, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SHAPES: [&str; 6] = [
    "seq_write_1m_qd32",
    "seq_write_128k_qd32",
    "rand_write_64k_qd32",
    "rand_read_4k_qd1",
    "rand_read_4k_qd32",
    "mixed_4k_qd32",
];

fn hashkv(args: &[&str], path_env: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hashkv"));
    cmd.args(args);
    if let Some(path) = path_env {
        cmd.env("PATH", path);
    }
    cmd.output().expect("run hashkv")
}

fn fio_installed() -> bool {
    Command::new("fio")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn devbench_prints_a_row_for_every_shape_and_removes_its_file() {
    let dir = scratch_dir();
    let device = dir.path().join("devbench.img");
    let json = dir.path().join("report.json");
    let out = hashkv(
        &[
            "devbench",
            "--device",
            device.to_str().unwrap(),
            "--size-gib",
            "0.0625",
            "--seconds",
            "0.3",
            "--json",
            json.to_str().unwrap(),
        ],
        None,
    );
    let stdout = succeeded(&out);
    assert!(!device.exists(), "devbench must remove the file it created");
    for shape in SHAPES {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(shape))
            .unwrap_or_else(|| panic!("no row for {shape} in:\n{stdout}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        let ours_mib_s: f64 = cells[1].parse().unwrap();
        let ours_iops: f64 = cells[2].parse().unwrap();
        assert!(ours_mib_s > 0.0 && ours_iops > 0.0, "{row}");
        if fio_installed() {
            assert!(cells.last().unwrap().ends_with('%'), "no ratio in {row}");
        }
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let shapes = report["shapes"].as_array().unwrap();
    assert_eq!(shapes.len(), SHAPES.len());
    assert_eq!(report["region_bytes"], 64 << 20);
    for (entry, name) in shapes.iter().zip(SHAPES) {
        assert_eq!(entry["shape"], name);
        assert!(entry["ours"]["iops"].as_f64().unwrap() > 0.0);
    }
    // The mixed shape really mixes: about 70% reads.
    let mixed = &shapes[5];
    let (reads, writes) = (
        mixed["ours_read_ops"].as_f64().unwrap(),
        mixed["ours_write_ops"].as_f64().unwrap(),
    );
    let read_share = reads / (reads + writes);
    assert!((0.6..0.8).contains(&read_share), "read share {read_share}");
}

#[test]
fn without_fio_it_prints_ours_and_says_how_to_install_fio() {
    let dir = scratch_dir();
    let empty_path = dir.path().join("empty-bin");
    std::fs::create_dir(&empty_path).unwrap();
    let device = dir.path().join("nofio.img");
    let out = hashkv(
        &[
            "devbench",
            "--device",
            device.to_str().unwrap(),
            "--size-gib",
            "0.0625",
            "--seconds",
            "0.2",
            "--shape",
            "rand_read_4k_qd1",
        ],
        Some(&empty_path),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.lines().any(|l| l.starts_with("rand_read_4k_qd1")),
        "{stdout}"
    );
    assert!(
        stdout.contains("fio is missing") && stdout.contains("apt-get install fio"),
        "{stdout}"
    );
    assert!(!device.exists());
}

fn assert_fails_with(out: &Output, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure; stdout:\n{}",
        text(&out.stdout)
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
}

#[test]
fn missing_device_argument_is_a_usage_error() {
    let out = hashkv(&["devbench", "--seconds", "1"], None);
    assert_fails_with(&out, &["--device"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage-error status");
}

#[test]
fn a_directory_as_device_is_refused() {
    let dir = scratch_dir();
    let out = hashkv(
        &["devbench", "--device", dir.path().to_str().unwrap()],
        None,
    );
    assert_fails_with(&out, &["is a directory", "hashkv devbench: error"]);
}

#[test]
fn an_existing_file_is_not_overwritten_without_force() {
    let dir = scratch_dir();
    let device: PathBuf = dir.path().join("precious.img");
    let data = vec![0xa5u8; 64 << 20];
    std::fs::write(&device, &data).unwrap();
    let out = hashkv(
        &[
            "devbench",
            "--device",
            device.to_str().unwrap(),
            "--seconds",
            "0.1",
        ],
        None,
    );
    assert_fails_with(&out, &["--force", "precious.img"]);
    assert!(
        std::fs::read(&device).unwrap() == data,
        "the file was modified"
    );
}

#[test]
fn bad_numbers_are_refused_before_anything_is_created() {
    let dir = scratch_dir();
    let device = dir.path().join("never.img");
    let dev = device.to_str().unwrap();
    for (args, needle) in [
        (vec!["--seconds", "0"], "--seconds"),
        (vec!["--seconds=-3"], "--seconds"),
        (vec!["--size-gib", "0.001"], "smallest region"),
        (vec!["--size-gib", "nan"], "--size-gib"),
        (vec!["--threads", "3"], "--threads"),
        (vec!["--shape", "nonsense"], "nonsense"),
    ] {
        let mut all = vec!["devbench", "--device", dev];
        all.extend(args);
        assert_fails_with(&hashkv(&all, None), &[needle]);
        assert!(!device.exists(), "{all:?} created the file");
    }
}

#[test]
fn a_region_larger_than_the_device_is_refused() {
    let dir = scratch_dir();
    let device = dir.path().join("small.img");
    std::fs::write(&device, vec![0u8; 64 << 20]).unwrap();
    let out = hashkv(
        &[
            "devbench",
            "--device",
            device.to_str().unwrap(),
            "--force",
            "--size-gib",
            "1",
            "--seconds",
            "0.1",
        ],
        None,
    );
    assert_fails_with(&out, &["holds only"]);
    assert!(device.exists(), "an existing file is never removed");
}
