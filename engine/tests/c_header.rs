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

/// The header compiles as C and as C++ with warnings as errors, and declares what a
/// program calls with the types it passes.
#[test]
fn header_compiles_as_c_and_cxx() {
    let has_cc = std::process::Command::new("cc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cc {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs cc: install it in .ci/run"
        );
        println!("skipped: cc is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("use.c");
    std::fs::write(&prog, USES_EVERY_DECLARATION).unwrap();
    let include = crate_dir().join("include");
    for (lang, std) in [("c", "-std=c99"), ("c++", "-std=c++11")] {
        let out = std::process::Command::new("cc")
            .args([
                "-fsyntax-only",
                "-Wall",
                "-Wextra",
                "-Wpedantic",
                "-Werror",
                std,
            ])
            .args(["-x", lang, "-I"])
            .arg(&include)
            .arg(&prog)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cc -x {lang} use.c: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

const USES_EVERY_DECLARATION: &str = r#"#include "hashkv.h"
int use(void);
int use(void) {
    char *err = NULL;
    const char *v = hashkv_version();
    hashkv_options *o = hashkv_options_new();
    hashkv_options_set_mode(o, "vlog");
    hashkv_options_set_main_segment_bytes(o, 1 << 20);
    hashkv_options_set_log_segment_bytes(o, 1 << 16);
    hashkv_options_set_reserved_share(o, 0.3);
    hashkv_options_set_write_cache_bytes(o, 0);
    hashkv_options_set_separation_threshold_bytes(o, 128);
    hashkv_options_set_sync_writes(o, 1);
    hashkv_options_set_force_format(o, 0);
    hashkv_options_set_create_device_bytes(o, 1 << 24);
    const char *devs[1] = {"dev.img"};
    hashkv_db *db = hashkv_format(devs, 1, "meta", o, &err);
    if (!db) db = hashkv_open(devs, 1, "meta", NULL, &err);
    uint8_t *val; size_t vl; uint8_t *k; size_t kl; uint8_t buf[16];
    int rc = hashkv_put(db, (const uint8_t *)"k", 1, (const uint8_t *)"v", 1, &err);
    rc |= hashkv_put_sync(db, (const uint8_t *)"k", 1, (const uint8_t *)"v", 1, &err);
    rc |= hashkv_get(db, (const uint8_t *)"k", 1, &val, &vl, &err);
    hashkv_free(val);
    rc |= hashkv_get_into(db, (const uint8_t *)"k", 1, buf, sizeof buf, &vl, &err);
    const uint8_t *keys[2] = {(const uint8_t *)"k", (const uint8_t *)"j"};
    size_t key_lens[2] = {1, 1};
    uint8_t *vals[2]; size_t val_lens[2];
    rc |= hashkv_multi_get(db, keys, key_lens, 2, vals, val_lens, &err);
    hashkv_free(vals[0]); hashkv_free(vals[1]);
    rc |= hashkv_delete(db, (const uint8_t *)"k", 1, &err);
    hashkv_writebatch *b = hashkv_writebatch_create();
    hashkv_writebatch_put(b, (const uint8_t *)"k", 1, (const uint8_t *)"v", 1);
    hashkv_writebatch_delete(b, (const uint8_t *)"k", 1);
    size_t n = hashkv_writebatch_count(b);
    rc |= hashkv_write(db, b, 1, &err);
    hashkv_writebatch_clear(b);
    hashkv_writebatch_destroy(b);
    rc |= hashkv_flush(db, &err);
    hashkv_iter *it = hashkv_scan(db, NULL, 0, NULL, 0, &err);
    while (hashkv_iter_next(it, &k, &kl, &val, &vl, &err) == 1) { hashkv_free(k); hashkv_free(val); }
    hashkv_iter_free(it);
    rc |= hashkv_check(db, &err);
    hashkv_stats stats;
    rc |= hashkv_get_stats(db, &stats, sizeof stats, &err);
    rc |= hashkv_close(db, &err);
    hashkv_free(err);
    hashkv_options_free(o);
    int codes[] = {HASHKV_E_INVALID_ARGUMENT, HASHKV_E_NOT_FOUND, HASHKV_E_STORE_FULL,
                   HASHKV_E_BUSY, HASHKV_E_IO, HASHKV_E_CORRUPTION, HASHKV_E_POISONED,
                   HASHKV_E_BUFFER_TOO_SMALL, HASHKV_E_PANIC};
    return rc + codes[0] + hashkv_last_errcode() + (int)n + (int)stats.user_ops
           + (v != NULL) + HASHKV_KEY_BYTES_MAX;
}
"#;
