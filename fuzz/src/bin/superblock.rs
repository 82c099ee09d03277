//! afl-fuzz target: see `hashkv_fuzz::targets` (run with fuzz/run.sh superblock SECONDS).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        hashkv_fuzz::targets::superblock(data);
    });
}
