//! devbench's table and its JSON report.

use super::fio::FioResult;
use super::load::LoadResult;
use super::shape::Shape;
use std::fmt::Write as _;

/// Latencies are measured in ns and shown in us.
const NS_PER_US: f64 = 1000.0;
/// Bytes in a MiB, for the MiB/s columns.
pub const MIB: f64 = (1u64 << 20) as f64;

/// One measurement of a shape, ours or fio's, in the units the table shows.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Figures {
    pub mib_per_s: f64,
    pub iops: f64,
    /// Latency of the shape's main direction (reads where reads dominate).
    pub latency_p50_us: Option<f64>,
    pub latency_p99_us: Option<f64>,
    pub latency_p999_us: Option<f64>,
}

impl Figures {
    pub fn from_ours(shape: &Shape, r: &LoadResult) -> Figures {
        let main = if shape.reads_dominate() {
            &r.read
        } else {
            &r.write
        };
        let quantile_us = |q: f64| {
            (main.ops > 0).then(|| main.latency_ns.value_at_quantile(q) as f64 / NS_PER_US)
        };
        Figures {
            mib_per_s: r.bytes_per_s() / MIB,
            iops: r.ops_per_s(),
            latency_p50_us: quantile_us(0.50),
            latency_p99_us: quantile_us(0.99),
            latency_p999_us: quantile_us(0.999),
        }
    }

    pub fn from_fio(shape: &Shape, r: &FioResult) -> Figures {
        let main = if shape.reads_dominate() {
            &r.read
        } else {
            &r.write
        };
        let us = |ns: Option<f64>| ns.map(|v| v / NS_PER_US);
        Figures {
            mib_per_s: r.bytes_per_s() / MIB,
            iops: r.ops_per_s(),
            latency_p50_us: us(main.latency_p50_ns),
            latency_p99_us: us(main.latency_p99_ns),
            latency_p999_us: us(main.latency_p999_ns),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ShapeReport {
    pub shape: &'static str,
    pub block_bytes: usize,
    pub queue_depth: usize,
    /// Threads that kept our requests in flight, and requests each kept.
    pub submitters: usize,
    pub batch_ops: usize,
    pub ours: Figures,
    /// Our raw counts, for anyone checking the arithmetic.
    pub ours_read_ops: u64,
    pub ours_write_ops: u64,
    pub ours_elapsed_s: f64,
    pub fio: Option<Figures>,
    /// ours / fio bandwidth (equal to the IOPS ratio: same request sizes).
    pub ratio: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub device: String,
    pub device_kind: String,
    pub region_bytes: u64,
    pub logical_block_bytes: u32,
    pub seconds_per_run: f64,
    pub fixed_buffers: bool,
    pub machine: Machine,
    /// e.g. "fio-3.33"; `None` when fio is not on PATH.
    pub fio_version: Option<String>,
    pub shapes: Vec<ShapeReport>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub hostname: String,
    pub kernel: String,
    pub cpus: usize,
}

impl Machine {
    pub fn probe() -> Machine {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        Machine {
            hostname: read("/proc/sys/kernel/hostname"),
            kernel: read("/proc/sys/kernel/osrelease"),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// The column titles, and a rule under them as wide as a row.
pub fn table_header() -> String {
    let titles = format!(
        "{:<20} {:>10} {:>10} {:>9} {:>10} {:>10} {:>9} {:>8}",
        "shape",
        "ours MiB/s",
        "ours IOPS",
        "ours p99",
        "fio MiB/s",
        "fio IOPS",
        "fio p99",
        "ours/fio",
    );
    let rule = "-".repeat(titles.len());
    format!("{titles}\n{rule}")
}

pub fn table_row(r: &ShapeReport) -> String {
    let p99 = |f: &Figures| {
        f.latency_p99_us
            .map_or("-".to_string(), |v| format!("{v:.0}us"))
    };
    let mut row = format!(
        "{:<20} {:>10.1} {:>10.0} {:>9}",
        r.shape,
        r.ours.mib_per_s,
        r.ours.iops,
        p99(&r.ours)
    );
    match (&r.fio, r.ratio) {
        (Some(fio), Some(ratio)) => {
            let _ = write!(
                row,
                " {:>10.1} {:>10.0} {:>9} {:>7.0}%",
                fio.mib_per_s,
                fio.iops,
                p99(fio),
                ratio * 100.0
            );
        }
        _ => {
            let _ = write!(row, " {:>10} {:>10} {:>9} {:>8}", "-", "-", "-", "-");
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_line_up_with_the_header() {
        let figures = Figures {
            mib_per_s: 2718.6,
            iops: 2718.6,
            latency_p50_us: Some(10.0),
            latency_p99_us: Some(14483.5),
            latency_p999_us: None,
        };
        let mut report = ShapeReport {
            shape: "seq_write_1m_qd32",
            block_bytes: 1 << 20,
            queue_depth: 32,
            submitters: 32,
            batch_ops: 1,
            ours: figures,
            ours_read_ops: 0,
            ours_write_ops: 1,
            ours_elapsed_s: 1.0,
            fio: Some(figures),
            ratio: Some(0.955),
        };
        let header = table_header();
        let width = header.lines().next().unwrap().len();
        let row = table_row(&report);
        assert_eq!(row.len(), width, "{header}\n{row}");
        assert!(row.ends_with(" 96%") || row.ends_with(" 95%"), "{row}");
        report.fio = None;
        report.ratio = None;
        assert_eq!(table_row(&report).len(), width);
    }
}
