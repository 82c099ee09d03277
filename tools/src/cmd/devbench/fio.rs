//! Running fio's job for a shape on the same target, and reading its JSON output.
//!
//! The job files in fio-configs/ take the target, the region size and the run time
//! from the environment (`${FILENAME}`, `${SIZE}`, `${RUNTIME}`), which fio expands.

use super::shape::Shape;
use crate::error::{CliError, CliResult};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// fio's figures for one direction of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct FioDirection {
    pub bytes_per_s: f64,
    pub ops_per_s: f64,
    /// Total latency (submission to completion) percentiles; `None` without requests.
    pub latency_p50_ns: Option<f64>,
    pub latency_p99_ns: Option<f64>,
    pub latency_p999_ns: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct FioResult {
    pub read: FioDirection,
    pub write: FioDirection,
}

impl FioResult {
    pub fn bytes_per_s(&self) -> f64 {
        self.read.bytes_per_s + self.write.bytes_per_s
    }

    pub fn ops_per_s(&self) -> f64 {
        self.read.ops_per_s + self.write.ops_per_s
    }
}

/// Mode bits that make a file executable by its owner, its group or anyone.
const EXECUTE_BITS: u32 = 0o111;

/// The fio executable on PATH, if any.
pub fn find_fio() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("fio"))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & EXECUTE_BITS != 0)
        })
}

/// `fio --version`, e.g. "fio-3.33".
pub fn version(fio: &Path) -> Option<String> {
    let out = Command::new(fio).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `shape`'s job on `target` over `[0, region_bytes)` for `runtime`. The job file
/// is written into `scratch_dir` first (the binary carries the job texts). `job_env`
/// sets the job's own variables, beyond the three every job reads.
pub fn run_job(
    fio: &Path,
    shape: &Shape,
    target: &Path,
    region_bytes: u64,
    runtime: Duration,
    scratch_dir: &Path,
    job_env: &[(&str, String)],
) -> CliResult<FioResult> {
    let job_error = |reason: String| CliError::Fio {
        job: shape.name.to_string(),
        reason,
    };
    let job_path = scratch_dir.join(format!("{}.fio", shape.name));
    std::fs::write(&job_path, shape.fio_job).map_err(|source| CliError::Io {
        path: job_path.clone(),
        action: "writing the fio job file",
        source,
    })?;
    // fio takes time values with a unit suffix; whole milliseconds are precise enough.
    let runtime_ms = runtime.as_millis().max(1);
    let output = Command::new(fio)
        .arg("--output-format=json")
        .arg(&job_path)
        .env("FILENAME", fio_filename(target))
        .env("SIZE", region_bytes.to_string())
        .env("RUNTIME", format!("{runtime_ms}ms"))
        .envs(job_env.iter().map(|(k, v)| (k, v)))
        .output()
        .map_err(|e| job_error(format!("could not start {}: {e}", fio.display())))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(job_error(format!(
            "fio exited with {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            stdout.trim()
        )));
    }
    parse_output(&stdout).map_err(job_error)
}

/// fio treats ':' in a file name as a separator of several files; escape it.
fn fio_filename(target: &Path) -> String {
    target.to_string_lossy().replace(':', "\\:")
}

/// Reads fio's JSON report of a one-job run (with `group_reporting`). fio may print
/// notes before the JSON object on stdout, so parsing starts at the first '{'.
pub fn parse_output(stdout: &str) -> Result<FioResult, String> {
    let json_start = stdout
        .find('{')
        .ok_or_else(|| format!("no JSON in fio's output: {stdout:?}"))?;
    let report: Value = serde_json::from_str(&stdout[json_start..])
        .map_err(|e| format!("fio's JSON does not parse: {e}"))?;
    let job = report
        .get("jobs")
        .and_then(|jobs| jobs.get(0))
        .ok_or("fio's JSON has no jobs[0]")?;
    let error = job.get("error").and_then(Value::as_i64).unwrap_or(0);
    if error != 0 {
        return Err(format!("fio reports error {error} for the job"));
    }
    Ok(FioResult {
        read: direction(job, "read")?,
        write: direction(job, "write")?,
    })
}

fn direction(job: &Value, name: &str) -> Result<FioDirection, String> {
    let dir = job
        .get(name)
        .ok_or_else(|| format!("fio's JSON has no jobs[0].{name}"))?;
    let number = |key: &str| -> Result<f64, String> {
        dir.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("fio's JSON has no numeric jobs[0].{name}.{key}"))
    };
    // lat_ns.percentile exists only with lat_percentiles=1 and when requests ran.
    let percentile =
        |p: &str| -> Option<f64> { dir.get("lat_ns")?.get("percentile")?.get(p)?.as_f64() };
    Ok(FioDirection {
        bytes_per_s: number("bw_bytes")?,
        ops_per_s: number("iops")?,
        latency_p50_ns: percentile("50.000000"),
        latency_p99_ns: percentile("99.000000"),
        latency_p999_ns: percentile("99.900000"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real fio-3.33 run of mixed_4k_qd32 (with a note line before the
    /// JSON, as fio prints when it adjusts an option).
    const SAMPLE: &str = r#"note: both iodepth >= 1 and synchronous I/O engine are selected
{
  "fio version" : "fio-3.33",
  "jobs" : [
    {
      "jobname" : "mixed_4k_qd32",
      "error" : 0,
      "read" : {
        "io_bytes" : 1000, "bw_bytes" : 209715200, "iops" : 51200.5,
        "lat_ns" : { "min" : 1, "max" : 9, "mean" : 5.0,
          "percentile" : { "50.000000" : 250000, "99.000000" : 900000, "99.900000" : 1500000 } }
      },
      "write" : {
        "io_bytes" : 10, "bw_bytes" : 89128960, "iops" : 21760.0,
        "lat_ns" : { "min" : 1, "max" : 9, "mean" : 5.0,
          "percentile" : { "50.000000" : 300000, "99.000000" : 1000000, "99.900000" : 2000000 } }
      }
    }
  ]
}"#;

    #[test]
    fn parses_bandwidth_iops_and_percentiles() {
        let r = parse_output(SAMPLE).unwrap();
        assert_eq!(r.read.bytes_per_s, 209715200.0);
        assert_eq!(r.write.ops_per_s, 21760.0);
        assert_eq!(r.read.latency_p99_ns, Some(900000.0));
        assert_eq!(r.write.latency_p999_ns, Some(2000000.0));
        assert_eq!(r.ops_per_s(), 51200.5 + 21760.0);
    }

    #[test]
    fn reports_what_is_wrong_with_bad_output() {
        assert!(parse_output("fio: failed to open")
            .unwrap_err()
            .contains("no JSON"));
        assert!(parse_output("{\"jobs\": []}")
            .unwrap_err()
            .contains("jobs[0]"));
        let failed = SAMPLE.replace("\"error\" : 0", "\"error\" : 5");
        assert!(parse_output(&failed).unwrap_err().contains("error 5"));
        let no_bw = SAMPLE.replace("\"bw_bytes\" : 209715200", "\"bw\" : 1");
        assert!(parse_output(&no_bw).unwrap_err().contains("read.bw_bytes"));
    }

    #[test]
    fn colons_in_file_names_are_escaped() {
        assert_eq!(
            fio_filename(Path::new("/dev/disk/by-id/a:b")),
            "/dev/disk/by-id/a\\:b"
        );
    }
}
