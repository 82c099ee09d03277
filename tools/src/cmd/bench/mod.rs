//! `hashkv bench`: the paper's experiment at a chosen scale. Per mode, on equal space
//! (same device size, a fresh format each): load N GiB of values under 24-byte keys,
//! then update phases with keys from a scrambled Zipf, then optional random reads and
//! 100-key scans. One row per (mode, phase) with throughput, device and LSM bytes,
//! write amplification (see `report.rs` for its definition), space, latency
//! (percentiles and maximum) and the slowest 1-second window's share of the mean.
//!
//! Without --device the store is a file in a temporary directory on a filesystem where
//! O_DIRECT works: under $TMPDIR (/tmp when unset), or under the current directory when
//! O_DIRECT fails there (tmpfs); the file and the metadata directory are removed after
//! each mode, and the directory at the end. A second Ctrl-C exits at once and prints
//! what it leaves behind.
//!
//! `hashkv compare` reuses all of it: the arguments (`BenchArgs`), the `Session` (plan,
//! Ctrl-C, temporary directory, engine modes, table/JSON/plot) and the phase driver
//! (`run_target` over any `target::BenchTarget`), and adds its peer stores.

pub(crate) mod phase;
pub(crate) mod plot;
pub(crate) mod report;
pub(crate) mod target;

use super::store::{
    human_bytes, io_error, read_process_io, supports_o_direct, StoreCmdError, StoreResult,
};
use crate::workload::{ScrambledZipf, KEY_BYTES};
use hashkv::{Db, Mode, Options};
use indicatif::{ProgressBar, ProgressStyle};
use phase::{run_phase, PhaseKind, Sample, Workload};
use plot::WriteAmpSource;
use report::{per_sec, PhaseReport};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use target::{BenchTarget, EngineTarget};

const GIB: f64 = (1u64 << 30) as f64;
const MIB: u64 = 1 << 20;
/// Every mode the engine is designed to run; names outside this list are typos and
/// refused, names in it that this build lacks are reported as skipped.
const DESIGNED_MODES: [&str; 3] = ["hashkv", "vlog", "lsm"];
/// Headroom over the records' bytes when sizing the device: hash grouping fills
/// groups unevenly, and blocks are padded at flush boundaries.
const DEVICE_HEADROOM: f64 = 1.1;

/// Set by Ctrl-C: workers stop, the phase is reported as interrupted, the store is
/// flushed and closed.
static STOP: AtomicBool = AtomicBool::new(false);

/// Paths this run created and removes when it ends (temporary directory, device files,
/// metadata directories): what a second Ctrl-C, which exits at once, leaves behind.
static LEFT_BEHIND: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Notes a path this run created and will remove.
pub(crate) fn created(path: &Path) {
    LEFT_BEHIND
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(path.to_path_buf());
}

/// Notes that a path noted by `created` is gone.
pub(crate) fn removed(path: &Path) {
    LEFT_BEHIND
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|p| p != path);
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Device or file to run on (repeatable: stripe over several). Devices and files
    /// that hold data (a hashkv store included) need --force-format. Missing paths are
    /// created as files of the computed size and removed afterwards.
    /// [default: a file in a temporary directory]
    #[arg(long = "device", value_name = "PATH")]
    pub devices: Vec<PathBuf>,

    /// Metadata (LSM tree) directory; each run uses a subdirectory named after it (its
    /// mode, or `hashkv+hot`).
    /// [default: beside the temporary device file]
    #[arg(long, value_name = "DIR")]
    pub metadata: Option<PathBuf>,

    /// Modes to run, comma-separated, one after another. [default: every mode this
    /// build runs]
    #[arg(long = "mode", value_name = "LIST", value_delimiter = ',')]
    pub modes: Vec<String>,

    /// Data loaded before the updates, in GiB of values (fractions allowed).
    #[arg(long, value_name = "GIB", default_value_t = 1.0)]
    pub load_gib: f64,

    /// Data written by each update phase, in GiB of values.
    #[arg(long, value_name = "GIB", default_value_t = 1.0)]
    pub update_gib: f64,

    /// Number of update phases.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub phases: u32,

    /// Value size in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    pub value_size: usize,

    /// Zipf constant of the update keys (0 < z < 1).
    #[arg(long, value_name = "Z", default_value_t = 0.99)]
    pub zipf: f64,

    /// Share of the value space reserved for log segments.
    #[arg(long, value_name = "F", default_value_t = 0.30)]
    pub reserve: f64,

    /// Worker threads sharing the store. [default: the number of CPUs]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Write cache in MiB; 0 turns it off.
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pub write_cache: u64,

    /// Memory budget in MiB for every engine mode (`Options::memory_budget_bytes`): split
    /// between the index's block cache, its memtables, the write cache and the value
    /// cache, and overriding --write-cache (README, "Memory"). At least 8. compare gives
    /// RocksDB and BlobDB the same budget, split the same way, with direct I/O.
    /// [default: no budget]
    #[arg(long, value_name = "MIB")]
    pub memory_mib: Option<u64>,

    /// Hot/cold separation during GC (the hashkv mode's cold data log). `on,off` runs
    /// the hashkv mode once with each, in that order, so that both are measured in one
    /// run; the rows with it on are labelled `hashkv+hot`. The other modes have no cold
    /// log and run once.
    #[arg(long, value_name = "on|off", default_value = "off", value_delimiter = ',',
          value_parser = ["on", "off"])]
    pub hotness: Vec<String>,

    /// Random gets after the updates, keys uniform over the loaded keys (0: no read
    /// phase).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub read_ops: u64,

    /// Client threads of the read phase. [default: --threads]
    #[arg(long, value_name = "N")]
    pub read_threads: Option<usize>,

    /// Keys each read of the read phase asks for at once: 1 reads with get, more with
    /// one multi_get of that many random keys (ops count keys; latencies are per
    /// multi_get). compare's RocksDB peers do a get per key of the batch.
    #[arg(long, value_name = "M", default_value_t = 1)]
    pub batch: usize,

    /// 100-key range scans after the reads, each from a key uniform over the loaded
    /// keys (0: no scan phase).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub scan_ops: u64,

    /// Write the results as a JSON array, one object per (mode, phase).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write an SVG: throughput over time per mode with each phase's start marked,
    /// write amplification per mode.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,

    /// Seed of the key and value generators.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Allow formatting block devices (and a --metadata subdirectory) that hold data.
    #[arg(long)]
    pub force_format: bool,

    /// Write each device file this run creates once (zeros, then synced) before
    /// formatting, as fio does with its target. A file that is only allocated has
    /// unwritten extents (ext4), and each device flush then also records which were
    /// written: that cost the 64 KiB load a quarter of its bandwidth. Block devices and
    /// files that exist are left as they are.
    #[arg(long)]
    pub prefill_device: bool,
}

/// Writes `bytes` over `file` (at `path`) from its start, `chunk` after `chunk`, and
/// syncs it, so that its extents are written ones: compare's fio target, and each
/// device file with `--prefill-device`.
pub(crate) fn write_whole(
    file: &mut std::fs::File,
    path: &Path,
    bytes: u64,
    chunk: &[u8],
) -> StoreResult<()> {
    use std::io::Write as _;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])
            .map_err(io_error(path, "writing the file once"))?;
        left -= n as u64;
    }
    file.sync_all()
        .map_err(io_error(path, "syncing the file written once"))
}

/// Bytes written per call while prefilling a device file.
const PREFILL_CHUNK_BYTES: usize = 1 << 20;

/// Writes `bytes` of zeros over the file at `path` (created by this run) and syncs it
/// (`--prefill-device`).
fn prefill(path: &Path, bytes: u64) -> StoreResult<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path, "opening the device file to prefill it"))?;
    write_whole(&mut file, path, bytes, &vec![0u8; PREFILL_CHUNK_BYTES])?;
    println!(
        "device: wrote {} of {} once (--prefill-device)",
        human_bytes(bytes),
        path.display()
    );
    Ok(())
}

/// Where one mode's store lives.
struct Placement {
    devices: Vec<PathBuf>,
    /// Paths this run created (removed after the mode).
    created: Vec<PathBuf>,
    metadata: PathBuf,
    /// The metadata directory is ours to remove afterwards.
    remove_metadata: bool,
}

pub fn run(args: &BenchArgs) -> StoreResult<()> {
    let session = Session::start(args, "bench")?;
    let mut rows: Vec<PhaseReport> = Vec::new();
    let mut samples: Vec<(String, Vec<Sample>)> = Vec::new();
    let outcome = session.run_engine_modes(&mut rows, &mut samples);
    session.report(&rows, &samples, WriteAmpSource::StoreCounters)?;
    outcome?;
    session.finish()
}

/// One run of the experiment, shared by `bench` and `compare`: the plan, the Ctrl-C
/// handler, the temporary directory, the engine modes, and the table, JSON and plot.
pub(crate) struct Session<'a> {
    pub args: &'a BenchArgs,
    pub plan: Plan,
    /// Holds the temporary store (without --device) for the whole run; removed on drop.
    pub scratch: Option<tempfile::TempDir>,
}

impl<'a> Session<'a> {
    /// Checks the arguments, installs the Ctrl-C handler, creates the temporary
    /// directory and prints the workload. `command` names the subcommand in messages.
    pub fn start(args: &'a BenchArgs, command: &'static str) -> StoreResult<Session<'a>> {
        let plan = Plan::from_args(args)?;
        install_ctrlc_handler(command)?;
        let scratch = if args.devices.is_empty() {
            let base = scratch_base()?;
            let dir = tempfile::Builder::new()
                .prefix("hashkv-bench-")
                .tempdir_in(&base)
                .map_err(io_error(
                    &base,
                    "creating the benchmark's temporary directory",
                ))?;
            println!("store: temporary directory {}", dir.path().display());
            created(dir.path());
            Some(dir)
        } else {
            None
        };
        println!(
            "workload: load {} keys x {} B values ({:.3} GiB), {} update phase(s) of {} ops, zipf {}, reserve {}, {} thread(s), write cache {} MiB",
            plan.workload.items,
            args.value_size,
            args.load_gib,
            args.phases,
            plan.update_ops,
            args.zipf,
            args.reserve,
            plan.threads,
            args.write_cache,
        );
        if let Some(mib) = args.memory_mib {
            let split = plan.options.memory_split();
            println!(
                "memory budget: {mib} MiB per mode: block cache {}, memtables {} x {}, write cache {}, value cache {}",
                human_bytes(split.block_cache_bytes),
                hashkv_lsm::MEMTABLES_HELD_MAX,
                human_bytes(split.memtable_bytes),
                human_bytes(split.write_cache_bytes),
                human_bytes(split.value_cache_bytes),
            );
        }
        if args.read_ops > 0 {
            println!(
                "reads: {} keys by {} thread(s), {} key(s) per read ({})",
                args.read_ops,
                plan.read_threads,
                args.batch,
                if args.batch > 1 { "multi_get" } else { "get" }
            );
        }
        if scratch.is_some() {
            println!(
                "device: {} per mode ({} bytes; main segment {})",
                human_bytes(plan.device_bytes),
                plan.device_bytes,
                human_bytes(plan.options.main_segment_bytes)
            );
        }
        Ok(Session {
            args,
            plan,
            scratch,
        })
    }

    /// Runs the planned engine modes one after another, appending their rows and
    /// throughput samples. Stops at the first error (the rows so far are kept) or at
    /// Ctrl-C.
    pub fn run_engine_modes(
        &self,
        rows: &mut Vec<PhaseReport>,
        samples: &mut Vec<(String, Vec<Sample>)>,
    ) -> StoreResult<()> {
        let mut formatted_before: Vec<PathBuf> = Vec::new();
        for run in &self.plan.runs {
            if stopped() {
                break;
            }
            let label = run.label();
            let placement = match &self.scratch {
                Some(dir) => {
                    let device = dir.path().join(format!("device-{label}.img"));
                    hashkv_blockdev::file::create_file(&device, self.plan.device_bytes, false)
                        .map_err(hashkv::Error::from)?;
                    if self.args.prefill_device {
                        prefill(&device, self.plan.device_bytes)?;
                    }
                    Placement {
                        devices: vec![device.clone()],
                        created: vec![device],
                        metadata: dir.path().join(format!("meta-{label}")),
                        remove_metadata: true,
                    }
                }
                None => user_placement(self.args, &self.plan, &label)?,
            };
            let mut mode_samples = Vec::new();
            let result = run_mode(
                self.args,
                &self.plan,
                *run,
                &placement,
                &mut formatted_before,
                rows,
                &mut mode_samples,
            );
            cleanup(&placement);
            samples.push((label, mode_samples));
            result?;
        }
        Ok(())
    }

    /// Prints the table and writes the JSON and the plot (with the write amplification
    /// from `source`).
    pub fn report(
        &self,
        rows: &[PhaseReport],
        samples: &[(String, Vec<Sample>)],
        source: WriteAmpSource,
    ) -> StoreResult<()> {
        if !rows.is_empty() {
            println!();
            print!("{}", report::table(rows));
        }
        if let Some(path) = &self.args.json {
            let text = serde_json::to_string_pretty(rows).expect("reports serialise");
            std::fs::write(path, text + "\n").map_err(io_error(path, "writing the JSON report"))?;
            println!("json: {}", path.display());
        }
        if let Some(path) = &self.args.plot {
            plot::write_svg(path, samples, rows, source).map_err(|e| StoreCmdError::Io {
                path: path.clone(),
                action: "drawing the plot",
                source: std::io::Error::other(e),
            })?;
            println!("plot: {}", path.display());
        }
        Ok(())
    }

    /// The run's result once everything is reported: interrupted if Ctrl-C came.
    pub fn finish(&self) -> StoreResult<()> {
        if let Some(dir) = &self.scratch {
            // Removed when the session drops, right after this.
            removed(dir.path());
        }
        if stopped() {
            return Err(StoreCmdError::Interrupted);
        }
        Ok(())
    }
}

/// True once Ctrl-C was pressed.
pub(crate) fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

fn install_ctrlc_handler(command: &'static str) -> StoreResult<()> {
    ctrlc::set_handler(move || {
        if STOP.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C means the user will not wait for the flush.
            eprintln!("\nhashkv {command}: interrupted again; exiting now without cleaning up");
            let left = LEFT_BEHIND.lock().unwrap_or_else(|p| p.into_inner());
            for path in left.iter() {
                eprintln!("hashkv {command}: left behind: {}", path.display());
            }
            std::process::exit(130);
        }
        eprintln!(
            "\nhashkv {command}: interrupted; finishing the phase, flushing and closing \
             (Ctrl-C again to exit at once)"
        );
    })
    .map_err(|e| StoreCmdError::Usage(format!("cannot install the Ctrl-C handler: {e}")))
}

/// Runs fio's random 4 KiB reads at queue depth 32 on the run's disk and returns its
/// IOPS: `compare` brackets every read phase with it (`Plan::read_bracket`).
pub(crate) type ReadBracket = Arc<dyn Fn() -> StoreResult<f64> + Send + Sync>;

/// Everything derived from the arguments before any device is touched.
pub(crate) struct Plan {
    /// The engine runs, one after another.
    pub runs: Vec<Run>,
    pub workload: Arc<Workload>,
    pub update_ops: u64,
    pub threads: usize,
    /// Client threads of the read phase.
    pub read_threads: usize,
    pub options: Options,
    /// Device size per mode when this run creates the device.
    pub device_bytes: u64,
    /// Run just before and just after each read phase, its IOPS kept in the phase's
    /// row: on a disk whose rate drifts by 2x within minutes, the gets are compared
    /// with fio runs seconds away. Set by `compare` when fio is there; None for `bench`.
    pub read_bracket: Option<ReadBracket>,
}

impl Plan {
    fn from_args(args: &BenchArgs) -> StoreResult<Plan> {
        let usage = |m: String| Err(StoreCmdError::Usage(m));
        if args.value_size == 0 {
            return usage("--value-size must be at least 1 byte".into());
        }
        if !(args.load_gib > 0.0 && args.load_gib.is_finite()) {
            return usage(format!("--load-gib {} must be positive", args.load_gib));
        }
        if !(args.update_gib >= 0.0 && args.update_gib.is_finite()) {
            return usage(format!(
                "--update-gib {} must not be negative",
                args.update_gib
            ));
        }
        if !(args.zipf > 0.0 && args.zipf < 1.0) {
            return usage(format!("--zipf {} must lie in (0, 1)", args.zipf));
        }
        if !(args.reserve > 0.0 && args.reserve < 0.95) {
            return usage(format!("--reserve {} must lie in (0, 0.95)", args.reserve));
        }
        if args.threads == Some(0) {
            return usage("--threads must be at least 1".into());
        }
        if args.read_threads == Some(0) {
            return usage("--read-threads must be at least 1".into());
        }
        if args.batch == 0 {
            return usage("--batch must be at least 1 key".into());
        }
        let items = (args.load_gib * GIB / args.value_size as f64) as u64;
        if items < 2 {
            return usage(format!(
                "--load-gib {} holds fewer than 2 values of {} bytes",
                args.load_gib, args.value_size
            ));
        }
        let update_ops = (args.update_gib * GIB / args.value_size as f64) as u64;

        let mut modes = Vec::new();
        let requested: Vec<String> = if args.modes.is_empty() {
            Mode::ALL.iter().map(|m| m.name().to_string()).collect()
        } else {
            args.modes.iter().map(|m| m.trim().to_string()).collect()
        };
        for name in &requested {
            match Mode::from_name(name) {
                Ok(m) if !modes.contains(&m) => modes.push(m),
                Ok(_) => {}
                Err(reason) if DESIGNED_MODES.contains(&name.as_str()) => {
                    println!("mode {name}: skipped: {reason}")
                }
                Err(_) => {
                    return usage(format!(
                        "--mode {name:?}: no such mode (modes: {})",
                        DESIGNED_MODES.join(", ")
                    ))
                }
            }
        }
        if modes.is_empty() {
            return usage("none of the requested modes is built in this version".into());
        }

        let Some(write_cache_bytes) = args.write_cache.checked_mul(MIB) else {
            return usage(format!(
                "--write-cache {} MiB is too large",
                args.write_cache
            ));
        };
        let memory_budget_bytes = match args.memory_mib {
            None => 0,
            Some(mib) if mib <= 1 << 30 && mib * MIB >= hashkv::MEMORY_BUDGET_BYTES_MIN => {
                mib * MIB
            }
            Some(mib) => {
                return usage(format!(
                    "--memory-mib {mib} must lie in {}..={}",
                    hashkv::MEMORY_BUDGET_BYTES_MIN / MIB,
                    1u64 << 30
                ))
            }
        };
        let runs = Run::plan(&modes, &args.hotness);
        let options = Options::default()
            .with_reserved_share(args.reserve)
            .with_write_cache_bytes(write_cache_bytes)
            .with_memory_budget_bytes(memory_budget_bytes)
            .with_force_format(true);
        let record_bytes = (hashkv::RECORD_HEADER_BYTES + KEY_BYTES + args.value_size) as u64;
        let device_bytes = device_bytes_for(items * record_bytes, &options, &modes)?;
        let threads = args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        Ok(Plan {
            runs,
            workload: Arc::new(Workload {
                items,
                value_bytes: args.value_size,
                zipf: ScrambledZipf::new(items, args.zipf),
                seed: args.seed,
                read_batch: args.batch,
            }),
            update_ops,
            threads,
            read_threads: args.read_threads.unwrap_or(threads),
            options,
            device_bytes,
            read_bracket: None,
        })
    }
}

/// One engine run of the bench: a mode, and for the hashkv mode whether its GC
/// separates hot from cold values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub mode: Mode,
    pub hotness: bool,
}

impl Run {
    /// The runs for `modes` in order: the hashkv mode once per `--hotness` setting
    /// (duplicates dropped), every other mode once (hotness means nothing there).
    fn plan(modes: &[Mode], hotness: &[String]) -> Vec<Run> {
        let mut settings: Vec<bool> = Vec::new();
        for h in hotness {
            let on = h == "on";
            if !settings.contains(&on) {
                settings.push(on);
            }
        }
        let first = settings.first().copied().unwrap_or(false);
        let mut runs = Vec::new();
        for &mode in modes {
            match mode {
                Mode::HashKv => runs.extend(settings.iter().map(|&hotness| Run { mode, hotness })),
                _ => runs.push(Run {
                    mode,
                    hotness: first,
                }),
            }
        }
        runs
    }

    /// The name of the run's rows, samples and scratch files: the mode's, with `+hot`
    /// for the hashkv mode with hot/cold separation.
    pub fn label(self) -> String {
        match (self.mode, self.hotness) {
            (Mode::HashKv, true) => format!("{}+hot", self.mode.name()),
            _ => self.mode.name().to_string(),
        }
    }
}

/// Device size that holds `live_bytes` of records with headroom, the reserved share
/// and the units that hold no values (superblock, one spare main segment per GC
/// worker): ceil(live * 1.1 / (1 - reserve)) + (1 + gc_workers) main segments, rounded
/// up to whole main segments, and grown until every mode in `modes` accepts it (the
/// same size for all: the modes run on equal space) and the groups' shares hold the
/// records. The last matters for small loads only: the layout rounds the reserved
/// share up to whole units, and 0.1 GiB of 4 KiB values got one group of 64 MiB on 5
/// units, which filled up during the load.
fn device_bytes_for(live_bytes: u64, options: &Options, modes: &[Mode]) -> StoreResult<u64> {
    let unit = options.main_segment_bytes;
    let value_bytes = (live_bytes as f64 * DEVICE_HEADROOM / (1.0 - options.reserved_share)).ceil();
    let mut units = (value_bytes / unit as f64).ceil() as u64 + 1 + u64::from(options.gc_workers);
    // The layout needs a few units at least (one group, one spare, reserved space), and
    // the vlog mode's log room for its GC reserve twice.
    for _ in 0..64 {
        if modes_accept(units * unit, options, modes).is_ok()
            && groups_hold(units * unit, live_bytes, options)
        {
            return Ok(units * unit);
        }
        units += 1;
    }
    modes_accept(units * unit, options, modes)?;
    if !groups_hold(units * unit, live_bytes, options) {
        return Err(StoreCmdError::Usage(format!(
            "no device size up to {} leaves groups that hold {live_bytes} bytes of records \
             at a reserve of {}",
            human_bytes(units * unit),
            options.reserved_share
        )));
    }
    Ok(units * unit)
}

/// Whether the groups of the layout on `device_bytes` (every mode's) have nominal
/// shares of at least `live_bytes` in all. Without headroom: the groups take more than
/// their shares from the pool as they need (4 KiB values with their padding fill 103%
/// of them in the 2 GiB bench), and asking for 1.1x would grow the bench's standard
/// 1 KiB device (36 groups for 2.24 GiB of records) by a unit.
fn groups_hold(device_bytes: u64, live_bytes: u64, options: &Options) -> bool {
    hashkv::check_device_size(device_bytes, 4096, options).is_ok_and(|layout| {
        u64::from(layout.group_count) * options.main_segment_bytes >= live_bytes
    })
}

/// Whether a device of `device_bytes` can be formatted in each of `modes`: the layout
/// every mode shares, and the vlog mode's value log over it.
fn modes_accept(device_bytes: u64, options: &Options, modes: &[Mode]) -> hashkv::Result<()> {
    for &mode in modes {
        hashkv::check_device_size(device_bytes, 4096, &options.clone().with_mode(mode))?;
    }
    Ok(())
}

/// $TMPDIR (/tmp when unset) if O_DIRECT works there, else the current directory if
/// it does (tmpfs refuses O_DIRECT).
pub(crate) fn scratch_base() -> StoreResult<PathBuf> {
    let mut tried = Vec::new();
    let candidates = [
        std::env::temp_dir(),
        std::env::current_dir()
            .map_err(io_error(Path::new("."), "finding the current directory"))?,
    ];
    for c in candidates {
        if supports_o_direct(&c) {
            return Ok(c);
        }
        tried.push(c.display().to_string());
    }
    Err(StoreCmdError::Usage(format!(
        "no directory for the benchmark's store supports O_DIRECT (tried {}; tmpfs does \
         not); set TMPDIR to a directory on a disk filesystem, or pass --device",
        tried.join(", ")
    )))
}

fn user_placement(args: &BenchArgs, plan: &Plan, label: &str) -> StoreResult<Placement> {
    let (metadata, remove_metadata) = match &args.metadata {
        Some(dir) => (dir.join(label), false),
        None => {
            let parent = args.devices[0]
                .parent()
                .filter(|p| !p.as_os_str().is_empty());
            let base = parent.map_or(PathBuf::from("."), Path::to_path_buf);
            let dir = base.join(format!(".hashkv-bench-meta-{label}-{}", std::process::id()));
            created(&dir);
            (dir, true)
        }
    };
    // Checked before any device file is created, so a refusal leaves nothing behind.
    if !remove_metadata && !args.force_format {
        let non_empty = std::fs::read_dir(&metadata).is_ok_and(|mut d| d.next().is_some());
        if non_empty {
            return Err(StoreCmdError::Usage(format!(
                "metadata directory {} is not empty; pass --force-format to replace it",
                metadata.display()
            )));
        }
    }
    let per_member_bytes = {
        let n = args.devices.len() as u64;
        let unit = plan.options.main_segment_bytes;
        let stripe_units_bytes = plan.device_bytes.div_ceil(n).div_ceil(unit) * unit;
        // A stripe member starts with its identity block, outside the striped space.
        if n > 1 {
            stripe_units_bytes + hashkv_blockdev::identity::IDENTITY_RESERVED_BYTES
        } else {
            stripe_units_bytes
        }
    };
    let mut placement = Placement {
        devices: args.devices.clone(),
        created: Vec::new(),
        metadata,
        remove_metadata,
    };
    for d in &args.devices {
        if d.exists() {
            continue;
        }
        if let Err(e) = hashkv_blockdev::file::create_file(d, per_member_bytes, false) {
            cleanup(&placement);
            return Err(hashkv::Error::from(e).into());
        }
        println!(
            "device: created {} ({})",
            d.display(),
            human_bytes(per_member_bytes)
        );
        created(d);
        placement.created.push(d.clone());
        if args.prefill_device {
            if let Err(e) = prefill(d, per_member_bytes) {
                cleanup(&placement);
                return Err(e);
            }
        }
    }
    Ok(placement)
}

fn cleanup(p: &Placement) {
    for path in &p.created {
        match std::fs::remove_file(path) {
            Ok(()) => removed(path),
            Err(e) => eprintln!(
                "hashkv bench: warning: could not remove {}: {e}",
                path.display()
            ),
        }
    }
    if p.remove_metadata && p.metadata.exists() {
        match std::fs::remove_dir_all(&p.metadata) {
            Ok(()) => removed(&p.metadata),
            Err(e) => eprintln!(
                "hashkv bench: warning: could not remove {}: {e}",
                p.metadata.display()
            ),
        }
    }
}

/// Formats the placement for `run`. A device the user named (a block device or a
/// file this run did not create) is formatted with force only with --force-format, or
/// when this run formatted it already (for an earlier mode): without force, format
/// refuses one that holds data, a hashkv store included.
fn format_store(
    args: &BenchArgs,
    plan: &Plan,
    run: Run,
    p: &Placement,
    formatted_before: &mut Vec<PathBuf>,
) -> StoreResult<Db> {
    let guarded = p
        .devices
        .iter()
        .any(|d| !p.created.contains(d) && !formatted_before.contains(d));
    let force = args.force_format || !guarded;
    let mut options = plan
        .options
        .clone()
        .with_force_format(force)
        .with_hotness(run.hotness);
    options.mode = run.mode;
    let db = Db::format(&p.devices, &p.metadata, &options).map_err(|e| match e {
        hashkv::Error::DeviceNotEmpty { what } => StoreCmdError::Usage(format!(
            "{} holds data ({what}); pass --force-format to overwrite it",
            p.devices
                .iter()
                .map(|d| format!("--device {}", d.display()))
                .collect::<Vec<_>>()
                .join(" ")
        )),
        e => e.into(),
    })?;
    formatted_before.extend(p.devices.iter().cloned());
    Ok(db)
}

fn run_mode(
    args: &BenchArgs,
    plan: &Plan,
    run: Run,
    p: &Placement,
    formatted_before: &mut Vec<PathBuf>,
    rows: &mut Vec<PhaseReport>,
    samples: &mut Vec<Sample>,
) -> StoreResult<()> {
    let db = format_store(args, plan, run, p, formatted_before)?;
    let sb = db.superblock();
    println!(
        "\nmode {}: {} on {} member(s), {}; metadata {}",
        run.label(),
        human_bytes(sb.device_bytes),
        sb.member_count,
        db.describe_value_store(),
        p.metadata.display()
    );
    let target = EngineTarget {
        name: run.label(),
        db,
        devices: p.devices.clone(),
        metadata: p.metadata.clone(),
    };
    let result = run_target(&target, args, plan, rows, samples);
    // Close even after an error or Ctrl-C: flushes what was written and stops GC.
    let closed = target.close();
    result?;
    closed
}

/// The phases of the experiment: load, the update phases, then reads and scans if
/// asked for.
fn phases(args: &BenchArgs, plan: &Plan) -> Vec<(PhaseKind, u64)> {
    let mut phases = vec![(PhaseKind::Load, plan.workload.items)];
    for n in 1..=args.phases {
        if plan.update_ops > 0 {
            phases.push((PhaseKind::Update(n), plan.update_ops));
        }
    }
    if args.read_ops > 0 {
        phases.push((PhaseKind::Read, args.read_ops));
    }
    if args.scan_ops > 0 {
        phases.push((PhaseKind::Scan, args.scan_ops));
    }
    phases
}

/// Runs every phase of the experiment on `target` (an engine mode or a peer), one row
/// per phase; stops at Ctrl-C or at the first error. The caller opens and closes the
/// store.
pub(crate) fn run_target(
    target: &dyn BenchTarget,
    args: &BenchArgs,
    plan: &Plan,
    rows: &mut Vec<PhaseReport>,
    samples: &mut Vec<Sample>,
) -> StoreResult<()> {
    let name = target.name().to_string();
    let mode_start = Instant::now();
    for (kind, ops_total) in phases(args, plan) {
        if stopped() {
            break;
        }
        let bar = ProgressBar::new(ops_total);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>16} {msg:>13} eta {eta:>3} [{wide_bar}] {pos}/{len}",
            )
            .expect("valid progress template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{name} {}", kind.name()));
        let before = target.counters();
        let io_before = read_process_io();
        let threads = match kind {
            PhaseKind::Read => plan.read_threads,
            _ => plan.threads,
        };
        let bracket = plan
            .read_bracket
            .as_ref()
            .filter(|_| kind == PhaseKind::Read);
        let (outcome, fio_around) = bracketed(bracket, || {
            run_phase(
                target,
                kind,
                ops_total,
                threads,
                &plan.workload,
                &STOP,
                &bar,
                mode_start,
                samples,
            )
        });
        bar.finish_and_clear();
        let outcome = outcome?;
        let io = read_process_io().zip(io_before).map(|(a, b)| a.since(b));
        let delta = target.counters().since(&before);
        let mut row = phase_row(&name, kind, &outcome, &delta, io, target.space_bytes());
        if let Ok(around) = fio_around {
            row.fio_read_iops_around = around;
        }
        println!(
            "{:>16}: {} ops in {:.1} s, {:.1} kops/s, {:.1} MiB/s, WA {}, p99 {:.0} us{}",
            format!("{} {}", row.mode, row.phase),
            row.ops,
            row.seconds,
            row.ops_per_sec / 1000.0,
            row.user_mib_per_sec,
            row.write_amp.map_or("-".into(), |w| format!("{w:.2}")),
            row.p99_us,
            if row.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        if let Some([before, after]) = row.fio_read_iops_around {
            println!(
                "{:>16}  fio rand_read_4k_qd32 around it: {before:.0} IOPS before, {after:.0} \
                 after; the phase's ops/s are {:.1}% of their mean",
                "",
                100.0 * row.ops_per_sec / ((before + after) / 2.0).max(1.0)
            );
        }
        if row.cold_log_bytes > 0 || row.demotions > 0 {
            println!(
                "{:>16}  cold log {:.0} MiB ({:.0}% live), {} values demoted, {} promoted, \
                 {} cold GCs, {} GC index lookups",
                "",
                report::mib(row.cold_log_bytes),
                100.0 * row.cold_live_bytes as f64 / row.cold_log_bytes.max(1) as f64,
                row.demotions,
                row.promotions,
                row.cold_gc_runs,
                row.gc_index_lookups
            );
        }
        rows.push(row);
        // A fio run that failed after the phase: the phase's row is kept.
        fio_around?;
    }
    Ok(())
}

/// Runs `phase` between two runs of `bracket`, if given: (the phase's result, the
/// bracket's two results). A bracket that fails after the phase still leaves the
/// phase's result to report.
fn bracketed<R>(
    bracket: Option<&ReadBracket>,
    phase: impl FnOnce() -> StoreResult<R>,
) -> (StoreResult<R>, StoreResult<Option<[f64; 2]>>) {
    let Some(fio) = bracket else {
        return (phase(), Ok(None));
    };
    let before = match fio() {
        Ok(iops) => iops,
        Err(e) => return (Err(e), Ok(None)),
    };
    let result = phase();
    let after = fio().map(|after| Some([before, after]));
    (result, after)
}

/// The report of one phase: its outcome, the store's counters (`delta`) and this
/// process's I/O (`io`) over it, and the store's size after it.
fn phase_row(
    name: &str,
    kind: PhaseKind,
    outcome: &phase::PhaseOutcome,
    delta: &target::StoreCounters,
    io: Option<super::store::ProcessIoBytes>,
    space_bytes: u64,
) -> PhaseReport {
    let user_bytes = outcome.user_write_bytes;
    let user_moved = if kind.writes() {
        user_bytes
    } else {
        outcome.user_read_bytes
    };
    let us = |q: f64| outcome.latency_ns.value_at_quantile(q) as f64 / 1000.0;
    let io_write_bytes = io.map(|io| io.write_bytes);
    let slowest = report::slowest_window(&outcome.ops_per_window, outcome.full_windows);
    PhaseReport {
        mode: name.to_string(),
        phase: kind.name(),
        began_at_seconds: outcome.began_at_seconds,
        ops: outcome.ops,
        seconds: outcome.seconds,
        ops_per_sec: per_sec(outcome.ops as f64, outcome.seconds),
        user_bytes,
        user_read_bytes: outcome.user_read_bytes,
        user_mib_per_sec: per_sec(report::mib(user_moved), outcome.seconds),
        device_write_bytes: delta.device_write_bytes,
        device_read_bytes: delta.device_read_bytes,
        kernel_write_bytes: delta.kernel.map(|k| k.write_bytes),
        kernel_read_bytes: delta.kernel.map(|k| k.read_bytes),
        lsm_write_bytes: delta.lsm_write_bytes,
        write_amp: report::write_amp(delta.device_write_bytes, delta.lsm_write_bytes, user_bytes),
        gc_write_bytes: delta.gc_write_bytes,
        gc_read_bytes: delta.gc_read_bytes,
        gc_runs: delta.gc_runs,
        gc_runs_in_flush: delta.gc_runs_in_flush,
        demotions: delta.demotions,
        promotions: delta.promotions,
        cold_log_bytes: delta.cold_log_bytes,
        cold_live_bytes: delta.cold_live_bytes,
        cold_gc_runs: delta.cold_gc_runs,
        gc_index_lookups: delta.gc_index_lookups,
        space_bytes,
        p50_us: us(0.50),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: outcome.latency_ns.max() as f64 / 1000.0,
        full_windows: outcome.full_windows as u64,
        slowest_window_ops_per_sec: slowest.map(|w| w.ops_per_sec),
        slowest_window_share: slowest.map(|w| w.share),
        ops_per_window: outcome.ops_per_window.clone(),
        io_write_bytes,
        io_read_bytes: io.map(|io| io.read_bytes),
        io_write_amp: report::io_write_amp(io_write_bytes, user_bytes),
        interrupted: outcome.interrupted,
        fio_read_iops_around: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bracket_runs_once_before_and_once_after_its_phase() {
        use std::sync::atomic::AtomicUsize;
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let bracket: ReadBracket =
            Arc::new(move || Ok(1000.0 * (counted.fetch_add(1, Ordering::SeqCst) + 1) as f64));
        let seen = calls.clone();
        let (result, around) = bracketed(Some(&bracket), || {
            assert_eq!(seen.load(Ordering::SeqCst), 1, "the first run comes before");
            Ok(7)
        });
        assert_eq!(
            (result.unwrap(), around.unwrap()),
            (7, Some([1000.0, 2000.0]))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        let (result, around) = bracketed(None, || Ok(8));
        assert_eq!((result.unwrap(), around.unwrap()), (8, None));

        let failing: ReadBracket = Arc::new(|| Err(StoreCmdError::Usage("fio failed".into())));
        let (result, around) = bracketed(Some(&failing), || -> StoreResult<u32> {
            panic!("a phase after a failed bracket")
        });
        assert!(result.is_err() && around.unwrap().is_none());
    }

    #[test]
    fn hotness_settings_multiply_only_the_hashkv_runs() {
        let on_off = ["on".to_string(), "off".to_string(), "on".to_string()];
        let runs = Run::plan(&[Mode::HashKv, Mode::VLog, Mode::Lsm], &on_off);
        let labels: Vec<String> = runs.iter().map(|r| r.label()).collect();
        assert_eq!(labels, ["hashkv+hot", "hashkv", "vlog", "lsm"]);
        assert!(runs[0].hotness);
        assert!(!runs[1].hotness);
        let off = Run::plan(&[Mode::VLog, Mode::HashKv], &["off".to_string()]);
        let labels: Vec<String> = off.iter().map(|r| r.label()).collect();
        assert_eq!(labels, ["vlog", "hashkv"]);
    }

    #[test]
    fn device_size_holds_the_load_with_headroom_and_the_reserve_and_no_more() {
        let options = Options::default();
        let unit = options.main_segment_bytes;
        // 0.1 GiB of 4 KiB values, as records (header, key, value) without padding.
        let small_4k_load = 26_214 * (hashkv::RECORD_HEADER_BYTES + KEY_BYTES + 4096) as u64;
        for live_bytes in [20 << 20, small_4k_load, 1 << 30, 10 << 30] {
            let bytes = device_bytes_for(live_bytes, &options, &[Mode::HashKv]).unwrap();
            assert_eq!(bytes % unit, 0);
            let layout = hashkv::check_device_size(bytes, 4096, &options).unwrap();
            // Room for the records with headroom, excluding the reserved share, and
            // the groups' shares hold the records...
            let needed = (live_bytes as f64 * DEVICE_HEADROOM / (1.0 - options.reserved_share))
                * (1.0 - options.reserved_share);
            let main_bytes = u64::from(layout.group_count) * unit;
            assert!(
                main_bytes as f64 + unit as f64 >= needed,
                "{live_bytes}: {layout:?}"
            );
            assert!(main_bytes >= live_bytes, "{live_bytes}: {layout:?}");
            // ...and not more than a few units beyond the formula (the layout's
            // minimum of 4 units decides for tiny loads; the small 4 KiB load needs
            // one more for its groups to hold it, the reserve being rounded up to
            // whole units).
            let slack = if live_bytes == small_4k_load { 3 } else { 2 };
            let formula_units = (live_bytes as f64 * DEVICE_HEADROOM
                / (1.0 - options.reserved_share)
                / unit as f64)
                .ceil() as u64
                + slack;
            assert!(
                bytes / unit <= formula_units.max(4),
                "{live_bytes}: {bytes}"
            );
        }
    }

    #[test]
    fn device_size_is_one_that_every_mode_of_the_build_formats() {
        let options = Options::default();
        for live_bytes in [1 << 20, 20 << 20, 1 << 30] {
            let bytes = device_bytes_for(live_bytes, &options, Mode::ALL).unwrap();
            let only_hashkv = device_bytes_for(live_bytes, &options, &[Mode::HashKv]).unwrap();
            assert!(bytes >= only_hashkv, "{live_bytes}");
            modes_accept(bytes, &options, Mode::ALL).unwrap();
            // The smallest such size: one main segment less fails some mode (or the
            // hashkv sizing alone decided).
            assert!(
                bytes == only_hashkv
                    || modes_accept(bytes - options.main_segment_bytes, &options, Mode::ALL)
                        .is_err(),
                "{live_bytes}: {bytes}"
            );
        }
    }
}
