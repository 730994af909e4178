//! What a receiver running as a service needs beyond receiving: `--exec` hooks that
//! run once per completed file, and stopping cleanly on SIGTERM.
//!
//! # Once per completed file
//!
//! A hook runs when a transfer completes. A transfer offered again later (a second
//! send, a sender that missed the receiver's answer, a restarted receiver) is
//! answered "already have it" by the library: that is an event in the logs and the
//! JSON, not a new hook run, and not a new path on stdout.
//!
//! Across restarts and crashes a journal in the receiver's state folder decides,
//! `exec/` in `<out>/.mqft/` or the `--state-dir` (a leading dot: no received
//! file can have that name). When a file completes, the record
//! `<transfer>.pending` is written before its hook starts; when the hook has exited
//! (whatever its status) the record is renamed to `<transfer>.done`. So:
//!
//! - a receiver stopped while hooks ran waits for them; hooks still waiting for a
//!   slot keep their `.pending` record and run when the receiver starts again;
//! - after a crash or SIGKILL, every `.pending` hook runs again at the next start,
//!   and so does a hook that a signal killed (Ctrl-C in a terminal reaches the
//!   hooks too): a hook cut short is run again, so hooks should be safe to repeat
//!   (at least once, never lost); an exit status, 0 or not, counts as done;
//! - a crash after the file got its name but before its record was written leaves
//!   no record: the next "already have it" for that transfer runs the hook, as does
//!   any "already have it" with no `.done` record (for example for files received
//!   before `--exec` was configured).
//!
//! One `.done` record of a few hundred bytes stays per transfer. It is touched
//! whenever its transfer is answered "already have it", and removed at a start
//! once untouched for the receiver's `--forget-after` plus [`DONE_SLACK`]: by
//! then the library has forgotten the transfer too (it answers "exists", which
//! runs no hook), so a record never goes while the memory it pairs with stays.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use mqft::proto::TransferId;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;

use crate::report::display_path;

/// The journal directory under the state folder.
pub const JOURNAL_DIR: &str = "exec";

/// How much longer than `--forget-after` an untouched `.done` record is kept.
pub const DONE_SLACK: Duration = Duration::from_secs(86_400);

/// A completed file, as a hook sees it.
#[derive(Debug, Clone)]
pub struct Done {
    pub transfer: String,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// The sender's name from the manifest, or empty.
    pub sender: String,
}

impl Done {
    pub fn new(transfer: &TransferId, path: &Path, size: u64, sha256: &[u8; 32], sender: &str) -> Done {
        Done {
            transfer: transfer.to_string(),
            path: path.to_owned(),
            size,
            sha256: hex(sha256),
            sender: sender.to_owned(),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "transfer": self.transfer, "path": self.path.to_string_lossy(), "size": self.size,
            "sha256": self.sha256, "sender": self.sender,
        })
    }

    fn from_json(v: &Value) -> Option<Done> {
        Some(Done {
            transfer: v["transfer"].as_str()?.to_owned(),
            path: PathBuf::from(v["path"].as_str()?),
            size: v["size"].as_u64()?,
            sha256: v["sha256"].as_str()?.to_owned(),
            // Absent from a journal an older release wrote.
            sender: v["sender"].as_str().unwrap_or_default().to_owned(),
        })
    }
}

/// Lower-case hex, as `sha256sum` prints it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How the outcome of a hook is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Json,
    Text,
    /// Only failures, on stderr.
    Quiet,
}

/// Runs `--exec` hooks, at most `jobs` at once.
pub struct Exec {
    command: String,
    slots: Arc<Semaphore>,
    journal: Journal,
    running: JoinSet<()>,
    show: Show,
}

impl Exec {
    /// Hooks for files received by a receiver with the state folder `state`;
    /// runs those a crash left pending.
    /// `.done` records untouched for `forget_after` (plus [`DONE_SLACK`]) go.
    pub async fn start(
        command: String,
        jobs: usize,
        state: &Path,
        forget_after: Option<Duration>,
        show: Show,
    ) -> Result<Exec> {
        let journal = Journal::open(state.join(JOURNAL_DIR))?;
        let pending = journal
            .run(move |dir| -> Result<Vec<Done>> {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
                if let Some(age) = forget_after {
                    forget_done(dir, age + DONE_SLACK);
                }
                pending_records(dir)
            })
            .await??;
        let mut exec =
            Exec { command, slots: Arc::new(Semaphore::new(jobs.max(1))), journal, running: JoinSet::new(), show };
        for done in pending {
            tracing::info!(path = %done.path.display(), "running the hook a stop cut short");
            exec.spawn(done, None);
        }
        Ok(exec)
    }

    /// A file completed: its hook runs (again, if it completed anew), once its
    /// `.pending` record is written.
    pub fn completed(&mut self, done: Done) {
        let recorded = self.journal.run({
            let done = done.clone();
            move |dir| {
                record_pending(dir, &done);
                true
            }
        });
        self.spawn(done, Some(recorded));
    }

    /// A file offered again is already here: its hook runs only if there is no
    /// record that it ran (see the module docs).
    pub fn already_complete(&mut self, done: Done) {
        let unknown = self.journal.run({
            let done = done.clone();
            move |dir| {
                let known = ["done", "pending"].iter().any(|ext| record(dir, &done.transfer, ext).exists());
                // The library still remembers the transfer: so must the record.
                if let Ok(f) = std::fs::File::options().write(true).open(record(dir, &done.transfer, "done")) {
                    let _ = f.set_modified(SystemTime::now());
                }
                if !known {
                    record_pending(dir, &done);
                }
                !known
            }
        });
        self.spawn(done, Some(unknown));
    }

    /// Waits for every hook started or waiting to end.
    pub async fn finish(mut self) {
        while self.running.join_next().await.is_some() {}
    }

    /// Runs `done`'s hook, once `go` (the journal's answer) says to, if given.
    fn spawn(&mut self, done: Done, go: Option<oneshot::Receiver<bool>>) {
        let slots = Arc::clone(&self.slots);
        let command = self.command.clone();
        let journal = self.journal.clone();
        let show = self.show;
        self.running.spawn(async move {
            if let Some(go) = go {
                if go.await != Ok(true) {
                    return;
                }
            }
            // The semaphore is never closed, so this waits for a slot.
            let Ok(_slot) = slots.acquire_owned().await else { return };
            let outcome = run_hook(&command, &done).await;
            // A hook killed by a signal (Ctrl-C reaches the whole process group,
            // a shutdown kills what is left) did not finish: it stays pending and
            // runs again at the next start. An exit status, 0 or not, is its word.
            let killed = outcome.as_ref().is_ok_and(|s| {
                use std::os::unix::process::ExitStatusExt;
                s.signal().is_some()
            });
            if !killed {
                let transfer = done.transfer.clone();
                let _ = journal
                    .run(move |dir| {
                        let _ = std::fs::rename(record(dir, &transfer, "pending"), record(dir, &transfer, "done"));
                    })
                    .await;
            }
            report(show, &done, &command, outcome);
        });
    }
}

/// The journal's file work, on a thread of its own and in the order it was
/// asked for: the async workers never wait on the disk for it, and a file
/// offered again right after it completed finds the record its completion
/// wrote.
#[derive(Clone)]
struct Journal {
    ops: std::sync::mpsc::Sender<JournalOp>,
}

/// One piece of the journal's file work, given the journal's folder.
type JournalOp = Box<dyn FnOnce(&Path) + Send>;

impl Journal {
    /// A journal in `dir` (not created yet: the first job does that). Its
    /// thread ends once every clone is dropped.
    fn open(dir: PathBuf) -> Result<Journal> {
        let (ops, rx) = std::sync::mpsc::channel::<JournalOp>();
        std::thread::Builder::new()
            .name("mqft-journal".into())
            .spawn(move || {
                for op in rx {
                    op(&dir);
                }
            })
            .context("cannot start the exec journal's thread")?;
        Ok(Journal { ops })
    }

    /// Runs `op` on the journal's thread, after every job asked for before it.
    fn run<T: Send + 'static>(&self, op: impl FnOnce(&Path) -> T + Send + 'static) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        // The thread lives as long as a clone of `ops`; were it gone, the
        // answer's sender drops and the caller sees the channel closed.
        let _ = self.ops.send(Box::new(move |dir: &Path| {
            let _ = tx.send(op(dir));
        }));
        rx
    }
}

/// `<dir>/<transfer>.<ext>`.
fn record(dir: &Path, transfer: &str, ext: &str) -> PathBuf {
    dir.join(format!("{transfer}.{ext}"))
}

/// Writes `done`'s `.pending` record (its hook runs even if this fails: only a
/// crash before it ends would lose it).
fn record_pending(dir: &Path, done: &Done) {
    let pending = record(dir, &done.transfer, "pending");
    let _ = std::fs::remove_file(record(dir, &done.transfer, "done"));
    if let Err(e) = std::fs::write(&pending, done.to_json().to_string()) {
        tracing::warn!(path = %pending.display(), error = %e, "cannot write the exec journal");
    }
}

/// Removes the `.done` records untouched for `age`.
fn forget_done(dir: &Path, age: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let now = SystemTime::now();
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let old = std::fs::symlink_metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|idle| idle > age));
        if old && path.extension().is_some_and(|x| x == "done") {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// The hooks a stop cut short, in the order of their records' names; records
/// with no file to run for are dropped.
fn pending_records(dir: &Path) -> Result<Vec<Done>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut pending: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pending"))
        .collect();
    pending.sort();
    let mut runs = Vec::new();
    for record in pending {
        let done = std::fs::read_to_string(&record)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| Done::from_json(&v));
        match done {
            Some(done) if done.path.is_file() => runs.push(done),
            // A record cut short by a crash while it was written, or for a file
            // deleted since: nothing to run it for.
            _ => {
                tracing::warn!(record = %record.display(), "dropping an exec record with no file");
                let _ = std::fs::remove_file(&record);
            }
        }
    }
    Ok(runs)
}

/// `sh -c` with `{}` replaced by the quoted path, and the file's facts in the
/// environment. Its stdout goes to stderr: stdout is the receiver's list of paths.
async fn run_hook(command: &str, done: &Done) -> std::io::Result<std::process::ExitStatus> {
    let line = command.replace("{}", &shell_quote(&done.path.to_string_lossy()));
    let name = done.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut child = tokio::process::Command::new("sh");
    child
        .arg("-c")
        .arg(line)
        .env("MQFT_PATH", &done.path)
        .env("MQFT_NAME", name)
        .env("MQFT_SIZE", done.size.to_string())
        .env("MQFT_SHA256", &done.sha256)
        .env("MQFT_TRANSFER", &done.transfer)
        // The name the sender gave itself (`[0-9a-z_-]`, so safe in a shell), or
        // empty for an unnamed sender.
        .env("MQFT_SENDER", &done.sender)
        // The broker password is the receiver's, not the hook's.
        .env_remove("MQFT_PASSWORD")
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .kill_on_drop(false);
    child.status().await
}

fn report(show: Show, done: &Done, command: &str, outcome: std::io::Result<std::process::ExitStatus>) {
    use std::os::unix::process::ExitStatusExt;
    let (code, signal, error) = match &outcome {
        Ok(s) => (s.code(), s.signal(), None),
        Err(e) => (None, None, Some(e.to_string())),
    };
    let ok = code == Some(0);
    match show {
        Show::Json => println!(
            "{}",
            json!({
                "event": "exec", "transfer": done.transfer, "path": done.path.to_string_lossy(),
                "status": code, "signal": signal, "error": error,
            })
        ),
        _ if ok && show == Show::Quiet => {}
        _ => {
            let how = match (code, signal, error) {
                (_, _, Some(e)) => format!("could not start: {e}"),
                (Some(c), _, _) => format!("exit status {c}"),
                (None, Some(s), _) => format!("killed by signal {s}; it runs again at the next start"),
                _ => "ended".to_owned(),
            };
            let path = display_path(&done.path);
            if ok {
                eprintln!("exec for {path}: {how}");
            } else {
                eprintln!("mqft: warning: exec `{}` for {path}: {how}", crate::report::escape(command));
            }
        }
    }
}

/// `'...'` with every `'` as `'\''`: one word for `sh`, whatever the name holds.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Which signal asked this process to stop.
pub const SIGINT: u8 = 2;
pub const SIGTERM: u8 = 15;

/// Cancels `token` on Ctrl-C (SIGINT) or SIGTERM, and remembers which came first
/// (0 while none has).
pub fn on_stop_signals(token: mqft::CancellationToken) -> Arc<AtomicU8> {
    let hit = Arc::new(AtomicU8::new(0));
    let (flag, t) = (hit.clone(), token.clone());
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = flag.compare_exchange(0, SIGINT, Ordering::SeqCst, Ordering::SeqCst);
            t.cancel();
        }
    });
    let flag = hit.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Without a handler SIGTERM would kill the process, unsaved: if none can be
        // installed, say so.
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                if term.recv().await.is_some() {
                    let _ = flag.compare_exchange(0, SIGTERM, Ordering::SeqCst, Ordering::SeqCst);
                    token.cancel();
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot handle SIGTERM"),
        }
    });
    hit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_a_name_one_word() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's $(x)"), "'it'\\''s $(x)'");
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
