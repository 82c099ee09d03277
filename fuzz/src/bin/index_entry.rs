//! afl-fuzz target: see `hashkv_fuzz::targets` (run with fuzz/run.sh index_entry SECONDS).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        hashkv_fuzz::targets::index_entry(data);
    });
}
