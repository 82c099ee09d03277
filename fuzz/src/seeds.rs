//! The seed corpus: valid structures of every format, made by the real encoders (and,
//! for a WAL and a manifest file, by a real index written in a temporary directory).
//! `make-corpus` writes them to corpus/TARGET/NAME; tests/corpus.rs checks that the
//! files there are still exactly these, so a format change that makes them stale
//! fails a test instead of silently starving the fuzzers.

use crate::targets::layout;
use hashkv::decoders::{encode, reseal, ChainSegment, ColdSegment, ColdTag, GroupEntry};
use hashkv::decoders::{Pointer, RecordKind, Region};
use hashkv::{Mode, Superblock, FORMAT_VERSION};
use hashkv_blockdev::identity::{encode_identity, Identity, IDENTITY_FORMAT_VERSION};
use hashkv_lsm::decoders::encode as lsm_encode;

/// One seed file.
pub struct Seed {
    pub target: &'static str,
    pub name: &'static str,
    pub bytes: Vec<u8>,
}

fn seed(target: &'static str, name: &'static str, bytes: Vec<u8>) -> Seed {
    Seed {
        target,
        name,
        bytes,
    }
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    out.extend(device_seeds());
    out.extend(record_seeds());
    out.extend(entry_seeds());
    out.extend(lsm_seeds());
    out
}

/// A stripe uuid that makes the seeds the same on every run.
const UUID: [u8; 16] = *b"fuzz-seed-stripe";
const MIB: u64 = 1 << 20;

fn device_seeds() -> Vec<Seed> {
    let sb = |mode, format_version, member_count, bytes| {
        let s = Superblock {
            format_version,
            mode,
            stripe_uuid: UUID,
            member_count,
            device_bytes: 8 * MIB,
            layout: layout(),
        };
        s.encode(bytes)
    };
    let id = |member_index, member_count| {
        let id = Identity {
            format_version: IDENTITY_FORMAT_VERSION,
            stripe_uuid: UUID,
            member_index,
            member_count,
            stripe_unit_bytes: MIB,
        };
        encode_identity(&id).expect("a valid identity").to_vec()
    };
    vec![
        seed(
            "superblock",
            "hashkv",
            sb(Mode::HashKv, FORMAT_VERSION, 1, 4096),
        ),
        seed(
            "superblock",
            "vlog_stripe",
            sb(Mode::VLog, FORMAT_VERSION, 2, 96),
        ),
        seed("superblock", "lsm_v1", sb(Mode::Lsm, 1, 1, 96)),
        seed("member_identity", "member_0_of_2", id(0, 2)),
        seed("member_identity", "member_2_of_3", id(2, 3)),
    ]
}

fn cold_tag_record(relocated: bool) -> Vec<u8> {
    let tag = ColdTag {
        segment: layout().main_slot_count,
        epoch: 3,
        offset: 4096,
        record_bytes: 1044,
        crc: 0x1234_5678,
        relocated,
    };
    encode::value_record(RecordKind::ColdTag, 41, b"cold-key", &tag.encode())
}

fn record_seeds() -> Vec<Seed> {
    let value = encode::value_record(RecordKind::Value, 7, b"key-0001", b"a value");
    let tombstone = encode::value_record(RecordKind::Tombstone, 8, b"key-0002", b"");
    // A segment's first blocks of 512 bytes: records back to back, padding to the
    // block's end, then a record that crosses the next block boundary.
    let mut segment = [value.clone(), tombstone.clone(), cold_tag_record(false)].concat();
    segment.resize(512, 0);
    segment.extend(encode::value_record(
        RecordKind::Value,
        9,
        b"key-0003",
        &[0x5a; 600],
    ));
    segment.resize(1536, 0);
    vec![
        seed("value_record", "value", value),
        seed("value_record", "tombstone", tombstone),
        seed("value_record", "segment_512", segment),
        seed("cold_tag", "tag", cold_tag_record(false)),
        seed("cold_tag", "relocated", cold_tag_record(true)),
    ]
}

fn entry_seeds() -> Vec<Seed> {
    let l = layout();
    let first_log = l.main_slot_count;
    let main_only = GroupEntry {
        chain: vec![ChainSegment {
            id: 0,
            used_bytes: MIB - 100,
        }],
        write_volume_bytes: 3 * MIB,
        ..GroupEntry::default()
    };
    let with_logs = GroupEntry {
        chain: vec![
            ChainSegment {
                id: 0,
                used_bytes: MIB,
            },
            ChainSegment {
                id: first_log + 2,
                used_bytes: 4096,
            },
            ChainSegment {
                id: first_log + 5,
                used_bytes: 64 << 10,
            },
        ],
        write_volume_bytes: 5 * MIB,
        cold_bytes: 2048,
        demotions: 3,
        promotions: 1,
    };
    let cold = |waiting_for: Vec<u32>| ColdSegment {
        id: first_log,
        epoch: 5,
        used_bytes: 8192,
        live_bytes: 4096,
        dead: vec![0, 1044],
        waiting_for,
    };
    let pointer = |region| Pointer {
        region,
        unit: 2,
        offset: 8192,
        record_bytes: 1044,
        seq: 99,
        crc: 0x8765_4321,
    };
    // The region a value log spans in `layout()`.
    let region = l.end_offset() - l.main_region_offset;
    vec![
        seed("group_entry", "main_only", encode::group_entry(&main_only)),
        seed("group_entry", "with_logs", encode::group_entry(&with_logs)),
        seed("group_entry", "version_1", group_entry_v1(&main_only)),
        seed("cold_segment", "live", encode::cold_segment(&cold(vec![]))),
        seed(
            "cold_segment",
            "evacuated",
            encode::cold_segment(&cold(vec![0, 2])),
        ),
        seed("value_log", "empty", encode::log_entry(0, 0)),
        seed(
            "value_log",
            "first_lap",
            encode::log_entry(3 * MIB + 100, MIB),
        ),
        seed(
            "value_log",
            "wrapped",
            encode::log_entry(2 * region + 8192, region + 4096),
        ),
        seed(
            "index_entry",
            "inline",
            encode::inline_value(b"small value"),
        ),
        seed(
            "index_entry",
            "segments",
            pointer(Region::Segments).encode().to_vec(),
        ),
        seed("index_entry", "log", pointer(Region::Log).encode().to_vec()),
        seed(
            "index_entry",
            "cold",
            pointer(Region::Cold).encode().to_vec(),
        ),
    ]
}

/// Bytes of the counters version 2 of a group entry added after the chain.
const GROUP_ENTRY_V2_TRAILER_BYTES: usize = 3 * 8;

/// A group entry as version 1 wrote it (no cold counters): the current encoding less
/// its version-2 trailer, under version 1, resealed.
fn group_entry_v1(entry: &GroupEntry) -> Vec<u8> {
    let v2 = encode::group_entry(entry);
    let mut v1 = v2[..v2.len() - 4 - GROUP_ENTRY_V2_TRAILER_BYTES].to_vec();
    v1[0] = 1;
    v1.extend([0u8; 4]);
    reseal::entry(&mut v1);
    v1
}

fn lsm_seeds() -> Vec<Seed> {
    let keys: Vec<Vec<u8>> = (0..20u32)
        .map(|i| format!("k{i:08}").into_bytes())
        .collect();
    let (wal, manifest) = real_index_files();
    vec![
        seed(
            "wal_record",
            "put_and_delete",
            lsm_encode::wal_record(
                1,
                &[
                    (b"k1".to_vec(), Some(b"v1".to_vec())),
                    (b"k2".to_vec(), None),
                ],
            ),
        ),
        seed("wal_record", "file", wal),
        seed("table_block", "data", lsm_encode::data_block(&keys)),
        seed("table_block", "index", lsm_encode::index_payload(4, 4096)),
        seed("table_footer", "small", lsm_encode::footer(0, 100, 104, 50)),
        seed(
            "table_footer",
            "large",
            lsm_encode::footer(1 << 20, 4000, (1 << 20) + 4004, 2000),
        ),
        seed("filter", "twenty_keys", lsm_encode::filter(&keys)),
        seed("filter", "empty", lsm_encode::filter(&[])),
        seed("filter", "flat", lsm_encode::filter_flat(&keys)),
        seed("manifest", "edit_1", lsm_encode::manifest_edit(1)),
        seed("manifest", "edit_3", lsm_encode::manifest_edit(3)),
        seed("manifest", "file", manifest),
    ]
}

/// Puts a few keys in a new index and returns its WAL (header and records) and, after
/// a flush, its manifest file.
fn real_index_files() -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = hashkv_lsm::Db::open(dir.path(), hashkv_lsm::Options::default()).expect("open");
    let sync = hashkv_lsm::WriteOptions { sync: true };
    for i in 0..4u32 {
        let key = format!("key-{i}");
        db.put(key.as_bytes(), format!("value {i}").as_bytes(), &sync)
            .expect("put");
    }
    db.delete(b"key-1", &sync).expect("delete");
    let wal = read_file_named(dir.path(), |n| n.ends_with(".wal"));
    db.flush().expect("flush");
    db.close().expect("close");
    let manifest = read_file_named(dir.path(), |n| n.starts_with("MANIFEST-"));
    (wal, manifest)
}

fn read_file_named(dir: &std::path::Path, wanted: impl Fn(&str) -> bool) -> Vec<u8> {
    let path = std::fs::read_dir(dir)
        .expect("read the index directory")
        .map(|e| e.expect("a directory entry").path())
        .find(|p| wanted(&p.file_name().unwrap_or_default().to_string_lossy()))
        .expect("the file in the index directory");
    std::fs::read(path).expect("read the file")
}
