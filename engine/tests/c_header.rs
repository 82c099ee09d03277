//! The checked-in C header (engine/include/hashkv.h) must be what cbindgen generates
//! from engine/src/ffi/ with engine/cbindgen.toml, so that it cannot drift from the
//! code. To regenerate it after changing the C API:
//!   HASHKV_BLESS_HEADER=1 cargo test --release -p hashkv --test c_header

use std::path::{Path, PathBuf};

const BLESS_ENV: &str = "HASHKV_BLESS_HEADER";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What cbindgen generates now.
fn generate() -> String {
    let dir = crate_dir();
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml"))
        .unwrap_or_else(|e| panic!("engine/cbindgen.toml: {e}"));
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/ffi/mod.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen could not generate the header: {e}"));
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("cbindgen writes UTF-8")
}

/// The first line where `checked_in` and `fresh` differ, shown with both versions.
fn first_difference(checked_in: &str, fresh: &str) -> String {
    let (a, b): (Vec<_>, Vec<_>) = (checked_in.lines().collect(), fresh.lines().collect());
    let n = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    format!(
        "first difference at line {}:\n  checked in: {}\n  generated:  {}\n({} lines checked in, {} generated)",
        n + 1,
        a.get(n).copied().unwrap_or("<end of file>"),
        b.get(n).copied().unwrap_or("<end of file>"),
        a.len(),
        b.len()
    )
}

/// Compares the header at `path` with a fresh generation; Err says how they differ.
fn check_header(path: &Path, fresh: &str) -> Result<(), String> {
    let checked_in =
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if checked_in == fresh {
        return Ok(());
    }
    Err(format!(
        "{} differs from what cbindgen generates from engine/src/ffi/: {}\n\
         Regenerate it with: {BLESS_ENV}=1 cargo test --release -p hashkv --test c_header",
        path.display(),
        first_difference(&checked_in, fresh)
    ))
}

#[test]
fn checked_in_header_matches_cbindgen() {
    let header = crate_dir().join("include/hashkv.h");
    let fresh = generate();
    if std::env::var_os(BLESS_ENV).is_some() {
        std::fs::write(&header, &fresh).expect("write include/hashkv.h");
        println!("wrote {}", header.display());
        return;
    }
    if let Err(e) = check_header(&header, &fresh) {
        panic!("{e}");
    }
}

/// The check itself notices drift: a header missing one declaration, or with one
/// signature changed, is refused.
#[test]
fn a_stale_header_is_refused() {
    let fresh = generate();
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("hashkv.h");
    let without_put_sync: String = fresh
        .split_inclusive('\n')
        .filter(|l| !l.contains("hashkv_put_sync"))
        .collect();
    let renamed = fresh.replacen("size_t buf_cap", "size_t buf_capacity", 1);
    assert_ne!(
        renamed, fresh,
        "the header declares hashkv_get_into's buf_cap"
    );
    for text in [without_put_sync, renamed] {
        std::fs::write(&stale, text).unwrap();
        let e = check_header(&stale, &fresh).expect_err("a stale header passes the check");
        assert!(e.contains("first difference at line"), "{e}");
        assert!(e.contains(BLESS_ENV), "{e}");
    }
    std::fs::write(&stale, &fresh).unwrap();
    assert_eq!(check_header(&stale, &fresh), Ok(()));
}
