//! `send DIR`: the files of a directory tree, each named by its relative path.
//!
//! A directory given to send stands for every regular file under it, named by its
//! path from the directory's parent with `/` between components (`send photos/`
//! sends `photos/2026/a.jpg`), in sorted order so that two runs send the same list
//! in the same order. Symbolic links are skipped (with a note) unless asked for:
//! a link in a tree may point anywhere, and sending `/etc/shadow` because a tree
//! held a link to it is a surprise nobody wants. With `follow`, a directory met
//! twice (a link loop) is walked once.
//!
//! A bad entry (a directory that cannot be listed, a name that is not UTF-8, a
//! tree deeper than a receiver takes) is reported on its own and the walk goes
//! on: one unreadable corner does not stop the rest of the batch. A file that
//! cannot be read is listed anyway; reading it fails later, alone, as for any file.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::proto::wire::MAX_NAME_DEPTH;
use crate::SendFile;

/// What a walk found: the files to send, and the entries it had to leave out.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Tree {
    /// The files, each with its relative name, in order.
    pub files: Vec<SendFile>,
    /// Entries left out, each with why: not sent, and a failure of the batch.
    pub errors: Vec<(PathBuf, String)>,
    /// Symbolic links skipped (not an error: asked for by leaving out `follow`).
    pub skipped_links: Vec<PathBuf>,
}

/// Expands each directory in `paths` into its files; a path that is not a
/// directory is kept as it is (under its own name).
pub fn expand(paths: &[PathBuf], follow: bool) -> Tree {
    let mut tree = Tree::default();
    for path in paths {
        match fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                let base = match root_name(path) {
                    Some(b) => b,
                    None => {
                        tree.errors.push((path.clone(), "the directory's name must be valid utf-8".into()));
                        continue;
                    }
                };
                let mut seen = HashSet::new();
                walk(path, &base, 1, follow, &mut seen, &mut tree);
            }
            _ => tree.files.push(SendFile::new(path)),
        }
    }
    tree
}

/// The name the tree's files start with: the directory's own name (of its
/// canonical path, so that `.` and `photos/` have one).
fn root_name(dir: &Path) -> Option<String> {
    let canon = fs::canonicalize(dir).ok()?;
    canon.file_name()?.to_str().map(str::to_owned)
}

fn walk(dir: &Path, name: &str, depth: usize, follow: bool, seen: &mut HashSet<(u64, u64)>, tree: &mut Tree) {
    if let Ok(m) = fs::metadata(dir) {
        if !seen.insert((m.dev(), m.ino())) {
            // A link loop, or one directory reached twice: walked once.
            return;
        }
    }
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd.collect::<io::Result<Vec<_>>>(),
        Err(e) => Err(e),
    };
    let mut entries = match entries {
        Ok(e) => e,
        Err(e) => {
            tree.errors.push((dir.to_owned(), format!("cannot list the directory: {e}")));
            return;
        }
    };
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let Some(leaf) = entry.file_name().to_str().map(str::to_owned) else {
            tree.errors.push((path, "the name must be valid utf-8".into()));
            continue;
        };
        let rel = format!("{name}/{leaf}");
        let link_meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                tree.errors.push((path, e.to_string()));
                continue;
            }
        };
        let meta = if link_meta.file_type().is_symlink() {
            if !follow {
                tree.skipped_links.push(path);
                continue;
            }
            match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    tree.errors.push((path, format!("a link to nothing usable: {e}")));
                    continue;
                }
            }
        } else {
            link_meta
        };
        if depth + 1 > MAX_NAME_DEPTH {
            tree.errors.push((path, format!("deeper than the {MAX_NAME_DEPTH} levels a receiver takes")));
        } else if meta.is_dir() {
            walk(&path, &rel, depth + 1, follow, seen, tree);
        } else if meta.is_file() {
            tree.files.push(SendFile::named(path, rel));
        } else {
            tree.errors.push((path, "not a regular file".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_is_named_from_its_parent_sorted_without_links() {
        let root = tempfile::tempdir().unwrap();
        let top = root.path().join("photos");
        fs::create_dir_all(top.join("2026/b")).unwrap();
        fs::write(top.join("z.jpg"), b"z").unwrap();
        fs::write(top.join("2026/a.jpg"), b"a").unwrap();
        fs::write(top.join("2026/b/c.jpg"), b"c").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", top.join("link")).unwrap();
        std::os::unix::fs::symlink(&top, top.join("2026/loop")).unwrap();
        let tree = expand(std::slice::from_ref(&top), false);
        let names: Vec<_> = tree.files.iter().map(|f| f.name.clone().unwrap()).collect();
        assert_eq!(names, ["photos/2026/a.jpg", "photos/2026/b/c.jpg", "photos/z.jpg"]);
        assert_eq!(tree.skipped_links.len(), 2);
        assert!(tree.errors.is_empty());
        // Followed: the file link is sent, the loop walked once.
        let tree = expand(std::slice::from_ref(&top), true);
        let names: Vec<_> = tree.files.iter().map(|f| f.name.clone().unwrap()).collect();
        assert_eq!(names, ["photos/2026/a.jpg", "photos/2026/b/c.jpg", "photos/link", "photos/z.jpg"]);
    }
}
