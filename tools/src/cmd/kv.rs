//! `hashkv format`, `stat`, `get`, `put`, `delete` and `scan`: one store operation per
//! invocation, for scripting and inspection.
//!
//! Opening needs the format-time parameters (mode, segment sizes); they are read from
//! the devices' superblock with `Db::probe`, so the user names only the devices and the
//! metadata directory.

use super::store::{dir_disk_bytes, human_bytes, io_error, StoreCmdError, StoreResult};
use hashkv::{Db, Mode, Options};
use std::io::Write as _;
use std::ops::Bound;
use std::path::PathBuf;

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;
const GIB: f64 = (1u64 << 30) as f64;

/// Where a store lives.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Device or file of the store (repeat for every member of a stripe, in order).
    #[arg(long = "device", value_name = "PATH", required = true)]
    pub devices: Vec<PathBuf>,

    /// Metadata (LSM tree) directory of the store.
    #[arg(long, value_name = "DIR")]
    pub metadata: PathBuf,
}

impl StoreArgs {
    /// Opens the store with the parameters its superblock names.
    fn open(&self) -> StoreResult<Db> {
        let superblock = Db::probe(&self.devices)?;
        let options = Options::default().matching(&superblock);
        Ok(Db::open(&self.devices, &self.metadata, &options)?)
    }
}

#[derive(Debug, clap::Args)]
pub struct FormatArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Engine mode recorded on the device.
    #[arg(long, value_name = "NAME", default_value = "hashkv")]
    pub mode: String,

    /// Overwrite devices and a metadata directory that hold data.
    #[arg(long)]
    pub force: bool,

    /// Main segment size in MiB (also the stripe unit).
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub main_segment_mib: u64,

    /// Log segment size in KiB (also bounds the largest record).
    #[arg(long, value_name = "KIB", default_value_t = 1024)]
    pub log_segment_kib: u64,

    /// Share of the value space reserved for log segments.
    #[arg(long, value_name = "F", default_value_t = 0.30)]
    pub reserve: f64,

    /// Create the (single) device as a file of this many GiB if it does not exist.
    #[arg(long, value_name = "GIB")]
    pub create_gib: Option<f64>,
}

pub fn format(args: &FormatArgs) -> StoreResult<()> {
    let mode = Mode::from_name(&args.mode).map_err(StoreCmdError::Usage)?;
    let mut options = Options::default()
        .with_main_segment_bytes(args.main_segment_mib * MIB)
        .with_log_segment_bytes(args.log_segment_kib * KIB)
        .with_reserved_share(args.reserve)
        .with_force_format(args.force);
    options.mode = mode;
    if let Some(gib) = args.create_gib {
        if args.store.devices.len() != 1 {
            return Err(StoreCmdError::Usage(
                "--create-gib creates a single device file; name one --device".into(),
            ));
        }
        if !(gib > 0.0 && gib.is_finite()) {
            return Err(StoreCmdError::Usage(format!(
                "--create-gib {gib} must be positive"
            )));
        }
        // Files are created in whole 4 KiB blocks (O_DIRECT alignment).
        let bytes = ((gib * GIB) as u64).div_ceil(4096) * 4096;
        options = options.with_create_device_bytes(Some(bytes));
    }
    let db =
        Db::format(&args.store.devices, &args.store.metadata, &options).map_err(|e| match e {
            hashkv::Error::DeviceNotEmpty { what } => StoreCmdError::Usage(format!(
                "refusing to format: {what}; pass --force to overwrite"
            )),
            e => e.into(),
        })?;
    print_superblock(&db);
    db.close()?;
    Ok(())
}

fn print_superblock(db: &Db) {
    let sb = db.superblock();
    let l = sb.layout;
    let uuid: String = sb.stripe_uuid.iter().map(|b| format!("{b:02x}")).collect();
    println!("format version   {}", sb.format_version);
    println!("mode             {}", sb.mode.name());
    println!("stripe uuid      {uuid}");
    println!("members          {}", sb.member_count);
    println!(
        "device bytes     {} ({})",
        sb.device_bytes,
        human_bytes(sb.device_bytes)
    );
    println!("block bytes      {}", l.block_bytes);
    println!("main segment     {} bytes", l.main_segment_bytes);
    println!("log segment      {} bytes", l.log_segment_bytes);
    println!("value store      {}", db.describe_value_store());
    // The hashkv layout's details; the other modes use the same regions differently.
    if sb.mode == hashkv::Mode::HashKv {
        println!("groups           {}", l.group_count);
        println!("main slots       {} (groups + spares)", l.main_slot_count);
        println!("log segments     {}", l.log_segment_count);
        println!("main region at   {}", l.main_region_offset);
        println!("log region at    {}", l.log_region_offset);
        println!("value capacity   {}", human_bytes(l.value_capacity_bytes()));
    }
}

/// Groups listed one per line by `stat`; beyond this only a summary.
const STAT_GROUPS_LISTED_MAX: usize = 64;

/// The cold data log and each group's hot and cold bytes (hashkv mode).
fn print_hot_and_cold(db: &hashkv::Db, s: &hashkv::Stats) {
    let live_share = if s.cold_log_bytes == 0 {
        0.0
    } else {
        100.0 * s.cold_live_bytes as f64 / s.cold_log_bytes as f64
    };
    println!(
        "cold log         {} in use, {live_share:.1}% live",
        human_bytes(s.cold_log_bytes)
    );
    let groups = db.group_usage();
    let demotions: u64 = groups.iter().map(|g| g.demotions).sum();
    let promotions: u64 = groups.iter().map(|g| g.promotions).sum();
    println!("demotions        {demotions} (values moved to the cold log since format)");
    println!("promotions       {promotions} (cold keys updates brought back)");
    let hot: u64 = groups.iter().map(|g| g.chain_bytes).sum();
    let cold: u64 = groups.iter().map(|g| g.cold_bytes).sum();
    println!(
        "groups           {} hot (in chains), {} cold (as of each group's last GC)",
        human_bytes(hot),
        human_bytes(cold)
    );
    if groups.len() <= STAT_GROUPS_LISTED_MAX {
        for (g, u) in groups.iter().enumerate() {
            println!(
                "  group {g:<5}    hot {:>10}  cold {:>10}",
                human_bytes(u.chain_bytes),
                human_bytes(u.cold_bytes)
            );
        }
    }
}

pub fn stat(args: &StoreArgs) -> StoreResult<()> {
    let db = args.open()?;
    print_superblock(&db);
    let s = db.stats();
    println!(
        "value bytes used {} ({})",
        s.value_bytes_used,
        human_bytes(s.value_bytes_used)
    );
    match db.superblock().mode {
        hashkv::Mode::HashKv => println!(
            "free log segs    {} of {}",
            s.free_log_segments, s.log_segments
        ),
        hashkv::Mode::VLog => println!(
            "free log chunks  {} of {}",
            s.free_log_segments, s.log_segments
        ),
        hashkv::Mode::Lsm => {}
    }
    if db.superblock().mode == hashkv::Mode::HashKv {
        print_hot_and_cold(&db, &s);
    }
    let meta_bytes = dir_disk_bytes(&args.metadata);
    println!(
        "metadata dir     {} ({})",
        args.metadata.display(),
        human_bytes(meta_bytes)
    );
    // Counters start at open; what they show here is the cost of opening (recovery).
    println!(
        "opened with      {} bytes read, {} bytes written on the devices",
        s.device_bytes_read(),
        s.device_bytes_written()
    );
    db.close()?;
    Ok(())
}

/// How keys and values are printed.
#[derive(Debug, clap::Args)]
pub struct OutputArgs {
    /// Print keys and values as hex instead of (lossy) UTF-8.
    #[arg(long)]
    pub hex: bool,
}

impl OutputArgs {
    fn show(&self, bytes: &[u8]) -> String {
        if self.hex {
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        } else {
            String::from_utf8_lossy(bytes).into_owned()
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    pub key: String,
}

/// Prints the value; a missing key is an error (exit status 1), so scripts can tell
/// it from an empty value.
pub fn get(args: &GetArgs) -> StoreResult<()> {
    let db = args.store.open()?;
    let value = db.get(args.key.as_bytes())?;
    db.close()?;
    match value {
        Some(v) => {
            println!("{}", args.output.show(&v));
            Ok(())
        }
        None => Err(StoreCmdError::KeyNotFound {
            key: args.key.clone(),
        }),
    }
}

#[derive(Debug, clap::Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    pub key: String,
    /// The value (UTF-8 text); or use --value-file.
    #[arg(required_unless_present = "value_file", conflicts_with = "value_file")]
    pub value: Option<String>,
    /// Read the value's bytes from this file ("-" for standard input).
    #[arg(long, value_name = "FILE")]
    pub value_file: Option<PathBuf>,
}

/// Writes the value durably (close flushes) before returning.
pub fn put(args: &PutArgs) -> StoreResult<()> {
    let value = match (&args.value, &args.value_file) {
        (Some(v), _) => v.as_bytes().to_vec(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .map_err(io_error(path, "reading the value from standard input"))?;
            buf
        }
        (None, Some(path)) => {
            std::fs::read(path).map_err(io_error(path, "reading the value file"))?
        }
        (None, None) => unreachable!("clap requires a value or --value-file"),
    };
    let db = args.store.open()?;
    db.put(args.key.as_bytes(), &value)?;
    db.close()?;
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    pub key: String,
}

/// Deletes durably; deleting a missing key is not an error (as in the engine).
pub fn delete(args: &DeleteArgs) -> StoreResult<()> {
    let db = args.store.open()?;
    db.delete(args.key.as_bytes())?;
    db.close()?;
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// First key (inclusive). [default: the smallest]
    #[arg(long, value_name = "KEY")]
    pub from: Option<String>,
    /// End key (exclusive). [default: past the largest]
    #[arg(long, value_name = "KEY")]
    pub to: Option<String>,
    /// At most this many pairs.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// Prints `key<TAB>value` lines in key order.
pub fn scan(args: &ScanArgs) -> StoreResult<()> {
    let db = args.store.open()?;
    let lower = args
        .from
        .as_ref()
        .map_or(Bound::Unbounded, |k| Bound::Included(k.as_bytes()));
    let upper = args
        .to
        .as_ref()
        .map_or(Bound::Unbounded, |k| Bound::Excluded(k.as_bytes()));
    let limit = args.limit.unwrap_or(usize::MAX);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = (|| -> StoreResult<()> {
        for item in db.scan(lower, upper)?.take(limit) {
            let (k, v) = item?;
            let line = format!("{}\t{}", args.output.show(&k), args.output.show(&v));
            if writeln!(out, "{line}").is_err() {
                // The reader went away (e.g. `| head`): stop quietly.
                break;
            }
        }
        Ok(())
    })();
    let _ = out.flush();
    drop(out);
    db.close()?;
    result
}

/// Checks the whole store (`Db::check`): every record the value store counts as
/// written decodes with a valid checksum and lies in its key's group (or the log's
/// live part); the segment table's chains are consistent (checked at open); every
/// index entry decodes and every location names a record that reads back with the key
/// and sequence number the index expects. Prints what it checked and each damage
/// found; exits non-zero when there is any.
pub fn fsck(args: &StoreArgs) -> StoreResult<()> {
    let db = args.open()?;
    let report = db.check()?;
    let stats = db.stats();
    db.close()?;
    println!("keys             {}", report.keys);
    println!("inline values    {}", report.inline_values);
    println!("records pointed  {}", report.pointers);
    println!(
        "records scanned  {} ({})",
        report.records_scanned,
        human_bytes(report.record_bytes_scanned)
    );
    println!(
        "device bytes read {} ({})",
        stats.device_bytes_read(),
        human_bytes(stats.device_bytes_read())
    );
    if report.is_clean() {
        println!("ok: every checksum, location and segment-table entry matches");
        return Ok(());
    }
    for d in &report.damage {
        eprintln!("damage: {d}");
    }
    if report.damage_count > report.damage.len() as u64 {
        eprintln!(
            "damage: ... and {} more",
            report.damage_count - report.damage.len() as u64
        );
    }
    Err(StoreCmdError::Damaged {
        count: report.damage_count,
        first: report.damage.first().cloned().unwrap_or_default(),
    })
}
