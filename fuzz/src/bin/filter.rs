//! afl-fuzz target: see `hashkv_fuzz::targets` (run with fuzz/run.sh filter SECONDS).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        hashkv_fuzz::targets::filter(data);
    });
}
