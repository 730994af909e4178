//! Pipes: `send -` (standard input) and `receive --once --stdout`.
//!
//! `send -` sends standard input as a stream (protocol version 6): a thread copies
//! it into a private spool, and the send reads each chunk back from there as soon
//! as it is whole, so the first chunks leave while the input is still being
//! written (see `mqft::spool`); the size and hash follow at the end. A signed,
//! encrypted or held send needs the hash before the first chunk: for those the
//! input is copied to its end first, and then sent as a file. `receive --once --stdout`
//! receives into a private folder of the state folder as any receive does, and
//! only once the SHA-256 checked out copies the file to standard output and removes
//! it: a reader of the pipe never sees bytes that were not verified. While it runs,
//! standard output is kept for the data alone: everything else the program prints
//! (progress, `--json` events, notes, errors) goes to stderr.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use mqft::spool::{self, Spool};
use mqft::SendFile;

/// Standard output closed before the whole file was written: its reader quit
/// (`mqft receive --once --stdout | head`). Exit code 9.
#[derive(Debug, thiserror::Error)]
#[error("standard output closed before all of {0} was written (broken pipe): its reader quit")]
pub struct StdoutClosed(String);

/// Standard input as a stream to send as `name`, and its spool (removed when
/// dropped): a thread of its own copies the input into the spool while the send
/// follows it. The thread is not joined: it may wait on an input that never ends
/// after the send gave up, and the process's exit ends it.
pub fn stream_stdin(name: &str) -> Result<(Spool, SendFile)> {
    note_if_terminal();
    let (spool, file) = Spool::create(None, name).context("cannot create the spool for standard input")?;
    let (progress, filled) = tokio::sync::watch::channel(spool::Filled::default());
    std::thread::Builder::new()
        .name("mqft-stdin".into())
        .spawn(move || {
            // The send reports a failed copy (`Filled::end`) as its error.
            if let Ok(s) = spool::fill_watched(io::stdin().lock(), file, &progress) {
                tracing::info!(size = s.size, "standard input read to its end");
            }
        })
        .context("cannot start the thread that reads standard input")?;
    let file = spool.send_stream(name, filled);
    Ok((spool, file))
}

/// Typed at a terminal, the input ends only with Ctrl-D: say so, or it looks hung.
fn note_if_terminal() {
    if io::IsTerminal::is_terminal(&io::stdin()) {
        eprintln!("note: reading standard input until end of file (Ctrl-D)");
    }
}

/// Reads standard input to its end into a spool: the spool (removed when
/// dropped, and so when this future is dropped half way) and the file to send
/// as `name`. For a send whose manifest needs the hash first (signed,
/// encrypted, held).
pub async fn spool_stdin(name: &str) -> Result<(Spool, SendFile)> {
    note_if_terminal();
    let (spool, file) = Spool::create(None, name).context("cannot create the spool for standard input")?;
    // A blocking read, on its own thread; the spool stays here, so that a stop
    // signal can drop it (removing the file) while the thread still waits for input.
    let spooled = tokio::task::spawn_blocking(move || spool::fill(io::stdin().lock(), file))
        .await
        .context("the thread reading standard input stopped")?
        .map_err(|e| anyhow::Error::new(e).context("cannot spool standard input"))?;
    tracing::info!(size = spooled.size, path = %spool.path().display(), "standard input spooled");
    let file = spool.send_file(name);
    Ok((spool, file))
}

/// SIGINT and SIGTERM, caught from the moment it is made: a spool must be
/// dropped, not left behind, on either, and their defaults would kill the
/// process where it stands. Armed before the spool is created, so that no
/// signal falls between the two.
pub struct Stop {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Stop {
    /// Starts catching both signals.
    pub fn arm() -> Stop {
        use tokio::signal::unix::{signal, SignalKind};
        let catch = |kind: SignalKind, what: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle {what}");
                None
            }
        };
        Stop { int: catch(SignalKind::interrupt(), "SIGINT"), term: catch(SignalKind::terminate(), "SIGTERM") }
    }

    /// Resolves at the first of the two.
    pub async fn wait(&mut self) {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.int) => {}
            () = recv(&mut self.term) => {}
        }
    }
}

/// Cancels `token` at `stop`'s signal, and remembers that it did.
pub fn on_stop(mut stop: Stop, token: mqft::CancellationToken) -> Arc<AtomicBool> {
    let hit = Arc::new(AtomicBool::new(false));
    let flag = hit.clone();
    tokio::spawn(async move {
        stop.wait().await;
        flag.store(true, Ordering::SeqCst);
        token.cancel();
    });
    hit
}

/// Keeps standard output for the data: returns a handle to it, and points file
/// descriptor 1 at stderr, so that whatever else is printed, by this program or
/// a library, goes there. Call before anything is printed.
pub fn take_stdout() -> Result<File> {
    let data = io::stdout().as_fd().try_clone_to_owned().context("cannot duplicate standard output")?;
    rustix::stdio::dup2_stdout(io::stderr().as_fd()).context("cannot point standard output at stderr")?;
    Ok(File::from(data))
}

/// The private folder a `--stdout` receive puts its file in: `stdout` in the state
/// folder `state`, mode 0700. A symlink at the default state folder or at this
/// folder is refused: it would take the file elsewhere.
pub fn private_dir(state: &Path, state_given: bool) -> Result<PathBuf> {
    let dir = state.join("stdout");
    let planted = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_symlink());
    if (!state_given && planted(state)) || planted(&dir) {
        let why = format!("{} is a symlink, not the receiver's state folder", state.display());
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, why).into());
    }
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// A received file in the private folder; removed when dropped, written out or
/// not.
pub struct Received(pub PathBuf);

impl Drop for Received {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.0.display(), error = %e, "cannot remove the received copy");
            }
        }
    }
}

/// Copies the verified file to `out` (standard output), in order; memory holds at
/// most one copy buffer (the kernel moves the bytes where it can).
pub async fn write_out(file: &Received, mut out: File) -> Result<()> {
    let path = file.0.clone();
    let copied = tokio::task::spawn_blocking(move || -> io::Result<Result<u64, io::Error>> {
        let mut src = File::open(&path)?;
        Ok(io::copy(&mut src, &mut out))
    })
    .await
    .context("the thread writing standard output stopped")?;
    let name = file.0.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match copied {
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read the received {}", file.0.display()))),
        Ok(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed(crate::report::escape(&name)).into()),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context("cannot write standard output")),
        Ok(Ok(n)) => {
            tracing::info!(bytes = n, "written to standard output");
            Ok(())
        }
    }
}
