//! `send -`: a stream of unknown size (standard input) copied to a private file as
//! it is sent.
//!
//! Since protocol version 6 a transfer may begin before its size is known (a
//! stream, PROTOCOL.md 18): its chunks go out as they fill, and the size and hash
//! follow at the end. What the sender cannot do without a copy is send a chunk
//! again: a receiver that lost one, or joined late, asks for it after the sender
//! has read past it, and standard input cannot be read twice. So a thread copies
//! the stream into the spool ([`fill_watched`]) and tells the send how far it got
//! ([`Filled`]); the send reads its chunks back from the spool, from the page cache
//! where the copy just left them, as soon as each is whole. Nothing waits for the
//! end of the input.
//!
//! A signed, encrypted or held transfer needs the hash (or the ciphertext's) in its
//! manifest, before the first chunk: for those the stream is copied to its end
//! first ([`fill`]), and then sent as any file.
//!
//! The cost is disk, not memory: the spool holds the whole stream once, memory holds
//! one buffer ([`BUF`]) whatever the size.
//!
//! The spool is a file created exclusively with mode 0600 in a directory of its
//! own, mode 0700 under a random name (`.mqft-stdin-XXXXXX/NAME`), in `$TMPDIR` (or
//! the directory given): the file carries the name it is sent under, so that
//! progress and events read `dir.tar`, and nobody else can open or replace it.
//! Both are removed when the [`Spool`] is dropped: after the send, after a refused or failed one, and on
//! an interrupted one as long as the program unwinds (the CLI turns Ctrl-C and
//! SIGTERM into a clean return for that). Only a kill that no program can catch
//! (SIGKILL, a power cut) leaves it behind.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::sync::watch;

use crate::SendFile;

/// The copy's buffer: all the memory a spool takes, whatever the stream's size.
pub const BUF: usize = 1 << 20;

/// A private spool file; dropping it removes the file and its directory.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    /// Dropped after `path`'s owner is done: removes the directory and the file.
    _dir: tempfile::TempDir,
}

/// What a stream held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Spooled {
    /// Bytes read.
    pub size: u64,
}

impl Spool {
    /// A new empty spool in `dir` (default: `$TMPDIR`, else `/tmp`) for a stream to
    /// be sent as `name`, and the file to write it through ([`fill`]). The spool is
    /// owned apart from the handle so that a caller can drop it, removing the file,
    /// while a thread still blocks on the stream.
    pub fn create(dir: Option<&Path>, name: &str) -> io::Result<(Spool, File)> {
        let dir = dir.map_or_else(std::env::temp_dir, Path::to_owned);
        // A random name, created exclusively; 0700 so that nobody else can list,
        // open or replace what is in it (tempfile's default follows the umask).
        let tmp = tempfile::Builder::new()
            .prefix(".mqft-stdin-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(dir)?;
        // Only the last part of the name, and only for display: the name sent is
        // `name` itself, which receivers sanitize.
        let base = name.rsplit('/').find(|p| !p.is_empty() && *p != "." && *p != "..").unwrap_or("stdin");
        let path = tmp.path().join(base);
        let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        Ok((Spool { path, _dir: tmp }, file))
    }

    /// Where the spool is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The spool as a file to send under `name`, once [`fill`] copied the stream.
    pub fn send_file(&self, name: impl Into<String>) -> SendFile {
        SendFile::named(self.path.clone(), name)
    }

    /// The spool as a stream to send under `name` while [`fill_watched`] copies
    /// into it: the send follows `filled` and sends each chunk once it is whole.
    pub fn send_stream(&self, name: impl Into<String>, filled: watch::Receiver<Filled>) -> SendFile {
        let mut f = SendFile::named(self.path.clone(), name);
        f.stream = Some(filled);
        f
    }
}

/// How far [`fill_watched`] has copied a stream into its spool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Filled {
    /// Bytes in the spool: the bytes before this offset can be read from it.
    pub bytes: u64,
    /// The stream ended: `bytes` is its size, or the copy failed with this error
    /// (its text: an `io::Error` cannot be shared).
    pub end: Option<Result<(), String>>,
}

/// [`fill`], telling `progress` after every write how far it got, and at the end
/// whether it got there. A send that follows it reads only bytes it was told are
/// written. Blocking.
pub fn fill_watched(reader: impl Read, file: File, progress: &watch::Sender<Filled>) -> io::Result<Spooled> {
    let result = copy(reader, file, |bytes| {
        progress.send_modify(|f| f.bytes = bytes);
    });
    progress.send_modify(|f| {
        f.end = Some(result.as_ref().map(|_| ()).map_err(ToString::to_string));
    });
    result
}

/// Copies `reader` to its end into `file`; blocking. An interrupted read is
/// retried; any other error ends the copy.
pub fn fill(reader: impl Read, file: File) -> io::Result<Spooled> {
    copy(reader, file, |_| {})
}

/// The copy, calling `written` with the bytes in the file after each write.
fn copy(mut reader: impl Read, mut file: File, mut written: impl FnMut(u64)) -> io::Result<Spooled> {
    let mut buf = vec![0u8; BUF];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        file.write_all(&buf[..n])?;
        size += n as u64;
        written(size);
    }
    file.flush()?;
    Ok(Spooled { size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_without_a_last_part_spools_as_stdin() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["..", "a/", "/", "./."] {
            let (spool, _) = Spool::create(Some(dir.path()), name).unwrap();
            assert_eq!(spool.path().file_name().unwrap(), if name == "a/" { "a" } else { "stdin" });
        }
    }

    #[test]
    fn a_spool_is_private_whole_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, file) = Spool::create(Some(dir.path()), "backup/x.tar").unwrap();
        let path = spool.path().to_owned();
        assert_eq!(path.file_name().unwrap(), "x.tar");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let parent = path.parent().unwrap();
        assert_eq!(std::fs::metadata(parent).unwrap().permissions().mode() & 0o777, 0o700);
        let data: Vec<u8> = (0..3 * BUF + 17).map(|i| (i * 7 % 251) as u8).collect();
        let got = fill(&data[..], file).unwrap();
        assert_eq!(got.size, data.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let f = spool.send_file("x.tar");
        // Hashed as it is read for sending, like any file.
        assert_eq!((f.name.as_deref(), f.sha256), (Some("x.tar"), None));
        drop(spool);
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
