//! afl-fuzz target: see `hashkv_fuzz::targets` (run with fuzz/run.sh value_record SECONDS).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        hashkv_fuzz::targets::value_record(data);
    });
}
