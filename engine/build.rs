//! Gives `libhashkv.so` a SONAME, which cargo does not set for a cdylib: without one, a
//! program linked with `-lhashkv` records the bare file name and cannot tell an
//! incompatible library from a compatible one. The rule is cargo-c's: a 0.x release
//! names its minor version (`libhashkv.so.0.1`), since 0.x minors may break the ABI;
//! from 1.0 on the major version alone (`libhashkv.so.1`). `engine/install-c.sh` makes
//! the links that rule implies.

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets the version");
    let minor = std::env::var("CARGO_PKG_VERSION_MINOR").expect("cargo sets the version");
    let soname = if major == "0" {
        format!("libhashkv.so.0.{minor}")
    } else {
        format!("libhashkv.so.{major}")
    };
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    // The GNU and LLVM linkers of Linux and the BSDs take -soname; macOS uses
    // install names instead, which this project does not build for.
    if target_os != "macos" && target_os != "ios" && target_os != "windows" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
