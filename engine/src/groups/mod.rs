//! The hashkv mode's value store: segment groups chosen by hashing the key, each a main
//! segment extended by log segments from reserved space ([`segment_table`]); a flush
//! appends each key's record to its group ([`append`]); GC collects one group at a
//! time, copy-on-write, without index lookups ([`gc`]).

pub mod append;
pub mod gc;
pub mod segment_table;

use crate::error::{Error, Result};
use crate::keys;
use crate::layout::Layout;
use hashkv_blockdev::{AlignedBuf, BlockDevice};
use segment_table::{SegmentTable, TailBlock};
use std::ops::Bound;

/// Rebuilds the segment table from the group entries committed in the index.
pub(crate) fn load_table(lsm: &hashkv_lsm::Db, layout: Layout) -> Result<SegmentTable> {
    let prefix = keys::group_key_prefix();
    let mut upper = prefix.to_vec();
    upper[1] += 1;
    let mut groups = Vec::with_capacity(layout.group_count as usize);
    for item in lsm.range(
        Bound::Included(&prefix[..]),
        Bound::Excluded(&upper[..]),
        hashkv_lsm::Direction::Forward,
        None,
    )? {
        let (k, v) = item?;
        let expect = keys::group_key(groups.len() as u32);
        if k != expect {
            return Err(Error::Corruption {
                what: format!("segment table entry {} missing or misnamed", groups.len()),
            });
        }
        groups.push(segment_table::decode_group(&v)?);
    }
    if groups.len() != layout.group_count as usize {
        return Err(Error::Corruption {
            what: format!(
                "index holds {} segment table entries, the superblock names {} groups",
                groups.len(),
                layout.group_count
            ),
        });
    }
    SegmentTable::from_groups(layout, groups)
}

/// Reads the partly written last block of every group's chain, which the next flush to
/// the group continues: one block read per such group at open.
pub(crate) fn load_tails(table: &mut SegmentTable, device: &dyn BlockDevice) -> Result<()> {
    let layout = table.layout;
    let block = u64::from(layout.block_bytes);
    for group in table.groups.iter_mut() {
        let last = *group.chain.last().expect("chain never empty");
        let tail_len = (last.used_bytes % block) as usize;
        if tail_len == 0 {
            continue;
        }
        let mut buf = AlignedBuf::new(block as usize);
        let at = layout.segment_offset(last.id) + last.used_bytes - tail_len as u64;
        device.read_at(at, &mut buf[..])?;
        group.tail = Some(TailBlock {
            segment: last.id,
            bytes: buf[..tail_len].to_vec(),
        });
    }
    Ok(())
}
