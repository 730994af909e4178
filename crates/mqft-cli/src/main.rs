//! `mqft`: the command line over the `mqft` library.
//!
//! This binary only parses flags, wires the library together, shows progress, and
//! maps outcomes to exit codes (listed in [`args::EXIT_CODES`] and under `--help`).
//! No protocol logic lives here.

#![deny(unsafe_code)]

mod args;
mod config_file;
#[cfg(feature = "demo")]
mod demo;
mod generate;
mod heap;
mod report;
mod service;
mod stdio;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use mqft::{Client, ErrorKind};

use args::{Cli, Command, OutputArgs, ReceiveArgs, SendArgs, UsageError};
use report::Reporter;

/// Exit codes: see [`args::EXIT_CODES`].
mod code {
    pub const INTERNAL: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const BROKER: u8 = 3;
    pub const NO_PEER: u8 = 4;
    pub const REJECTED: u8 = 5;
    pub const INTEGRITY: u8 = 6;
    pub const TRANSFER: u8 = 7;
    pub const IO: u8 = 8;
    pub const STDOUT_CLOSED: u8 = 9;
    pub const INTERRUPTED: u8 = 130;
}

/// Ended by Ctrl-C.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
struct Interrupted;

/// A receive stopped by Ctrl-C: it stopped cleanly (saved, disconnected), so this
/// is no error, but the exit status says it was interrupted, as shells expect.
#[derive(Debug, thiserror::Error)]
#[error("interrupted; stopped cleanly")]
struct StoppedByCtrlC;

/// `receive --timeout` ran out with nothing received.
#[derive(Debug, thiserror::Error)]
#[error("nothing arrived within {0} s")]
struct NothingArrived(u64);

fn main() -> ExitCode {
    heap::one_arena();
    // The config file's settings become flags, so that they are checked as flags are.
    let raw = match config_file::apply(std::env::args_os().collect()) {
        Ok(raw) => raw,
        Err(e) => {
            eprintln!("mqft: error: {e}");
            return ExitCode::from(code::USAGE);
        }
    };
    let cli = match Cli::try_parse_from(raw) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(code::USAGE) } else { ExitCode::SUCCESS };
        }
    };
    let output = match &cli.command {
        Command::Send(a) => a.output,
        Command::Receive(a) => a.output,
        Command::Status(a) => a.output,
        #[cfg(feature = "demo")]
        Command::Demo(a) => a.output,
        // Text for the shell or `man`, written out before any runtime starts.
        Command::Completions(a) => return generate::completions(a.shell),
        Command::Man(a) => return generate::man(a.dir.as_deref()),
        Command::Keygen(a) => return keygen(a),
    };
    if let Some(path) = &cli.log_file {
        if let Err(e) = log_to_file(path) {
            eprintln!("mqft: error: cannot log to {}: {e}", path.display());
            return ExitCode::from(code::IO);
        }
    }
    init_logging(output);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mqft: error: cannot start the async runtime: {e}");
            return ExitCode::from(code::INTERNAL);
        }
    };
    let result = runtime.block_on(run(cli));
    // Background tasks (a connection's last goodbyes) get a moment, not forever.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<StoppedByCtrlC>().is_some() => {
            if output.json {
                println!("{}", serde_json::json!({"event": "stopped", "signal": "SIGINT"}));
            } else {
                eprintln!("mqft: {e}");
            }
            ExitCode::from(code::INTERRUPTED)
        }
        Err(e) => {
            if !output.json {
                eprintln!("mqft: error: {e:#}");
            } else {
                println!(
                    "{}",
                    serde_json::json!({"event": "error", "message": format!("{e:#}"), "exit": exit_code(&e)})
                );
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Runs the command's own file work (walks, checks, folders) on tokio's blocking
/// pool, so that the async workers stay free for the connection and the
/// library's engines; a panic there is this thread's.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// `--log-file`: stderr (logs, notes, errors, panics, the output of hooks) goes to
/// the end of `path` from here on.
fn log_to_file(path: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    rustix::stdio::dup2_stderr(&file)?;
    Ok(())
}

/// `-v` shows this program's and the library's logs; `RUST_LOG` overrides.
///
/// Colours only on a terminal, and not when `NO_COLOR` is set: a log redirected to a
/// file or read by a supervisor gets plain text, not escape codes.
fn init_logging(out: OutputArgs) {
    // By default rumqttc shows only errors: its warnings (an UnsubAck with
    // NoSubscriptionExisted after a broker restart, ...) are about its own
    // bookkeeping, which mqft handles, and read like faults to a user.
    let level = match out.verbose {
        0 => "warn,rumqttc=error,rumqttd=off",
        1 => "info,rumqttd=warn",
        _ => "debug,rumqttd=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = std::io::stderr().is_terminal() && !no_color;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    // Under systemd, stderr goes to the journal, which stamps each line itself.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        let _ = builder.without_time().try_init();
    } else {
        let _ = builder.try_init();
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<UsageError>().is_some() {
        return code::USAGE;
    }
    if e.downcast_ref::<Interrupted>().is_some() || e.downcast_ref::<StoppedByCtrlC>().is_some() {
        return code::INTERRUPTED;
    }
    if e.downcast_ref::<NothingArrived>().is_some() {
        return code::NO_PEER;
    }
    if e.downcast_ref::<stdio::StdoutClosed>().is_some() {
        return code::STDOUT_CLOSED;
    }
    if let Some(e) = e.downcast_ref::<mqft::Error>() {
        return match e.kind() {
            ErrorKind::NoReceiver => code::NO_PEER,
            ErrorKind::Rejected => code::REJECTED,
            ErrorKind::Integrity => code::INTEGRITY,
            ErrorKind::Transfer => code::TRANSFER,
            ErrorKind::Broker => code::BROKER,
            ErrorKind::Usage => code::USAGE,
            ErrorKind::Io => code::IO,
            ErrorKind::Cancelled => code::INTERRUPTED,
            _ => code::INTERNAL,
        };
    }
    if e.downcast_ref::<std::io::Error>().is_some() {
        return code::IO;
    }
    code::INTERNAL
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Send(a) => send(a).await,
        Command::Receive(a) => receive(a).await,
        Command::Status(a) => status(a).await,
        #[cfg(feature = "demo")]
        Command::Demo(a) => demo::run(a).await,
        // Handled in `main`, before the runtime starts.
        Command::Completions(_) | Command::Man(_) | Command::Keygen(_) => Ok(()),
    }
}

/// `mqft keygen`: writes the key pair and prints the public key, for a receiver's
/// --trust.
fn keygen(a: &args::KeygenArgs) -> ExitCode {
    let name = a.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
    });
    let name = if name.is_empty() { "mqft".to_owned() } else { name.replace(char::is_whitespace, "-") };
    let key = mqft::keys::SecretKey::generate();
    match key.write(&a.out, &name) {
        Ok(pub_path) => {
            eprintln!("mqft: wrote the secret key to {} and the public key to {}", a.out.display(), pub_path.display());
            println!("{}", mqft::keys::PublicKey { name: Some(name), ..key.public() });
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mqft: error: {:#}", anyhow::Error::from(e));
            ExitCode::from(code::IO)
        }
    }
}

/// Cancels `token` on Ctrl-C, and remembers that it did.
fn on_ctrl_c(token: mqft::CancellationToken) -> Arc<AtomicBool> {
    let hit = Arc::new(AtomicBool::new(false));
    let flag = hit.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::SeqCst);
            token.cancel();
        }
    });
    hit
}

async fn send(a: SendArgs) -> Result<()> {
    let cfg = a.broker.config()?;
    let opts = a.options()?;
    // `send -`: standard input, sent as it is copied into a spool, or copied to
    // its end first where the manifest needs the hash. The spool is removed when
    // `spool` drops: on every return below, a stop signal's included.
    let (tree, spool) = match a.stdin_name()? {
        Some(name) => {
            let mut stop = stdio::Stop::arm();
            let hash_first = opts.sign.is_some() || !opts.encrypt_to.is_empty() || opts.hold.is_some();
            let (spool, file) = if hash_first {
                tokio::select! {
                    r = stdio::spool_stdin(&name) => r?,
                    () = stop.wait() => return Err(Interrupted.into()),
                }
            } else {
                stdio::stream_stdin(&name)?
            };
            let mut tree = mqft::tree::Tree::default();
            tree.files.push(file);
            (tree, Some((spool, stop)))
        }
        None => {
            let (files, follow_symlinks) = (a.files.clone(), a.follow_symlinks);
            (blocking(move || files_to_send(&files, follow_symlinks)).await?, None)
        }
    };
    let started = std::time::Instant::now();
    let mut reporter = Reporter::new(a.output);
    if spool.is_some() {
        if let Some(file) = tree.files.first() {
            reporter.stdin_spool(file.path.clone());
        }
    }
    reporter.connecting(&cfg.addr());
    let mut handle = Client::new(cfg).send(tree.files, opts);
    let (spool, interrupted) = match spool {
        Some((spool, stop)) => (Some(spool), stdio::on_stop(stop, handle.cancellation_token())),
        None => (None, on_ctrl_c(handle.cancellation_token())),
    };
    while let Some(e) = handle.next_event().await {
        reporter.send_event(&e);
    }
    reporter.finish();
    let result = handle.wait().await;
    drop(spool);
    if interrupted.load(Ordering::SeqCst) {
        return Err(Interrupted.into());
    }
    let report = result?;
    reporter.held(&report, a.hold, &a.to);
    if a.hold.is_none() {
        // A held file was published, not delivered: the lines above say it.
        reporter.send_summary(&report);
    }
    if a.output.json {
        println!("{}", report::send_summary(&report, reporter.sent_bytes(), started.elapsed()));
    }
    if let Some((path, why)) = tree.errors.into_iter().next() {
        // Exit as for a file that could not be read: the rest arrived.
        let e = std::io::Error::other(why);
        return Err(anyhow::Error::new(e).context(format!("cannot send {}", path.display())));
    }
    Ok(())
}

/// `mqft status`: what the broker holds under the prefix, and who confirmed it.
async fn status(a: args::StatusArgs) -> Result<()> {
    let cfg = a.broker.config()?;
    match &a.broker.prefixes()?[..] {
        [one] if one.concrete().is_some() => {}
        _ => return Err(UsageError("status takes one --prefix, without '+'".into()).into()),
    }
    let cancel = mqft::CancellationToken::new();
    let interrupted = on_ctrl_c(cancel.clone());
    let result = Client::new(cfg).status(Duration::from_secs(a.wait.max(1)), cancel).await;
    if interrupted.load(Ordering::SeqCst) {
        return Err(Interrupted.into());
    }
    report::print_status(&result?, a.output);
    Ok(())
}

/// The files of `send FILE...`, directories expanded; what cannot be sent is
/// noted, and fails the send after the rest went.
/// Walks the file system: run it off the async workers ([`blocking`]).
fn files_to_send(files: &[std::path::PathBuf], follow_symlinks: bool) -> Result<mqft::tree::Tree> {
    for f in files {
        let meta = std::fs::metadata(f).map_err(|e| UsageError(format!("cannot send {}: {e}", f.display())))?;
        if !meta.is_file() && !meta.is_dir() {
            return Err(UsageError(format!("cannot send {}: not a regular file or directory", f.display())).into());
        }
    }
    // Directories become their files; what a walk cannot take fails alone, after
    // the rest are sent.
    let tree = mqft::tree::expand(files, follow_symlinks);
    for link in &tree.skipped_links {
        eprintln!(
            "note: skipping the symbolic link {} (see --follow-symlinks)",
            report::escape(&link.display().to_string())
        );
    }
    for (path, why) in &tree.errors {
        eprintln!("error: cannot send {}: {why}", report::escape(&path.display().to_string()));
    }
    if tree.files.is_empty() {
        return Err(UsageError("nothing to send".into()).into());
    }
    Ok(tree)
}

async fn receive(a: ReceiveArgs) -> Result<()> {
    // --stdout: the real standard output carries the file and nothing else.
    let data_out = if a.stdout { Some(stdio::take_stdout()?) } else { None };
    let cfg = a.broker.config()?;
    let mut opts = a.options()?;
    // With `{sender}` in --out, the directory is its root.
    let (out, _) = a.out_dir()?;
    // --stdout: received into a private folder of the state folder, not into OUT.
    let out = if a.stdout {
        let state = a.state_root(&out);
        opts.state_dir = Some(state.clone());
        stdio::private_dir(&state, a.state_dir.is_some())?
    } else {
        out
    };
    let made = out.clone();
    blocking(move || args::make_out_dir(&made)).await?;
    let mut exec = match &a.exec {
        Some(command) => {
            let show = if a.output.json {
                service::Show::Json
            } else if a.output.quiet {
                service::Show::Quiet
            } else {
                service::Show::Text
            };
            // A symlink planted at the default state folder must not take the
            // journal elsewhere (the library refuses it as well, but later).
            let state = a.state_root(&out);
            let planted =
                a.state_dir.is_none() && tokio::fs::symlink_metadata(&state).await.is_ok_and(|m| m.is_symlink());
            if planted {
                let why = format!("{} is a symlink, not the receiver's state folder", state.display());
                return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, why).into());
            }
            Some(service::Exec::start(command.clone(), a.exec_jobs, &state, a.forget_after.0, show).await?)
        }
        None => None,
    };
    let mut reporter = Reporter::new(a.output);
    // With --once the one path printed is the answer, even for a file already here.
    reporter.print_already_complete(a.once);
    reporter.connecting(&cfg.addr());
    let mut handle = Client::new(cfg).receive(out.clone(), opts);
    let token = handle.cancellation_token();
    let stopped_by = service::on_stop_signals(token.clone());
    let deadline = a.timeout.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut got_one = false;
    let mut timed_out = false;
    // --stdout: the file that arrived, removed when this drops.
    let mut delivered = None;
    // Every event goes to the reporter and, for a file that arrived, to the hook
    // runner; true for a file that arrived.
    let mut on_event = |e: &mqft::ReceiveEvent| {
        reporter.receive_event(e);
        match e {
            mqft::ReceiveEvent::Completed(mqft::VerifiedFile { transfer, path, size, sha256, sender, .. }) => {
                if a.stdout {
                    delivered = Some(stdio::Received(path.clone()));
                }
                if let Some(exec) = &mut exec {
                    exec.completed(service::Done::new(transfer, path, *size, sha256, sender));
                }
                true
            }
            mqft::ReceiveEvent::AlreadyComplete(mqft::VerifiedFile {
                transfer, path, size, sha256, sender, ..
            }) => {
                // A copy verified by an earlier run that never wrote it out.
                if a.stdout {
                    delivered = Some(stdio::Received(path.clone()));
                }
                if let Some(exec) = &mut exec {
                    exec.already_complete(service::Done::new(transfer, path, *size, sha256, sender));
                }
                true
            }
            _ => false,
        }
    };
    loop {
        let next = async {
            match deadline {
                Some(d) if !got_one => tokio::time::timeout_at(d, handle.next_event()).await.ok(),
                _ => Some(handle.next_event().await),
            }
        };
        match next.await {
            Some(Some(e)) => got_one |= on_event(&e),
            Some(None) => break,
            None => {
                // The deadline passed with nothing received. A transfer already
                // being moved into place still finishes as the receive stops: its
                // file did arrive, and its hook runs.
                token.cancel();
                let mut arrived = false;
                while let Some(e) = handle.next_event().await {
                    arrived |= on_event(&e);
                }
                timed_out = !arrived;
                break;
            }
        }
    }
    reporter.finish();
    let result = handle.wait().await;
    // Hooks already started finish; a stop does not cut them short.
    if let Some(exec) = exec {
        exec.finish().await;
    }
    let stopped_by = stopped_by.load(Ordering::SeqCst);
    let report = match result {
        Ok(report) => report,
        // Stopped before it was connected: nothing received, nothing to save.
        Err(e) if stopped_by != 0 && e.kind() == ErrorKind::Cancelled => mqft::ReceiveReport::default(),
        Err(e) => return Err(e.into()),
    };
    // The file goes out only now, verified, and only to a receive not stopped.
    if let (Some(file), Some(data_out), 0) = (&delivered, data_out, stopped_by) {
        stdio::write_out(file, data_out).await?;
    }
    drop(delivered);
    reporter.receive_summary(&report);
    if a.output.json {
        println!("{}", report::receive_summary(&report));
    }
    if stopped_by == service::SIGINT {
        return Err(StoppedByCtrlC.into());
    }
    if timed_out {
        return Err(NothingArrived(a.timeout.unwrap_or_default()).into());
    }
    Ok(())
}
