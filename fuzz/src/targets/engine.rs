//! Targets for the engine's formats: the superblock and member identity on the
//! devices, value and cold tag records in segments, and the engine's own index
//! entries (group and cold segment entries, the value log's head and tail, what a
//! user key's entry holds).

use super::as_is_and_resealed;
use hashkv::decoders::{
    self, encode, reseal, ChainSegment, ColdTag, GroupEntry, Location, Pointer, RecordKind,
    RecordRef, Region, Slot,
};
use hashkv::{Layout, Options};
use hashkv_blockdev::identity::encode_identity;

/// Bytes of a superblock copy as format writes it on a device of 512- or 4096-byte
/// logical blocks (one 4 KiB block; superblock.rs).
const SUPERBLOCK_COPY_BYTES: usize = 4096;

/// The layout the table and value log checks run against: a store small enough that
/// a fuzzed entry names its segments often (8 MiB: 3 groups, 48 log segments).
pub fn layout() -> Layout {
    let options = Options::default()
        .with_main_segment_bytes(1 << 20)
        .with_log_segment_bytes(64 << 10);
    Layout::compute(8 << 20, 4096, &options).expect("a valid small layout")
}

pub fn superblock(data: &[u8]) -> bool {
    as_is_and_resealed(data, reseal::superblock, |block| {
        let Ok(Some(sb)) = decoders::superblock(block) else {
            return false;
        };
        let again = decoders::superblock(&sb.encode(SUPERBLOCK_COPY_BYTES));
        assert_eq!(again.expect("re-encoded superblock decodes"), Some(sb));
        true
    })
}

pub fn member_identity(data: &[u8]) -> bool {
    as_is_and_resealed(data, reseal::member_identity, |block| {
        let Ok(Some(id)) = decoders::member_identity(block) else {
            return false;
        };
        let bytes = encode_identity(&id).expect("a decoded identity is valid");
        assert_eq!(decoders::member_identity(&bytes).unwrap(), Some(id));
        true
    })
}

/// A record, alone and as the start of a segment walked block by block.
pub fn value_record(data: &[u8]) -> bool {
    as_is_and_resealed(data, reseal::value_record, |buf| {
        for (_, rec) in decoders::segment_records(buf).flatten() {
            check_record(&rec);
        }
        match decoders::value_record(buf) {
            Ok(Slot::Record(rec)) => {
                check_record(&rec);
                check_read_path(buf, &rec);
                true
            }
            Ok(Slot::Padding) | Err(_) => false,
        }
    })
}

/// A decoded record encodes back to the same record.
fn check_record(rec: &RecordRef<'_>) {
    let bytes = encode::value_record(rec.kind, rec.seq, rec.key, rec.value);
    match decoders::value_record(&bytes) {
        Ok(Slot::Record(again)) => assert_eq!(&again, rec),
        other => panic!("record {rec:?} re-encoded decodes as {other:?}"),
    }
}

/// The read path (the value alone) and the check (the whole record), given the
/// pointer an index entry would hold for `rec`, accept a value record and refuse any
/// other kind, another sequence number or another checksum.
fn check_read_path(buf: &[u8], rec: &RecordRef<'_>) {
    let mut pointer = Pointer {
        region: Region::Segments,
        unit: 0,
        offset: 0,
        record_bytes: rec.encoded_len() as u32,
        seq: rec.seq,
        crc: rec.crc,
    };
    match decoders::value_for(buf, &pointer, rec.key) {
        Ok(value) => assert!(rec.kind == RecordKind::Value && value == rec.value),
        Err(_) => assert!(rec.kind != RecordKind::Value, "{rec:?} refused"),
    }
    let whole = decoders::record_for(buf, &pointer, rec.key);
    assert_eq!(whole.is_ok(), rec.kind == RecordKind::Value, "{rec:?}");
    pointer.seq = rec.seq.wrapping_add(1);
    assert!(decoders::value_for(buf, &pointer, rec.key).is_err());
    assert!(decoders::record_for(buf, &pointer, rec.key).is_err());
    pointer.seq = rec.seq;
    pointer.crc = rec.crc ^ 1;
    assert!(decoders::value_for(buf, &pointer, rec.key).is_err());
    assert!(decoders::record_for(buf, &pointer, rec.key).is_err());
}

/// A cold tag record: the tag it carries encodes back to the record's value.
pub fn cold_tag(data: &[u8]) -> bool {
    as_is_and_resealed(data, reseal::value_record, |buf| {
        let Ok(Slot::Record(rec)) = decoders::value_record(buf) else {
            return false;
        };
        let tag = decoders::cold_tag(&rec);
        if rec.kind != RecordKind::ColdTag {
            assert_eq!(tag, None, "{rec:?} carries no tag");
            return false;
        }
        let tag: ColdTag = tag.expect("decode checked the tag's size");
        // Flag bits other than `relocated` are ignored, not refused: compare the tag,
        // not the bytes.
        let bytes = encode::value_record(RecordKind::ColdTag, rec.seq, rec.key, &tag.encode());
        match decoders::value_record(&bytes) {
            Ok(Slot::Record(again)) => assert_eq!(decoders::cold_tag(&again), Some(tag)),
            other => panic!("tag {tag:?} re-encoded decodes as {other:?}"),
        }
        true
    })
}

/// The entries format writes for groups 1.. of `layout()`: each owns its main segment.
fn formatted_group_entries(layout: &Layout) -> Vec<Vec<u8>> {
    (1..layout.group_count)
        .map(|g| {
            encode::group_entry(&GroupEntry {
                chain: vec![ChainSegment {
                    id: g,
                    used_bytes: 0,
                }],
                ..GroupEntry::default()
            })
        })
        .collect()
}

/// Group 0's entry: decoded alone, then in a segment table of `layout()`.
pub fn group_entry(data: &[u8]) -> bool {
    let layout = layout();
    let others = formatted_group_entries(&layout);
    as_is_and_resealed(data, reseal::entry, |bytes| {
        let Ok(entry) = decoders::group_entry(bytes) else {
            return false;
        };
        let again = decoders::group_entry(&encode::group_entry(&entry));
        assert_eq!(again.expect("re-encoded group entry decodes"), entry);
        let mut groups: Vec<&[u8]> = vec![bytes];
        groups.extend(others.iter().map(Vec::as_slice));
        let _ = decoders::segment_table(layout, &groups, &[]);
        true
    })
}

/// The entry of the first log segment as a cold segment: decoded alone, then in a
/// segment table of `layout()`.
pub fn cold_segment(data: &[u8]) -> bool {
    let layout = layout();
    let id = layout.main_slot_count;
    let mut groups = vec![encode::group_entry(&GroupEntry {
        chain: vec![ChainSegment {
            id: 0,
            used_bytes: 0,
        }],
        ..GroupEntry::default()
    })];
    groups.extend(formatted_group_entries(&layout));
    let groups: Vec<&[u8]> = groups.iter().map(Vec::as_slice).collect();
    as_is_and_resealed(data, reseal::entry, |bytes| {
        let Ok(segment) = decoders::cold_segment(id, bytes) else {
            return false;
        };
        let again = decoders::cold_segment(id, &encode::cold_segment(&segment));
        assert_eq!(again.expect("re-encoded cold segment decodes"), segment);
        let _ = decoders::segment_table(layout, &groups, &[(id, bytes)]);
        true
    })
}

/// The value log's head and tail: decoded, then checked against `layout()`'s log.
pub fn value_log(data: &[u8]) -> bool {
    let layout = layout();
    as_is_and_resealed(data, reseal::entry, |bytes| {
        let Ok((head, tail)) = decoders::log_entry(bytes) else {
            return false;
        };
        let again = decoders::log_entry(&encode::log_entry(head, tail));
        assert_eq!(again.expect("re-encoded log entry decodes"), (head, tail));
        if let Ok(checked) = decoders::value_log(&layout, bytes) {
            assert_eq!(checked, (head, tail));
        }
        true
    })
}

/// What a user key's index entry holds (behind the index's own checksums: no reseal).
pub fn index_entry(data: &[u8]) -> bool {
    let Ok(location) = decoders::index_entry(data) else {
        return false;
    };
    let bytes = match &location {
        Location::Inline(value) => encode::inline_value(value),
        Location::Pointer(p) => p.encode().to_vec(),
    };
    assert_eq!(bytes, data, "{location:?} re-encoded");
    true
}
