//! afl-fuzz target: see `hashkv_fuzz::targets` (run with fuzz/run.sh value_log SECONDS).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        hashkv_fuzz::targets::value_log(data);
    });
}
