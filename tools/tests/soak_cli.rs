//! `hashkv soak` end to end: about 20 seconds in every mode with 8 threads on a
//! temporary store, each run checked as it goes and against the models at the end;
//! and its argument errors.

mod common;

use common::{hashkv_in, line_starting, scratch_dir, text};

/// Seconds per mode: long enough for GC to run many times on the small store.
const SOAK_SECONDS: &str = "20";

fn soak(mode: &str) {
    let dir = scratch_dir();
    let out = hashkv_in(
        dir.path(),
        &["soak", "--seconds", SOAK_SECONDS, "--mode", mode],
        None,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let line = |prefix: &str| line_starting(&stdout, prefix);
    let passed = line("soak passed: ");
    let ops: u64 = passed["soak passed: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ops > 1000, "{passed}");
    for kind in ["put ", "get ", "delete ", "batch ", "scan "] {
        assert!(passed.contains(kind), "{passed} lacks {kind}");
    }
    let gc = line("GC runs ");
    let gc_runs: u64 = gc["GC runs ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The lsm mode keeps every value in the index: its value store has nothing to
    // collect.
    if mode != "lsm" {
        assert!(gc_runs > 0, "{gc}");
    }
    let memory = line("peak resident memory ");
    assert!(memory.contains("MiB (bound "), "{memory}");
    assert!(
        common::leftovers(dir.path(), "hashkv-soak-").is_empty(),
        "the temporary store is removed"
    );
}

#[test]
fn soak_hashkv() {
    soak("hashkv");
}

#[test]
fn soak_vlog() {
    soak("vlog");
}

#[test]
fn soak_lsm() {
    soak("lsm");
}

#[test]
fn bad_arguments_are_refused() {
    let dir = scratch_dir();
    let cases: [(&[&str], &str); 5] = [
        (
            &["soak", "--threads", "0"],
            "--threads 0 must lie in 1..=64",
        ),
        (
            &["soak", "--threads", "65"],
            "--threads 65 must lie in 1..=64",
        ),
        (&["soak", "--seconds", "0"], "--seconds must be at least 1"),
        (&["soak", "--metadata", "m"], "--metadata without --device"),
        (&["soak", "--device", "d"], "--device needs --metadata"),
    ];
    for (args, expected) in cases {
        let out = hashkv_in(dir.path(), args, None);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    assert!(
        common::leftovers(dir.path(), "").is_empty(),
        "nothing is created"
    );
}

/// A store of an earlier run is formatted over only with --force.
#[test]
fn a_store_that_holds_data_needs_force() {
    let dir = scratch_dir();
    let store = ["--device", "device", "--metadata", "meta"];
    let run = |extra: &[&str]| {
        let mut args = vec!["soak", "--seconds", "1", "--threads", "2"];
        args.extend_from_slice(&store);
        args.extend_from_slice(extra);
        hashkv_in(dir.path(), &args, None)
    };
    let first = run(&[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let again = run(&[]);
    let stderr = text(&again.stderr);
    assert!(!again.status.success());
    assert!(stderr.contains("pass --force to overwrite"), "{stderr}");
    let forced = run(&["--force"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert!(text(&forced.stdout).contains("soak passed"));
}
