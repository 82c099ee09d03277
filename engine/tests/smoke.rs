use hashkv::{Db, Options};
use hashkv_blockdev::sim::{SimConfig, SimDevice};
use std::ops::Bound;
use std::sync::Arc;

fn small_options() -> Options {
    let mut lsm = hashkv_lsm::Options::default();
    lsm.memtable_bytes_max = 64 << 10;
    Options::default()
        .with_main_segment_bytes(256 << 10)
        .with_log_segment_bytes(16 << 10)
        .with_write_cache_bytes(32 << 10)
        .with_separation_threshold_bytes(64)
        .with_lsm(lsm)
}

#[test]
fn put_get_delete_scan_reopen_on_sim() {
    let dev = Arc::new(SimDevice::new(SimConfig::new(8 << 20, 1)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let o = small_options();
    let db = Db::format_device(dev.clone(), dir.path(), &o).unwrap();
    for i in 0..500u32 {
        let v = vec![(i % 251) as u8; (i as usize * 7) % 3000];
        db.put(format!("key{i:05}").as_bytes(), &v).unwrap();
    }
    for i in (0..500u32).step_by(3) {
        db.delete(format!("key{i:05}").as_bytes()).unwrap();
    }
    let check = |db: &Db| {
        for i in 0..500u32 {
            let got = db.get(format!("key{i:05}").as_bytes()).unwrap();
            if i % 3 == 0 {
                assert_eq!(got, None, "key {i}");
            } else {
                assert_eq!(
                    got,
                    Some(vec![(i % 251) as u8; (i as usize * 7) % 3000]),
                    "key {i}"
                );
            }
        }
        let all: Vec<_> = db
            .scan(Bound::Unbounded, Bound::Unbounded)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(all.len(), 500 - 167);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    };
    check(&db);
    db.flush().unwrap();
    // Overwrite a lot to force GC.
    for round in 0..100u32 {
        for i in 0..100u32 {
            let k = format!("key{:05}", i * 5 + 1);
            if (i * 5 + 1) % 3 != 0 {
                let v = vec![((i * 5 + 1) % 251) as u8; ((i * 5 + 1) as usize * 7) % 3000];
                let _ = round;
                db.put(k.as_bytes(), &v).unwrap();
            }
        }
    }
    check(&db);
    let stats = db.stats();
    eprintln!("{stats:?}");
    assert!(stats.gc_runs > 0, "GC never ran");
    db.close().unwrap();
    let db = Db::open_device(dev.clone(), dir.path(), &o).unwrap();
    check(&db);
}
