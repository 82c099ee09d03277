//! `hashkv devbench`: how fast blockdev's io_uring device drives a file or device with
//! the engine's I/O shapes, next to fio running the same shapes on the same target.
//!
//! Steps: prepare the target (create a file when the path is missing), write the
//! region once so that reads hit allocated blocks (reads of a fresh file's unwritten
//! extents never reach the disk and would flatter both sides), then per shape run ours
//! for half the time, fio's job, and ours for the other half (so slow drift of the
//! device affects both alike), and print one row per shape.

// fio and shape are shared with `hashkv compare`'s fio baseline.
pub(crate) mod fio;
mod load;
mod report;
pub(crate) mod shape;
mod target;

use crate::error::{CliError, CliResult};
use hashkv_blockdev::file::{open_device, DeviceKind, OpenOptions};
use hashkv_blockdev::uring::UringDevice;
use hashkv_blockdev::BlockDevice;
use load::{run_load, LoadSpec, Stop};
use report::{Figures, Machine, Report, ShapeReport, MIB};
use shape::{Pattern, Shape, BLOCK_BYTES_MAX, QUEUE_DEPTH_MAX, SHAPES};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use target::Target;

/// Bytes in a GiB, for --size-gib and the region shown.
const GIB: f64 = (1u64 << 30) as f64;
/// Bytes in a MiB, for the smallest region in error messages.
const MIB_BYTES: u64 = 1 << 20;
/// Region (and created file) size when --size-gib is not given.
const REGION_BYTES_DEFAULT: u64 = 1 << 30;
/// The smallest region: the deepest queue of the largest requests in flight at once
/// must each have a block of their own.
const REGION_BYTES_MIN: u64 = (BLOCK_BYTES_MAX * QUEUE_DEPTH_MAX) as u64;
/// Default time per run: 6 shapes, ours and fio's, come to about 2 minutes.
const SECONDS_PER_RUN_DEFAULT: f64 = 8.0;
/// Default submitting threads for the deep shapes: 4 threads keeping batches of 8.
/// `BlockDevice::submit` blocks until its whole batch is done, so constant depth needs
/// one thread per request, but then every request costs its thread a sleep and a
/// wake-up. Each thread drives its own ring of the device's pool, so no thread hands
/// requests to another. On the 2-vCPU VM this was tuned on, 4 KiB random reads at QD32
/// reached 66k IOPS with 1 x 32, 78k with 2 x 16, 96k with 4 x 8, 82k with 8 x 4 and
/// 72k with 32 x 1 (fio: 92k to 115k on the same file): below 4 threads the drain of a
/// batch costs depth, above it the sleeps and wake-ups cost more on 2 CPUs.
const SUBMITTERS_DEFAULT: usize = 4;
/// Ours runs each shape in this many parts around fio's run (see `measure_shape`).
const PARTS_PER_SHAPE: u32 = 2;
/// The prefill's seed. Shape i's parts take the seeds after `PARTS_PER_SHAPE * i`, so
/// no two runs write the same data at the same offsets.
const PREFILL_SEED: u64 = 0;

#[derive(Debug, clap::Args)]
pub struct DevbenchArgs {
    /// Block device, partition or regular file to measure. A missing path is created
    /// as a regular file of --size-gib and removed afterwards.
    #[arg(long, value_name = "PATH")]
    pub device: PathBuf,

    /// Size of the region measured, from offset 0, in GiB (fractions allowed); also
    /// the size of the file created when --device does not exist.
    /// [default: 1, or the device size if smaller]
    #[arg(long, value_name = "GIB")]
    pub size_gib: Option<f64>,

    /// Run time of each shape, for ours and for fio's each.
    #[arg(long, value_name = "S", default_value_t = SECONDS_PER_RUN_DEFAULT)]
    pub seconds: f64,

    /// Threads that keep a deep shape's requests in flight; each submits batches of
    /// queue-depth/threads requests and refills when its batch is done (a divisor of
    /// 32; 32 = one request per thread: exactly constant depth, but a thread wake-up
    /// per request).
    #[arg(long, value_name = "N", default_value_t = SUBMITTERS_DEFAULT)]
    pub threads: usize,

    /// Allow overwriting an existing file or device.
    #[arg(long)]
    pub force: bool,

    /// Measure only this shape (repeatable). [default: all]
    #[arg(long = "shape", value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(SHAPES.map(|s| s.name)))]
    pub shapes: Vec<String>,

    /// Do not run fio even if it is installed.
    #[arg(long)]
    pub no_fio: bool,

    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

pub fn run(args: &DevbenchArgs) -> CliResult<()> {
    let settings = Settings::check(args)?;
    let fio = if args.no_fio { None } else { fio::find_fio() };
    let fio_version = fio.as_deref().and_then(fio::version);

    let target = Target::prepare(
        &args.device,
        settings
            .requested_region_bytes
            .unwrap_or(REGION_BYTES_DEFAULT),
        args.force,
    )?;
    let open_options = OpenOptions {
        // Room for the deepest queue of the largest requests, so that every buffer of
        // every shape is a registered one (when registration is allowed).
        fixed_buffer_arena_bytes: BLOCK_BYTES_MAX * QUEUE_DEPTH_MAX,
        ..OpenOptions::default()
    };
    let device = open_device(&target.path, &open_options)?;
    let geometry = device.geometry();
    let region_bytes = measured_region_bytes(
        &target.path,
        geometry.size_bytes,
        settings.requested_region_bytes,
    )?;
    let kind = match device.kind() {
        DeviceKind::BlockDevice => "block device",
        DeviceKind::RegularFile => "regular file",
    };
    let mut report = Report {
        device: target.path.display().to_string(),
        device_kind: kind.to_string(),
        region_bytes,
        logical_block_bytes: geometry.logical_block_bytes,
        seconds_per_run: args.seconds,
        fixed_buffers: device.fixed_buffers_registered(),
        machine: Machine::probe(),
        fio_version,
        shapes: Vec::new(),
    };
    print_intro(
        &report,
        target.created,
        device.fixed_buffers_unavailable(),
        args.no_fio,
    );

    prefill(&device, region_bytes)?;
    let scratch_dir = tempfile::tempdir().map_err(|source| CliError::Io {
        path: std::env::temp_dir(),
        action: "creating a directory for fio's job files",
        source,
    })?;
    let bench = Bench {
        device: &device,
        target: &target.path,
        region_bytes,
        run_time: settings.run_time,
        threads: args.threads,
        fio: fio.as_deref(),
        scratch_dir: scratch_dir.path(),
    };
    report.shapes = measure_shapes(&bench, &settings.shapes)?;
    if fio.is_none() && !args.no_fio {
        println!("fio is missing: no fio on PATH, so only our figures are shown; install it with `apt-get install fio` to compare");
    }
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    drop(device);
    drop(target);
    Ok(())
}

/// What the command line asks for, checked before anything is created or opened.
struct Settings {
    /// The region --size-gib asks for, in whole largest requests.
    requested_region_bytes: Option<u64>,
    /// The shapes to measure, in the order they run.
    shapes: Vec<Shape>,
    /// Time per shape for ours, and for fio's.
    run_time: Duration,
}

impl Settings {
    fn check(args: &DevbenchArgs) -> CliResult<Settings> {
        if !(args.seconds.is_finite() && args.seconds > 0.0) {
            return Err(CliError::Usage(format!(
                "--seconds {} must be a positive number",
                args.seconds
            )));
        }
        let requested_region_bytes = requested_region_bytes(args.size_gib)?;
        if args.threads == 0 || !QUEUE_DEPTH_MAX.is_multiple_of(args.threads) {
            return Err(CliError::Usage(format!(
                "--threads {} must divide the queue depth {QUEUE_DEPTH_MAX}",
                args.threads
            )));
        }
        let shapes = SHAPES
            .into_iter()
            .filter(|s| args.shapes.is_empty() || args.shapes.iter().any(|n| n == s.name))
            .collect();
        Ok(Settings {
            requested_region_bytes,
            shapes,
            run_time: Duration::from_secs_f64(args.seconds),
        })
    }
}

/// `bytes` rounded down to whole largest requests, so that every shape's requests stay
/// in the region.
fn whole_largest_requests(bytes: u64) -> u64 {
    bytes / BLOCK_BYTES_MAX as u64 * BLOCK_BYTES_MAX as u64
}

/// The region --size-gib asks for, if given: refused unless positive and at least
/// [`REGION_BYTES_MIN`].
fn requested_region_bytes(size_gib: Option<f64>) -> CliResult<Option<u64>> {
    match size_gib {
        None => Ok(None),
        Some(gib) if gib.is_finite() && gib > 0.0 => {
            let bytes = whole_largest_requests((gib * GIB) as u64);
            if bytes < REGION_BYTES_MIN {
                return Err(CliError::Usage(format!(
                    "--size-gib {gib} is below the smallest region, {} MiB",
                    REGION_BYTES_MIN / MIB_BYTES
                )));
            }
            Ok(Some(bytes))
        }
        Some(gib) => Err(CliError::Usage(format!(
            "--size-gib {gib} must be a positive number"
        ))),
    }
}

/// The region measured on a target of `size_bytes`: the one asked for, which must fit,
/// else the default or the whole target if smaller; never below [`REGION_BYTES_MIN`].
fn measured_region_bytes(path: &Path, size_bytes: u64, requested: Option<u64>) -> CliResult<u64> {
    let region_bytes = match requested {
        Some(bytes) if bytes > size_bytes => {
            return Err(CliError::Usage(format!(
                "--size-gib asks for {bytes} bytes but {} holds only {size_bytes} bytes",
                path.display(),
            )))
        }
        Some(bytes) => bytes,
        None => REGION_BYTES_DEFAULT.min(whole_largest_requests(size_bytes)),
    };
    if region_bytes < REGION_BYTES_MIN {
        return Err(CliError::Usage(format!(
            "{} holds {size_bytes} bytes, less than the smallest region, {} MiB",
            path.display(),
            REGION_BYTES_MIN / MIB_BYTES
        )));
    }
    Ok(region_bytes)
}

/// The two lines above the table: the target and the run, the machine and both sides.
fn print_intro(
    report: &Report,
    created: bool,
    fixed_buffers_unavailable: Option<&str>,
    no_fio: bool,
) {
    println!(
        "hashkv devbench: {} ({}{}), region {:.2} GiB, logical block {} B, {} s per run",
        report.device,
        report.device_kind,
        if created {
            ", created for this run"
        } else {
            ""
        },
        report.region_bytes as f64 / GIB,
        report.logical_block_bytes,
        report.seconds_per_run
    );
    let machine = &report.machine;
    println!(
        "machine: {} (Linux {}, {} CPUs); ours: blockdev io_uring, {} fixed buffers{}; fio: {}",
        machine.hostname,
        machine.kernel,
        machine.cpus,
        if report.fixed_buffers {
            "with"
        } else {
            "without"
        },
        fixed_buffers_unavailable.map_or(String::new(), |why| format!(" ({why})")),
        report.fio_version.as_deref().unwrap_or(if no_fio {
            "skipped (--no-fio)"
        } else {
            "not found"
        })
    );
}

/// Writes the region once, so that reads hit allocated blocks: the deepest queue of the
/// largest sequential writes, one request per thread.
fn prefill(device: &UringDevice, region_bytes: u64) -> CliResult<()> {
    eprint!("writing the region once so that reads find allocated blocks ... ");
    let prefill = run_load(
        device,
        |len_bytes: usize| device.alloc_buffer(len_bytes),
        &LoadSpec {
            pattern: Pattern::SeqWrite,
            block_bytes: BLOCK_BYTES_MAX,
            submitters: QUEUE_DEPTH_MAX,
            batch_ops: 1,
            region_bytes,
            stop: Stop::OnePass,
            seed: PREFILL_SEED,
        },
    )?;
    device.flush()?;
    eprintln!("{:.0} MiB/s", prefill.bytes_per_s() / MIB);
    Ok(())
}

/// What every shape's measurement runs on.
struct Bench<'a> {
    device: &'a UringDevice,
    /// The target's path, for fio.
    target: &'a Path,
    region_bytes: u64,
    /// Time per shape for ours (in `PARTS_PER_SHAPE` parts), and for fio's.
    run_time: Duration,
    /// --threads: submitters for the deep shapes.
    threads: usize,
    /// fio, when it runs.
    fio: Option<&'a Path>,
    /// Where fio's job files are written.
    scratch_dir: &'a Path,
}

/// Measures every shape in turn, printing the table as rows come in.
fn measure_shapes(bench: &Bench<'_>, shapes: &[Shape]) -> CliResult<Vec<ShapeReport>> {
    println!("{}", report::table_header());
    let mut rows = Vec::with_capacity(shapes.len());
    for (index, shape) in shapes.iter().enumerate() {
        let row = measure_shape(bench, index, shape)?;
        println!("{}", report::table_row(&row));
        let _ = std::io::stdout().flush();
        rows.push(row);
    }
    println!("(MiB/s and IOPS count reads and writes; p99: total latency of the main direction, reads for read and mixed shapes)");
    Ok(rows)
}

/// Runs ours in two halves around fio's run, so that a device whose speed drifts (a
/// host cache filling or draining after the previous shape's writes) weighs on both
/// sides alike instead of on whichever runs first.
fn measure_shape(bench: &Bench<'_>, index: usize, shape: &Shape) -> CliResult<ShapeReport> {
    let device = bench.device;
    let alloc = |len_bytes: usize| device.alloc_buffer(len_bytes);
    let submitters = if shape.queue_depth == 1 {
        1
    } else {
        bench.threads.min(shape.queue_depth)
    };
    let batch_ops = shape.queue_depth / submitters;
    let spec = LoadSpec {
        pattern: shape.pattern,
        block_bytes: shape.block_bytes,
        submitters,
        batch_ops,
        region_bytes: bench.region_bytes,
        stop: Stop::After(bench.run_time / PARTS_PER_SHAPE),
        seed: u64::from(PARTS_PER_SHAPE) * index as u64 + PREFILL_SEED + 1,
    };
    let mut ours = run_load(device, alloc, &spec)?;
    // Written data reaches the device before the next run starts, not during it.
    device.flush()?;
    let fio_figures = match bench.fio {
        Some(fio) => {
            let result = fio::run_job(
                fio,
                shape,
                bench.target,
                bench.region_bytes,
                bench.run_time,
                bench.scratch_dir,
                &[],
            )?;
            Some(Figures::from_fio(shape, &result))
        }
        None => None,
    };
    let second_half = LoadSpec {
        seed: spec.seed + 1,
        ..spec
    };
    ours.add(&run_load(device, alloc, &second_half)?);
    device.flush()?;
    let ours_figures = Figures::from_ours(shape, &ours);
    let ratio = fio_figures
        .filter(|f| f.mib_per_s > 0.0)
        .map(|f| ours_figures.mib_per_s / f.mib_per_s);
    Ok(ShapeReport {
        shape: shape.name,
        block_bytes: shape.block_bytes,
        queue_depth: shape.queue_depth,
        submitters,
        batch_ops,
        ours: ours_figures,
        ours_read_ops: ours.read.ops,
        ours_write_ops: ours.write.ops,
        ours_elapsed_s: ours.elapsed.as_secs_f64(),
        fio: fio_figures,
        ratio,
    })
}

fn write_json(path: &Path, report: &Report) -> CliResult<()> {
    let text = serde_json::to_string_pretty(report).expect("the report serialises");
    std::fs::write(path, text + "\n").map_err(|source| CliError::Io {
        path: path.to_path_buf(),
        action: "writing the JSON report",
        source,
    })
}
