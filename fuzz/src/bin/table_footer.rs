//! afl-fuzz target: see `hashkv_fuzz::targets` (run with fuzz/run.sh table_footer SECONDS).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        hashkv_fuzz::targets::table_footer(data);
    });
}
