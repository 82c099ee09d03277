//! Failures of the index's file system aimed by hand, each at a place where the
//! engine once got it wrong (found by the fault sweep, `fault_sweep/`): the index on
//! `FaultFs`, the values on the simulated device.

mod common;

use common::{msg, sim, small_options, MIB};
use hashkv::{Db, Error, Options};
use hashkv_lsm::fault::{Fault, FaultFs, FileClass, Op};
use hashkv_lsm::LsmError;
use std::path::Path;
use std::sync::Arc;

fn options_on(fs: &Arc<FaultFs>) -> Options {
    let mut o = small_options();
    o.lsm.fs = fs.clone();
    o
}

fn fail_once(fs: &FaultFs, op: Op, class: FileClass, skip: u64) {
    fs.inject(Fault {
        op,
        class: Some(class),
        skip,
        errno: libc::EIO,
        times: 1,
    });
}

/// `close` closes the index, and says so when that fails: here the index's last sync
/// of its log, which the engine's own flush left nothing to do but the index does
/// anyway. It used to drop the index and its error silently.
#[test]
fn close_reports_the_index_failing_to_close() {
    let fs = Arc::new(FaultFs::new(1));
    let o = options_on(&fs);
    let meta = Path::new("/close/meta");
    let dev = sim(8 * MIB, 1);
    let db = Db::format_device(dev.clone(), meta, &o).unwrap();
    db.put_sync(b"key", b"durable").unwrap();
    fail_once(&fs, Op::Sync, FileClass::Wal, 0);
    let e = db.close().expect_err("the index's close failed");
    assert!(
        matches!(
            &e,
            Error::Lsm(LsmError::Io { .. } | LsmError::Poisoned { .. })
        ),
        "{e:?}"
    );
    msg(&e);
    assert_eq!(fs.fired().len(), 1);
    let db = Db::open_device(Arc::new(dev.crash()), meta, &o).unwrap();
    assert_eq!(db.get(b"key").unwrap().as_deref(), Some(&b"durable"[..]));
    db.close().unwrap();
}

/// A format refused because the metadata directory holds a store's index leaves that
/// index alone, even when listing the directory failed once: format used to take the
/// failed listing for a missing directory, and remove the directory as its own when
/// it was refused.
#[test]
fn a_failed_listing_never_makes_format_remove_an_index() {
    let fs = Arc::new(FaultFs::new(2));
    let o = options_on(&fs);
    let meta = Path::new("/refused/meta");
    let dev = sim(8 * MIB, 2);
    let db = Db::format_device(dev.clone(), meta, &o).unwrap();
    db.put_sync(b"key", b"durable").unwrap();
    db.close().unwrap();
    for listing in 0..2 {
        fail_once(&fs, Op::List, FileClass::Dir, listing);
        let e = Db::format_device(sim(8 * MIB, 3), meta, &o)
            .err()
            .expect("a directory holding an index is not formatted over");
        msg(&e);
        fs.clear_faults();
        let db = Db::open_device(dev.clone(), meta, &o)
            .unwrap_or_else(|e| panic!("listing {listing} failed: the store is gone: {e}"));
        assert_eq!(db.get(b"key").unwrap().as_deref(), Some(&b"durable"[..]));
        db.close().unwrap();
    }
}
