//! The receiver's side of signed transfers: which keys it trusts, and which
//! signed transfers it has already received (the replay memory).
//!
//! The checks themselves are the protocol's ([`proto::trust::check`]); this
//! module brings the clock and the disk. A signature older than the maximum age
//! is refused outright; within that window, a signature seen on a transfer that
//! completed here is refused as a replay (unless the same file is still here
//! complete, which the caller answers `Complete` as for any file offered again:
//! nothing is written). The memory is `signed.seen` in the receiver's state
//! folder (`.mqft/` or `--state-dir`), one line per completed signed transfer
//! (`<hex signature> <created_ms>`). Entries past the window are dropped when it
//! is loaded (the file is rewritten without them) and from memory as it runs, so
//! a receiver that runs for a year holds one window's worth. Deleting it forgets
//! the replays inside the window; the age check still holds.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::OFlags;
use tracing::warn;

use crate::keys::PublicKey;
use crate::proto::{trust, Manifest};

/// The replay memory's file name, in the state folder.
pub(crate) const SEEN_FILE: &str = "signed.seen";
/// The most bytes of replay memory read: about 230 Ki signed transfers inside
/// the window (twenty cameras at one image a minute make 29 Ki a day).
const MAX_SEEN_BYTES: u64 = 32 << 20;
/// How many remembered signatures make a receiver forget those past the window
/// (at least; twice what was left after the last time).
const COMPACT_AT: usize = 4096;

/// The trusted keys, the maximum age, and the memory of completed signatures.
#[derive(Debug)]
pub(crate) struct Gate {
    keys: Vec<PublicKey>,
    max_age: Duration,
    path: PathBuf,
    /// Signature (hex) -> creation time, of signed transfers completed here.
    seen: HashMap<String, i64>,
    /// Drop what is past the window when `seen` reaches this many.
    compact_at: usize,
}

impl Gate {
    /// Loads the replay memory in the state folder `dir`, rewriting it without
    /// the entries past the window. Blocks (a small file).
    pub fn load(dir: &Path, keys: Vec<PublicKey>, max_age: Duration) -> Gate {
        let path = dir.join(SEEN_FILE);
        let mut gate = Gate { keys, max_age, path, seen: HashMap::new(), compact_at: COMPACT_AT };
        let text = match read_no_follow(&gate.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                warn!(path = %gate.path.display(), error = %e, "cannot read the replay memory; starting empty");
                String::new()
            }
        };
        let oldest = unix_ms().saturating_sub(gate.max_age_ms());
        let mut dropped = 0;
        for line in text.lines() {
            let Some((sig, at)) = line.split_once(' ') else {
                dropped += 1;
                continue;
            };
            match at.trim().parse::<i64>() {
                Ok(at) if at >= oldest => {
                    gate.seen.insert(sig.to_owned(), at);
                }
                _ => dropped += 1,
            }
        }
        // A file cut at the cap ends in a torn line: rewriting it would lose the
        // rest, so it is left as it is (and the cap is said).
        let whole = (text.len() as u64) < MAX_SEEN_BYTES;
        if !whole {
            warn!(path = %gate.path.display(), "the replay memory is larger than {MAX_SEEN_BYTES} bytes; reading its start");
        }
        if dropped > 0 && whole {
            gate.rewrite();
        }
        gate
    }

    /// Replaces the file with what is in memory (write a temporary, rename).
    fn rewrite(&self) {
        self.rewrite_later().write();
    }

    /// What [`Gate::rewrite`] writes, to be written later.
    fn rewrite_later(&self) -> Persist {
        let text: String = self.seen.iter().map(|(sig, at)| format!("{sig} {at}\n")).collect();
        Persist { path: self.path.clone(), what: Write::Rewrite(text) }
    }

    fn max_age_ms(&self) -> i64 {
        i64::try_from(self.max_age.as_millis()).unwrap_or(i64::MAX)
    }

    /// Checks `m`'s signature against the trusted keys and the clock. On success,
    /// the signer as the trusted-keys entry names it, and whether this signature
    /// completed here before (a replay, or the same sender asking again after a
    /// lost `Complete`: the caller tells them apart by the file on disk).
    pub fn admit(&self, m: &Manifest) -> Result<(String, bool), String> {
        let trusted: Vec<[u8; 32]> = self.keys.iter().map(|k| k.key).collect();
        let key = trust::check(m, &trusted, unix_ms(), self.max_age_ms()).map_err(|e| e.to_string())?;
        let signer = self.keys.iter().find(|k| k.key == key).map(PublicKey::label).unwrap_or_default();
        let seen = m.signature.as_ref().is_some_and(|s| self.seen.contains_key(&sig_hex(s)));
        Ok((signer, seen))
    }

    /// Records a signed transfer that completed here, in memory at once; what it
    /// takes on disk (one short append, or now and then the file rewritten) is
    /// returned, for the caller to run off its async task ([`Persist::write`]
    /// blocks), one after the other in the order they were returned.
    #[must_use = "the record is in memory only until the Persist is written"]
    pub fn remember(&mut self, m: &Manifest) -> Option<Persist> {
        let Some(s) = &m.signature else { return None };
        let hex = sig_hex(s);
        let line = format!("{hex} {}\n", s.created_ms);
        self.seen.insert(hex, s.created_ms);
        if self.seen.len() >= self.compact_at {
            // What is past the window can never be replayed (the age check
            // refuses it): forget it, here and on disk.
            let oldest = unix_ms().saturating_sub(self.max_age_ms());
            self.seen.retain(|_, at| *at >= oldest);
            self.compact_at = (self.seen.len() * 2).max(COMPACT_AT);
            return Some(self.rewrite_later());
        }
        Some(Persist { path: self.path.clone(), what: Write::Append(line) })
    }
}

/// A change of the replay memory's file, made by [`Persist::write`].
#[derive(Debug)]
pub(crate) struct Persist {
    path: PathBuf,
    what: Write,
}

#[derive(Debug)]
enum Write {
    /// One line added.
    Append(String),
    /// The whole file replaced by this text.
    Rewrite(String),
}

impl Persist {
    /// Makes the change. Blocks; failures are logged (the memory in the process
    /// stands, and a restart forgets at most what failed here).
    pub fn write(self) {
        let Persist { path, what } = self;
        match what {
            Write::Append(line) => {
                let written = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    // Whoever can write to the output directory could plant a link here.
                    .custom_flags(OFlags::NOFOLLOW.bits() as i32)
                    .open(&path)
                    .and_then(|mut f| f.write_all(line.as_bytes()));
                if let Err(e) = written {
                    warn!(path = %path.display(), error = %e, "cannot record a completed signed transfer");
                }
            }
            Write::Rewrite(text) => {
                let tmp = path.with_extension("seen.tmp");
                let _ = std::fs::remove_file(&tmp);
                let written = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
                    .and_then(|()| std::fs::rename(&tmp, &path));
                if let Err(e) = written {
                    warn!(path = %path.display(), error = %e, "cannot compact the replay memory");
                }
            }
        }
    }
}

fn sig_hex(s: &crate::proto::Signature) -> String {
    s.sig.iter().flatten().map(|b| format!("{b:02x}")).collect()
}

fn read_no_follow(path: &Path) -> io::Result<String> {
    let f: File =
        OpenOptions::new().read(true).custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32).open(path)?;
    let mut text = String::new();
    f.take(MAX_SEEN_BYTES).read_to_string(&mut text)?;
    Ok(text)
}

/// Milliseconds since the Unix epoch, for signatures.
pub(crate) fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_memory_forgets_what_is_past_the_window_on_disk_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SEEN_FILE);
        let now = unix_ms();
        let old = now - 2 * 24 * 3600 * 1000;
        let text = format!("{} {old}\n{} {now}\ntorn", "aa".repeat(64), "bb".repeat(64));
        std::fs::write(&path, text).unwrap();
        let gate = Gate::load(dir.path(), Vec::new(), Duration::from_secs(24 * 3600));
        assert_eq!(gate.seen.len(), 1);
        assert!(gate.seen.contains_key(&"bb".repeat(64)));
        // Rewritten without the old entry and the torn line.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{} {now}\n", "bb".repeat(64)));
    }

    #[test]
    fn a_long_run_keeps_one_window_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut gate = Gate::load(dir.path(), Vec::new(), Duration::from_secs(60));
        let stale = unix_ms() - 3_600_000;
        for i in 0..COMPACT_AT - 1 {
            gate.seen.insert(format!("{i:0128x}"), stale);
        }
        let key = trust::SigningKey::from_bytes(&[1; 32]);
        let mut m = Manifest::new("a".into(), 1, 1, Some([0; 32]), Default::default(), 1).unwrap();
        trust::sign(&mut m, &key, unix_ms());
        gate.remember(&m).expect("a signed manifest is recorded").write();
        assert_eq!(gate.seen.len(), 1, "only the fresh signature is left");
        assert_eq!(std::fs::read_to_string(dir.path().join(SEEN_FILE)).unwrap().lines().count(), 1);
    }
}
