//! `hashkv compare` as a user runs it: the built binary in a scratch directory under
//! CARGO_TARGET_TMPDIR (on the target's disk, where O_DIRECT works). The default build
//! has no RocksDB, so the peers must be listed as skipped with their reason; a build
//! with `--features rocksdb` must run them instead.

mod common;

use common::{
    assert_argument_errors, hashkv_in, leftovers, line_starting, scratch_dir, spawn_in, succeeded,
    text,
};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;

const TINY: [&str; 6] = [
    "--load-gib",
    "0.01",
    "--update-gib",
    "0.01",
    "--threads",
    "2",
];

fn json_rows(path: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn keys(row: &serde_json::Value) -> BTreeSet<String> {
    row.as_object().unwrap().keys().cloned().collect()
}

/// The table row of (store, phase) in stdout, split into cells.
fn table_row<'a>(stdout: &'a str, store: &str, phase: &str) -> Option<Vec<&'a str>> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.len() > 10 && cells[0] == store && cells[1] == phase)
}

#[test]
fn tiny_compare_prints_engine_rows_and_skipped_peers_with_the_bench_json_schema() {
    let dir = scratch_dir();
    let no_fio = dir.path().join("empty-path");
    std::fs::create_dir(&no_fio).unwrap();
    let json = dir.path().join("compare.json");
    let svg = dir.path().join("compare.svg");
    let mut args = vec!["compare"];
    args.extend(TINY);
    args.extend([
        "--read-ops",
        "200",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let out = hashkv_in(dir.path(), &args, Some(&no_fio));
    let stdout = succeeded(&out);
    assert!(
        leftovers(dir.path(), "hashkv-bench-").is_empty(),
        "the temporary directory must be removed"
    );
    let rows = json_rows(&json);
    let modes: Vec<&str> = hashkv::Mode::ALL.iter().map(|m| m.name()).collect();
    let peers = ["rocksdb", "blobdb"];
    let mut stores: Vec<&str> = modes.clone();
    if cfg!(feature = "rocksdb") {
        stores.extend(peers);
    } else {
        for peer in peers {
            let line = format!("peer {peer}: skipped: built without --features rocksdb");
            // Announced before the run and repeated after the table.
            assert_eq!(stdout.matches(&line).count(), 2, "{line:?} in:\n{stdout}");
            assert!(!rows.iter().any(|r| r["mode"] == peer), "{rows:#?}");
        }
    }
    assert_eq!(
        stdout.matches("fio: skipped: fio not installed").count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("/proc/self/io"), "{stdout}");
    let io_readable = std::fs::read_to_string("/proc/self/io").is_ok();
    let items = (0.01 * (1u64 << 30) as f64 / 1024.0) as u64;
    for store in &stores {
        for phase in ["load", "update1", "read"] {
            let matching: Vec<_> = rows
                .iter()
                .filter(|r| r["mode"] == *store && r["phase"] == phase)
                .collect();
            assert_eq!(matching.len(), 1, "({store}, {phase}) in {rows:#?}");
            let r = matching[0];
            let expected_ops = if phase == "read" { 200 } else { items };
            assert_eq!(r["ops"].as_u64().unwrap(), expected_ops, "{r}");
            let cells = table_row(&stdout, store, phase)
                .unwrap_or_else(|| panic!("no table row {store} {phase} in:\n{stdout}"));
            assert_eq!(cells[2], expected_ops.to_string(), "{cells:?}");
            if !io_readable {
                assert!(r["io_write_bytes"].is_null(), "{r}");
                continue;
            }
            let io_wr = r["io_write_bytes"].as_u64().unwrap();
            let user = r["user_bytes"].as_u64().unwrap();
            if phase == "load" {
                // Every loaded value reaches the disk at least once, by whatever path
                // the store takes; the process's counters must see it.
                assert!(io_wr >= user * 9 / 10, "{r}");
                let io_wa = r["io_write_amp"].as_f64().unwrap();
                assert!((io_wa - io_wr as f64 / user as f64).abs() < 1e-9, "{r}");
            }
            if phase == "read" {
                assert!(r["io_write_amp"].is_null(), "{r}");
            }
        }
    }
    assert_eq!(rows.len(), stores.len() * 3, "{rows:#?}");

    // The same schema as bench's JSON: one tiny bench run of one mode to compare keys.
    let bench_json = dir.path().join("bench.json");
    let mut bench_args = vec!["bench", "--mode", modes[0]];
    bench_args.extend(TINY);
    bench_args.extend(["--json", bench_json.to_str().unwrap()]);
    let bench = hashkv_in(dir.path(), &bench_args, Some(&no_fio));
    assert!(bench.status.success(), "{}", text(&bench.stderr));
    let bench_keys = keys(&json_rows(&bench_json)[0]);
    for r in &rows {
        assert_eq!(keys(r), bench_keys, "{r}");
    }
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg"), "not an SVG");
    assert!(
        plot.contains("/proc/self/io"),
        "the plot says which bytes it counts"
    );
}

#[test]
fn with_fio_each_phase_gets_a_share_of_fios_sequential_write_bandwidth() {
    let dir = scratch_dir();
    let probe = Command::new("fio").arg("--version").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: fio not installed");
        return;
    }
    let json = dir.path().join("compare.json");
    let mut args = vec!["compare", "--peer", "none", "--fio-seconds", "0.3"];
    args.extend(TINY);
    args.extend(["--read-ops", "200", "--json", json.to_str().unwrap()]);
    let out = hashkv_in(dir.path(), &args, None);
    let stdout = succeeded(&out);
    assert!(
        leftovers(dir.path(), "hashkv-bench-").is_empty(),
        "fio's files and the store must be removed"
    );
    // Every read phase is bracketed by fio's random reads, in the table's line under it
    // and in its JSON row; the other phases are not.
    let bracket_lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("fio rand_read_4k_qd32 around it:"))
        .collect();
    assert_eq!(bracket_lines.len(), hashkv::Mode::ALL.len(), "{stdout}");
    for r in json_rows(&json) {
        let around = &r["fio_read_iops_around"];
        if r["phase"] == "read" {
            let iops: Vec<f64> = around
                .as_array()
                .unwrap_or_else(|| panic!("{r}"))
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert!(iops.len() == 2 && iops.iter().all(|&x| x > 0.0), "{r}");
        } else {
            assert!(around.is_null(), "{r}");
        }
    }
    let fio_line = line_starting(&stdout, "seq_write_1m_qd32 ");
    let fio_mib: f64 = fio_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(fio_mib > 0.0, "{fio_line}");
    let synced_line = line_starting(&stdout, "seq_write_1m_qd32_fdatasync ");
    assert!(
        synced_line.contains("an fdatasync every 16 MiB"),
        "the default write cache is 16 MiB: {synced_line}"
    );
    let synced_mib: f64 = synced_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(synced_mib > 0.0, "{synced_line}");
    let shares_at = stdout
        .find("as a share of fio seq_write_1m_qd32")
        .unwrap_or_else(|| panic!("no share table in:\n{stdout}"));
    for mode in hashkv::Mode::ALL.iter().map(|m| m.name()) {
        for phase in ["load", "update1"] {
            let cells: Vec<&str> = stdout[shares_at..]
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|c| c.len() == 5 && c[0] == mode && c[1] == phase)
                .unwrap_or_else(|| panic!("no share of {mode} {phase} in:\n{stdout}"));
            let bw: f64 = cells[2].parse().unwrap();
            let share: f64 = cells[3].trim_end_matches('%').parse().unwrap();
            let synced: f64 = cells[4].trim_end_matches('%').parse().unwrap();
            assert!(bw > 0.0, "{cells:?}");
            assert!(
                (share - 100.0 * bw / fio_mib).abs() < 0.2 + share * 0.01,
                "{cells:?} vs fio {fio_mib}"
            );
            assert!(
                (synced - 100.0 * bw / synced_mib).abs() < 0.2 + synced * 0.01,
                "{cells:?} vs synced fio {synced_mib}"
            );
        }
    }
}

#[test]
fn bad_compare_arguments_fail_with_a_message_naming_the_problem() {
    let dir = scratch_dir();
    let cases: [(&[&str], &str); 5] = [
        (&["compare", "--peer", "mysql"], "no such peer"),
        (&["compare", "--fio-seconds", "0"], "--fio-seconds"),
        (
            &["compare", "--peer-dir", "/nonexistent/hashkv-peers"],
            "not an existing directory",
        ),
        (&["compare", "--load-gib", "lots"], "--load-gib"),
        (&["compare", "--mode", "leveldb"], "no such mode"),
    ];
    assert_argument_errors(dir.path(), &cases);
}

#[test]
fn ctrl_c_stops_compare_before_the_peers_and_fio_and_removes_the_store() {
    let dir = scratch_dir();
    let mut child = spawn_in(
        dir.path(),
        &["compare", "--load-gib", "2", "--update-gib", "2"],
    );
    let mut stdout_lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let first_mode = hashkv::Mode::ALL[0].name();
    for line in stdout_lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with(&format!("mode {first_mode}:")) {
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
    assert!(!status.success(), "an interrupted compare must not exit 0");
    assert!(stderr.contains("hashkv compare: interrupted"), "{stderr}");
    let load = table_row(&seen, first_mode, "load*")
        .unwrap_or_else(|| panic!("no interrupted load row in:\n{seen}\n{stderr}"));
    let ops: u64 = load[2].parse().unwrap();
    assert!(ops > 0 && ops < 2 << 20, "{load:?}");
    let ran_after: Vec<&str> = seen
        .lines()
        .filter(|l| l.starts_with("peer ") && !l.contains("skipped") && !l.contains(": RocksDB"))
        .collect();
    assert!(
        ran_after.is_empty(),
        "no peer may start after Ctrl-C:\n{seen}"
    );
    assert!(
        !seen.contains("\nfio on "),
        "fio must not run after Ctrl-C:\n{seen}"
    );
    assert!(
        leftovers(dir.path(), "hashkv-bench-").is_empty(),
        "the temporary store must be removed after Ctrl-C"
    );
}
