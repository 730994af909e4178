//! The memory of completed transfers: one append-only log in the state folder,
//! `completed.log`, loaded into a map at start.
//!
//! # Format
//! [`LOG_MAGIC`], then records, each `len: u32 LE | crc32(body): u32 LE | body`,
//! where the body is an [`Entry`] in postcard. A record (or the records of
//! files finalized together) is appended with a single write to the file
//! opened `O_APPEND` for it (and closed again, so an
//! idle receiver holds nothing open for writing, and an append after another
//! process's rewrite goes to the new file), and never fsynced on its own (see
//! `store::commit` for why losing the last records costs no correctness).
//!
//! # What a crash or a scribble does
//! A crash can leave the last record cut short; a disk or a user can damage any.
//! The load stops at the first record that is short, longer than [`MAX_RECORD`],
//! fails its CRC or does not decode, and keeps what came before: a torn tail
//! costs the transfers it recorded (their files are then refused as existing,
//! never confirmed unchecked). A file with another magic is an older or foreign
//! format and is started afresh.
//!
//! # Bounds
//! Every start rewrites the log from the live entries (temporary file, fsync,
//! rename, directory fsync), dropping those older than `forget_after`; a
//! running receiver drops them on its periodic tick ([`Completed::forget_expired`])
//! and rewrites the log whenever the dead records (superseded or forgotten)
//! outnumber the live ones. So the log holds at most about twice the entries of
//! `forget_after`'s worth of transfers, about 80 bytes each on disk (plus the
//! path), and the map about 300 bytes plus twice the path per entry in memory
//! (the key and the entry each hold it).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::OFlags;
use serde::{Deserialize, Serialize};

use super::{create_exclusive, flags, is_own_file, is_symlink_error, Fingerprint};
use crate::proto::{integrity, TransferId};

/// The first bytes of a completed log of this format.
const LOG_MAGIC: [u8; 8] = *b"mqftcl\x00\x01";

/// The largest record body read: an entry is about 150 bytes plus its path
/// (at most 4 KiB on Linux). A length past this is damage, not a record.
const MAX_RECORD: usize = 64 << 10;

/// Dead records tolerated before a rewrite even when there are fewer live ones,
/// so that a small log is not rewritten at every refresh.
const MIN_DEAD_FOR_COMPACTION: usize = 256;

/// The key of an entry: the transfer, and where its file went (relative to the
/// output root), so that the same transfer received into two places (two
/// senders' folders) is remembered for each.
pub(crate) type Key = (TransferId, Vec<u8>);

/// A completed transfer, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub id: TransferId,
    /// The final path relative to the output root, as bytes.
    pub path: Vec<u8>,
    pub size: u64,
    pub sha256: [u8; 32],
    /// The file as it was when its bytes were last verified against `sha256`.
    pub verified: Option<Fingerprint>,
    /// When it completed or was last verified by a hash, in Unix seconds.
    pub at: u64,
}

impl Entry {
    pub fn key(&self) -> Key {
        (self.id, self.path.clone())
    }
}

/// What a load found, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loaded {
    pub live: usize,
    pub forgotten: usize,
    /// Bytes after the last good record, cut off.
    pub torn_bytes: u64,
}

/// The store: the map, and the log it is kept in.
pub(crate) struct Completed {
    path: PathBuf,
    tmp: PathBuf,
    dir: PathBuf,
    entries: HashMap<Key, Entry>,
    /// Records in the file, live or not.
    records: usize,
    forget_after: Option<Duration>,
    /// The latest time (Unix seconds) this store was told of: what a record that
    /// another receiver appended is judged expired against when merged.
    clock: u64,
}

impl Completed {
    /// Loads `dir/completed.log` (none is an empty store), forgets what is older
    /// than `forget_after` at `now` (Unix seconds), and rewrites it.
    ///
    /// The rewrite's temporary file is this process's own, so that two receivers
    /// sharing the folder (`shared`) never remove each other's; a receiver alone
    /// removes those that crashed receivers left.
    pub fn open(dir: &Path, forget_after: Option<Duration>, now: u64, shared: bool) -> io::Result<(Completed, Loaded)> {
        let path = dir.join("completed.log");
        let tmp = dir.join(format!("completed.log.{}.tmp", std::process::id()));
        if !shared {
            remove_stale_temporaries(dir);
        }
        let (entries, mut loaded) = load(&path)?;
        let mut store = Completed { path, tmp, dir: dir.to_owned(), entries, records: 0, forget_after, clock: now };
        loaded.forgotten = store.drop_expired(now);
        loaded.live = store.entries.len();
        // Just loaded: nothing to merge.
        store.rewrite(false)?;
        Ok((store, loaded))
    }

    pub fn get(&self, key: &Key) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Records `entry`, replacing any of its key. The map is updated even if the
    /// append fails (this run still knows; the error says the next may not).
    pub fn put(&mut self, entry: Entry) -> io::Result<()> {
        self.put_all(vec![entry])
    }

    /// Records `entries` with one append (a batch of files finalized together),
    /// each replacing any of its key, as [`Completed::put`] does.
    pub fn put_all(&mut self, entries: Vec<Entry>) -> io::Result<()> {
        let mut records = Vec::new();
        let count = entries.len();
        for entry in entries {
            records.extend_from_slice(&encode(&entry)?);
            self.clock = self.clock.max(entry.at);
            self.entries.insert(entry.key(), entry);
        }
        // O_NOFOLLOW: a symlink swapped in at the log's name is not written
        // through; it fails the append, and the next rewrite replaces it.
        let opened = OpenOptions::new().append(true).custom_flags(flags(OFlags::NOFOLLOW)).open(&self.path);
        let mut f = match opened {
            // Deleted behind our back: written anew, with every live entry.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return self.compact(),
            r => r?,
        };
        if !is_own_file(&f.metadata()?) {
            return Err(io::Error::other(format!("{} is not a file of ours", self.path.display())));
        }
        // One write: a crash tears at most the batch's last records, which the
        // load cuts off.
        f.write_all(&records)?;
        self.records += count;
        self.maybe_compact()
    }

    /// Drops the entries older than `forget_after` at `now`, rewriting the log
    /// if the dead records now outnumber the live. Returns how many went.
    pub fn forget_expired(&mut self, now: u64) -> io::Result<usize> {
        let gone = self.drop_expired(now);
        self.maybe_compact()?;
        Ok(gone)
    }

    fn drop_expired(&mut self, now: u64) -> usize {
        self.clock = self.clock.max(now);
        let Some(age) = self.forget_after else { return 0 };
        let before = self.entries.len();
        let oldest = now.saturating_sub(age.as_secs());
        self.entries.retain(|_, e| e.at >= oldest);
        before - self.entries.len()
    }

    fn maybe_compact(&mut self) -> io::Result<()> {
        let dead = self.records.saturating_sub(self.entries.len());
        if dead > self.entries.len().max(MIN_DEAD_FOR_COMPACTION) {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the log with the live entries, after merging those that other
    /// receivers sharing the folder appended (pool members do on purpose).
    fn compact(&mut self) -> io::Result<()> {
        self.rewrite(true)
    }

    /// Rewrites the log with the live entries only: a new temporary file
    /// (created exclusively), fsync, rename over the log, directory fsync. A
    /// crash at any point leaves the old log or the new one, whole.
    ///
    /// With `merge`, the log is read first and the records this store does not
    /// know (or knows older) are kept, unless expired: another receiver sharing
    /// the folder appended them since this one loaded it. Only a record appended
    /// between this read and the rename (the rewrite's own few milliseconds) can
    /// still be lost, and then costs a refusal as existing, never a wrong answer.
    fn rewrite(&mut self, merge: bool) -> io::Result<()> {
        if merge {
            self.merge_from_disk();
        }
        let f = create_exclusive(&self.tmp)?;
        let mut w = BufWriter::new(f);
        w.write_all(&LOG_MAGIC)?;
        for e in self.entries.values() {
            w.write_all(&encode(e)?)?;
        }
        let f = w.into_inner().map_err(io::IntoInnerError::into_error)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&self.tmp, &self.path)?;
        File::open(&self.dir)?.sync_all()?;
        self.records = self.entries.len();
        Ok(())
    }
}

impl Completed {
    /// Takes into the map the log's records that are newer than what the map
    /// holds for their key and not expired. A log that cannot be read adds
    /// nothing: the rewrite goes on with what this store knows, as before.
    fn merge_from_disk(&mut self) {
        let Ok((disk, _)) = load(&self.path) else { return };
        let oldest = self.forget_after.map(|age| self.clock.saturating_sub(age.as_secs()));
        for (key, e) in disk {
            if oldest.is_some_and(|oldest| e.at < oldest) {
                continue;
            }
            match self.entries.get(&key) {
                Some(ours) if ours.at >= e.at => {}
                _ => {
                    self.entries.insert(key, e);
                }
            }
        }
    }
}

/// Removes `completed.log.*.tmp` files in `dir`: rewrites that a crash cut short.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("completed.log.") && name.ends_with(".tmp") {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// One record's bytes.
fn encode(e: &Entry) -> io::Result<Vec<u8>> {
    let body = postcard::to_allocvec(e).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&integrity::crc32(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads the log at `path`: the entries of its good records, the last of a key
/// winning. Not a regular file of ours (a symlink, a FIFO, one with other links)
/// counts as none, as does another format.
fn load(path: &Path) -> io::Result<(HashMap<Key, Entry>, Loaded)> {
    let mut loaded = Loaded::default();
    let opened = OpenOptions::new().read(true).custom_flags(flags(OFlags::NOFOLLOW | OFlags::NONBLOCK)).open(path);
    let f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound || is_symlink_error(&e) => {
            return Ok((HashMap::new(), loaded));
        }
        Err(e) => return Err(e),
    };
    if !is_own_file(&f.metadata()?) {
        return Ok((HashMap::new(), loaded));
    }
    let mut bytes = Vec::new();
    io::BufReader::new(f).read_to_end(&mut bytes)?;
    let (entries, good) = parse(&bytes);
    loaded.torn_bytes = (bytes.len() - good) as u64;
    Ok((entries, loaded))
}

/// The entries of the good records in `bytes`, and how many bytes they span
/// (with the magic). Stops at the first bad record.
fn parse(bytes: &[u8]) -> (HashMap<Key, Entry>, usize) {
    let mut entries = HashMap::new();
    let Some(mut rest) = bytes.strip_prefix(&LOG_MAGIC) else { return (entries, 0) };
    let mut good = LOG_MAGIC.len();
    while let Some((entry, used)) = next_record(rest) {
        entries.insert(entry.key(), entry);
        rest = &rest[used..];
        good += used;
    }
    (entries, good)
}

/// The first record of `rest` and its length in bytes, if it is whole and sound.
fn next_record(rest: &[u8]) -> Option<(Entry, usize)> {
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let (crc, rest) = rest.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > MAX_RECORD || rest.len() < len {
        return None;
    }
    let body = &rest[..len];
    if integrity::crc32(body) != u32::from_le_bytes(*crc) {
        return None;
    }
    match postcard::take_from_bytes::<Entry>(body) {
        Ok((entry, [])) => Some((entry, 8 + len)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, at: u64) -> Entry {
        Entry {
            id: TransferId([n; 16]),
            path: format!("dir/file-{n}.jpg").into_bytes(),
            size: u64::from(n) * 1000,
            sha256: [n; 32],
            verified: None,
            at,
        }
    }

    fn log_len(dir: &Path) -> u64 {
        fs::metadata(dir.join("completed.log")).unwrap().len()
    }

    #[test]
    fn entries_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, loaded) = Completed::open(dir.path(), None, 100, false).unwrap();
        assert_eq!(loaded, Loaded::default());
        for n in 0..10 {
            s.put(entry(n, 100)).unwrap();
        }
        drop(s);
        let (s, loaded) = Completed::open(dir.path(), None, 100, false).unwrap();
        assert_eq!((loaded.live, loaded.torn_bytes), (10, 0));
        assert_eq!(s.get(&entry(3, 100).key()), Some(&entry(3, 100)));
        // Keyed by where the file went too.
        let mut elsewhere = entry(3, 100);
        elsewhere.path = b"other/file-3.jpg".to_vec();
        assert_eq!(s.get(&elsewhere.key()), None);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Completed::open(dir.path(), None, 100, false).unwrap();
        for n in 0..5 {
            s.put(entry(n, 100)).unwrap();
        }
        drop(s);
        let full = log_len(dir.path());
        // Cut inside the last record, as a crash during its append would.
        let f = OpenOptions::new().write(true).open(dir.path().join("completed.log")).unwrap();
        f.set_len(full - 7).unwrap();
        drop(f);
        let (mut s, loaded) = Completed::open(dir.path(), None, 100, false).unwrap();
        assert_eq!(loaded.live, 4);
        assert!(loaded.torn_bytes > 0);
        assert!(s.get(&entry(4, 100).key()).is_none());
        // Appends after the cut are read back: the rewrite dropped the torn bytes.
        s.put(entry(9, 100)).unwrap();
        drop(s);
        let (s, loaded) = Completed::open(dir.path(), None, 100, false).unwrap();
        assert_eq!((loaded.live, loaded.torn_bytes), (5, 0));
        assert!(s.get(&entry(9, 100).key()).is_some());
    }

    #[test]
    fn damaged_or_foreign_logs_keep_only_the_good_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Completed::open(dir.path(), None, 100, false).unwrap();
        for n in 0..3 {
            s.put(entry(n, 100)).unwrap();
        }
        drop(s);
        let path = dir.path().join("completed.log");
        let good = fs::read(&path).unwrap();
        let one = encode(&entry(0, 100)).unwrap().len();
        // A flipped byte in the second record: the first is kept.
        let mut flipped = good.clone();
        flipped[LOG_MAGIC.len() + one + 9] ^= 1;
        // A huge length: not read as a record.
        let mut huge = good[..LOG_MAGIC.len() + one].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 8]);
        for (bytes, live) in [(flipped, 1), (huge, 1), (b"garbage".to_vec(), 0), (Vec::new(), 0)] {
            fs::write(&path, &bytes).unwrap();
            let (_, loaded) = Completed::open(dir.path(), None, 100, false).unwrap();
            assert_eq!(loaded.live, live, "{bytes:?}");
        }
    }

    #[test]
    fn old_entries_are_forgotten_and_dead_records_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(86_400);
        let (mut s, _) = Completed::open(dir.path(), Some(day), 1_000_000, false).unwrap();
        s.put(entry(1, 1_000_000 - 2 * 86_400)).unwrap();
        s.put(entry(2, 1_000_000)).unwrap();
        drop(s);
        let (mut s, loaded) = Completed::open(dir.path(), Some(day), 1_000_000, false).unwrap();
        assert_eq!((loaded.live, loaded.forgotten), (1, 1));
        // While running: forgotten on the tick.
        assert_eq!(s.forget_expired(1_000_000 + 2 * 86_400).unwrap(), 1);
        assert_eq!(s.len(), 0);

        // The same entry refreshed over and over: the log stays small.
        for i in 0..5000 {
            s.put(entry(7, 2_000_000 + i)).unwrap();
        }
        assert!(log_len(dir.path()) < 100 * 1024, "{}", log_len(dir.path()));
        drop(s);
        let (s, _) = Completed::open(dir.path(), Some(day), 2_005_000, false).unwrap();
        assert_eq!(s.get(&entry(7, 0).key()).map(|e| e.at), Some(2_004_999));
    }

    #[test]
    fn a_symlink_at_the_log_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let victim = elsewhere.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("completed.log")).unwrap();
        let tmp = format!("completed.log.{}.tmp", std::process::id());
        std::os::unix::fs::symlink(&victim, dir.path().join(tmp)).unwrap();
        let (mut s, _) = Completed::open(dir.path(), None, 1, false).unwrap();
        s.put(entry(1, 1)).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!fs::symlink_metadata(dir.path().join("completed.log")).unwrap().is_symlink());
    }

    /// Two receivers on one folder (pool members): each one's rewrite keeps the
    /// records the other appended since it loaded the log, and what one forgot
    /// as expired is not brought back from the disk.
    #[test]
    fn a_rewrite_keeps_what_another_receiver_appended() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(86_400);
        let (mut a, _) = Completed::open(dir.path(), Some(day), 1_000_000, true).unwrap();
        let (mut b, _) = Completed::open(dir.path(), Some(day), 1_000_000, true).unwrap();
        a.put(entry(1, 1_000_000)).unwrap();
        b.put(entry(2, 1_000_010)).unwrap();
        // `a` compacts (as after many dead records) knowing only its own entry.
        a.compact().unwrap();
        assert!(a.get(&entry(2, 0).key()).is_some(), "b's record merged in");
        drop((a, b));
        let (s, loaded) = Completed::open(dir.path(), Some(day), 1_000_020, false).unwrap();
        assert_eq!(loaded.live, 2);
        assert!(s.get(&entry(1, 0).key()).is_some() && s.get(&entry(2, 0).key()).is_some());
        // Forgotten as expired: not merged back from the log it is still in.
        let (mut s, _) = Completed::open(dir.path(), Some(day), 1_000_020, false).unwrap();
        assert_eq!(s.forget_expired(1_000_000 + 2 * 86_400).unwrap(), 2);
        s.compact().unwrap();
        assert_eq!(s.len(), 0);
    }
}
