//! afl-fuzz target: see `hashkv_fuzz::targets` (run with fuzz/run.sh member_identity SECONDS).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        hashkv_fuzz::targets::member_identity(data);
    });
}
