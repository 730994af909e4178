//! The codes on the wire: why a receiver refused, why a sender stopped, and how a
//! stored name differs from the offered one.

use super::*;

/// Why a receiver refused or gave up on a transfer; a `u16` code on the wire, so that
/// a peer can add codes without breaking older ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The file is larger than the receiver accepts (code 1).
    TooLarge,
    /// The file name is unusable (code 2).
    BadName,
    /// Not enough disk space (code 3).
    DiskFull,
    /// The receiver has too many transfers open (code 4).
    Busy,
    /// Every chunk arrived but the SHA-256 of the file does not match (code 5).
    HashMismatch,
    /// The manifest is not acceptable: unknown version or malformed (code 6).
    BadManifest,
    /// A local I/O error (code 7).
    Io,
    /// A file of that name exists and may not be replaced (code 8).
    Exists,
    /// The receiver was told to stop (code 9).
    Cancelled,
    /// The receiver has too many transfers open and its queue of waiting offers
    /// is full too (code 10): try again later.
    QueueFull,
    /// A different file of that name exists and the receiver's conflict policy
    /// is to keep it and skip the new one (code 11).
    Skipped,
    /// The receiver trusts only signed transfers and this one's signature is
    /// missing, from a key it does not trust, invalid, too old or a replay
    /// (code 12); the detail says which.
    Untrusted,
    /// The transfer is encrypted and this receiver cannot open it: it has no
    /// identity key, or is not among the recipients (code 13).
    Encrypted,
    /// A code this version does not know.
    Other(u16),
}

impl RejectReason {
    /// The wire code.
    pub fn code(self) -> u16 {
        match self {
            RejectReason::TooLarge => 1,
            RejectReason::BadName => 2,
            RejectReason::DiskFull => 3,
            RejectReason::Busy => 4,
            RejectReason::HashMismatch => 5,
            RejectReason::BadManifest => 6,
            RejectReason::Io => 7,
            RejectReason::Exists => 8,
            RejectReason::Cancelled => 9,
            RejectReason::QueueFull => 10,
            RejectReason::Skipped => 11,
            RejectReason::Untrusted => 12,
            RejectReason::Encrypted => 13,
            RejectReason::Other(c) => c,
        }
    }

    /// The reason for a wire code.
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => RejectReason::TooLarge,
            2 => RejectReason::BadName,
            3 => RejectReason::DiskFull,
            4 => RejectReason::Busy,
            5 => RejectReason::HashMismatch,
            6 => RejectReason::BadManifest,
            7 => RejectReason::Io,
            8 => RejectReason::Exists,
            9 => RejectReason::Cancelled,
            10 => RejectReason::QueueFull,
            11 => RejectReason::Skipped,
            12 => RejectReason::Untrusted,
            13 => RejectReason::Encrypted,
            c => RejectReason::Other(c),
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::TooLarge => f.write_str("file too large"),
            RejectReason::BadName => f.write_str("bad file name"),
            RejectReason::DiskFull => f.write_str("disk full"),
            RejectReason::Busy => f.write_str("receiver busy"),
            RejectReason::HashMismatch => f.write_str("sha-256 mismatch"),
            RejectReason::BadManifest => f.write_str("bad manifest"),
            RejectReason::Io => f.write_str("i/o error"),
            RejectReason::Exists => f.write_str("file exists"),
            RejectReason::Cancelled => f.write_str("cancelled"),
            RejectReason::QueueFull => f.write_str("receiver queue full"),
            RejectReason::Skipped => f.write_str("file exists, skipped"),
            RejectReason::Untrusted => f.write_str("not signed by a trusted key"),
            RejectReason::Encrypted => f.write_str("encrypted for another recipient"),
            RejectReason::Other(c) => write!(f, "reason code {c}"),
        }
    }
}

impl Serialize for RejectReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.code().serialize(s)
    }
}

impl<'de> Deserialize<'de> for RejectReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(RejectReason::from_code)
    }
}

/// Why a sender stopped serving a transfer; a `u16` code on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AbortReason {
    /// The sender's user cancelled (code 1).
    Cancelled,
    /// The sender gave up: retries exhausted or no receiver (code 2).
    Failed,
    /// The receivers the sender waited for are done; others must resume with a new
    /// send (code 3).
    Finished,
    /// The sender started the same file again as a new transfer, with smaller chunks
    /// (those of this one did not get through the broker); a receiver drops this
    /// one and takes its successor (code 4).
    Superseded,
    /// The sender's file changed while it was being sent (version 4: its hash
    /// comes from reading it as it goes, so a change mid-way would otherwise
    /// deliver a mix of old and new bytes); what a receiver holds of it is stale
    /// and is dropped (code 5).
    Changed,
    /// A code this version does not know.
    Other(u16),
}

impl AbortReason {
    /// The wire code.
    pub fn code(self) -> u16 {
        match self {
            AbortReason::Cancelled => 1,
            AbortReason::Failed => 2,
            AbortReason::Finished => 3,
            AbortReason::Superseded => 4,
            AbortReason::Changed => 5,
            AbortReason::Other(c) => c,
        }
    }

    /// The reason for a wire code.
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => AbortReason::Cancelled,
            2 => AbortReason::Failed,
            3 => AbortReason::Finished,
            4 => AbortReason::Superseded,
            5 => AbortReason::Changed,
            c => AbortReason::Other(c),
        }
    }
}

impl std::fmt::Display for AbortReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AbortReason::Cancelled => f.write_str("cancelled"),
            AbortReason::Failed => f.write_str("gave up"),
            AbortReason::Finished => f.write_str("finished with the receivers it waited for"),
            AbortReason::Superseded => f.write_str("started again with smaller chunks"),
            AbortReason::Changed => f.write_str("the file changed while it was being sent"),
            AbortReason::Other(c) => write!(f, "reason code {c}"),
        }
    }
}

impl Serialize for AbortReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.code().serialize(s)
    }
}

impl<'de> Deserialize<'de> for AbortReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(AbortReason::from_code)
    }
}

/// Why a receiver stored a file under another name than the manifest's; a `u16`
/// code on the wire, like [`RejectReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NameChange {
    /// The name was not safe to use as it came (a directory part, a leading dot,
    /// a character that is not allowed in a file name...): it was cleaned (code 1).
    Sanitized,
    /// A different file of that name was already there, and the receiver keeps
    /// both: the new one got a free name such as `img (1).jpg` (code 2).
    Renamed,
    /// A code this version does not know.
    Other(u16),
}

impl NameChange {
    /// The wire code.
    pub fn code(self) -> u16 {
        match self {
            NameChange::Sanitized => 1,
            NameChange::Renamed => 2,
            NameChange::Other(c) => c,
        }
    }

    /// The reason for a wire code.
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => NameChange::Sanitized,
            2 => NameChange::Renamed,
            c => NameChange::Other(c),
        }
    }
}

impl std::fmt::Display for NameChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameChange::Sanitized => f.write_str("the name was not safe as it came"),
            NameChange::Renamed => f.write_str("a different file of that name exists"),
            NameChange::Other(c) => write!(f, "reason code {c}"),
        }
    }
}

impl Serialize for NameChange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.code().serialize(s)
    }
}

impl<'de> Deserialize<'de> for NameChange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(NameChange::from_code)
    }
}
