//! A file before and while it is sent: checked before connecting ([`check_file`]),
//! opened (and hashed first only when its manifest must carry the hash) on a
//! blocking thread ([`hash_file`]), and hashed as its chunks are read, in file
//! order ([`InOrderHash`]), with the rest read at the end ([`finish_hash`]).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::SendFile;
use crate::{proto, Error};

/// A file to send, as checked before connecting.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) path: PathBuf,
    pub(super) name: String,
    pub(super) size: u64,
    /// Known already: not hashed again.
    pub(super) sha256: Option<[u8; 32]>,
    /// A stream still being copied into `path` ([`SendFile::stream`]); its `size`
    /// is then [`proto::wire::UNKNOWN_SIZE`], which the chunk size is settled for
    /// (`packet::settle_chunk_size`).
    pub(super) stream: Option<tokio::sync::watch::Receiver<crate::spool::Filled>>,
}

/// A file, opened, and hashed when its manifest must carry the hash.
pub(super) struct Prepared {
    pub(super) idx: usize,
    pub(super) file: Arc<File>,
    pub(super) sha256: Option<[u8; 32]>,
    pub(super) size: u64,
    pub(super) modified_ms: Option<i64>,
}

/// The SHA-256 of a file being sent without it in its manifest, taken from the
/// chunks as they are read for sending, in file order: in the common case the
/// file is read once, and the hash is ready when the last chunk goes out. Chunks
/// not sent in order (receivers held them, or a repair) are read for it at the
/// end, by [`finish_hash`].
pub(super) struct InOrderHash {
    pub(super) hasher: Sha256,
    /// Bytes hashed so far: the offset of the next chunk to hash.
    pub(super) next: u64,
    pub(super) size: u64,
    /// The modification time the manifest gives.
    pub(super) modified_ms: Option<i64>,
    pub(super) digest: Option<[u8; 32]>,
    /// The file's size or modification time was not the manifest's when the
    /// hash was done: it changed while it was sent, and the bytes read mix old
    /// and new.
    pub(super) changed: bool,
    /// The file is a stream's private spool: it grows as the stream is copied,
    /// and nothing else writes it, so its size and time say nothing of a change.
    pub(super) spool: bool,
}

impl InOrderHash {
    pub(super) fn new(size: u64, modified_ms: Option<i64>) -> Self {
        let mut h = InOrderHash {
            hasher: Sha256::new(),
            next: 0,
            size,
            modified_ms,
            digest: None,
            changed: false,
            spool: false,
        };
        h.finish_if_done();
        h
    }

    /// For a stream, whose size is not known yet: [`InOrderHash::stream_ended`]
    /// gives it.
    pub(super) fn stream() -> Self {
        InOrderHash { spool: true, ..InOrderHash::new(proto::wire::UNKNOWN_SIZE, None) }
    }

    /// The stream is `size` bytes long: the hash is done once that many are in.
    pub(super) fn stream_ended(&mut self, size: u64) {
        self.size = size;
        self.finish_if_done();
    }

    /// After the last byte: whether the file is still as the manifest says.
    /// Blocks (an fstat).
    pub(super) fn check_unchanged(&mut self, file: &File) -> io::Result<()> {
        if self.spool {
            return Ok(());
        }
        let meta = file.metadata()?;
        self.changed = meta.len() != self.size || modified_ms(&meta) != self.modified_ms;
        Ok(())
    }

    /// Hashes chunk bytes read at `offset`, if they are the next in file order.
    pub(super) fn feed(&mut self, offset: u64, data: &[u8]) {
        if offset == self.next && self.digest.is_none() {
            self.hasher.update(data);
            self.next += data.len() as u64;
            self.finish_if_done();
        }
    }

    fn finish_if_done(&mut self) {
        if self.next == self.size && self.digest.is_none() {
            self.digest = Some(std::mem::take(&mut self.hasher).finalize().into());
        }
    }
}

/// Reads what the chunks sent in order did not hash, to the end of the file, and
/// leaves the file's SHA-256 (and whether the file changed) in `hash`. A file
/// that is no longer as long as its manifest says changed while it was sent.
/// Blocks.
pub(super) fn finish_hash(file: &File, hash: &std::sync::Mutex<InOrderHash>) -> io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    // Only this task takes the lock for long; chunk reads skip hashing meanwhile.
    let mut h = hash.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut buf = vec![0u8; 1 << 20];
    while h.digest.is_none() {
        let want = (h.size - h.next).min(buf.len() as u64) as usize;
        let n = file.read_at(&mut buf[..want], h.next)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while it was sent"));
        }
        let at = h.next;
        h.feed(at, &buf[..n]);
    }
    h.check_unchanged(file)
}

/// Checks that a file is a regular file with a usable name.
pub(super) async fn check_file(file: SendFile) -> Result<Job, Error> {
    let SendFile { path, name, sha256, stream } = file;
    let meta = tokio::fs::metadata(&path).await.map_err(|e| Error::io("open", &path, e))?;
    if !meta.is_file() {
        return Err(Error::usage(format!("{} is not a regular file", path.display())));
    }
    let name = match name {
        Some(n) => n,
        None => path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::usage(format!("{}: the file name must be valid utf-8", path.display())))?
            .to_owned(),
    };
    if name.is_empty() || name.len() > proto::wire::MAX_NAME_LEN {
        return Err(Error::usage(format!("{}: the name to send must be 1 to 255 bytes", path.display())));
    }
    let size = if stream.is_some() { proto::wire::UNKNOWN_SIZE } else { meta.len() };
    Ok(Job { path, name, size, sha256, stream })
}

/// Opens a file for its size and modification time, and hashes it when `hash`:
/// a signed transfer's manifest must carry the SHA-256 that the signature covers.
/// Checks `cancel` between blocks, since a blocking task cannot be aborted from
/// outside. A file whose hash is `known` is only opened.
pub(super) fn hash_file(
    idx: usize,
    path: &Path,
    known: Option<[u8; 32]>,
    hash: bool,
    cancel: &CancellationToken,
) -> io::Result<Prepared> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    let modified_ms = modified_ms(&meta);
    if known.is_some() || !hash {
        return Ok(Prepared { idx, file: Arc::new(file), sha256: known, size: meta.len(), modified_ms });
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        if cancel.is_cancelled() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
        }
        let n = (&file).read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Prepared { idx, file: Arc::new(file), sha256: Some(hasher.finalize().into()), size, modified_ms })
}

/// The result of a blocking task that reads a file (to open it, or for its hash):
/// `None` when it was cancelled, and a panic in it as the send's error.
pub(super) fn reading_done<T>(joined: Result<T, tokio::task::JoinError>) -> Result<Option<T>, Error> {
    match joined {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_cancelled() => Ok(None),
        Err(e) => Err(Error::joined("hashing", e)),
    }
}

/// A file's modification time in milliseconds since the Unix epoch, as
/// manifests carry it.
fn modified_ms(meta: &std::fs::Metadata) -> Option<i64> {
    meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).and_then(|d| i64::try_from(d.as_millis()).ok())
}
