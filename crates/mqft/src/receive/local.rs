//! The receiver's own directory: what a sender may be told of a local error, and a
//! check at start that files can be created at all.

use std::io;
use std::path::{Path, PathBuf};

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
