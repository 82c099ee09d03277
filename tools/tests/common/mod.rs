//! Helpers shared by the CLI tests: running the binary, scratch directories on the
//! target's disk (O_DIRECT does not work on tmpfs), reading output.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch dir on the target's disk")
}

/// Runs hashkv in `dir` with TMPDIR set to `dir` (so its temporary stores land there);
/// `path` replaces PATH (so a test can hide fio).
pub fn hashkv_in(dir: &Path, args: &[&str], path: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hashkv"));
    cmd.args(args).current_dir(dir).env("TMPDIR", dir);
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    cmd.output().expect("run hashkv")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that the run succeeded (showing its output if not); returns its stdout.
pub fn succeeded(out: &Output) -> String {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    stdout
}

/// The first line of `stdout` that starts with `prefix`; panics (showing the output)
/// when there is none.
pub fn line_starting<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{stdout}"))
}

/// Entries of `dir` whose names start with `prefix`.
pub fn leftovers(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Each command fails, its stderr names the problem, and no store is left behind.
pub fn assert_argument_errors(dir: &Path, cases: &[(&[&str], &str)]) {
    for (args, expected) in cases {
        let out = hashkv_in(dir, args, None);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(expected),
            "{args:?}: stderr lacks {expected:?}:\n{stderr}"
        );
    }
    assert!(
        leftovers(dir, "hashkv-bench-").is_empty(),
        "argument errors must not leave a store behind"
    );
}

/// Starts hashkv in `dir` with piped output (for tests that interrupt it).
pub fn spawn_in(dir: &Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_hashkv"))
        .args(args)
        .current_dir(dir)
        .env("TMPDIR", dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start hashkv")
}
