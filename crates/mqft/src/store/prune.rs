//! Removing what abandoned transfers left: the `.part` and `.state` of every
//! transfer in the parts folder that is not open in this process and whose files
//! have not changed for a while.
//!
//! A transfer's files change whenever it advances: a chunk written moves the
//! `.part`'s modification time, a checkpoint replaces the `.state`. The newest
//! of the two is when it last advanced. A sender that comes back after the files
//! went starts the transfer over; nothing else depends on them.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::StateDir;
use crate::proto::TransferId;

/// A removed transfer's files, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pruned {
    /// The `.part`, or the `.state` of a transfer that had no `.part`.
    pub path: PathBuf,
    /// Bytes the removed files took on disk.
    pub bytes: u64,
    /// How long ago the transfer last advanced.
    pub idle: Duration,
}

/// Removes the files of every transfer in `state`'s parts folder that is not in
/// `active` and has not advanced for `older_than`. Only names in the form this
/// receiver writes (`<32 hex>.part`, `.state`, `.state.tmp`) are looked at; a
/// symlink there is unlinked, never followed. Returns what went.
pub(crate) fn prune(state: &StateDir, active: &HashSet<TransferId>, older_than: Duration) -> io::Result<Vec<Pruned>> {
    prune_at(state, active, older_than, SystemTime::now())
}

/// A transfer's files found in the parts folder.
#[derive(Default)]
struct Found {
    files: Vec<(PathBuf, fs::Metadata)>,
    newest: Option<SystemTime>,
}

fn prune_at(
    state: &StateDir,
    active: &HashSet<TransferId>,
    older_than: Duration,
    now: SystemTime,
) -> io::Result<Vec<Pruned>> {
    let mut by_id: BTreeMap<TransferId, Found> = BTreeMap::new();
    for entry in fs::read_dir(&state.parts)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((id, ext)) = name.split_once('.') else { continue };
        if !matches!(ext, "part" | "state" | "state.tmp") {
            continue;
        }
        let Ok(id) = id.parse::<TransferId>() else { continue };
        if active.contains(&id) {
            continue;
        }
        // Not following a symlink: its own time is what this folder saw.
        let meta = match fs::symlink_metadata(entry.path()) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let found = by_id.entry(id).or_default();
        if let Ok(t) = meta.modified() {
            found.newest = Some(found.newest.map_or(t, |n| n.max(t)));
        }
        found.files.push((entry.path(), meta));
    }
    let mut pruned = Vec::new();
    for found in by_id.into_values() {
        // A time in the future (a clock set back) is not idle.
        let idle = found.newest.and_then(|t| now.duration_since(t).ok()).unwrap_or_default();
        if idle < older_than {
            continue;
        }
        let mut bytes = 0;
        let mut shown = None;
        for (path, meta) in found.files {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            bytes += meta.blocks() * 512;
            let is_part = path.extension().is_some_and(|x| x == "part");
            if shown.is_none() || is_part {
                shown = Some(path);
            }
        }
        if let Some(path) = shown {
            pruned.push(Pruned { path, bytes, idle });
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn id(n: u8) -> TransferId {
        TransferId([n; 16])
    }

    #[test]
    fn only_idle_transfers_not_open_here_are_removed() {
        let out = tempfile::tempdir().unwrap();
        let state = StateDir::open(out.path(), None, None).unwrap();
        for n in 1..=3 {
            fs::write(state.parts.join(format!("{}.part", id(n))), vec![1; 10_000]).unwrap();
            fs::write(state.parts.join(format!("{}.state", id(n))), b"s").unwrap();
        }
        // Not ours: left alone, however old.
        fs::write(state.parts.join("notes.txt"), b"x").unwrap();
        let later = SystemTime::now() + 4 * DAY;
        // Transfer 2 is open; transfer 3 advanced a day ago (its .state is new).
        let recent = fs::File::options().write(true).open(state.parts.join(format!("{}.state", id(3)))).unwrap();
        recent.set_modified(later - DAY).unwrap();
        let active = HashSet::from([id(2)]);
        let pruned = prune_at(&state, &active, 3 * DAY, later).unwrap();
        assert_eq!(pruned.len(), 1, "{pruned:?}");
        assert_eq!(pruned[0].path, state.parts.join(format!("{}.part", id(1))));
        assert!(pruned[0].bytes >= 10_000 && pruned[0].idle >= 3 * DAY, "{pruned:?}");
        let mut left: Vec<String> =
            fs::read_dir(&state.parts).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        let mut want = vec!["notes.txt".to_owned()];
        for n in [2, 3] {
            want.extend([format!("{}.part", id(n)), format!("{}.state", id(n))]);
        }
        want.sort();
        assert_eq!(left, want);
        // Nothing is idle long enough now.
        assert!(prune_at(&state, &HashSet::new(), 3 * DAY, SystemTime::now()).unwrap().is_empty());
    }

    #[test]
    fn a_symlink_in_the_parts_folder_is_unlinked_not_followed() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let victim = elsewhere.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let state = StateDir::open(out.path(), None, None).unwrap();
        let link = state.parts.join(format!("{}.part", id(1)));
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let pruned = prune_at(&state, &HashSet::new(), DAY, SystemTime::now() + 2 * DAY).unwrap();
        assert_eq!(pruned.len(), 1);
        assert!(fs::symlink_metadata(&link).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }
}
