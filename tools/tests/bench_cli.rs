//! `hashkv bench` as a user runs it: the built binary, started in a scratch directory
//! under CARGO_TARGET_TMPDIR (on the target's disk, where O_DIRECT works) with TMPDIR
//! pointing there, so that its temporary store lands there.

mod common;

use common::{
    assert_argument_errors, hashkv_in, leftovers, line_starting, scratch_dir, spawn_in, succeeded,
    text,
};
use std::io::{BufRead, BufReader};

const FIELDS: [&str; 21] = [
    "mode",
    "phase",
    "began_at_seconds",
    "ops",
    "seconds",
    "ops_per_sec",
    "user_bytes",
    "device_write_bytes",
    "device_read_bytes",
    "lsm_write_bytes",
    "write_amp",
    "gc_write_bytes",
    "space_bytes",
    "p50_us",
    "p99_us",
    "p999_us",
    "max_us",
    "full_windows",
    "slowest_window_ops_per_sec",
    "slowest_window_share",
    "ops_per_window",
];

#[test]
fn small_bench_writes_one_consistent_json_object_per_mode_and_phase() {
    let dir = scratch_dir();
    let json = dir.path().join("bench.json");
    let svg = dir.path().join("bench.svg");
    let out = hashkv_in(
        dir.path(),
        &[
            "bench",
            "--load-gib",
            "0.02",
            "--update-gib",
            "0.02",
            "--phases",
            "2",
            "--read-ops",
            "500",
            "--scan-ops",
            "20",
            "--threads",
            "2",
            "--json",
            json.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ],
        None,
    );
    let stdout = succeeded(&out);
    assert!(
        leftovers(dir.path(), "hashkv-bench-").is_empty(),
        "the temporary store must be removed"
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // Every mode this build runs appears (a default run covers Mode::ALL).
    let modes: Vec<String> = hashkv::Mode::ALL
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    let phases = ["load", "update1", "update2", "read", "scan"];
    assert_eq!(rows.len(), modes.len() * phases.len(), "{rows:#?}");
    for mode in &modes {
        for phase in phases {
            let matching: Vec<_> = rows
                .iter()
                .filter(|r| r["mode"] == mode.as_str() && r["phase"] == phase)
                .collect();
            assert_eq!(matching.len(), 1, "({mode}, {phase}) in {rows:#?}");
        }
    }
    let items = (0.02 * (1u64 << 30) as f64 / 1024.0) as u64;
    for r in &rows {
        for field in FIELDS {
            assert!(r.get(field).is_some(), "no {field} in {r}");
        }
        let phase = r["phase"].as_str().unwrap();
        let ops = r["ops"].as_u64().unwrap();
        let user = r["user_bytes"].as_u64().unwrap();
        let dev_wr = r["device_write_bytes"].as_u64().unwrap();
        let lsm_wr = r["lsm_write_bytes"].as_u64().unwrap();
        let expected_ops = match phase {
            "read" => 500,
            "scan" => 20,
            _ => items,
        };
        assert_eq!(ops, expected_ops, "{r}");
        assert!(r["seconds"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["ops_per_sec"].as_f64().unwrap() > 0.0, "{r}");
        let p50 = r["p50_us"].as_f64().unwrap();
        let p99 = r["p99_us"].as_f64().unwrap();
        let p999 = r["p999_us"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= p99 && p99 <= p999, "{r}");
        assert!(r["max_us"].as_f64().unwrap() >= p999, "{r}");
        check_slowest_window(r);
        assert!(r["space_bytes"].as_u64().unwrap() > 0, "{r}");
        if phase == "read" || phase == "scan" {
            assert_eq!(user, 0, "{r}");
            assert!(r["write_amp"].is_null(), "{r}");
            assert!(r["user_read_bytes"].as_u64().unwrap() > 0, "{r}");
        } else {
            // Each op writes a 24-byte key and a 1024-byte value.
            assert_eq!(user, ops * (24 + 1024), "{r}");
            let wa = r["write_amp"].as_f64().unwrap();
            let expected = (dev_wr + lsm_wr) as f64 / user as f64;
            assert!((wa - expected).abs() <= 1e-12 * expected, "{r}");
        }
        if phase == "load" {
            // Every loaded value reaches the devices or the LSM tree at least once.
            assert!(dev_wr + lsm_wr >= user * 9 / 10, "{r}");
        }
    }
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(
        plot.starts_with("<svg"),
        "not an SVG: {}",
        &plot[..60.min(plot.len())]
    );
    for mode in &modes {
        assert!(plot.contains(mode.as_str()), "{mode} not named in the plot");
        check_phase_starts(&rows, mode);
    }
    // Each phase's start is marked with its name, once per mode.
    let texts: Vec<&str> = plot
        .split("<text")
        .skip(1)
        .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim()))
        .collect();
    for phase in phases {
        let marks = texts.iter().filter(|t| **t == phase).count();
        assert_eq!(marks, modes.len(), "{phase} marks in the plot: {texts:?}");
    }
    for phase in phases {
        let row = stdout
            .lines()
            .find(|l| {
                let mut cells = l.split_whitespace();
                cells.next() == Some(modes[0].as_str()) && cells.next() == Some(phase)
            })
            .unwrap_or_else(|| panic!("no table row for {phase} in:\n{stdout}"));
        let ops: u64 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(ops > 0, "{row}");
    }
}

#[test]
fn hotness_on_and_off_run_the_hashkv_mode_twice_in_one_run() {
    let dir = scratch_dir();
    let json = dir.path().join("bench.json");
    let out = hashkv_in(
        dir.path(),
        &[
            "bench",
            "--mode",
            "hashkv,vlog",
            "--hotness",
            "on,off",
            "--load-gib",
            "0.02",
            "--update-gib",
            "0.02",
            "--phases",
            "2",
            "--threads",
            "2",
            "--json",
            json.to_str().unwrap(),
        ],
        None,
    );
    let stdout = succeeded(&out);
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let labels: Vec<&str> = rows.iter().map(|r| r["mode"].as_str().unwrap()).collect();
    let per_run = ["load", "update1", "update2"].len();
    let mut expected = Vec::new();
    for label in ["hashkv+hot", "hashkv", "vlog"] {
        expected.extend(std::iter::repeat_n(label, per_run));
    }
    assert_eq!(labels, expected, "{stdout}");
    // Each run names its setting: the option reached the store.
    let described = |label: &str| {
        let prefix = format!("mode {label}: ");
        let line = stdout.lines().find(|l| l.starts_with(&prefix));
        line.unwrap_or_else(|| panic!("no {prefix:?} line in:\n{stdout}"))
            .to_string()
    };
    assert!(
        described("hashkv+hot").contains("hot/cold on; metadata"),
        "{stdout}"
    );
    assert!(
        described("hashkv").contains("hot/cold off; metadata"),
        "{stdout}"
    );
}

/// The slowest whole 1-second window: a share in [0, 1] and a rate no more than the
/// mean per whole window, when the phase had at least two whole windows; null otherwise.
fn check_slowest_window(r: &serde_json::Value) {
    let full_windows = r["full_windows"].as_u64().unwrap();
    let seconds = r["seconds"].as_f64().unwrap();
    // Whole windows end by the phase's last operation, inside the phase.
    assert!(full_windows as f64 <= seconds, "{r}");
    // The timeline: every operation in one window, the whole windows and at most a
    // partial one after them; the slowest whole window among them (below).
    let windows: Vec<u64> = r["ops_per_window"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_u64().unwrap())
        .collect();
    assert_eq!(
        windows.iter().sum::<u64>(),
        r["ops"].as_u64().unwrap(),
        "{r}"
    );
    assert!(windows.len() as u64 <= full_windows + 1, "{r}");
    let share = &r["slowest_window_share"];
    let slowest = &r["slowest_window_ops_per_sec"];
    if full_windows < 2 {
        assert!(share.is_null() && slowest.is_null(), "{r}");
        return;
    }
    let share = share.as_f64().unwrap();
    let slowest = slowest.as_f64().unwrap();
    let fewest = windows[..full_windows as usize].iter().min().unwrap();
    assert_eq!(*fewest as f64, slowest, "{r}");
    assert!((0.0..=1.0).contains(&share), "{r}");
    let ops = r["ops"].as_u64().unwrap() as f64;
    assert!(
        slowest >= 0.0 && slowest <= ops / full_windows as f64,
        "{r}"
    );
}

/// A mode's phases begin one after another, each after the previous one's end.
fn check_phase_starts(rows: &[serde_json::Value], mode: &str) {
    let mut previous_end = 0.0;
    for r in rows.iter().filter(|r| r["mode"] == mode) {
        let began = r["began_at_seconds"].as_f64().unwrap();
        assert!(began >= previous_end, "{r} begins before {previous_end}");
        previous_end = began + r["seconds"].as_f64().unwrap();
    }
}

#[test]
fn requested_modes_this_build_lacks_are_reported_as_skipped() {
    let dir = scratch_dir();
    let json = dir.path().join("bench.json");
    let out = hashkv_in(
        dir.path(),
        &[
            "bench",
            "--mode",
            "hashkv,vlog,lsm",
            "--load-gib",
            "0.01",
            "--update-gib",
            "0.01",
            "--json",
            json.to_str().unwrap(),
        ],
        None,
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for name in ["hashkv", "vlog", "lsm"] {
        let built = hashkv::Mode::from_name(name).is_ok();
        let ran = rows.iter().any(|r| r["mode"] == name);
        let skipped = stdout.contains(&format!("mode {name}: skipped"));
        assert_eq!(ran, built, "{name}: {stdout}");
        assert_eq!(skipped, !built, "{name}: {stdout}");
    }
}

#[test]
fn bad_bench_arguments_fail_with_a_message_naming_the_problem() {
    let dir = scratch_dir();
    let cases: [(&[&str], &str); 8] = [
        (&["bench", "--load-gib", "lots"], "--load-gib"),
        (&["bench", "--zipf", "1.5"], "--zipf"),
        (&["bench", "--reserve", "0"], "--reserve"),
        (&["bench", "--threads", "0"], "--threads"),
        (&["bench", "--read-threads", "0"], "--read-threads"),
        (&["bench", "--batch", "0"], "--batch"),
        (&["bench", "--hotness", "maybe"], "--hotness"),
        (&["bench", "--mode", "leveldb"], "no such mode"),
    ];
    assert_argument_errors(dir.path(), &cases);
}

#[test]
fn ctrl_c_stops_the_phase_prints_what_was_measured_and_removes_the_store() {
    let dir = scratch_dir();
    let mut child = spawn_in(
        dir.path(),
        &["bench", "--load-gib", "2", "--update-gib", "2"],
    );
    let mut stdout_lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    // The "mode ..." line is printed once the store is formatted and the load starts.
    for line in stdout_lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("mode hashkv:") {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    for line in stdout_lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(!status.success(), "an interrupted bench must not exit 0");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let load_row = seen
        .lines()
        .find(|l| l.starts_with("hashkv") && l.split_whitespace().nth(1) == Some("load*"))
        .unwrap_or_else(|| panic!("no interrupted load row in:\n{seen}\n{stderr}"));
    let ops: u64 = load_row.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(ops > 0 && ops < 2 << 20, "{load_row}");
    assert!(
        !seen
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("update1")),
        "no phase may start after Ctrl-C:\n{seen}"
    );
    assert!(
        leftovers(dir.path(), "hashkv-bench-").is_empty(),
        "the temporary store must be removed after Ctrl-C"
    );
}

#[test]
fn bench_stripes_over_devices_it_creates_and_removes_them_afterwards() {
    let dir = scratch_dir();
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    let meta = dir.path().join("meta");
    let json = dir.path().join("bench.json");
    let out = hashkv_in(
        dir.path(),
        &[
            "bench",
            "--device",
            a.to_str().unwrap(),
            "--device",
            b.to_str().unwrap(),
            "--metadata",
            meta.to_str().unwrap(),
            "--load-gib",
            "0.05",
            "--update-gib",
            "0.05",
            "--json",
            json.to_str().unwrap(),
        ],
        None,
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    // Each member holds its share of the computed size plus its identity block.
    assert!(stdout.contains("on 2 member(s)"), "{stdout}");
    assert!(
        !a.exists() && !b.exists(),
        "created members must be removed"
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(rows.iter().any(|r| r["phase"] == "update1"), "{rows:#?}");

    // The metadata directory is the user's: a second run must not replace it silently.
    let again = hashkv_in(
        dir.path(),
        &[
            "bench",
            "--device",
            a.to_str().unwrap(),
            "--metadata",
            meta.to_str().unwrap(),
            "--load-gib",
            "0.01",
        ],
        None,
    );
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("--force-format"),
        "{}",
        text(&again.stderr)
    );
    assert!(
        !a.exists(),
        "a refused run must remove the device it created"
    );
}

/// A file that holds a hashkv store is not formatted over without --force-format.
#[test]
fn bench_refuses_a_file_that_holds_a_store() {
    let dir = scratch_dir();
    let device = dir.path().join("store.img");
    let meta = dir.path().join("meta");
    let (dev_s, meta_s) = (device.to_str().unwrap(), meta.to_str().unwrap());
    let format = hashkv_in(
        dir.path(),
        &[
            "format",
            "--device",
            dev_s,
            "--metadata",
            meta_s,
            "--create-gib",
            "0.5",
        ],
        None,
    );
    assert!(format.status.success(), "{}", text(&format.stderr));
    let put = hashkv_in(
        dir.path(),
        &[
            "put",
            "--device",
            dev_s,
            "--metadata",
            meta_s,
            "k",
            "precious",
        ],
        None,
    );
    assert!(put.status.success(), "{}", text(&put.stderr));
    let bench = hashkv_in(
        dir.path(),
        &[
            "bench",
            "--device",
            dev_s,
            "--load-gib",
            "0.01",
            "--update-gib",
            "0",
        ],
        None,
    );
    let stderr = text(&bench.stderr);
    assert!(
        !bench.status.success(),
        "bench overwrote a store:\n{}",
        text(&bench.stdout)
    );
    assert!(
        stderr.contains("--force-format")
            && stderr.contains("hashkv superblock")
            && stderr.contains(dev_s),
        "{stderr}"
    );
    let get = hashkv_in(
        dir.path(),
        &["get", "--device", dev_s, "--metadata", meta_s, "k"],
        None,
    );
    assert_eq!(text(&get.stdout), "precious", "{}", text(&get.stderr));
}

/// The temporary store goes under $TMPDIR, wherever the command is started.
#[test]
fn the_temporary_store_goes_under_tmpdir() {
    let (cwd, tmp) = (scratch_dir(), scratch_dir());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hashkv"))
        .args([
            "bench",
            "--mode",
            "lsm",
            "--load-gib",
            "0.002",
            "--update-gib",
            "0",
        ])
        .current_dir(cwd.path())
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let line = line_starting(&stdout, "store: temporary directory ");
    assert!(
        line.contains(&tmp.path().display().to_string()),
        "{line} is not under {}",
        tmp.path().display()
    );
    assert!(std::fs::read_dir(cwd.path()).unwrap().next().is_none());
    assert!(leftovers(tmp.path(), "hashkv-bench-").is_empty());
}

/// A second Ctrl-C exits at once and says which paths it leaves behind.
#[test]
fn a_second_ctrl_c_prints_what_it_leaves_behind() {
    for _ in 0..SECOND_CTRL_C_ATTEMPTS {
        let dir = scratch_dir();
        let (status, stderr) = ctrl_c_until_exit(dir.path());
        if status.code() == Some(1) && stderr.contains("error: interrupted") {
            // The first Ctrl-C finished the phase, flushed and closed before the next
            // one arrived (a loaded machine delayed this thread): a clean exit, which
            // leaves nothing behind; try again.
            assert!(
                leftovers(dir.path(), "hashkv-bench-").is_empty(),
                "{stderr}"
            );
            continue;
        }
        assert_eq!(status.code(), Some(130), "{stderr}");
        let left = leftovers(dir.path(), "hashkv-bench-");
        assert_eq!(left.len(), 1, "{left:?}");
        let path = dir.path().join(&left[0]);
        assert!(
            stderr.contains(&format!("left behind: {}", path.display())),
            "{stderr}"
        );
        std::fs::remove_dir_all(path).unwrap();
        return;
    }
    panic!("the first Ctrl-C always finished before the second arrived");
}

/// Runs of `a_second_ctrl_c_prints_what_it_leaves_behind` before it gives up on the
/// second Ctrl-C arriving in time (it did in every run alone; once under the full
/// suite's load, the first one's clean exit came first).
const SECOND_CTRL_C_ATTEMPTS: usize = 5;

/// Starts a bench in `dir` and sends it Ctrl-C every 10 ms from the moment its first
/// mode starts until it exits; its exit status and stderr.
fn ctrl_c_until_exit(dir: &std::path::Path) -> (std::process::ExitStatus, String) {
    let mut child = spawn_in(dir, &["bench", "--load-gib", "2", "--update-gib", "2"]);
    let mut stdout_lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in stdout_lines.by_ref() {
        if line.unwrap().starts_with("mode hashkv:") {
            break;
        }
    }
    // Ctrl-C again and again until it exits: the second arrives while the first still
    // finishes the phase, flushes and closes.
    let status = loop {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        std::thread::sleep(std::time::Duration::from_millis(10));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    (status, stderr)
}

/// `--prefill-device` writes every device file the run creates once before formatting
/// (the temporary one, and a missing `--device` path), and the run still removes them.
#[test]
fn prefill_device_writes_each_file_the_run_creates_once() {
    let dir = scratch_dir();
    let tiny = [
        "bench",
        "--mode",
        "hashkv",
        "--load-gib",
        "0.01",
        "--update-gib",
        "0.01",
        "--prefill-device",
    ];
    let named = dir.path().join("named.img");
    let with_device: Vec<&str> = tiny
        .iter()
        .copied()
        .chain(["--device", named.to_str().unwrap()])
        .collect();
    for args in [&tiny[..], &with_device[..]] {
        let out = hashkv_in(dir.path(), args, None);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}\nstdout:\n{stdout}\nstderr:\n{}",
            text(&out.stderr)
        );
        let prefilled: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with("device: wrote ") && l.ends_with("once (--prefill-device)"))
            .collect();
        assert_eq!(prefilled.len(), 1, "{args:?}\n{stdout}");
        assert!(
            leftovers(dir.path(), "hashkv-bench-").is_empty() && !named.exists(),
            "the device files must be removed"
        );
    }
}
