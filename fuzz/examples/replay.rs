//! Runs inputs through a target without libFuzzer: on stable Rust, in a debug
//! build, with `MQFT_FUZZ_TRACE=1` to print every step of the state machines.
//!
//! ```text
//! MQFT_FUZZ_TRACE=1 cargo run --manifest-path fuzz/Cargo.toml --example replay -- sender fuzz/artifacts/sender/crash-...
//! cargo run --manifest-path fuzz/Cargo.toml --example replay -- receiver fuzz/corpus/receiver
//! ```
//!
//! A path may be a file or a directory of inputs. Each input is printed with the
//! time it took, which finds the slow ones.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use std::{env, fs};

use mqft_fuzz::seeds;

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    let (Some(target), paths) = (args.next(), args.map(PathBuf::from).collect::<Vec<_>>()) else {
        eprintln!("usage: replay TARGET PATH... (targets: {})", seeds::TARGETS.join(", "));
        return ExitCode::from(2);
    };
    if !seeds::TARGETS.contains(&target.as_str()) || paths.is_empty() {
        eprintln!("usage: replay TARGET PATH... (targets: {})", seeds::TARGETS.join(", "));
        return ExitCode::from(2);
    }
    let mut files = Vec::new();
    for p in &paths {
        if let Err(e) = collect(p, &mut files) {
            eprintln!("error: reading {}: {e}", p.display());
            return ExitCode::FAILURE;
        }
    }
    for f in &files {
        let data = match fs::read(f) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: reading {}: {e}", f.display());
                return ExitCode::FAILURE;
            }
        };
        let started = Instant::now();
        // A failed check panics, which ends the run with the panic's message.
        seeds::run_target(&target, &data);
        eprintln!("{}: {} bytes, {:?}", f.display(), data.len(), started.elapsed());
    }
    println!("{} inputs ran through {target} without a failure", files.len());
    ExitCode::SUCCESS
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if p.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(p)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        entries.sort();
        for e in entries {
            if e.is_file() {
                out.push(e);
            }
        }
    } else {
        out.push(p.to_owned());
    }
    Ok(())
}
