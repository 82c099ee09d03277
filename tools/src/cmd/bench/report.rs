//! What one (mode, phase) measured, as a table row and as a JSON object.
//!
//! Write amplification is the engine's total write amplification (the definition of
//! `hashkv::Stats::write_amplification`): bytes written to the value-store devices plus
//! bytes the LSM tree wrote (WAL, flushes, compactions), over the key + value bytes the
//! user wrote in the phase. Counting the LSM tree's bytes is what makes the modes
//! comparable: in `lsm` mode the values live in the tree, in `vlog`/`hashkv` mostly on
//! the devices. `write_amp == (device_write_bytes + lsm_write_bytes) / user_bytes`
//! holds exactly for every row; phases that write nothing (read, scan) have
//! `write_amp: null`.
//!
//! Peers of `hashkv compare` (RocksDB, BlobDB) fill the same fields from RocksDB's
//! statistics: `device_*` are blob-file bytes (the value store's counterpart; 0 for
//! plain RocksDB), `lsm_write_bytes` is WAL + flush + compaction bytes less blob-file
//! bytes, `gc_write_bytes` is the bytes BlobDB's GC relocated; `gc_read_bytes` and
//! `gc_runs` are 0 (RocksDB counts neither apart from compaction).
//!
//! The `io_*` fields count every row the same way, engine and peers alike: this
//! process's /proc/self/io deltas around the phase (`store::ProcessIoBytes`). They are
//! what `hashkv compare` compares; `io_write_amp = io_write_bytes / user_bytes`.
//!
//! The slowest window: each operation is counted in the 1-second window, from the
//! phase's start, in which it completed. The full windows are those that end by the
//! time the phase's last operation completed; what follows them (under a second of
//! operations, then the write phases' closing flush) is no window of its own, because
//! a rate over a fraction of a second would rank the end of every phase, not stalls.
//! `slowest_window_share` = the fewest operations in a full window / the mean per full
//! window; it lies in [0, 1] by construction. A phase with fewer than
//! `MIN_FULL_WINDOWS` full windows gets null: the share needs windows to compare.

use serde::Serialize;

const MIB: f64 = (1u64 << 20) as f64;

/// Full windows a phase needs for its slowest-window share: with one, the share would
/// compare the window with itself and always be 1.
pub const MIN_FULL_WINDOWS: usize = 2;
// The table's and README's names (slow1s, "<2s") say 1-second windows.
const _: () =
    assert!(super::phase::WINDOW.as_secs() == 1 && super::phase::WINDOW.subsec_nanos() == 0);

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub mode: String,
    /// load, update1..updateN, read, scan.
    pub phase: String,
    /// Seconds from the mode's first phase start to this phase's start (where the plot
    /// marks it).
    pub began_at_seconds: f64,
    pub ops: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    /// Key + value bytes the user wrote in this phase (0 for read and scan).
    pub user_bytes: u64,
    /// Key + value bytes returned to the user (read and scan phases).
    pub user_read_bytes: u64,
    /// User bytes moved per second: written for load/update, read for read/scan.
    pub user_mib_per_sec: f64,
    /// Value-store bytes written, from the engine's per-member device counters.
    pub device_write_bytes: u64,
    pub device_read_bytes: u64,
    /// The same from the kernel (/sys/class/block/<dev>/stat), summed over the members
    /// that are block devices; null when no member is one.
    pub kernel_write_bytes: Option<u64>,
    pub kernel_read_bytes: Option<u64>,
    /// Bytes the LSM tree wrote in the metadata directory.
    pub lsm_write_bytes: u64,
    /// (device_write_bytes + lsm_write_bytes) / user_bytes; null when user_bytes is 0.
    pub write_amp: Option<f64>,
    /// Value-store bytes GC rewrote (survivors copied) and read.
    pub gc_write_bytes: u64,
    pub gc_read_bytes: u64,
    pub gc_runs: u64,
    /// Of `gc_runs`, those a flush ran for want of room: writers waited for them.
    pub gc_runs_in_flush: u64,
    /// Hot/cold (hashkv mode): values moved to the cold log and brought back during
    /// the phase, and the cold log's bytes at its end.
    pub demotions: u64,
    pub promotions: u64,
    pub cold_log_bytes: u64,
    /// The cold log's live bytes at the phase's end, and its segments' GCs in the phase.
    pub cold_live_bytes: u64,
    pub cold_gc_runs: u64,
    /// Index lookups GC made in the phase (the vlog mode's; 0 in the hashkv mode).
    pub gc_index_lookups: u64,
    /// Live value-store bytes plus the metadata directory's size on disk, at the end of
    /// the phase.
    pub space_bytes: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// The slowest operation of the phase.
    pub max_us: f64,
    /// Whole 1-second windows of operations in the phase (see the module's docs).
    pub full_windows: u64,
    /// Operations per second in the slowest full window; null below
    /// `MIN_FULL_WINDOWS` full windows.
    pub slowest_window_ops_per_sec: Option<f64>,
    /// slowest_window_ops_per_sec / the mean ops/s over the full windows, in [0, 1];
    /// null below `MIN_FULL_WINDOWS` full windows.
    pub slowest_window_share: Option<f64>,
    /// Operations completed in each 1-second window from the phase's start, the last
    /// entry a partial window (or none): the timeline behind the slowest window, to
    /// see where a phase slowed and for how long.
    pub ops_per_window: Vec<u64>,
    /// Storage bytes this process wrote over the phase (/proc/self/io write_bytes less
    /// cancelled_write_bytes), and read (read_bytes); null where that file is missing.
    pub io_write_bytes: Option<u64>,
    pub io_read_bytes: Option<u64>,
    /// io_write_bytes / user_bytes; null when either is missing or user_bytes is 0.
    pub io_write_amp: Option<f64>,
    /// Ctrl-C cut the phase short; ops counts what was done.
    pub interrupted: bool,
    /// Read phases under `compare` with fio: fio's rand_read_4k_qd32 IOPS on the same
    /// disk just before and just after the phase (`Plan::read_bracket`); null otherwise.
    pub fio_read_iops_around: Option<[f64; 2]>,
}

/// (device + LSM bytes written) / user bytes written, or None when nothing was written.
pub fn write_amp(device_write_bytes: u64, lsm_write_bytes: u64, user_bytes: u64) -> Option<f64> {
    (user_bytes > 0).then(|| (device_write_bytes + lsm_write_bytes) as f64 / user_bytes as f64)
}

/// io_write_bytes / user bytes written, or None when either is missing.
pub fn io_write_amp(io_write_bytes: Option<u64>, user_bytes: u64) -> Option<f64> {
    io_write_bytes
        .filter(|_| user_bytes > 0)
        .map(|w| w as f64 / user_bytes as f64)
}

/// The slowest of a phase's full 1-second windows: its ops/s and its share of the mean
/// over the full windows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowestWindow {
    pub ops_per_sec: f64,
    pub share: f64,
}

/// The slowest of the first `full_windows` entries of `ops_per_window` (operations per
/// 1-second window), or None when there are fewer than `MIN_FULL_WINDOWS` of them.
pub fn slowest_window(ops_per_window: &[u64], full_windows: usize) -> Option<SlowestWindow> {
    assert!(
        full_windows <= ops_per_window.len(),
        "{full_windows} full windows of {} counted",
        ops_per_window.len()
    );
    let full = &ops_per_window[..full_windows];
    if full.len() < MIN_FULL_WINDOWS {
        return None;
    }
    let slowest = *full
        .iter()
        .min()
        .expect("at least MIN_FULL_WINDOWS windows");
    let total: u64 = full.iter().sum();
    let window_seconds = super::phase::WINDOW.as_secs_f64();
    Some(SlowestWindow {
        ops_per_sec: slowest as f64 / window_seconds,
        // The minimum of equal-length windows is at most their mean. No operation done
        // in any whole window (one stuck operation outlasted them all) is a stall, the
        // worst share there is, not 0/0.
        share: if total == 0 {
            0.0
        } else {
            slowest as f64 * full.len() as f64 / total as f64
        },
    })
}

pub fn per_sec(amount: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        amount / seconds
    } else {
        0.0
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

/// The final table: one row per (mode, phase). Byte columns in MiB.
pub fn table(rows: &[PhaseReport]) -> String {
    // The kernel's view is shown only when some member is a block device, the process's
    // only where /proc/self/io exists.
    let kernel = rows.iter().any(|r| r.kernel_write_bytes.is_some());
    let io = rows.iter().any(|r| r.io_write_bytes.is_some());
    let mut header = vec![
        "mode", "phase", "ops", "sec", "kops/s", "MiB/s", "dev_wr", "dev_rd", "lsm_wr", "WA",
        "gc_wr", "space", "p50us", "p99us", "p999us", "maxus", "slow1s",
    ];
    if io {
        header.extend(["io_wr", "io_rd", "io_WA"]);
    }
    if kernel {
        header.extend(["kern_wr", "kern_rd"]);
    }
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        cells.push(row_cells(r, io, kernel));
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| cells.iter().map(|row| row[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &cells {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                // Names left-aligned, numbers right-aligned.
                if c < 2 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(
        "bytes in MiB; WA = (dev_wr + lsm_wr) / user bytes written; space = live values + \
         metadata dir; * = interrupted\n",
    );
    out.push_str(&format!(
        "maxus: slowest operation; slow1s: ops in the phase's slowest whole 1-second \
         window / mean ops per whole window ({}: fewer than {MIN_FULL_WINDOWS} whole \
         windows)\n",
        too_short()
    ));
    if io {
        out.push_str(
            "io_wr, io_rd: this process's storage bytes over the phase from /proc/self/io \
             (write_bytes - cancelled_write_bytes, read_bytes), counted alike for every row; \
             io_WA = io_wr / user bytes written\n",
        );
    }
    if kernel {
        out.push_str("kern_wr, kern_rd: /sys/class/block counters of the block-device members\n");
    }
    out
}

/// What the slow1s column shows for a phase with too few whole windows.
fn too_short() -> String {
    format!("<{MIN_FULL_WINDOWS}s")
}

/// One table row; the io and kernel columns only where the table has them.
fn row_cells(r: &PhaseReport, io: bool, kernel: bool) -> Vec<String> {
    let mut phase = r.phase.clone();
    if r.interrupted {
        phase.push('*');
    }
    let opt_mib = |b: Option<u64>| b.map_or("-".to_string(), |b| format!("{:.0}", mib(b)));
    let mut row = vec![
        r.mode.clone(),
        phase,
        r.ops.to_string(),
        format!("{:.1}", r.seconds),
        format!("{:.1}", r.ops_per_sec / 1000.0),
        format!("{:.1}", r.user_mib_per_sec),
        format!("{:.0}", mib(r.device_write_bytes)),
        format!("{:.0}", mib(r.device_read_bytes)),
        format!("{:.0}", mib(r.lsm_write_bytes)),
        r.write_amp.map_or("-".into(), |w| format!("{w:.2}")),
        format!("{:.0}", mib(r.gc_write_bytes)),
        format!("{:.0}", mib(r.space_bytes)),
        format!("{:.1}", r.p50_us),
        format!("{:.1}", r.p99_us),
        format!("{:.1}", r.p999_us),
        format!("{:.1}", r.max_us),
        r.slowest_window_share
            .map_or_else(too_short, |s| format!("{s:.2}")),
    ];
    if io {
        row.push(opt_mib(r.io_write_bytes));
        row.push(opt_mib(r.io_read_bytes));
        row.push(r.io_write_amp.map_or("-".into(), |w| format!("{w:.2}")));
    }
    if kernel {
        row.push(opt_mib(r.kernel_write_bytes));
        row.push(opt_mib(r.kernel_read_bytes));
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(phase: &str, kernel_write_bytes: Option<u64>) -> PhaseReport {
        PhaseReport {
            fio_read_iops_around: None,
            mode: "hashkv".into(),
            phase: phase.into(),
            began_at_seconds: 0.0,
            ops: 1000,
            seconds: 2.0,
            ops_per_sec: 500.0,
            user_bytes: 1 << 20,
            user_read_bytes: 0,
            user_mib_per_sec: 0.5,
            device_write_bytes: 3 << 20,
            device_read_bytes: 0,
            kernel_write_bytes,
            kernel_read_bytes: kernel_write_bytes.map(|_| 0),
            lsm_write_bytes: 1 << 20,
            write_amp: write_amp(3 << 20, 1 << 20, 1 << 20),
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
            space_bytes: 5 << 20,
            p50_us: 1.0,
            p99_us: 2.0,
            p999_us: 3.0,
            max_us: 40.0,
            full_windows: 2,
            slowest_window_ops_per_sec: Some(400.0),
            slowest_window_share: Some(0.8),
            ops_per_window: vec![1000, 800, 900],
            io_write_bytes: None,
            io_read_bytes: None,
            io_write_amp: None,
            interrupted: false,
        }
    }

    #[test]
    fn table_columns_line_up_and_kernel_columns_appear_only_with_block_devices() {
        let files = table(&[row("load", None), row("update1", None)]);
        let lines: Vec<&str> = files.lines().collect();
        assert!(!lines[0].contains("kern_wr"));
        // Right-aligned numbers: the WA cells end at the same column as their header.
        let wa_end = lines[0].find("WA").unwrap() + 2;
        assert_eq!(&lines[1][wa_end - 4..wa_end], "4.00");
        assert_eq!(&lines[2][wa_end - 4..wa_end], "4.00");

        let block = table(&[row("load", Some(7 << 20))]);
        let lines: Vec<&str> = block.lines().collect();
        assert!(lines[0].ends_with("kern_wr  kern_rd"), "{}", lines[0]);
        assert!(lines[1].ends_with("      7        0"), "{}", lines[1]);
    }

    #[test]
    fn io_columns_appear_with_process_counters_before_the_kernel_columns() {
        let mut r = row("load", Some(7 << 20));
        r.io_write_bytes = Some(5 << 20);
        r.io_read_bytes = Some(1 << 20);
        r.io_write_amp = io_write_amp(r.io_write_bytes, r.user_bytes);
        let text = table(&[r]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].ends_with("io_wr  io_rd  io_WA  kern_wr  kern_rd"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with("5      1   5.00        7        0"),
            "{}",
            lines[1]
        );
        assert!(text.contains("/proc/self/io"), "{text}");
        assert!(!table(&[row("load", None)]).contains("io_wr"));
    }

    #[test]
    fn io_write_amp_needs_both_counts() {
        assert_eq!(io_write_amp(Some(300), 100), Some(3.0));
        assert_eq!(io_write_amp(None, 100), None);
        assert_eq!(io_write_amp(Some(300), 0), None);
    }

    #[test]
    fn slowest_window_compares_only_whole_windows_and_needs_two() {
        // The partial window after the whole ones (here 1 op) is left out.
        let w = slowest_window(&[100, 50, 150, 1], 3).unwrap();
        assert_eq!(w.ops_per_sec, 50.0);
        assert_eq!(w.share, 0.5);
        // Steady throughput: share 1.
        assert_eq!(slowest_window(&[80, 80, 3], 2).unwrap().share, 1.0);
        // Fewer than two whole windows: no share.
        assert_eq!(slowest_window(&[100, 7], 1), None);
        assert_eq!(slowest_window(&[5], 0), None);
        // A stall over every whole window is the worst share.
        assert_eq!(slowest_window(&[0, 0, 9], 2).unwrap().share, 0.0);
    }

    #[test]
    fn table_shows_max_latency_and_the_slowest_window_or_that_the_phase_was_short() {
        let mut short = row("update1", None);
        short.slowest_window_share = None;
        short.slowest_window_ops_per_sec = None;
        short.full_windows = 1;
        let text = table(&[row("load", None), short]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("p999us  maxus  slow1s"), "{}", lines[0]);
        assert!(lines[1].ends_with("3.0   40.0    0.80"), "{}", lines[1]);
        assert!(lines[2].ends_with("3.0   40.0     <2s"), "{}", lines[2]);
        assert!(text.contains("<2s: fewer than 2 whole windows"), "{text}");
    }

    #[test]
    fn write_amp_counts_device_and_lsm_bytes_over_user_bytes() {
        assert_eq!(write_amp(300, 100, 200), Some(2.0));
        assert_eq!(write_amp(300, 100, 0), None);
    }
}
