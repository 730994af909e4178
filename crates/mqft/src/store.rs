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
//! - the final name is taken with a no-clobber hard link (or, with `overwrite`, a
//!   rename, which replaces a link rather than following it).
//!
//! Every function here blocks; the engine calls them through `spawn_blocking`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;

use crate::name::SafeName;
use crate::proto::{Manifest, ResumeState, TransferId};

/// The longest part of the file name kept in the hidden file names, so that
/// `.<name>.<32 hex>.state.tmp` stays under 255 bytes.
const HIDDEN_NAME_BYTES: usize = 200;

/// The largest state file read. A state is the manifest (8 KiB at most) and the
/// held ranges: even four million chunks held every other one take about 20 MiB.
const MAX_STATE_BYTES: u64 = 32 << 20;

/// How often an exclusive create is tried again when something keeps taking the
/// name between the unlink and the create.
const CREATE_ATTEMPTS: usize = 3;

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

/// Reads saved state; `None` when there is none or it does not decode (a state
/// file from another version, or cut short by a crash before its rename: both are
/// as good as none), and when what is there is not a state file of ours (a
/// symlink, a file with other links, a FIFO, anything too large).
pub(crate) fn load_state(path: &Path) -> io::Result<Option<ResumeState>> {
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
    Ok(postcard::from_bytes(&bytes).ok())
}

/// Replaces the state file atomically: write a new temporary file (created
/// exclusively), fsync it, rename it over the old one (a rename replaces a link
/// at the name, it does not follow it).
pub(crate) fn save_state(paths: &Paths, state: &ResumeState) -> io::Result<()> {
    write_state(paths, state, true)
}

/// [`save_state`], with the fsync of the new file only if `sync`.
fn write_state(paths: &Paths, state: &ResumeState, sync: bool) -> io::Result<()> {
    let bytes = postcard::to_allocvec(state).map_err(io::Error::other)?;
    let mut f = create_exclusive(&paths.state_tmp)?;
    f.write_all(&bytes)?;
    if sync {
        f.sync_all()?;
    }
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
    // A symlink at the final name is not the file this receiver put there.
    match fs::symlink_metadata(&paths.final_path) {
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
    let needed = manifest.size.saturating_sub(on_disk).saturating_add(reserved);
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
pub(crate) fn open_part(paths: &Paths, manifest: &Manifest) -> io::Result<(File, Option<ResumeState>)> {
    let saved = load_state(&paths.state)?.filter(|s| s.manifest.same_transfer(manifest));
    if saved.is_some() {
        if let Some(f) = open_own(&paths.part)? {
            if f.metadata()?.len() == manifest.size {
                return Ok((f, saved));
            }
        }
    }
    let f = fresh_part(paths, manifest)?;
    Ok((f, None))
}

/// Creates a new partial file for a fresh start, in place of whatever was there.
pub(crate) fn fresh_part(paths: &Paths, manifest: &Manifest) -> io::Result<File> {
    // Stale state must not survive a fresh start.
    remove_if_exists(&paths.state)?;
    let f = create_exclusive(&paths.part)?;
    f.set_len(manifest.size)?;
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

/// Gives a verified file its final name: fsync, marker, rename (no-clobber unless
/// `overwrite`), directory fsync. The marker goes first so that a crash between
/// it and the rename resumes as "verified, not yet renamed" (or, if the crash
/// lost the marker's bytes, starts that transfer over: never a wrong file).
pub(crate) fn finalize(
    file: &File,
    paths: &Paths,
    complete: &ResumeState,
    overwrite: bool,
    modified_ms: Option<i64>,
) -> io::Result<()> {
    check_still_ours(file, paths)?;
    if let Some(ms) = modified_ms {
        // The sender's modification time, when it sent one; best effort.
        let t = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms.max(0) as u64));
        if let Some(t) = t {
            let _ = file.set_modified(t);
        }
    }
    file.sync_all()?;
    // The marker needs no fsync of its own: the directory's, below, makes its name
    // durable, and a marker whose bytes a crash lost does not decode, or names no
    // transfer, which is as good as none (the file is then refused as existing
    // rather than answered complete). One fsync fewer per file is a third of the
    // cost of receiving many small ones.
    write_state(paths, complete, false)?;
    if overwrite {
        fs::rename(&paths.part, &paths.final_path)?;
    } else {
        // A hard link fails if the name exists (even as a dangling symlink),
        // atomically; some file systems (FAT) have no links, so fall back to
        // check-then-rename there.
        match fs::hard_link(&paths.part, &paths.final_path) {
            Ok(()) => fs::remove_file(&paths.part)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
            Err(_) => {
                if fs::symlink_metadata(&paths.final_path).is_ok() {
                    return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
                }
                fs::rename(&paths.part, &paths.final_path)?;
            }
        }
    }
    File::open(&paths.dir)?.sync_all()
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

    /// A file outside the output directory that a planted link points at, and a
    /// check that it was never touched.
    struct Victim {
        path: PathBuf,
        content: Vec<u8>,
        modified: std::time::SystemTime,
    }

    impl Victim {
        fn new(dir: &Path, len: usize) -> Self {
            Self::with_content(dir, (0..len).map(|i| (i * 7 % 251) as u8).collect())
        }

        fn with_content(dir: &Path, content: Vec<u8>) -> Self {
            let path = dir.join("victim");
            fs::write(&path, &content).unwrap();
            let modified = fs::metadata(&path).unwrap().modified().unwrap();
            Victim { path, content, modified }
        }

        fn assert_untouched(&self) {
            assert_eq!(fs::read(&self.path).unwrap(), self.content, "the victim's bytes changed");
            assert_eq!(fs::metadata(&self.path).unwrap().modified().unwrap(), self.modified);
        }
    }

    fn setup(size: u64) -> (tempfile::TempDir, tempfile::TempDir, Manifest, Paths) {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let m = manifest(size);
        let paths = Paths::new(out.path(), &sanitize_file_name(&m.name).unwrap(), &m.id);
        (out, elsewhere, m, paths)
    }

    fn state_of(m: &Manifest, held: Vec<(u32, u32)>) -> ResumeState {
        ResumeState { manifest: m.clone(), held, hash: HashState::new(), hashed: 0 }
    }

    #[test]
    fn links_at_the_part_path_are_replaced_not_written_through() {
        for hard in [false, true] {
            let (_out, elsewhere, m, paths) = setup(8);
            let victim = Victim::new(elsewhere.path(), 8);
            if hard {
                fs::hard_link(&victim.path, &paths.part).unwrap();
            } else {
                std::os::unix::fs::symlink(&victim.path, &paths.part).unwrap();
            }
            // Even with state that says the .part is half there: a link is no .part.
            save_state(&paths, &state_of(&m, vec![(0, 1)])).unwrap();
            let (f, saved) = open_part(&paths, &m).unwrap();
            assert!(saved.is_none(), "hard link {hard}: resumed from a planted file");
            write_at(&f, 0, b"12345678").unwrap();
            victim.assert_untouched();
            let meta = fs::symlink_metadata(&paths.part).unwrap();
            assert!(meta.is_file() && meta.nlink() == 1);
        }
    }

    #[test]
    fn links_and_fifos_at_the_state_paths_are_ignored_and_replaced() {
        for trap in ["symlink", "hard link", "fifo"] {
            let (_out, elsewhere, m, paths) = setup(8);
            // A valid state, even: a planted one is not trusted.
            let real = state_of(&m, vec![(0, 1)]);
            let victim = Victim::with_content(elsewhere.path(), postcard::to_allocvec(&real).unwrap());
            for path in [&paths.state, &paths.state_tmp] {
                match trap {
                    "symlink" => std::os::unix::fs::symlink(&victim.path, path).unwrap(),
                    "hard link" => fs::hard_link(&victim.path, path).unwrap(),
                    _ => rustix::fs::mknodat(
                        rustix::fs::CWD,
                        path,
                        rustix::fs::FileType::Fifo,
                        rustix::fs::Mode::from_raw_mode(0o600),
                        0,
                    )
                    .unwrap(),
                }
            }
            // Not read through (a FIFO would block here forever), not trusted.
            assert_eq!(load_state(&paths.state).unwrap(), None, "{trap}");
            let (f, saved) = open_part(&paths, &m).unwrap();
            assert!(saved.is_none(), "{trap}");
            checkpoint(&f, &paths, &real).unwrap();
            assert_eq!(load_state(&paths.state).unwrap(), Some(real), "{trap}");
            assert!(!paths.state_tmp.exists());
            if trap != "fifo" {
                victim.assert_untouched();
            }
        }
    }

    #[test]
    fn a_part_replaced_or_linked_before_the_final_rename_is_not_published() {
        let (_out, elsewhere, m, paths) = setup(4);
        let complete = ResumeState { manifest: m.clone(), held: vec![(0, 1)], hash: HashState::new(), hashed: 1 };
        let (f, _) = open_part(&paths, &m).unwrap();
        // Another name for the file, which could change it after it is verified.
        let other = elsewhere.path().join("other");
        fs::hard_link(&paths.part, &other).unwrap();
        assert!(finalize(&f, &paths, &complete, false, None).is_err());
        fs::remove_file(&other).unwrap();
        // The name now holds another file.
        let victim = Victim::new(elsewhere.path(), 4);
        fs::remove_file(&paths.part).unwrap();
        std::os::unix::fs::symlink(&victim.path, &paths.part).unwrap();
        assert!(finalize(&f, &paths, &complete, true, None).is_err());
        assert!(fs::symlink_metadata(&paths.final_path).is_err(), "nothing under the final name");
        victim.assert_untouched();
    }

    #[test]
    fn a_symlink_at_the_final_name_is_no_completed_file() {
        let (_out, elsewhere, m, paths) = setup(4);
        let victim = Victim::new(elsewhere.path(), 4);
        let complete = ResumeState { manifest: m.clone(), held: vec![(0, 1)], hash: HashState::new(), hashed: 1 };
        save_state(&paths, &complete).unwrap();
        std::os::unix::fs::symlink(&victim.path, &paths.final_path).unwrap();
        assert!(!already_complete(&paths, &m).unwrap());
        // And the no-clobber link does not go through it.
        let (f, _) = open_part(&paths, &m).unwrap();
        let e = finalize(&f, &paths, &complete, false, None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        victim.assert_untouched();
    }

    #[test]
    fn room_is_checked_against_the_free_space() {
        let (_out, _elsewhere, m, paths) = setup(8);
        check_room(&paths, &m, 0).unwrap();
        let free = free_space(&paths.dir).unwrap();
        let e = check_room(&paths, &m, free).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        let huge = Manifest::new("x".into(), 1 << 46, 16 << 20, [0; 32], Meta::default(), 1).unwrap();
        assert_eq!(check_room(&paths, &huge, 0).unwrap_err().kind(), io::ErrorKind::StorageFull);
        assert!(!paths.part.exists(), "the check writes nothing");
    }
}
