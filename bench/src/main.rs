//! `mqft-bench`: measures mqft end to end against the usual MQTT recipes, on a
//! Mosquitto it starts itself on a loopback port.
//!
//! Build and run (see `docs/PERFORMANCE.md`):
//!
//! ```text
//! cargo build --release -p mqft-cli -p mqft-bench
//! target/release/mqft-bench --out docs/
//! ```
//!
//! # Layout
//! - [`cases`]: what is measured (files, brokers, the programs on each side) and how
//!   one repetition runs: receiver first, then the clock and the sender, then the
//!   check of the file that arrived.
//! - [`measure`]: each program under GNU `time` for its CPU and peak RSS; the
//!   broker's CPU from `/proc`.
//! - [`pump`]: baseline B, a bare rumqttc publisher and subscriber (the
//!   `pump-pub` and `pump-sub` subcommands, which the cases start as processes).
//! - [`report`]: medians and spreads, ratios against the baselines, the targets,
//!   the Markdown table and the SVG plot.
//!
//! The benchmark is not part of the test suite: it takes minutes and its numbers
//! depend on the machine.

#![forbid(unsafe_code)]

mod cases;
mod measure;
mod pump;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// End-to-end benchmark of mqft against `mosquitto_pub -f` and a bare rumqttc pump,
/// on a Mosquitto it starts on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "mqft-bench", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Baseline B's publisher (started by the benchmark).
    PumpPub(pump::PubArgs),
    /// Baseline B's subscriber (started by the benchmark).
    PumpSub(pump::SubArgs),
}

/// Flags of a benchmark run.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// A small, fast subset: one repetition, no 1 GiB file, a short sweep.
    #[arg(long)]
    pub quick: bool,
    /// Repetitions per case (the 1 GiB cases run fewer: see --reps-1g).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Repetitions of the 1 GiB cases.
    #[arg(long = "reps-1g", default_value_t = 3)]
    pub reps_1g: usize,
    /// Repetitions of each sweep point.
    #[arg(long, default_value_t = 3)]
    pub sweep_reps: usize,
    /// Only these scenarios (comma-separated): 5m, 100m, 1g, images, constrained,
    /// qos, encrypted, v311, 5m-nodelay, images-nodelay, zstd, stdio, hold,
    /// sweep-chunk, sweep-window. Default: all.
    #[arg(long, value_delimiter = ',')]
    pub cases: Vec<String>,
    /// Where to write PERFORMANCE.md's results section and the plot (the results
    /// go between the markers of `<out>/PERFORMANCE.md`, created if missing).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The `mqft` binary (default: next to this one, i.e. target/release/mqft).
    #[arg(long)]
    pub mqft: Option<PathBuf>,
    /// Working directory for test files and received copies (default: a new
    /// directory under the system's temp dir, removed at the end).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Keep the working directory.
    #[arg(long)]
    pub keep: bool,
    /// An extra line for every broker's mosquitto.conf, for experiments such as
    /// `--broker-config 'set_tcp_nodelay true'` (repeatable; the targets are about
    /// Mosquitto's defaults, so the report flags a run that used this).
    #[arg(long = "broker-config", value_name = "LINE")]
    pub broker_config: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::PumpPub(a)) => pump::publish(a),
        Some(Command::PumpSub(a)) => pump::subscribe(a),
        None => cases::run(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mqft-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
