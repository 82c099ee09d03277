//! Runs the Python binding's tests (bindings/python/test_hashkv.py) against the
//! libhashkv.so this `cargo test` built, so that CI runs them. Needs python3 (on the
//! base image; .ci/run installs it if missing): without it this test prints
//! `skipped: ...`, except in CI (CI set), where it fails.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// Test methods in test_hashkv.py; the run must report exactly this many, so that a
/// test that stopped being collected is noticed.
const PYTHON_TESTS: usize = 11;

#[test]
fn python_binding_tests_pass() {
    let runs = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !runs {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 is not installed, and CI must run the Python binding's tests: install it in .ci/run"
        );
        println!("skipped: python3 is not installed");
        return;
    }
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let exe = std::env::current_exe().unwrap();
    // cargo leaves this build's libhashkv.so beside the test binary (target/*/deps).
    let library = exe.parent().unwrap().join("libhashkv.so");
    assert!(library.is_file(), "{} is missing", library.display());
    let dir = common::disk_dir();
    let out = Command::new("python3")
        .args(["-W", "error", "-m", "unittest", "-v", "test_hashkv"])
        .current_dir(crate_dir.join("../bindings/python"))
        .env("HASHKV_LIBRARY", &library)
        .env("HASHKV_TEST_DIR", dir.path())
        .env("HASHKV_HEADER", crate_dir.join("include/hashkv.h"))
        .env("HASHKV_EXPECTED_VERSION", env!("CARGO_PKG_VERSION"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3");
    // unittest reports on stderr.
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python binding's tests failed ({}):\n{report}",
        out.status
    );
    let ran = format!("Ran {PYTHON_TESTS} tests");
    assert!(
        report.contains(&ran) && report.trim_end().ends_with("OK"),
        "expected `{ran}` and OK:\n{report}"
    );
}
