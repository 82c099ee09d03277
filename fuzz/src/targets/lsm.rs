//! Targets for the index's formats (hashkv-lsm): WAL records, table blocks, footers
//! and filters, manifest edits and files. Where a checksum guards a payload, the
//! payload's own decoder is run on the input too (as what a checksum collision would
//! let through), and file headers and footers are also tried resealed.

use hashkv_lsm::decoders::{self, reversion, FILE_HEADER_BYTES, FOOTER_BYTES, RECORD_FRAME_BYTES};

/// Keys a block or filter is probed for: below, inside and above the seeds' keys.
const PROBE_KEYS: [&[u8]; 3] = [b"a", b"k00000010", b"\xff\xff\xff\xff"];
/// Sizes of the data region before an index block's handles (what the footer gives):
/// one that fits the seeds' handles and one that no handle can pass.
const DATA_END_BYTES: [u64; 2] = [1 << 20, u64::MAX];
/// File sizes a footer is checked against: small, ordinary, and the largest.
const FILE_BYTES: [u64; 3] = [4096, 1 << 30, u64::MAX];

/// The format version a file header (WAL, manifest) or a footer names at `at`.
fn version_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// A WAL record (frame and batch), its payload alone, and a WAL file header.
pub fn wal_record(data: &[u8]) -> bool {
    let record = decoders::wal_record(data);
    if let Ok(n) = record {
        assert!(n <= data.len(), "record of {n} bytes in {}", data.len());
    }
    if let Some(payload) = data.get(RECORD_FRAME_BYTES..) {
        let _ = decoders::wal_batch_payload(payload);
    }
    let header = decoders::wal_header(data);
    if data.len() >= FILE_HEADER_BYTES {
        let mut copy = data.to_vec();
        reversion::header(&mut copy, version_at(data, 8));
        let _ = decoders::wal_header(&copy);
    }
    record.is_ok() || header.is_ok()
}

/// A sealed data block, its payload (decoded whole and searched in place), and an
/// index block payload.
pub fn table_block(data: &[u8]) -> bool {
    let block = decoders::data_block(data);
    if let Some(payload) = data.len().checked_sub(4).map(|n| &data[..n]) {
        let _ = decoders::data_block_payload(payload);
        for key in PROBE_KEYS {
            let _ = decoders::data_block_seek(payload, key);
        }
    }
    let mut index = false;
    for data_end in DATA_END_BYTES {
        index |= decoders::index_block_payload(data, data_end).is_ok();
    }
    block.is_ok() || index
}

/// A table footer, as it is and resealed, against files of several sizes.
pub fn table_footer(data: &[u8]) -> bool {
    let valid = decoders::footer(data, 1 << 30).is_ok();
    let resealed = (data.len() == FOOTER_BYTES).then(|| {
        let mut copy = data.to_vec();
        reversion::table_footer(&mut copy, version_at(data, 40));
        copy
    });
    for file_bytes in FILE_BYTES {
        let _ = decoders::footer(data, file_bytes);
        if let Some(copy) = &resealed {
            let _ = decoders::footer(copy, file_bytes);
        }
    }
    valid
}

/// A filter payload, decoded and probed as each table format has it (1: flat, 2:
/// blocked).
pub fn filter(data: &[u8]) -> bool {
    let mut any_valid = false;
    for table_version in [1, 2] {
        let valid = decoders::filter_payload(data, table_version).is_ok();
        for key in PROBE_KEYS {
            assert_eq!(
                decoders::filter_may_contain(data, table_version, key).is_ok(),
                valid
            );
        }
        any_valid |= valid;
    }
    any_valid
}

/// A version edit, and a whole manifest file, as it is and with its header resealed.
pub fn manifest(data: &[u8]) -> bool {
    let edit = decoders::manifest_edit(data);
    let file = decoders::manifest_file(data);
    if data.len() >= FILE_HEADER_BYTES {
        let mut copy = data.to_vec();
        reversion::header(&mut copy, version_at(data, 8));
        let _ = decoders::manifest_file(&copy);
    }
    edit.is_ok() || file.is_ok()
}
