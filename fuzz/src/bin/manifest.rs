//! afl-fuzz target: see `hashkv_fuzz::targets` (run with fuzz/run.sh manifest SECONDS).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        hashkv_fuzz::targets::manifest(data);
    });
}
