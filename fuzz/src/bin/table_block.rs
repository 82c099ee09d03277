//! afl-fuzz target: see `hashkv_fuzz::targets` (run with fuzz/run.sh table_block SECONDS).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        hashkv_fuzz::targets::table_block(data);
    });
}
