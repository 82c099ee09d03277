//! `hashkv compare`: `hashkv bench`'s experiment (the same arguments, phases, table,
//! JSON and plot) run on the engine's modes and then on peer stores in the same run, on
//! the same disk, with the same workload:
//! - `rocksdb`: RocksDB with its default (leveled) options;
//! - `blobdb`: RocksDB with integrated BlobDB (values in blob files, blob GC on).
//!
//! Then fio runs the engine's I/O shapes (fio-configs/, through devbench's fio runner)
//! on the same device or on a file on the same filesystem, and each phase's device
//! write bandwidth is shown as a share of fio's sequential-write bandwidth.
//!
//! Every row's device I/O is counted the same way: /proc/self/io deltas around the
//! phase (the `io_*` columns; see `bench/report.rs`). The peers need a build with
//! `--features rocksdb`; without it they are listed as skipped, as fio is when it is
//! not installed.

mod fio_baseline;
mod peers;

use super::bench::report::PhaseReport;
use super::bench::{phase::Sample, plot::WriteAmpSource, stopped, BenchArgs, Session};
use super::store::{is_block_device, StoreCmdError, StoreResult};
use fio_baseline::FioTarget;
use peers::Peer;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Run time of each fio job unless --fio-seconds says otherwise: six jobs, half a
/// minute in all.
const FIO_SECONDS_DEFAULT: f64 = 5.0;

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub bench: BenchArgs,

    /// Peer stores run after the engine modes, comma-separated: rocksdb (RocksDB,
    /// default leveled options), blobdb (RocksDB with BlobDB: values in blob files,
    /// blob GC on); "none" for no peer. They need a build with --features rocksdb.
    #[arg(
        long = "peer",
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "rocksdb,blobdb"
    )]
    pub peers: Vec<String>,

    /// Directory for the peers' databases, each in a temporary subdirectory removed
    /// afterwards; put it on the same disk as the device. Needed when --device is a
    /// block device. [default: the temporary directory, or beside the device file]
    #[arg(long, value_name = "DIR")]
    pub peer_dir: Option<PathBuf>,

    /// Run time of each fio job (the six shapes of fio-configs/). fio runs on a
    /// temporary file beside the device file, or on the first --device itself when it
    /// is a block device (overwriting what the benchmark left there).
    #[arg(long, value_name = "S", default_value_t = FIO_SECONDS_DEFAULT)]
    pub fio_seconds: f64,

    /// Do not run fio even if it is installed.
    #[arg(long)]
    pub no_fio: bool,
}

/// What runs besides the engine, decided before anything touches a disk.
struct PeerPlan {
    /// Peers this build runs, in the order asked.
    runnable: Vec<Peer>,
    /// (name, reason) of peers asked for that this run skips.
    skipped: Vec<(String, String)>,
    /// fio's executable, or why fio is skipped.
    fio: Result<PathBuf, String>,
}

impl PeerPlan {
    fn from_args(args: &CompareArgs) -> StoreResult<PeerPlan> {
        let usage = |m: String| Err(StoreCmdError::Usage(m));
        if !(args.fio_seconds.is_finite() && args.fio_seconds > 0.0) {
            return usage(format!(
                "--fio-seconds {} must be a positive number",
                args.fio_seconds
            ));
        }
        let mut runnable = Vec::new();
        let mut skipped = Vec::new();
        let names: Vec<&str> = args.peers.iter().map(|p| p.trim()).collect();
        if names != ["none"] {
            for name in names {
                let Some(peer) = Peer::from_name(name) else {
                    return usage(format!(
                        "--peer {name:?}: no such peer (peers: {}, or none)",
                        Peer::ALL.map(Peer::name).join(", ")
                    ));
                };
                if runnable.contains(&peer) || skipped.iter().any(|(n, _)| n == name) {
                    continue;
                }
                match peers::unavailable_reason() {
                    None => runnable.push(peer),
                    Some(reason) => skipped.push((name.to_string(), reason.to_string())),
                }
            }
        }
        if let Some(dir) = &args.peer_dir {
            if !dir.is_dir() {
                return usage(format!(
                    "--peer-dir {}: not an existing directory",
                    dir.display()
                ));
            }
        } else if !runnable.is_empty()
            && args
                .bench
                .devices
                .first()
                .is_some_and(|d| is_block_device(d))
        {
            return usage(format!(
                "--peer-dir is needed: the peers keep their data in a directory, and {} is \
                 a block device; pass a directory on a filesystem of the same disk",
                args.bench.devices[0].display()
            ));
        }
        let fio = if args.no_fio {
            Err("--no-fio".to_string())
        } else {
            fio_baseline::find().ok_or_else(|| "fio not installed".to_string())
        };
        Ok(PeerPlan {
            runnable,
            skipped,
            fio,
        })
    }
}

pub fn run(args: &CompareArgs) -> StoreResult<()> {
    let peer_plan = PeerPlan::from_args(args)?;
    let mut session = Session::start(&args.bench, "compare")?;
    let disk_dir = disk_dir(&args.bench, &session)?;
    let peer_base = args.peer_dir.clone().unwrap_or_else(|| disk_dir.clone());
    println!(
        "device I/O of every row, engine and peers alike: /proc/self/io of this process \
         around each phase (io_wr = write_bytes - cancelled_write_bytes, io_rd = read_bytes)"
    );
    println!(
        "durability, the same for all: no write is synced on its own (engine: puts go to \
         its write cache; peers: WAL on, WriteOptions.sync = false); each write phase ends \
         with a durability point inside its timed interval (engine: Db::flush; peers: \
         FlushWAL(sync = true))"
    );
    for peer in &peer_plan.runnable {
        println!(
            "peer {}: {}; in a temporary directory under {}{}",
            peer.name(),
            peer.describe(
                args.bench.value_size,
                args.bench
                    .memory_mib
                    .map(|mib| peers::PeerMemory::of(*peer, mib << 20)),
            ),
            peer_base.display(),
            same_disk_note(&peer_base, &disk_dir, &args.bench.devices)
        );
    }
    for (name, reason) in &peer_plan.skipped {
        println!("peer {name}: skipped: {reason}");
    }
    match &peer_plan.fio {
        Ok(fio) => println!(
            "fio: {} ({}), {} s per shape after the stores{}",
            fio.display(),
            fio_baseline::version(fio).unwrap_or_else(|| "version unknown".into()),
            args.fio_seconds,
            if args.bench.read_ops > 0 {
                "; rand_read_4k_qd32 also just before and just after each read phase"
            } else {
                ""
            }
        ),
        Err(reason) => println!("fio: skipped: {reason}"),
    }
    // With a read phase fio's target is made now, for the bracket, and the baseline
    // after the stores runs on it too; without, only then.
    let mut fio_target = None;
    if let (Ok(fio), true) = (&peer_plan.fio, args.bench.read_ops > 0) {
        let target = Arc::new(FioTarget::new(fio, &session, &disk_dir)?);
        session.plan.read_bracket =
            Some(fio_baseline::read_bracket(target.clone(), args.fio_seconds));
        fio_target = Some(target);
    }

    let mut rows: Vec<PhaseReport> = Vec::new();
    let mut samples: Vec<(String, Vec<Sample>)> = Vec::new();
    let mut outcome = session.run_engine_modes(&mut rows, &mut samples);
    if outcome.is_ok() {
        for &peer in &peer_plan.runnable {
            if stopped() {
                break;
            }
            let mut peer_samples = Vec::new();
            let result = peers::run_peer(
                peer,
                &peer_base,
                &args.bench,
                &session.plan,
                &mut rows,
                &mut peer_samples,
            );
            samples.push((peer.name().to_string(), peer_samples));
            if let Err(e) = result {
                outcome = Err(e);
                break;
            }
        }
    }
    let fio_runs = match (&peer_plan.fio, &outcome) {
        (Ok(fio), Ok(())) if !stopped() => {
            println!();
            let target = match fio_target.take() {
                Some(target) => Ok(target),
                None => FioTarget::new(fio, &session, &disk_dir).map(Arc::new),
            };
            match target.and_then(|t| fio_baseline::run(&t, &session, args.fio_seconds)) {
                Ok(runs) => Some(runs),
                Err(e) => {
                    outcome = Err(e);
                    None
                }
            }
        }
        _ => None,
    };

    session.report(&rows, &samples, WriteAmpSource::ProcessIo)?;
    for (name, reason) in &peer_plan.skipped {
        println!("peer {name}: skipped: {reason}");
    }
    match (&peer_plan.fio, &fio_runs) {
        (Err(reason), _) => println!("fio: skipped: {reason}"),
        (Ok(_), Some(runs)) => print!("{}", fio_baseline::report(runs, &rows)),
        (Ok(_), None) => println!("fio: not run (the run stopped before it)"),
    }
    outcome?;
    session.finish()
}

/// The directory on the disk the engine's device lives on: the temporary directory,
/// or the first device file's directory. For a block device, the peers' --peer-dir
/// (checked to be given) and the fio target is the device itself.
fn disk_dir(args: &BenchArgs, session: &Session) -> StoreResult<PathBuf> {
    if let Some(scratch) = &session.scratch {
        return Ok(scratch.path().to_path_buf());
    }
    let first = &args.devices[0];
    if is_block_device(first) {
        return Ok(first.clone());
    }
    Ok(first
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf))
}

/// Says whether the peers' directory shares the filesystem of the device's directory.
fn same_disk_note(peer_base: &Path, disk_dir: &Path, devices: &[PathBuf]) -> String {
    if devices.first().is_some_and(|d| is_block_device(d)) {
        return format!(
            " (given by --peer-dir: it should be on the disk of {})",
            devices[0].display()
        );
    }
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    match (dev(peer_base), dev(disk_dir)) {
        (Some(a), Some(b)) if a == b => " (the device file's filesystem)".into(),
        (Some(_), Some(_)) => format!(
            " (WARNING: not the filesystem of {}, so not the same disk)",
            disk_dir.display()
        ),
        _ => String::new(),
    }
}
