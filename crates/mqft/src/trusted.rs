//! The receiver's side of signed transfers: which keys it trusts, and which
//! signed transfers it has already received (the replay memory).
//!
//! The checks themselves are the protocol's ([`proto::trust::check`]); this
//! module brings the clock and the disk. A signature older than the maximum age
//! is refused outright; within that window, a signature seen on a transfer that
//! completed here is refused as a replay (unless the same file is still here
//! complete, which the caller answers `Complete` as for any file offered again:
//! nothing is written). The memory is `.mqft-signed.seen` in the output
//! directory, one line per completed signed transfer (`<hex signature>
//! <created_ms>`), pruned of entries past the window when loaded. Deleting it
//! forgets the replays inside the window; the age check still holds.

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

/// The replay memory's file name, in the output directory.
pub(crate) const SEEN_FILE: &str = ".mqft-signed.seen";
/// The most bytes of replay memory read: 16 Ki transfers inside the window.
const MAX_SEEN_BYTES: u64 = 2 << 20;

/// The trusted keys, the maximum age, and the memory of completed signatures.
#[derive(Debug)]
pub(crate) struct Gate {
    keys: Vec<PublicKey>,
    max_age: Duration,
    path: PathBuf,
    /// Signature (hex) -> creation time, of signed transfers completed here.
    seen: HashMap<String, i64>,
}

impl Gate {
    /// Loads the replay memory of `dir`. Blocks (a small file).
    pub fn load(dir: &Path, keys: Vec<PublicKey>, max_age: Duration) -> Gate {
        let path = dir.join(SEEN_FILE);
        let mut gate = Gate { keys, max_age, path, seen: HashMap::new() };
        let text = match read_no_follow(&gate.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                warn!(path = %gate.path.display(), error = %e, "cannot read the replay memory; starting empty");
                String::new()
            }
        };
        let oldest = unix_ms().saturating_sub(gate.max_age_ms());
        for line in text.lines() {
            let Some((sig, at)) = line.split_once(' ') else { continue };
            if let Ok(at) = at.trim().parse::<i64>() {
                if at >= oldest {
                    gate.seen.insert(sig.to_owned(), at);
                }
            }
        }
        gate
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

    /// Records a signed transfer that completed here. Blocks (one short append).
    pub fn remember(&mut self, m: &Manifest) {
        let Some(s) = &m.signature else { return };
        let hex = sig_hex(s);
        let line = format!("{hex} {}\n", s.created_ms);
        self.seen.insert(hex, s.created_ms);
        let written = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            // Whoever can write to the output directory could plant a link here.
            .custom_flags(OFlags::NOFOLLOW.bits() as i32)
            .open(&self.path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            warn!(path = %self.path.display(), error = %e, "cannot record a completed signed transfer");
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
