//! The receiver's files: the partial file, its resume state, the move to the
//! final name, and the memory of completed transfers, all in one state folder.
//!
//! # The state folder
//! A receiver into `out` keeps everything that is not a received file in one
//! folder, [`StateDir`]: `out/.mqft/` by default, or the `state_dir` it is given
//! (then `out` holds nothing but received files). The name `.mqft` cannot be a
//! received file's: `name.rs` trims leading dots from every name. In it:
//! - `part/<id>.part` holds a transfer's bytes, each chunk written at its offset;
//!   it must be on the file system of `out` for the final rename, so with a
//!   `state_dir` on another file system the `part/` folder stays `out/.mqft/part/`;
//! - `part/<id>.state` holds the [`ResumeState`] (see [`StateFile`] for the
//!   encoding), replaced atomically (temporary file, fsync, rename) and only
//!   after an fdatasync of the `.part`, so the state never claims bytes the disk
//!   does not have;
//! - once the SHA-256 checks out, the `.part` is fsynced and renamed to its final
//!   name under `out` (a no-clobber rename unless overwriting is allowed)
//!   ([`place_verified`]), then the directory fsynced, the transfer recorded in
//!   `completed.log` (module `completed`) and its `.state`, if it had one,
//!   removed ([`commit`], for every file finalized close together at once);
//! - [`prune`] removes the `.part` and `.state` of transfers that have not
//!   advanced for a while, and the engine forgets old completed records.
//!
//! Everything is keyed by transfer id (and the final path relative to `out`),
//! never by a flat name, so files in subfolders of `out` need nothing more.
//!
//! # What is proven before it is trusted
//! The disk can change behind the receiver's back: a user or program rewrites a
//! file, a crash loses writes. Nothing here confirms bytes it has not checked:
//! - a resume reads every chunk the state says is held back from the `.part` and
//!   keeps only those whose CRC32 is still the one they arrived with
//!   ([`ResumeState::prove`]); a `.part` of the wrong length is cut or grown to
//!   the file's size first, so what it lacks is fetched again;
//! - a completed transfer is a record in `completed.log`: when the same transfer
//!   is offered again, after a restart or by a second send, the file under the
//!   final name is answered `Complete` only if its bytes hash to the manifest's
//!   SHA-256 ([`already_complete`]). Once it has, the record gets a
//!   [`Fingerprint`] of the file as it was then; while the file still has it,
//!   the hash is skipped. A file that fails is not this transfer's (the caller's
//!   conflict policy decides). Deleting the state folder forgets all this;
//!   nothing else depends on it.
//!
//! # Links and other traps
//! Whoever can write to the output directory can plant a symbolic or hard link
//! (or a FIFO) at any of these names before the receiver gets there. The receiver
//! never writes through one:
//! - it creates its files exclusively (`O_CREAT | O_EXCL`, which does not follow a
//!   symlink either), after unlinking whatever held the name: only the directory
//!   entry goes, never the file it pointed at;
//! - it reopens a `.part` to resume only with `O_NOFOLLOW`, and only if it is a
//!   regular file with a single link; anything else is a fresh start;
//! - it reads a `.state` with `O_NOFOLLOW | O_NONBLOCK` (a FIFO would block the read
//!   forever), from a regular file with a single link, at most [`MAX_STATE_BYTES`];
//! - before the final link or rename it checks that the `.part` name still holds
//!   the file it wrote, and only that name;
//! - the final name is taken with a no-clobber rename (`RENAME_NOREPLACE`, or a
//!   hard link where the file system has no such rename; with
//!   [`OnConflict::Overwrite`], a plain rename, which replaces a link rather than
//!   following it); with [`OnConflict::Rename`] a name that is taken makes the
//!   rename try `name (1).ext`, `name (2).ext`, ... in turn, each atomically, so
//!   two transfers racing for one name never both get it.
//!
//! # The same file again
//! A file offered again may have been sent with another chunk size, MQTT version
//! or sender, so another transfer id: [`find_identical`] looks at the files
//! themselves. Under the final name and its numbered variants (up to the first
//! free one), a file whose marker says it is this transfer's is checked as
//! above; any other regular file of the right size is hashed, and if its bytes
//! are the manifest's, a marker for this transfer is written next to it (with a
//! fingerprint), so the next offer of this transfer need not hash it again. At
//! most [`MAX_HASHED_CANDIDATES`] files are hashed for one offer, so that a name
//! reused for ever (a camera's `img.jpg`) does not cost a hash of every copy.
//!
//! Every function here blocks; the engine calls them through `spawn_blocking`.
//!
//! Over 600 lines: every path this module opens goes through the same link-safe
//! helpers at the top, and keeping their callers beside them is what makes the
//! no-symlink rule reviewable in one place; the completed log and pruning are modules
//! of their own (`store/`), as are the tests.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::fs::OFlags;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::name::SafePath;
use crate::proto::receiver::HashRead;
use crate::proto::{integrity, Manifest, Proof, ResumeState, TransferId};

mod completed;
mod prune;

use completed::{Completed, Entry};
pub(crate) use prune::prune;

/// The largest state file read. A state is the manifest (8 KiB at most), the
/// held ranges and a CRC32 per held chunk: for the most chunks the protocol
/// allows (4 Mi), at most 20 MiB of CRCs (5-byte varints) and 20 MiB of ranges.
const MAX_STATE_BYTES: u64 = 48 << 20;

/// The first bytes of a state file of this format. Another format (an older
/// release's) is refused as a whole and the transfer starts over: the CRCs a
/// resume needs were not in it. Format 3 holds a protocol-3 manifest (with `to`),
/// which a format-2 body would be misread as.
const STATE_MAGIC: [u8; 8] = *b"mqftst\x00\x03";

/// The buffer of a re-hash or a proof: large enough that the reads cost little
/// next to the hashing.
const READ_BUF: usize = 1 << 20;

/// How often an exclusive create is tried again when something keeps taking the
/// name between the unlink and the create.
const CREATE_ATTEMPTS: usize = 3;

/// The state folder's name under the output directory, by default.
pub const STATE_DIR_NAME: &str = ".mqft";

/// One receiver's state folder (see the module doc), and its completed store.
pub(crate) struct StateDir {
    /// The output root: final paths are recorded relative to it.
    pub out: PathBuf,
    /// The state folder.
    pub root: PathBuf,
    /// Where `.part` and `.state` files go.
    pub parts: PathBuf,
    completed: Mutex<Completed>,
    /// `lock` in the state folder, held (`flock`) while this receiver runs, so
    /// that a second receiver can tell it shares the folder.
    _lock: File,
    /// Another receiver held the lock at start. Sharing works: each rewrite of
    /// the completed log merges what the other appended first, so only a record
    /// appended during the rewrite itself can be lost (that file is then refused
    /// as existing, never confirmed unchecked).
    pub shared: bool,
}

impl std::fmt::Debug for StateDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDir").field("root", &self.root).field("parts", &self.parts).finish_non_exhaustive()
    }
}

impl StateDir {
    /// Opens (creating it if need be) the state folder of a receiver into `out`:
    /// `state_dir`, or `out/.mqft`. Loads the completed store, forgetting what is
    /// older than `forget_after`, and says what it found.
    pub fn open(out: &Path, state_dir: Option<&Path>, forget_after: Option<Duration>) -> io::Result<Arc<StateDir>> {
        let default = out.join(STATE_DIR_NAME);
        let root = state_dir.map_or_else(|| default.clone(), Path::to_owned);
        // The default folder is under a directory others may write to: a symlink
        // planted at its name must not send the state elsewhere. A --state-dir is
        // the user's own choice, symlink or not.
        own_dir(&root, state_dir.is_none())?;
        let (lock, shared) = lock(&root)?;
        let parts = if state_dir.is_none() || same_fs(&root, out)? {
            root.join("part")
        } else {
            own_dir(&default, true)?;
            default.join("part")
        };
        own_dir(&parts, true)?;
        let (completed, loaded) = Completed::open(&root, forget_after, unix_now(), shared)?;
        if loaded.torn_bytes > 0 {
            tracing::warn!(
                path = %root.join("completed.log").display(),
                cut = loaded.torn_bytes,
                kept = loaded.live,
                "the completed-transfer log ended in a damaged record (a crash?): cut off there"
            );
        }
        tracing::debug!(root = %root.display(), completed = loaded.live, forgotten = loaded.forgotten, "state loaded");
        Ok(Arc::new(StateDir {
            out: out.to_owned(),
            root,
            parts,
            completed: Mutex::new(completed),
            _lock: lock,
            shared,
        }))
    }

    /// The completed store. A panic while it was held leaves it as it was: every
    /// change to it is one map insert or retain, whole or not at all.
    fn completed(&self) -> std::sync::MutexGuard<'_, Completed> {
        self.completed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets completed transfers older than the store's `forget_after`.
    pub fn forget_expired(&self) -> io::Result<usize> {
        self.completed().forget_expired(unix_now())
    }

    /// Completed transfers remembered.
    pub fn completed_count(&self) -> usize {
        self.completed().len()
    }

    /// The key of the file at `final_path` in the completed store.
    fn key(&self, id: &TransferId, final_path: &Path) -> completed::Key {
        let rel = final_path.strip_prefix(&self.out).unwrap_or(final_path);
        (*id, rel.as_os_str().as_encoded_bytes().to_vec())
    }
}

/// Takes the state folder's lock, `root/lock`: `Ok((file, true))` when another
/// receiver holds it. The lock goes with the process, however it ends. The file
/// is opened read-only (enough for `flock`), so that an idle receiver holds
/// nothing open for writing (a file system can then be remounted read-only).
fn lock(root: &Path) -> io::Result<(File, bool)> {
    let path = root.join("lock");
    let open = || OpenOptions::new().read(true).custom_flags(flags(OFlags::NOFOLLOW | OFlags::NONBLOCK)).open(&path);
    let f = match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => open()?,
            }
        }
        r => r?,
    };
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok((f, false)),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok((f, true)),
        Err(e) => Err(e.into()),
    }
}

/// Creates the directory `path` if it is missing, and checks it is one: with
/// `no_link`, a symlink there is refused rather than followed.
fn own_dir(path: &Path, no_link: bool) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o755).create(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let m = if no_link { fs::symlink_metadata(path)? } else { fs::metadata(path)? };
    if !m.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} is not a directory (a symlink is not followed there)", path.display()),
        ));
    }
    Ok(())
}

/// True when `a` and `b` are on one file system (a rename between them works).
fn same_fs(a: &Path, b: &Path) -> io::Result<bool> {
    Ok(fs::metadata(a)?.dev() == fs::metadata(b)?.dev())
}

/// Seconds since the Unix epoch; 0 for a clock before it.
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What a receiver does with a file whose name is taken by a different file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnConflict {
    /// Keep both: the new file gets the first free name of `name (1).ext`,
    /// `name (2).ext`, ... (up to `name (999).ext`). Never destroys or loses a file.
    #[default]
    Rename,
    /// Replace the file that is there.
    Overwrite,
    /// Keep the file that is there and refuse the new one
    /// ([`RejectReason::Skipped`](crate::proto::RejectReason::Skipped)).
    Skip,
    /// Refuse the new one as a conflict
    /// ([`RejectReason::Exists`](crate::proto::RejectReason::Exists)).
    Fail,
}

/// The most numbered names tried for one file: past `name (999).ext` the
/// transfer fails as existing rather than trying names for ever.
pub const MAX_RENAMES: u32 = 999;

/// The most files [`find_identical`] hashes for one offer: files of the offered
/// size under the name and its numbered variants that no marker vouches for. A
/// camera that sends `img.jpg` of one size again and again would otherwise have
/// every earlier copy hashed at every offer; past the cap a copy of the same
/// bytes may be kept once more (under a numbered name), never lost.
pub const MAX_HASHED_CANDIDATES: u32 = 4;

/// The paths of one transfer's files.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub dir: PathBuf,
    /// The final path relative to `dir`, `/`-separated, each component sanitized.
    pub rel: SafePath,
    pub part: PathBuf,
    pub state: PathBuf,
    pub state_tmp: PathBuf,
    pub final_path: PathBuf,
    pub store: Arc<StateDir>,
}

impl Paths {
    /// The files of transfer `id`, whose file is at the relative path `name`
    /// under `dir` (the output root, or a sender's folder under it).
    pub fn new(store: &Arc<StateDir>, dir: &Path, name: &SafePath, id: &TransferId) -> Self {
        let in_parts = |ext: &str| store.parts.join(format!("{id}.{ext}"));
        Paths {
            dir: dir.to_owned(),
            rel: name.clone(),
            part: in_parts("part"),
            state: in_parts("state"),
            state_tmp: in_parts("state.tmp"),
            final_path: name.in_dir(dir),
            store: Arc::clone(store),
        }
    }

    fn key(&self, id: &TransferId) -> completed::Key {
        self.store.key(id, &self.final_path)
    }
}

/// `O_NOFOLLOW` (and more) for std's [`OpenOptionsExt::custom_flags`].
fn flags(f: OFlags) -> i32 {
    // The open flags are small positive C ints; the cast only changes the type.
    f.bits() as i32
}

/// True for the error of an `O_NOFOLLOW` open of a symlink.
fn is_symlink_error(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// True when `m` is a regular file that no other name links to.
fn is_own_file(m: &fs::Metadata) -> bool {
    m.is_file() && m.nlink() == 1
}

/// Removes the directory entry `path`, if there is one. A symlink or hard link is
/// unlinked itself: what it points at is not touched.
fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Creates a new, empty file at `path` for reading and writing: whatever held the
/// name is unlinked first, and the create is exclusive (`O_EXCL` fails on any
/// existing entry, a dangling symlink included), so nothing is ever written
/// through a link planted there.
fn create_exclusive(path: &Path) -> io::Result<File> {
    for _ in 0..CREATE_ATTEMPTS {
        remove_if_exists(path)?;
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(flags(OFlags::NOFOLLOW))
            .open(path)
        {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            r => return r,
        }
    }
    Err(io::Error::other(format!("{} keeps being recreated by someone else", path.display())))
}

/// Opens an existing file of ours for reading and writing: `None` when there is
/// none, or when what is there is not a regular file with a single link (a
/// symlink, a hard link to something else, a FIFO, a directory), which is then
/// left alone.
fn open_own(path: &Path) -> io::Result<Option<File>> {
    // O_NONBLOCK so that a FIFO cannot block the open; on a regular file it
    // changes nothing.
    let opened =
        OpenOptions::new().read(true).write(true).custom_flags(flags(OFlags::NOFOLLOW | OFlags::NONBLOCK)).open(path);
    match opened {
        Ok(f) => Ok(is_own_file(&f.metadata()?).then_some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound || is_symlink_error(&e) => Ok(None),
        // A directory cannot be opened for writing.
        Err(e) if e.kind() == io::ErrorKind::IsADirectory => Ok(None),
        Err(e) => Err(e),
    }
}

/// A state file: [`STATE_MAGIC`], the CRC32 of the rest (little-endian), then
/// this, in postcard. The CRC makes a state file that was cut short or
/// scribbled on count as none, rather than a resume from garbage that happens
/// to decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StateFile {
    resume: ResumeState,
    /// For a completed transfer: the final file as it was when its bytes were
    /// last verified against the manifest's SHA-256.
    verified: Option<Fingerprint>,
}

/// What identifies a file's content without reading it: which file it is, its
/// size, and its modification and change times. Any write to the file, or any
/// `touch`/`cp -p` that sets its modification time back, moves its change time
/// (ctime), which user space cannot set; a file put in its place is another
/// inode. So while all of these are unchanged the bytes are the ones verified,
/// with one gap that [`Fingerprint::proves`] closes: a write in the same clock
/// tick as the change before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Fingerprint {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    /// The system clock just before the file's times were read.
    taken: (i64, i64),
}

/// How long a file must have been unchanged when its fingerprint is taken for
/// the fingerprint to prove anything: well over a file system clock tick (1 to
/// 10 ms), with room for a network file system's clock being a little behind.
const SETTLED_NS: i128 = 1_000_000_000;

impl Fingerprint {
    /// The fingerprint of the open file `f`.
    pub(crate) fn take(f: &File) -> io::Result<Self> {
        let taken = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), i64::from(d.subsec_nanos())))
            .unwrap_or((0, 0));
        Ok(Fingerprint::with(&f.metadata()?, taken))
    }

    fn with(m: &fs::Metadata, taken: (i64, i64)) -> Self {
        Fingerprint {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            taken,
        }
    }

    /// True when `now` is the same file with the same times, and the file had
    /// been unchanged for [`SETTLED_NS`] when this fingerprint was taken. File
    /// times advance in ticks: a write in the same tick as the change before it
    /// leaves them as they were. A write after the fingerprint was taken gets a
    /// change time no earlier than a tick before `taken`, so later than a settled
    /// file's, and shows; for a file that had just changed, it may not, so such a
    /// fingerprint proves nothing and the file is hashed again (git's "racily
    /// clean" entries, with the clock in place of the index file's time).
    fn proves(&self, now: &fs::Metadata) -> bool {
        let nanos = |(s, n): (i64, i64)| i128::from(s) * 1_000_000_000 + i128::from(n);
        *self == Fingerprint::with(now, self.taken) && nanos(self.ctime) + SETTLED_NS < nanos(self.taken)
    }
}

/// Reads saved state; `None` when there is none or it does not decode (a state
/// file from another version, or cut short by a crash before its rename: both are
/// as good as none), and when what is there is not a state file of ours (a
/// symlink, a file with other links, a FIFO, anything too large).
pub(crate) fn load_state(path: &Path) -> io::Result<Option<ResumeState>> {
    Ok(load(path)?.map(|l| l.resume))
}

fn load(path: &Path) -> io::Result<Option<StateFile>> {
    let opened = OpenOptions::new().read(true).custom_flags(flags(OFlags::NOFOLLOW | OFlags::NONBLOCK)).open(path);
    let f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound || is_symlink_error(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let m = f.metadata()?;
    if !is_own_file(&m) || m.len() > MAX_STATE_BYTES {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    f.take(MAX_STATE_BYTES).read_to_end(&mut bytes)?;
    Ok(decode_state(&bytes))
}

fn encode_state(state: &StateFile) -> io::Result<Vec<u8>> {
    let body = postcard::to_allocvec(state).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(STATE_MAGIC.len() + 4 + body.len());
    out.extend_from_slice(&STATE_MAGIC);
    out.extend_from_slice(&integrity::crc32(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn decode_state(bytes: &[u8]) -> Option<StateFile> {
    let rest = bytes.strip_prefix(&STATE_MAGIC)?;
    let (crc, body) = rest.split_first_chunk::<4>()?;
    if integrity::crc32(body) != u32::from_le_bytes(*crc) {
        return None;
    }
    match postcard::take_from_bytes::<StateFile>(body) {
        Ok((state, [])) => Some(state),
        _ => None,
    }
}

/// Replaces the state file atomically: write a new temporary file (created
/// exclusively), fsync it, rename it over the old one (a rename replaces a link
/// at the name, it does not follow it).
pub(crate) fn save_state(paths: &Paths, state: &ResumeState) -> io::Result<()> {
    write_state(paths, &StateFile { resume: state.clone(), verified: None }, true)
}

/// [`save_state`], with the fsync of the new file only if `sync`.
fn write_state(paths: &Paths, state: &StateFile, sync: bool) -> io::Result<()> {
    let bytes = encode_state(state)?;
    let mut f = create_exclusive(&paths.state_tmp)?;
    f.write_all(&bytes)?;
    if sync {
        f.sync_all()?;
    }
    drop(f);
    fs::rename(&paths.state_tmp, &paths.state)
}

/// The completed log's record of `manifest`'s file found at `path` (relative to
/// the output root) with the right bytes, as it looked when they were hashed.
fn found_entry(manifest: &Manifest, sha256: [u8; 32], path: Vec<u8>, verified: Option<Fingerprint>) -> Entry {
    Entry { id: manifest.id, path, size: manifest.size, sha256, verified, at: unix_now() }
}

/// The SHA-256 of the file under the final name when it is this transfer's,
/// verified: the completed store records `manifest`'s transfer at this path (or,
/// after a crash between the final rename and the record, its complete `.state`
/// is still there), no `.part`, and the file's bytes hash to the SHA-256 it was
/// received with, which is the manifest's when the manifest carries one. The hash
/// is skipped while the file still has the [`Fingerprint`] recorded when it was
/// last verified; a file that passes the hash gets a new one.
///
/// `None` says nothing about the file: it may be another file under that name,
/// or this one changed since. It is never answered `Complete`. For a manifest
/// without a hash, `Some` is a claim the sender checks (PROTOCOL.md 8.3): the
/// same id is the same name, size, time and chunking, not yet the same bytes.
pub(crate) fn already_complete(paths: &Paths, manifest: &Manifest) -> io::Result<Option<[u8; 32]>> {
    if fs::symlink_metadata(&paths.part).is_ok() {
        return Ok(None);
    }
    let key = paths.key(&manifest.id);
    let recorded = paths.store.completed().get(&key).cloned();
    let agrees = |sha: [u8; 32]| manifest.sha256.is_none_or(|d| d == sha);
    let (expected, verified, from_marker) = match recorded {
        Some(e) if e.size == manifest.size && agrees(e.sha256) => (Some(e.sha256), e.verified, false),
        Some(_) => return Ok(None),
        None => {
            let Some(marker) = load(&paths.state)? else { return Ok(None) };
            let state = &marker.resume;
            let complete = state.manifest.same_transfer(manifest)
                && state.hashed == manifest.chunk_count
                && state.held == marker_held(manifest);
            if !complete {
                return Ok(None);
            }
            (state.manifest.sha256.or(manifest.sha256), None, true)
        }
    };
    // A symlink at the final name is not the file this receiver put there (the
    // open below does not follow one), nor is a FIFO or anything else.
    let opened =
        OpenOptions::new().read(true).custom_flags(flags(OFlags::NOFOLLOW | OFlags::NONBLOCK)).open(&paths.final_path);
    let f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound || is_symlink_error(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let before = Fingerprint::take(&f)?;
    let m = f.metadata()?;
    if !m.is_file() || m.len() != manifest.size {
        return Ok(None);
    }
    if let Some(sha) = expected.filter(|_| verified.is_some_and(|fp| fp.proves(&m))) {
        return Ok(Some(sha));
    }
    let sha = sha256_of(&f)?;
    if expected.is_some_and(|e| e != sha) {
        tracing::info!(path = %paths.final_path.display(), "the file changed since it was received");
        return Ok(None);
    }
    // Verified. Record what the file looks like now, so that the next offer
    // need not hash it again; if it changed while it was hashed, no fingerprint.
    let unchanged = Fingerprint::with(&f.metadata()?, before.taken) == before;
    if unchanged || from_marker {
        let entry = found_entry(manifest, sha, key.1, unchanged.then_some(before));
        // Best effort: without it the next offer hashes again.
        match paths.store.completed().put(entry) {
            Ok(()) if from_marker => remove_if_exists(&paths.state)?,
            Ok(()) => {}
            Err(e) => tracing::debug!(root = %paths.store.root.display(), error = %e, "cannot record a verified file"),
        }
    }
    Ok(Some(sha))
}

/// The SHA-256 of a whole file, read from its start.
fn sha256_of(f: &File) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0; READ_BUF];
    let mut offset = 0;
    loop {
        let n = f.read_at(&mut buf, offset)?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
        offset += n as u64;
    }
}

/// The held ranges of a complete transfer.
fn marker_held(manifest: &Manifest) -> Vec<(u32, u32)> {
    if manifest.chunk_count == 0 {
        Vec::new()
    } else {
        vec![(0, manifest.chunk_count)]
    }
}

/// Bytes that unprivileged users may still write to the file system of `dir`.
pub(crate) fn free_space(dir: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Refuses, with a [`io::ErrorKind::StorageFull`] error and before anything is
/// written, a transfer that cannot fit: what it still needs (its size, less what
/// a `.part` of ours already has on disk) plus `reserved` (what the transfers
/// already open still need) must be free in the directory's file system. Sparse
/// `.part` files take their space as chunks land, so a disk can still fill up
/// later (other writers, estimates); the write then fails as `disk full`.
pub(crate) fn check_room(paths: &Paths, manifest: &Manifest, reserved: u64) -> io::Result<()> {
    let on_disk = match fs::symlink_metadata(&paths.part) {
        Ok(m) if is_own_file(&m) => m.blocks().saturating_mul(512),
        _ => 0,
    };
    // An open stream's size is not known (PROTOCOL.md 18): only what the others
    // still need is counted, and the stream's writes tell if the disk fills.
    let size = if manifest.is_open() { 0 } else { manifest.size };
    let needed = size.saturating_sub(on_disk).saturating_add(reserved);
    let free = match free_space(&paths.dir) {
        Ok(free) => free,
        // A file system that cannot say (some network and FUSE ones): writes will
        // tell, as `disk full` if it comes to that.
        Err(e) => {
            tracing::debug!(dir = %paths.dir.display(), error = %e, "free space unknown");
            return Ok(());
        }
    };
    if needed > free {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!("{needed} bytes needed, {free} free in {}", paths.dir.display()),
        ));
    }
    Ok(())
}

/// Opens the partial file, with the state to resume from if both agree. A fresh
/// start replaces whatever was there with a new file, sized to the whole transfer
/// so that chunks can land in any order.
///
/// Saved state is proven against the `.part` first ([`ResumeState::prove`]):
/// what it returns holds only chunks whose bytes are still what arrived. A
/// `.part` of another length (cut short, say) is set to the file's size first,
/// so that the chunks it lost fail the proof and are fetched again.
pub(crate) fn open_part(paths: &Paths, manifest: &Manifest) -> io::Result<(File, Option<ResumeState>)> {
    // A stream saved before its size was known starts over (PROTOCOL.md 18).
    let saved = load_state(&paths.state)?.filter(|s| s.manifest.same_transfer(manifest) && !s.manifest.is_open());
    if let Some(mut saved) = saved {
        if let Some(f) = open_own(&paths.part)? {
            if f.metadata()?.len() != manifest.size && !manifest.is_open() {
                f.set_len(manifest.size)?;
            }
            let proof = prove(&f, &mut saved)?;
            if proof.dropped > 0 || proof.inconsistent {
                tracing::warn!(
                    path = %paths.part.display(),
                    dropped = proof.dropped,
                    kept = proof.kept,
                    rehash = proof.rehash,
                    inconsistent = proof.inconsistent,
                    "the partial file changed since its state was saved; fetching those chunks again"
                );
            }
            if !proof.inconsistent {
                return Ok((f, Some(saved)));
            }
        }
    }
    let f = fresh_part(paths, manifest)?;
    Ok((f, None))
}

/// Proves `saved` against the partial file `f`: reads every held chunk back and
/// keeps those whose CRC32 still matches. Reads past the end of the file count
/// as changed bytes.
pub(crate) fn prove(f: &File, saved: &mut ResumeState) -> io::Result<Proof> {
    let mut buf = Vec::new();
    saved.prove(|r: HashRead| {
        let len = usize::try_from(r.len).map_err(io::Error::other)?;
        buf.resize(len, 0);
        match f.read_exact_at(&mut buf, r.offset) {
            Ok(()) => Ok(Some(integrity::crc32(&buf))),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    })
}

/// Creates a new partial file for a fresh start, in place of whatever was there.
pub(crate) fn fresh_part(paths: &Paths, manifest: &Manifest) -> io::Result<File> {
    // Stale state must not survive a fresh start.
    remove_if_exists(&paths.state)?;
    let f = create_exclusive(&paths.part)?;
    // An open stream grows as its chunks land.
    if !manifest.is_open() {
        f.set_len(manifest.size)?;
    }
    Ok(f)
}

/// Writes a chunk at its offset.
pub(crate) fn write_at(file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    file.write_all_at(data, offset)
}

/// Reads `len` bytes at `offset`, into a buffer of their own: for tests (a
/// sender reads a chunk straight into its payload, send/read.rs).
#[cfg(test)]
pub(crate) fn read_at(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(io::Error::other)?;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// Makes the `.part` durable, then records the state.
pub(crate) fn checkpoint(file: &File, paths: &Paths, state: &ResumeState) -> io::Result<()> {
    file.sync_data()?;
    save_state(paths, state)
}

/// Checks that the `.part` name still holds `file`, and nothing else links to
/// it: the file that gets the final name must be the one that was written and
/// hashed, and must not be reachable (and changeable) through another name.
fn check_still_ours(file: &File, paths: &Paths) -> io::Result<()> {
    let ours = file.metadata()?;
    let there = fs::symlink_metadata(&paths.part)?;
    if ours.dev() != there.dev() || ours.ino() != there.ino() || !is_own_file(&there) {
        return Err(io::Error::other(format!("{} was replaced or linked elsewhere", paths.part.display())));
    }
    Ok(())
}

/// Gives a verified file its final name and makes it durable there, alone:
/// [`place_verified`], then [`commit`] of a batch of one. Returns the path taken.
/// (The receiver's writer threads do the two halves apart, to batch the second.)
#[cfg(test)]
pub(crate) fn finalize(
    file: &File,
    paths: &Paths,
    complete: &ResumeState,
    content: Option<(u64, [u8; 32])>,
    conflict: OnConflict,
    modified_ms: Option<i64>,
) -> io::Result<PathBuf> {
    let placed = place_verified(file, paths, complete, content, conflict, modified_ms)?;
    let mut results = commit(vec![placed]);
    // One in, one out (`commit_with` answers every file it is given).
    results.pop().unwrap_or_else(|| Err(io::Error::other("nothing committed")))
}

/// A verified file under its final name whose directory is not yet synced nor
/// its transfer recorded: what [`place_verified`] leaves for [`commit`], which
/// does that for a whole batch at once.
pub(crate) struct Placed {
    /// The path taken.
    pub taken: PathBuf,
    /// The directory the name was taken in, open: its fsync makes the name durable.
    dir: std::os::fd::OwnedFd,
    /// The transfer's output root, when the name is in a folder under it that
    /// the walk may have created: the root's entries need an fsync too.
    root: Option<PathBuf>,
    entry: Entry,
    store: Arc<StateDir>,
    /// A complete-state marker written before the name was taken, removed once
    /// the transfer is recorded.
    marker: Option<PathBuf>,
}

/// The first half of giving a verified file its final name, per file: fsync,
/// the name taken (no-clobber unless [`OnConflict::Overwrite`]; with
/// [`OnConflict::Rename`] the first free of `name`, `name (1).ext`, ...). The directory fsync and the record in the
/// completed store are [`commit`]'s, so that files finalized close together share
/// them. `content` is the size and SHA-256 of what `file` holds when they are not
/// the transfer's (an encrypted transfer's plaintext, see `crate::sealing`): the
/// completed log records them, so that the same file offered again is found by
/// its content.
///
/// A transfer that saved a resume state (a checkpoint, or a resume from one)
/// gets its complete state written first, so that a crash between it and the
/// rename resumes as "verified, not yet renamed", and one between the rename and
/// the record leaves a marker that `already_complete` still accepts. It needs no
/// fsync of its own: a state whose bytes a crash lost does not decode, or names
/// no transfer, which is as good as none. A transfer that never saved one (a
/// small file that arrived in one go) writes none: a crash before the rename
/// costs its bytes again (its `.part` is started afresh), and one after it
/// leaves a file that [`find_identical`] hashes and records at the next offer.
/// Creating, renaming and removing that file was a third of the per-file cost
/// of many small files (ext4 allocates and frees an inode for each).
pub(crate) fn place_verified(
    file: &File,
    paths: &Paths,
    complete: &ResumeState,
    content: Option<(u64, [u8; 32])>,
    conflict: OnConflict,
    modified_ms: Option<i64>,
) -> io::Result<Placed> {
    check_still_ours(file, paths)?;
    if complete.manifest.stream && content.is_none() {
        // A stream's `.part` grew as chunks landed; one resumed from a longer
        // one may hold bytes past the end the sender gave. The hash covered
        // exactly the stream's bytes: cut there.
        file.set_len(complete.manifest.size)?;
    }
    if let Some(ms) = modified_ms {
        // The sender's modification time, when it sent one; best effort.
        let t = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms.max(0) as u64));
        if let Some(t) = t {
            let _ = file.set_modified(t);
        }
    }
    file.sync_all()?;
    let marker = if fs::symlink_metadata(&paths.state).is_ok() {
        write_state(paths, &StateFile { resume: complete.clone(), verified: None }, false)?;
        Some(paths.state.clone())
    } else {
        None
    };
    let (taken, dir) = place(paths, conflict)?;
    // No fingerprint yet: the link and unlink above changed the file's ctime,
    // and one taken right after them proves nothing (see `Fingerprint::proves`).
    // The first offer of the transfer again hashes the file and records one.
    let key = paths.store.key(&complete.manifest.id, &taken);
    // A verified transfer's manifest has its hash: from the sender's manifest or
    // its end of round.
    let (size, sha256) = content.unwrap_or((complete.manifest.size, complete.manifest.sha256.unwrap_or_default()));
    let entry = Entry { id: complete.manifest.id, path: key.1, size, sha256, verified: None, at: unix_now() };
    let root = paths.rel.components().nth(1).is_some().then(|| paths.dir.clone());
    Ok(Placed { taken, dir, root, entry, store: Arc::clone(&paths.store), marker })
}

/// The second half (after [`place_verified`]), for every file of a batch at
/// once: one fsync per directory the batch's names were taken in (and per
/// output root a walk may have added folders to), then one append to the
/// completed log per state folder, then the markers removed. Returns each file's outcome, in order: `Ok`
/// only once its name is durable. A file whose directory could not be synced
/// is not recorded: the completed log never claims a file a crash could lose.
///
/// The record is not fsynced: losing it costs what losing the marker did, a
/// hash of the file at the next offer ([`find_identical`]), never a wrong
/// `Complete`.
pub(crate) fn commit(batch: Vec<Placed>) -> Vec<io::Result<PathBuf>> {
    commit_with(batch, &mut |fd| rustix::fs::fsync(fd).map_err(io::Error::from))
}

/// [`commit`], with the directory fsync given (tests count and order them).
pub(crate) fn commit_with(
    batch: Vec<Placed>,
    sync_dir: &mut dyn FnMut(std::os::fd::BorrowedFd<'_>) -> io::Result<()>,
) -> Vec<io::Result<PathBuf>> {
    use std::collections::HashMap;
    use std::os::fd::AsFd as _;
    // Keyed by path: every name of the batch was taken before this first fsync,
    // so one fsync of a directory covers all of them.
    // An outcome that can be handed to every file of a directory: io::Error is
    // not Clone.
    type Outcome = Result<(), (io::ErrorKind, String)>;
    let mut synced: HashMap<&Path, Outcome> = HashMap::new();
    let keep = |r: io::Result<()>| r.map_err(|e| (e.kind(), e.to_string()));
    for p in &batch {
        let parent = p.taken.parent().unwrap_or(&p.taken);
        if !synced.contains_key(parent) {
            let r = keep(sync_dir(p.dir.as_fd()));
            synced.insert(parent, r);
        }
        if let Some(root) = &p.root {
            if !synced.contains_key(root.as_path()) {
                // Folders the walk created: their entries in the root.
                let r = File::open(root).and_then(|f| sync_dir(f.as_fd()));
                synced.insert(root.as_path(), keep(r));
            }
        }
    }
    let outcome = |p: &Placed| -> Outcome {
        synced[p.taken.parent().unwrap_or(&p.taken)].clone()?;
        p.root.as_deref().map_or(Ok(()), |r| synced[r].clone())
    };
    let results: Vec<Outcome> = batch.iter().map(outcome).collect();
    // The records, one append per state folder (a receiver has one).
    let mut done = vec![false; batch.len()];
    for i in 0..batch.len() {
        if done[i] || results[i].is_err() {
            continue;
        }
        let store = &batch[i].store;
        let mine: Vec<usize> = (i..batch.len())
            .filter(|&j| !done[j] && results[j].is_ok() && Arc::ptr_eq(&batch[j].store, store))
            .collect();
        let entries = mine.iter().map(|&j| batch[j].entry.clone()).collect();
        match store.completed().put_all(entries) {
            // Recorded: the state folder keeps nothing per completed transfer.
            Ok(()) => {
                for &j in &mine {
                    if let Some(marker) = &batch[j].marker {
                        if let Err(e) = remove_if_exists(marker) {
                            tracing::debug!(path = %marker.display(), error = %e, "cannot remove a complete state");
                        }
                    }
                }
            }
            // The files are in place and verified: the markers stay, and stand
            // in (for the manifest's own name; under a numbered name, or without
            // a marker, the next offer hashes the file to find it).
            Err(e) => tracing::warn!(root = %store.root.display(), error = %e, "cannot record a completed transfer"),
        }
        for j in mine {
            done[j] = true;
        }
    }
    batch
        .into_iter()
        .zip(results)
        .map(|(p, r)| r.map(|()| p.taken).map_err(|(kind, msg)| io::Error::new(kind, msg)))
        .collect()
}

/// Opens (creating what is missing) the directories of `rel` under `root`, one
/// component at a time from `root`'s own descriptor, and returns the last one with
/// the file's name in it. The threat: whoever can write to the output directory
/// plants a symlink where a directory of the path will be (`out/photos ->
/// /etc`), and a plain `create_dir_all` + `link` would follow it out. Here each
/// step is `openat(O_DIRECTORY | O_NOFOLLOW)` relative to the directory before,
/// so a symlink at any component fails the open (`ELOOP` or `ENOTDIR`) and
/// nothing is created or written past it; a component created between our
/// `mkdirat` and `openat` by someone else is opened the same way.
pub(crate) fn open_parent_dirs(root: &Path, rel: &SafePath) -> io::Result<(std::os::fd::OwnedFd, String)> {
    walk_parent_dirs(root, rel, true)
}

/// Checks, creating nothing, that the directories of `rel` under `root` that exist
/// are directories reached without a symlink: an offer whose path goes through a
/// planted link is refused before a byte is received, and before
/// [`already_complete`] would read a file through it.
pub(crate) fn check_parent_dirs(paths: &Paths) -> io::Result<()> {
    if paths.rel.components().nth(1).is_none() {
        return Ok(());
    }
    match walk_parent_dirs(&paths.dir, &paths.rel, false) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other.map(drop),
    }
}

fn walk_parent_dirs(root: &Path, rel: &SafePath, create: bool) -> io::Result<(std::os::fd::OwnedFd, String)> {
    use rustix::fs::{mkdirat, openat, Mode};
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut cur = openat(rustix::fs::CWD, root, dir_flags, Mode::empty())?;
    let parts: Vec<&str> = rel.components().collect();
    let (leaf, dirs) = parts.split_last().ok_or_else(|| io::Error::other("empty path"))?;
    for comp in dirs {
        let next = match openat(&cur, *comp, dir_flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) if create => {
                match mkdirat(&cur, *comp, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                openat(&cur, *comp, dir_flags, Mode::empty())?
            }
            Err(rustix::io::Errno::NOENT) => return Err(io::ErrorKind::NotFound.into()),
            Err(e) => return Err(io::Error::other(format!("{comp}: not a directory of ours ({e})"))),
        };
        cur = next;
    }
    Ok((cur, (*leaf).to_owned()))
}

/// The step of [`place_verified`] that gives the `.part` (in the state folder) its
/// name, through the directory descriptor that [`open_parent_dirs`] walked to,
/// so that no symlink on the way is followed; returns the path taken and that
/// directory, for [`commit`]'s fsync.
fn place(paths: &Paths, conflict: OnConflict) -> io::Result<(PathBuf, std::os::fd::OwnedFd)> {
    use rustix::fs::{renameat, CWD};
    let (dir, leaf) = open_parent_dirs(&paths.dir, &paths.rel)?;
    let taken = match conflict {
        OnConflict::Overwrite => {
            renameat(CWD, &paths.part, &dir, leaf.as_str())?;
            paths.final_path.clone()
        }
        OnConflict::Skip | OnConflict::Fail => {
            link_no_clobber(&paths.part, &dir, &leaf)?;
            paths.final_path.clone()
        }
        OnConflict::Rename => {
            let name = crate::name::sanitize_file_name(&leaf).map_err(io::Error::other)?;
            let mut taken = None;
            for n in 0..=MAX_RENAMES {
                let candidate = if n == 0 { name.clone() } else { crate::name::numbered(&name, n) };
                match link_no_clobber(&paths.part, &dir, candidate.as_str()) {
                    Ok(()) => {
                        taken = Some(candidate);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            let Some(candidate) = taken else {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "every numbered name is taken"));
            };
            paths.final_path.with_file_name(candidate.as_str())
        }
    };
    Ok((taken, dir))
}

/// Moves `part` to `leaf` in `dir` unless something is there, atomically: a
/// rename with `RENAME_NOREPLACE` (one step, where a link and an unlink were
/// two, and no moment with the file under both names), which fails if the name
/// exists (even as a dangling symlink). A file system without it (some network
/// and FUSE ones) gets a hard link, which fails the same way, then the unlink;
/// one without links either (FAT) a check-then-rename.
fn link_no_clobber(part: &Path, dir: &std::os::fd::OwnedFd, leaf: &str) -> io::Result<()> {
    use rustix::fs::{linkat, renameat, renameat_with, statat, AtFlags, RenameFlags, CWD};
    let exists = || io::Error::new(io::ErrorKind::AlreadyExists, "file exists");
    match renameat_with(CWD, part, dir, leaf, RenameFlags::NOREPLACE) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::EXIST) => return Err(exists()),
        // Not supported here (EINVAL), or another failure the link below meets
        // again and reports.
        Err(_) => {}
    }
    match linkat(CWD, part, dir, leaf, AtFlags::empty()) {
        Ok(()) => fs::remove_file(part),
        Err(rustix::io::Errno::EXIST) => Err(exists()),
        Err(_) => {
            if statat(dir, leaf, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                return Err(exists());
            }
            Ok(renameat(CWD, part, dir, leaf)?)
        }
    }
}

/// Where a file with the bytes of `manifest` already is, under the final path of
/// `paths` or one of its numbered variants (`name (1).ext`, ... up to the first
/// name that is free), and its SHA-256: a file this transfer delivered
/// ([`already_complete`]), or any regular file of the manifest's size whose
/// SHA-256 is the manifest's, whatever transfer (chunk size, sender, MQTT version)
/// brought it (at most [`MAX_HASHED_CANDIDATES`] of them hashed). Such a file is
/// recorded in the completed store for this transfer, with a fingerprint, so that
/// the next offer of it is answered without a hash. Returns the path relative to
/// `paths.dir`. Never follows a symlink.
///
/// For a manifest without a hash, the first file of the manifest's size is
/// found: a claim, which the sender checks against the hash it reads, and
/// answers with the manifest again, with the hash, when it is not the file.
pub(crate) fn find_identical(paths: &Paths, manifest: &Manifest) -> io::Result<Option<(SafePath, [u8; 32])>> {
    let mut hashed = 0;
    for n in 0..=MAX_RENAMES {
        let rel = if n == 0 { paths.rel.clone() } else { crate::name::numbered_path(&paths.rel, n) };
        let candidate = Paths::new(&paths.store, &paths.dir, &rel, &manifest.id);
        if let Some(sha) = already_complete(&candidate, manifest)? {
            return Ok(Some((rel, sha)));
        }
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(flags(OFlags::NOFOLLOW | OFlags::NONBLOCK))
            .open(&candidate.final_path);
        let f = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            // A symlink or something unreadable holds the name: not this file,
            // but the numbered names after it may be.
            Err(_) => continue,
        };
        let before = Fingerprint::take(&f)?;
        let m = f.metadata()?;
        if !m.is_file() || m.len() != manifest.size || hashed >= MAX_HASHED_CANDIDATES {
            continue;
        }
        hashed += 1;
        let sha = sha256_of(&f)?;
        if manifest.sha256.is_some_and(|d| d != sha) {
            continue;
        }
        // A part of this transfer is a resume that is no longer needed.
        let _ = fs::remove_file(&paths.part);
        let _ = fs::remove_file(&paths.state);
        let unchanged = Fingerprint::with(&f.metadata()?, before.taken) == before;
        let key = candidate.key(&manifest.id);
        let entry = found_entry(manifest, sha, key.1, unchanged.then_some(before));
        // Best effort: without it the next offer hashes again.
        if let Err(e) = paths.store.completed().put(entry) {
            tracing::debug!(root = %paths.store.root.display(), error = %e, "cannot record a found file");
        }
        return Ok(Some((rel, sha)));
    }
    Ok(None)
}

/// Removes a transfer's partial file and state: after a hash mismatch, the bytes
/// are known bad. Only the names go; a link planted there is unlinked, not
/// followed.
pub(crate) fn discard(paths: &Paths) {
    for p in [&paths.part, &paths.state, &paths.state_tmp] {
        let _ = fs::remove_file(p);
    }
}

#[cfg(test)]
mod batch_tests;
#[cfg(test)]
mod tests;
