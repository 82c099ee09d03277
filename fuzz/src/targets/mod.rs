//! The targets. Each runs its decoders on the input as it is and, where the format
//! carries a checksum, on a copy whose checksum is recomputed (`reseal`): random
//! bytes never pass a crc32c, so without that the checks behind it would never see
//! garbage. A structure that decodes must encode back to bytes that decode to the
//! same value. Each returns whether the input as it is decoded (`crate::Target`).

mod engine;
mod lsm;

pub use engine::{
    cold_segment, cold_tag, group_entry, index_entry, layout, member_identity, superblock,
    value_log, value_record,
};
pub use lsm::{filter, manifest, table_block, table_footer, wal_record};

/// Runs `check` on `data` and on a copy resealed by `reseal`; returns what `check`
/// said of `data` as it is.
fn as_is_and_resealed(data: &[u8], reseal: fn(&mut [u8]), check: impl Fn(&[u8]) -> bool) -> bool {
    let valid = check(data);
    let mut copy = data.to_vec();
    reseal(&mut copy);
    if copy != data {
        check(&copy);
    }
    valid
}
