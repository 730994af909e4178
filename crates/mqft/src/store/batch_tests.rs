//! Tests of the group commit ([`place_verified`] and [`commit_with`]): what is
//! durable, recorded and written when files are finalized together.

use std::cell::RefCell;

use super::tests::{complete_of, holding, manifest_of, paths_in};
use super::*;
use crate::proto::Meta;

/// A transfer of `data` under `name` into `out`, its bytes in the `.part`.
fn written(out: &Path, state: &Arc<StateDir>, name: &str, data: &[u8]) -> (File, Paths, Manifest) {
    let sha = integrity::sha256(data);
    let m = Manifest::new(name.into(), data.len() as u64, 4, Some(sha), Meta::default(), 1).unwrap();
    let rel = crate::name::sanitize_path(name).unwrap();
    let paths = Paths::new(state, out, &rel, &m.id);
    let (f, _) = open_part(&paths, &m).unwrap();
    write_at(&f, 0, data).unwrap();
    (f, paths, m)
}

/// Files finalized together: one fsync of their directory covers every name, it
/// comes before any of them is recorded, and each is answered `Ok` (confirmed)
/// only from the commit that synced it.
#[test]
fn files_finalized_together_share_one_directory_sync_and_are_recorded_after_it() {
    let out = tempfile::tempdir().unwrap();
    let state = StateDir::open(out.path(), None, None).unwrap();
    let mut placed = Vec::new();
    for n in 0..3 {
        let data = format!("file number {n}");
        let (f, paths, m) = written(out.path(), &state, &format!("img{n}.jpg"), data.as_bytes());
        placed.push(
            place_verified(&f, &paths, &complete_of(&m, data.as_bytes()), None, OnConflict::Rename, None).unwrap(),
        );
    }
    // Placed, not yet recorded.
    assert_eq!(state.completed_count(), 0);
    let syncs = RefCell::new(Vec::new());
    let results = commit_with(placed, &mut |_| {
        // Every name is there when the directory is synced, and none recorded.
        let names = fs::read_dir(out.path()).unwrap().filter(|e| e.as_ref().unwrap().file_type().unwrap().is_file());
        syncs.borrow_mut().push((names.count(), state.completed_count()));
        Ok(())
    });
    assert_eq!(syncs.into_inner(), [(3, 0)], "one sync, before the records");
    for (n, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), out.path().join(format!("img{n}.jpg")));
    }
    assert_eq!(state.completed_count(), 3);
    // Recorded in the log on disk, with one append: a restart answers from it.
    drop(state);
    let state = StateDir::open(out.path(), None, None).unwrap();
    assert_eq!(state.completed_count(), 3);
}

/// A directory whose fsync failed: none of its files is confirmed or recorded
/// (the log never claims a file a crash could lose), while a file in another
/// directory of the same batch is.
#[test]
fn a_failed_directory_sync_confirms_and_records_none_of_its_files() {
    let out = tempfile::tempdir().unwrap();
    let state = StateDir::open(out.path(), None, None).unwrap();
    let mut placed = Vec::new();
    for name in ["a.jpg", "b.jpg", "cam/c.jpg"] {
        let (f, paths, m) = written(out.path(), &state, name, name.as_bytes());
        placed.push(
            place_verified(&f, &paths, &complete_of(&m, name.as_bytes()), None, OnConflict::Rename, None).unwrap(),
        );
    }
    let cam = fs::metadata(out.path().join("cam")).unwrap().ino();
    let mut synced = Vec::new();
    let results = commit_with(placed, &mut |fd| {
        let ino = rustix::fs::fstat(fd).unwrap().st_ino;
        synced.push(ino == cam);
        if ino == cam {
            Ok(())
        } else {
            Err(io::Error::other("the disk went away"))
        }
    });
    // The output root once (for a.jpg and b.jpg, and for the folder cam), cam once.
    assert_eq!(synced.iter().filter(|&&c| c).count(), 1);
    assert_eq!(synced.len(), 2);
    // c.jpg's folder is in the root, whose sync failed: not durable either.
    assert!(results.iter().all(Result::is_err), "{results:?}");
    assert_eq!(state.completed_count(), 0);
}

/// A file that arrived whole, with no resume state saved, gets no state file at
/// all on its way to its name; one that checkpointed gets the complete state
/// first (the marker a crash before the record leaves), removed once recorded.
#[test]
fn only_a_transfer_that_saved_a_state_writes_a_complete_one() {
    let out = tempfile::tempdir().unwrap();
    let state = StateDir::open(out.path(), None, None).unwrap();
    let data = b"0123456789abcdefghij";
    let (f, paths, m) = written(out.path(), &state, "whole.jpg", data);
    let placed = place_verified(&f, &paths, &complete_of(&m, data), None, OnConflict::Fail, None).unwrap();
    let in_parts = || fs::read_dir(&state.parts).unwrap().count();
    assert_eq!(in_parts(), 0, "no .part, no .state, no .state.tmp");
    commit(vec![placed]).pop().unwrap().unwrap();

    let other = b"abcdefghij0123456789";
    let (f, paths, m) = written(out.path(), &state, "resumed.jpg", other);
    checkpoint(&f, &paths, &holding(&m, other, vec![(0, 2)])).unwrap();
    let placed = place_verified(&f, &paths, &complete_of(&m, other), None, OnConflict::Fail, None).unwrap();
    let marker = load_state(&paths.state).unwrap().expect("the complete state");
    assert_eq!(marker.hashed, m.chunk_count);
    commit(vec![placed]).pop().unwrap().unwrap();
    assert!(!paths.state.exists());
    assert_eq!(in_parts(), 0);
    assert!(already_complete(&paths, &m).unwrap().is_some());
}

/// A crash after the name was taken but before the batch was recorded, for a
/// file that wrote no marker: the next offer finds the file by its bytes.
#[test]
fn a_crash_before_the_record_costs_a_hash_not_the_file() {
    let out = tempfile::tempdir().unwrap();
    let data = b"0123456789abcdefghij";
    let m = manifest_of(data);
    let paths = paths_in(out.path(), &m);
    let (f, _) = open_part(&paths, &m).unwrap();
    write_at(&f, 0, data).unwrap();
    let placed = place_verified(&f, &paths, &complete_of(&m, data), None, OnConflict::Fail, None).unwrap();
    // The crash: nothing committed.
    drop((placed, paths));
    let again = paths_in(out.path(), &m);
    assert_eq!(again.store.completed_count(), 0);
    assert!(already_complete(&again, &m).unwrap().is_none());
    assert_eq!(find_identical(&again, &m).unwrap().map(|(_, sha)| Some(sha)), Some(m.sha256));
    assert_eq!(again.store.completed_count(), 1);
}
