//! File names from the network: whatever a manifest says, only a plain file name
//! inside the output directory comes out.
//!
//! The rules, in order:
//! 1. Keep the last component after any `/` or `\`: a name is never a path, on any
//!    platform (`..\..\boot.ini` becomes `boot.ini`, `C:\x\y.txt` becomes `y.txt`).
//! 2. Replace control characters (C0, DEL, C1, NUL included), the characters
//!    Windows forbids in names (`<>:"|?*`, which also defuses drive letters such
//!    as `C:x`), and the Unicode bidirectional overrides that can disguise an
//!    extension (`gnp.exe` shown as `exe.png`) with `_`.
//! 3. Trim leading dots and white space (so no hidden files, no `.` or `..`, and no
//!    clash with the receiver's own `.<name>.<id>.part` files), and trailing dots
//!    and white space (Windows drops them, which would make two names one).
//! 4. Refuse what is left if it is empty or a Windows reserved device name (`CON`,
//!    `nul.txt`, `COM1`, ...), and cut it to 255 bytes at a character boundary,
//!    keeping a short extension.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// The longest name kept, in bytes: the usual file system limit.
pub const MAX_NAME_BYTES: usize = 255;

/// A file name that is safe to create in a directory: one plain component, no
/// separators, no control characters, not hidden, not a Windows device name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SafeName(String);

impl SafeName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path of this name in `dir`; by construction always a direct child of
    /// `dir`.
    pub fn in_dir(&self, dir: &Path) -> PathBuf {
        let path = dir.join(&self.0);
        debug_assert_eq!(path.parent(), Some(dir));
        path
    }
}

impl fmt::Display for SafeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SafeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<Path> for SafeName {
    fn as_ref(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl PartialEq<&str> for SafeName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<SafeName> for String {
    fn from(n: SafeName) -> String {
        n.0
    }
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Nothing usable is left once the name is cleaned.
    #[error("file name is empty once cleaned")]
    Empty,
    /// The name is a Windows reserved device name.
    #[error("file name {0:?} is reserved on windows")]
    Reserved(String),
}

/// Turns an untrusted name into a [`SafeName`], following the rules in the module
/// docs.
///
/// ```
/// use mqft::sanitize_file_name;
/// assert_eq!(sanitize_file_name("../../etc/passwd").unwrap(), "passwd");
/// assert_eq!(sanitize_file_name("C:\\Users\\me\\.profile").unwrap(), "profile");
/// assert!(sanitize_file_name("..").is_err());
/// assert!(sanitize_file_name("nul.txt").is_err());
/// ```
pub fn sanitize_file_name(name: &str) -> Result<SafeName, NameError> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let replaced: String = last.chars().map(|c| if is_forbidden(c) { '_' } else { c }).collect();
    let trimmed =
        replaced.trim_start_matches(|c: char| c == '.' || c.is_whitespace()).trim_end_matches(is_trailing_junk);
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    if is_reserved(trimmed) {
        return Err(NameError::Reserved(trimmed.to_owned()));
    }
    let safe = truncate(trimmed, MAX_NAME_BYTES);
    // The rules above leave exactly one normal component; check it all the same,
    // since a name that escapes the directory is the one bug that must not happen.
    let mut components = Path::new(&safe).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(_)), None) => Ok(SafeName(safe)),
        _ => Err(NameError::Empty),
    }
}

/// Dots and white space at the end of a name: Windows drops them.
fn is_trailing_junk(c: char) -> bool {
    c == '.' || c.is_whitespace()
}

fn is_forbidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*')
        // Bidirectional embeddings, overrides and isolates.
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// True for `CON`, `PRN`, `AUX`, `NUL`, `COM0`-`COM9`, `LPT0`-`LPT9` (with the
/// superscript digits Windows also reserves), with or without an extension.
fn is_reserved(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).trim_end().to_ascii_uppercase();
    match stem.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$" => true,
        s => {
            let base = s.strip_prefix("COM").or_else(|| s.strip_prefix("LPT"));
            base.is_some_and(|d| {
                let mut ch = d.chars();
                matches!((ch.next(), ch.next()), (Some('0'..='9' | '¹' | '²' | '³'), None))
            })
        }
    }
}

/// Cuts `name` to at most `max` bytes on a character boundary, keeping an extension
/// of up to 16 bytes.
fn truncate(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let ext = match name.rfind('.') {
        Some(i) if i > 0 && name.len() - i <= 16 => &name[i..],
        _ => "",
    };
    let mut end = max - ext.len();
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    // The cut may leave trailing dots or spaces; they would be dropped on Windows.
    let stem = name[..end].trim_end_matches(is_trailing_junk);
    format!("{stem}{ext}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths_lose_their_directories() {
        for (input, want) in [
            ("report.pdf", "report.pdf"),
            ("a/b/c.txt", "c.txt"),
            ("../../etc/passwd", "passwd"),
            ("/etc/shadow", "shadow"),
            ("..\\..\\boot.ini", "boot.ini"),
            ("C:\\Windows\\win.ini", "win.ini"),
            ("C:evil.txt", "C_evil.txt"),
            ("\\\\server\\share\\x", "x"),
            (".bashrc", "bashrc"),
            ("...dots", "dots"),
            ("  spaced name.txt  ", "spaced name.txt"),
            ("trailing. . .", "trailing"),
            ("tab\there", "tab_here"),
            ("nul\0byte", "nul_byte"),
            ("bell\u{7}\u{9b}", "bell__"),
            ("photo\u{202E}gnp.exe", "photo_gnp.exe"),
            ("what?.txt", "what_.txt"),
            ("ünïcødé ✓.txt", "ünïcødé ✓.txt"),
            ("console.txt", "console.txt"),
            ("COM10", "COM10"),
        ] {
            assert_eq!(sanitize_file_name(input).unwrap(), want, "{input:?}");
        }
    }

    #[test]
    fn unusable_names_are_refused() {
        for input in ["", ".", "..", "...", "/", "a/..", "dir/", "\\", "  ", ". .", "\u{0}"] {
            if let Ok(n) = sanitize_file_name(input) {
                // "\0" becomes "_", which is fine; everything else here must fail.
                assert_eq!(input, "\u{0}", "{input:?} gave {n:?}");
            }
        }
        for input in ["CON", "con", "nul.txt", "Aux.tar.gz", "COM1", "lpt9.log", "COM¹", "PRN "] {
            assert!(matches!(sanitize_file_name(input), Err(NameError::Reserved(_))), "{input:?}");
        }
    }

    #[test]
    fn long_names_are_cut_keeping_the_extension() {
        let n = sanitize_file_name(&format!("{}.jpeg", "x".repeat(400))).unwrap();
        assert_eq!(n.as_str().len(), MAX_NAME_BYTES);
        assert!(n.as_str().ends_with("x.jpeg"));
        let n = sanitize_file_name(&"é".repeat(200)).unwrap();
        assert!(n.as_str().len() <= MAX_NAME_BYTES);
        assert_eq!(n.as_str().len() % 2, 0);
    }

    proptest! {
        #[test]
        fn any_accepted_name_stays_in_the_directory(input in "\\PC{0,300}|[./\\\\a-z\\x00-\\x1f ]{0,20}") {
            if let Ok(name) = sanitize_file_name(&input) {
                let s = name.as_str();
                prop_assert!(!s.is_empty() && s.len() <= MAX_NAME_BYTES);
                prop_assert!(!s.contains(['/', '\\']) && !s.chars().any(is_forbidden));
                prop_assert!(!s.starts_with(|c: char| c == '.' || c.is_whitespace()));
                prop_assert!(!s.ends_with(is_trailing_junk));
                prop_assert!(!is_reserved(s));
                let dir = Path::new("/srv/in");
                let path = name.in_dir(dir);
                prop_assert_eq!(path.parent(), Some(dir));
                prop_assert_eq!(path.file_name().and_then(|f| f.to_str()), Some(s));
                // Cleaning is idempotent.
                prop_assert_eq!(sanitize_file_name(s).unwrap(), name);
            }
        }
    }
}
