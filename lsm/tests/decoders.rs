//! Every on-disk decoder fed random bytes, truncations and bit flips of valid input:
//! it must return an error (or, for the few formats where a shorter input is itself
//! valid, a correct prefix), never panic, never a wrong answer.

use hashkv_lsm::decoders::{self, encode};
use proptest::prelude::*;

fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..40)
}

fn sorted_keys(mut keys: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    keys.sort();
    keys.dedup();
    keys
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), file_bytes in 0u64..10_000) {
        // Checksummed formats: random input is refused (a 2^-32 collision aside).
        prop_assert!(decoders::wal_record(&bytes).is_err());
        prop_assert!(decoders::wal_header(&bytes).is_err());
        prop_assert!(decoders::data_block(&bytes).is_err());
        prop_assert!(decoders::footer(&bytes, file_bytes).is_err());
        prop_assert!(decoders::manifest_file(&bytes).is_err());
        // Inner decoders (behind a checksum on disk): any result, but no panic.
        let _ = decoders::wal_batch_payload(&bytes);
        let _ = decoders::data_block_payload(&bytes);
        let _ = decoders::data_block_seek(&bytes, &bytes[..bytes.len().min(8)]);
        let _ = decoders::index_block_payload(&bytes, file_bytes);
        let _ = decoders::filter_payload(&bytes, 1);
        let _ = decoders::filter_payload(&bytes, 2);
        let _ = decoders::manifest_edit(&bytes);
    }

    #[test]
    fn wal_record_truncated_or_flipped_is_refused(
        entries in proptest::collection::vec((key_strategy(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..50))), 1..20),
        seq in 1u64..1_000_000,
        flip in any::<proptest::sample::Index>(),
        bit in 0u8..8,
    ) {
        let rec = encode::wal_record(seq, &entries);
        prop_assert_eq!(decoders::wal_record(&rec).unwrap(), rec.len());
        for cut in 0..rec.len() {
            prop_assert!(decoders::wal_record(&rec[..cut]).is_err(), "cut at {}", cut);
        }
        let mut bad = rec.clone();
        let i = flip.index(bad.len());
        bad[i] ^= 1 << bit;
        prop_assert!(decoders::wal_record(&bad).is_err(), "flip of bit {} at {}", bit, i);
        // Payload without the frame: every truncation is refused (the entry count must match).
        let payload = &rec[8..];
        for cut in 0..payload.len() {
            prop_assert!(decoders::wal_batch_payload(&payload[..cut]).is_err());
        }
    }

    #[test]
    fn data_block_truncated_or_flipped_is_refused(
        keys in proptest::collection::vec(key_strategy(), 1..80),
        flip in any::<proptest::sample::Index>(),
        bit in 0u8..8,
    ) {
        let keys = sorted_keys(keys);
        let raw = encode::data_block(&keys);
        prop_assert_eq!(decoders::data_block(&raw).unwrap(), keys.len());
        for cut in 0..raw.len() {
            prop_assert!(decoders::data_block(&raw[..cut]).is_err());
        }
        let mut bad = raw.clone();
        let i = flip.index(bad.len());
        bad[i] ^= 1 << bit;
        prop_assert!(decoders::data_block(&bad).is_err());
        // Flips behind the checksum must be caught by validation or decode to another
        // well-formed block; they must not panic.
        let payload = &raw[..raw.len() - 4];
        let mut p = payload.to_vec();
        let j = flip.index(p.len());
        p[j] ^= 1 << bit;
        let _ = decoders::data_block_payload(&p);
        let _ = decoders::data_block_seek(&p, &keys[0]);
        // In-place lookups on the intact payload find every key.
        for k in &keys {
            let found = decoders::data_block_seek(payload, k).unwrap().expect("present");
            prop_assert_eq!(&found[..found.len() - 8], k.as_slice());
        }
        for cut in 0..payload.len() {
            // A truncated payload may still parse (it is behind a checksum on disk), but
            // a lookup must not panic or find a key that is not there.
            if let Ok(Some(found)) = decoders::data_block_seek(&payload[..cut], &keys[0]) {
                prop_assert!(keys.iter().any(|k| k.as_slice() == &found[..found.len() - 8]));
            }
        }
    }

    #[test]
    fn index_block_checks_handles(blocks in 1u64..50, block_bytes in 16u64..5000, shrink in 1u64..100) {
        let payload = encode::index_payload(blocks, block_bytes);
        let data_end = blocks * (block_bytes + 4);
        prop_assert_eq!(decoders::index_block_payload(&payload, data_end).unwrap(), blocks as usize);
        // A data region shorter than the handles claim is refused.
        prop_assert!(decoders::index_block_payload(&payload, data_end - shrink.min(data_end)).is_err());
        for cut in 0..payload.len() {
            let _ = decoders::index_block_payload(&payload[..cut], data_end);
        }
    }

    #[test]
    fn filter_payload_validates(keys in proptest::collection::vec(key_strategy(), 0..100)) {
        for (f, version) in [(encode::filter(&keys), 2), (encode::filter_flat(&keys), 1)] {
            prop_assert!(decoders::filter_payload(&f, version).is_ok());
            prop_assert!(decoders::filter_payload(&[], version).is_err());
            // Every key built in is found.
            for k in &keys {
                prop_assert!(decoders::filter_may_contain(&f, version, k).unwrap());
            }
            // The probe count lives in the last byte: 0 or too many probes are refused.
            let mut bad = f.clone();
            *bad.last_mut().unwrap() = 0;
            prop_assert!(decoders::filter_payload(&bad, version).is_err());
            *bad.last_mut().unwrap() = 200;
            prop_assert!(decoders::filter_payload(&bad, version).is_err());
        }
        // A blocked filter is whole 64-byte blocks.
        let f = encode::filter(&keys);
        prop_assert!(decoders::filter_payload(&f[1..], 2).is_err());
    }

    #[test]
    fn footer_truncated_or_flipped_is_refused(io in 0u64..1000, isz in 0u64..1000, fo in 0u64..1000, fsz in 0u64..1000,
        flip in 0usize..56, bit in 0u8..8) {
        let file_bytes = 4096u64;
        let f = encode::footer(io, isz, fo, fsz);
        prop_assert!(decoders::footer(&f, file_bytes).is_ok());
        for cut in 0..f.len() {
            prop_assert!(decoders::footer(&f[..cut], file_bytes).is_err());
        }
        let mut bad = f.clone();
        bad[flip] ^= 1 << bit;
        prop_assert!(decoders::footer(&bad, file_bytes).is_err());
    }

    #[test]
    fn manifest_edit_truncated_is_refused_or_a_prefix(tables in 1u64..10) {
        let e = encode::manifest_edit(tables);
        prop_assert_eq!(decoders::manifest_edit(&e).unwrap(), tables as usize);
        for cut in 0..e.len() {
            // A cut between fields is a shorter valid edit (the record checksum rules it
            // out on disk); it must never claim more tables than were encoded.
            if let Ok(n) = decoders::manifest_edit(&e[..cut]) {
                prop_assert!(n < tables as usize);
            }
        }
    }
}

#[test]
fn manifest_file_torn_tail_is_ignored_but_damage_inside_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = hashkv_lsm::Options {
        memtable_bytes_max: 4096,
        ..Default::default()
    };
    let db = hashkv_lsm::Db::open(tmp.path(), opts).unwrap();
    for i in 0..200u32 {
        db.put(format!("k{i}").as_bytes(), &[7u8; 64], &Default::default())
            .unwrap();
    }
    db.flush().unwrap();
    db.close().unwrap();
    let manifest = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("MANIFEST-")
        })
        .unwrap();
    let data = std::fs::read(&manifest).unwrap();
    let edits = decoders::manifest_file(&data).unwrap();
    assert!(
        edits >= 2,
        "expected the snapshot edit plus flush edits, found {edits}"
    );
    // Every truncation: an error (no complete edit) or fewer edits, never more.
    for cut in 0..data.len() {
        if let Ok(n) = decoders::manifest_file(&data[..cut]) {
            assert!(n <= edits);
        }
    }
    // A flipped byte in the first record (with records after it) is corruption.
    for i in 16..40 {
        let mut bad = data.clone();
        bad[i] ^= 0x40;
        assert!(
            decoders::manifest_file(&bad).is_err(),
            "flip at {i} accepted"
        );
    }
}
