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
use hashkv_blockdev::BlockDevice;
use load::{run_load, LoadSpec, Stop};
use report::{Figures, Machine, Report, ShapeReport};
use shape::{Pattern, Shape, BLOCK_BYTES_MAX, QUEUE_DEPTH_MAX, SHAPES};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;
use target::Target;

const GIB: f64 = (1u64 << 30) as f64;
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
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err(CliError::Usage(format!(
            "--seconds {} must be a positive number",
            args.seconds
        )));
    }
    let requested_region_bytes = match args.size_gib {
        None => None,
        Some(gib) if gib.is_finite() && gib > 0.0 => {
            // Whole largest requests only, so every shape's requests stay in range.
            let bytes = (gib * GIB) as u64 / BLOCK_BYTES_MAX as u64 * BLOCK_BYTES_MAX as u64;
            if bytes < REGION_BYTES_MIN {
                return Err(CliError::Usage(format!(
                    "--size-gib {gib} is below the smallest region, {} MiB",
                    REGION_BYTES_MIN >> 20
                )));
            }
            Some(bytes)
        }
        Some(gib) => {
            return Err(CliError::Usage(format!(
                "--size-gib {gib} must be a positive number"
            )))
        }
    };
    if args.threads == 0 || QUEUE_DEPTH_MAX % args.threads != 0 {
        return Err(CliError::Usage(format!(
            "--threads {} must divide the queue depth {QUEUE_DEPTH_MAX}",
            args.threads
        )));
    }
    let shapes: Vec<Shape> = SHAPES
        .into_iter()
        .filter(|s| args.shapes.is_empty() || args.shapes.iter().any(|n| n == s.name))
        .collect();
    let run_time = Duration::from_secs_f64(args.seconds);

    let fio = if args.no_fio { None } else { fio::find_fio() };
    let fio_version = fio.as_deref().and_then(fio::version);

    let target = Target::prepare(
        &args.device,
        requested_region_bytes.unwrap_or(REGION_BYTES_DEFAULT),
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
    let region_bytes = match requested_region_bytes {
        Some(bytes) if bytes > geometry.size_bytes => {
            return Err(CliError::Usage(format!(
                "--size-gib asks for {bytes} bytes but {} holds only {} bytes",
                target.path.display(),
                geometry.size_bytes
            )))
        }
        Some(bytes) => bytes,
        None => REGION_BYTES_DEFAULT
            .min(geometry.size_bytes / BLOCK_BYTES_MAX as u64 * BLOCK_BYTES_MAX as u64),
    };
    if region_bytes < REGION_BYTES_MIN {
        return Err(CliError::Usage(format!(
            "{} holds {} bytes, less than the smallest region, {} MiB",
            target.path.display(),
            geometry.size_bytes,
            REGION_BYTES_MIN >> 20
        )));
    }
    let kind = match device.kind() {
        DeviceKind::BlockDevice => "block device",
        DeviceKind::RegularFile => "regular file",
    };
    let machine = Machine::probe();
    println!(
        "hashkv devbench: {} ({kind}{}), region {:.2} GiB, logical block {} B, {} s per run",
        target.path.display(),
        if target.created {
            ", created for this run"
        } else {
            ""
        },
        region_bytes as f64 / GIB,
        geometry.logical_block_bytes,
        args.seconds
    );
    println!(
        "machine: {} (Linux {}, {} CPUs); ours: blockdev io_uring, {} fixed buffers{}; fio: {}",
        machine.hostname,
        machine.kernel,
        machine.cpus,
        if device.fixed_buffers_registered() {
            "with"
        } else {
            "without"
        },
        device
            .fixed_buffers_unavailable()
            .map_or(String::new(), |why| format!(" ({why})")),
        fio_version.as_deref().unwrap_or(if args.no_fio {
            "skipped (--no-fio)"
        } else {
            "not found"
        })
    );

    let alloc = |len_bytes: usize| device.alloc_buffer(len_bytes);
    eprint!("writing the region once so that reads find allocated blocks ... ");
    let prefill = run_load(
        &*device,
        alloc,
        &LoadSpec {
            pattern: Pattern::SeqWrite,
            block_bytes: BLOCK_BYTES_MAX,
            submitters: QUEUE_DEPTH_MAX,
            batch_ops: 1,
            region_bytes,
            stop: Stop::OnePass,
            seed: 0,
        },
    )?;
    device.flush()?;
    eprintln!("{:.0} MiB/s", prefill.bytes_per_s() / (1u64 << 20) as f64);

    let scratch_dir = tempfile::tempdir().map_err(|source| CliError::Io {
        path: std::env::temp_dir(),
        action: "creating a directory for fio's job files",
        source,
    })?;
    println!("{}", report::table_header());
    let mut rows = Vec::with_capacity(shapes.len());
    for (index, shape) in shapes.iter().enumerate() {
        let submitters = if shape.queue_depth == 1 {
            1
        } else {
            args.threads.min(shape.queue_depth)
        };
        let batch_ops = shape.queue_depth / submitters;
        let spec = LoadSpec {
            pattern: shape.pattern,
            block_bytes: shape.block_bytes,
            submitters,
            batch_ops,
            region_bytes,
            stop: Stop::After(run_time / 2),
            seed: 2 * index as u64 + 1,
        };
        // Ours runs in two halves around fio's run, so that a device whose speed drifts
        // (a host cache filling or draining after the previous shape's writes) weighs
        // on both sides alike instead of on whichever runs first.
        let mut ours = run_load(&*device, alloc, &spec)?;
        // Written data reaches the device before the next run starts, not during it.
        device.flush()?;
        let fio_figures = match &fio {
            Some(fio) => {
                let result = fio::run_job(
                    fio,
                    shape,
                    &target.path,
                    region_bytes,
                    run_time,
                    scratch_dir.path(),
                )?;
                Some(Figures::from_fio(shape, &result))
            }
            None => None,
        };
        let second_half = LoadSpec {
            seed: spec.seed + 1,
            ..spec
        };
        ours.add(&run_load(&*device, alloc, &second_half)?);
        device.flush()?;
        let ours_figures = Figures::from_ours(shape, &ours);
        let ratio = fio_figures
            .filter(|f| f.mib_per_s > 0.0)
            .map(|f| ours_figures.mib_per_s / f.mib_per_s);
        let row = ShapeReport {
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
        };
        println!("{}", report::table_row(&row));
        let _ = std::io::stdout().flush();
        rows.push(row);
    }
    println!("(MiB/s and IOPS count reads and writes; p99: total latency of the main direction, reads for read and mixed shapes)");
    if fio.is_none() && !args.no_fio {
        println!("fio is missing: no fio on PATH, so only our figures are shown; install it with `apt-get install fio` to compare");
    }

    let report = Report {
        device: target.path.display().to_string(),
        device_kind: kind.to_string(),
        region_bytes,
        logical_block_bytes: geometry.logical_block_bytes,
        seconds_per_run: args.seconds,
        fixed_buffers: device.fixed_buffers_registered(),
        machine,
        fio_version,
        shapes: rows,
    };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).expect("the report serialises");
        std::fs::write(path, text + "\n").map_err(|source| CliError::Io {
            path: path.clone(),
            action: "writing the JSON report",
            source,
        })?;
    }
    drop(device);
    drop(target);
    Ok(())
}
