//! File names from the network: whatever a manifest says, only a plain file name
//! inside the output directory comes out.
//!
//! The rules, in order:
//! 1. Keep the last component after any `/` or `\`: a name is never a path, on any
//!    platform (`..\..\boot.ini` becomes `boot.ini`, `C:\x\y.txt` becomes `y.txt`).
//! 2. Replace with `_`:
//!    - control characters (C0, DEL, C1, NUL included), so a name cannot drive a
//!      terminal (`ESC [ 2 J`) or break a log line;
//!    - the characters Windows forbids in names (`<>:"|?*`, which also defuses drive
//!      letters such as `C:x` and NTFS streams such as `x:$DATA`);
//!    - the Unicode bidirectional controls, which can disguise an extension
//!      (`gnp.exe` shown as `exe.png`);
//!    - invisible characters (zero-width spaces and joiners, the byte order mark,
//!      variation selectors, tags, line and paragraph separators: Unicode's
//!      default-ignorable code points), which make two different names look the
//!      same;
//!    - look-alikes of `/` and `\` (`∕` DIVISION SLASH, `⁄` FRACTION SLASH, `／`
//!      FULLWIDTH SOLIDUS, `⧸` BIG SOLIDUS, `∖` SET MINUS, `＼` ...), which would
//!      make a plain name read like a path wherever it is shown (`..∕..∕etc∕passwd`),
//!      and some of which NFKC normalization folds into real separators.
//!
//!    Other Unicode is kept as it came: names are stored byte for byte, not
//!    normalized, so an NFC and an NFD spelling of `é` are two names (as the Linux
//!    file systems see them); neither can leave the directory. Look-alike dots and
//!    colons are kept too: no file system folds them, and without a separator a
//!    name of dots is just a name.
//! 3. Trim leading dots and white space (so no hidden files, no `.` or `..`, and no
//!    clash with the receiver's own `.<name>.<id>.part` files), and trailing dots
//!    and white space (Windows drops them, which would make two names one).
//! 4. Cut the name to 255 bytes at a character boundary, keeping a short
//!    extension; refuse what is left if it is empty or, on Windows only, a
//!    reserved device name (`CON`, `nul.txt`, `COM1`, ...), which would open the
//!    device instead of a file there. Elsewhere `con.jpg` is a plain name and is
//!    kept. The check comes after the cut, since a cut can make one (`nul` + 250
//!    spaces + `x.txt` is cut to `nul.txt`).
//!
//! [`changes`] says, for people, what these rules changed in a name: the
//! receiver tells the sender, so that nobody looks for `.hidden.jpg` in vain.
//!
//! [`escape`] is the other half: it makes any name, sanitized or not, safe to print
//! on a terminal or in a log, by escaping the same characters as `\u{..}`.

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
    /// A path with an empty, `.` or `..` component.
    #[error("path has an empty, '.' or '..' component")]
    BadComponent,
    /// A path with more components than a receiver creates.
    #[error("path is too deep")]
    TooDeep,
}

/// Turns an untrusted name into a [`SafeName`], following the rules in the module
/// docs.
///
/// ```
/// use mqft::sanitize_file_name;
/// assert_eq!(sanitize_file_name("../../etc/passwd").unwrap(), "passwd");
/// assert_eq!(sanitize_file_name("C:\\Users\\me\\.profile").unwrap(), "profile");
/// assert!(sanitize_file_name("..").is_err());
/// // A Windows device name is refused on Windows only.
/// assert_eq!(sanitize_file_name("nul.txt").is_err(), cfg!(windows));
/// ```
pub fn sanitize_file_name(name: &str) -> Result<SafeName, NameError> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let replaced: String = last.chars().map(|c| if is_forbidden(c) { '_' } else { c }).collect();
    let trimmed =
        replaced.trim_start_matches(|c: char| c == '.' || c.is_whitespace()).trim_end_matches(is_trailing_junk);
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    let safe = truncate(trimmed, MAX_NAME_BYTES);
    if cfg!(windows) && is_reserved(&safe) {
        return Err(NameError::Reserved(safe));
    }
    // The rules above leave exactly one normal component; check it all the same,
    // since a name that escapes the directory is the one bug that must not happen.
    let mut components = Path::new(&safe).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(_)), None) => Ok(SafeName(safe)),
        _ => Err(NameError::Empty),
    }
}

/// A relative path that is safe to create under a directory: 1 to
/// [`crate::proto::wire::MAX_NAME_DEPTH`] components joined by `/`, each a [`SafeName`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SafePath(String);

impl SafePath {
    /// The path, `/`-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its components, each a plain, sanitized name; the last is the file's.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last component: the file's own name.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The path under `dir`; by construction always inside `dir`. Nothing here
    /// says its directories are not symlinks: `store` walks them without following
    /// any.
    pub fn in_dir(&self, dir: &Path) -> PathBuf {
        let path = self.components().fold(dir.to_owned(), |p, c| p.join(c));
        debug_assert!(path.starts_with(dir));
        path
    }
}

impl fmt::Display for SafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<&str> for SafePath {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<SafePath> for String {
    fn from(p: SafePath) -> String {
        p.0
    }
}

impl From<SafeName> for SafePath {
    fn from(n: SafeName) -> SafePath {
        SafePath(n.0)
    }
}

/// Turns an untrusted name that may be a relative path (`photos/2026/a.jpg`, as
/// `send DIR` sends them) into a [`SafePath`]. A name without `/` is exactly
/// [`sanitize_file_name`]'s. A name with `/` keeps its directories, each
/// component cleaned by [`sanitize_file_name`]'s rules, but is refused whole when
/// a component is empty (`/etc/x`, `a//b`, `dir/`), `.` or `..`
/// ([`NameError::BadComponent`]): a path that tries to climb or to be absolute is
/// not repaired into another one. More than [`crate::proto::wire::MAX_NAME_DEPTH`]
/// components are refused too ([`NameError::TooDeep`]).
///
/// ```
/// use mqft::name::sanitize_path;
/// assert_eq!(sanitize_path("photos/2026/a.jpg").unwrap(), "photos/2026/a.jpg");
/// assert_eq!(sanitize_path(".git/\u{1b}x").unwrap(), "git/_x");
/// assert!(sanitize_path("../../etc/passwd").is_err());
/// assert!(sanitize_path("/etc/passwd").is_err());
/// ```
pub fn sanitize_path(name: &str) -> Result<SafePath, NameError> {
    if !name.contains('/') {
        return sanitize_file_name(name).map(SafePath::from);
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > crate::proto::wire::MAX_NAME_DEPTH {
        return Err(NameError::TooDeep);
    }
    let mut clean = Vec::with_capacity(parts.len());
    for part in parts {
        if part.is_empty() || part == "." || part == ".." {
            return Err(NameError::BadComponent);
        }
        clean.push(String::from(sanitize_file_name(part)?));
    }
    Ok(SafePath(clean.join("/")))
}

/// The `n`th variant of `name` for keeping two files of one name: `img (1).jpg`
/// for `img.jpg`, `README (2)` for `README`. The number goes before a short
/// extension (as the cut of rule 4 does), and the stem is cut so that the result stays
/// within [`MAX_NAME_BYTES`]; it is as safe as `name`.
pub fn numbered(name: &SafeName, n: u32) -> SafeName {
    let s = name.as_str();
    let (stem, ext) = match s.rfind('.') {
        Some(i) if i > 0 && s.len() - i <= 16 => s.split_at(i),
        _ => (s, ""),
    };
    let suffix = format!(" ({n}){ext}");
    let mut end = stem.len().min(MAX_NAME_BYTES - suffix.len());
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    // The stem is non-empty (a leading dot is never kept) and the suffix adds only
    // a space, digits and parentheses: no rule of `sanitize_file_name` applies.
    SafeName(format!("{}{suffix}", &stem[..end]))
}

/// [`numbered`] for the last component of a path: `photos/img (1).jpg` for
/// `photos/img.jpg`.
pub fn numbered_path(path: &SafePath, n: u32) -> SafePath {
    let leaf = SafeName(path.file_name().to_owned());
    let numbered = numbered(&leaf, n).0;
    match path.0.rsplit_once('/') {
        Some((dirs, _)) => SafePath(format!("{dirs}/{numbered}")),
        None => SafePath(numbered),
    }
}

/// What [`sanitize_file_name`] changed to turn `original` into `safe`, for people:
/// the rules that applied, in their order, such as "directories dropped, leading
/// dots removed"; empty when the name is unchanged.
pub fn changes(original: &str, safe: &str) -> String {
    if original == safe {
        return String::new();
    }
    let last = original.rsplit(['/', '\\']).next().unwrap_or(original);
    let mut what = Vec::new();
    // A path keeps its directories (`sanitize_path`); a name with a backslash
    // loses them.
    if last.len() != original.len() && !safe.contains('/') {
        what.push("directories dropped");
    }
    if last.chars().any(is_forbidden) {
        what.push("unsafe characters replaced");
    }
    if last.starts_with(|c: char| c == '.' || c.is_whitespace()) {
        what.push("leading dots or spaces removed");
    }
    if last.ends_with(is_trailing_junk) {
        what.push("trailing dots or spaces removed");
    }
    if last.trim_matches(|c: char| c == '.' || c.is_whitespace()).len() > MAX_NAME_BYTES {
        what.push("cut to 255 bytes");
    }
    if what.is_empty() {
        what.push("cleaned");
    }
    what.join(", ")
}

/// Escapes what a terminal or a log must not see raw in an untrusted name: control
/// characters (`\n`, `\u{1b}`), bidirectional controls, invisible characters and
/// look-alikes of `/` and `\` (as `\u{202e}`, ...), and `\` itself (as `\\`), so
/// that an escape in the output always comes from this function. Everything else,
/// letters of any script included, is kept.
///
/// ```
/// assert_eq!(mqft::name::escape("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\n");
/// assert_eq!(mqft::name::escape("photo\u{202e}gnp.exe"), "photo\\u{202e}gnp.exe");
/// assert_eq!(mqft::name::escape("ünïcødé ✓.txt"), "ünïcødé ✓.txt");
/// ```
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c == '\\' || c.is_control() {
            out.extend(c.escape_default());
        } else if is_deceptive(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Dots and white space at the end of a name: Windows drops them.
fn is_trailing_junk(c: char) -> bool {
    c == '.' || c.is_whitespace()
}

/// The characters rule 2 replaces.
fn is_forbidden(c: char) -> bool {
    c.is_control() || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') || is_deceptive(c)
}

/// Printable in principle, but misleading in a name: bidirectional controls,
/// invisible characters and separator look-alikes.
fn is_deceptive(c: char) -> bool {
    is_bidi_control(c) || is_invisible(c) || is_separator_lookalike(c)
}

/// Bidirectional marks, embeddings, overrides and isolates.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Unicode's default-ignorable code points (DerivedCoreProperties.txt: zero-width
/// spaces and joiners, soft hyphen, word joiner, fillers, variation selectors,
/// the byte order mark, tags), plus the line and paragraph separators and the
/// interlinear annotation controls: characters that show as nothing, or as a line
/// break.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{2029}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Characters that look like `/` or `\`, or that NFKC normalization folds into
/// text with one (`／` FULLWIDTH SOLIDUS becomes `/`, `℅` CARE OF becomes `c/o`).
fn is_separator_lookalike(c: char) -> bool {
    matches!(
        c,
        // Slashes: FRACTION SLASH, DIVISION SLASH, BOX DRAWINGS LIGHT DIAGONAL UPPER
        // RIGHT TO LOWER LEFT, MATHEMATICAL RISING DIAGONAL, BIG SOLIDUS, DOUBLE
        // SOLIDUS OPERATOR, FULLWIDTH SOLIDUS, VERY HEAVY SOLIDUS.
        '\u{2044}' | '\u{2215}' | '\u{2571}' | '\u{27CB}' | '\u{29F8}' | '\u{2AFD}' | '\u{FF0F}' | '\u{1F67C}'
        // Backslashes: SET MINUS, BOX DRAWINGS ... UPPER LEFT TO LOWER RIGHT,
        // MATHEMATICAL FALLING DIAGONAL, REVERSE SOLIDUS OPERATOR, BIG REVERSE
        // SOLIDUS, SMALL REVERSE SOLIDUS, FULLWIDTH REVERSE SOLIDUS, VERY HEAVY
        // REVERSE SOLIDUS.
        | '\u{2216}' | '\u{2572}' | '\u{27CD}' | '\u{29F5}' | '\u{29F9}' | '\u{FE68}' | '\u{FF3C}' | '\u{1F67D}'
        // ACCOUNT OF, ADDRESSED TO THE SUBJECT, CARE OF, CADA UNA (NFKC: a/c, a/s,
        // c/o, c/u).
        | '\u{2100}' | '\u{2101}' | '\u{2105}' | '\u{2106}'
    )
}

/// True for `CON`, `PRN`, `AUX`, `NUL`, `COM0`-`COM9`, `LPT0`-`LPT9` (with the
/// superscript digits Windows also reserves), with or without an extension.
/// Refused only on Windows (see rule 4).
pub fn is_reserved(name: &str) -> bool {
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
            ("..\u{2215}..\u{2215}etc\u{2215}passwd", "_.._etc_passwd"),
            ("a\u{FF0F}b\u{FF3C}c\u{2044}d\u{29F8}e", "a_b_c_d_e"),
            ("zero\u{200B}width\u{FEFF}.txt", "zero_width_.txt"),
            ("\u{200D}\u{200C}x", "__x"),
            ("line\u{2028}sep", "line_sep"),
            ("caf\u{e9}.txt", "caf\u{e9}.txt"),
            ("cafe\u{301}.txt", "cafe\u{301}.txt"),
            ("\u{2025}", "\u{2025}"),
            ("stream.txt:$DATA", "stream.txt_$DATA"),
        ] {
            assert_eq!(sanitize_file_name(input).unwrap(), want, "{input:?}");
        }
    }

    #[test]
    fn paths_keep_their_directories_or_are_refused() {
        for (input, want) in [
            ("a/b/c.jpg", "a/b/c.jpg"),
            ("photos/.hidden/x", "photos/hidden/x"),
            ("a\\..\\b/c", "b/c"),
            ("we\u{202E}ird/nul\u{7}.txt", "we_ird/nul_.txt"),
            ("plain.txt", "plain.txt"),
            ("..\\..\\boot.ini", "boot.ini"),
        ] {
            assert_eq!(sanitize_path(input).unwrap(), want, "{input:?}");
        }
        for input in ["../a", "a/../b", "/etc/x", "a//b", "a/./b", "dir/", "a/..", "a/ . /b"] {
            assert!(sanitize_path(input).is_err(), "{input:?}");
        }
        // A reserved device name is refused where it is one.
        assert_eq!(sanitize_path("a/nul/b").is_err(), cfg!(windows));
        let deep = vec!["d"; crate::proto::wire::MAX_NAME_DEPTH].join("/");
        assert!(sanitize_path(&deep).is_ok());
        assert_eq!(sanitize_path(&format!("{deep}/x")), Err(NameError::TooDeep));
        let p = sanitize_path("a/b/c.jpg").unwrap();
        assert_eq!(p.in_dir(Path::new("/srv/in")), Path::new("/srv/in/a/b/c.jpg"));
        assert_eq!(p.file_name(), "c.jpg");
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
            assert!(is_reserved(input.trim_end()), "{input:?}");
            if cfg!(windows) {
                assert!(matches!(sanitize_file_name(input), Err(NameError::Reserved(_))), "{input:?}");
            } else {
                assert_eq!(sanitize_file_name(input).unwrap(), input.trim_end(), "{input:?}");
            }
        }
    }

    #[test]
    fn numbered_names_keep_the_extension_and_the_limit() {
        let n = |s: &str, i| numbered(&sanitize_file_name(s).unwrap(), i).as_str().to_owned();
        assert_eq!(n("img_0001.jpg", 1), "img_0001 (1).jpg");
        assert_eq!(n("README", 12), "README (12)");
        assert_eq!(n("a.tar.gz", 2), "a.tar (2).gz");
        let long = n(&format!("{}.jpeg", "é".repeat(200)), 999);
        assert!(long.len() <= MAX_NAME_BYTES && long.ends_with(" (999).jpeg"), "{long}");
        assert_eq!(sanitize_file_name(&long).unwrap(), long.as_str());
    }

    #[test]
    fn changes_name_the_rules_that_applied() {
        for (input, want) in [
            ("img.jpg", ""),
            (".hidden.jpg", "leading dots or spaces removed"),
            ("../../x.jpg", "directories dropped"),
            ("a/.b.jpg", "directories dropped, leading dots or spaces removed"),
            ("what?.txt", "unsafe characters replaced"),
            ("x.txt. ", "trailing dots or spaces removed"),
        ] {
            let safe = sanitize_file_name(input).unwrap();
            assert_eq!(changes(input, safe.as_str()), want, "{input:?}");
        }
        let long = format!("{}.jpeg", "x".repeat(400));
        assert_eq!(changes(&long, sanitize_file_name(&long).unwrap().as_str()), "cut to 255 bytes");
    }

    #[test]
    fn long_names_are_cut_keeping_the_extension() {
        let n = sanitize_file_name(&format!("{}.jpeg", "x".repeat(400))).unwrap();
        assert_eq!(n.as_str().len(), MAX_NAME_BYTES);
        assert!(n.as_str().ends_with("x.jpeg"));
        let n = sanitize_file_name(&"é".repeat(200)).unwrap();
        assert!(n.as_str().len() <= MAX_NAME_BYTES);
        assert_eq!(n.as_str().len() % 2, 0);
        // A 4-byte character straddling the cut is dropped whole.
        let n = sanitize_file_name(&format!("{}{}", "x".repeat(253), "\u{1F600}".repeat(3))).unwrap();
        assert_eq!(n.as_str(), "x".repeat(253));
    }

    #[test]
    fn a_cut_that_leaves_a_reserved_name_is_refused_on_windows() {
        // The cut keeps `nul`, drops the spaces, and puts the extension back.
        let input = format!("nul{}x.txt", " ".repeat(250));
        let cut = sanitize_file_name(&input);
        if cfg!(windows) {
            assert!(matches!(cut, Err(NameError::Reserved(n)) if n == "nul.txt"), "{input:?}");
        } else {
            assert_eq!(cut.unwrap(), "nul.txt");
        }
    }

    #[test]
    fn escape_shows_what_would_mislead() {
        for (input, want) in [
            ("plain name.jpg", "plain name.jpg"),
            ("\u{1b}[2J\u{1b}]0;owned\u{7}", "\\u{1b}[2J\\u{1b}]0;owned\\u{7}"),
            ("a\nb\tc\r", "a\\nb\\tc\\r"),
            ("\u{9b}31m", "\\u{9b}31m"),
            ("back\\slash", "back\\\\slash"),
            ("photo\u{202E}gnp.exe", "photo\\u{202e}gnp.exe"),
            ("..\u{2215}etc", "..\\u{2215}etc"),
            ("a\u{200B}b", "a\\u{200b}b"),
            ("ünïcødé ✓ 写真.txt", "ünïcødé ✓ 写真.txt"),
        ] {
            assert_eq!(escape(input), want, "{input:?}");
        }
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
                prop_assert!(!cfg!(windows) || !is_reserved(s));
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
