//! The checked-in corpus without AFL++: every file under corpus/TARGET/ and
//! regressions/TARGET/ runs through its target (a decoder panic or a broken round trip
//! fails the test), the seeds on disk are exactly what the real encoders make today,
//! and each seed decodes as valid.

use hashkv_fuzz::{seeds, target, TARGETS};
use std::path::{Path, PathBuf};

fn dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(kind)
}

/// The files of `kind/TARGET/`, for every target (none if the directory is missing).
fn files(kind: &str) -> Vec<(&'static str, PathBuf)> {
    let mut out = Vec::new();
    for t in TARGETS {
        let Ok(entries) = std::fs::read_dir(dir(kind).join(t.name)) else {
            continue;
        };
        for e in entries {
            out.push((t.name, e.expect("a directory entry").path()));
        }
    }
    out.sort();
    out
}

#[test]
fn every_corpus_and_regression_input_runs_clean() {
    let all: Vec<_> = [files("corpus"), files("regressions")].concat();
    for (name, path) in &all {
        let bytes = std::fs::read(path).unwrap();
        // A panic here names the input in the test's output.
        eprintln!("{name}: {}", path.display());
        (target(name).unwrap().run)(&bytes);
    }
    assert!(all.len() >= TARGETS.len());
}

#[test]
fn every_target_has_a_corpus_and_no_stray_directory() {
    for t in TARGETS {
        assert!(
            files("corpus").iter().any(|(n, _)| *n == t.name),
            "no corpus for target {}",
            t.name
        );
    }
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(dir(kind)) else {
            continue;
        };
        for e in entries {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(target(&name).is_some(), "{kind}/{name} names no target");
        }
    }
}

#[test]
fn seeds_on_disk_are_current_and_valid() {
    for s in seeds::all() {
        let path = dir("corpus").join(s.target).join(s.name);
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(
            on_disk == s.bytes,
            "{} differs from what the encoders make now; run \
             `cargo run -p hashkv-fuzz --bin make-corpus`",
            path.display()
        );
        assert!(
            (target(s.target).unwrap().run)(&s.bytes),
            "seed {} does not decode as valid",
            path.display()
        );
    }
}
