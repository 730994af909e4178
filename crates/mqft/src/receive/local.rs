//! The receiver's own directory: what a sender may be told of a local error, and a
//! check at start that files can be created at all.

use std::io;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_reasons_are_the_os_words() {
        assert_eq!(os_reason(&io::Error::from_raw_os_error(30)), "read-only file system");
        assert_eq!(os_reason(&io::Error::from_raw_os_error(13)), "permission denied");
        // The message may name local paths: only the kind goes out.
        let full = io::Error::new(io::ErrorKind::StorageFull, "9 bytes needed, 1 free in /srv/in");
        assert_eq!(os_reason(&full), "no storage space");
    }
}
