//! Key files for signed transfers: `mqft keygen`, `send --sign`, `receive --trust`.
//!
//! Two one-line text formats, each a tag and the key in standard base64:
//! - a secret key file holds `mqft-ed25519-secret:<base64 of the 32-byte seed>`;
//!   it is created mode 0600 and, like an ssh key, refused when its mode lets
//!   group or others read it;
//! - a public key is `mqft-ed25519:<base64 of the 32-byte key>`, optionally
//!   followed by a space and a name (the signer's name a receiver shows). The
//!   `.pub` file holds one such line; a trusted-keys file holds any number, with
//!   blank lines and `#` comments.
//!
//! A receiver shows a verified signer by the name its own trusted-keys entry
//! gives the key, never by anything the sender claims.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;

/// The tag of a public key.
pub const PUBLIC_TAG: &str = "mqft-ed25519:";
/// The tag of a secret key.
pub const SECRET_TAG: &str = "mqft-ed25519-secret:";
/// The largest key file read: a trusted-keys file of a few thousand keys.
const MAX_KEY_FILE: u64 = 1 << 20;

/// Why a key could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A secret key file that others may read.
    #[error("{path} is readable by group or others (mode {mode:03o}): run chmod 600 on it")]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The text is not a key of the expected kind.
    #[error("{0}")]
    Malformed(String),
}

/// An Ed25519 secret key, for signing.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        SecretKey(SigningKey::from_bytes(&rand::random::<[u8; 32]>()))
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        PublicKey { key: self.0.verifying_key().to_bytes(), name: None }
    }

    /// The signing key, for [`crate::proto::trust::sign`].
    pub fn signing_key(&self) -> &SigningKey {
        &self.0
    }

    /// Reads a secret key file, refusing one that group or others can read.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let io = |op, source| KeyError::Io { op, path: path.to_owned(), source };
        let file = File::open(path).map_err(|e| io("cannot open", e))?;
        let mode = file.metadata().map_err(|e| io("cannot inspect", e))?.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen { path: path.to_owned(), mode });
        }
        let text = read_bounded(file).map_err(|e| io("cannot read", e))?;
        let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or("");
        let b64 = line.strip_prefix(SECRET_TAG).ok_or_else(|| {
            KeyError::Malformed(format!("{} is not an mqft secret key (expected {SECRET_TAG}...)", path.display()))
        })?;
        let seed = decode32(b64).ok_or_else(|| KeyError::Malformed(format!("{}: bad key", path.display())))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// Writes the key to `path` (mode 0600, which must not exist) and its public
    /// half, named `name`, to `path.pub`.
    pub fn write(&self, path: &Path, name: &str) -> Result<PathBuf, KeyError> {
        let io = |op, p: &Path, source| KeyError::Io { op, path: p.to_owned(), source };
        let secret = format!("{SECRET_TAG}{}\n", STANDARD.encode(self.0.to_bytes()));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io("cannot create", path, e))?;
        // The umask cannot widen 0600, but an odd one could narrow it to nothing.
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| io("cannot chmod", path, e))?;
        f.write_all(secret.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| io("cannot write", path, e))?;
        let mut pub_path = path.as_os_str().to_owned();
        pub_path.push(".pub");
        let pub_path = PathBuf::from(pub_path);
        let public = PublicKey { name: Some(name.to_owned()), ..self.public() };
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&pub_path)
            .map_err(|e| io("cannot create", &pub_path, e))?;
        f.write_all(format!("{public}\n").as_bytes()).map_err(|e| io("cannot write", &pub_path, e))?;
        Ok(pub_path)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret: this lands in logs.
        write!(f, "SecretKey({})", self.public().fingerprint())
    }
}

/// An Ed25519 public key, with the name its owner or the trusting side gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The key.
    pub key: [u8; 32],
    /// A name to show for it, if any.
    pub name: Option<String>,
}

impl PublicKey {
    /// Parses one line: `mqft-ed25519:<base64> [name]`.
    pub fn parse(line: &str) -> Result<Self, KeyError> {
        let line = line.trim();
        let (key, name) = match line.split_once(char::is_whitespace) {
            Some((k, n)) => (k, Some(n.trim().to_owned()).filter(|n| !n.is_empty())),
            None => (line, None),
        };
        let b64 = key.strip_prefix(PUBLIC_TAG).ok_or_else(|| {
            let shown: String = key.chars().take(24).collect();
            KeyError::Malformed(format!("{shown:?} is not an mqft public key (expected {PUBLIC_TAG}...)"))
        })?;
        let key = decode32(b64).ok_or_else(|| KeyError::Malformed(format!("bad public key {key:?}")))?;
        Ok(PublicKey { key, name })
    }

    /// The keys `arg` names: a key itself (`mqft-ed25519:...`), or a file of them
    /// (a `.pub` file or a trusted-keys file).
    pub fn from_arg(arg: &str) -> Result<Vec<Self>, KeyError> {
        if arg.trim_start().starts_with(PUBLIC_TAG) {
            return Ok(vec![PublicKey::parse(arg)?]);
        }
        let path = Path::new(arg);
        let io = |op, source| KeyError::Io { op, path: path.to_owned(), source };
        let text =
            read_bounded(File::open(path).map_err(|e| io("cannot open", e))?).map_err(|e| io("cannot read", e))?;
        let keys = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| PublicKey::parse(l).map_err(|e| KeyError::Malformed(format!("{}: {e}", path.display()))))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(KeyError::Malformed(format!("{} holds no public key", path.display())));
        }
        Ok(keys)
    }

    /// A short, stable name for the key: `ed25519:` and the first 12 base64
    /// characters of its SHA-256.
    pub fn fingerprint(&self) -> String {
        let digest = crate::proto::integrity::sha256(&self.key);
        format!("ed25519:{}", &STANDARD.encode(digest)[..12])
    }

    /// How a receiver names the signer: its name, then the fingerprint.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{} ({})", n, self.fingerprint()),
            None => self.fingerprint(),
        }
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_TAG}{}", STANDARD.encode(self.key))?;
        if let Some(n) = &self.name {
            write!(f, " {n}")?;
        }
        Ok(())
    }
}

fn read_bounded(file: File) -> io::Result<String> {
    let mut text = String::new();
    file.take(MAX_KEY_FILE).read_to_string(&mut text)?;
    Ok(text)
}

fn decode32(b64: &str) -> Option<[u8; 32]> {
    STANDARD.decode(b64.trim()).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let k = SecretKey::generate();
        let pub_path = k.write(&path, "cam-01").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let back = SecretKey::read(&path).unwrap();
        assert_eq!(back.public().key, k.public().key);
        let keys = PublicKey::from_arg(pub_path.to_str().unwrap()).unwrap();
        assert_eq!(keys, vec![PublicKey { name: Some("cam-01".into()), ..k.public() }]);
        assert_eq!(PublicKey::from_arg(&k.public().to_string()).unwrap(), vec![k.public()]);
        // Never over an existing key.
        assert!(matches!(k.write(&path, "x"), Err(KeyError::Io { .. })));
    }

    #[test]
    fn an_open_secret_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        SecretKey::generate().write(&path, "x").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = SecretKey::read(&path).unwrap_err();
        assert!(matches!(err, KeyError::TooOpen { mode: 0o640, .. }), "{err}");
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in ["", "ssh-ed25519 AAAA", "mqft-ed25519:AAAA", "mqft-ed25519:!!!"] {
            assert!(PublicKey::parse(bad).is_err(), "{bad}");
        }
    }
}
