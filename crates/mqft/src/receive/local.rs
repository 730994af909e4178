//! The receiver's own directory: what a sender may be told of a local error, a
//! check at start that files can be created at all, and the state folder's
//! upkeep (stale partial files removed, old completed records forgotten).

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{blocking, ReceiveOptions};
use crate::proto::TransferId;
use crate::store::{self, StateDir};
use crate::Error;

/// The longest time between two looks for stale partial files and old records.
const TIDY_EVERY: Duration = Duration::from_secs(3600);

/// What a sender is told of a local I/O error: the operating system's words,
/// without the "(os error N)" tail, such as "read-only file system". Never the
/// error's own message, which may name local paths: only the OS's text for its
/// code, or the kind of error.
pub(super) fn os_reason(e: &io::Error) -> String {
    let text = match e.raw_os_error() {
        Some(code) => {
            let full = io::Error::from_raw_os_error(code).to_string();
            full.split(" (os error").next().unwrap_or(&full).to_owned()
        }
        None => e.kind().to_string(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// Checks at start that files can be created in `dir`: a probe file is created
/// (never through an existing name: `create_new` fails on anything there, a
/// symlink included) and removed. Returns the OS error otherwise, so that a
/// read-only or foreign directory stops the receive at once rather than refusing
/// every file later.
pub(super) fn probe_dir(dir: &std::path::Path) -> io::Result<()> {
    let name = format!(".mqft-probe-{}-{:08x}", std::process::id(), rand::random::<u32>());
    let path = dir.join(name);
    std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
    std::fs::remove_file(&path)
}

/// Opens the state folder of a receive into `dir`.
pub(super) async fn open_state(dir: &Path, opts: &ReceiveOptions) -> Result<Arc<StateDir>, Error> {
    let (out, state_dir, forget) = (dir.to_owned(), opts.state_dir.clone(), opts.forget_after);
    let opened = blocking(move || StateDir::open(&out, state_dir.as_deref(), forget)).await;
    let root = opts.state_dir.clone().unwrap_or_else(|| dir.join(store::STATE_DIR_NAME));
    let state = opened.map_err(|e| Error::io("open the state folder", &root, e))?;
    info!(state = %state.root.display(), completed = state.completed_count(), "state folder open");
    // Pool members share a folder on purpose (a member that takes over a transfer
    // resumes its `.part`).
    if state.shared && opts.pool.is_none() {
        warn!(
            state = %state.root.display(),
            "another receiver is using this state folder: each may forget files the other received \
             (give each its own --out or --state-dir)"
        );
    }
    Ok(state)
}

/// How long until the next [`tidy`]: hourly, or every `prune_after` if that is
/// shorter (at least a second).
pub(super) fn tidy_every(prune_after: Option<Duration>) -> Duration {
    prune_after.map_or(TIDY_EVERY, |d| d.clamp(Duration::from_secs(1), TIDY_EVERY))
}

/// Removes the files of transfers not in `active` that have not advanced for
/// `prune_after` (logging each), and forgets completed transfers past their
/// age. Failures are logged: the receive goes on without the upkeep.
pub(super) async fn tidy(state: &Arc<StateDir>, active: HashSet<TransferId>, prune_after: Option<Duration>) {
    let st = Arc::clone(state);
    let done = blocking(move || {
        let pruned = match prune_after {
            Some(age) => store::prune(&st, &active, age)?,
            None => Vec::new(),
        };
        let forgotten = st.forget_expired()?;
        Ok((pruned, forgotten))
    })
    .await;
    match done {
        Ok((pruned, forgotten)) => {
            for p in pruned {
                warn!(
                    path = %p.path.display(),
                    bytes = p.bytes,
                    idle_secs = p.idle.as_secs(),
                    "removed the partial file of a transfer that had not advanced for {}",
                    human(p.idle)
                );
            }
            if forgotten > 0 {
                info!(forgotten, "forgot completed transfers past their age");
            }
        }
        Err(e) => warn!(root = %state.root.display(), error = %e, "cannot tidy the state folder"),
    }
}

/// A duration as the largest whole unit: `3d`, `5h`, `12m`, `40s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        86_400.. => format!("{}d", s / 86_400),
        3600.. => format!("{}h", s / 3600),
        60.. => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// The directory of `sender`'s files under `root` (`root/_unknown` for an
/// unnamed sender), created (mode 0777 less the umask) when `create` and it is
/// missing. A manifest's sender name is `[0-9a-z_-]` (checked when it was
/// decoded), so it is one plain component. Whoever can write to `root` could
/// plant a symlink at that name to send files elsewhere: anything there that is
/// not a real directory (checked without following it) is an error, never
/// followed or replaced.
pub(super) fn sender_dir(root: &Path, sender: &str, create: bool) -> io::Result<PathBuf> {
    let name = if sender.is_empty() { super::UNKNOWN_SENDER_DIR } else { sender };
    if !crate::proto::wire::is_sender_name(name) || name.is_empty() {
        // Unreachable for a decoded manifest; a name that is not one component
        // must never be joined to a path all the same.
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad sender name"));
    }
    let dir = root.join(name);
    if create {
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let m = std::fs::symlink_metadata(&dir)?;
    if m.file_type().is_symlink() {
        return Err(rustix::io::Errno::LOOP.into());
    }
    if !m.is_dir() {
        return Err(rustix::io::Errno::NOTDIR.into());
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_dirs_are_created_once_and_never_through_a_link() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        assert_eq!(sender_dir(root.path(), "cam1", true).unwrap(), root.path().join("cam1"));
        assert!(root.path().join("cam1").is_dir());
        assert_eq!(sender_dir(root.path(), "cam1", true).unwrap(), root.path().join("cam1"));
        assert_eq!(sender_dir(root.path(), "", true).unwrap(), root.path().join("_unknown"));
        assert_eq!(sender_dir(root.path(), "cam2", false).unwrap_err().kind(), io::ErrorKind::NotFound);
        std::os::unix::fs::symlink(elsewhere.path(), root.path().join("cam3")).unwrap();
        let e = sender_dir(root.path(), "cam3", true).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(rustix::io::Errno::LOOP.raw_os_error()));
        std::fs::write(root.path().join("cam4"), b"x").unwrap();
        assert!(sender_dir(root.path(), "cam4", true).is_err());
        assert!(sender_dir(root.path(), "../x", true).is_err());
    }

    #[test]
    fn os_reasons_are_the_os_words() {
        assert_eq!(os_reason(&io::Error::from_raw_os_error(30)), "read-only file system");
        assert_eq!(os_reason(&io::Error::from_raw_os_error(13)), "permission denied");
        // The message may name local paths: only the kind goes out.
        let full = io::Error::new(io::ErrorKind::StorageFull, "9 bytes needed, 1 free in /srv/in");
        assert_eq!(os_reason(&full), "no storage space");
    }
}
