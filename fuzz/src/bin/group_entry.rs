//! afl-fuzz target: see `hashkv_fuzz::targets` (run with fuzz/run.sh group_entry SECONDS).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        hashkv_fuzz::targets::group_entry(data);
    });
}
