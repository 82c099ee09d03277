//! compare's device baseline: fio runs the engine's I/O shapes (fio-configs/, through
//! devbench's fio runner) on the engine's block device, or on a file on the same
//! filesystem as the engine's device file, after the stores ran. Each phase's device
//! write bandwidth (io_wr / seconds) is then shown as a share of fio's sequential
//! writes of 1 MiB at queue depth 32, the shape of the engine's segment appends, and of
//! the same writes with an fdatasync after each write cache's worth: the engine makes
//! every flush's records durable before its index batch may point at them, and on a
//! disk whose cache flush costs as much as the writes (a virtio disk over a host's
//! page cache) that, not the queue, bounds a load of large values. fio's io_uring
//! engine issues its fdatasync beside the writes in flight and keeps submitting, where
//! a flush waits for its writes and then the device flush, so this flatters fio a
//! little.
//!
//! With a read phase, fio's random 4 KiB reads also run just before and just after
//! each store's read phase (`read_bracket`), on the same target (`FioTarget`), which
//! is then made before the stores run and kept for the baseline.

use super::super::bench::report::{mib, PhaseReport};
use super::super::bench::{stopped, write_whole, ReadBracket, Session};
use super::super::devbench::fio::{self as runner, FioResult};
use super::super::devbench::shape::{Pattern, Shape, BLOCK_BYTES_MAX, SHAPES};
use super::super::store::{io_error, is_block_device, StoreResult};
use std::fmt::Write as _;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The fio region: the store's device size, within these bounds. Larger regions only
/// lengthen the prefill; smaller ones would let the device's cache flatter fio.
const REGION_BYTES_MAX: u64 = 1 << 30;
const REGION_BYTES_MIN: u64 = 64 << 20;
/// The shape run around every read phase (`read_bracket`).
const READ_BRACKET_SHAPE: &str = "rand_read_4k_qd32";
/// The shape the engine's write bandwidth is measured against.
const SEQ_WRITE_SHAPE: &str = "seq_write_1m_qd32";
/// Width of the shape column: the longest shape name.
const SHAPE_COLUMN: usize = 27;
/// That shape with an fdatasync every `FDATASYNC_BLOCKS` blocks (compare only: devbench's
/// device has no such shape to run against it).
const SYNCED_SEQ_WRITE: Shape = Shape {
    name: "seq_write_1m_qd32_fdatasync",
    pattern: Pattern::SeqWrite,
    block_bytes: 1 << 20,
    queue_depth: 32,
    fio_job: include_str!("../../../../fio-configs/seq_write_1m_qd32_fdatasync.fio"),
};

pub fn find() -> Option<PathBuf> {
    runner::find_fio()
}

pub fn version(fio: &Path) -> Option<String> {
    runner::version(fio)
}

/// fio's results for the shapes it ran.
pub struct FioRuns {
    target: String,
    region_bytes: u64,
    seconds: f64,
    shapes: Vec<(Shape, FioResult)>,
    /// The synced sequential writes: MiB between fdatasyncs, and the result.
    synced: Option<(u64, FioResult)>,
}

/// Where fio runs for the whole compare run, read-bracket and baseline alike: the
/// engine's block device, or a file of the region's size written once on the disk
/// the engine's device file is on; with fio and its job directory.
pub struct FioTarget {
    fio: PathBuf,
    path: PathBuf,
    region_bytes: u64,
    /// The file, when the target is one: removed when this drops.
    _file: Option<tempfile::NamedTempFile>,
    job_dir: tempfile::TempDir,
}

impl FioTarget {
    /// The engine's block device (`disk` is one), or a file written once in `disk`
    /// (a directory) so that reads hit allocated blocks.
    pub fn new(fio: &Path, session: &Session, disk: &Path) -> StoreResult<FioTarget> {
        let (path, region_bytes, file) = if is_block_device(disk) {
            let size_bytes = std::fs::File::open(disk)
                .and_then(|mut f| f.seek(SeekFrom::End(0)))
                .map_err(io_error(disk, "finding the device's size for fio"))?;
            let region_bytes = whole_blocks(size_bytes.min(REGION_BYTES_MAX));
            (disk.to_path_buf(), region_bytes, None)
        } else {
            let region_bytes = whole_blocks(
                session
                    .plan
                    .device_bytes
                    .clamp(REGION_BYTES_MIN, REGION_BYTES_MAX),
            );
            let file = prefilled_file(disk, region_bytes)?;
            (file.path().to_path_buf(), region_bytes, Some(file))
        };
        let job_dir = tempfile::tempdir().map_err(io_error(
            &std::env::temp_dir(),
            "creating fio's job directory",
        ))?;
        Ok(FioTarget {
            fio: fio.to_path_buf(),
            path,
            region_bytes,
            _file: file,
            job_dir,
        })
    }

    /// Runs `shape` for `seconds` with `env` in its job file, naming it on stderr.
    fn run(&self, shape: &Shape, seconds: f64, env: &[(&str, String)]) -> StoreResult<FioResult> {
        eprint!("fio {} ... ", shape.name);
        Ok(runner::run_job(
            &self.fio,
            shape,
            &self.path,
            self.region_bytes,
            Duration::from_secs_f64(seconds),
            self.job_dir.path(),
            env,
        )?)
    }
}

/// Runs every shape for `seconds` on `target`. Stops early at Ctrl-C.
pub fn run(target: &FioTarget, session: &Session, seconds: f64) -> StoreResult<FioRuns> {
    let mut runs = FioRuns {
        target: target.path.display().to_string(),
        region_bytes: target.region_bytes,
        seconds,
        shapes: Vec::new(),
        synced: None,
    };
    let run_one = |shape: &Shape, env: &[(&str, String)]| -> StoreResult<FioResult> {
        let result = target.run(shape, seconds, env)?;
        eprintln!("{:.0} MiB/s", result.bytes_per_s() / (1u64 << 20) as f64);
        Ok(result)
    };
    for shape in SHAPES {
        if stopped() {
            break;
        }
        let result = run_one(&shape, &[])?;
        runs.shapes.push((shape, result));
    }
    if !stopped() {
        // One fdatasync per flush: the write cache fills, then flushes.
        let write_cache_bytes = session.plan.options.memory_split().write_cache_bytes;
        let blocks_per_fdatasync = (write_cache_bytes / SYNCED_SEQ_WRITE.block_bytes as u64).max(1);
        let env = [("FDATASYNC_BLOCKS", blocks_per_fdatasync.to_string())];
        let every_mib = (blocks_per_fdatasync * SYNCED_SEQ_WRITE.block_bytes as u64) >> 20;
        runs.synced = Some((every_mib, run_one(&SYNCED_SEQ_WRITE, &env)?));
    }
    Ok(runs)
}

/// fio's `READ_BRACKET_SHAPE` on `target` for `seconds`, to run just before and just
/// after each read phase (`Plan::read_bracket`). On the engine's block device it only
/// reads: the store stays as it is.
pub fn read_bracket(target: Arc<FioTarget>, seconds: f64) -> ReadBracket {
    let shape = SHAPES
        .iter()
        .find(|s| s.name == READ_BRACKET_SHAPE)
        .expect("the read shape is one of SHAPES");
    Arc::new(move || {
        let iops = target.run(shape, seconds, &[])?.ops_per_s();
        eprintln!("{iops:.0} IOPS");
        Ok(iops)
    })
}

fn whole_blocks(bytes: u64) -> u64 {
    bytes / BLOCK_BYTES_MAX as u64 * BLOCK_BYTES_MAX as u64
}

/// A file of `bytes` in `dir`, every block written (reads of a fresh file's unwritten
/// extents never reach the disk), removed when dropped.
fn prefilled_file(dir: &Path, bytes: u64) -> StoreResult<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new()
        .prefix(".hashkv-compare-fio-")
        .suffix(".img")
        .tempfile_in(dir)
        .map_err(io_error(dir, "creating fio's target file"))?;
    let path = file.path().to_path_buf();
    eprint!(
        "fio: writing {} MiB of {} once so that reads find allocated blocks ... ",
        bytes >> 20,
        path.display()
    );
    let chunk: Vec<u8> = (0..BLOCK_BYTES_MAX).map(|i| (i * 31 + 7) as u8).collect();
    write_whole(file.as_file_mut(), &path, bytes, &chunk)?;
    eprintln!("done");
    Ok(file)
}

/// fio's table, then each row's device write bandwidth as a share of fio's
/// sequential-write bandwidth.
pub fn report(runs: &FioRuns, rows: &[PhaseReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nfio on {} (region {} MiB, {} s per shape; MiB/s and IOPS count reads and writes, \
         p99: total latency of the main direction):",
        runs.target,
        runs.region_bytes >> 20,
        runs.seconds
    );
    let _ = writeln!(
        out,
        "{:<22} {:>9} {:>9} {:>9}",
        "shape", "MiB/s", "IOPS", "p99us"
    );
    for (shape, r) in &runs.shapes {
        let main = if shape.reads_dominate() {
            &r.read
        } else {
            &r.write
        };
        let _ = writeln!(
            out,
            "{:<SHAPE_COLUMN$} {:>9.1} {:>9.0} {:>9}",
            shape.name,
            r.bytes_per_s() / (1u64 << 20) as f64,
            r.ops_per_s(),
            main.latency_p99_ns
                .map_or("-".into(), |ns| format!("{:.0}", ns / 1000.0))
        );
    }
    let Some(seq) = runs
        .shapes
        .iter()
        .find(|(s, _)| s.name == SEQ_WRITE_SHAPE)
        .map(|(_, r)| r.write.bytes_per_s)
        .filter(|bw| *bw > 0.0)
    else {
        let _ = writeln!(
            out,
            "no share of fio's sequential writes: {SEQ_WRITE_SHAPE} did not run"
        );
        return out;
    };
    let seq_mib = seq / (1u64 << 20) as f64;
    let synced = runs
        .synced
        .as_ref()
        .map(|(every, r)| (*every, r.write.bytes_per_s / (1u64 << 20) as f64))
        .filter(|(_, bw)| *bw > 0.0);
    let synced_name = SYNCED_SEQ_WRITE.name;
    let _ = match synced {
        Some((every, bw)) => writeln!(
            out,
            "{synced_name:<SHAPE_COLUMN$} {bw:>9.1}    (an fdatasync every {every} MiB, like the engine's flushes)"
        ),
        None => writeln!(out, "{synced_name}: did not run"),
    };
    let _ = writeln!(
        out,
        "\ndevice write bandwidth of each phase (io_wr / sec) as a share of fio \
         {SEQ_WRITE_SHAPE} ({seq_mib:.1} MiB/s) and of {synced_name}:"
    );
    let _ = writeln!(
        out,
        "{:<8} {:<8} {:>12} {:>7} {:>7}",
        "mode", "phase", "io_wr MiB/s", "share", "synced"
    );
    let share = |bw: Option<f64>, of: Option<f64>| match (bw, of) {
        (Some(b), Some(of)) => format!("{:.1}%", 100.0 * b / of),
        _ => "-".into(),
    };
    for r in rows {
        let bw = r
            .io_write_bytes
            .filter(|_| r.seconds > 0.0)
            .map(|b| mib(b) / r.seconds);
        let _ = writeln!(
            out,
            "{:<8} {:<8} {:>12} {:>7} {:>7}",
            r.mode,
            r.phase,
            bw.map_or("-".into(), |b| format!("{b:.1}")),
            share(bw, Some(seq_mib)),
            share(bw, synced.map(|(_, s)| s)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::devbench::fio::FioDirection;

    fn row(mode: &str, phase: &str, io_write_bytes: Option<u64>, seconds: f64) -> PhaseReport {
        PhaseReport {
            fio_read_iops_around: None,
            mode: mode.into(),
            phase: phase.into(),
            began_at_seconds: 0.0,
            ops: 10,
            seconds,
            ops_per_sec: 1.0,
            user_bytes: 1,
            user_read_bytes: 0,
            user_mib_per_sec: 1.0,
            device_write_bytes: 0,
            device_read_bytes: 0,
            kernel_write_bytes: None,
            kernel_read_bytes: None,
            lsm_write_bytes: 0,
            write_amp: None,
            gc_write_bytes: 0,
            gc_read_bytes: 0,
            gc_runs: 0,
            gc_runs_in_flush: 0,
            demotions: 0,
            promotions: 0,
            cold_log_bytes: 0,
            cold_live_bytes: 0,
            cold_gc_runs: 0,
            gc_index_lookups: 0,
            space_bytes: 0,
            p50_us: 1.0,
            p99_us: 1.0,
            p999_us: 1.0,
            max_us: 1.0,
            full_windows: 0,
            slowest_window_ops_per_sec: None,
            slowest_window_share: None,
            ops_per_window: Vec::new(),
            io_write_bytes,
            io_read_bytes: None,
            io_write_amp: None,
            interrupted: false,
        }
    }

    fn seq_write(mib_per_s: f64) -> (Shape, FioResult) {
        let shape = SHAPES
            .into_iter()
            .find(|s| s.name == SEQ_WRITE_SHAPE)
            .unwrap();
        let result = FioResult {
            read: FioDirection::default(),
            write: FioDirection {
                bytes_per_s: mib_per_s * (1u64 << 20) as f64,
                ops_per_s: mib_per_s,
                latency_p50_ns: None,
                latency_p99_ns: Some(2_000_000.0),
                latency_p999_ns: None,
            },
        };
        (shape, result)
    }

    fn runs(shapes: Vec<(Shape, FioResult)>, synced: Option<(u64, FioResult)>) -> FioRuns {
        FioRuns {
            target: "f".into(),
            region_bytes: 64 << 20,
            seconds: 1.0,
            shapes,
            synced,
        }
    }

    #[test]
    fn shares_are_write_bandwidth_over_fios_sequential_writes() {
        let runs = runs(vec![seq_write(400.0)], Some((16, seq_write(250.0).1)));
        let rows = [
            row("hashkv", "load", Some(200 << 20), 2.0),
            row("rocksdb", "update1", Some(800 << 20), 4.0),
            row("hashkv", "read", None, 1.0),
        ];
        let text = report(&runs, &rows);
        let line = |mode: &str, phase: &str| {
            text.lines()
                .find(|l| {
                    let mut c = l.split_whitespace();
                    c.next() == Some(mode) && c.next() == Some(phase)
                })
                .unwrap_or_else(|| panic!("no {mode} {phase} in {text}"))
                .split_whitespace()
                .skip(2)
                .collect::<Vec<_>>()
        };
        assert_eq!(line("hashkv", "load"), ["100.0", "25.0%", "40.0%"]);
        assert_eq!(line("rocksdb", "update1"), ["200.0", "50.0%", "80.0%"]);
        assert_eq!(line("hashkv", "read"), ["-", "-", "-"]);
        assert!(text.contains("(400.0 MiB/s)"), "{text}");
        assert!(
            text.contains("seq_write_1m_qd32               400.0"),
            "{text}"
        );
        assert!(
            text.contains("seq_write_1m_qd32_fdatasync     250.0    (an fdatasync every 16 MiB"),
            "{text}"
        );
    }

    #[test]
    fn without_the_synced_run_its_share_column_stays_empty() {
        let runs = runs(vec![seq_write(400.0)], None);
        let text = report(&runs, &[row("hashkv", "load", Some(200 << 20), 2.0)]);
        let load = text.lines().find(|l| l.starts_with("hashkv")).unwrap();
        assert_eq!(
            load.split_whitespace().collect::<Vec<_>>(),
            ["hashkv", "load", "100.0", "25.0%", "-"]
        );
        assert!(
            text.contains("seq_write_1m_qd32_fdatasync: did not run"),
            "{text}"
        );
    }

    /// The synced job is the plain sequential-write job plus its fdatasync cadence:
    /// the same options in both sections, comments aside.
    #[test]
    fn the_synced_job_is_the_sequential_write_job_with_fdatasync() {
        let plain = SHAPES.iter().find(|s| s.name == SEQ_WRITE_SHAPE).unwrap();
        let options = |text: &'static str| -> Vec<&'static str> {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with(';'))
                .collect()
        };
        let split = |job: &'static str, name: &str| {
            let (global, own) = job.split_once(&format!("[{name}]")).unwrap();
            (options(global), options(own))
        };
        let (plain_global, plain_own) = split(plain.fio_job, plain.name);
        let (synced_global, mut synced_own) =
            split(SYNCED_SEQ_WRITE.fio_job, SYNCED_SEQ_WRITE.name);
        assert_eq!(synced_global, plain_global);
        assert_eq!(synced_own.pop(), Some("fdatasync=${FDATASYNC_BLOCKS}"));
        assert_eq!(synced_own, plain_own);
        assert_eq!(SYNCED_SEQ_WRITE.block_bytes, plain.block_bytes);
        assert_eq!(SYNCED_SEQ_WRITE.queue_depth, plain.queue_depth);
        assert!(SHAPES
            .iter()
            .chain([&SYNCED_SEQ_WRITE])
            .all(|s| s.name.len() <= SHAPE_COLUMN));
    }

    #[test]
    fn without_the_sequential_write_run_no_share_is_claimed() {
        let runs = runs(Vec::new(), None);
        let text = report(&runs, &[row("hashkv", "load", Some(1 << 20), 1.0)]);
        assert!(text.contains("did not run"), "{text}");
        assert!(!text.contains('%'), "{text}");
    }
}
