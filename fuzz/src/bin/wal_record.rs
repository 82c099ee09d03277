//! afl-fuzz target: see `hashkv_fuzz::targets` (run with fuzz/run.sh wal_record SECONDS).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        hashkv_fuzz::targets::wal_record(data);
    });
}
