//! Writes the seed corpus to `corpus/<target>/<name>`, or with `--check` verifies
//! that the files there are still what `mqft_fuzz::seeds` builds. Either way every
//! seed is first run through its target.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds            # write
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds -- --check # verify
//! ```
//!
//! Other files in `corpus/<target>/` (minimized crash reproducers, inputs kept from
//! long runs) are left alone.

use std::path::Path;
use std::process::ExitCode;
use std::{env, fs};

use mqft_fuzz::seeds;

fn main() -> ExitCode {
    let check = match env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(other) => {
            eprintln!("usage: seeds [--check] (unknown argument {other:?})");
            return ExitCode::from(2);
        }
    };
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut stale = Vec::new();
    let mut total = 0;
    let all = seeds::all();
    for seed in &all {
        seeds::run_target(seed.target, &seed.data);
        total += seed.data.len();
        let dir = corpus.join(seed.target);
        let path = dir.join(&seed.name);
        if check {
            if fs::read(&path).ok().as_deref() != Some(&seed.data[..]) {
                stale.push(path.display().to_string());
            }
        } else if let Err(e) = fs::create_dir_all(&dir).and_then(|()| fs::write(&path, &seed.data)) {
            eprintln!("error: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if !stale.is_empty() {
        eprintln!("error: {} seed files are missing or stale:", stale.len());
        for p in &stale {
            eprintln!("  {p}");
        }
        eprintln!("regenerate them: cargo run --manifest-path fuzz/Cargo.toml --example seeds");
        return ExitCode::FAILURE;
    }
    let verb = if check { "checked" } else { "wrote" };
    println!("{verb} {} seeds for {} targets, {total} bytes", all.len(), seeds::TARGETS.len());
    ExitCode::SUCCESS
}
