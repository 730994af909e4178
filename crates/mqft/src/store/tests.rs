use super::*;
use crate::name::sanitize_file_name;
use crate::proto::{HashState, Meta};

fn manifest(size: u64) -> Manifest {
    Manifest::new("photo.jpg".into(), size, 4, Some([9; 32]), Meta::default(), 1).unwrap()
}

/// The manifest of `data` in 4-byte chunks.
pub(super) fn manifest_of(data: &[u8]) -> Manifest {
    let sha = integrity::sha256(data);
    Manifest::new("photo.jpg".into(), data.len() as u64, 4, Some(sha), Meta::default(), 1).unwrap()
}

/// The state of a transfer of `data` holding `held` (whole chunks), with their
/// CRCs and nothing hashed.
pub(super) fn holding(m: &Manifest, data: &[u8], held: Vec<(u32, u32)>) -> ResumeState {
    let crcs = held
        .iter()
        .flat_map(|&(a, b)| a..b)
        .map(|i| integrity::crc32(&data[m.chunk_offset(i) as usize..][..m.chunk_len(i) as usize]))
        .collect();
    ResumeState { manifest: m.clone(), held, hash: HashState::new(), hashed: 0, crcs }
}

/// The completed-transfer state of `data`.
pub(super) fn complete_of(m: &Manifest, data: &[u8]) -> ResumeState {
    let mut s = holding(m, data, vec![(0, m.chunk_count)]);
    s.hash.update(data);
    s.hashed = m.chunk_count;
    s
}

/// The paths of `m`'s transfer, received into `out` with its default state
/// folder.
pub(super) fn paths_in(out: &Path, m: &Manifest) -> Paths {
    let state = StateDir::open(out, None, None).unwrap();
    Paths::new(&state, out, &sanitize_file_name(&m.name).unwrap().into(), &m.id)
}

#[test]
fn transfer_files_are_in_the_state_folder_by_id() {
    let out = tempfile::tempdir().unwrap();
    let name = sanitize_file_name(&"é".repeat(127)).unwrap();
    let state = StateDir::open(out.path(), None, None).unwrap();
    let id = TransferId([0xab; 16]);
    let p = Paths::new(&state, out.path(), &name.clone().into(), &id);
    for path in [&p.part, &p.state, &p.state_tmp] {
        assert_eq!(path.parent(), Some(out.path().join(".mqft/part").as_path()));
        assert!(path.file_name().unwrap().to_str().unwrap().starts_with(&id.to_string()));
    }
    assert_eq!(p.final_path, out.path().join(name.as_str()));
    // A received name can never be the state folder's.
    assert_ne!(sanitize_file_name(STATE_DIR_NAME).unwrap().as_str(), STATE_DIR_NAME);
}

#[test]
fn a_state_dir_elsewhere_leaves_the_output_folder_alone() {
    let out = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let data = b"0123456789";
    let m = manifest_of(data);
    let state = StateDir::open(out.path(), Some(elsewhere.path()), None).unwrap();
    // Same file system here (both temporary folders): the parts go there too.
    assert_eq!(state.parts, elsewhere.path().join("part"));
    let paths = Paths::new(&state, out.path(), &sanitize_file_name(&m.name).unwrap().into(), &m.id);
    let (f, _) = open_part(&paths, &m).unwrap();
    write_at(&f, 0, data).unwrap();
    finalize(&f, &paths, &complete_of(&m, data), None, OnConflict::Fail, None).unwrap();
    let names: Vec<_> = fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["photo.jpg"]);
    assert!(already_complete(&paths, &m).unwrap().is_some());
}

#[test]
fn a_second_receiver_knows_it_shares_the_state_folder() {
    let out = tempfile::tempdir().unwrap();
    let first = StateDir::open(out.path(), None, None).unwrap();
    assert!(!first.shared);
    assert!(StateDir::open(out.path(), None, None).unwrap().shared);
    drop(first);
    assert!(!StateDir::open(out.path(), None, None).unwrap().shared);
}

#[test]
fn a_symlink_at_the_default_state_folder_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), out.path().join(STATE_DIR_NAME)).unwrap();
    assert!(StateDir::open(out.path(), None, None).is_err());
    assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

#[test]
fn a_completed_transfer_leaves_one_record_and_no_file() {
    let data = b"0123456789abcdefghij";
    let (dir, m, paths) = received(data);
    assert!(!paths.state.exists() && !paths.part.exists());
    assert_eq!(fs::read_dir(&paths.store.parts).unwrap().count(), 0);
    assert_eq!(paths.store.completed_count(), 1);
    // A new receiver (a restart) answers from the log.
    drop(paths);
    let again = paths_in(dir.path(), &m);
    assert!(already_complete(&again, &m).unwrap().is_some());
}

#[test]
fn a_crash_before_the_record_leaves_a_marker_that_still_counts() {
    let data = b"0123456789abcdefghij";
    let (dir, m, paths) = received(data);
    // As if the record never made it to the log, but the complete state did.
    fs::remove_file(paths.store.root.join("completed.log")).unwrap();
    write_state(&paths, &StateFile { resume: complete_of(&m, data), verified: None }, false).unwrap();
    drop(paths);
    let again = paths_in(dir.path(), &m);
    assert_eq!(again.store.completed_count(), 0);
    assert!(already_complete(&again, &m).unwrap().is_some());
    // Now recorded, and the marker gone.
    assert_eq!(again.store.completed_count(), 1);
    assert!(!again.state.exists());
}

#[test]
fn state_round_trips_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(10);
    let paths = paths_in(dir.path(), &m);
    assert_eq!(load_state(&paths.state).unwrap(), None);

    let (f, saved) = open_part(&paths, &m).unwrap();
    assert!(saved.is_none());
    assert_eq!(f.metadata().unwrap().len(), 10);
    write_at(&f, 4, b"abcd").unwrap();
    let mut hash = HashState::new();
    hash.update(b"");
    let state =
        ResumeState { manifest: m.clone(), held: vec![(1, 2)], hash, hashed: 0, crcs: vec![integrity::crc32(b"abcd")] };
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
    let m = manifest_of(b"new!");
    let paths = paths_in(dir.path(), &m);
    let complete = complete_of(&m, b"new!");

    fs::write(&paths.final_path, b"old").unwrap();
    let (f, _) = open_part(&paths, &m).unwrap();
    write_at(&f, 0, b"new!").unwrap();
    let e = finalize(&f, &paths, &complete, None, OnConflict::Fail, None).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read(&paths.final_path).unwrap(), b"old");
    // The verified state is kept for a later try, but is no completion marker
    // while the .part is there.
    fs::write(&paths.final_path, b"old!").unwrap();
    assert!(already_complete(&paths, &m).unwrap().is_none());

    finalize(&f, &paths, &complete, None, OnConflict::Overwrite, Some(1_000_000)).unwrap();
    assert_eq!(fs::read(&paths.final_path).unwrap(), b"new!");
    assert!(!paths.part.exists());
    assert!(already_complete(&paths, &m).unwrap().is_some());
    // A final file of another size is not this transfer's.
    fs::write(&paths.final_path, b"changed").unwrap();
    assert!(already_complete(&paths, &m).unwrap().is_none());
}

#[test]
fn rename_takes_the_first_free_numbered_name_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_of(b"new!");
    let paths = paths_in(dir.path(), &m);
    let name = sanitize_file_name(&m.name).unwrap();
    fs::write(&paths.final_path, b"old").unwrap();
    fs::write(crate::name::numbered(&name, 1).in_dir(dir.path()), b"old 1").unwrap();
    let (f, _) = open_part(&paths, &m).unwrap();
    write_at(&f, 0, b"new!").unwrap();
    let got = finalize(&f, &paths, &complete_of(&m, b"new!"), None, OnConflict::Rename, None).unwrap();
    let second: SafePath = crate::name::numbered(&name, 2).into();
    assert_eq!(got, second.in_dir(dir.path()));
    assert_eq!(fs::read(&got).unwrap(), b"new!");
    assert_eq!(fs::read(&paths.final_path).unwrap(), b"old");
    assert!(!paths.part.exists() && !paths.state.exists());
    // Found again, by its record, under the numbered name.
    assert!(already_complete(&Paths::new(&paths.store, dir.path(), &second, &m.id), &m).unwrap().is_some());
    assert_eq!(find_identical(&paths, &m).unwrap().map(|(p, _)| p), Some(second));
}

#[test]
fn the_same_bytes_from_another_transfer_are_found_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let data = b"0123456789abcdefghij";
    let m = manifest_of(data);
    let name = sanitize_file_name(&m.name).unwrap();
    let paths = paths_in(dir.path(), &m);
    assert_eq!(find_identical(&paths, &m).unwrap(), None);
    fs::write(name.in_dir(dir.path()), b"other bytes, same size").unwrap();
    // The same bytes, put there by hand (or by a transfer of other chunks).
    fs::write(crate::name::numbered(&name, 1).in_dir(dir.path()), data).unwrap();
    let other_chunks = Manifest::new(m.name.clone(), m.size, 3, m.sha256, Meta::default(), 1).unwrap();
    assert_ne!(other_chunks.id, m.id);
    let other = Paths::new(&paths.store, dir.path(), &name.clone().into(), &other_chunks.id);
    let first: SafePath = crate::name::numbered(&name, 1).into();
    assert_eq!(find_identical(&other, &other_chunks).unwrap().map(|(p, _)| p), Some(first.clone()));
    // Recorded for that transfer: the next offer is answered from the record.
    let marked = Paths::new(&paths.store, dir.path(), &first, &other_chunks.id);
    assert_eq!(Some(recorded(&marked, &other_chunks).sha256), m.sha256);
    assert!(already_complete(&marked, &other_chunks).unwrap().is_some());
    // A symlink to the same bytes is not followed.
    let link_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(first.in_dir(dir.path()), name.in_dir(link_dir.path())).unwrap();
    assert_eq!(find_identical(&paths_in(link_dir.path(), &m), &m).unwrap(), None);
}

/// The completed store's record of `m` at its final path.
fn recorded(paths: &Paths, m: &Manifest) -> Entry {
    paths.store.completed().get(&paths.key(&m.id)).cloned().expect("a record")
}

/// Receives `data` as a completed transfer: `.part`, record, final name.
fn received(data: &[u8]) -> (tempfile::TempDir, Manifest, Paths) {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_of(data);
    let paths = paths_in(dir.path(), &m);
    let (f, _) = open_part(&paths, &m).unwrap();
    write_at(&f, 0, data).unwrap();
    finalize(&f, &paths, &complete_of(&m, data), None, OnConflict::Fail, None).unwrap();
    (dir, m, paths)
}

#[test]
fn a_received_file_rewritten_with_other_bytes_of_its_size_is_not_complete() {
    let data = b"0123456789abcdefghij";
    let (_dir, m, paths) = received(data);
    assert!(already_complete(&paths, &m).unwrap().is_some());
    // Zeros over it, in place: same inode, same size.
    let f = OpenOptions::new().write(true).open(&paths.final_path).unwrap();
    f.write_all_at(&[0; 20], 0).unwrap();
    drop(f);
    assert!(already_complete(&paths, &m).unwrap().is_none());
    // Its bytes back: complete again.
    fs::write(&paths.final_path, data).unwrap();
    assert!(already_complete(&paths, &m).unwrap().is_some());
}

#[test]
fn a_rewrite_that_sets_the_old_times_back_is_not_complete() {
    // What `cp -p other photo.jpg` does: new bytes, the old modification time.
    let data = b"0123456789abcdefghij";
    let (_dir, m, paths) = received(data);
    assert!(already_complete(&paths, &m).unwrap().is_some());
    let entry = recorded(&paths, &m);
    assert!(entry.verified.is_some(), "a file verified on an offer leaves its fingerprint");
    let before = fs::metadata(&paths.final_path).unwrap();
    let f = OpenOptions::new().write(true).open(&paths.final_path).unwrap();
    f.write_all_at(b"ABCDEFGHIJ0123456789", 0).unwrap();
    f.set_modified(before.modified().unwrap()).unwrap();
    drop(f);
    let after = fs::metadata(&paths.final_path).unwrap();
    assert_eq!((after.len(), after.modified().unwrap()), (before.len(), before.modified().unwrap()));
    assert!(already_complete(&paths, &m).unwrap().is_none());
}

#[test]
fn a_fingerprint_of_a_file_that_had_just_changed_proves_nothing() {
    let data = b"0123456789abcdefghij";
    let (_dir, _m, paths) = received(data);
    let meta = fs::metadata(&paths.final_path).unwrap();
    let taken = Fingerprint::take(&File::open(&paths.final_path).unwrap()).unwrap();
    // As if taken at the very moment of the last change (a loaded machine may
    // take longer than the settling second between the write and `take`).
    let fresh = Fingerprint { taken: taken.ctime, ..taken };
    assert!(!fresh.proves(&meta), "taken within a tick of the file's last change");
    // The same file, looked at two seconds after it last changed.
    let settled = Fingerprint { taken: (fresh.ctime.0 + 2, fresh.ctime.1), ..fresh };
    assert!(settled.proves(&meta));
    // Anything else about it changed: no proof.
    for other in [
        Fingerprint { size: settled.size + 1, ..settled },
        Fingerprint { ino: settled.ino + 1, ..settled },
        Fingerprint { ctime: (settled.ctime.0, settled.ctime.1 ^ 1), ..settled },
        Fingerprint { mtime: (settled.mtime.0 - 1, settled.mtime.1), ..settled },
    ] {
        assert!(!other.proves(&meta), "{other:?}");
    }
}

#[test]
fn a_settled_fingerprint_spares_the_hash_until_the_file_is_rewritten() {
    let data = b"0123456789abcdefghij";
    let (_dir, m, paths) = received(data);
    // The fingerprint as a later offer would find it, taken once the file had
    // settled; the record claims it for bytes that do not even hash right, so
    // only the fingerprint can make the file complete.
    assert!(already_complete(&paths, &m).unwrap().is_some());
    let mut entry = recorded(&paths, &m);
    let fp = entry.verified.unwrap();
    entry.verified = Some(Fingerprint { taken: (fp.ctime.0 + 2, fp.ctime.1), ..fp });
    let mut wrong = m.clone();
    wrong.sha256 = Some([7; 32]);
    entry.sha256 = [7; 32];
    paths.store.completed().put(entry).unwrap();
    assert!(already_complete(&paths, &wrong).unwrap().is_some(), "the fingerprint was not trusted");
    // Rewritten in place with the old modification time, as `cp -p` does.
    let before = fs::metadata(&paths.final_path).unwrap();
    let f = OpenOptions::new().write(true).open(&paths.final_path).unwrap();
    f.write_all_at(b"ABCDEFGHIJ0123456789", 0).unwrap();
    f.set_modified(before.modified().unwrap()).unwrap();
    drop(f);
    assert!(already_complete(&paths, &wrong).unwrap().is_none(), "a rewritten file kept its proof");
}

#[test]
fn state_files_of_another_format_or_damaged_count_as_none() {
    let data = b"01234567";
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_of(data);
    let paths = paths_in(dir.path(), &m);
    let state = holding(&m, data, vec![(0, 1)]);
    save_state(&paths, &state).unwrap();
    let good = fs::read(&paths.state).unwrap();
    assert_eq!(load_state(&paths.state).unwrap(), Some(state.clone()));
    // The previous release's format: the bare postcard of a state.
    let old = postcard::to_allocvec(&(m.clone(), vec![(0u32, 1u32)], HashState::new(), 0u32)).unwrap();
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let mut trailing = good.clone();
    trailing.push(0);
    for bad in [old, flipped, good[..good.len() - 1].to_vec(), trailing, Vec::new()] {
        fs::write(&paths.state, &bad).unwrap();
        assert_eq!(load_state(&paths.state).unwrap(), None, "{bad:?}");
    }
}

#[test]
fn a_resume_keeps_only_the_chunks_still_in_the_part() {
    let data = b"0123456789abcdefghij";
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_of(data);
    let paths = paths_in(dir.path(), &m);
    let (f, _) = open_part(&paths, &m).unwrap();
    write_at(&f, 0, &data[..16]).unwrap();
    let mut state = holding(&m, data, vec![(0, 4)]);
    state.hash.update(&data[..8]);
    state.hashed = 2;
    checkpoint(&f, &paths, &state).unwrap();
    drop(f);

    // Unchanged: resumed as saved.
    assert_eq!(open_part(&paths, &m).unwrap().1, Some(state.clone()));
    // Chunk 1 overwritten: dropped, and the hash, which covered it, restarts.
    let f = OpenOptions::new().write(true).open(&paths.part).unwrap();
    f.write_all_at(b"XXXX", 4).unwrap();
    let (_, saved) = open_part(&paths, &m).unwrap();
    let saved = saved.unwrap();
    assert_eq!((saved.held.as_slice(), saved.hashed), (&[(0, 1), (2, 4)][..], 0));
    // Cut short inside chunk 3: what is gone is no longer held, and the file
    // has its full length again for the chunks to come.
    f.set_len(13).unwrap();
    let (f, saved) = open_part(&paths, &m).unwrap();
    assert_eq!(saved.unwrap().held, [(0, 1), (2, 3)]);
    assert_eq!(f.metadata().unwrap().len(), 20);
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
    let paths = paths_in(out.path(), &m);
    (out, elsewhere, m, paths)
}

fn state_of(m: &Manifest, held: Vec<(u32, u32)>) -> ResumeState {
    let crcs = vec![0; held.iter().map(|&(a, b)| (b - a) as usize).sum()];
    ResumeState { manifest: m.clone(), held, hash: HashState::new(), hashed: 0, crcs }
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
        let victim = Victim::with_content(
            elsewhere.path(),
            encode_state(&StateFile { resume: real.clone(), verified: None }).unwrap(),
        );
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
    let complete = state_of(&m, vec![(0, 1)]);
    let (f, _) = open_part(&paths, &m).unwrap();
    // Another name for the file, which could change it after it is verified.
    let other = elsewhere.path().join("other");
    fs::hard_link(&paths.part, &other).unwrap();
    assert!(finalize(&f, &paths, &complete, None, OnConflict::Fail, None).is_err());
    fs::remove_file(&other).unwrap();
    // The name now holds another file.
    let victim = Victim::new(elsewhere.path(), 4);
    fs::remove_file(&paths.part).unwrap();
    std::os::unix::fs::symlink(&victim.path, &paths.part).unwrap();
    assert!(finalize(&f, &paths, &complete, None, OnConflict::Overwrite, None).is_err());
    assert!(fs::symlink_metadata(&paths.final_path).is_err(), "nothing under the final name");
    victim.assert_untouched();
}

#[test]
fn a_symlink_at_the_final_name_is_no_completed_file() {
    let (out, elsewhere, _, _) = setup(4);
    let victim = Victim::new(elsewhere.path(), 4);
    // The victim even has the transfer's bytes: it is still no file of ours.
    let m = manifest_of(&victim.content);
    let paths = paths_in(out.path(), &m);
    let complete = complete_of(&m, &victim.content);
    save_state(&paths, &complete).unwrap();
    std::os::unix::fs::symlink(&victim.path, &paths.final_path).unwrap();
    assert!(already_complete(&paths, &m).unwrap().is_none());
    // And the no-clobber link does not go through it.
    let (f, _) = open_part(&paths, &m).unwrap();
    let e = finalize(&f, &paths, &complete, None, OnConflict::Fail, None).unwrap_err();
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
    let huge = Manifest::new("x".into(), 1 << 46, 16 << 20, Some([0; 32]), Meta::default(), 1).unwrap();
    assert_eq!(check_room(&paths, &huge, 0).unwrap_err().kind(), io::ErrorKind::StorageFull);
    assert!(!paths.part.exists(), "the check writes nothing");
}

#[test]
fn nested_paths_create_their_directories_and_never_follow_a_planted_link() {
    let out = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let path = crate::name::sanitize_path("a/b/c.jpg").unwrap();
    let (_dir, leaf) = open_parent_dirs(out.path(), &path).unwrap();
    assert_eq!(leaf, "c.jpg");
    assert!(out.path().join("a/b").is_dir());
    // A symlink where a directory of the path goes: refused, nothing created.
    std::os::unix::fs::symlink(elsewhere.path(), out.path().join("x")).unwrap();
    let through = crate::name::sanitize_path("x/y/z.jpg").unwrap();
    assert!(open_parent_dirs(out.path(), &through).is_err());
    std::os::unix::fs::symlink(elsewhere.path(), out.path().join("a/l")).unwrap();
    assert!(open_parent_dirs(out.path(), &crate::name::sanitize_path("a/l/z.jpg").unwrap()).is_err());
    // A file where a directory goes: refused too.
    fs::write(out.path().join("f"), b"").unwrap();
    assert!(open_parent_dirs(out.path(), &crate::name::sanitize_path("f/z.jpg").unwrap()).is_err());
    assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    // The check before an offer is taken sees the same, and creates nothing.
    let id = TransferId([1; 16]);
    let state = StateDir::open(out.path(), None, None).unwrap();
    assert!(check_parent_dirs(&Paths::new(&state, out.path(), &through, &id)).is_err());
    let fresh = crate::name::sanitize_path("new/dir/z.jpg").unwrap();
    assert!(check_parent_dirs(&Paths::new(&state, out.path(), &fresh, &id)).is_ok());
    assert!(!out.path().join("new").exists());
}
