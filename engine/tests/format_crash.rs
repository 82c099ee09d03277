//! Format is crash-safe: stopped after any of its steps, as a kill (or a power cut)
//! would stop it, the result is either a finished store that opens, or an unfinished
//! format that open explains and that format redoes without force. A format that fails
//! removes what it created. The steps and their crash argument: FORMAT.md, "Format".

mod common;

use common::{disk_dir, key, sim, small_options, value, verify, write_raw, Model, KIB, MIB};
use hashkv::FormatStep;
use hashkv::{Db, Error, Options};
use hashkv_blockdev::sim::{CrashWeights, FaultRule, OpKind, SimConfig, SimDevice};
use hashkv_lsm::fault::{Fault, FaultFs, FileClass, Op};
use hashkv_lsm::fs::{EntryKind, Fs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn load(db: &Db, n: u32) -> Model {
    let mut model = Model::new();
    for i in 0..n {
        let v = value(i, 7, [20, 700, 2500][(i % 3) as usize]);
        db.put(&key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    model
}

fn committed(step: FormatStep) -> bool {
    step >= FormatStep::SuperblockWritten
}

/// After a format stopped at `step`, the store either opens (and formatting it again
/// without force is refused) or open says the format was interrupted (and formatting
/// again without force works). Either way the store ends up usable.
fn check_after_stop(
    step: FormatStep,
    open: &dyn Fn() -> Result<Db, Error>,
    format: &dyn Fn() -> Result<Db, Error>,
) {
    if committed(step) {
        let db = open().unwrap_or_else(|e| panic!("{step:?}: a committed format opens: {e}"));
        let model = load(&db, 30);
        db.close().unwrap();
        let e = format()
            .err()
            .expect("a finished store is not formatted over");
        assert!(matches!(e, Error::DeviceNotEmpty { .. }), "{step:?}: {e:?}");
        let db = open().unwrap();
        verify(&db, &model);
        db.close().unwrap();
    } else {
        let e = open().err().expect("an unfinished format does not open");
        assert!(
            e.to_string().contains("interrupted") && e.to_string().contains("format it again"),
            "{step:?}: {e}"
        );
        let db = format().unwrap_or_else(|e| panic!("{step:?}: redo without force: {e}"));
        let model = load(&db, 30);
        db.close().unwrap();
        let db = open().unwrap();
        verify(&db, &model);
        db.close().unwrap();
    }
}

#[test]
fn a_format_stopped_after_any_step_is_redone_or_opens() {
    let o = small_options();
    for (seed, step) in FormatStep::ALL.into_iter().enumerate() {
        let dev = sim(8 * MIB, seed as u64);
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("meta");
        Db::format_device_interrupted_for_test(dev.clone(), &meta, &o, step).unwrap();
        // A power cut right after the step: only what was flushed is left.
        let dev: Arc<SimDevice> = Arc::new(dev.crash());
        check_after_stop(step, &|| Db::open_device(dev.clone(), &meta, &o), &|| {
            Db::format_device(dev.clone(), &meta, &o)
        });
    }
}

#[test]
fn a_striped_format_stopped_after_any_step_is_redone_or_opens() {
    let o = small_options();
    for step in FormatStep::ALL {
        let dir = disk_dir();
        let members: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("m{i}"))).collect();
        for m in &members {
            std::fs::File::create(m)
                .unwrap()
                .set_len(4 * MIB + 4 * KIB)
                .unwrap();
        }
        let meta = dir.path().join("meta");
        Db::format_interrupted_for_test(&members, &meta, &o, step).unwrap();
        check_after_stop(step, &|| Db::open(&members, &meta, &o), &|| {
            Db::format(&members, &meta, &o)
        });
    }
}

/// A superblock copy torn by the interruption (its first sector written, the rest
/// not) is no finished store: the format is redone without force.
#[test]
fn a_torn_superblock_of_an_unfinished_format_is_overwritten() {
    let o = small_options();
    let dev = sim(8 * MIB, 11);
    let dir = tempfile::tempdir().unwrap();
    Db::format_device_interrupted_for_test(dev.clone(), dir.path(), &o, FormatStep::IndexWritten)
        .unwrap();
    let mut torn = b"HASHKVSB".to_vec();
    torn.extend_from_slice(&[0x5a; 88]);
    write_raw(dev.as_ref(), 0, &torn);
    assert!(Db::open_device(dev.clone(), dir.path(), &o).is_err());
    let db = Db::format_device(dev.clone(), dir.path(), &o).unwrap();
    let model = load(&db, 10);
    db.close().unwrap();
    let db = Db::open_device(dev, dir.path(), &o).unwrap();
    verify(&db, &model);
    db.close().unwrap();
}

/// The marker of an unfinished format lets format redo only that format: a device
/// holding other data, or a finished store, is still refused without force.
#[test]
fn a_marker_does_not_make_format_overwrite_data() {
    let o = small_options();
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta");
    Db::format_device_interrupted_for_test(sim(8 * MIB, 12), &meta, &o, FormatStep::IndexWritten)
        .unwrap();
    // A filesystem's signature in the first block, where XFS keeps its superblock.
    let fs = sim(8 * MIB, 13);
    write_raw(fs.as_ref(), 0, b"XFSB\x00\x00\x10\x00");
    let e = Db::format_device(fs.clone(), &meta, &o).err().unwrap();
    assert!(matches!(e, Error::DeviceNotEmpty { .. }), "{e:?}");
    assert_eq!(&fs.peek(0, 4).unwrap()[..], b"XFSB");
    // A finished store elsewhere.
    let store = sim(8 * MIB, 14);
    let other = dir.path().join("other");
    Db::format_device(store.clone(), &other, &o)
        .unwrap()
        .close()
        .unwrap();
    let e = Db::format_device(store.clone(), &meta, &o).err().unwrap();
    assert!(matches!(e, Error::DeviceNotEmpty { .. }), "{e:?}");
    Db::open_device(store, &other, &o).unwrap().close().unwrap();
}

/// A stripe member whose identity header names another stripe is not taken for the
/// unfinished format's own.
#[test]
fn a_marker_does_not_make_format_take_another_stripes_member() {
    let o = small_options();
    let dir = disk_dir();
    let files: Vec<PathBuf> = (0..4).map(|i| dir.path().join(format!("m{i}"))).collect();
    for f in &files {
        std::fs::File::create(f)
            .unwrap()
            .set_len(4 * MIB + 4 * KIB)
            .unwrap();
    }
    let meta = dir.path().join("meta");
    let ours = files[..2].to_vec();
    Db::format_interrupted_for_test(&ours, &meta, &o, FormatStep::HeadersWritten).unwrap();
    let theirs = files[2..].to_vec();
    let their_meta = dir.path().join("theirs");
    Db::format(&theirs, &their_meta, &o)
        .unwrap()
        .close()
        .unwrap();
    let mixed = vec![files[0].clone(), files[2].clone()];
    let e = Db::format(&mixed, &meta, &o).err().unwrap();
    assert!(matches!(e, Error::DeviceNotEmpty { .. }), "{e:?}");
    Db::open(&theirs, &their_meta, &o).unwrap().close().unwrap();
}

/// A format that fails before its commit (here: the index's first batch fails to sync)
/// removes the metadata directory it created, and empties one that was empty before.
#[test]
fn a_failed_format_removes_what_it_created() {
    for pre_existing in [false, true] {
        let fs = Arc::new(FaultFs::new(15));
        let mut o = small_options();
        o.lsm.fs = fs.clone();
        let meta = Path::new("/failed-format/meta");
        if pre_existing {
            fs.create_dir_all(meta).unwrap();
        }
        fs.inject(Fault {
            op: Op::Sync,
            class: Some(FileClass::Wal),
            skip: 0,
            errno: libc::EIO,
            times: 1,
        });
        let e = Db::format_device(sim(8 * MIB, 15), meta, &o).err().unwrap();
        assert!(matches!(e, Error::Lsm(_)), "{e:?}");
        assert_eq!(fs.fired().len(), 1, "the first batch's sync failed");
        if pre_existing {
            assert_eq!(fs.list(meta).unwrap(), Vec::<String>::new(), "left empty");
        } else {
            assert_eq!(fs.entry_kind(meta).unwrap(), EntryKind::Missing, "removed");
        }
    }
}

/// A write that fails with EIO may still reach the media. A format whose superblock
/// write failed therefore does not know whether it committed: whether the failed copy
/// landed or not, the store afterwards (on healthy storage) either opens or formats
/// again without force, and then works.
#[test]
fn a_format_whose_superblock_write_failed_opens_or_formats_again() {
    let o = small_options();
    for landed in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("meta");
        let mut config = SimConfig::new(8 * MIB, 16);
        // What a power cycle does with the failed write: it lands whole, or not at all.
        config.crash_weights = CrashWeights {
            applied: u32::from(landed),
            lost: u32::from(!landed),
            torn: 0,
        };
        let dev = Arc::new(SimDevice::new(config).unwrap());
        dev.inject(FaultRule::eio().on(OpKind::Write).in_range(0..4 * KIB))
            .unwrap();
        let e = Db::format_device(dev.clone(), &meta, &o).err().unwrap();
        assert!(matches!(e, Error::Device(_)), "{e:?}");
        let dev = Arc::new(dev.crash());
        let db = Db::open_device(dev.clone(), &meta, &o).unwrap_or_else(|open_error| {
            Db::format_device(dev.clone(), &meta, &o).unwrap_or_else(|e| {
                panic!(
                    "landed {landed}: the store neither opens ({open_error}) nor formats \
                     again without force: {e}"
                )
            })
        });
        let model = load(&db, 30);
        db.close().unwrap();
        let db = Db::open_device(dev, &meta, &o).unwrap();
        verify(&db, &model);
        db.close().unwrap();
    }
}

/// The device file a failed format created is removed too; one that existed stays.
#[test]
fn a_failed_format_removes_the_device_file_it_created() {
    let dir = disk_dir();
    let file = dir.path().join("new.img");
    let meta = dir.path().join("meta");
    // Too small for four main segments.
    let o: Options = small_options().with_create_device_bytes(Some(512 * KIB));
    let e = Db::format(&[file.clone()], &meta, &o).err().unwrap();
    assert!(matches!(e, Error::DeviceTooSmall { .. }), "{e:?}");
    assert!(!file.exists(), "the file format created is removed");
    assert!(!meta.exists());
    std::fs::File::create(&file)
        .unwrap()
        .set_len(512 * KIB)
        .unwrap();
    let e = Db::format(&[file.clone()], &meta, &o).err().unwrap();
    assert!(matches!(e, Error::DeviceTooSmall { .. }), "{e:?}");
    assert!(file.exists(), "a file that existed before stays");
}
