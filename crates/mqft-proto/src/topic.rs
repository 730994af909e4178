//! Topic names: the prefix, transfer ids, receiver ids, and the topic tree.
//!
//! Every topic level the protocol builds uses only `[0-9a-z_-]`. Brokers differ in
//! what they accept (NATS's MQTT rejects spaces and maps `.` to its own separators,
//! RabbitMQ's rewrites `.` into `/`), and this alphabet survives all of them. File names never appear in a topic.

use std::fmt;
use std::str::FromStr;

use crate::TopicError;

/// The longest prefix accepted, in bytes.
pub const MAX_PREFIX_LEN: usize = 128;
/// The longest receiver id accepted, in bytes.
pub const MAX_RECEIVER_ID_LEN: usize = 64;

/// The default topic prefix.
pub const DEFAULT_PREFIX: &str = "files";

/// True for a non-empty topic level made of `[0-9a-z_-]`.
fn is_level(level: &str) -> bool {
    !level.is_empty() && level.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'_' || b == b'-')
}

/// A validated topic prefix: one or more `/`-separated levels of `[0-9a-z_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Prefix(String);

impl Prefix {
    /// Checks and wraps a prefix such as `files` or `site-1/cams`.
    pub fn new(prefix: &str) -> Result<Self, TopicError> {
        if prefix.len() > MAX_PREFIX_LEN || !prefix.split('/').all(is_level) {
            return Err(TopicError::BadPrefix);
        }
        Ok(Prefix(prefix.to_owned()))
    }

    /// The prefix as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<prefix>/<id>/manifest`
    pub fn manifest(&self, id: &TransferId) -> String {
        format!("{}/{id}/manifest", self.0)
    }

    /// `<prefix>/<id>/chunk/<index>`
    pub fn chunk(&self, id: &TransferId, index: u32) -> String {
        format!("{}/{id}/chunk/{index}", self.0)
    }

    /// `<prefix>/<id>/ack/<receiver>`
    pub fn ack(&self, id: &TransferId, receiver: &ReceiverId) -> String {
        format!("{}/{id}/ack/{receiver}", self.0)
    }

    /// `<prefix>/<id>/ctl`
    pub fn ctl(&self, id: &TransferId) -> String {
        format!("{}/{id}/ctl", self.0)
    }

    /// The filter a receiver subscribes to for new transfers: `<prefix>/+/manifest`.
    pub fn manifest_filter(&self) -> String {
        format!("{}/+/manifest", self.0)
    }

    /// The filter a receiver subscribes to for one transfer: `<prefix>/<id>/chunk/+`.
    pub fn chunk_filter(&self, id: &TransferId) -> String {
        format!("{}/{id}/chunk/+", self.0)
    }

    /// The filter a sender subscribes to for one transfer: `<prefix>/<id>/ack/+`.
    pub fn ack_filter(&self, id: &TransferId) -> String {
        format!("{}/{id}/ack/+", self.0)
    }

    /// The filter a receiver subscribes to for the sender's control messages of all
    /// transfers: `<prefix>/+/ctl`.
    pub fn ctl_filter(&self) -> String {
        format!("{}/+/ctl", self.0)
    }

    /// Classifies a topic under this prefix; `None` for anything that is not one of
    /// the protocol's topics (other prefixes, malformed ids or indexes).
    pub fn parse(&self, topic: &str) -> Option<Topic> {
        let rest = topic.strip_prefix(self.0.as_str())?.strip_prefix('/')?;
        let mut levels = rest.split('/');
        let id: TransferId = levels.next()?.parse().ok()?;
        let parsed = match (levels.next()?, levels.next(), levels.next()) {
            ("manifest", None, None) => Topic::Manifest(id),
            ("ctl", None, None) => Topic::Ctl(id),
            ("chunk", Some(n), None) => Topic::Chunk(id, parse_index(n)?),
            ("ack", Some(r), None) => Topic::Ack(id, ReceiverId::new(r).ok()?),
            _ => return None,
        };
        Some(parsed)
    }
}

impl Default for Prefix {
    fn default() -> Self {
        Prefix(DEFAULT_PREFIX.to_owned())
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Prefix {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Prefix::new(s)
    }
}

/// What a receiver listens under: a prefix whose levels may be `+`, each standing
/// for any one level (`site/+/cams`). `#` is refused: the protocol's own levels
/// follow the prefix, and a multi-level wildcard would swallow them.
///
/// A message matches when its first levels fit the pattern; those levels are then
/// the concrete [`Prefix`] the transfer lives under, and every answer goes there,
/// never under the pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrefixPattern(String);

impl PrefixPattern {
    /// Checks and wraps a pattern such as `files`, `site-1/cams` or `site/+/cams`.
    pub fn new(pattern: &str) -> Result<Self, TopicError> {
        if pattern.len() > MAX_PREFIX_LEN || !pattern.split('/').all(|l| l == "+" || is_level(l)) {
            return Err(TopicError::BadPrefix);
        }
        Ok(PrefixPattern(pattern.to_owned()))
    }

    /// The pattern as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix itself when the pattern has no wildcard.
    pub fn concrete(&self) -> Option<Prefix> {
        Prefix::new(&self.0).ok()
    }

    /// `<pattern>/+/manifest`
    pub fn manifest_filter(&self) -> String {
        format!("{}/+/manifest", self.0)
    }

    /// `<pattern>/+/ctl`
    pub fn ctl_filter(&self) -> String {
        format!("{}/+/ctl", self.0)
    }

    /// `<pattern>/+/chunk/+`: the chunks of every transfer, for a receiver that takes
    /// them before it answers a manifest (PROTOCOL.md 3.6).
    pub fn chunks_filter(&self) -> String {
        format!("{}/+/chunk/+", self.0)
    }

    /// True when `self` matches every topic `other` matches: the same number of
    /// levels, each `+` or equal in `self`. A receiver subscribes only to patterns no other one covers, so that a broker
    /// does not deliver one message twice.
    pub fn covers(&self, other: &PrefixPattern) -> bool {
        let (mut a, mut b) = (self.0.split('/'), other.0.split('/'));
        loop {
            match (a.next(), b.next()) {
                (None, None) => return true,
                (Some(x), Some(y)) if x == "+" || x == y => {}
                _ => return false,
            }
        }
    }

    /// Classifies a topic under this pattern: the concrete prefix it came under,
    /// and what it is; `None` for anything else.
    pub fn parse(&self, topic: &str) -> Option<(Prefix, Topic)> {
        let levels = self.0.split('/').count();
        // The byte where the prefix's levels end.
        let end = topic.match_indices('/').nth(levels - 1)?.0;
        let (head, _) = topic.split_at(end);
        let fits = self.0.split('/').zip(head.split('/')).all(|(p, t)| p == "+" || p == t);
        if !fits {
            return None;
        }
        let prefix = Prefix::new(head).ok()?;
        let parsed = prefix.parse(topic)?;
        Some((prefix, parsed))
    }
}

impl fmt::Display for PrefixPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for PrefixPattern {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PrefixPattern::new(s)
    }
}

impl From<Prefix> for PrefixPattern {
    fn from(p: Prefix) -> Self {
        PrefixPattern(p.0)
    }
}

/// A chunk index as written in a topic: decimal, no sign, no leading zeros.
fn parse_index(s: &str) -> Option<u32> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// One of the protocol's topics, as classified by [`Prefix::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// `<prefix>/<id>/manifest`: the sender's description of the file.
    Manifest(TransferId),
    /// `<prefix>/<id>/chunk/<n>`: chunk `n` of the file.
    Chunk(TransferId, u32),
    /// `<prefix>/<id>/ack/<receiver>`: a receiver's report to the sender.
    Ack(TransferId, ReceiverId),
    /// `<prefix>/<id>/ctl`: the sender's control messages.
    Ctl(TransferId),
}

impl Topic {
    /// The transfer the topic belongs to.
    pub fn transfer_id(&self) -> &TransferId {
        match self {
            Topic::Manifest(id) | Topic::Chunk(id, _) | Topic::Ack(id, _) | Topic::Ctl(id) => id,
        }
    }
}

/// A transfer id: 16 bytes derived from the file's content, name and chunk size
/// (see [`crate::transfer_id`]), written in topics as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(pub [u8; 16]);

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransferId({self})")
    }
}

impl FromStr for TransferId {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 32 {
            return Err(TopicError::BadTransferId);
        }
        let mut id = [0u8; 16];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_digit(pair[0]).ok_or(TopicError::BadTransferId)?;
            let lo = hex_digit(pair[1]).ok_or(TopicError::BadTransferId)?;
            id[i] = hi << 4 | lo;
        }
        Ok(TransferId(id))
    }
}

/// A lowercase hex digit's value; uppercase is refused so that one id has one spelling.
fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// A receiver's name in ack topics: 1 to 64 characters of `[0-9a-z_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReceiverId(String);

impl ReceiverId {
    /// Checks and wraps a receiver id.
    pub fn new(id: &str) -> Result<Self, TopicError> {
        if id.len() > MAX_RECEIVER_ID_LEN || !is_level(id) {
            return Err(TopicError::BadReceiverId);
        }
        Ok(ReceiverId(id.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReceiverId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ReceiverId {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReceiverId::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> TransferId {
        TransferId([0xab; 16])
    }

    #[test]
    fn topics_round_trip_through_parse() {
        let p = Prefix::new("site-1/cams").unwrap();
        let r = ReceiverId::new("gw_7").unwrap();
        assert_eq!(p.parse(&p.manifest(&id())), Some(Topic::Manifest(id())));
        assert_eq!(p.parse(&p.chunk(&id(), 0)), Some(Topic::Chunk(id(), 0)));
        assert_eq!(p.parse(&p.chunk(&id(), u32::MAX)), Some(Topic::Chunk(id(), u32::MAX)));
        assert_eq!(p.parse(&p.ack(&id(), &r)), Some(Topic::Ack(id(), r)));
        assert_eq!(p.parse(&p.ctl(&id())), Some(Topic::Ctl(id())));
        assert_eq!(p.chunk(&id(), 7), format!("site-1/cams/{}/chunk/7", "ab".repeat(16)));
    }

    #[test]
    fn malformed_topics_are_not_ours() {
        let p = Prefix::default();
        let hex = "ab".repeat(16);
        for t in [
            format!("files/{hex}/chunk/01"),
            format!("files/{hex}/chunk/-1"),
            format!("files/{hex}/chunk/4294967296"),
            format!("files/{hex}/chunk/"),
            format!("files/{hex}/chunk/1/2"),
            format!("files/{hex}/ack/UPPER"),
            format!("files/{hex}/manifest/x"),
            format!("files/{}/manifest", "AB".repeat(16)),
            format!("files/{}/manifest", "ab".repeat(15)),
            format!("filesx/{hex}/manifest"),
            format!("other/{hex}/manifest"),
            "files".to_owned(),
            String::new(),
        ] {
            assert_eq!(p.parse(&t), None, "{t}");
        }
    }

    #[test]
    fn patterns_match_whole_levels_and_name_the_concrete_prefix() {
        let pat = PrefixPattern::new("site/+/cams").unwrap();
        let a = Prefix::new("site/a/cams").unwrap();
        assert_eq!(pat.parse(&a.manifest(&id())), Some((a.clone(), Topic::Manifest(id()))));
        assert_eq!(pat.parse(&a.chunk(&id(), 3)), Some((a.clone(), Topic::Chunk(id(), 3))));
        for t in [
            Prefix::new("site/a/b/cams").unwrap().manifest(&id()),
            Prefix::new("site/cams").unwrap().manifest(&id()),
            Prefix::new("other/a/cams").unwrap().manifest(&id()),
            format!("site/A/cams/{id}/manifest", id = id()),
            "site/a".to_owned(),
            String::new(),
        ] {
            assert_eq!(pat.parse(&t), None, "{t}");
        }
        assert_eq!(pat.manifest_filter(), "site/+/cams/+/manifest");
        // A plain pattern is its prefix.
        let plain = PrefixPattern::new("files").unwrap();
        assert_eq!(plain.concrete(), Some(Prefix::default()));
        assert_eq!(plain.parse(&Prefix::default().ctl(&id())), Some((Prefix::default(), Topic::Ctl(id()))));
        assert_eq!(pat.concrete(), None);
        for bad in ["#", "a/#", "a/+b", "+a", "", "a//b", "A/+"] {
            assert!(PrefixPattern::new(bad).is_err(), "{bad:?}");
        }
        assert!(pat.covers(&PrefixPattern::new("site/b/cams").unwrap()));
        assert!(pat.covers(&pat));
        assert!(!PrefixPattern::new("site/b/cams").unwrap().covers(&pat));
        assert!(!pat.covers(&PrefixPattern::new("site/b").unwrap()));
    }

    #[test]
    fn names_outside_the_alphabet_are_refused() {
        for bad in ["", "a/", "/a", "a//b", "a.b", "a b", "A", "a+", "a#", "é"] {
            assert!(Prefix::new(bad).is_err(), "{bad:?}");
        }
        assert!(Prefix::new(&"a".repeat(MAX_PREFIX_LEN + 1)).is_err());
        for bad in ["", "a/b", "a.b", "Gw", "+"] {
            assert!(ReceiverId::new(bad).is_err(), "{bad:?}");
        }
        assert!(ReceiverId::new(&"a".repeat(MAX_RECEIVER_ID_LEN)).is_ok());
        assert!(ReceiverId::new(&"a".repeat(MAX_RECEIVER_ID_LEN + 1)).is_err());
    }
}
