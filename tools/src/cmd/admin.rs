//! `hashkv format`, `stat` and `fsck`: making a store, describing it, checking it.

use super::explain::{check_distinct_devices, Doing};
use super::kv::StoreArgs;
use super::store::{dir_disk_bytes, human_bytes, StoreCmdError, StoreResult};
use hashkv::MAIN_SEGMENT_BYTES_MIN;
use hashkv::{Db, Mode, Options};

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;
const GIB: f64 = (1u64 << 30) as f64;
/// Log segments are whole 4 KiB blocks (the value store's alignment).
const LOG_SEGMENT_KIB_STEP: u64 = 4;
/// The largest log segment: its size is a u32 in the engine's records.
const LOG_SEGMENT_KIB_MAX: u64 =
    (u32::MAX as u64 / KIB) / LOG_SEGMENT_KIB_STEP * LOG_SEGMENT_KIB_STEP;
/// The largest main segment the engine accepts (1 TiB).
const MAIN_SEGMENT_MIB_MAX: u64 = 1 << 20;
/// The reserved share lies strictly between these (the engine's range).
const RESERVE_RANGE: (f64, f64) = (0.0, 0.95);

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

    /// Log segment size in KiB, a multiple of 4 (also bounds the largest record).
    #[arg(long, value_name = "KIB", default_value_t = 1024)]
    pub log_segment_kib: u64,

    /// Share of the value space reserved for log segments, between 0 and 0.95.
    #[arg(long, value_name = "F", default_value_t = 0.30)]
    pub reserve: f64,

    /// Create the (single) device as a file of this many GiB if it does not exist.
    #[arg(long, value_name = "GIB")]
    pub create_gib: Option<f64>,
}

impl FormatArgs {
    /// The options the flags describe, each flag checked against its range.
    fn options(&self) -> StoreResult<Options> {
        let usage = |m: String| Err(StoreCmdError::Usage(m));
        let mode = Mode::from_name(&self.mode)
            .map_err(|e| StoreCmdError::Usage(format!("--mode: {e}")))?;
        let (main, log) = (self.main_segment_mib, self.log_segment_kib);
        if !(1..=MAIN_SEGMENT_MIB_MAX).contains(&main) {
            return usage(format!(
                "--main-segment-mib {main} must lie in 1..={MAIN_SEGMENT_MIB_MAX}"
            ));
        }
        if !(LOG_SEGMENT_KIB_STEP..=LOG_SEGMENT_KIB_MAX).contains(&log)
            || log % LOG_SEGMENT_KIB_STEP != 0
        {
            return usage(format!(
                "--log-segment-kib {log} must be a multiple of {LOG_SEGMENT_KIB_STEP} in \
                 {LOG_SEGMENT_KIB_STEP}..={LOG_SEGMENT_KIB_MAX}"
            ));
        }
        if !(main * MIB).is_multiple_of(log * KIB) {
            return usage(format!(
                "--main-segment-mib {main} must be a whole multiple of --log-segment-kib {log} \
                 (a main segment holds whole log segments)"
            ));
        }
        let (low, high) = RESERVE_RANGE;
        if !(self.reserve > low && self.reserve < high) {
            return usage(format!(
                "--reserve {} must lie between {low} and {high} (exclusive): the share of the \
                 value space kept for log segments",
                self.reserve
            ));
        }
        debug_assert!(main * MIB >= MAIN_SEGMENT_BYTES_MIN);
        let mut options = Options::default()
            .with_main_segment_bytes(main * MIB)
            .with_log_segment_bytes(log * KIB)
            .with_reserved_share(self.reserve)
            .with_force_format(self.force);
        options.mode = mode;
        if let Some(gib) = self.create_gib {
            if self.store.devices.len() != 1 {
                return usage(
                    "--create-gib creates a single device file; name one --device".into(),
                );
            }
            if !(gib > 0.0 && gib.is_finite()) {
                return usage(format!("--create-gib {gib} must be positive"));
            }
            // Files are created in whole 4 KiB blocks (O_DIRECT alignment).
            let bytes = ((gib * GIB) as u64).div_ceil(4096) * 4096;
            options = options.with_create_device_bytes(Some(bytes));
        }
        Ok(options)
    }
}

/// Formats the store; a format that fails removes what it created, and one that was
/// interrupted (killed) is redone without --force.
pub fn format(args: &FormatArgs) -> StoreResult<()> {
    let options = args.options()?;
    check_distinct_devices(&args.store.devices)?;
    let db = Db::format(&args.store.devices, &args.store.metadata, &options)
        .map_err(|e| args.store.explain(e, Doing::Format))?;
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
    println!(
        "main segment     {} bytes (stripe unit, a group's share)",
        l.main_segment_bytes
    );
    println!("log segment      {} bytes", l.log_segment_bytes);
    println!("value store      {}", db.describe_value_store());
    // The hashkv layout's details; the other modes use the same regions differently.
    if sb.mode == hashkv::Mode::HashKv {
        println!("groups           {}", l.group_count);
        println!("pool segments    {}", l.log_segment_count);
        println!("  reserved       {}", l.reserve_segment_count());
        println!("pool at          {}", l.log_region_offset);
        println!("value capacity   {}", human_bytes(l.value_capacity_bytes()));
        let holds = db.value_capacity_bytes();
        if holds < l.value_capacity_bytes() {
            println!(
                "  chains hold    {} (their limits end the room first)",
                human_bytes(holds)
            );
        }
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

#[derive(Debug, clap::Args)]
pub struct FsckArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Rewrite a damaged or missing superblock copy from its valid twin, and a damaged
    /// or missing stripe member header from the superblock (members in the order
    /// given). Records and index entries are never changed.
    #[arg(long)]
    pub repair: bool,
}

/// Checks the whole store. First, on their own, both superblock copies and every
/// stripe member's header (`Db::check_headers`; with --repair, damaged ones are
/// rewritten). Then the store is opened and checked (`Db::check`): every record the
/// value store counts as written decodes with a valid checksum and lies in its key's
/// group (or the log's live part); the segment table's chains are consistent; every
/// index entry decodes and every location names a record that reads back with the key
/// and sequence number the index expects. Prints what it checked and each damage
/// found; exits non-zero when damage is left (repaired damage is reported, not
/// counted).
pub fn fsck(args: &FsckArgs) -> StoreResult<()> {
    check_distinct_devices(&args.store.devices)?;
    let headers = Db::check_headers(&args.store.devices, args.repair)
        .map_err(|e| args.store.explain(e, Doing::Open))?;
    for d in &headers.damage {
        eprintln!("damage: {d}");
    }
    for r in &headers.repaired {
        println!("repaired: {r}");
    }
    let headers_left = (headers.damage.len() - headers.repaired.len()) as u64;
    let db = match args.store.open() {
        Ok(db) => db,
        Err(e) if headers_left > 0 => {
            return Err(StoreCmdError::Damaged {
                count: headers_left,
                first: format!("{}; the store does not open: {e}", headers.damage[0]),
            })
        }
        Err(e) => return Err(e),
    };
    let report = db.check()?;
    let stats = db.stats();
    db.close()?;
    print_check(&report, &stats);
    let count = report.damage_count + headers_left;
    if count == 0 {
        println!("ok: every superblock copy, member header, checksum, location and segment-table entry matches");
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
    let first = headers
        .damage
        .first()
        .filter(|_| headers_left > 0)
        .or(report.damage.first())
        .cloned()
        .unwrap_or_default();
    Err(StoreCmdError::Damaged { count, first })
}

fn print_check(report: &hashkv::CheckReport, stats: &hashkv::Stats) {
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
}
