//! `mqft completions SHELL` and `mqft man`: text generated from the same clap
//! definitions that parse the flags, so they cannot drift from them.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::args::Cli;

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "mqft", &mut out);
    write_stdout(&out)
}

/// Writes the manual page mqft(1) as roff to stdout, or, with `dir`, the pages
/// of `mqft` and of each subcommand (mqft-send(1), ...) as files into `dir`.
pub fn man(dir: Option<&Path>) -> ExitCode {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let Some(dir) = dir else {
        let mut out = Vec::new();
        if let Err(e) = clap_mangen::Man::new(cmd).render(&mut out) {
            eprintln!("mqft: error: cannot render the manual page: {e}");
            return ExitCode::from(1);
        }
        return write_stdout(&out);
    };
    match std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(cmd, dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mqft: error: cannot write manual pages to {}: {e}", dir.display());
            ExitCode::from(8)
        }
    }
}

/// Writes `bytes` to stdout; a closed pipe (`mqft man | head`) is not an error.
fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mqft: error: cannot write to stdout: {e}");
            ExitCode::from(8)
        }
    }
}
