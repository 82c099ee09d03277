//! `hashkv`: the command-line tool of the hashkv storage engine.
//!
//! Each subcommand lives in its own module under `cmd/` with its clap `Args` and a
//! `run` function; this file only parses the command line, dispatches, and turns an
//! error into a message and a non-zero exit status.

mod cmd;
mod error;
mod workload;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "hashkv",
    version,
    about = "The hashkv key-value storage engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure a device or file with the engine's I/O shapes through blockdev's
    /// io_uring device, side by side with fio running the same shapes
    /// (OVERWRITES the device's contents)
    Devbench(cmd::devbench::DevbenchArgs),
    /// The paper's experiment at a chosen scale: load, Zipf updates, optional reads
    /// and scans, per mode on equal space; throughput, write amplification, latency
    Bench(cmd::bench::BenchArgs),
    /// bench's experiment on the engine's modes, then on RocksDB and BlobDB (with
    /// --features rocksdb) on the same disk, then fio's device baseline; one table
    Compare(cmd::compare::CompareArgs),
    /// Format devices (or a file) and a metadata directory as a new store
    Format(cmd::kv::FormatArgs),
    /// Print a store's superblock, layout and space use
    Stat(cmd::kv::StoreArgs),
    /// Print the value of a key (exit status 1 if it is missing)
    Get(cmd::kv::GetArgs),
    /// Store a value under a key (durable when the command returns)
    Put(cmd::kv::PutArgs),
    /// Delete a key (durable when the command returns)
    Delete(cmd::kv::DeleteArgs),
    /// Print key<TAB>value lines of a key range in key order
    Scan(cmd::kv::ScanArgs),
    /// Read every key and value and check their records (exit status 1 on damage)
    Fsck(cmd::kv::StoreArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Each subcommand family has its own error type; all are reported alike.
    let (name, result): (&str, Result<(), Box<dyn std::error::Error>>) = match &cli.command {
        Command::Devbench(args) => ("devbench", cmd::devbench::run(args).map_err(Into::into)),
        Command::Bench(args) => ("bench", cmd::bench::run(args).map_err(Into::into)),
        Command::Compare(args) => ("compare", cmd::compare::run(args).map_err(Into::into)),
        Command::Format(args) => ("format", cmd::kv::format(args).map_err(Into::into)),
        Command::Stat(args) => ("stat", cmd::kv::stat(args).map_err(Into::into)),
        Command::Get(args) => ("get", cmd::kv::get(args).map_err(Into::into)),
        Command::Put(args) => ("put", cmd::kv::put(args).map_err(Into::into)),
        Command::Delete(args) => ("delete", cmd::kv::delete(args).map_err(Into::into)),
        Command::Scan(args) => ("scan", cmd::kv::scan(args).map_err(Into::into)),
        Command::Fsck(args) => ("fsck", cmd::kv::fsck(args).map_err(Into::into)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            // Print the causes that the message does not already spell out (several
            // error types put their source into their own message).
            let mut source = e.source();
            while let Some(cause) = source {
                let text = cause.to_string();
                if !message.contains(&text) {
                    message.push_str(&format!("\n  caused by: {text}"));
                }
                source = cause.source();
            }
            eprintln!("hashkv {name}: error: {message}");
            ExitCode::FAILURE
        }
    }
}
