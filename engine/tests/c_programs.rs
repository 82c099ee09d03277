//! The C programs in tests/c/, built against the library as a C programmer gets it:
//! engine/install-c.sh installs what `cargo test` built (libhashkv.so with its SONAME
//! links, libhashkv.a, hashkv.h, hashkv.pc) into a scratch prefix, and the programs
//! are compiled with the README's `pkg-config` lines.
//! - example.c (format, write, batch, read, scan, reopen, check) runs in every mode,
//!   statically linked too, and under valgrind;
//! - errors.c (NULLs, too-small buffers, bad options, a second opener, a full store, a
//!   damaged record) checks the documented codes, also under valgrind.
//!
//! Needs cc, pkg-config, readelf and valgrind (on the base image; .ci/run installs
//! them if missing). Without one of them these tests print `skipped: ...`, except in
//! CI (CI set), where they fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Whether a tool runs; else None after saying so (or a panic in CI).
fn require(tool: &str) -> Option<()> {
    let runs = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if runs {
        return Some(());
    }
    if std::env::var_os("CI").is_some() {
        panic!("{tool} is not installed, and CI must run the C programs: install it in .ci/run");
    }
    println!("skipped: {tool} is not installed");
    None
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Where cargo put the libhashkv.so and libhashkv.a of this build: beside the test
/// binary in target/<profile>/deps (`cargo test` does not copy them up to
/// target/<profile>, where `cargo build` leaves them).
fn built_libraries() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("target/<profile>/deps");
    for lib in ["libhashkv.so", "libhashkv.a"] {
        assert!(
            deps.join(lib).is_file(),
            "{} is missing: cargo builds it with the tests",
            deps.join(lib).display()
        );
    }
    deps.to_path_buf()
}

/// The scratch prefix, installed once per test run (the tests share it).
fn prefix() -> &'static Path {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let prefix = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hashkv-c-prefix");
        let _ = std::fs::remove_dir_all(&prefix);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/install-c.sh");
        run(Command::new("bash")
            .arg(script)
            .arg("--prefix")
            .arg(&prefix)
            .arg("--from")
            .arg(built_libraries()));
        prefix
    })
}

/// `pkg-config ARGS hashkv` against the scratch prefix only.
fn pkg_config(args: &[&str]) -> Vec<String> {
    let pc_dir = prefix().join("lib/pkgconfig");
    let out = run(Command::new("pkg-config")
        .env("PKG_CONFIG_LIBDIR", &pc_dir)
        .env("PKG_CONFIG_PATH", &pc_dir)
        .args(args)
        .arg("hashkv"));
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Compiles tests/c/NAME.c with warnings as errors; `link` are the linker arguments.
fn compile(name: &str, out_dir: &Path, link: &[String]) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let exe = out_dir.join(name);
    run(Command::new("cc")
        .args(["-std=c11", "-g", "-Wall", "-Wextra", "-Werror"])
        .args(pkg_config(&["--cflags"]))
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .args(link));
    exe
}

/// The README's line: `cc app.c $(pkg-config --cflags --libs hashkv)`, plus an rpath
/// since the scratch prefix is not in the loader's path.
fn compile_shared(name: &str, out_dir: &Path) -> PathBuf {
    let mut link = pkg_config(&["--libs"]);
    link.push(format!("-Wl,-rpath,{}", prefix().join("lib").display()));
    compile(name, out_dir, &link)
}

fn tools() -> Option<()> {
    require("cc")?;
    require("pkg-config")?;
    require("readelf")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn install_lays_out_the_library_with_its_soname_and_pkg_config() {
    if tools().is_none() {
        return;
    }
    let lib = prefix().join("lib");
    let (major, minor) = (
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
    );
    let soname = match major {
        "0" => format!("libhashkv.so.0.{minor}"),
        _ => format!("libhashkv.so.{major}"),
    };
    let out = run(Command::new("readelf")
        .arg("-d")
        .arg(lib.join("libhashkv.so")));
    let dynamic = stdout(&out);
    assert!(
        dynamic.contains(&format!("Library soname: [{soname}]")),
        "libhashkv.so lacks SONAME {soname}:\n{dynamic}"
    );
    let real = format!("libhashkv.so.{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        std::fs::read_link(lib.join(&soname)).unwrap(),
        PathBuf::from(&real)
    );
    assert_eq!(
        std::fs::read_link(lib.join("libhashkv.so")).unwrap(),
        PathBuf::from(&soname)
    );
    assert!(lib.join("libhashkv.a").is_file());
    assert!(prefix().join("include/hashkv.h").is_file());
    let flags = pkg_config(&["--cflags", "--libs"]);
    let want = [
        format!("-I{}", prefix().join("include").display()),
        format!("-L{}", lib.display()),
        "-lhashkv".to_string(),
    ];
    assert_eq!(flags, want);
    assert_eq!(pkg_config(&["--modversion"]), [env!("CARGO_PKG_VERSION")]);
}

#[test]
fn example_runs_in_every_mode_and_statically_linked() {
    if tools().is_none() {
        return;
    }
    let dir = common::disk_dir();
    let shared = compile_shared("example", dir.path());
    let needed = stdout(&run(Command::new("readelf").arg("-d").arg(&shared)));
    assert!(
        needed.contains("Shared library: [libhashkv.so.0."),
        "{needed}"
    );
    for mode in ["hashkv", "vlog", "lsm"] {
        let work = dir.path().join(mode);
        std::fs::create_dir(&work).unwrap();
        let out = run(Command::new(&shared).arg(&work).arg(mode));
        let text = stdout(&out);
        assert!(text.contains(&format!("mode {mode}")), "{text}");
        assert!(text.lines().any(|l| l == "example: ok"), "{text}");
    }
    // Static: libhashkv.a and the system libraries `pkg-config --static` names.
    let libs: Vec<String> = pkg_config(&["--static", "--libs"])
        .into_iter()
        .map(|a| {
            if a == "-lhashkv" {
                "-l:libhashkv.a".into()
            } else {
                a
            }
        })
        .collect();
    let static_dir = dir.path().join("static");
    std::fs::create_dir(&static_dir).unwrap();
    let exe = compile("example", &static_dir, &libs);
    let needed = stdout(&run(Command::new("readelf").arg("-d").arg(&exe)));
    assert!(
        !needed.contains("libhashkv"),
        "linked statically, yet:\n{needed}"
    );
    let work = static_dir.join("work");
    std::fs::create_dir(&work).unwrap();
    let text = stdout(&run(Command::new(&exe).arg(&work)));
    assert!(text.lines().any(|l| l == "example: ok"), "{text}");
}

#[test]
fn errors_program_gets_the_documented_codes() {
    if tools().is_none() {
        return;
    }
    let dir = common::disk_dir();
    let exe = compile_shared("errors", dir.path());
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let text = stdout(&run(Command::new(&exe).arg(&work)));
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("errors: ") && last.ends_with(" passed, 0 failed"),
        "{text}"
    );
}

/// Runs `exe args` under valgrind's memcheck; fails on any memory error or leak.
fn valgrind(exe: &Path, args: &[&Path]) -> String {
    let out = run(Command::new("valgrind")
        .args([
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect",
            "--error-exitcode=99",
        ])
        .arg(exe)
        .args(args));
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        report.contains("ERROR SUMMARY: 0 errors from 0 contexts"),
        "valgrind {}:\n{report}",
        exe.display()
    );
    report
}

#[test]
fn example_and_errors_run_clean_under_valgrind() {
    if tools().is_none() || require("valgrind").is_none() {
        return;
    }
    let dir = common::disk_dir();
    for name in ["example", "errors"] {
        let exe = compile_shared(name, dir.path());
        let work = dir.path().join(format!("{name}-work"));
        std::fs::create_dir(&work).unwrap();
        let report = valgrind(&exe, &[&work]);
        let summary = report
            .lines()
            .find(|l| l.contains("ERROR SUMMARY"))
            .unwrap_or_default();
        println!("{name}: {summary}");
    }
}
