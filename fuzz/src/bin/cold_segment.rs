//! afl-fuzz target: see `hashkv_fuzz::targets` (run with fuzz/run.sh cold_segment SECONDS).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        hashkv_fuzz::targets::cold_segment(data);
    });
}
