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
    Format(cmd::admin::FormatArgs),
    /// Print a store's superblock, layout and space use
    Stat(cmd::kv::StoreArgs),
    /// Write the value of a key: its bytes as they are (exit status 1 if it is missing)
    Get(cmd::kv::GetArgs),
    /// Store a value under a key (durable when the command returns)
    Put(cmd::kv::PutArgs),
    /// Delete a key (durable when the command returns)
    Delete(cmd::kv::DeleteArgs),
    /// Print key<TAB>value lines of a key range in key order (escaped text or hex)
    Scan(cmd::kv::ScanArgs),
    /// Check the superblock copies, member headers, records and index entries (exit
    /// status 1 on damage left); --repair rewrites damaged copies and headers
    Fsck(cmd::admin::FsckArgs),
    /// kill -9 a process writing to the store at random moments, cycle after cycle;
    /// after each kill, check the store against the operations' log (durable writes
    /// kept, batches whole, no value never written, no deleted key back) and run the
    /// full check. FORMATS the store in the first cycle
    Crashtest(cmd::crashtest::CrashtestArgs),
    /// The child process of `hashkv crashtest` (run by it, not by hand)
    #[command(hide = true)]
    CrashtestChild(cmd::crashtest::child::ChildArgs),
    /// Threads running checked puts, gets, deletes, batches and scans on a small store
    /// while GC runs, for a set time; prints operations, GC runs and peak memory, and
    /// fails on a wrong result or memory beyond its bound. FORMATS the store
    Soak(cmd::soak::SoakArgs),
}

/// Exit status of arguments the parser accepted but the command found missing or
/// malformed: the parser's own status for argument errors.
const EXIT_ARGUMENTS: u8 = 2;

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = Cli::parse();
    // Each subcommand family has its own error type; all are reported alike.
    let (name, result): (&str, Result<(), Box<dyn std::error::Error>>) = match &cli.command {
        Command::Devbench(args) => ("devbench", cmd::devbench::run(args).map_err(Into::into)),
        Command::Bench(args) => ("bench", cmd::bench::run(args).map_err(Into::into)),
        Command::Compare(args) => ("compare", cmd::compare::run(args).map_err(Into::into)),
        Command::Format(args) => ("format", cmd::admin::format(args).map_err(Into::into)),
        Command::Stat(args) => ("stat", cmd::admin::stat(args).map_err(Into::into)),
        Command::Get(args) => ("get", cmd::kv::get(args).map_err(Into::into)),
        Command::Put(args) => ("put", cmd::kv::put(args).map_err(Into::into)),
        Command::Delete(args) => ("delete", cmd::kv::delete(args).map_err(Into::into)),
        Command::Scan(args) => ("scan", cmd::kv::scan(args).map_err(Into::into)),
        Command::Fsck(args) => ("fsck", cmd::admin::fsck(args).map_err(Into::into)),
        Command::Crashtest(args) => ("crashtest", cmd::crashtest::run(args).map_err(Into::into)),
        Command::CrashtestChild(args) => (
            "crashtest-child",
            cmd::crashtest::child::run(args).map_err(Into::into),
        ),
        Command::Soak(args) => ("soak", cmd::soak::run(args).map_err(Into::into)),
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
            let arguments = matches!(
                e.downcast_ref::<cmd::store::StoreCmdError>(),
                Some(cmd::store::StoreCmdError::Arguments(_))
            );
            if arguments {
                ExitCode::from(EXIT_ARGUMENTS)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Lets SIGPIPE end the process, as it ends `cat` or `head`: a reader that goes away
/// (`hashkv get k | head -c 10`) then stops the command quietly (exit status 141 in a
/// shell) instead of failing a write to standard output. Rust ignores SIGPIPE by
/// default. Store writes never go through pipes, so no store is left half-written:
/// a killed command is a crash the store recovers from.
fn restore_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler code; called first thing in
    // main, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
