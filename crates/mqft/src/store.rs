//! The receiver's files: the hidden partial file, its resume state, and the move to
//! the final name.
//!
//! For a transfer of `name` with id `id` in directory `out`:
//! - `out/.<name>.<id>.part` holds the bytes, each chunk written at its offset;
//! - `out/.<name>.<id>.state` holds the [`ResumeState`] (postcard), replaced
//!   atomically (temporary file, fsync, rename) and only after an fdatasync of the
//!   `.part`, so the state never claims bytes the disk does not have;
//! - once the SHA-256 checks out, the `.part` is fsynced and renamed to `out/<name>`
//!   (a no-clobber link unless overwriting is allowed), and the directory fsynced.
//!
//! The `.state` file of a completed transfer is kept as a marker (a few hundred
//! bytes): when the same transfer is offered again, after a restart or by a second
//! send, a marker that says complete next to a final file of the right size is
//! answered with `Complete` at once, without a byte sent. Deleting `.*.state`
//! files forgets this; nothing else depends on them.
//!
//! Every function here blocks; the engine calls them through `spawn_blocking`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::name::SafeName;
use crate::proto::{Manifest, ResumeState, TransferId};

/// The longest part of the file name kept in the hidden file names, so that
/// `.<name>.<32 hex>.state.tmp` stays under 255 bytes.
const HIDDEN_NAME_BYTES: usize = 200;

/// The paths of one transfer's files.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub dir: PathBuf,
    pub part: PathBuf,
    pub state: PathBuf,
    pub state_tmp: PathBuf,
    pub final_path: PathBuf,
}

impl Paths {
    pub fn new(dir: &Path, name: &SafeName, id: &TransferId) -> Self {
        let mut short = name.as_str();
        if short.len() > HIDDEN_NAME_BYTES {
            let mut end = HIDDEN_NAME_BYTES;
            while !short.is_char_boundary(end) {
                end -= 1;
            }
            short = &short[..end];
        }
        let hidden = |ext: &str| dir.join(format!(".{short}.{id}.{ext}"));
        Paths {
            dir: dir.to_owned(),
            part: hidden("part"),
            state: hidden("state"),
            state_tmp: hidden("state.tmp"),
            final_path: name.in_dir(dir),
        }
    }
}

/// Reads saved state; `None` when there is none or it does not decode (a state
/// file from another version, or cut short by a crash before its rename: both are
/// as good as none).
pub(crate) fn load_state(path: &Path) -> io::Result<Option<ResumeState>> {
    match fs::read(path) {
        Ok(bytes) => Ok(postcard::from_bytes(&bytes).ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the state file atomically: write a temporary file, fsync it, rename it
/// over the old one.
pub(crate) fn save_state(paths: &Paths, state: &ResumeState) -> io::Result<()> {
    let bytes = postcard::to_allocvec(state).map_err(io::Error::other)?;
    let mut f = File::create(&paths.state_tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&paths.state_tmp, &paths.state)
}

/// True when a completed-transfer marker for `manifest` sits next to a final file
/// of the right size, and no `.part`. (A verified transfer's state is the same as
/// the marker; only the `.part` being gone says the rename happened.)
pub(crate) fn already_complete(paths: &Paths, manifest: &Manifest) -> io::Result<bool> {
    if fs::symlink_metadata(&paths.part).is_ok() {
        return Ok(false);
    }
    let Some(state) = load_state(&paths.state)? else { return Ok(false) };
    let complete = state.manifest.same_transfer(manifest)
        && state.hashed == manifest.chunk_count
        && state.held == marker_held(manifest);
    if !complete {
        return Ok(false);
    }
    match fs::metadata(&paths.final_path) {
        Ok(m) => Ok(m.is_file() && m.len() == manifest.size),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
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

/// Opens the partial file, with the state to resume from if both agree. A fresh
/// start truncates whatever was there; the file is sized to the whole transfer so
/// that chunks can land in any order.
pub(crate) fn open_part(paths: &Paths, manifest: &Manifest) -> io::Result<(File, Option<ResumeState>)> {
    let saved = load_state(&paths.state)?.filter(|s| s.manifest.same_transfer(manifest));
    if saved.is_some() {
        match OpenOptions::new().read(true).write(true).open(&paths.part) {
            Ok(f) if f.metadata()?.len() == manifest.size => return Ok((f, saved)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let f = fresh_part(paths, manifest)?;
    Ok((f, None))
}

/// Creates (or truncates) the partial file for a fresh start.
pub(crate) fn fresh_part(paths: &Paths, manifest: &Manifest) -> io::Result<File> {
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&paths.part)?;
    f.set_len(manifest.size)?;
    // Stale state must not survive a fresh start.
    match fs::remove_file(&paths.state) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    Ok(f)
}

/// Writes a chunk at its offset.
pub(crate) fn write_at(file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    file.write_all_at(data, offset)
}

/// Reads `len` bytes at `offset`.
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

/// Gives a verified file its final name: fsync, marker, rename (no-clobber unless
/// `overwrite`), directory fsync. The marker goes first so that a crash between
/// it and the rename resumes as "verified, not yet renamed".
pub(crate) fn finalize(
    file: &File,
    paths: &Paths,
    complete: &ResumeState,
    overwrite: bool,
    modified_ms: Option<i64>,
) -> io::Result<()> {
    if let Some(ms) = modified_ms {
        // The sender's modification time, when it sent one; best effort.
        let t = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms.max(0) as u64));
        if let Some(t) = t {
            let _ = file.set_modified(t);
        }
    }
    file.sync_all()?;
    save_state(paths, complete)?;
    if overwrite {
        fs::rename(&paths.part, &paths.final_path)?;
    } else {
        // A hard link fails if the name exists, atomically; some file systems (FAT)
        // have no links, so fall back to check-then-rename there.
        match fs::hard_link(&paths.part, &paths.final_path) {
            Ok(()) => fs::remove_file(&paths.part)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
            Err(_) => {
                if paths.final_path.exists() {
                    return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
                }
                fs::rename(&paths.part, &paths.final_path)?;
            }
        }
    }
    File::open(&paths.dir)?.sync_all()
}

/// Removes a transfer's partial file and state: after a hash mismatch, the bytes
/// are known bad.
pub(crate) fn discard(paths: &Paths) {
    for p in [&paths.part, &paths.state, &paths.state_tmp] {
        let _ = fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::sanitize_file_name;
    use crate::proto::{HashState, Meta};

    fn manifest(size: u64) -> Manifest {
        Manifest::new("photo.jpg".into(), size, 4, [9; 32], Meta::default(), 1).unwrap()
    }

    #[test]
    fn hidden_names_stay_short() {
        let dir = Path::new("/srv/in");
        let name = sanitize_file_name(&"é".repeat(127)).unwrap();
        let p = Paths::new(dir, &name, &TransferId([0xab; 16]));
        for path in [&p.part, &p.state, &p.state_tmp] {
            let f = path.file_name().unwrap().to_str().unwrap();
            assert!(f.len() <= 255 && f.starts_with('.'), "{f}");
            assert_eq!(path.parent(), Some(dir));
        }
        assert_eq!(p.final_path, dir.join(name.as_str()));
    }

    #[test]
    fn state_round_trips_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(10);
        let paths = Paths::new(dir.path(), &sanitize_file_name(&m.name).unwrap(), &m.id);
        assert_eq!(load_state(&paths.state).unwrap(), None);

        let (f, saved) = open_part(&paths, &m).unwrap();
        assert!(saved.is_none());
        assert_eq!(f.metadata().unwrap().len(), 10);
        write_at(&f, 4, b"abcd").unwrap();
        let mut hash = HashState::new();
        hash.update(b"");
        let state = ResumeState { manifest: m.clone(), held: vec![(1, 2)], hash, hashed: 0 };
        checkpoint(&f, &paths, &state).unwrap();
        assert!(!paths.state_tmp.exists());
        assert_eq!(load_state(&paths.state).unwrap(), Some(state.clone()));

        // Reopening resumes, with the bytes in place.
        let (f, saved) = open_part(&paths, &m).unwrap();
        assert_eq!(saved, Some(state.clone()));
        assert_eq!(read_at(&f, 4, 4).unwrap(), b"abcd");

        // Another run of the same transfer resumes too; another transfer does not.
        let mut rerun = m.clone();
        rerun.run = 77;
        assert!(open_part(&paths, &rerun).unwrap().1.is_some());
        let other = manifest(11);
        let (_, saved) = open_part(&paths, &other).unwrap();
        assert!(saved.is_none());
        assert!(!paths.state.exists(), "a fresh start clears stale state");
    }

    #[test]
    fn garbage_state_counts_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".x.state");
        fs::write(&path, b"\xff\xff\xff").unwrap();
        assert_eq!(load_state(&path).unwrap(), None);
    }

    #[test]
    fn finalize_never_clobbers_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(4);
        let paths = Paths::new(dir.path(), &sanitize_file_name(&m.name).unwrap(), &m.id);
        let complete = ResumeState { manifest: m.clone(), held: vec![(0, 1)], hash: HashState::new(), hashed: 1 };

        fs::write(&paths.final_path, b"old").unwrap();
        let (f, _) = open_part(&paths, &m).unwrap();
        write_at(&f, 0, b"new!").unwrap();
        let e = finalize(&f, &paths, &complete, false, None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&paths.final_path).unwrap(), b"old");
        // The verified state is kept for a later try, but is no completion marker
        // while the .part is there.
        fs::write(&paths.final_path, b"old!").unwrap();
        assert!(!already_complete(&paths, &m).unwrap());

        finalize(&f, &paths, &complete, true, Some(1_000_000)).unwrap();
        assert_eq!(fs::read(&paths.final_path).unwrap(), b"new!");
        assert!(!paths.part.exists());
        assert!(already_complete(&paths, &m).unwrap());
        // A final file of another size is not this transfer's.
        fs::write(&paths.final_path, b"changed").unwrap();
        assert!(!already_complete(&paths, &m).unwrap());
    }
}
